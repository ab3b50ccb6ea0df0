//! The status manager task: one owner of every pod's status entry (see the module doc).

use super::generate::{StatusContext, Waiting, pod_with_status};
use super::{PodStatuses, StatusStore};
use crate::config::PodSet;
use crate::instrument::Histogram;
use crate::kuberuntime::state::PodRuntimeState;
use crate::pleg::cache::CacheReader;
use crate::pod::PodHandle;
use crate::prober::results::ProbeResults;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// kubelet_pod_start_duration_seconds buckets (pkg/kubelet/metrics).
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// Updates a pod worker sends. Commands: the worker waits when the manager is busy, so no
/// update is lost (the queue is small and the manager's work per update is a status rebuild).
#[derive(Debug)]
enum Update {
    /// Why the pod's containers wait, as of this point of a sync.
    Waiting { uid: String, waiting: Waiting },
    /// The pod is terminated and removed from the runtime; `stopped` is its state just
    /// before removal (the containers' end states), when the worker could read it.
    Terminated {
        uid: String,
        stopped: Option<PodRuntimeState>,
    },
    /// A node-side verdict stopped the pod for good: phase Failed with this reason.
    Failed {
        uid: String,
        reason: String,
        message: String,
    },
}

/// The pod workers' handle on the manager (cheap to clone).
#[derive(Debug, Clone)]
pub struct StatusHandle {
    tx: mpsc::Sender<Update>,
}

impl StatusHandle {
    /// Reports why containers wait (replaces the previous report for the pod).
    pub async fn waiting(&self, uid: &str, waiting: Waiting) {
        let _ = self
            .tx
            .send(Update::Waiting {
                uid: uid.to_owned(),
                waiting,
            })
            .await;
    }

    /// Reports that the pod is gone from the runtime: its status is forgotten unless a config
    /// source still wants the UID. A pod that stays only to be deleted (or stopped by a
    /// verdict) keeps `stopped`, its containers' end states, as its final status.
    pub async fn terminated(&self, uid: &str, stopped: Option<PodRuntimeState>) {
        let _ = self
            .tx
            .send(Update::Terminated {
                uid: uid.to_owned(),
                stopped,
            })
            .await;
    }
}

impl StatusHandle {
    /// Records a node-side verdict (eviction, admission refusal): the pod's phase becomes
    /// Failed with `reason` and `message`, and stays so while a source still shows the pod.
    pub async fn failed(&self, uid: &str, reason: &str, message: &str) {
        let _ = self
            .tx
            .send(Update::Failed {
                uid: uid.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
            })
            .await;
    }
}

/// The manager's statistics, rendered by `metrics/`.
#[derive(Debug)]
pub struct StatusStats {
    /// kubelet_pod_start_duration_seconds.
    pub pod_start: Histogram,
}

impl Default for StatusStats {
    fn default() -> Self {
        Self {
            pod_start: Histogram::new(POD_START_BUCKETS),
        }
    }
}

/// Whether the agent started a pod or found it running (adoption): only the former is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Not known yet: the runtime cache had no relist when the pod was first seen.
    Unknown,
    /// The runtime had nothing of the pod when it was first seen.
    New,
    /// The runtime already had it.
    Adopted,
}

/// One pod's entry.
#[derive(Debug)]
struct Entry {
    desired: PodHandle,
    first_seen: SystemTime,
    first_seen_mono: Instant,
    waiting: Waiting,
    runtime: Option<Arc<PodRuntimeState>>,
    /// Set once the pod is terminated for good (deleted from the API server, or stopped by a
    /// verdict): its state just before its containers were removed, which the status keeps
    /// (the kubelet's terminal status from SyncTerminatingPod) whatever PLEG shows since.
    stopped: Option<Arc<PodRuntimeState>>,
    /// Still in the config sources' set.
    wanted: bool,
    origin: Origin,
    start_observed: bool,
    /// A node-side verdict (reason, message): phase Failed from then on.
    verdict: Option<(String, String)>,
    /// Bumped on every input change.
    version: u64,
    /// The version `status` was built from.
    built: u64,
    status: Option<Arc<Pod>>,
}

/// Starts the manager. Returns the workers' handle, the read side and the statistics.
pub fn start(
    host_ip: String,
    config: watch::Receiver<Option<PodSet>>,
    cache: CacheReader,
    probes: ProbeResults,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> (StatusHandle, StatusStore, Arc<StatusStats>) {
    let (tx, rx) = mpsc::channel(64);
    let (out, store_rx) = watch::channel(PodStatuses::default());
    let stats = Arc::new(StatusStats::default());
    let m = Manager {
        host_ip,
        entries: BTreeMap::new(),
        early_verdicts: BTreeMap::new(),
        out,
        stats: stats.clone(),
        probes,
    };
    tasks.spawn(m.run(config, cache, rx, cancel));
    (StatusHandle { tx }, StatusStore { rx: store_rx }, stats)
}

struct Manager {
    host_ip: String,
    entries: BTreeMap<String, Entry>,
    /// Verdicts for pods the config set has not shown this manager yet (the pod workers read
    /// the same set and may act first).
    early_verdicts: BTreeMap<String, (String, String)>,
    out: watch::Sender<PodStatuses>,
    stats: Arc<StatusStats>,
    /// Probe results (`ready`, `started`); a change rebuilds the pod's status.
    probes: ProbeResults,
}

impl Manager {
    async fn run(
        mut self,
        mut config: watch::Receiver<Option<PodSet>>,
        mut cache: CacheReader,
        mut updates: mpsc::Receiver<Update>,
        cancel: CancellationToken,
    ) {
        let mut cache_open = true;
        let mut probe_updates = self.probes.subscribe();
        // What the last pass saw: PLEG publishes a generation every second even when nothing
        // changed, and a pass over every pod for each was a tenth of the idle agent's CPU at
        // 250 pods.
        let mut seen_set: Option<PodSet> = None;
        let mut seen_content = None;
        loop {
            let set = config.borrow_and_update().clone();
            let content = cache.snapshot().content;
            let cache_news = seen_content != Some(content);
            let set_news = match (&set, &seen_set) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (a, b) => a.is_some() != b.is_some(),
            };
            // Removed pods leave once the runtime no longer has them: cache news too.
            if (set_news || cache_news)
                && let Some(set) = &set
            {
                self.on_config(set, &cache);
            }
            if cache_news {
                self.on_cache(&cache);
            }
            (seen_set, seen_content) = (set, Some(content));
            self.publish();
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = config.changed() => if r.is_err() { return },
                ok = cache.changed(), if cache_open => cache_open = ok,
                u = updates.recv() => match u {
                    Some(u) => self.on_update(u),
                    None => return,
                },
                r = probe_updates.recv() => match r {
                    Ok(u) => {
                        if let Some(e) = self.entries.get_mut(&u.pod_uid) {
                            e.version += 1;
                        }
                    }
                    // Missed some: rebuild every pod.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for e in self.entries.values_mut() {
                            e.version += 1;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// First sight, spec changes and removals from the config sources.
    fn on_config(&mut self, set: &PodSet, cache: &CacheReader) {
        let snap = cache.snapshot();
        let relisted = snap.updated.is_some();
        for (uid, pod) in set.iter() {
            match self.entries.get_mut(uid) {
                Some(e) => {
                    e.wanted = true;
                    if !Arc::ptr_eq(&e.desired, pod) && e.desired != *pod {
                        e.desired = pod.clone();
                        e.version += 1;
                    }
                }
                None => {
                    let origin = match (relisted, snap.pods.contains_key(uid)) {
                        (false, _) => Origin::Unknown,
                        (true, true) => Origin::Adopted,
                        (true, false) => Origin::New,
                    };
                    debug!(pod = %pod.pod_ref, ?origin, "status: pod first seen");
                    self.entries.insert(
                        uid.clone(),
                        Entry {
                            desired: pod.clone(),
                            first_seen: SystemTime::now(),
                            first_seen_mono: Instant::now(),
                            waiting: Waiting::new(),
                            runtime: snap.pods.get(uid).map(|p| p.state.clone()),
                            stopped: None,
                            wanted: true,
                            origin,
                            start_observed: false,
                            verdict: self.early_verdicts.remove(uid),
                            version: 1,
                            built: 0,
                            status: None,
                        },
                    );
                }
            }
        }
        for (uid, e) in self.entries.iter_mut() {
            if e.wanted && !set.contains_key(uid) {
                e.wanted = false;
            }
        }
        // A removed pod the runtime never had (or no longer has) has nothing left to report.
        self.entries
            .retain(|uid, e| e.wanted || !relisted || snap.pods.contains_key(uid));
        self.early_verdicts.retain(|uid, _| set.contains_key(uid));
    }

    /// New runtime state from PLEG.
    fn on_cache(&mut self, cache: &CacheReader) {
        let snap = cache.snapshot();
        if snap.updated.is_none() {
            return;
        }
        for (uid, e) in self.entries.iter_mut() {
            let now = snap.pods.get(uid).map(|p| p.state.clone());
            if e.origin == Origin::Unknown {
                e.origin = if now.is_some() {
                    Origin::Adopted
                } else {
                    Origin::New
                };
            }
            let same = match (&e.runtime, &now) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                e.runtime = now;
                e.version += 1;
            }
        }
    }

    fn on_update(&mut self, u: Update) {
        match u {
            Update::Waiting { uid, waiting } => {
                if let Some(e) = self.entries.get_mut(&uid)
                    && e.waiting != waiting
                {
                    e.waiting = waiting;
                    e.version += 1;
                }
            }
            Update::Failed {
                uid,
                reason,
                message,
            } => match self.entries.get_mut(&uid) {
                Some(e) => {
                    e.verdict = Some((reason, message));
                    e.version += 1;
                }
                None => {
                    self.early_verdicts.insert(uid, (reason, message));
                }
            },
            Update::Terminated { uid, stopped } => {
                let keep = self.entries.get_mut(&uid).is_some_and(|e| {
                    e.runtime = None;
                    e.waiting.clear();
                    e.version += 1;
                    if e.wanted && (e.desired.deleting() || e.verdict.is_some()) {
                        // Never runs again: the end states stay until the pod is gone.
                        e.stopped = Some(Arc::new(stopped.unwrap_or_default()));
                    }
                    // Otherwise re-added while it terminated: it starts from a clean slate.
                    e.wanted
                });
                if !keep {
                    self.entries.remove(&uid);
                }
            }
        }
    }

    /// Rebuilds the statuses whose inputs changed and publishes the set if any differs.
    fn publish(&mut self) {
        let mut changed = false;
        let empty = PodRuntimeState::default();
        for e in self.entries.values_mut() {
            if e.version == e.built {
                continue;
            }
            let ctx = StatusContext {
                probes: Some(self.probes.clone()),
                host_ip: self.host_ip.clone(),
                start_time: Some(e.first_seen),
                terminal: e.stopped.is_some(),
            };
            let rt = e.stopped.as_deref().or(e.runtime.as_deref());
            let rt = rt.unwrap_or(&empty);
            let mut pod = pod_with_status(&e.desired, rt, &e.waiting, &ctx);
            // A terminal phase the API server already holds (the pod finished or was evicted
            // before this agent started) counts as ours.
            let old_phase = e
                .status
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.clone())
                .or_else(|| e.desired.api_terminal_phase().map(str::to_owned));
            if let (Some(old), Some(st)) = (old_phase.as_deref(), pod.status.as_mut())
                && matches!(old, "Succeeded" | "Failed")
                && st.phase.as_deref() != Some(old)
            {
                // A terminal phase never goes back (the kubelet's status manager guard).
                st.phase = Some(old.to_owned());
            }
            if let (Some((reason, message)), Some(st)) = (&e.verdict, pod.status.as_mut()) {
                st.phase = Some("Failed".into());
                st.reason = Some(reason.clone());
                st.message = Some(message.clone());
            }
            if let (Some(old), Some(st)) = (
                e.status.as_ref().and_then(|p| p.status.as_ref()),
                pod.status.as_mut(),
            ) {
                carry_transition_times(old, st, SystemTime::now());
            }
            let new_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if !e.start_observed
                && e.origin == Origin::New
                && new_phase == Some("Running")
                && all_running(&pod)
            {
                self.stats.pod_start.observe(e.first_seen_mono.elapsed());
                e.start_observed = true;
            }
            e.built = e.version;
            if e.status.as_deref() != Some(&pod) {
                e.status = Some(Arc::new(pod));
                changed = true;
            }
        }
        let stale = self.out.borrow().len() != self.entries.len();
        if changed || stale {
            let map: BTreeMap<String, Arc<Pod>> = self
                .entries
                .iter()
                .filter_map(|(uid, e)| e.status.clone().map(|s| (uid.clone(), s)))
                .collect();
            self.out.send_replace(Arc::new(map));
        }
    }
}

/// The status manager's updateLastTransitionTime: a condition whose status is what it was keeps
/// its old lastTransitionTime; one that changed (or is new) gets `now`. (The generated ones all
/// carry the pod's start time, right only for the first status.)
fn carry_transition_times(
    old: &k8s_openapi::api::core::v1::PodStatus,
    new: &mut k8s_openapi::api::core::v1::PodStatus,
    now: SystemTime,
) {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .and_then(|s| k8s_openapi::jiff::Timestamp::new(s, 0).ok())
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    let old = old.conditions.as_deref().unwrap_or_default();
    for c in new.conditions.iter_mut().flatten() {
        c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status => o.last_transition_time.clone(),
            _ => now.clone(),
        };
    }
}

/// Every container of the spec runs (the kubelet's "pod started" point).
fn all_running(pod: &Pod) -> bool {
    let n = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .count();
    n > 0 && running >= n
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::time::Duration;

    fn at(secs: i64) -> Option<Time> {
        Some(Time(
            k8s_openapi::jiff::Timestamp::new(secs, 0).expect("valid"),
        ))
    }

    fn status(conds: &[(&str, &str, i64)]) -> PodStatus {
        PodStatus {
            conditions: Some(
                conds
                    .iter()
                    .map(|(t, s, when)| PodCondition {
                        type_: (*t).into(),
                        status: (*s).into(),
                        last_transition_time: at(*when),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// A container that turns ready after its readiness probe's initial delay: the Ready
    /// condition's lastTransitionTime is when it turned, not the pod's start (the upstream
    /// "readiness probe should not be ready before initial delay" test compares the two).
    #[test]
    fn changed_conditions_get_now_unchanged_keep_theirs() {
        let old = status(&[("PodScheduled", "True", 100), ("Ready", "False", 100)]);
        let mut new = status(&[
            ("PodScheduled", "True", 100),
            ("Ready", "True", 100),
            ("Initialized", "True", 100),
        ]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(117_600);
        carry_transition_times(&old, &mut new, now);
        let times: Vec<_> = new
            .conditions
            .expect("conditions")
            .into_iter()
            .map(|c| (c.type_, c.last_transition_time))
            .collect();
        assert_eq!(
            times,
            vec![
                ("PodScheduled".to_string(), at(100)),
                ("Ready".to_string(), at(117)),
                ("Initialized".to_string(), at(117)),
            ]
        );
    }
}
