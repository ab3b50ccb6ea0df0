//! Ephemeral containers (`kubectl debug`, the pod's `ephemeralcontainers` subresource), as the
//! kubelet runs them (kuberuntime_manager.go computePodActions / SyncPod step 7): each is
//! started once in the pod's sandbox, never restarted, and, with `targetContainerName`, joins
//! the PID namespace of that container (CRI NamespaceOption target_id).

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, PodSpec};
use proto::runtime::v1 as cri;

/// Which list of the pod spec a container comes from: decides the container-type annotation,
/// the event field path and how the container is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// `spec.containers`.
    Regular,
    /// `spec.initContainers` (sidecars included).
    Init,
    /// `spec.ephemeralContainers`.
    Ephemeral,
}

impl ContainerKind {
    /// The kubelet's container-type annotation value (kubecontainer.ContainerType).
    pub fn annotation(self) -> &'static str {
        match self {
            Self::Regular => "container",
            Self::Init => "init",
            Self::Ephemeral => "ephemeral",
        }
    }
}

/// An ephemeral container as the `Container` it is run as (the kubelet's cast of
/// EphemeralContainerCommon); the fields are the same but `targetContainerName`.
pub fn as_container(e: &EphemeralContainer) -> Container {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("targetContainerName");
    }
    serde_json::from_value(v).unwrap_or_else(|_| Container {
        name: e.name.clone(),
        image: e.image.clone(),
        ..Default::default()
    })
}

/// The pod's ephemeral containers, as containers, in spec order.
pub fn containers(spec: &PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(as_container)
        .collect()
}

/// The container whose namespaces ephemeral container `name` targets, if any.
pub fn target_name<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a str> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.target_container_name.as_deref())
        .filter(|t| !t.is_empty())
}

/// Points the PID namespace of `cfg` at the running container `target_id`
/// (kuberuntime_container.go: `nsTarget` when TargetContainerName is set), unless the pod
/// shares one PID namespace already (host or pod mode).
pub fn target_pid_namespace(cfg: &mut cri::ContainerConfig, target_id: &str) {
    let ns = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut());
    if let Some(ns) = ns
        && ns.pid == cri::NamespaceMode::Container as i32
    {
        ns.pid = cri::NamespaceMode::Target as i32;
        ns.target_id = target_id.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ephemeral_container_runs_as_its_common_fields() {
        let e = EphemeralContainer {
            name: "debugger".into(),
            image: Some("busybox:1.35".into()),
            command: Some(vec!["sleep".into(), "3600".into()]),
            stdin: Some(true),
            target_container_name: Some("main".into()),
            ..Default::default()
        };
        let c = as_container(&e);
        assert_eq!(c.name, "debugger");
        assert_eq!(c.image.as_deref(), Some("busybox:1.35"));
        assert_eq!(c.command, e.command);
        assert_eq!(c.stdin, Some(true));
        let spec = PodSpec {
            ephemeral_containers: Some(vec![e]),
            ..Default::default()
        };
        assert_eq!(target_name(&spec, "debugger"), Some("main"));
        assert_eq!(target_name(&spec, "other"), None);
        assert_eq!(containers(&spec).len(), 1);
    }

    #[test]
    fn the_target_joins_only_a_per_container_pid_namespace() {
        let cfg = |pid: cri::NamespaceMode| cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: pid as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ns = |c: &cri::ContainerConfig| {
            c.linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.clone())
                .expect("namespace options")
        };
        let mut c = cfg(cri::NamespaceMode::Container);
        target_pid_namespace(&mut c, "abc");
        assert_eq!(ns(&c).pid, cri::NamespaceMode::Target as i32);
        assert_eq!(ns(&c).target_id, "abc");
        let mut c = cfg(cri::NamespaceMode::Pod);
        target_pid_namespace(&mut c, "abc");
        assert_eq!(ns(&c).pid, cri::NamespaceMode::Pod as i32);
    }
}
