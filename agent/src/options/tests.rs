//! Flag and config-file resolution, checked through `Options::from_args`.

use super::*;
use std::path::Path;

/// A config file in a directory of this test's own (tests run in parallel), removed on drop.
struct ConfigFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl ConfigFile {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nodelet-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("k.yaml");
        Self { dir, path }
    }

    fn write(&self, body: impl AsRef<[u8]>) {
        std::fs::write(&self.path, body).expect("write");
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    let file = ConfigFile::new("opt");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         staticPodPath: /from/file\nfileCheckFrequency: 5s\nserverTLSBootstrap: true\n",
    );
    let o = Options::from_args(args(&format!(
        "--config={} --pod-manifest-path=/from/flag --hostname-override=NodeA",
        file.path.display()
    )))
    .expect("resolves");
    assert_eq!(o.static_pod_path.as_deref(), Some(Path::new("/from/flag")));
    assert_eq!(o.file_check_frequency, Duration::from_secs(5));
    assert_eq!(o.node_name, "nodea");
    assert!(o.notices.iter().any(|n| n.contains("serverTLSBootstrap")));
}

#[test]
fn server_defaults_follow_the_kubelets_legacy_and_file_defaults() {
    let o = Options::from_args(args("")).expect("defaults");
    assert!(o.server.anonymous_auth);
    assert_eq!(o.server.authorization_mode, AuthorizationMode::AlwaysAllow);
    assert_eq!((o.server.port, o.server.read_only_port), (10250, 10255));
    assert_eq!(o.server.healthz_port, 10248);
    let file = ConfigFile::new("srv");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         authentication:\n  x509:\n    clientCAFile: /ca.pem\nhealthzPort: 0\n",
    );
    let o = Options::from_args(args(&format!(
        "--config={} --port=1234",
        file.path.display()
    )))
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
    let file = ConfigFile::new("ttl-file");
    let head = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    file.write(format!(
        "{head}authentication:\n  webhook:\n    cacheTTL: 1m30s\n\
             authorization:\n  webhook:\n    cacheAuthorizedTTL: 0\n"
    ));
    let o =
        Options::from_args(args(&format!("--config={}", file.path.display()))).expect("resolves");
    assert_eq!(
        o.server.authentication_webhook_cache_ttl,
        Duration::from_secs(90)
    );
    assert_eq!(
        o.server.authorization_webhook_cache_authorized_ttl,
        Duration::ZERO
    );
    file.write(format!(
        "{head}authorization:\n  webhook:\n    cacheUnauthorizedTTL: soon\n"
    ));
    let err = Options::from_args(args(&format!("--config={}", file.path.display())))
        .expect_err("bad duration");
    assert!(
        err.to_string()
            .contains("authorization.webhook.cacheUnauthorizedTTL"),
        "{err}"
    );
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
    let file = ConfigFile::new("ttl");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         authentication:\n  webhook:\n    cacheTTL: 1m\n\
         authorization:\n  webhook:\n    cacheAuthorizedTTL: 10s\n",
    );
    let o = Options::from_args(args(&format!(
        "--config={} --authentication-token-webhook-cache-ttl=30s \
         --authorization-webhook-cache-unauthorized-ttl=5s",
        file.path.display()
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
}

#[test]
fn removed_flags_become_notices() {
    let o = Options::from_args(args("--container-runtime=remote --network-plugin=cni"))
        .expect("accepted");
    assert_eq!(o.notices.len(), 2);
    assert!(o.notices[0].contains("removed"));
}

#[test]
fn node_status_settings_default_as_the_kubelets() {
    let o = Options::from_args(args("")).expect("defaults");
    let n = &o.node_status;
    assert_eq!(n.update_frequency, Duration::from_secs(10));
    assert_eq!(n.report_frequency, Duration::from_secs(300));
    assert_eq!(n.lease_duration_seconds, 40);
    assert_eq!(n.max_pods, 110);
    assert!(n.labels.is_empty() && n.taints.is_empty());
}

#[test]
fn node_status_settings_come_from_flags_and_file() {
    let file = ConfigFile::new("nodestatus");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         nodeStatusUpdateFrequency: 20s\nnodeLeaseDurationSeconds: 60\nmaxPods: 42\n\
         registerWithTaints:\n- key: dedicated\n  value: e2e\n  effect: NoSchedule\n",
    );
    let o = Options::from_args(args(&format!(
        "--config={} --node-labels=example.com/role=edge",
        file.path.display()
    )))
    .expect("resolves");
    let n = &o.node_status;
    assert_eq!(n.update_frequency, Duration::from_secs(20));
    // v1beta1 defaulting: the report frequency follows the file's update frequency.
    assert_eq!(n.report_frequency, Duration::from_secs(20));
    assert_eq!(n.lease_duration_seconds, 60);
    assert_eq!(n.max_pods, 42);
    assert_eq!(
        n.labels.get("example.com/role").map(String::as_str),
        Some("edge")
    );
    assert_eq!(
        (n.taints[0].key.as_str(), n.taints[0].effect.as_str()),
        ("dedicated", "NoSchedule")
    );
    assert!(o.notices.is_empty(), "{:?}", o.notices);
    // Flags win over the file; a flag's update frequency leaves the report default alone.
    let o = Options::from_args(args(&format!(
        "--config={} --node-status-update-frequency=5s --node-lease-duration-seconds=30 \
         --max-pods=7 --register-with-taints=a=b:NoExecute",
        file.path.display()
    )))
    .expect("resolves");
    let n = &o.node_status;
    assert_eq!(n.update_frequency, Duration::from_secs(5));
    assert_eq!(n.report_frequency, Duration::from_secs(20));
    assert_eq!((n.lease_duration_seconds, n.max_pods), (30, 7));
    assert_eq!(n.taints.len(), 1);
    assert_eq!(n.taints[0].effect, "NoExecute");
}

#[test]
fn bad_node_status_settings_name_the_flag_or_field() {
    for (argv, name) in [
        (
            "--node-labels=node-role.kubernetes.io/master=",
            "--node-labels",
        ),
        ("--register-with-taints=k=v", "--register-with-taints"),
        (
            "--node-status-update-frequency=0",
            "--node-status-update-frequency",
        ),
        (
            "--node-status-update-frequency=soon",
            "--node-status-update-frequency",
        ),
        (
            "--node-lease-duration-seconds=0",
            "--node-lease-duration-seconds",
        ),
        (
            "--node-lease-duration-seconds=-5",
            "--node-lease-duration-seconds",
        ),
    ] {
        let err = Options::from_args(args(argv)).expect_err(argv);
        assert!(err.to_string().contains(name), "{argv}: {err}");
    }
    let file = ConfigFile::new("nodestatus-bad");
    let head = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    for (body, field) in [
        ("maxPods: -1\n", "maxPods"),
        ("nodeLeaseDurationSeconds: -5\n", "nodeLeaseDurationSeconds"),
        (
            "registerWithTaints:\n- key: k\n  effect: Sometimes\n",
            "registerWithTaints",
        ),
        ("registerWithTaints:\n- key: k\n", "registerWithTaints"),
        (
            "nodeStatusReportFrequency: later\n",
            "nodeStatusReportFrequency",
        ),
    ] {
        file.write(format!("{head}{body}"));
        let err =
            Options::from_args(args(&format!("--config={}", file.path.display()))).expect_err(body);
        let msg = err.to_string();
        assert!(
            msg.contains(field) && msg.contains("k.yaml"),
            "{body}: {msg}"
        );
    }
}

#[test]
fn certificate_options_default_as_the_kubelets_and_flags_win() {
    let o = Options::from_args(args("--root-dir=/r")).expect("defaults");
    assert_eq!(o.certificates.cert_dir, Path::new("/r/pki"));
    assert!(!o.certificates.rotate);
    assert_eq!(o.certificates.bootstrap_kubeconfig, None);

    let file = ConfigFile::new("certs");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         rotateCertificates: true\n",
    );
    let o = Options::from_args(args(&format!(
        "--config={} --kubeconfig=/k --bootstrap-kubeconfig=/b --cert-dir=/c",
        file.path.display()
    )))
    .expect("resolves");
    assert!(o.certificates.rotate);
    assert!(!o.notices.iter().any(|n| n.contains("rotateCertificates")));
    assert_eq!(o.certificates.cert_dir, Path::new("/c"));
    assert_eq!(
        o.certificates.bootstrap_kubeconfig.as_deref(),
        Some(Path::new("/b"))
    );
    let o = Options::from_args(args(&format!(
        "--config={} --rotate-certificates=false",
        file.path.display()
    )))
    .expect("resolves");
    assert!(!o.certificates.rotate);
}

#[test]
fn a_bootstrap_kubeconfig_needs_a_kubeconfig() {
    let e = Options::from_args(args("--bootstrap-kubeconfig=/b")).expect_err("rejected");
    let msg = e.to_string();
    assert!(
        msg.contains("--bootstrap-kubeconfig") && msg.contains("--kubeconfig"),
        "{msg}"
    );
}

#[test]
fn api_rate_defaults_and_comes_from_flags_and_file() {
    let o = Options::from_args(args("")).expect("defaults");
    assert_eq!(o.api_rate, ApiRate::default());
    assert_eq!((o.api_rate.qps, o.api_rate.burst), (50.0, 100));
    let file = ConfigFile::new("apirate");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         kubeAPIQPS: 5\nkubeAPIBurst: 10\n",
    );
    let o = Options::from_args(args(&format!("--config={}", file.path.display()))).expect("file");
    assert_eq!((o.api_rate.qps, o.api_rate.burst), (5.0, 10));
    assert!(o.notices.is_empty(), "{:?}", o.notices);
    let o = Options::from_args(args(&format!(
        "--config={} --kube-api-qps=20",
        file.path.display()
    )))
    .expect("flag wins");
    assert_eq!((o.api_rate.qps, o.api_rate.burst), (20.0, 10));
    let err = Options::from_args(args("--kube-api-burst=-1")).expect_err("negative burst");
    assert!(err.to_string().contains("--kube-api-burst"), "{err}");
    file.write(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nkubeAPIQPS: -3\n",
    );
    let err = Options::from_args(args(&format!("--config={}", file.path.display())))
        .expect_err("negative qps");
    assert!(err.to_string().contains("kubeAPIQPS"), "{err}");
}
