//! Pod workers (kubelet pkg/kubelet/pod_workers.go): one task per pod UID, and the dispatcher
//! that owns them.
//!
//! The dispatcher reconciles three inputs into workers: the desired pod set from the config
//! sources, pod lifecycle events from PLEG, and workers reporting that they finished
//! terminating. It keeps the kubelet's rules:
//! - a worker sees only the latest desired spec (a `watch` channel), but once termination is
//!   requested it is never withdrawn;
//! - at most one static pod per full name (`name_namespace`) runs: a replacement (an edited
//!   manifest gets a new UID) starts only after the old pod has fully terminated
//!   (allowStaticPodStart);
//! - a UID re-added while it terminates starts again after termination (restartRequested);
//! - pods the runtime has but no source wants (left from before a restart) are terminated,
//!   but only after every source has delivered its first full set (SeenAllSources).
//!
//! Node-side verdicts (eviction, admission refusal) arrive through a [`PodKiller`]: the pod is
//! stopped within the verdict's grace period, its status becomes Failed with the verdict's
//! reason, and it is not started again while a source still shows it (the kubelet's
//! killPodNow followed by a terminal status). A pod whose API object carries a
//! deletionTimestamp is stopped with its deletion grace period and not started again; the
//! status manager then asks the API server for the final delete.
//!
//! Workers read runtime state from PLEG's cache, always newer than their own last sync
//! (GetNewerThan), and report why containers wait to the status manager at the start and end
//! of every sync. The dispatcher wakes a pod's worker on every bus event about the pod (PLEG
//! changes, OOM kills); a bus lag wakes every worker, since any of them may have missed one.

use crate::admission::{self, NodeFacts};
use crate::config::PodSet;
use crate::events::{NodeEvent, Received, Subscriber};
use crate::instrument::{DEF_BUCKETS, HistogramVec};
use crate::kuberuntime::actions::is_sidecar;
use crate::kuberuntime::state::{ContainerState, PodRuntimeState};
use crate::kuberuntime::{PodBackoffs, RuntimeManager, SyncOutcome, Unhealthy, Unstarted};
use crate::pleg::cache::CacheReader;
use crate::pod::{KillRequest, PodHandle, PodRef, grace_period_seconds};
use crate::prober::ProbeType;
use crate::prober::results::{ProbeResult, ProbeResults};
use crate::recorder::reasons::{
    DEADLINE_EXCEEDED, DEADLINE_EXCEEDED_MESSAGE, failed_kill_pod, unsupported_fields, verdict,
};
use crate::status::StatusHandle;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Retry delay after a failed sync (kubelet backOffPeriod, jittered).
const ERROR_REQUEUE: Duration = Duration::from_secs(10);

/// What a worker should do; the dispatcher only ever moves it towards termination.
#[derive(Debug, Clone)]
struct WorkerInput {
    pod: Option<PodHandle>,
    pod_ref: PodRef,
    terminate: bool,
    /// Why the node stops the pod for good, when it does.
    verdict: Option<KillRequest>,
}

/// The pod workers' statistics, rendered by `metrics/`.
#[derive(Debug)]
pub struct PodWorkerStats {
    /// kubelet_pod_worker_duration_seconds by operation_type (create, update, sync).
    pub duration: HistogramVec,
}

impl Default for PodWorkerStats {
    fn default() -> Self {
        Self {
            duration: HistogramVec::new(DEF_BUCKETS),
        }
    }
}

/// Sends node-side verdicts to the pod workers (cheap to clone).
#[derive(Debug, Clone)]
pub struct PodKiller {
    tx: mpsc::Sender<KillRequest>,
}

impl PodKiller {
    /// A killer and the receiver the dispatcher reads.
    pub fn new() -> (Self, mpsc::Receiver<KillRequest>) {
        let (tx, rx) = mpsc::channel(64);
        (Self { tx }, rx)
    }

    /// Stops the pod for good with a Failed status (waits while the dispatcher is busy).
    pub async fn kill(&self, req: KillRequest) {
        let _ = self.tx.send(req).await;
    }
}

struct Worker {
    input: watch::Sender<WorkerInput>,
    full_name: String,
}

/// Settings the workers share.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Periodic resync (syncFrequency).
    pub sync_frequency: Duration,
    /// Crash-loop back-off cap.
    pub max_restart_backoff: Duration,
    /// Where each worker reports why its containers wait.
    pub status: StatusHandle,
    /// PLEG's runtime cache.
    pub cache: CacheReader,
    /// Sync durations.
    pub stats: Arc<PodWorkerStats>,
    /// What a new pod is admitted against.
    pub admission: NodeFacts,
    /// Probe results: a failed liveness or startup probe restarts its container.
    pub probes: ProbeResults,
}

/// The bus subscriber name of the pod workers (its lag count is the kubelet's
/// `kubelet_pleg_discard_events`: PLEG events the workers missed).
pub const SUBSCRIBER: &str = "pod_workers";

/// Runs the dispatcher until cancelled; `events` is the bus subscription named
/// [`SUBSCRIBER`]; `removals` the API pods deleted from the API server, as their final
/// objects (sent before the desired set without them). Workers stop with it; pods keep
/// running, as with the kubelet, and are adopted by the next start.
pub async fn run(
    runtime: RuntimeManager,
    settings: WorkerSettings,
    mut config: watch::Receiver<Option<PodSet>>,
    mut events: Subscriber,
    mut kills: mpsc::Receiver<KillRequest>,
    mut removals: mpsc::UnboundedReceiver<PodHandle>,
    cancel: CancellationToken,
) {
    let (done_tx, mut done_rx) = mpsc::channel::<String>(64);
    // Workers' own verdicts (activeDeadlineSeconds) go through the same path as eviction's.
    let (deadlines, mut deadline_kills) = PodKiller::new();
    let mut probe_updates = settings.probes.subscribe();
    let mut d = Dispatcher {
        workers: HashMap::new(),
        finished: HashMap::new(),
        verdicts: HashMap::new(),
        refused: Vec::new(),
        tasks: JoinSet::new(),
        runtime,
        settings,
        done: done_tx,
        deadlines,
        cancel,
    };
    loop {
        // Removals first: a set without a pod is published after its removal was queued, so
        // the termination uses the deleted object's grace period.
        while let Ok(p) = removals.try_recv() {
            d.on_removed(p);
        }
        let desired = config.borrow_and_update().clone();
        d.reconcile(desired.as_ref());
        for req in std::mem::take(&mut d.refused) {
            d.on_kill(req).await;
        }
        tokio::select! {
            _ = d.cancel.cancelled() => break,
            r = config.changed() => if r.is_err() { break },
            ev = events.recv() => match ev {
                Some(Received::Event(ev)) => d.on_event(&ev),
                Some(Received::Lagged(n)) => {
                    warn!(missed = n, "pod workers fell behind the event bus; waking every worker");
                    d.wake_all();
                }
                None => break,
            },
            Some(req) = kills.recv() => d.on_kill(req).await,
            Some(req) = deadline_kills.recv() => d.on_kill(req).await,
            Some(p) = removals.recv() => d.on_removed(p),
            r = probe_updates.recv() => match r {
                // Liveness and startup failures are acted on by the pod's sync (the kubelet's
                // syncLoop handleProbeSync), and a startup success lets the init containers
                // after a sidecar go; readiness only changes the status.
                Ok(u) => if (u.probe_type == ProbeType::Startup
                    || (u.probe_type == ProbeType::Liveness && u.result == ProbeResult::Failure))
                    && let Some(w) = d.workers.get(&u.pod_uid)
                {
                    w.input.send_modify(|_| {});
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => d.wake_all(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            Some(uid) = done_rx.recv() => {
                // Termination removed everything; the cache shows the pod again only if a
                // relist after this point finds something of it.
                d.workers.remove(&uid);
                d.finished.insert(uid.clone(), Instant::now());
                debug!(uid, "pod worker finished");
            }
        }
    }
    d.workers.clear();
    d.tasks.shutdown().await;
}

/// The dispatcher's state: the one owner of the worker table.
struct Dispatcher {
    workers: HashMap<String, Worker>,
    /// When workers finished terminating, by UID: cache entries from relists that started
    /// before that are stale, not pods to terminate again.
    finished: HashMap<String, Instant>,
    /// Pods stopped for good by a verdict: not started again while a source shows them.
    verdicts: HashMap<String, KillRequest>,
    /// Admission refusals of the last reconcile, turned into verdicts by the loop.
    refused: Vec<KillRequest>,
    tasks: JoinSet<()>,
    runtime: RuntimeManager,
    settings: WorkerSettings,
    done: mpsc::Sender<String>,
    /// Handed to workers: a pod past its activeDeadlineSeconds is stopped as by a verdict.
    deadlines: PodKiller,
    cancel: CancellationToken,
}

impl Dispatcher {
    /// Wakes the worker of the pod an event is about; a burst coalesces into one sync.
    fn on_event(&mut self, ev: &NodeEvent) {
        if let NodeEvent::Oom(o) = ev
            && let Some(p) = &o.pod
        {
            debug!(pod = %p, container = ?o.container, "OOM kill: resyncing the pod");
        }
        if let Some(w) = ev.pod_uid().and_then(|uid| self.workers.get(uid)) {
            w.input.send_modify(|_| {});
        }
    }

    /// A verdict: the worker (if any) terminates the pod and reports the Failed status; a pod
    /// without a worker gets the status at once.
    async fn on_kill(&mut self, req: KillRequest) {
        info!(uid = %req.uid, reason = %req.reason, message = %req.message, "stopping pod for good");
        self.verdicts.insert(req.uid.clone(), req.clone());
        match self.workers.get(&req.uid) {
            Some(w) => {
                // Evictions of running pods; refusals were recorded at admission.
                let pod = w.input.borrow().pod_ref.clone();
                self.runtime
                    .recorder()
                    .pod(&pod, verdict(&req.reason, &req.message));
                w.input.send_modify(|inp| {
                    inp.terminate = true;
                    inp.verdict = Some(req);
                });
            }
            None => {
                self.settings
                    .status
                    .failed(&req.uid, &req.reason, &req.message)
                    .await;
            }
        }
    }

    /// An API pod deleted from the API server: its worker terminates with the deleted
    /// object's grace period (a force delete's 0 included), as the kubelet's deletePod.
    fn on_removed(&self, pod: PodHandle) {
        let Some(w) = self.workers.get(&pod.pod_ref.uid) else {
            return;
        };
        w.input.send_if_modified(|inp| {
            if inp.terminate {
                return false;
            }
            inp.pod = Some(pod);
            inp.terminate = true;
            true
        });
    }

    fn wake_all(&self) {
        for w in self.workers.values() {
            w.input.send_modify(|_| {});
        }
    }

    /// Moves the workers towards `desired`: updates, terminations, starts (one static pod per
    /// full name), and terminations of runtime pods no source wants.
    fn reconcile(&mut self, desired: Option<&PodSet>) {
        // Until the source has spoken we know nothing is unwanted: touch nothing.
        let Some(desired) = desired else { return };
        self.verdicts.retain(|uid, _| desired.contains_key(uid));
        // Owned, so the closure does not borrow the dispatcher that spawns.
        let stopped: std::collections::HashSet<String> = self.verdicts.keys().cloned().collect();
        let runnable = |uid: &str| {
            desired.get(uid).filter(|p| {
                !p.deleting() && !stopped.contains(uid) && p.api_terminal_phase().is_none()
            })
        };

        for (uid, w) in &self.workers {
            let wanted = runnable(uid);
            w.input.send_if_modified(|inp| {
                if inp.terminate {
                    return false;
                }
                match wanted {
                    None => {
                        // A deleted API pod stops with its deletion grace period.
                        if let Some(p) = desired.get(uid) {
                            inp.pod = Some(p.clone());
                        }
                        inp.terminate = true;
                        true
                    }
                    Some(p) if inp.pod.as_ref() != Some(p) => {
                        inp.pod = Some(p.clone());
                        true
                    }
                    Some(_) => false,
                }
            });
        }

        // New pods in creation order (the kubelet's HandlePodAdditions sorts so), each admitted
        // against what runs; a pod the runtime already has was admitted before a restart.
        let cache = self.settings.cache.snapshot();
        let mut new: Vec<&PodHandle> = desired
            .iter()
            .filter(|(uid, _)| !self.workers.contains_key(*uid) && runnable(uid).is_some())
            .map(|(_, p)| p)
            .collect();
        new.sort_by(|a, b| {
            let t = |p: &PodHandle| p.pod.metadata.creation_timestamp.clone().map(|t| t.0);
            t(a).cmp(&t(b))
        });
        for pod in new {
            let uid = &pod.pod_ref.uid;
            let full = pod.pod_ref.full_name();
            if let Some((other, _)) = self.workers.iter().find(|(_, w)| w.full_name == full) {
                debug!(pod = %pod.pod_ref, waiting_for = %other, "static pod waits for the previous instance to terminate");
                continue;
            }
            if !cache.pods.contains_key(uid) {
                let admitted: Vec<&k8s_openapi::api::core::v1::Pod> = self
                    .workers
                    .keys()
                    .filter_map(|u| desired.get(u))
                    .filter(|p| !p.deleting() && p.api_terminal_phase().is_none())
                    .map(|p| &p.pod)
                    .collect();
                if let Err(req) =
                    admission::admit(&pod.pod, uid, &admitted, &self.settings.admission)
                {
                    info!(pod = %pod.pod_ref, reason = %req.reason, message = %req.message, "pod refused by node admission");
                    let refusal = verdict(&req.reason, &req.message);
                    self.runtime.recorder().pod(&pod.pod_ref, refusal);
                    self.verdicts.insert(uid.clone(), req.clone());
                    self.refused.push(req);
                    continue;
                }
            }
            let ignored = crate::pod::unsupported::unsupported_fields(&pod.pod);
            if !ignored.is_empty() {
                warn!(pod = %pod.pod_ref, fields = %ignored.join(", "), "pod sets fields nodelet does not implement; they are ignored");
                self.runtime
                    .recorder()
                    .pod(&pod.pod_ref, unsupported_fields(&ignored));
            }
            self.spawn(
                uid,
                WorkerInput {
                    pod: Some(pod.clone()),
                    pod_ref: pod.pod_ref.clone(),
                    terminate: false,
                    verdict: None,
                },
            );
        }

        let Some(relisted) = cache.updated else {
            // No relist yet: the runtime's pods are not known.
            return;
        };
        self.finished.retain(|_, at| *at > relisted);
        if !desired.all_sources_seen {
            // A source that has not spoken may still want what runs (SourcesReady).
            return;
        }
        // Runtime pods nothing runs: left from before a restart, deleted or stopped by a
        // verdict while the agent was down.
        let orphans: Vec<(String, PodRef)> = cache
            .pods
            .iter()
            .filter(|(uid, _)| {
                !self.workers.contains_key(*uid)
                    && runnable(uid).is_none()
                    && !self.finished.contains_key(*uid)
            })
            .map(|(uid, p)| (uid.clone(), p.pod.clone()))
            .collect();
        for (uid, pod_ref) in orphans {
            let pod = desired.get(&uid).cloned();
            if pod.is_none() {
                info!(pod = %pod_ref, "runtime has a pod no source wants; terminating it");
            }
            let verdict = self.verdicts.get(&uid).cloned();
            self.spawn(
                &uid,
                WorkerInput {
                    pod,
                    pod_ref,
                    terminate: true,
                    verdict,
                },
            );
        }
    }

    fn spawn(&mut self, uid: &str, input: WorkerInput) {
        let full_name = input.pod_ref.full_name();
        let (tx, rx) = watch::channel(input);
        self.workers.insert(
            uid.to_string(),
            Worker {
                input: tx,
                full_name,
            },
        );
        self.tasks.spawn(worker(
            uid.to_string(),
            rx,
            self.runtime.clone(),
            self.settings.clone(),
            self.done.clone(),
            self.deadlines.clone(),
            self.cancel.child_token(),
        ));
    }
}

/// One pod's loop: sync on every change, bus wake-up, back-off expiry or resync; terminate
/// once asked, then report and exit.
async fn worker(
    uid: String,
    mut rx: watch::Receiver<WorkerInput>,
    runtime: RuntimeManager,
    settings: WorkerSettings,
    done: mpsc::Sender<String>,
    deadlines: PodKiller,
    cancel: CancellationToken,
) {
    let mut backoffs = PodBackoffs::new(settings.max_restart_backoff);
    // The pod's start time when its status has none (a static pod): first sight, as the
    // kubelet's status manager sets startTime on the first sync.
    let first_seen = std::time::SystemTime::now();
    let mut deadline_sent = false;
    let mut cache = settings.cache.clone();
    // Set once the pod has finished for good: nothing is synced after that.
    let mut finished = false;
    // When the last sync finished: the next one acts only on state relisted after it.
    let mut last_sync: Option<Instant> = None;
    let mut last_synced_spec: Option<PodHandle> = None;
    loop {
        let input = rx.borrow_and_update().clone();
        if input.terminate {
            let stopped = Box::pin(terminate(&input, &runtime, &cancel)).await;
            if let Some(v) = &input.verdict {
                settings.status.failed(&uid, &v.reason, &v.message).await;
            }
            settings.status.terminated(&uid, stopped).await;
            let _ = done.send(uid).await;
            return;
        }
        let Some(pod) = input.pod else { return };
        if finished {
            // A finished pod never runs again, as the kubelet's terminal pods: a later sync
            // would find its containers collected by GC and start them anew. Only its
            // termination (manifest removed, API pod deleted) is awaited.
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            continue;
        }
        let deadline = active_deadline_left(&pod.pod, first_seen);
        if deadline == Some(Duration::ZERO) {
            if !deadline_sent {
                deadline_sent = true;
                info!(pod = %pod.pod_ref, "pod is past its activeDeadlineSeconds; stopping it");
                deadlines
                    .kill(KillRequest {
                        uid: uid.clone(),
                        grace_period_seconds: None,
                        reason: DEADLINE_EXCEEDED.to_owned(),
                        message: DEADLINE_EXCEEDED_MESSAGE.to_owned(),
                    })
                    .await;
            }
            // The dispatcher turns the verdict into a termination request.
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            continue;
        }
        // A termination request cancels the wait or the sync in flight (e.g. a long image
        // pull), as the kubelet's pod worker cancels its sync context; other updates wait for
        // the next round.
        let mut dirty = false;
        let state = tokio::select! {
            s = cache.newer_than(&uid, last_sync) => s,
            _ = until_terminate(&mut rx, &mut dirty) => continue,
            _ = cancel.cancelled() => return,
        };
        // The status as the sync starts (the kubelet's SyncPod sets it first thing).
        settings
            .status
            .waiting(&uid, backoffs.waiting.clone())
            .await;
        let started = Instant::now();
        let condemned = unhealthy(&pod, &state, &settings.probes);
        let unstarted = unstarted_sidecars(&pod, &state, &settings.probes);
        // Boxed, as is the termination above: inline, the sync's state machine (every CRI
        // call in it, ~40 KB) sizes every worker's future, idle or not (10 MB at 250 pods,
        // heaptrack); boxed, it exists only while a sync runs.
        let sync = Box::pin(runtime.sync_pod(&pod, &state, &mut backoffs, &condemned, &unstarted));
        let result = tokio::select! {
            r = sync => r,
            _ = until_terminate(&mut rx, &mut dirty) => continue,
            _ = cancel.cancelled() => return,
        };
        // The kubelet's operation types: the first sync creates, a changed spec updates.
        let operation = match &last_synced_spec {
            None => "create",
            Some(prev) if !std::sync::Arc::ptr_eq(prev, &pod) => "update",
            Some(_) => "sync",
        };
        settings
            .stats
            .duration
            .observe(operation, started.elapsed());
        last_synced_spec = Some(pod.clone());
        last_sync = Some(Instant::now());
        settings
            .status
            .waiting(&uid, backoffs.waiting.clone())
            .await;
        let next = match result {
            Ok(SyncOutcome::Synced) => crate::wait::jitter(settings.sync_frequency, 0.5),
            Ok(SyncOutcome::RequeueAfter(d)) => d,
            Ok(SyncOutcome::Finished) => {
                info!(pod = %pod.pod_ref, "pod has completed; it stays until its manifest is removed");
                finished = true;
                Duration::ZERO
            }
            Err(e) => {
                error!(pod = %pod.pod_ref, error = %e, "sync failed; will retry");
                crate::wait::jitter(ERROR_REQUEUE, 0.5)
            }
        };
        if dirty {
            // An update arrived during the sync: act on it now.
            continue;
        }
        // Wake when the active deadline passes, whatever else the pod waits for.
        let next = deadline.map_or(next, |d| next.min(d));
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// The running containers a failed liveness or startup probe condemns, with the kubelet's
/// message and the probe's terminationGracePeriodSeconds.
fn unhealthy(pod: &PodHandle, state: &PodRuntimeState, probes: &ProbeResults) -> Unhealthy {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return Unhealthy::new();
    };
    let mut out = Unhealthy::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    for c in spec.containers.iter().chain(sidecars) {
        let Some(v) = state
            .latest(&c.name)
            .filter(|v| v.state == ContainerState::Running)
        else {
            continue;
        };
        // The status names containers `containerd://<id>`, and the probe workers key by it.
        let Some((t, message)) = probes.unhealthy(&format!("containerd://{}", v.id), &c.name)
        else {
            continue;
        };
        let probe = match t {
            ProbeType::Startup => c.startup_probe.as_ref(),
            _ => c.liveness_probe.as_ref(),
        };
        let grace = probe.and_then(|p| p.termination_grace_period_seconds);
        out.insert(v.id.clone(), (message, grace));
    }
    out
}

/// How long until the pod passes its activeDeadlineSeconds (zero once it has), counted from
/// `status.startTime` if the pod carries one (an API pod), else from `first_seen`; `None`
/// without a deadline (the kubelet's activeDeadlineHandler).
fn active_deadline_left(
    pod: &k8s_openapi::api::core::v1::Pod,
    first_seen: std::time::SystemTime,
) -> Option<Duration> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .and_then(|t| {
            let s = u64::try_from(t.0.as_second()).ok()?;
            Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(s))
        })
        .unwrap_or(first_seen);
    let allowed = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let ran = std::time::SystemTime::now()
        .duration_since(start)
        .unwrap_or_default();
    Some(allowed.saturating_sub(ran))
}

/// Running sidecars with a startup probe that has not passed yet (by runtime ID): the init
/// containers after them wait (computeInitContainerActions).
fn unstarted_sidecars(
    pod: &PodHandle,
    state: &PodRuntimeState,
    probes: &ProbeResults,
) -> Unstarted {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return Unstarted::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c) && c.startup_probe.is_some())
        .filter_map(|c| {
            let v = state
                .latest(&c.name)
                .filter(|v| v.state == ContainerState::Running)?;
            let result = probes.get(ProbeType::Startup, &format!("containerd://{}", v.id));
            (result != Some(ProbeResult::Success)).then(|| v.id.clone())
        })
        .collect()
}

/// Resolves once termination is requested; notes in `dirty` any other update seen meanwhile.
async fn until_terminate(rx: &mut watch::Receiver<WorkerInput>, dirty: &mut bool) {
    loop {
        if rx.changed().await.is_err() {
            // The dispatcher is gone; shutdown is handled by the cancellation token.
            std::future::pending::<()>().await;
        }
        *dirty = true;
        if rx.borrow().terminate {
            return;
        }
    }
}

/// Terminates the pod, retrying with back-off until it succeeds or the agent stops; returns
/// the pod's state once stopped (the containers' end states), when it could be read.
async fn terminate(
    input: &WorkerInput,
    runtime: &RuntimeManager,
    cancel: &CancellationToken,
) -> Option<PodRuntimeState> {
    let target = input.pod_ref.to_string();
    let grace = input
        .verdict
        .as_ref()
        .and_then(|v| v.grace_period_seconds)
        .or_else(|| input.pod.as_ref().map(|p| grace_period_seconds(&p.pod)));
    info!(pod = %target, grace_seconds = ?grace, "terminating pod");
    loop {
        let desired = input.pod.as_deref();
        match runtime.terminate_pod(&input.pod_ref, desired, grace).await {
            Ok(stopped) => return stopped,
            Err(e) => {
                warn!(pod = %target, error = %e, "terminating pod failed; retrying");
                runtime.recorder().pod(&input.pod_ref, failed_kill_pod(&e));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(crate::wait::jitter(ERROR_REQUEUE, 0.5)) => {}
        }
    }
}
