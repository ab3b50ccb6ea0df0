//! What the runtime has for one pod, read through CRI and its labels: sandboxes and containers,
//! newest first (kubelet kuberuntime_manager.go GetPodStatus).

use super::client::{Cri, CriError};
use super::labels;
use proto::runtime::v1 as cri;
use std::time::{Duration, SystemTime};

/// A container's state as the pod worker reasons about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started (or start failed).
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl ContainerState {
    /// From the CRI enum value.
    pub fn from_cri(v: i32) -> Self {
        match cri::ContainerState::try_from(v) {
            Ok(cri::ContainerState::ContainerCreated) => Self::Created,
            Ok(cri::ContainerState::ContainerRunning) => Self::Running,
            Ok(cri::ContainerState::ContainerExited) => Self::Exited,
            _ => Self::Unknown,
        }
    }
}

/// One container instance of the pod.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// Runtime ID.
    pub id: String,
    /// Container name (label).
    pub name: String,
    /// Restart count (annotation / attempt).
    pub restart_count: u32,
    /// State.
    pub state: ContainerState,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Exit code, when exited.
    pub exit_code: i32,
    /// Start time, once started.
    pub started_at: Option<SystemTime>,
    /// Finish time, when exited.
    pub finished_at: Option<SystemTime>,
    /// Runtime's reason (e.g. OOMKilled, Error, Completed).
    pub reason: String,
    /// Runtime's message.
    pub message: String,
    /// Image as the user wrote it.
    pub image: String,
    /// Image ID the runtime resolved.
    pub image_ref: String,
    /// Spec hash it was created from.
    pub hash: Option<u64>,
    /// Grace period recorded at creation.
    pub grace: Option<i64>,
    /// Sandbox it belongs to.
    pub sandbox_id: String,
}

/// One sandbox of the pod.
#[derive(Debug, Clone)]
pub struct SandboxView {
    /// Runtime ID.
    pub id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Ready (running) or not.
    pub ready: bool,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
}

/// Everything the runtime holds for a pod UID.
#[derive(Debug, Clone, Default)]
pub struct PodRuntimeState {
    /// Sandboxes, newest first.
    pub sandboxes: Vec<SandboxView>,
    /// Containers, newest first.
    pub containers: Vec<ContainerView>,
    /// The ready sandbox's IP, if any.
    pub pod_ip: String,
}

impl PodRuntimeState {
    /// Newest instance of the named container.
    pub fn latest(&self, name: &str) -> Option<&ContainerView> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The instance before the newest one (the container's `lastState`).
    pub fn previous(&self, name: &str) -> Option<&ContainerView> {
        self.containers.iter().filter(|c| c.name == name).nth(1)
    }

    /// True when nothing of the pod is left in the runtime.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }
}

fn time_from_ns(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

/// Reads the pod's sandboxes and containers from the runtime, with exit details (a direct
/// read, for actions that must not wait for PLEG: termination).
pub async fn load(cri: &Cri, uid: &str, target: &str) -> Result<PodRuntimeState, CriError> {
    let sandboxes = cri.list_pod_sandboxes(Some(uid)).await?;
    let containers = cri.list_containers(Some(uid)).await?;
    let mut state = from_lists(sandboxes, containers);
    inspect(cri, &mut state, None, target).await?;
    Ok(state)
}

/// The pod's state as the list calls describe it, without exit details or IP (see
/// [`inspect`]); the lists may hold other pods' objects only if the caller filtered them.
pub fn from_lists(
    sandboxes: Vec<cri::PodSandbox>,
    containers: Vec<cri::Container>,
) -> PodRuntimeState {
    let mut sandboxes: Vec<SandboxView> = sandboxes
        .into_iter()
        .map(|s| SandboxView {
            attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
            ready: s.state == cri::PodSandboxState::SandboxReady as i32,
            created_at: s.created_at,
            id: s.id,
        })
        .collect();
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));

    let mut containers: Vec<ContainerView> = containers
        .into_iter()
        .map(|c| ContainerView {
            name: c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default(),
            restart_count: labels::restart_count(&c.annotations),
            state: ContainerState::from_cri(c.state),
            created_at: c.created_at,
            exit_code: 0,
            started_at: None,
            finished_at: None,
            reason: String::new(),
            message: String::new(),
            image: c
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_ref: c.image_ref.clone(),
            hash: labels::hash_of(&c.annotations),
            grace: labels::grace_of(&c.annotations),
            sandbox_id: c.pod_sandbox_id,
            id: c.id,
        })
        .collect();
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    PodRuntimeState {
        sandboxes,
        containers,
        pod_ip: String::new(),
    }
}

/// Fills in exit details for the newest two instances of each container (the current one
/// drives restart decisions and `state`, the one before it is `lastState`) and the ready
/// sandbox's IP. What `prev` (an earlier inspection of the same pod) already knows about a
/// container in the same state, or a sandbox, is reused instead of asked again: on an
/// unchanged pod this makes no CRI call at all.
pub async fn inspect(
    cri: &Cri,
    state: &mut PodRuntimeState,
    prev: Option<&PodRuntimeState>,
    target: &str,
) -> Result<(), CriError> {
    let mut seen: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    for c in state.containers.iter_mut() {
        let n = seen.entry(c.name.clone()).or_default();
        *n += 1;
        if *n > 2 {
            continue;
        }
        let known = prev
            .and_then(|p| p.containers.iter().find(|o| o.id == c.id))
            .filter(|o| o.state == c.state && c.state != ContainerState::Unknown);
        if let Some(o) = known {
            c.exit_code = o.exit_code;
            c.started_at = o.started_at;
            c.finished_at = o.finished_at;
            c.reason.clone_from(&o.reason);
            c.message.clone_from(&o.message);
            c.image.clone_from(&o.image);
            c.image_ref.clone_from(&o.image_ref);
            continue;
        }
        match cri.container_status(&c.id, target).await {
            Ok(Some(s)) => {
                c.message = if c.state == ContainerState::Exited {
                    let t = super::termination::message(&s).await;
                    super::termination::join(&s.message, &t)
                } else {
                    s.message.clone()
                };
                c.exit_code = s.exit_code;
                c.started_at = time_from_ns(s.started_at);
                c.finished_at = time_from_ns(s.finished_at);
                c.reason = s.reason;
                if let Some(img) = s.image {
                    c.image = img.image;
                }
                if !s.image_ref.is_empty() {
                    c.image_ref = s.image_ref;
                }
            }
            Ok(None) => {}
            Err(e) if e.is_not_found() => c.state = ContainerState::Unknown,
            Err(e) => return Err(e),
        }
    }

    state.pod_ip.clear();
    if let Some(s) = state.sandboxes.iter().find(|s| s.ready) {
        let same = prev.filter(|p| p.sandboxes.iter().any(|o| o.id == s.id && o.ready));
        match same {
            Some(p) => state.pod_ip.clone_from(&p.pod_ip),
            None => {
                if let Some(status) = cri.pod_sandbox_status(&s.id, target).await? {
                    state.pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
                }
            }
        }
    }
    Ok(())
}
