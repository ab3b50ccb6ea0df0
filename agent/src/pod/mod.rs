//! The desired pods: identity ([`PodRef`]), the decoded pod with its source ([`DesiredPod`]),
//! and facts derived from a spec (QoS class, restart policy, grace period) that several managers
//! need. Kubelet counterparts: pkg/kubelet/pod, pkg/apis/core/v1/helper/qos.

pub mod quantity;
mod restart;
pub mod unsupported;

pub use restart::{RestartPolicy, container_policy, container_restarts};

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Pod identity used in logs and errors: `namespace/name (uid)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl PodRef {
    /// The kubelet's "full name", `name_namespace`: at most one static pod per full name runs.
    pub fn full_name(&self) -> String {
        format!("{}_{}", self.name, self.namespace)
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

/// A pod the agent should run, as decoded and defaulted by a config source.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    /// Identity.
    pub pod_ref: PodRef,
    /// The pod object, defaulted (name suffix, namespace, annotations, nodeName).
    pub pod: Pod,
    /// The config source it came from.
    pub source: PodSource,
}

/// Where a desired pod came from (kubetypes.FileSource, ApiserverSource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSource {
    /// A static pod manifest file.
    File(PathBuf),
    /// The API server (spec.nodeName is this node).
    Api,
}

/// A node-side verdict that stops a pod for good (eviction, admission refusal): the pod's
/// containers are stopped within `grace_period_seconds` (the pod's own grace when `None`) and
/// its status becomes phase Failed with this reason and message, as the kubelet's killPodNow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillRequest {
    /// The pod's UID.
    pub uid: String,
    /// Grace period override, seconds (eviction: bounded by evictionMaxPodGracePeriod).
    pub grace_period_seconds: Option<i64>,
    /// `status.reason`, e.g. `Evicted`, `OutOfcpu`.
    pub reason: String,
    /// `status.message`, naming the signal or resource.
    pub message: String,
}

impl DesiredPod {
    /// Whether the pod came from the API server (its status is patched there).
    pub fn is_api(&self) -> bool {
        self.source == PodSource::Api
    }

    /// The phase the API server already holds when it is terminal (Succeeded or Failed): such
    /// a pod is never started again (the kubelet's IsPodPhaseTerminal check).
    pub fn api_terminal_phase(&self) -> Option<&str> {
        let phase = self.pod.status.as_ref()?.phase.as_deref()?;
        (self.is_api() && matches!(phase, "Succeeded" | "Failed")).then_some(phase)
    }

    /// Whether the API server asked for the pod's deletion (deletionTimestamp set).
    pub fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// The conditions others own that the API server holds (readiness gates' among them),
    /// which the kubelet keeps in the status it generates.
    pub fn external_conditions(&self) -> impl Iterator<Item = &PodCondition> {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| !kubelet_owned_condition(&c.type_))
    }
}

/// The condition types the kubelet owns (PodConditionByKubelet); others' are never written.
pub fn kubelet_owned_condition(type_: &str) -> bool {
    matches!(
        type_,
        "PodScheduled"
            | "Ready"
            | "Initialized"
            | "ContainersReady"
            | "PodReadyToStartContainers"
            | "PodResizePending"
            | "PodResizeInProgress"
    )
}

/// `requests`/`limits` as k8s-openapi decodes them.
type QuantityMap = BTreeMap<String, Quantity>;

/// A shared, immutable desired pod.
pub type PodHandle = Arc<DesiredPod>;

/// QoS class (pkg/apis/core/v1/helper/qos/qos.go GetPodQOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has equal CPU and memory requests and limits.
    Guaranteed,
    /// Some request or limit, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

/// A container's CPU (millicores) and memory (bytes) requests and limits; requests default to
/// limits when only limits are set, as API defaulting does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerResources {
    /// CPU request, millicores.
    pub cpu_request: Option<i64>,
    /// CPU limit, millicores.
    pub cpu_limit: Option<i64>,
    /// Memory request, bytes.
    pub memory_request: Option<i64>,
    /// Memory limit, bytes.
    pub memory_limit: Option<i64>,
}

impl ContainerResources {
    /// Reads a container's resources; unparsable values were rejected by validation.
    pub fn of(c: &Container) -> Self {
        let get = |m: Option<&QuantityMap>, key: &str, milli: bool| {
            m?.get(key).and_then(|q| quantity::parse(&q.0, milli))
        };
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        let cpu_limit = get(limits, "cpu", true);
        let memory_limit = get(limits, "memory", false);
        Self {
            cpu_request: get(requests, "cpu", true).or(cpu_limit),
            cpu_limit,
            memory_request: get(requests, "memory", false).or(memory_limit),
            memory_limit,
        }
    }
}

/// The pod's QoS class, from its containers and init containers.
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let all: Vec<ContainerResources> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(ContainerResources::of)
        .collect();
    let any = all.iter().any(|r| {
        r.cpu_request.is_some()
            || r.cpu_limit.is_some()
            || r.memory_request.is_some()
            || r.memory_limit.is_some()
    });
    if !any {
        return QosClass::BestEffort;
    }
    let guaranteed = all.iter().all(|r| {
        r.cpu_limit.is_some()
            && r.memory_limit.is_some()
            && r.cpu_request == r.cpu_limit
            && r.memory_request == r.memory_limit
    });
    if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// Grace period for stopping the pod's containers: `terminationGracePeriodSeconds`, default 30
/// (pkg/apis/core/v1/defaults.go), never below the kubelet's minimum of 2 s when killing
/// (kuberuntime_container.go minimumGracePeriodInSeconds).
pub fn grace_period_seconds(pod: &Pod) -> i64 {
    let g = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    g.max(2)
}

/// Whether the pod uses the host's network namespace.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn pod_with(res: Option<(&str, &str, &str, &str)>) -> Pod {
        let resources = res.map(|(rc, rm, lc, lm)| {
            let m = |c: &str, mem: &str| {
                let mut m = BTreeMap::new();
                if !c.is_empty() {
                    m.insert("cpu".to_string(), Quantity(c.into()));
                }
                if !mem.is_empty() {
                    m.insert("memory".to_string(), Quantity(mem.into()));
                }
                Some(m)
            };
            ResourceRequirements {
                requests: m(rc, rm),
                limits: m(lc, lm),
                ..Default::default()
            }
        });
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&pod_with(None)), QosClass::BestEffort);
        assert_eq!(
            qos_class(&pod_with(Some(("100m", "", "", "")))),
            QosClass::Burstable
        );
        assert_eq!(
            qos_class(&pod_with(Some(("", "", "1", "64Mi")))),
            QosClass::Guaranteed,
            "requests default to limits"
        );
        assert_eq!(
            qos_class(&pod_with(Some(("500m", "64Mi", "1", "64Mi")))),
            QosClass::Burstable
        );
    }
}
