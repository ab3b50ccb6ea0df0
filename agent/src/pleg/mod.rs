//! Pod lifecycle event generator (kubelet pkg/kubelet/pleg): relists the runtime, keeps the
//! runtime cache ([`cache`]) and publishes per-pod events on the event bus.
//!
//! The runtime's own event stream (CRI GetContainerEvents) is used where it exists: each event
//! triggers an immediate relist, and the periodic relist slows to the kubelet's evented period.
//! Where the runtime does not implement it (containerd 1.6), a relist every second diffs the
//! sandbox and container lists, as the kubelet's generic PLEG does. An OOM kill of a
//! container's main process marks it terminated in the cache at once ([`oom`]); any OOM kill
//! also triggers relists, so the runtime's verdict on the container (exit code, `OOMKilled`)
//! follows as soon as the runtime has it.
//!
//! Cost: one ListPodSandbox and one ListContainers per relist, whatever the pod count, plus
//! ContainerStatus only for containers whose state changed (and PodSandboxStatus for a new
//! ready sandbox): an unchanged node costs two calls a second.
//!
//! The cache is written before the events that describe it are published, so a subscriber
//! woken by an event always finds the state it is about. A pod whose inspection failed keeps
//! its old record and is inspected again on the next relist.

pub mod cache;
pub mod oom;

use crate::events::{
    Bus, NodeEvent, OomKill, PodEventKind as EventKind, PodLifecycleEvent, Received,
};
use crate::instrument::{DEF_BUCKETS, Histogram};
use crate::kuberuntime::{Cri, labels, state};
use crate::pod::PodRef;
use cache::{CachedPod, RuntimeCache};
use proto::listing::Listed;
use proto::runtime::v1 as cri;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// genericPlegRelistPeriod.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// eventedPlegRelistPeriod: the safety-net relist while the runtime streams events.
pub const EVENTED_RELIST_PERIOD: Duration = Duration::from_secs(300);
/// genericPlegRelistThreshold: older than this, PLEG is unhealthy.
pub const RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// After an OOM kill, relist at these delays: the runtime learns of the exit a few ms after
/// the kernel's record on a quiet machine (shared/NOTES.md: ~8 ms) but 150 ms or more on a
/// loaded one (`cargo xtask bench eviction`: samples at ~160 ms and, when both early relists
/// missed, at the next 1 s relist), so the follow-ups keep coming until well past that.
const OOM_RELISTS: [Duration; 6] = [
    Duration::from_millis(15),
    Duration::from_millis(60),
    Duration::from_millis(150),
    Duration::from_millis(250),
    Duration::from_millis(400),
    Duration::from_millis(650),
];

/// PLEG's own statistics, owned here and rendered by `metrics/`.
#[derive(Debug)]
pub struct PlegStats {
    /// Relists done.
    pub relists: AtomicU64,
    /// kubelet_pleg_relist_duration_seconds.
    pub relist_duration: Histogram,
    /// kubelet_pleg_relist_interval_seconds: from one relist's start to the next one's.
    pub relist_interval: Histogram,
    /// Unix time (ns) of the last successful relist (kubelet_pleg_last_seen_seconds).
    pub last_seen_unix_ns: AtomicU64,
    /// Pods whose inspection failed and were kept at their old record.
    pub inspect_failures: AtomicU64,
    /// OOM kills on the bus that triggered a relist (`nodelet_pleg_oom_relists_total`).
    pub oom_relists: AtomicU64,
    /// Relists the runtime manager asked for after starting a container
    /// (`nodelet_pleg_hinted_relists_total`).
    pub hinted_relists: AtomicU64,
}

impl Default for PlegStats {
    fn default() -> Self {
        Self {
            relists: AtomicU64::new(0),
            relist_duration: Histogram::new(DEF_BUCKETS),
            relist_interval: Histogram::new(DEF_BUCKETS),
            last_seen_unix_ns: AtomicU64::new(0),
            inspect_failures: AtomicU64::new(0),
            oom_relists: AtomicU64::new(0),
            hinted_relists: AtomicU64::new(0),
        }
    }
}

/// Runtime state of one pod as of one relist: object id -> state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodRecord {
    pod: Option<PodRef>,
    sandboxes: HashMap<String, i32>,
    containers: HashMap<String, i32>,
}

type Snapshot = HashMap<String, PodRecord>;

/// The identity labels (namespace, name, UID) of a listed object, borrowed from it.
fn listed_identity<T: prost::Message + Default>(l: &Listed<T>) -> Option<(&str, &str, &str)> {
    labels::identity_by(|k| l.label(k))
}

fn snapshot(
    sandboxes: &[Listed<cri::PodSandbox>],
    containers: &[Listed<cri::Container>],
) -> Snapshot {
    fn record<'s>(
        s: &'s mut Snapshot,
        (namespace, name, uid): (&str, &str, &str),
    ) -> &'s mut PodRecord {
        // Most objects belong to a pod already seen: look up by the borrowed UID first.
        if !s.contains_key(uid) {
            let pod = PodRef {
                namespace: namespace.into(),
                name: name.into(),
                uid: uid.into(),
            };
            s.insert(
                uid.into(),
                PodRecord {
                    pod: Some(pod),
                    ..Default::default()
                },
            );
        }
        s.get_mut(uid).expect("inserted above")
    }
    let mut s: Snapshot = HashMap::new();
    for sb in sandboxes {
        if let Some(id) = listed_identity(sb) {
            record(&mut s, id).sandboxes.insert(sb.id.clone(), sb.state);
        }
    }
    for c in containers {
        if let Some(id) = listed_identity(c) {
            record(&mut s, id).containers.insert(c.id.clone(), c.state);
        }
    }
    s
}

/// The listed objects of the pods in `needs`, decoded in full, by pod UID. A pod with an object
/// that does not decode goes into `undecodable` (the caller treats it as a failed inspection).
fn decode_needed<'a, T: prost::Message + Default>(
    listed: &'a [Listed<T>],
    needs: &HashSet<&'a str>,
    undecodable: &mut HashSet<&'a str>,
) -> HashMap<&'a str, Vec<T>> {
    let mut out: HashMap<&str, Vec<T>> = HashMap::new();
    for l in listed {
        let Some(uid) = listed_identity(l).and_then(|(_, _, u)| needs.get(u).copied()) else {
            continue;
        };
        match l.decode() {
            Ok(full) => out.entry(uid).or_default().push(full),
            Err(e) => {
                warn!(id = %l.id, error = %e, "listed CRI object does not decode");
                undecodable.insert(uid);
            }
        }
    }
    out
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

/// Runs PLEG until cancelled. `healthy` receives the time of every successful relist;
/// `changed` is poked by the runtime manager after it started a container (relist now).
pub async fn run(
    cri: Cri,
    cache: RuntimeCache,
    bus: Bus,
    healthy: watch::Sender<Option<Instant>>,
    stats: Arc<PlegStats>,
    changed: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let mut pleg = Relister {
        cri: cri.clone(),
        cache,
        bus: bus.clone(),
        stats,
        last: None,
        reinspect: HashSet::new(),
        last_start: None,
        oom: oom::OomOverlay::default(),
    };
    let mut oom = bus.subscribe("pleg");
    let mut events: Option<tonic::Streaming<cri::ContainerEventResponse>> = None;
    let mut stream_failures = 0u32;
    let mut unreachable_logged = false;
    // Extra relists requested by OOM kills, soonest first.
    let mut extra: Vec<Instant> = Vec::new();
    loop {
        match pleg.relist().await {
            Ok(()) => {
                if unreachable_logged {
                    info!("container runtime reachable again");
                    unreachable_logged = false;
                }
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
        let now = Instant::now();
        extra.retain(|t| *t > now);
        let next = extra
            .first()
            .copied()
            .map_or(now + period, |t| t.min(now + period));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next.into()) => break,
                // Pokes while a relist runs are kept as one permit: one relist follows them all.
                _ = changed.notified() => {
                    pleg.stats.hinted_relists.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                got = oom.recv() => match got {
                    Some(Received::Event(ev)) if matches!(*ev, NodeEvent::Oom(_)) => {
                        if let NodeEvent::Oom(kill) = &*ev {
                            pleg.on_oom(kill);
                        }
                        // Relists follow all the same: they bring the runtime's own word.
                        pleg.stats.oom_relists.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        extra.extend(OOM_RELISTS.iter().map(|d| now + *d));
                        extra.sort();
                        break;
                    }
                    // Lags and other events: the periodic relist covers them.
                    Some(_) => continue,
                    None => std::future::pending::<()>().await,
                },
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
                    break;
                }
            }
        }
        // An OOM relist wakes a little early: wait for the soonest requested time.
        if let Some(t) = extra.first().copied()
            && t > Instant::now()
            && t < next
        {
            tokio::time::sleep_until(t.into()).await;
        }
    }
}

/// PLEG's state between relists: the one writer of the runtime cache.
struct Relister {
    cri: Cri,
    cache: RuntimeCache,
    bus: Bus,
    stats: Arc<PlegStats>,
    /// The previous relist's object states, for the diff.
    last: Option<Snapshot>,
    /// Pods whose inspection failed: inspected again on the next relist.
    reinspect: HashSet<String>,
    last_start: Option<Instant>,
    /// Containers the kernel OOM-killed, reported before the runtime knows.
    oom: oom::OomOverlay,
}

impl Relister {
    /// An OOM kill that ends a running container: the cache says so at once, and the pod's
    /// subscribers hear of a died container as from a relist.
    fn on_oom(&mut self, kill: &OomKill) {
        let cur = self.cache.current();
        let Some(pod) = self.oom.note(kill, &cur.pods) else {
            return;
        };
        let mut pods = cur.pods.clone();
        self.oom.apply(&mut pods);
        self.cache.correct(pods);
        self.bus.publish(NodeEvent::Pod(PodLifecycleEvent {
            pod,
            kind: EventKind::ContainerDied,
            present: true,
        }));
    }

    /// One relist: list, diff, inspect what changed, publish the cache, then the events.
    async fn relist(&mut self) -> Result<(), crate::kuberuntime::CriError> {
        let started = Instant::now();
        if let Some(prev) = self.last_start.replace(started) {
            self.stats.relist_interval.observe(started - prev);
        }
        let listed = tokio::try_join!(
            self.cri.relist_pod_sandboxes(),
            self.cri.relist_containers()
        );
        let (sandboxes, containers) = match listed {
            Ok(l) => l,
            Err(e) => {
                self.stats.relist_duration.observe(started.elapsed());
                return Err(e);
            }
        };
        let snap = snapshot(&sandboxes, &containers);
        let evs: Vec<PodLifecycleEvent> = match &self.last {
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
        let changed: HashSet<&str> = evs.iter().map(|e| e.pod.uid.as_str()).collect();
        let prev = self.cache.current();
        // Pods to inspect: new, changed, or whose last inspection failed. An idle relist has
        // none, and then groups nothing.
        let needs: HashSet<&str> = snap
            .iter()
            .filter(|(uid, r)| {
                r.pod.is_some()
                    && (!prev.pods.contains_key(*uid)
                        || changed.contains(uid.as_str())
                        || self.reinspect.contains(*uid))
            })
            .map(|(uid, _)| uid.as_str())
            .collect();
        // The listed objects of those pods, decoded in full for inspection. A pod with an
        // object that does not decode is inspected again on the next relist, as after a
        // failed inspection.
        let mut undecodable: HashSet<&str> = HashSet::new();
        let (mut sbs_of, mut cs_of) = (HashMap::new(), HashMap::new());
        if !needs.is_empty() {
            sbs_of = decode_needed(&sandboxes, &needs, &mut undecodable);
            cs_of = decode_needed(&containers, &needs, &mut undecodable);
        }
        let mut pods: HashMap<String, CachedPod> = HashMap::with_capacity(snap.len());
        let mut reinspect = HashSet::new();
        for (uid, record) in &snap {
            let Some(pod) = record.pod.clone() else {
                continue;
            };
            let old = prev.pods.get(uid);
            if !needs.contains(uid.as_str())
                && let Some(old) = old
            {
                pods.insert(uid.clone(), old.clone());
                continue;
            }
            let sbs = sbs_of.remove(uid.as_str()).unwrap_or_default();
            let cs = cs_of.remove(uid.as_str()).unwrap_or_default();
            let mut state = state::from_lists(sbs, cs);
            let target = pod.to_string();
            let prev_state = old.map(|o| self.oom.for_inspection(uid, &o.state));
            let inspected = if undecodable.contains(uid.as_str()) {
                Err("one of its listed objects does not decode".to_string())
            } else {
                state::inspect(&self.cri, &mut state, prev_state.as_deref(), &target)
                    .await
                    .map_err(|e| e.to_string())
            };
            match inspected {
                Ok(()) => {}
                Err(e) => {
                    debug!(pod = %target, error = %e, "inspecting pod failed; keeping its old record");
                    self.stats.inspect_failures.fetch_add(1, Ordering::Relaxed);
                    reinspect.insert(uid.clone());
                    if let Some(old) = old {
                        pods.insert(uid.clone(), old.clone());
                        continue;
                    }
                }
            }
            pods.insert(
                uid.clone(),
                CachedPod {
                    pod,
                    state: Arc::new(state),
                },
            );
        }
        reinspect.extend(self.oom.apply(&mut pods));
        self.reinspect = reinspect;
        self.cache.publish(pods, started);
        self.last = Some(snap);
        for ev in evs {
            debug!(pod = %ev.pod, kind = ?ev.kind, "pod lifecycle event");
            self.bus.publish(NodeEvent::Pod(ev));
        }
        self.stats.relists.fetch_add(1, Ordering::Relaxed);
        self.stats.relist_duration.observe(started.elapsed());
        if let Ok(d) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
            self.stats.last_seen_unix_ns.store(
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        Ok(())
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
