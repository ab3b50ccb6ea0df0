//! The prober manager (kubelet pkg/kubelet/prober): liveness, readiness and startup probes.
//!
//! One task per (pod, container, probe type) ([`worker`]), started when the pod appears in the
//! desired set and stopped when it leaves it; a worker follows its container through restarts
//! by the container ID the status shows. Workers write the [`results::ProbeResults`] caches;
//! the status manager reads them for `ready`/`started` and the Ready conditions, the pod
//! workers for liveness and startup failures (the container is killed and restarted per the
//! restart policy). A probe runs in its worker's task, so a slow probe never holds a pod worker.
//!
//! Inputs: the desired set (config), the published statuses (container IDs, start times, the
//! pod IP), the runtime manager (ExecSync for exec probes). Outputs: the result caches,
//! `Unhealthy` events through the recorder, and [`ProberStats`] (`prober_probe_total`,
//! `prober_probe_duration_seconds`, served on `/metrics/probes`).

pub mod grpc;
pub mod probe;
pub mod results;
mod worker;

use crate::config::PodSet;
use crate::instrument::{DEF_BUCKETS, Histogram, HistogramRead};
use crate::kuberuntime::RuntimeManager;
use crate::pod::PodRef;
use crate::recorder::Recorder;
use k8s_openapi::api::core::v1::Pod;
use results::ProbeResults;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Liveness, readiness or startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeType {
    /// livenessProbe: failure restarts the container.
    Liveness,
    /// readinessProbe: drives `ready`.
    Readiness,
    /// startupProbe: gates the other two and sets `started`.
    Startup,
}

impl ProbeType {
    /// The kubelet's name (metric label, event text): `Liveness`, `Readiness`, `Startup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }
}

/// The pods' published statuses, keyed by UID (the status manager's read side).
pub type Statuses = watch::Receiver<Arc<BTreeMap<String, Arc<Pod>>>>;

/// One probe's metric series key: probe type, namespace, pod, pod UID, container.
pub type SeriesKey = (ProbeType, String, String, String, String);

/// One probe's counts by result and its duration histogram.
#[derive(Debug)]
pub struct Series {
    /// Probes that passed.
    pub successful: u64,
    /// Probes that failed.
    pub failed: u64,
    /// Probes with an unknown result.
    pub unknown: u64,
    /// Durations of successful and unknown probes (the kubelet observes only those).
    pub duration: Histogram,
}

/// `prober_probe_total` and `prober_probe_duration_seconds`, per live probe worker (a
/// worker's series go with it, as the kubelet deletes them).
#[derive(Debug, Default)]
pub struct ProberStats {
    series: Mutex<BTreeMap<SeriesKey, Series>>,
}

/// A read of one series.
#[derive(Debug, Clone)]
pub struct SeriesRead {
    /// (successful, failed, unknown).
    pub counts: (u64, u64, u64),
    /// The duration histogram.
    pub duration: HistogramRead,
}

impl ProberStats {
    fn with(&self, key: &SeriesKey, f: impl FnOnce(&mut Series)) {
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(key.clone()).or_insert_with(|| Series {
            successful: 0,
            failed: 0,
            unknown: 0,
            duration: Histogram::new(DEF_BUCKETS),
        });
        f(s);
    }

    fn remove(&self, key: &SeriesKey) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Every series, in key order.
    pub fn read(&self) -> Vec<(SeriesKey, SeriesRead)> {
        let m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    SeriesRead {
                        counts: (s.successful, s.failed, s.unknown),
                        duration: s.duration.read(),
                    },
                )
            })
            .collect()
    }
}

/// What the prober manager reads and writes.
pub struct Inputs {
    /// The desired pods.
    pub config: watch::Receiver<Option<PodSet>>,
    /// The published statuses.
    pub statuses: Statuses,
    /// ExecSync for exec probes.
    pub runtime: RuntimeManager,
    /// The caches the workers write.
    pub results: ProbeResults,
    /// `Unhealthy` events.
    pub recorder: Recorder,
}

/// Starts the manager; returns the statistics `/metrics/probes` renders.
pub fn start(
    inputs: Inputs,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> Arc<ProberStats> {
    let stats = Arc::new(ProberStats::default());
    tasks.spawn(run(inputs, stats.clone(), cancel));
    stats
}

type WorkerKey = (String, String, ProbeType);

async fn run(mut inputs: Inputs, stats: Arc<ProberStats>, cancel: CancellationToken) {
    let started = Instant::now();
    let mut workers: HashMap<WorkerKey, CancellationToken> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let set = inputs.config.borrow_and_update().clone();
        if let Some(set) = set {
            // Stop the workers of pods that left (the kubelet's RemovePod / CleanupPods).
            workers.retain(|(uid, _, _), token| {
                let keep = set.contains_key(uid);
                if !keep {
                    token.cancel();
                }
                keep
            });
            for (uid, p) in set.iter() {
                let Some(spec) = p.pod.spec.as_ref() else {
                    continue;
                };
                // Sidecars are probed like regular containers (KEP-753).
                let sidecars = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always"));
                for c in spec.containers.iter().chain(sidecars) {
                    let probes = [
                        (ProbeType::Startup, &c.startup_probe),
                        (ProbeType::Readiness, &c.readiness_probe),
                        (ProbeType::Liveness, &c.liveness_probe),
                    ];
                    for (t, probe) in probes {
                        let Some(probe) = probe.clone() else { continue };
                        let key = (uid.clone(), c.name.clone(), t);
                        if workers.contains_key(&key) {
                            continue;
                        }
                        debug!(pod = %p.pod_ref, container = %c.name, probe = t.as_str(), "starting probe worker");
                        let token = cancel.child_token();
                        workers.insert(key, token.clone());
                        tasks.spawn(
                            worker::Worker::new(
                                worker::Spec {
                                    pod: p.clone(),
                                    container: c.clone(),
                                    probe,
                                    probe_type: t,
                                },
                                worker::Shared {
                                    statuses: inputs.statuses.clone(),
                                    runtime: inputs.runtime.clone(),
                                    results: inputs.results.clone(),
                                    recorder: inputs.recorder.clone(),
                                    stats: stats.clone(),
                                    manager_start: started,
                                },
                            )
                            .run(token),
                        );
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = inputs.config.changed() => if r.is_err() { break },
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.shutdown().await;
}

/// `namespace/name (uid)` of a pod handle, for logs and CRI errors.
fn target(p: &PodRef) -> String {
    p.to_string()
}
