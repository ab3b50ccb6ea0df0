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

use crate::config::PodSet;
use crate::kuberuntime::{PodBackoffs, RuntimeManager, SyncOutcome};
use crate::pleg::PodLifecycleEvent;
use crate::pod::{PodHandle, PodRef, grace_period_seconds};
use crate::status::StatusWriter;
use crate::status::generate::{StatusContext, pod_with_status};
use std::collections::HashMap;
use std::time::Duration;
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
    /// Where each worker publishes its pod's status.
    pub status: StatusWriter,
    /// The node IP for `status.hostIP`.
    pub host_ip: String,
}

/// Runs the dispatcher until cancelled. Workers stop with it; pods keep running, as with the
/// kubelet, and are adopted by the next start.
pub async fn run(
    runtime: RuntimeManager,
    settings: WorkerSettings,
    mut config: watch::Receiver<Option<PodSet>>,
    mut pleg: mpsc::Receiver<PodLifecycleEvent>,
    cancel: CancellationToken,
) {
    let (done_tx, mut done_rx) = mpsc::channel::<String>(64);
    let mut d = Dispatcher {
        workers: HashMap::new(),
        runtime_pods: HashMap::new(),
        tasks: JoinSet::new(),
        runtime,
        settings,
        done: done_tx,
        cancel,
    };
    loop {
        let desired = config.borrow_and_update().clone();
        d.reconcile(desired.as_ref());
        tokio::select! {
            _ = d.cancel.cancelled() => break,
            r = config.changed() => if r.is_err() { break },
            ev = pleg.recv() => {
                let Some(ev) = ev else { break };
                d.on_pleg_event(ev);
            }
            Some(uid) = done_rx.recv() => {
                // Termination removed everything; PLEG re-reports the pod if anything came back.
                d.workers.remove(&uid);
                d.runtime_pods.remove(&uid);
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
    /// Pods the runtime has, by UID, as the last PLEG events described them.
    runtime_pods: HashMap<String, PodRef>,
    tasks: JoinSet<()>,
    runtime: RuntimeManager,
    settings: WorkerSettings,
    done: mpsc::Sender<String>,
    cancel: CancellationToken,
}

impl Dispatcher {
    fn on_pleg_event(&mut self, ev: PodLifecycleEvent) {
        let uid = ev.pod.uid.clone();
        // Wake the worker; a burst of events coalesces into one sync.
        if let Some(w) = self.workers.get(&uid) {
            w.input.send_modify(|_| {});
        }
        if ev.present {
            self.runtime_pods.insert(uid, ev.pod);
        } else {
            self.runtime_pods.remove(&uid);
        }
    }

    /// Moves the workers towards `desired`: updates, terminations, starts (one static pod per
    /// full name), and terminations of runtime pods no source wants.
    fn reconcile(&mut self, desired: Option<&PodSet>) {
        // Until the source has spoken we know nothing is unwanted: touch nothing.
        let Some(desired) = desired else { return };

        for (uid, w) in &self.workers {
            let wanted = desired.get(uid);
            w.input.send_if_modified(|inp| {
                if inp.terminate {
                    return false;
                }
                match wanted {
                    None => {
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

        for (uid, pod) in desired.iter() {
            if self.workers.contains_key(uid) {
                continue;
            }
            let full = pod.pod_ref.full_name();
            if let Some((other, _)) = self.workers.iter().find(|(_, w)| w.full_name == full) {
                debug!(pod = %pod.pod_ref, waiting_for = %other, "static pod waits for the previous instance to terminate");
                continue;
            }
            self.spawn(
                uid,
                WorkerInput {
                    pod: Some(pod.clone()),
                    pod_ref: pod.pod_ref.clone(),
                    terminate: false,
                },
            );
        }

        let orphans: Vec<(String, PodRef)> = self
            .runtime_pods
            .iter()
            .filter(|(uid, _)| !self.workers.contains_key(*uid) && !desired.contains_key(*uid))
            .map(|(uid, p)| (uid.clone(), p.clone()))
            .collect();
        for (uid, pod_ref) in orphans {
            info!(pod = %pod_ref, "runtime has a pod no source wants; terminating it");
            self.spawn(
                &uid,
                WorkerInput {
                    pod: None,
                    pod_ref,
                    terminate: true,
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
            self.cancel.child_token(),
        ));
    }
}

/// One pod's loop: sync on every change, PLEG wake-up, back-off expiry or resync; terminate once
/// asked, then report and exit.
async fn worker(
    uid: String,
    mut rx: watch::Receiver<WorkerInput>,
    runtime: RuntimeManager,
    settings: WorkerSettings,
    done: mpsc::Sender<String>,
    cancel: CancellationToken,
) {
    let mut backoffs = PodBackoffs::new(settings.max_restart_backoff);
    let mut finished_logged = false;
    let status_ctx = StatusContext {
        host_ip: settings.host_ip.clone(),
        start_time: Some(std::time::SystemTime::now()),
    };
    loop {
        let input = rx.borrow_and_update().clone();
        if input.terminate {
            terminate(&input, &runtime, &cancel).await;
            settings.status.remove(&uid);
            let _ = done.send(uid).await;
            return;
        }
        let Some(pod) = input.pod else { return };
        // A termination request cancels the sync in flight (e.g. a long image pull), as the
        // kubelet's pod worker cancels its sync context; other updates wait for the next round.
        let mut dirty = false;
        let result = tokio::select! {
            r = runtime.sync_pod(&pod, &mut backoffs) => r,
            _ = until_terminate(&mut rx, &mut dirty) => continue,
            _ = cancel.cancelled() => return,
        };
        if let Some(state) = &backoffs.last_state {
            settings.status.set(
                &uid,
                pod_with_status(&pod, state, &backoffs.waiting, &status_ctx),
            );
        }
        let next = match result {
            Ok(SyncOutcome::Synced) => jitter(settings.sync_frequency),
            Ok(SyncOutcome::RequeueAfter(d)) => d,
            Ok(SyncOutcome::Finished) => {
                if !finished_logged {
                    info!(pod = %pod.pod_ref, "pod has completed; it stays until its manifest is removed");
                    finished_logged = true;
                }
                jitter(settings.sync_frequency)
            }
            Err(e) => {
                error!(pod = %pod.pod_ref, error = %e, "sync failed; will retry");
                jitter(ERROR_REQUEUE)
            }
        };
        if dirty {
            // An update arrived during the sync: act on it now.
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(next) => {}
        }
    }
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

/// Terminates the pod, retrying with back-off until it succeeds or the agent stops.
async fn terminate(input: &WorkerInput, runtime: &RuntimeManager, cancel: &CancellationToken) {
    let target = input.pod_ref.to_string();
    let grace = input.pod.as_ref().map(|p| grace_period_seconds(&p.pod));
    info!(pod = %target, grace_seconds = ?grace, "terminating pod");
    loop {
        match runtime.terminate_pod(&input.pod_ref, grace).await {
            Ok(()) => return,
            Err(e) => warn!(pod = %target, error = %e, "terminating pod failed; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(jitter(ERROR_REQUEUE)) => {}
        }
    }
}

/// `d` stretched by up to 50% (wait.Jitter(d, 0.5)), so pods do not resync in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
