//! The manager task: one owner of the eviction state, woken by memory marks, a 1 s memory tick
//! and the 10 s housekeeping tick; each wake runs the kubelet's `synchronize` chain.

use super::helpers::{self, Candidate, Condition, Observations};
use super::marks::{Armed, mark_distance};
use super::{EvictionStats, Handle, KillPodFunc, NodePressure, Settings};
use super::{disk, local_storage, reclaim, signals};
use crate::config::PodSet;
use crate::events::{NodeEvent, Received, Subscriber, monotonic_ns};
use crate::kuberuntime::Cri;
use crate::kuberuntime::gc::{NodeGc, PodStateFn};
use crate::options::eviction::{Signal, Threshold};
use crate::pod::KillRequest;
use crate::stats::pods::PodStatsView;
use crate::stats::pods::mapper::{MarkLevel, MarkRequest};
use crate::status::StatusStore;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long the next pass waits for an evicted pod to stop (podCleanupTimeout).
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it looks (the kubelet polls every second; status changes are cheap to read).
const POD_CLEANUP_POLL: Duration = Duration::from_millis(100);

/// What the manager reads and whom it tells.
pub struct Inputs {
    /// The desired pods.
    pub config: watch::Receiver<Option<PodSet>>,
    /// Pod status (terminal pods are not candidates).
    pub status: StatusStore,
    /// Which cgroup is which pod and container.
    pub view: PodStatsView,
    /// The bus subscription named [`super::SUBSCRIBER`].
    pub bus: Subscriber,
    /// How pods are stopped.
    pub kill: KillPodFunc,
    /// Where container memory marks are requested (eBPF only).
    pub marks: Option<mpsc::Sender<MarkRequest>>,
    /// The runtime: node GC, the image filesystem, pods' writable layers.
    pub cri: Cri,
}

/// Starts the manager; its outputs are in the returned [`Handle`].
pub fn start(
    settings: Settings,
    inputs: Inputs,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> Handle {
    let (tx, rx) = watch::channel(NodePressure::default());
    let gc = Arc::new(NodeGc::new(
        inputs.cri.clone(),
        settings.gc.container,
        settings.gc.image,
    ));
    let stats = Arc::new(EvictionStats {
        gc: gc.stats.clone(),
        ..Default::default()
    });
    let pod_state = reclaim::pod_state_fn(inputs.config.clone(), inputs.status.clone());
    reclaim::start_periodic(gc.clone(), pod_state.clone(), tasks, cancel.child_token());
    for t in &settings.options.thresholds {
        debug!(signal = t.signal.as_str(), value = ?t.value, grace = ?t.grace_period, "eviction threshold");
    }
    if settings.static_pods_evictable {
        warn!(
            var = super::STATIC_PODS_VAR,
            "static pods may be evicted (the kubelet never evicts them)"
        );
    }
    if settings.kubelet_schedule {
        warn!(
            var = super::KUBELET_SCHEDULE_VAR,
            "memory signals on the kubelet's 10 s schedule (no passes on marks or pod events)"
        );
    }
    let m = Manager {
        settings,
        inputs,
        pressure: tx,
        stats: stats.clone(),
        obs: Observations::new(),
        last_obs: Observations::new(),
        first_observed: Vec::new(),
        conditions_seen: BTreeMap::new(),
        conditions: BTreeSet::new(),
        thresholds_met: Vec::new(),
        evicted: HashSet::new(),
        armed: HashMap::new(),
        pass: 0,
        gc,
        pod_state,
        image_fs: None,
    };
    tasks.spawn(m.run(cancel));
    Handle {
        pressure: rx,
        stats,
    }
}

struct Manager {
    settings: Settings,
    inputs: Inputs,
    pressure: watch::Sender<NodePressure>,
    stats: Arc<EvictionStats>,
    /// Latest observation per signal (memory and fs/pid are refreshed on their own schedules).
    obs: Observations,
    /// Observations of the previous pass (thresholdsUpdatedStats).
    last_obs: Observations,
    first_observed: Vec<(Threshold, Instant)>,
    conditions_seen: BTreeMap<Condition, Instant>,
    conditions: BTreeSet<Condition>,
    /// Thresholds met (grace included) not yet resolved with their minimum reclaim.
    thresholds_met: Vec<Threshold>,
    /// Pods this manager ordered killed: never candidates again.
    evicted: HashSet<String>,
    /// Container cgroup -> the mark last requested there.
    armed: HashMap<String, Armed>,
    /// Mark passes done (`Armed::pass`).
    pass: u64,
    /// Dead containers and unused images.
    gc: Arc<NodeGc>,
    /// Which pods are gone, for the GC.
    pod_state: PodStateFn,
    /// The image filesystem and whether it is dedicated (detected on the first fs pass).
    image_fs: Option<(PathBuf, bool)>,
}

impl Manager {
    async fn run(mut self, cancel: CancellationToken) {
        let mut mem_tick = tokio::time::interval(super::MEMORY_PERIOD);
        let mut fs_tick = tokio::time::interval(super::HOUSEKEEPING);
        for t in [&mut mem_tick, &mut fs_tick] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let kubelet = self.settings.kubelet_schedule;
        let mut bus_open = true;
        loop {
            let (mut memory, mut fs, mut mark_ts) = (false, false, None);
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = self.inputs.bus.recv(), if bus_open => match ev {
                    Some(Received::Event(e)) => match &*e {
                        NodeEvent::MemoryMark(m) => {
                            memory = true;
                            mark_ts = Some(m.kernel_ts_ns);
                            // A mark that fired is spent (the kernel waits for the opposite
                            // crossing): re-arm it on this pass even if the new mark would
                            // sit where it did.
                            if let Some(c) = &m.cgroup {
                                self.armed.remove(c);
                            }
                        }
                        // A container that just started has no mark yet: arm it now rather
                        // than at the next tick, or a fast ramp could cross unseen.
                        NodeEvent::Pod(_) => memory = true,
                        _ => {}
                    },
                    Some(Received::Lagged(_)) => {
                        // Marks that fired may be among the lost events: re-arm them all.
                        memory = true;
                        self.armed.clear();
                    }
                    None => bus_open = false,
                },
                _ = mem_tick.tick(), if !kubelet => memory = true,
                _ = fs_tick.tick() => fs = true,
            }
            // The kubelet's schedule: one 10 s loop for every signal, nothing in between (the
            // bus is still drained, so it never lags).
            if kubelet {
                (memory, mark_ts) = (fs, None);
            }
            if !(memory || fs) {
                continue;
            }
            self.synchronize(memory, fs, mark_ts, &cancel).await;
        }
    }

    /// One pass of the kubelet's synchronize over the signals due now.
    async fn synchronize(
        &mut self,
        memory: bool,
        fs: bool,
        mark_ts: Option<u64>,
        cancel: &CancellationToken,
    ) {
        let s = &self.settings.sources;
        if memory {
            self.obs.remove(&Signal::MemoryAvailable);
            self.obs.remove(&Signal::AllocatableMemoryAvailable);
            signals::observe_memory(s, &mut self.obs);
        }
        if fs {
            if self.image_fs.is_none() {
                self.image_fs = reclaim::image_fs(&self.gc, &s.root_dir).await;
            }
            signals::observe_fs(s, &mut self.obs);
            if let Some((mount, _)) = &self.image_fs {
                signals::observe_image_fs(mount, &mut self.obs);
            }
            signals::observe_pids(&mut self.obs);
        }
        let thresholds = &self.settings.options.thresholds;
        let now = Instant::now();
        let mut met = helpers::thresholds_met(thresholds, &self.obs, false);
        if !self.thresholds_met.is_empty() {
            let unresolved = helpers::thresholds_met(&self.thresholds_met, &self.obs, true);
            met = helpers::merge(met, unresolved);
        }
        self.first_observed = helpers::first_observed_at(&met, &self.first_observed, now);
        self.conditions_seen =
            helpers::conditions_last_observed_at(&met, &self.conditions_seen, now);
        let conditions = helpers::conditions_observed_since(
            &self.conditions_seen,
            self.settings.options.pressure_transition_period,
            now,
        );
        self.set_conditions(conditions);
        let due = helpers::met_grace_period(&self.first_observed, now);
        self.thresholds_met = due.clone();
        // thresholdsUpdatedStats: act only on observations newer than the last pass's.
        let updated: Vec<Threshold> = due
            .into_iter()
            .filter(
                |t| match (self.obs.get(&t.signal), self.last_obs.get(&t.signal)) {
                    (Some(o), Some(l)) => o.time > l.time,
                    (Some(_), None) => true,
                    (None, _) => false,
                },
            )
            .collect();
        self.last_obs = self.obs.clone();
        if memory {
            self.arm_marks().await;
        }
        // The kubelet checks local storage limits before the thresholds, and a pass that
        // evicted for them does nothing else.
        if fs && self.local_storage_eviction(cancel).await {
            return;
        }
        if updated.is_empty() {
            return;
        }
        self.evict(updated, mark_ts, cancel).await;
    }

    fn set_conditions(&mut self, conditions: BTreeSet<Condition>) {
        if conditions == self.conditions {
            return;
        }
        for c in conditions.symmetric_difference(&self.conditions) {
            let on = conditions.contains(c);
            info!(
                condition = c.as_str(),
                status = if on { "True" } else { "False" },
                "eviction manager: node condition changed"
            );
        }
        self.conditions = conditions;
        let p = NodePressure {
            memory: self.conditions.contains(&Condition::Memory),
            disk: self.conditions.contains(&Condition::Disk),
            pid: self.conditions.contains(&Condition::Pid),
        };
        self.pressure.send_replace(p);
    }

    /// Ranks the active pods for the first reclaimable threshold and evicts the first one that
    /// may be evicted; waits for it to stop, as the kubelet does before its next pass.
    async fn evict(
        &mut self,
        thresholds: Vec<Threshold>,
        mark_ts: Option<u64>,
        cancel: &CancellationToken,
    ) {
        let thresholds = helpers::by_eviction_priority(thresholds);
        let Some(to_reclaim) = thresholds.first().copied() else {
            return;
        };
        let resource = helpers::resource_of(to_reclaim.signal);
        info!(
            resource,
            signal = to_reclaim.signal.as_str(),
            "eviction manager: attempting to reclaim"
        );
        let dedicated = self.image_fs.as_ref().is_some_and(|(_, d)| *d);
        let disk_measure = disk::measure_for(to_reclaim.signal, dedicated);
        if disk_measure.is_some() && self.reclaim_node_level(to_reclaim.signal, dedicated).await {
            info!(
                resource,
                "eviction manager: able to reduce resource pressure without evicting pods"
            );
            return;
        }
        let Some(pods) = self.inputs.config.borrow().clone() else {
            return;
        };
        // A pod its source dropped and shows again is a new start: it may be evicted again.
        self.evicted.retain(|uid| pods.contains_key(uid));
        let statuses = self.inputs.status.pods();
        let usage = signals::pod_usage(&self.settings.sources, &self.inputs.view);
        let mut candidates: Vec<Candidate<'_>> = pods
            .values()
            .filter(|p| !self.evicted.contains(&p.pod_ref.uid))
            .filter(|p| {
                let phase = statuses
                    .get(&p.pod_ref.uid)
                    .and_then(|s| s.status.as_ref())
                    .and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Failed" | "Succeeded"))
            })
            .map(|p| Candidate {
                pod: p,
                usage: usage.get(&p.pod_ref.uid).cloned(),
            })
            .collect();
        if candidates.is_empty() {
            error!(
                "eviction manager: eviction thresholds have been met, but no pods are active to evict"
            );
            return;
        }
        let mut disk_usage = HashMap::new();
        if let Some(m) = disk_measure {
            info!(resource, "eviction manager: must evict pod(s) to reclaim");
            let pods: Vec<_> = candidates.iter().map(|c| c.pod).collect();
            let dirs = disk::Dirs {
                root_dir: self.settings.sources.root_dir.clone(),
                pod_logs_dir: self.settings.pod_logs_dir.clone(),
            };
            disk_usage = disk::measure(&self.inputs.cri, &dirs, &pods).await;
            disk::rank_disk_pressure(&mut candidates, &disk_usage, m, resource == "inodes");
        } else if to_reclaim.signal == Signal::PidAvailable {
            helpers::rank_pid_pressure(&mut candidates);
        } else {
            helpers::rank_memory_pressure(&mut candidates);
        }
        debug!(pods = ?candidates.iter().map(|c| c.pod.pod_ref.to_string()).collect::<Vec<_>>(), "eviction manager: pods ranked for eviction");
        for t in &thresholds {
            if let Some(o) = self.obs.get(&t.signal) {
                let age = SystemTime::now().duration_since(o.time).unwrap_or_default();
                self.stats.stats_age.observe(t.signal.as_str(), age);
            }
        }
        let static_ok = self.settings.static_pods_evictable;
        let Some(victim) = candidates.iter().find(|c| {
            let critical = helpers::is_critical(c.pod, static_ok);
            if critical {
                debug!(pod = %c.pod.pod_ref, "eviction manager: cannot evict a critical pod");
            }
            !critical
        }) else {
            debug!("eviction manager: unable to evict any pods from the node");
            return;
        };
        let grace = if to_reclaim.is_hard() {
            helpers::IMMEDIATE_GRACE_PERIOD_SECONDS
        } else {
            let max = self.settings.options.max_pod_grace_period_seconds;
            victim
                .pod
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .map_or(max, |g| g.min(max))
        };
        let mut message = helpers::eviction_message(
            resource,
            victim.pod,
            victim.usage.as_ref(),
            &thresholds,
            &self.obs,
        );
        if resource == "ephemeral-storage" {
            message +=
                &disk::container_message(victim.pod, disk_usage.get(&victim.pod.pod_ref.uid));
        }
        let pod = victim.pod.pod_ref.clone();
        let order = KillRequest {
            uid: pod.uid.clone(),
            grace_period_seconds: Some(grace),
            reason: helpers::REASON.to_owned(),
            message: message.clone(),
        };
        if let Some(ts) = mark_ts {
            let now = monotonic_ns();
            self.stats.mark_to_decision.observe(
                to_reclaim.signal.as_str(),
                Duration::from_nanos(now.saturating_sub(ts)),
            );
        }
        warn!(pod = %pod, reason = helpers::REASON, grace_period_seconds = grace, message = %message, "eviction manager: evicting pod");
        self.evicted.insert(pod.uid.clone());
        self.stats.evictions.inc(to_reclaim.signal.as_str());
        let kill = (self.inputs.kill)(order);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = kill => {}
        }
        self.wait_for_cleanup(&pod.uid, cancel).await;
    }

    /// localStorageEviction: evicts, with the pod-level grace of 1 s, every active pod over one
    /// of its local storage limits; returns whether any was.
    async fn local_storage_eviction(&mut self, cancel: &CancellationToken) -> bool {
        let Some(pods) = self.inputs.config.borrow().clone() else {
            return false;
        };
        let statuses = self.inputs.status.pods();
        let dirs = disk::Dirs {
            root_dir: self.settings.sources.root_dir.clone(),
            pod_logs_dir: self.settings.pod_logs_dir.clone(),
        };
        let dedicated = self.image_fs.as_ref().is_some_and(|(_, d)| *d);
        let mut evicted_any = false;
        for p in pods.values() {
            if self.evicted.contains(&p.pod_ref.uid) {
                continue;
            }
            let phase = statuses
                .get(&p.pod_ref.uid)
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Failed" | "Succeeded")) {
                continue;
            }
            let Some(limits) = local_storage::limits(p) else {
                continue;
            };
            let usage = local_storage::measure(&self.inputs.cri, &dirs, p, &limits).await;
            let Some((signal, message)) = local_storage::exceeded(&limits, &usage, dedicated)
            else {
                continue;
            };
            if helpers::is_critical(p, self.settings.static_pods_evictable) {
                error!(pod = %p.pod_ref, "eviction manager: cannot evict a critical pod");
                continue;
            }
            warn!(pod = %p.pod_ref, reason = helpers::REASON, message = %message, "eviction manager: evicting pod over its local storage limit");
            self.evicted.insert(p.pod_ref.uid.clone());
            self.stats.evictions.inc(signal);
            let kill = (self.inputs.kill)(KillRequest {
                uid: p.pod_ref.uid.clone(),
                grace_period_seconds: Some(helpers::IMMEDIATE_GRACE_PERIOD_SECONDS),
                reason: helpers::REASON.to_owned(),
                message,
            });
            evicted_any = true;
            tokio::select! {
                _ = cancel.cancelled() => return true,
                _ = kill => {}
            }
        }
        evicted_any
    }

    /// reclaimNodeLevelResources: runs the signal's node-level reclaim, observes the
    /// filesystems again and tells whether every threshold (with its minimum reclaim) is now
    /// clear, in which case no pod is evicted.
    async fn reclaim_node_level(&mut self, signal: Signal, dedicated: bool) -> bool {
        if !reclaim::reclaim(&self.gc, &self.pod_state, signal, dedicated).await {
            return false;
        }
        signals::observe_fs(&self.settings.sources, &mut self.obs);
        if let Some((mount, _)) = &self.image_fs {
            signals::observe_image_fs(mount, &mut self.obs);
        }
        let still = helpers::thresholds_met(&self.settings.options.thresholds, &self.obs, true);
        debug!(thresholds = ?still.iter().map(|t| t.signal.as_str()).collect::<Vec<_>>(), "eviction manager: thresholds after resource reclaim");
        still.is_empty()
    }

    /// waitForPodsCleanup: the next pass waits until the evicted pod has stopped (its status
    /// is terminal, written once its containers are stopped), at most 30 s: otherwise the
    /// memory it still holds would make the next pass evict a second pod.
    async fn wait_for_cleanup(&self, uid: &str, cancel: &CancellationToken) {
        let deadline = Instant::now() + POD_CLEANUP_TIMEOUT;
        while Instant::now() < deadline {
            let done = self.inputs.status.pods().get(uid).is_none_or(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                matches!(phase, Some("Failed" | "Succeeded"))
            });
            if done {
                info!(uid, "eviction manager: pod is evicted successfully");
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POD_CLEANUP_POLL) => {}
            }
        }
        info!(
            uid,
            "eviction manager: timed out waiting for the pod to be cleaned up"
        );
    }

    /// Puts a mark on every container a share of the node's memory slack above its usage: the
    /// threshold cannot be crossed by pod growth without one of them firing first.
    /// ([`mark_distance`] says how far.)
    async fn arm_marks(&mut self) {
        let Some(tx) = self.inputs.marks.clone() else {
            return;
        };
        let slack = self
            .settings
            .options
            .thresholds
            .iter()
            .filter(|t| t.signal.is_memory())
            .filter_map(|t| {
                let o = self.obs.get(&t.signal)?;
                Some(o.available - t.value.quantity(o.capacity))
            })
            .min();
        let Some(slack) = slack else { return };
        let held = self.inputs.view.container_memory();
        let usage: Vec<(&str, u64)> = held.iter().map(|(c, m)| (c, m.usage_bytes)).collect();
        let step = mark_distance(slack, usage.len());
        self.pass = self.pass.wrapping_add(1);
        for (cgroup, bytes) in usage {
            // The store's usage (eBPF, up to a sweep old) only decides whether the mark
            // moved; the collector places it around the usage it reads when it sets it. One
            // cgroup file per container a second here cost more than the rest of the agent.
            let high = bytes + step;
            if let Some(armed) = self.armed.get_mut(cgroup) {
                armed.pass = self.pass;
                if armed.high.abs_diff(high) < step / 2 {
                    continue;
                }
            }
            // Never wait on telemetry: a full queue means the next pass re-arms.
            let req = (cgroup.to_owned(), MarkLevel::AroundUsage(step));
            if tx.try_send(req).is_ok() {
                self.armed.insert(
                    cgroup.to_owned(),
                    Armed {
                        high,
                        pass: self.pass,
                    },
                );
            }
        }
        // Containers not seen on this pass are gone.
        let pass = self.pass;
        self.armed.retain(|_, a| a.pass == pass);
    }
}
