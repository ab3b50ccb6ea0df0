//! Flag and config-file resolution, checked through `Options::from_args`.

use super::*;
use std::path::Path;

fn args(s: &str) -> Vec<String> {
    std::iter::once("nodelet")
        .chain(s.split_whitespace())
        .map(String::from)
        .collect()
}

#[test]
fn defaults_are_the_kubelets() {
    let o = Options::from_args(args("")).expect("defaults");
    assert_eq!(o.file_check_frequency, Duration::from_secs(20));
    assert_eq!(o.runtime_request_timeout, Duration::from_secs(120));
    assert_eq!(o.container_runtime_endpoint, DEFAULT_RUNTIME_ENDPOINT);
    assert_eq!(o.pod_logs_dir, Path::new("/var/log/pods"));
    assert_eq!(o.cgroup_driver, CgroupDriver::Cgroupfs);
    assert!(o.cgroups_per_qos);
    assert!(o.register_node);
}

#[test]
fn flags_override_the_file() {
    let dir = std::env::temp_dir().join(format!("nodelet-opt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("k.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         staticPodPath: /from/file\nfileCheckFrequency: 5s\nrotateCertificates: true\n",
    )
    .expect("write");
    let o = Options::from_args(args(&format!(
        "--config={} --pod-manifest-path=/from/flag --hostname-override=NodeA",
        file.display()
    )))
    .expect("resolves");
    assert_eq!(o.static_pod_path.as_deref(), Some(Path::new("/from/flag")));
    assert_eq!(o.file_check_frequency, Duration::from_secs(5));
    assert_eq!(o.node_name, "nodea");
    assert!(o.notices.iter().any(|n| n.contains("rotateCertificates")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn server_defaults_follow_the_kubelets_legacy_and_file_defaults() {
    let o = Options::from_args(args("")).expect("defaults");
    assert!(o.server.anonymous_auth);
    assert_eq!(o.server.authorization_mode, AuthorizationMode::AlwaysAllow);
    assert_eq!((o.server.port, o.server.read_only_port), (10250, 10255));
    assert_eq!(o.server.healthz_port, 10248);
    let dir = std::env::temp_dir().join(format!("nodelet-srv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("k.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         authentication:\n  x509:\n    clientCAFile: /ca.pem\nhealthzPort: 0\n",
    )
    .expect("write");
    let o = Options::from_args(args(&format!("--config={} --port=1234", file.display())))
        .expect("resolves");
    assert!(!o.server.anonymous_auth);
    assert_eq!(o.server.authorization_mode, AuthorizationMode::Webhook);
    assert_eq!((o.server.port, o.server.read_only_port), (1234, 0));
    assert_eq!(o.server.healthz_port, 0);
    assert_eq!(
        o.server.client_ca_file.as_deref(),
        Some(Path::new("/ca.pem"))
    );
    assert!(o.notices.is_empty(), "{:?}", o.notices);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn webhook_cache_ttls_default_as_the_kubelets_and_bad_ones_name_the_field() {
    let o = Options::from_args(args("")).expect("defaults");
    assert_eq!(
        o.server.authentication_webhook_cache_ttl,
        Duration::from_secs(120)
    );
    assert_eq!(
        o.server.authorization_webhook_cache_authorized_ttl,
        Duration::from_secs(300)
    );
    assert_eq!(
        o.server.authorization_webhook_cache_unauthorized_ttl,
        Duration::from_secs(30)
    );
    let dir = std::env::temp_dir().join(format!("nodelet-ttl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("k.yaml");
    let head = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    std::fs::write(
        &file,
        format!(
            "{head}authentication:\n  webhook:\n    cacheTTL: 1m30s\n\
             authorization:\n  webhook:\n    cacheAuthorizedTTL: 0\n"
        ),
    )
    .expect("write");
    let o = Options::from_args(args(&format!("--config={}", file.display()))).expect("resolves");
    assert_eq!(
        o.server.authentication_webhook_cache_ttl,
        Duration::from_secs(90)
    );
    assert_eq!(
        o.server.authorization_webhook_cache_authorized_ttl,
        Duration::ZERO
    );
    std::fs::write(
        &file,
        format!("{head}authorization:\n  webhook:\n    cacheUnauthorizedTTL: soon\n"),
    )
    .expect("write");
    let err = Options::from_args(args(&format!("--config={}", file.display())))
        .expect_err("bad duration");
    assert!(
        err.to_string()
            .contains("authorization.webhook.cacheUnauthorizedTTL"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_duration_names_the_flag() {
    let err = Options::from_args(args("--runtime-request-timeout=soon")).expect_err("bad");
    assert!(
        err.to_string().contains("--runtime-request-timeout"),
        "{err}"
    );
}

#[test]
fn webhook_cache_ttl_flags_override_the_file_and_name_themselves() {
    let dir = std::env::temp_dir().join(format!("nodelet-ttl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("k.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         authentication:\n  webhook:\n    cacheTTL: 1m\n\
         authorization:\n  webhook:\n    cacheAuthorizedTTL: 10s\n",
    )
    .expect("write");
    let o = Options::from_args(args(&format!(
        "--config={} --authentication-token-webhook-cache-ttl=30s \
         --authorization-webhook-cache-unauthorized-ttl=5s",
        file.display()
    )))
    .expect("resolves");
    assert_eq!(
        o.server.authentication_webhook_cache_ttl,
        Duration::from_secs(30)
    );
    assert_eq!(
        o.server.authorization_webhook_cache_authorized_ttl,
        Duration::from_secs(10)
    );
    assert_eq!(
        o.server.authorization_webhook_cache_unauthorized_ttl,
        Duration::from_secs(5)
    );
    assert!(
        !o.notices.iter().any(|n| n.contains("cache")),
        "{:?}",
        o.notices
    );
    let err = Options::from_args(args("--authorization-webhook-cache-authorized-ttl=soon"))
        .expect_err("bad");
    assert!(
        err.to_string()
            .contains("--authorization-webhook-cache-authorized-ttl"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn removed_flags_become_notices() {
    let o = Options::from_args(args("--container-runtime=remote --network-plugin=cni"))
        .expect("accepted");
    assert_eq!(o.notices.len(), 2);
    assert!(o.notices[0].contains("removed"));
}
