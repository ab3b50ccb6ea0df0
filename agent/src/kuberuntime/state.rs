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

/// Reads the pod's sandboxes and containers; exit details only for the newest instance of each
/// name (the ones restart decisions look at).
pub async fn load(cri: &Cri, uid: &str, target: &str) -> Result<PodRuntimeState, CriError> {
    let mut sandboxes: Vec<SandboxView> = cri
        .list_pod_sandboxes(Some(uid))
        .await?
        .into_iter()
        .map(|s| SandboxView {
            attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
            ready: s.state == cri::PodSandboxState::SandboxReady as i32,
            created_at: s.created_at,
            id: s.id,
        })
        .collect();
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));

    let mut containers: Vec<ContainerView> = cri
        .list_containers(Some(uid))
        .await?
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

    // Details for the newest two instances of each container: the current one drives restart
    // decisions and `state`, the one before it is `lastState`.
    let mut seen: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    for c in containers.iter_mut() {
        let n = seen.entry(c.name.clone()).or_default();
        *n += 1;
        if *n > 2 {
            continue;
        }
        match cri.container_status(&c.id, target).await {
            Ok(Some(s)) => {
                c.exit_code = s.exit_code;
                c.started_at = time_from_ns(s.started_at);
                c.finished_at = time_from_ns(s.finished_at);
                c.reason = s.reason;
                c.message = s.message;
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

    let mut pod_ip = String::new();
    if let Some(s) = sandboxes.iter().find(|s| s.ready)
        && let Some(status) = cri.pod_sandbox_status(&s.id, target).await?
    {
        pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
    }
    Ok(PodRuntimeState {
        sandboxes,
        containers,
        pod_ip,
    })
}
