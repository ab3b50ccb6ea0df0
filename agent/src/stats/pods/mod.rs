//! Pod-level stats: the stats store (cgroup paths) mapped to pods and containers
//! (kubelet `pkg/kubelet/stats`, the cAdvisor stats provider).
//!
//! Owns the container id -> (pod, container name) index. The [`mapper`] task rebuilds it from
//! PLEG's runtime cache (no CRI calls of its own), resolves kernel records (OOM kills, memory
//! marks, cgroup creation and removal) to pods and publishes them on the event bus, and logs
//! OOM kills with their pod and container (`reason="OOMKilling"`, as the kubelet's event).
//! Readers (the HTTP server, metrics, next eviction) hold a cheap [`PodStatsView`] clone;
//! [`provider::ServerStats`] is the [`super::summary::StatsSource`] the server reads.
//!
//! The view may lag the kernel by one sweep (1 s) and a new container's name by one PLEG
//! relist; a container whose id is not resolved yet is left out, not guessed.

mod dump;
pub mod mapper;
pub mod provider;
mod view;

pub use view::{OomKill, PodStatsView};

use dump::*;
use mapper::*;
use view::*;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use tracing::{debug, warn};

use crate::cm::path::{CgroupKind, classify};
use crate::events::{Bus, KernelEvent, NodeEvent, monotonic_ns};
use crate::pleg::cache::CacheReader;
use crate::pod::PodRef;
use crate::stats::{self, CollectorCounters, CpuStats, MemoryStats, Snapshot, Source, StatsStore};

/// Mark crossings kept for the dump.
const RECENT_MARKS: usize = 64;

/// Who owns a container id.
#[derive(Clone, Debug)]
struct Owner {
    pod: PodRef,
    /// Container name; `None` for the pod sandbox (pause container).
    container: Option<String>,
    /// Image as the runtime reports it.
    image: String,
    /// Creation time, ns since the epoch (CRI `created_at`).
    created_at_ns: i64,
    /// Running at the last relist.
    running: bool,
}

/// The id index, replaced as a whole by the mapper.
#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, Owner>,
    pods: HashMap<String, PodRef>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CgroupStats;

    fn pod(uid: &str) -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: format!("p-{uid}"),
            uid: uid.into(),
        }
    }

    #[test]
    fn view_maps_store_paths_to_containers_and_pods() {
        let (writer, store) = stats::store();
        let view = PodStatsView::new(store);
        let mut snap = Snapshot {
            source: Source::Ebpf,
            ..Snapshot::default()
        };
        let cpu = |ns| CgroupStats {
            cpu: Some(CpuStats {
                usage_ns: ns,
                ..Default::default()
            }),
            ..Default::default()
        };
        snap.cgroups.insert("/r/kubepods/poda".into(), cpu(30));
        snap.cgroups.insert("/r/kubepods/poda/c1".into(), cpu(10));
        snap.cgroups.insert("/r/kubepods/poda/s1".into(), cpu(20));
        snap.cgroups.insert("/r/kubepods/poda/zz".into(), cpu(1));
        writer.publish(snap);
        let mut index = Index::default();
        index.pods.insert("a".into(), pod("a"));
        index.by_id.insert(
            "c1".into(),
            Owner {
                pod: pod("a"),
                container: Some("web".into()),
                image: "busybox".into(),
                created_at_ns: 0,
                running: true,
            },
        );
        index.by_id.insert(
            "s1".into(),
            Owner {
                pod: pod("a"),
                container: None,
                image: String::new(),
                created_at_ns: 0,
                running: true,
            },
        );
        *view.index.write().expect("not poisoned") = Arc::new(index);
        let cs = view.containers();
        assert_eq!(cs.len(), 1, "sandbox and unknown ids are left out");
        assert_eq!(cs[0].container, "web");
        assert_eq!(cs[0].cpu.map(|c| c.usage_ns), Some(10));
        let ps = view.pod_totals();
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].cpu.map(|c| c.usage_ns), Some(30));
        assert_eq!(view.source(), Source::Ebpf);
    }
}
