//! Status manager (kubelet pkg/kubelet/status): the one writer of every pod's API status
//! (phase, conditions, container statuses), fed by the pod workers after each sync; readers
//! (the HTTP server's /pods, metrics) get cheap snapshots.

pub mod generate;

use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// All pods with their current status, keyed by UID.
pub type PodStatuses = Arc<BTreeMap<String, Arc<Pod>>>;

/// Write side, held by the pod workers (cloneable; every write replaces one pod's entry).
#[derive(Clone, Debug)]
pub struct StatusWriter {
    tx: Arc<watch::Sender<PodStatuses>>,
}

/// Read side: cheap to clone, never blocks writers.
#[derive(Clone, Debug)]
pub struct StatusStore {
    rx: watch::Receiver<PodStatuses>,
}

/// A new, empty status store.
pub fn store() -> (StatusWriter, StatusStore) {
    let (tx, rx) = watch::channel(PodStatuses::default());
    (StatusWriter { tx: Arc::new(tx) }, StatusStore { rx })
}

impl StatusWriter {
    /// Sets (or replaces) a pod's object with its status.
    pub fn set(&self, uid: &str, pod: Pod) {
        let pod = Arc::new(pod);
        self.tx.send_if_modified(|m| {
            if m.get(uid).is_some_and(|old| **old == *pod) {
                return false;
            }
            Arc::make_mut(m).insert(uid.to_string(), pod);
            true
        });
    }

    /// Forgets a pod (terminated and removed).
    pub fn remove(&self, uid: &str) {
        self.tx
            .send_if_modified(|m| Arc::make_mut(m).remove(uid).is_some());
    }
}

impl StatusStore {
    /// Every known pod, as the API would show it (spec plus status).
    pub fn pods(&self) -> PodStatuses {
        self.rx.borrow().clone()
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

    /// Waits until any pod status changes (for watchers and tests).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}
