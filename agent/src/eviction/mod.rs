//! The eviction manager (kubelet pkg/kubelet/eviction): watches memory, filesystem and pid
//! signals against `evictionHard`/`evictionSoft`, sets the MemoryPressure, DiskPressure and
//! PIDPressure node conditions (held for `evictionPressureTransitionPeriod` after the last
//! time their threshold was met), and evicts one pod per decision, ranked as the kubelet ranks
//! them, through a [`KillPodFunc`] (the kubelet's killPodNow: eviction never owns pods).
//!
//! Unlike the kubelet's 10 s loop, memory signals are re-evaluated on every memory mark the
//! kernel pushes (the bus's [`NodeEvent::MemoryMark`]) and on a 1 s tick, and the manager
//! places those marks itself: every container gets a mark a share of the node's remaining
//! slack above its current usage, so no pod can grow the node past a memory threshold without
//! the kernel telling us first. The slack is the smallest over memory.available (the root
//! memcg) and allocatableMemory.available (the `kubepods` cgroup, limited by `cm::node`), so the
//! container marks split the kubepods headroom too: kubepods cannot reach its threshold
//! without one of its containers crossing its mark. (A mark on kubepods itself would never
//! fire: the kernel's memcg events are charged to the leaf cgroup, not its parents.) Marks are
//! re-armed on every pass and on every pod lifecycle event, so a new container is covered
//! from its start. Filesystem and pid signals use the kubelet's 10 s period.
//! Memory is read from the root and pods cgroups at decision time, not from the last sweep;
//! whether a container's mark must move is decided from the store's (eBPF) usage, and the
//! collector places it around the usage it reads as it sets it, so a pass costs two cgroup
//! reads, not one per container.
//!
//! Owns: thresholds' first-observed times, conditions' last-observed times, the pods it ordered
//! killed. Talks to: the stats view (which cgroup is which pod), the config and status stores
//! (which pods are active), the bus (memory marks), the telemetry's mark requests, and
//! whoever reads [`Handle::pressure`] (node status; pod admission via [`admit`]).
//!
//! Disk signals (nodefs/imagefs available and inodesFree; imagefs from the runtime's
//! ImageFsInfo, shared or dedicated as the kubelet tells them apart) first reclaim dead
//! containers and unused images ([`reclaim`], which also runs the periodic container and image
//! GC), then evict by the kubelet's disk ranking, with pods' disk use measured at decision time.
//!
//! Local storage limits (emptyDir `sizeLimit`, pod and container ephemeral-storage limits) are
//! enforced on every filesystem pass before the thresholds ([`local_storage`]).
//!
//! Deviation, on purpose: the kubelet never evicts static pods
//! (kubelettypes.IsCriticalPod): on a node without an API server every pod is static, so
//! `NODELET_EVICT_STATIC_PODS=1` makes static pods evictable like API pods of their priority.
//! `NODELET_EVICTION_KUBELET_SCHEDULE=1` (benchmark baseline) evaluates memory signals only on
//! the kubelet's 10 s loop: no pass on marks, pod events or the 1 s tick.

pub mod disk;
mod helpers;
pub mod local_storage;
mod manager;
mod marks;
pub mod reclaim;
pub mod signals;

pub use helpers::{Condition, REASON};
pub use manager::{Inputs, start};

use crate::instrument::{CounterVec, DEF_BUCKETS, HistogramVec};
use crate::options::Options;
use crate::options::eviction::EvictionOptions;
use crate::pod::KillRequest;
use k8s_openapi::api::core::v1::Pod;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Environment variable: `1` lets the manager evict static pods (nodelet extension).
pub const STATIC_PODS_VAR: &str = "NODELET_EVICT_STATIC_PODS";
/// Environment variable: `1` puts memory signals on the kubelet's 10 s schedule (benchmark
/// baseline; default: marks, pod events and a 1 s tick).
pub const KUBELET_SCHEDULE_VAR: &str = "NODELET_EVICTION_KUBELET_SCHEDULE";
/// The bus subscriber name of the eviction manager.
pub const SUBSCRIBER: &str = "eviction";
/// Period of the filesystem and pid signals (the kubelet's evictionMonitoringPeriod).
pub const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// Period of the memory signals between marks (one stats sweep).
pub const MEMORY_PERIOD: Duration = Duration::from_secs(1);

/// Stops a pod and resolves once it is stopped (the kubelet's KillPodFunc).
pub type KillPodFunc =
    Arc<dyn Fn(KillRequest) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Pressure the manager reports, latest value in a `watch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodePressure {
    /// MemoryPressure.
    pub memory: bool,
    /// DiskPressure.
    pub disk: bool,
    /// PIDPressure.
    pub pid: bool,
}

impl NodePressure {
    /// The conditions that are True, in the kubelet's names.
    #[allow(dead_code)]
    pub fn conditions(&self) -> Vec<&'static str> {
        [
            (self.memory, Condition::Memory),
            (self.disk, Condition::Disk),
            (self.pid, Condition::Pid),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| c.as_str())
        .collect()
    }
}

// Pod admission (the main session's) calls `admit` with `Handle::pressure`; until then only
// the tests use it.
#[allow(dead_code)]
/// Why a pod is refused under pressure (lifecycle.PodAdmitResult).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `Evicted`.
    pub reason: &'static str,
    /// `The node had condition: [MemoryPressure]. `
    pub message: String,
}

/// The kubelet's eviction Admit: under memory pressure alone only BestEffort pods are refused
/// (unless they tolerate the memory-pressure taint); under any other pressure every pod is;
/// critical pods are always admitted.
#[allow(dead_code)]
pub fn admit(pod: &Pod, pressure: &NodePressure) -> Result<(), Rejection> {
    let conds = pressure.conditions();
    if conds.is_empty() {
        return Ok(());
    }
    let critical = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= helpers::SYSTEM_CRITICAL_PRIORITY)
        || pod.metadata.annotations.as_ref().is_some_and(|a| {
            a.contains_key("kubernetes.io/config.mirror")
                || a.get("kubernetes.io/config.source")
                    .is_some_and(|s| s != "api")
        });
    if critical {
        return Ok(());
    }
    if conds == ["MemoryPressure"] {
        if crate::pod::qos_class(pod) != crate::pod::QosClass::BestEffort {
            return Ok(());
        }
        let tolerates = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| {
                ts.iter().any(|t| {
                    let key_ok = match t.key.as_deref() {
                        None | Some("") => t.operator.as_deref() == Some("Exists"),
                        Some(k) => k == "node.kubernetes.io/memory-pressure",
                    };
                    let value_ok = t.operator.as_deref() == Some("Exists")
                        || t.value.as_deref().unwrap_or_default().is_empty();
                    let effect_ok =
                        matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
                    key_ok && value_ok && effect_ok
                })
            });
        if tolerates {
            return Ok(());
        }
    }
    Err(Rejection {
        reason: REASON,
        message: format!("The node had condition: [{}]. ", conds.join(" ")),
    })
}

/// The manager's own statistics, rendered by `metrics/` (`kubelet_evictions`,
/// `kubelet_eviction_stats_age_seconds`).
#[derive(Debug)]
pub struct EvictionStats {
    /// Evictions by signal.
    pub evictions: CounterVec,
    /// Age of the observation an eviction was decided on, by signal.
    pub stats_age: HistogramVec,
    /// Memory-mark crossing (kernel time) to eviction decision, seconds (nodelet's own).
    pub mark_to_decision: HistogramVec,
    /// The node GC's counters (`kubelet_image_garbage_collected_total`).
    pub gc: Arc<crate::kuberuntime::gc::GcStats>,
}

impl Default for EvictionStats {
    fn default() -> Self {
        Self {
            evictions: CounterVec::default(),
            stats_age: HistogramVec::new(DEF_BUCKETS),
            mark_to_decision: HistogramVec::new(DEF_BUCKETS),
            gc: Arc::default(),
        }
    }
}

/// What the manager needs from the options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Thresholds, transition period, grace cap.
    pub options: EvictionOptions,
    /// Where signals are read from.
    pub sources: signals::Sources,
    /// `NODELET_EVICT_STATIC_PODS=1`.
    pub static_pods_evictable: bool,
    /// `NODELET_EVICTION_KUBELET_SCHEDULE=1`: memory only every [`HOUSEKEEPING`].
    pub kubelet_schedule: bool,
    /// Image and container GC policies.
    pub gc: crate::options::gc::GcOptions,
    /// Where pods' logs are (podLogsDir).
    pub pod_logs_dir: std::path::PathBuf,
}

impl Settings {
    /// From the options, the machine's memory capacity and the pods cgroup; `None` when the
    /// cgroup mounts cannot be read (then nothing can be observed, which is logged).
    pub fn from_options(o: &Options, memory_capacity: i64, pods_root: String) -> Option<Self> {
        let layout = match crate::stats::cgroupfs::CgroupLayout::detect() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "eviction manager: cannot read the cgroup mounts; no memory signals");
                return None;
            }
        };
        Some(Self {
            options: o.eviction.clone(),
            sources: signals::Sources {
                layout,
                memory_capacity,
                pods_root,
                root_dir: o.root_dir.clone(),
            },
            static_pods_evictable: std::env::var(STATIC_PODS_VAR).is_ok_and(|v| v == "1"),
            kubelet_schedule: std::env::var(KUBELET_SCHEDULE_VAR).is_ok_and(|v| v == "1"),
            gc: o.gc,
            pod_logs_dir: o.pod_logs_dir.clone(),
        })
    }
}

/// The running manager's outputs.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The pressure conditions, latest value.
    pub pressure: watch::Receiver<NodePressure>,
    /// Counters and histograms for `/metrics`.
    pub stats: Arc<EvictionStats>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};
    use std::collections::BTreeMap;

    fn api_pod(best_effort: bool, tolerations: Option<Vec<Toleration>>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": {"kubernetes.io/config.source": "api"}},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .expect("pod");
        if !best_effort {
            p.spec.as_mut().expect("spec").containers[0].resources =
                serde_json::from_value(serde_json::json!({"requests": {"memory": "10Mi"}})).ok();
        }
        p.spec.get_or_insert_with(PodSpec::default).tolerations = tolerations;
        p
    }

    #[test]
    fn memory_pressure_refuses_best_effort_pods_only() {
        let mem = NodePressure {
            memory: true,
            ..Default::default()
        };
        assert_eq!(
            admit(&api_pod(true, None), &NodePressure::default()),
            Ok(())
        );
        let r = admit(&api_pod(true, None), &mem).expect_err("refused");
        assert_eq!(r.reason, "Evicted");
        assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
        assert_eq!(
            admit(&api_pod(false, None), &mem),
            Ok(()),
            "burstable is admitted"
        );
        let tol = Toleration {
            key: Some("node.kubernetes.io/memory-pressure".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        assert_eq!(admit(&api_pod(true, Some(vec![tol])), &mem), Ok(()));
    }

    #[test]
    fn other_pressure_refuses_every_pod_but_critical_ones() {
        let disk = NodePressure {
            disk: true,
            memory: true,
            ..Default::default()
        };
        let r = admit(&api_pod(false, None), &disk).expect_err("refused");
        assert_eq!(
            r.message,
            "The node had condition: [MemoryPressure DiskPressure]. "
        );
        let mut static_pod = api_pod(false, None);
        static_pod.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.source".to_string(),
            "file".to_string(),
        )]));
        assert_eq!(
            admit(&static_pod, &disk),
            Ok(()),
            "static pods are critical"
        );
    }
}
