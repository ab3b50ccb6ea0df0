//! The probe results caches (kubelet pkg/kubelet/prober/results): one per probe type, keyed by
//! container ID, written only by the probe workers, read by the status manager (ready,
//! started) and the pod workers (liveness and startup failures). Every change is announced on
//! a bounded broadcast; a reader that lags resyncs every pod, so no change is lost.

use super::ProbeType;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// How many updates a slow reader may fall behind before it must resync.
const UPDATES_CAPACITY: usize = 256;

/// A probe's outcome as the caches hold it (results.Result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Passed (or passed with a warning).
    Success,
    /// Failed.
    Failure,
    /// Not known yet (a startup probe before its first verdict).
    Unknown,
}

/// One change of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultUpdate {
    /// Which cache.
    pub probe_type: ProbeType,
    /// The pod's UID.
    pub pod_uid: String,
    /// The container ID as the status shows it (`containerd://…`).
    pub container_id: String,
    /// The new result.
    pub result: ProbeResult,
}

#[derive(Debug, Default)]
struct Cache {
    /// container ID -> (result, pod UID).
    by_id: RwLock<HashMap<String, (ProbeResult, String)>>,
}

#[derive(Debug)]
struct Inner {
    liveness: Cache,
    readiness: Cache,
    startup: Cache,
    updates: broadcast::Sender<ResultUpdate>,
}

/// The three caches and their update feed (cheap to clone).
#[derive(Debug, Clone)]
pub struct ProbeResults {
    inner: Arc<Inner>,
}

impl Default for ProbeResults {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeResults {
    /// Empty caches.
    pub fn new() -> Self {
        let (updates, _) = broadcast::channel(UPDATES_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                liveness: Cache::default(),
                readiness: Cache::default(),
                startup: Cache::default(),
                updates,
            }),
        }
    }

    fn cache(&self, t: ProbeType) -> &Cache {
        match t {
            ProbeType::Liveness => &self.inner.liveness,
            ProbeType::Readiness => &self.inner.readiness,
            ProbeType::Startup => &self.inner.startup,
        }
    }

    /// A feed of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ResultUpdate> {
        self.inner.updates.subscribe()
    }

    /// The cached result for a container, if any.
    pub fn get(&self, t: ProbeType, container_id: &str) -> Option<ProbeResult> {
        let m = self
            .cache(t)
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner());
        m.get(container_id).map(|(r, _)| *r)
    }

    /// Sets a result; announces it only when it changed (results_manager.Set).
    pub fn set(&self, t: ProbeType, container_id: &str, pod_uid: &str, result: ProbeResult) {
        let changed = {
            let mut m = self
                .cache(t)
                .by_id
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let prev = m.insert(container_id.to_owned(), (result, pod_uid.to_owned()));
            prev.map(|(r, _)| r) != Some(result)
        };
        if changed {
            // No receiver is fine: nobody needs to be woken.
            let _ = self.inner.updates.send(ResultUpdate {
                probe_type: t,
                pod_uid: pod_uid.to_owned(),
                container_id: container_id.to_owned(),
                result,
            });
        }
    }

    /// Forgets a container (its worker stopped or moved to a new instance).
    pub fn remove(&self, t: ProbeType, container_id: &str) {
        let mut m = self
            .cache(t)
            .by_id
            .write()
            .unwrap_or_else(|p| p.into_inner());
        m.remove(container_id);
    }

    /// Why a running container must be killed: the kubelet's message for a failed liveness
    /// or startup probe (computePodActions), `None` while it is healthy.
    pub fn unhealthy(&self, container_id: &str, name: &str) -> Option<(ProbeType, String)> {
        if self.get(ProbeType::Liveness, container_id) == Some(ProbeResult::Failure) {
            return Some((
                ProbeType::Liveness,
                format!("Container {name} failed liveness probe"),
            ));
        }
        if self.get(ProbeType::Startup, container_id) == Some(ProbeResult::Failure) {
            return Some((
                ProbeType::Startup,
                format!("Container {name} failed startup probe"),
            ));
        }
        None
    }

    /// Sets `started` and `ready` of the pod's container statuses from the caches
    /// (prober_manager.go UpdatePodStatus): a container with a startup probe is started once
    /// that probe succeeded; a started, running container is ready once its readiness probe
    /// succeeded, at once without one.
    pub fn update_pod_status(&self, spec: &PodSpec, statuses: &mut [ContainerStatus]) {
        self.update_statuses(&spec.containers, statuses);
    }

    /// [`Self::update_pod_status`] over any containers (the sidecars among init containers).
    pub fn update_statuses(&self, containers: &[Container], statuses: &mut [ContainerStatus]) {
        for s in statuses {
            let Some(c) = containers.iter().find(|c| c.name == s.name) else {
                continue;
            };
            let (started, ready) = self.started_ready(c, s);
            s.started = Some(started);
            s.ready = ready;
        }
    }

    fn started_ready(&self, c: &Container, s: &ContainerStatus) -> (bool, bool) {
        let running = s.state.as_ref().is_some_and(|st| st.running.is_some());
        let Some(id) = s.container_id.as_deref().filter(|_| running) else {
            return (false, false);
        };
        let started = match self.get(ProbeType::Startup, id) {
            Some(r) => r == ProbeResult::Success,
            None => c.startup_probe.is_none(),
        };
        if !started {
            return (false, false);
        }
        let ready = match self.get(ProbeType::Readiness, id) {
            Some(r) => r == ProbeResult::Success,
            None => c.readiness_probe.is_none(),
        };
        (true, ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, Probe};

    fn running(name: &str, id: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: Some(id.into()),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(readiness: bool, startup: bool) -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                readiness_probe: readiness.then(Probe::default),
                startup_probe: startup.then(Probe::default),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn status(r: &ProbeResults, spec: &PodSpec) -> (Option<bool>, bool) {
        let mut s = [running("c", "containerd://1")];
        r.update_pod_status(spec, &mut s);
        (s[0].started, s[0].ready)
    }

    #[test]
    fn no_probes_means_started_and_ready() {
        let r = ProbeResults::new();
        assert_eq!(status(&r, &spec(false, false)), (Some(true), true));
    }

    #[test]
    fn readiness_waits_for_its_first_success() {
        let r = ProbeResults::new();
        let s = spec(true, false);
        assert_eq!(status(&r, &s), (Some(true), false));
        r.set(
            ProbeType::Readiness,
            "containerd://1",
            "u",
            ProbeResult::Success,
        );
        assert_eq!(status(&r, &s), (Some(true), true));
        r.set(
            ProbeType::Readiness,
            "containerd://1",
            "u",
            ProbeResult::Failure,
        );
        assert_eq!(status(&r, &s), (Some(true), false));
    }

    #[test]
    fn startup_gates_started_and_ready() {
        let r = ProbeResults::new();
        let s = spec(false, true);
        assert_eq!(status(&r, &s), (Some(false), false));
        r.set(
            ProbeType::Startup,
            "containerd://1",
            "u",
            ProbeResult::Unknown,
        );
        assert_eq!(status(&r, &s), (Some(false), false));
        r.set(
            ProbeType::Startup,
            "containerd://1",
            "u",
            ProbeResult::Success,
        );
        assert_eq!(status(&r, &s), (Some(true), true));
    }

    #[test]
    fn only_changes_are_announced() {
        let r = ProbeResults::new();
        let mut rx = r.subscribe();
        r.set(
            ProbeType::Liveness,
            "containerd://1",
            "u",
            ProbeResult::Success,
        );
        r.set(
            ProbeType::Liveness,
            "containerd://1",
            "u",
            ProbeResult::Success,
        );
        r.set(
            ProbeType::Liveness,
            "containerd://1",
            "u",
            ProbeResult::Failure,
        );
        assert_eq!(rx.try_recv().map(|u| u.result), Ok(ProbeResult::Success));
        assert_eq!(rx.try_recv().map(|u| u.result), Ok(ProbeResult::Failure));
        assert!(rx.try_recv().is_err());
        assert_eq!(
            r.unhealthy("containerd://1", "c").map(|(_, m)| m),
            Some("Container c failed liveness probe".into())
        );
    }
}
