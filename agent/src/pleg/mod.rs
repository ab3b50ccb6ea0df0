//! Pod lifecycle event generator (kubelet pkg/kubelet/pleg): turns runtime state changes into
//! per-pod events for the pod workers.
//!
//! The runtime's own event stream (CRI GetContainerEvents) is used where it exists: each event
//! triggers an immediate relist, and the periodic relist slows to the kubelet's evented period.
//! Where the runtime does not implement it (containerd 1.6), a relist every second diffs the
//! sandbox and container lists, as the kubelet's generic PLEG does. There is no per-container
//! polling: one ListPodSandbox and one ListContainers per relist, whatever the pod count.

use crate::kuberuntime::{Cri, labels};
use crate::pod::PodRef;
use proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// genericPlegRelistPeriod.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// eventedPlegRelistPeriod: the safety-net relist while the runtime streams events.
pub const EVENTED_RELIST_PERIOD: Duration = Duration::from_secs(300);
/// genericPlegRelistThreshold: older than this, PLEG is unhealthy.
pub const RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// plegChannelCapacity.
pub const CHANNEL_CAPACITY: usize = 1000;

/// What changed for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
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

/// One pod lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLifecycleEvent {
    /// The pod, as its runtime labels name it.
    pub pod: PodRef,
    /// What happened.
    pub kind: EventKind,
    /// Whether the runtime still has anything of the pod after this change.
    pub present: bool,
}

/// Counters and health, shared read-only with whoever reports them.
#[derive(Debug, Default)]
pub struct PlegStats {
    /// Events dropped because the channel was full.
    pub discarded: AtomicU64,
    /// Relists done.
    pub relists: AtomicU64,
}

/// Runtime state of one pod as of one relist: object id -> state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodRecord {
    pod: Option<PodRef>,
    sandboxes: HashMap<String, i32>,
    containers: HashMap<String, i32>,
}

type Snapshot = HashMap<String, PodRecord>;

fn identity(l: &HashMap<String, String>) -> Option<PodRef> {
    let (namespace, name, uid) = labels::pod_identity(l)?;
    Some(PodRef {
        namespace,
        name,
        uid,
    })
}

fn snapshot(sandboxes: Vec<cri::PodSandbox>, containers: Vec<cri::Container>) -> Snapshot {
    let mut s: Snapshot = HashMap::new();
    for sb in sandboxes {
        let Some(p) = identity(&sb.labels) else {
            continue;
        };
        let r = s.entry(p.uid.clone()).or_default();
        r.pod.get_or_insert(p);
        r.sandboxes.insert(sb.id, sb.state);
    }
    for c in containers {
        let Some(p) = identity(&c.labels) else {
            continue;
        };
        let r = s.entry(p.uid.clone()).or_default();
        r.pod.get_or_insert(p);
        r.containers.insert(c.id, c.state);
    }
    s
}

/// Events between two snapshots (pleg/generic.go computeEvents), one per changed object.
fn diff(old: &Snapshot, new: &Snapshot) -> Vec<PodLifecycleEvent> {
    let running = cri::ContainerState::ContainerRunning as i32;
    let exited = cri::ContainerState::ContainerExited as i32;
    let mut out = Vec::new();
    let empty = PodRecord::default();
    let uids: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for uid in uids {
        let (o, n) = (
            old.get(uid).unwrap_or(&empty),
            new.get(uid).unwrap_or(&empty),
        );
        let Some(pod) = n.pod.clone().or_else(|| o.pod.clone()) else {
            continue;
        };
        let present = !(n.sandboxes.is_empty() && n.containers.is_empty());
        let mut push = |kind| {
            out.push(PodLifecycleEvent {
                pod: pod.clone(),
                kind,
                present,
            })
        };
        let ids: std::collections::BTreeSet<&String> =
            o.containers.keys().chain(n.containers.keys()).collect();
        for id in ids {
            match (o.containers.get(id), n.containers.get(id)) {
                (a, Some(b)) if a == Some(b) => {}
                (_, Some(s)) if *s == running => push(EventKind::ContainerStarted),
                (_, Some(s)) if *s == exited => push(EventKind::ContainerDied),
                (Some(_), None) => push(EventKind::ContainerRemoved),
                _ => {}
            }
        }
        if o.sandboxes != n.sandboxes {
            push(EventKind::SandboxChanged);
        }
    }
    out
}

/// Runs PLEG until cancelled. `healthy` receives the time of every successful relist.
pub async fn run(
    cri: Cri,
    tx: mpsc::Sender<PodLifecycleEvent>,
    healthy: watch::Sender<Option<Instant>>,
    stats: Arc<PlegStats>,
    metrics: Option<Arc<crate::metrics::AgentMetrics>>,
    cancel: CancellationToken,
) {
    let mut last: Option<Snapshot> = None;
    let mut events: Option<tonic::Streaming<cri::ContainerEventResponse>> = None;
    let mut stream_failures = 0u32;
    let mut unreachable_logged = false;
    loop {
        // Relist.
        let relist_started = Instant::now();
        let listed = tokio::try_join!(cri.list_pod_sandboxes(None), cri.list_containers(None));
        if let Some(m) = &metrics {
            m.relist(relist_started.elapsed());
        }
        match listed {
            Ok((sb, cs)) => {
                if unreachable_logged {
                    info!("container runtime reachable again");
                    unreachable_logged = false;
                }
                let snap = snapshot(sb, cs);
                let evs = match &last {
                    None => snap
                        .values()
                        .filter_map(|r| r.pod.clone())
                        .map(|pod| PodLifecycleEvent {
                            pod,
                            kind: EventKind::Present,
                            present: true,
                        })
                        .collect(),
                    Some(old) => diff(old, &snap),
                };
                for ev in evs {
                    debug!(pod = %ev.pod, kind = ?ev.kind, "pod lifecycle event");
                    if tx.try_send(ev).is_err() {
                        stats.discarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                last = Some(snap);
                stats.relists.fetch_add(1, Ordering::Relaxed);
                healthy.send_replace(Some(Instant::now()));
            }
            Err(e) => {
                if !unreachable_logged {
                    warn!(error = %e, "PLEG relist failed: container runtime unreachable; retrying");
                    unreachable_logged = true;
                }
            }
        }

        // Event stream: open it when the runtime has one (the kubelet gives up after 5 tries).
        if events.is_none() && stream_failures < 5 {
            match cri.container_events().await {
                Ok(s) => {
                    info!("using the runtime's container event stream (evented PLEG)");
                    events = Some(s);
                }
                Err(e) if e.is_unimplemented() => {
                    info!(
                        "runtime has no container event stream; relisting every {RELIST_PERIOD:?}"
                    );
                    stream_failures = u32::MAX;
                }
                Err(e) => {
                    stream_failures += 1;
                    debug!(error = %e, "container event stream unavailable");
                }
            }
        }
        let period = if events.is_some() {
            EVENTED_RELIST_PERIOD
        } else {
            RELIST_PERIOD
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            ev = async {
                match events.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match ev {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!(error = %e, "container event stream broke; falling back to relisting");
                        events = None;
                        stream_failures += 1;
                    }
                    None => {
                        events = None;
                        stream_failures += 1;
                    }
                }
            }
        }
    }
}

/// True when the last relist is recent enough (kubelet GenericPLEG.Healthy).
pub fn is_healthy(last: Option<Instant>) -> bool {
    last.is_some_and(|t| t.elapsed() < RELIST_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str, containers: &[(&str, i32)], sandbox_state: i32) -> (String, PodRecord) {
        (
            uid.into(),
            PodRecord {
                pod: Some(PodRef {
                    namespace: "ns".into(),
                    name: "p".into(),
                    uid: uid.into(),
                }),
                sandboxes: [("sb".to_string(), sandbox_state)].into(),
                containers: containers
                    .iter()
                    .map(|(i, s)| (i.to_string(), *s))
                    .collect(),
            },
        )
    }

    #[test]
    fn diff_reports_container_transitions() {
        let run = cri::ContainerState::ContainerRunning as i32;
        let exit = cri::ContainerState::ContainerExited as i32;
        let old: Snapshot = [rec("u", &[("a", run), ("b", run)], 0)].into();
        let new: Snapshot = [rec("u", &[("a", exit), ("c", run)], 0)].into();
        let kinds: Vec<_> = diff(&old, &new).into_iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::ContainerDied,
                EventKind::ContainerRemoved,
                EventKind::ContainerStarted
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn diff_reports_vanished_pods() {
        let old: Snapshot = [rec("u", &[], 0)].into();
        let evs = diff(&old, &Snapshot::new());
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, EventKind::SandboxChanged);
        assert_eq!(evs[0].pod.uid, "u");
        assert!(!evs[0].present);
    }
}
