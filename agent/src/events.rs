//! The event bus: what happened on the node, typed, on one bounded broadcast.
//!
//! Producers: PLEG (container lifecycle), the stats mapper (OOM kills and memory marks resolved
//! to pods, cgroup creation and removal). Subscribers: the pod workers,
//! PLEG itself (an OOM kill triggers a relist) and, next, the eviction and probe managers.
//! Payload types live here so that producers and subscribers depend on this module and not on
//! each other.
//!
//! The bus never blocks a producer: a subscriber that falls more than [`CAPACITY`] events
//! behind gets [`Received::Lagged`] with the number it missed, and must resync from the stores
//! (runtime cache, stats store) instead of trusting events: never a silent drop. Lags are
//! counted per subscriber for `/metrics`. Kubelet counterpart: the PLEG channel and the
//! `podWorkers` update channel, joined into one.

use crate::pod::PodRef;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Events the bus keeps for a slow subscriber before it lags (the kubelet's PLEG channel
/// holds 1000).
pub const CAPACITY: usize = 4096;

/// What changed for a pod in the runtime (kubelet pleg.PodLifeCycleEventType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEventKind {
    /// A container started running.
    ContainerStarted,
    /// A container stopped running.
    ContainerDied,
    /// A container disappeared.
    ContainerRemoved,
    /// A sandbox appeared, changed state, or disappeared.
    SandboxChanged,
    /// Seen in the first relist (start-up adoption).
    Present,
}

/// One pod lifecycle event; the runtime cache already holds the state it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLifecycleEvent {
    /// The pod, as its runtime labels name it.
    pub pod: PodRef,
    /// What happened.
    pub kind: PodEventKind,
    /// Whether the runtime still has anything of the pod after this change.
    pub present: bool,
}

/// A kernel OOM kill, resolved to a pod and container where the cgroup names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    /// The victim's pod, when its cgroup is a pod's.
    pub pod: Option<PodRef>,
    /// The victim's container name, when its cgroup is a container's.
    pub container: Option<String>,
    /// The victim's runtime container id.
    pub container_id: Option<String>,
    /// Victim cgroup path (memory hierarchy), when resolved.
    pub cgroup: Option<String>,
    /// Victim process id (eBPF only).
    pub tgid: Option<u32>,
    /// Victim command (eBPF only).
    pub comm: Option<String>,
    /// Kernel time of the kill (CLOCK_MONOTONIC ns; eBPF only).
    pub kernel_ts_ns: Option<u64>,
    /// When the agent learnt of it.
    pub seen_at: SystemTime,
    /// The victim was its PID namespace's init, so the container ends with it (eBPF only:
    /// `None` when unknown, as from the cgroupfs poller).
    pub ends_container: Option<bool>,
}

/// A memory mark crossing (kernel-side watermark on a cgroup or the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryMark {
    /// Cgroup path; `None` for the node mark or an unknown memcg.
    pub cgroup: Option<String>,
    /// True for the node-wide working-set mark.
    pub node: bool,
    /// True when rising through the high mark, false when falling below the low one.
    pub rising: bool,
    /// Usage (cgroup) or working set (node) in bytes at the crossing, if known.
    pub bytes: Option<u64>,
    /// Kernel time of the crossing (CLOCK_MONOTONIC ns).
    pub kernel_ts_ns: u64,
}

/// One OOM kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomEvent {
    /// Cgroup path of the victim (memory hierarchy); `None` if it could not be resolved.
    pub cgroup: Option<String>,
    /// Victim thread id (eBPF only).
    pub pid: Option<u32>,
    /// Victim process id (eBPF only).
    pub tgid: Option<u32>,
    /// Victim command name (eBPF only).
    pub comm: Option<String>,
    /// When the kernel chose the victim (CLOCK_MONOTONIC ns) (eBPF only).
    pub kernel_ts_ns: Option<u64>,
    /// When the agent learnt of it.
    pub seen_at: SystemTime,
    /// The victim was the init of its PID namespace (eBPF only).
    pub ns_init: Option<bool>,
}

/// A kernel record as eBPF (or the cgroupfs poller) reports it, before the stats mapper
/// resolves its cgroup to a pod: the mapper turns these into [`NodeEvent`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// The kernel OOM-killed a task.
    Oom(OomEvent),
    /// A memcg (leaf) or the node crossed a memory mark.
    MemoryMark {
        /// Cgroup path; `None` for the node mark or an unknown memcg.
        cgroup: Option<String>,
        /// True for the node-wide working-set mark.
        node: bool,
        /// True when rising through the high mark, false when falling below the low one.
        rising: bool,
        /// Usage (cgroup) or working set (node) in bytes at the crossing, if known.
        bytes: Option<u64>,
        /// Kernel time of the crossing (CLOCK_MONOTONIC ns).
        kernel_ts_ns: u64,
    },
    /// A cgroup was created in a hierarchy the agent keys by.
    CgroupCreated {
        /// Hierarchy id (0: v2).
        hierarchy_id: u32,
        /// kernfs id.
        id: u64,
        /// Path relative to the hierarchy root.
        path: String,
    },
    /// A cgroup was removed.
    CgroupRemoved {
        /// Hierarchy id (0: v2).
        hierarchy_id: u32,
        /// kernfs id.
        id: u64,
        /// Path relative to the hierarchy root.
        path: String,
    },
}

/// Everything the bus carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// PLEG: a pod's containers or sandboxes changed.
    Pod(PodLifecycleEvent),
    /// The kernel OOM-killed a process.
    Oom(OomKill),
    /// A memory mark was crossed.
    MemoryMark(MemoryMark),
    /// A cgroup appeared under the pods' root (path relative to the hierarchy root).
    CgroupCreated(String),
    /// A cgroup was removed.
    CgroupRemoved(String),
}

impl NodeEvent {
    /// The pod the event is about, if any.
    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            NodeEvent::Pod(e) => Some(&e.pod.uid),
            NodeEvent::Oom(o) => o.pod.as_ref().map(|p| p.uid.as_str()),
            _ => None,
        }
    }
}

/// CLOCK_MONOTONIC now, ns: the clock of the kernel records' timestamps (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The wall-clock time of a kernel record's CLOCK_MONOTONIC timestamp (a record from the
/// future, which cannot happen, is taken as now).
pub fn kernel_time(ts_ns: u64) -> SystemTime {
    let ago = monotonic_ns().saturating_sub(ts_ns);
    SystemTime::now() - std::time::Duration::from_nanos(ago)
}

impl OomKill {
    /// When the kernel chose the victim: the record's time, or when the agent learnt of it.
    pub fn killed_at(&self) -> SystemTime {
        self.kernel_ts_ns.map_or(self.seen_at, kernel_time)
    }
}

/// Publishing side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<NodeEvent>>,
    lagged: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum Received {
    /// The next event.
    Event(Arc<NodeEvent>),
    /// This many events were lost to a lag: resync from the stores.
    Lagged(u64),
}

/// One subscriber's receiving end.
#[derive(Debug)]
pub struct Subscriber {
    name: &'static str,
    rx: broadcast::Receiver<Arc<NodeEvent>>,
    lagged: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A bus with [`CAPACITY`] slots.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            tx,
            lagged: Arc::default(),
        }
    }

    /// Publishes one event; with no subscriber it goes nowhere (nothing to tell).
    pub fn publish(&self, ev: NodeEvent) {
        let _ = self.tx.send(Arc::new(ev));
    }

    /// A new subscriber, named for the lag counter; it sees events published from now on.
    pub fn subscribe(&self, name: &'static str) -> Subscriber {
        self.lagged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default();
        Subscriber {
            name,
            rx: self.tx.subscribe(),
            lagged: self.lagged.clone(),
        }
    }

    /// Events each subscriber lost to lags (`nodelet_event_bus_lagged_events_total`).
    pub fn lagged(&self) -> Vec<(&'static str, u64)> {
        self.lagged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

impl Subscriber {
    /// The next event or lag notice; `None` once every publisher is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(ev) => Some(Received::Event(ev)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                *self
                    .lagged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(self.name)
                    .or_default() += n;
                Some(Received::Lagged(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(uid: &str) -> NodeEvent {
        NodeEvent::Pod(PodLifecycleEvent {
            pod: PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: uid.into(),
            },
            kind: PodEventKind::ContainerStarted,
            present: true,
        })
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_event() {
        let bus = Bus::new();
        let mut a = bus.subscribe("a");
        let mut b = bus.subscribe("b");
        bus.publish(ev("1"));
        for s in [&mut a, &mut b] {
            match s.recv().await {
                Some(Received::Event(e)) => assert_eq!(e.pod_uid(), Some("1")),
                other => panic!("expected the event, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged_and_the_lag_is_counted() {
        let bus = Bus::new();
        let mut slow = bus.subscribe("slow");
        for i in 0..(CAPACITY + 10) {
            bus.publish(ev(&i.to_string()));
        }
        match slow.recv().await {
            Some(Received::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        assert_eq!(bus.lagged(), vec![("slow", 10)]);
        // After the notice it continues with the oldest event still kept.
        assert!(matches!(slow.recv().await, Some(Received::Event(_))));
    }
}
