use super::*;
use crate::pod::{PodRef, PodSource};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use std::path::{Path, PathBuf};

/// Pod `ns/p` (uid `u`) from a PodSpec JSON with one container named `c`.
fn pod(spec: serde_json::Value) -> (DesiredPod, Container) {
    let spec: PodSpec = serde_json::from_value(spec).expect("spec json");
    let c = spec.containers[0].clone();
    let p = DesiredPod {
        pod_ref: PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        },
        pod: Pod {
            spec: Some(spec),
            ..Default::default()
        },
        source: PodSource::File(PathBuf::from("/m/p.yaml")),
    };
    (p, c)
}

fn ctx() -> NodeContext {
    super::super::test_support::node_context(Path::new("/var/lib/kubelet"))
}

#[test]
fn container_fields_override_pod_fields_and_fs_group_leads_the_groups() {
    let (p, c) = pod(serde_json::json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                            "supplementalGroups": [5, 6], "supplementalGroupsPolicy": "Strict",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "securityContext": {
            "runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"},
            "appArmorProfile": {"type": "RuntimeDefault"}}}]
    }));
    let sc = security_context(&ctx(), &p, &c).expect("valid");
    assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1001 }));
    assert_eq!(sc.run_as_group, Some(cri::Int64Value { value: 3000 }));
    assert_eq!(sc.supplemental_groups, [2000, 5, 6]);
    assert_eq!(
        sc.supplemental_groups_policy,
        cri::SupplementalGroupsPolicy::Strict as i32
    );
    assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(
        (caps.add_capabilities, caps.drop_capabilities),
        (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
    );
    let seccomp = sc.seccomp.expect("seccomp");
    assert_eq!(
        seccomp.profile_type,
        cri::security_profile::ProfileType::Localhost as i32
    );
    assert_eq!(
        seccomp.localhost_ref,
        "/var/lib/kubelet/seccomp/profiles/audit.json"
    );
    assert_eq!(
        sc.apparmor.map(|a| a.profile_type),
        Some(cri::security_profile::ProfileType::RuntimeDefault as i32)
    );
    assert!(sc.masked_paths.iter().any(|m| m == "/proc/kcore"));
    assert!(sc.readonly_paths.iter().any(|m| m == "/proc/sys"));
}

#[test]
fn defaults_are_unconfined_seccomp_and_the_default_proc_masks() {
    let (p, c) = pod(serde_json::json!({"containers": [{"name": "c"}]}));
    let mut ctx = ctx();
    let sc = security_context(&ctx, &p, &c).expect("valid");
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(cri::security_profile::ProfileType::Unconfined as i32)
    );
    assert_eq!(sc.apparmor, None);
    assert_eq!(sc.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
    ctx.seccomp_default = true;
    let sc = security_context(&ctx, &p, &c).expect("valid");
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(cri::security_profile::ProfileType::RuntimeDefault as i32)
    );
    let (p, c) = pod(serde_json::json!({"containers": [{"name": "c",
        "securityContext": {"procMount": "Unmasked"}}]}));
    let sc = security_context(&ctx, &p, &c).expect("valid");
    assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
}

#[test]
fn a_localhost_profile_without_a_name_is_a_config_error() {
    let (p, c) = pod(serde_json::json!({"containers": [{"name": "c",
        "securityContext": {"seccompProfile": {"type": "Localhost"}}}]}));
    let e = security_context(&ctx(), &p, &c).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "localhostProfile must be set if seccompProfile type is Localhost."
    );
}

#[test]
fn run_as_non_root_is_verified_with_the_kubelets_messages() {
    let nonroot = serde_json::json!({"securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "c"}]});
    let (p, c) = pod(nonroot.clone());
    assert!(needs_image_user(&p, &c));
    let root = ImageUser {
        uid: Some(0),
        username: String::new(),
    };
    assert_eq!(
        verify_run_as_non_root(&p, &c, &root)
            .expect_err("root image")
            .to_string(),
        r#"container has runAsNonRoot and image will run as root (pod: "p_ns(u)", container: c)"#
    );
    let named = ImageUser {
        uid: None,
        username: "app".into(),
    };
    assert_eq!(
        verify_run_as_non_root(&p, &c, &named)
            .expect_err("named user")
            .to_string(),
        r#"container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: "p_ns(u)", container: c)"#
    );
    let user = ImageUser {
        uid: Some(65534),
        username: String::new(),
    };
    assert!(verify_run_as_non_root(&p, &c, &user).is_ok());
    // An image naming no user runs as root.
    let unnamed = ImageUser::of(Some(&cri::Image::default()));
    assert_eq!(unnamed, root);
    assert!(verify_run_as_non_root(&p, &c, &unnamed).is_err());

    let (p, c) = pod(
        serde_json::json!({"securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "c", "securityContext": {"runAsUser": 0}}]}),
    );
    assert!(!needs_image_user(&p, &c));
    assert_eq!(
        verify_run_as_non_root(&p, &c, &user)
            .expect_err("uid 0")
            .to_string(),
        r#"container's runAsUser breaks non-root policy (pod: "p_ns(u)", container: c)"#
    );
    let (p, c) = pod(
        serde_json::json!({"securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "c", "securityContext": {"runAsNonRoot": false}}]}),
    );
    assert!(verify_run_as_non_root(&p, &c, &root).is_ok());
}
