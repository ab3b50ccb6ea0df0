//! Status manager (kubelet pkg/kubelet/status): the one writer of every pod's API status
//! (phase, conditions, container statuses). Readers (/pods, metrics, next the API server
//! patcher) get cheap snapshots from a [`StatusStore`].
//!
//! A pod has a status from the moment a config source shows it (Pending, containers waiting
//! `ContainerCreating`), not only after its first sync: a pod stuck in a long image pull or a
//! failing sandbox is visible. The manager task is fed by
//! - the config sources' desired set (first sight, spec changes, removal),
//! - the pod workers through a [`StatusHandle`] (why containers wait: `ErrImagePull`,
//!   `CrashLoopBackOff`, `CreateContainerConfigError`, ... and "terminated"),
//! - the runtime cache (PLEG: what runs; an OOM kill on the bus makes PLEG relist at once,
//!   so its verdict reaches the status through the cache, never from two sources).
//!
//! Each pod's status is versioned; a write that changes nothing is not published. A terminal
//! phase (Succeeded, Failed) never goes back. The manager also times pod starts
//! (`kubelet_pod_start_duration_seconds`): from the first sight by a config source to the
//! first status in which every container runs, as the kubelet's SyncPod observes it (only for
//! pods this agent started, not for pods adopted at start-up).

mod ephemeral;
pub mod generate;
mod manager;
pub mod sync;

pub use manager::{StatusHandle, StatusStats, start};

use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Every container status of a pod status: regular, init and ephemeral.
pub fn all_container_statuses(
    s: &k8s_openapi::api::core::v1::PodStatus,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerStatus> {
    [
        &s.container_statuses,
        &s.init_container_statuses,
        &s.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
}

/// All pods with their current status, keyed by UID.
pub type PodStatuses = Arc<BTreeMap<String, Arc<Pod>>>;

/// Read side: cheap to clone, never blocks the manager.
#[derive(Clone, Debug)]
pub struct StatusStore {
    rx: watch::Receiver<PodStatuses>,
}

impl StatusStore {
    /// Every known pod, as the API would show it (spec plus status).
    pub fn pods(&self) -> PodStatuses {
        self.rx.borrow().clone()
    }

    /// Every known pod, marking the current value seen (for [`StatusStore::changed`]).
    pub fn pods_and_update(&mut self) -> PodStatuses {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for a newer set; `false` once the manager is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// The underlying receiver (the probe workers watch it for container starts).
    pub fn receiver(&self) -> watch::Receiver<PodStatuses> {
        self.rx.clone()
    }

    /// One pod by namespace and name.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.rx
            .borrow()
            .values()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }

    /// A store over a fixed set of pods (tests of readers).
    #[cfg(test)]
    pub fn fixed(pods: BTreeMap<String, Arc<Pod>>) -> Self {
        let (tx, rx) = watch::channel(Arc::new(pods));
        // The sender may go: a receiver keeps the last value.
        drop(tx);
        Self { rx }
    }
}
