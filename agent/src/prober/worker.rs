//! One probe worker (kubelet pkg/kubelet/prober/worker.go): probes one container every
//! `periodSeconds` after `initialDelaySeconds`, counts consecutive results against the
//! success and failure thresholds, and writes the verdict to its results cache.

use super::probe::{self, Outcome, Target};
use super::results::{ProbeResult, ProbeResults};
use super::{ProbeType, ProberStats, SeriesKey, Statuses, target};
use crate::kuberuntime::RuntimeManager;
use crate::pod::PodHandle;
use crate::recorder::{EventType, Recorder, field_path, reasons};
use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStatus, Pod, Probe,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Attempts when a probe cannot be run at all (prober.go maxProbeRetries).
const MAX_PROBE_RETRIES: usize = 3;

/// What the worker probes.
pub struct Spec {
    /// The pod.
    pub pod: PodHandle,
    /// The container.
    pub container: Container,
    /// Its probe of this type.
    pub probe: Probe,
    /// Which probe.
    pub probe_type: ProbeType,
}

/// What every worker shares.
pub struct Shared {
    /// Published statuses.
    pub statuses: Statuses,
    /// ExecSync.
    pub runtime: RuntimeManager,
    /// Result caches.
    pub results: ProbeResults,
    /// Events.
    pub recorder: Recorder,
    /// Metrics.
    pub stats: Arc<ProberStats>,
    /// When the manager started (first probes after an agent start are spread over a period).
    pub manager_start: Instant,
}

/// The probe's thresholds with the API defaults applied (pkg/apis/core/v1 SetDefaults_Probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// successThreshold (default 1).
    pub success: u32,
    /// failureThreshold (default 3).
    pub failure: u32,
}

impl Thresholds {
    /// From a probe spec.
    pub fn of(p: &Probe) -> Self {
        let pos = |v: Option<i32>, d: u32| {
            v.and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(d)
        };
        Self {
            success: pos(p.success_threshold, 1),
            failure: pos(p.failure_threshold, 3),
        }
    }
}

/// Consecutive results and the hold after a verdict that restarts the container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Runs {
    last: Option<ProbeResult>,
    run: u32,
    /// Set after a liveness failure or any startup verdict: no more probing until the
    /// container is replaced (worker.go onHold).
    pub on_hold: bool,
}

impl Runs {
    /// Counts one result; returns the result to write to the cache once a threshold is met.
    pub fn observe(&mut self, t: ProbeType, r: ProbeResult, th: Thresholds) -> Option<ProbeResult> {
        if self.last == Some(r) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(r);
            self.run = 1;
        }
        if (r == ProbeResult::Failure && self.run < th.failure)
            || (r == ProbeResult::Success && self.run < th.success)
        {
            return None;
        }
        if (t == ProbeType::Liveness && r == ProbeResult::Failure) || t == ProbeType::Startup {
            self.on_hold = true;
            self.run = 0;
        }
        Some(r)
    }
}

/// One worker's state.
pub struct Worker {
    spec: Spec,
    shared: Shared,
    key: SeriesKey,
    container_id: String,
    runs: Runs,
    th: Thresholds,
}

impl Worker {
    /// A worker for one probe.
    pub fn new(spec: Spec, shared: Shared) -> Self {
        let r = &spec.pod.pod_ref;
        let key = (
            spec.probe_type,
            r.namespace.clone(),
            r.name.clone(),
            r.uid.clone(),
            spec.container.name.clone(),
        );
        let th = Thresholds::of(&spec.probe);
        Self {
            spec,
            shared,
            key,
            container_id: String::new(),
            runs: Runs::default(),
            th,
        }
    }

    fn initial(&self) -> ProbeResult {
        match self.spec.probe_type {
            ProbeType::Readiness => ProbeResult::Failure,
            ProbeType::Liveness => ProbeResult::Success,
            ProbeType::Startup => ProbeResult::Unknown,
        }
    }

    /// Probes until cancelled (the pod left) or the pod can run no more.
    pub async fn run(mut self, cancel: CancellationToken) {
        let period = Duration::from_secs(
            u64::try_from(self.spec.probe.period_seconds.unwrap_or(10))
                .unwrap_or(10)
                .max(1),
        );
        // Right after an agent start, spread the first probes over a period (worker.go).
        if period > self.shared.manager_start.elapsed() {
            let d = period.mul_f64(crate::wait::unit_random());
            tokio::select! {
                _ = cancel.cancelled() => return self.cleanup(),
                _ = tokio::time::sleep(d) => {}
            }
        }
        let mut statuses = self.shared.statuses.clone();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
                // A new status (e.g. the container started) is looked at at once, not a
                // period later; the probe itself still keeps to its period.
                r = statuses.changed() => {
                    if r.is_err() { break }
                    if !self.container_id_changed() { continue }
                }
            }
            if !self.do_probe().await {
                debug!(pod = %self.spec.pod.pod_ref, container = %self.spec.container.name, "probe worker done");
                self.cleanup();
                cancel.cancelled().await;
                return;
            }
        }
        self.cleanup();
    }

    fn cleanup(&self) {
        if !self.container_id.is_empty() {
            self.shared
                .results
                .remove(self.spec.probe_type, &self.container_id);
        }
        self.shared.stats.remove(&self.key);
    }

    fn pod_status(&self) -> Option<Arc<Pod>> {
        self.shared
            .statuses
            .borrow()
            .get(&self.spec.pod.pod_ref.uid)
            .cloned()
    }

    fn container_status(pod: &Pod, name: &str) -> Option<ContainerStatus> {
        let st = pod.status.as_ref()?;
        st.container_statuses
            .iter()
            .flatten()
            .chain(st.init_container_statuses.iter().flatten())
            .find(|c| c.name == name && c.container_id.as_deref().is_some_and(|i| !i.is_empty()))
            .cloned()
    }

    fn container_id_changed(&self) -> bool {
        self.pod_status()
            .and_then(|p| Self::container_status(&p, &self.spec.container.name))
            .and_then(|c| c.container_id)
            .is_some_and(|id| id != self.container_id)
    }

    /// One round (worker.go doProbe); `false` once nothing will run in this container again.
    async fn do_probe(&mut self) -> bool {
        let started = Instant::now();
        let Some(pod) = self.pod_status() else {
            return true;
        };
        let Some(status) = pod.status.as_ref() else {
            return true;
        };
        if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
            return false;
        }
        let Some(c) = Self::container_status(&pod, &self.spec.container.name) else {
            return true;
        };
        let t = self.spec.probe_type;
        let uid = self.spec.pod.pod_ref.uid.clone();
        let id = c.container_id.clone().unwrap_or_default();
        if id != self.container_id {
            if !self.container_id.is_empty() {
                self.shared.results.remove(t, &self.container_id);
            }
            self.container_id = id.clone();
            self.shared.results.set(t, &id, &uid, self.initial());
            self.runs = Runs::default();
        }
        if self.runs.on_hold {
            return true;
        }
        let state = c.state.clone().unwrap_or_default();
        let Some(running) = state.running else {
            if fails_when_not_running(t, &state) {
                self.shared.results.set(t, &id, &uid, ProbeResult::Failure);
            }
            let never = self
                .spec
                .pod
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("Never")
                && self.spec.container.restart_policy.as_deref() != Some("Always");
            return state.terminated.is_none() || !never;
        };
        if self.spec.pod.deleting() && t != ProbeType::Readiness {
            self.shared.results.set(t, &id, &uid, ProbeResult::Success);
            return false;
        }
        let since_start = running
            .started_at
            .and_then(|s| {
                let secs = u64::try_from(s.0.as_second()).ok()?;
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .checked_sub(Duration::from_secs(secs))
            })
            .unwrap_or_default();
        let delay = u64::try_from(self.spec.probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0);
        if since_start < Duration::from_secs(delay) {
            return true;
        }
        // A startup probe runs until the container has started; the others only after.
        if (c.started == Some(true)) == (t == ProbeType::Startup) {
            return true;
        }
        let pod_ip = status.pod_ip.clone().unwrap_or_default();
        let raw_id = id.split_once("://").map_or(id.as_str(), |(_, i)| i);
        let pod_target = target(&self.spec.pod.pod_ref);
        let tgt = Target {
            container: &self.spec.container,
            pod_ip: &pod_ip,
            container_id: raw_id,
            pod: &pod_target,
        };
        let mut res = Err(String::new());
        for _ in 0..MAX_PROBE_RETRIES {
            res = probe::run(&self.spec.probe, &tgt, &self.shared.runtime).await;
            if res.is_ok() {
                break;
            }
        }
        let result = match res {
            Ok(Outcome::Success(_)) => ProbeResult::Success,
            Ok(Outcome::Warning(out)) => {
                self.event(reasons::probe_warning(t.as_str(), &out));
                ProbeResult::Success
            }
            Ok(Outcome::Failure(out)) => {
                debug!(pod = %pod_target, container = %self.spec.container.name, probe = t.as_str(), output = %out, "probe failed");
                self.event(reasons::unhealthy(t.as_str(), &out));
                ProbeResult::Failure
            }
            Err(e) => {
                // The kubelet records it and keeps the previous result.
                info!(pod = %pod_target, container = %self.spec.container.name, probe = t.as_str(), error = %e, "probe errored");
                self.event(reasons::probe_errored(t.as_str(), &e));
                return true;
            }
        };
        let elapsed = started.elapsed();
        self.shared.stats.with(&self.key, |s| match result {
            ProbeResult::Success => {
                s.successful += 1;
                s.duration.observe(elapsed);
            }
            ProbeResult::Failure => s.failed += 1,
            ProbeResult::Unknown => {
                s.unknown += 1;
                s.duration.observe(elapsed);
            }
        });
        if let Some(r) = self.runs.observe(t, result, self.th) {
            self.shared.results.set(t, &id, &uid, r);
        }
        true
    }

    fn event(&self, m: reasons::Message) {
        let spec = self.spec.pod.pod.spec.as_ref();
        let path = field_path(spec, &self.spec.container.name);
        debug_assert!(matches!(m.type_, EventType::Warning));
        self.shared
            .recorder
            .container(&self.spec.pod.pod_ref, path, m);
    }
}

/// Whether a container seen not running gets a Failure. The kubelet sets one for any
/// non-running container; a liveness or startup Failure on a container created but not started
/// yet outlives its start (the initial delay keeps the probe from running again) and kills it
/// once it runs. The kubelet's relist seldom shows that gap; this event-driven status does.
fn fails_when_not_running(t: ProbeType, state: &ApiState) -> bool {
    state.terminated.is_some() || t == ProbeType::Readiness
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeResult::{Failure, Success};

    #[test]
    fn a_created_container_fails_readiness_only() {
        let waiting = ApiState::default();
        assert!(fails_when_not_running(ProbeType::Readiness, &waiting));
        assert!(!fails_when_not_running(ProbeType::Liveness, &waiting));
        assert!(!fails_when_not_running(ProbeType::Startup, &waiting));
        let exited = ApiState {
            terminated: Some(Default::default()),
            ..Default::default()
        };
        assert!(fails_when_not_running(ProbeType::Liveness, &exited));
    }

    const TH: Thresholds = Thresholds {
        success: 2,
        failure: 3,
    };

    fn feed(t: ProbeType, rs: &[ProbeResult]) -> Vec<Option<ProbeResult>> {
        let mut runs = Runs::default();
        rs.iter().map(|r| runs.observe(t, *r, TH)).collect()
    }

    #[test]
    fn failures_count_up_to_the_failure_threshold() {
        assert_eq!(
            feed(ProbeType::Readiness, &[Failure, Failure, Failure, Failure]),
            vec![None, None, Some(Failure), Some(Failure)]
        );
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        assert_eq!(
            feed(
                ProbeType::Readiness,
                &[Failure, Failure, Success, Failure, Failure, Failure]
            ),
            vec![None, None, None, None, None, Some(Failure)]
        );
    }

    #[test]
    fn successes_count_up_to_the_success_threshold() {
        assert_eq!(
            feed(ProbeType::Readiness, &[Success, Success, Success]),
            vec![None, Some(Success), Some(Success)]
        );
    }

    #[test]
    fn a_liveness_failure_holds_the_worker_until_the_container_changes() {
        let mut runs = Runs::default();
        for _ in 0..2 {
            assert_eq!(runs.observe(ProbeType::Liveness, Failure, TH), None);
        }
        assert_eq!(
            runs.observe(ProbeType::Liveness, Failure, TH),
            Some(Failure)
        );
        assert!(runs.on_hold);
    }

    #[test]
    fn a_startup_verdict_holds_the_worker() {
        let th = Thresholds {
            success: 1,
            failure: 3,
        };
        let mut runs = Runs::default();
        assert_eq!(runs.observe(ProbeType::Startup, Success, th), Some(Success));
        assert!(runs.on_hold);
    }

    #[test]
    fn defaults_apply_to_unset_or_zero_thresholds() {
        let p = Probe {
            failure_threshold: Some(0),
            ..Default::default()
        };
        assert_eq!(
            Thresholds::of(&p),
            Thresholds {
                success: 1,
                failure: 3
            }
        );
    }
}
