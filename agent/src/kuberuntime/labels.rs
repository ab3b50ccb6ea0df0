//! Labels and annotations on sandboxes and containers, exactly the kubelet's
//! (pkg/kubelet/kuberuntime/labels.go, pkg/kubelet/types/labels.go). They are how the agent finds
//! its pods again after a restart, so they are read back as carefully as they are written.

use crate::pod::DesiredPod;
use k8s_openapi::api::core::v1::Container;
use std::collections::HashMap;

/// Pod name label.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace label.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Pod UID label.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Container name label.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Container spec hash annotation (hex).
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Restart count annotation.
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Termination message path annotation.
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// Termination message policy annotation.
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
/// Pod termination grace period annotation.
pub const POD_TERMINATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Pod deletion grace period annotation.
pub const POD_DELETION_GRACE: &str = "io.kubernetes.pod.deletionGracePeriod";
/// PreStop handler annotation (JSON).
pub const PRE_STOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
/// Container ports annotation (JSON).
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
/// Container type annotation: `init`, `container` or `ephemeral`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";

/// Sandbox labels: the pod's labels plus the three identity labels.
pub fn sandbox_labels(p: &DesiredPod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = p
        .pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(POD_NAME.into(), p.pod_ref.name.clone());
    l.insert(POD_NAMESPACE.into(), p.pod_ref.namespace.clone());
    l.insert(POD_UID.into(), p.pod_ref.uid.clone());
    l
}

/// Sandbox annotations: the pod's annotations verbatim.
pub fn sandbox_annotations(p: &DesiredPod) -> HashMap<String, String> {
    p.pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Container labels: identity only (pod labels are not copied).
pub fn container_labels(p: &DesiredPod, c: &Container) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.into(), p.pod_ref.name.clone()),
        (POD_NAMESPACE.into(), p.pod_ref.namespace.clone()),
        (POD_UID.into(), p.pod_ref.uid.clone()),
        (CONTAINER_NAME.into(), c.name.clone()),
    ])
}

/// Container annotations as the kubelet writes them.
pub fn container_annotations(
    p: &DesiredPod,
    c: &Container,
    restart_count: u32,
    kind: super::ephemeral::ContainerKind,
) -> HashMap<String, String> {
    let mut a = HashMap::from([
        (CONTAINER_HASH.into(), format!("{:x}", container_hash(c))),
        (RESTART_COUNT.into(), restart_count.to_string()),
        (
            TERMINATION_MESSAGE_PATH.into(),
            c.termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (
            TERMINATION_MESSAGE_POLICY.into(),
            c.termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
        (CONTAINER_TYPE.into(), kind.annotation().into()),
    ]);
    if let Some(g) = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(POD_TERMINATION_GRACE.into(), g.to_string());
    }
    if let Some(g) = p.pod.metadata.deletion_grace_period_seconds {
        a.insert(POD_DELETION_GRACE.into(), g.to_string());
    }
    if let Some(pre) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
        && let Ok(j) = serde_json::to_string(pre)
    {
        a.insert(PRE_STOP_HANDLER.into(), j);
    }
    if let Some(ports) = c.ports.as_ref().filter(|p| !p.is_empty())
        && let Ok(j) = serde_json::to_string(ports)
    {
        a.insert(CONTAINER_PORTS.into(), j);
    }
    a
}

/// Hash of a container spec; a change means the container is replaced (kubelet HashContainer
/// hashes the JSON of the spec with FNV-32a; ours is FNV-64a of the same JSON, read back only by us).
pub fn container_hash(c: &Container) -> u64 {
    let json = serde_json::to_vec(c).unwrap_or_default();
    json.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Identity read back from a sandbox's or container's labels; `None` if not a kubelet object.
pub fn pod_identity(labels: &HashMap<String, String>) -> Option<(String, String, String)> {
    let (ns, name, uid) = identity_by(|k| labels.get(k).map(String::as_str))?;
    Some((ns.into(), name.into(), uid.into()))
}

/// Identity (namespace, name, UID) through any label lookup: all three labels, or `None`.
pub fn identity_by<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Option<(&'a str, &'a str, &'a str)> {
    Some((get(POD_NAMESPACE)?, get(POD_NAME)?, get(POD_UID)?))
}

/// Restart count from annotations (0 when missing or malformed, as the kubelet reads it).
pub fn restart_count(annotations: &HashMap<String, String>) -> u32 {
    annotations
        .get(RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Spec hash from annotations.
pub fn hash_of(annotations: &HashMap<String, String>) -> Option<u64> {
    annotations
        .get(CONTAINER_HASH)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// Grace period recorded on a container, for killing pods whose spec is gone (orphans after a
/// restart), like the kubelet's restoreSpecsFromContainerLabels.
pub fn grace_of(annotations: &HashMap<String, String>) -> Option<i64> {
    annotations
        .get(POD_DELETION_GRACE)
        .or_else(|| annotations.get(POD_TERMINATION_GRACE))
        .and_then(|v| v.parse().ok())
}
