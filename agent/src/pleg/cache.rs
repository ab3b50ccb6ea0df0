//! The runtime cache (kubelet pkg/kubelet/container/cache.go): every pod's runtime state as of
//! the last relist, written only by PLEG, read by the pod workers, the status manager and the
//! stats mapper (who owns which container id) instead of each asking the runtime on its own.
//!
//! [`CacheReader::newer_than`] is the kubelet's `GetNewerThan`: a pod worker asks for state
//! from a relist that started after its own last action finished, so it never acts twice on
//! the same stale view (creating a container that it already created). Shape: one writer, a
//! `watch` of immutable snapshots, like `stats/` and kube-runtime's reflector store.

use crate::kuberuntime::state::PodRuntimeState;
use crate::pod::PodRef;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// One pod as the cache holds it.
#[derive(Debug, Clone)]
pub struct CachedPod {
    /// Identity from the runtime's labels.
    pub pod: PodRef,
    /// Sandboxes and containers with exit details.
    pub state: Arc<PodRuntimeState>,
}

/// One immutable cache generation.
#[derive(Debug, Clone, Default)]
pub struct CacheSnapshot {
    /// Pods the runtime has, by UID.
    pub pods: HashMap<String, CachedPod>,
    /// Start time of the relist this generation reflects (`None` before the first).
    pub updated: Option<Instant>,
    /// Incremented on every write, also when nothing changed (a newer relist is news too).
    pub generation: u64,
    /// Incremented only when a pod was added, removed or got a new state, and on the first
    /// relist: readers that only need the pods skip the other generations (an idle node
    /// relists every second and changes nothing).
    pub content: u64,
}

/// Same pods, same states? PLEG keeps the `Arc` of a pod it did not inspect again, so an
/// unchanged pod is the same pointer.
fn same_pods(a: &HashMap<String, CachedPod>, b: &HashMap<String, CachedPod>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(uid, p)| {
            b.get(uid)
                .is_some_and(|q| Arc::ptr_eq(&p.state, &q.state) && p.pod == q.pod)
        })
}

/// The next generation after `cur`: `content` moves when the pods differ or this is the
/// first relist.
fn next(
    cur: &CacheSnapshot,
    pods: HashMap<String, CachedPod>,
    updated: Option<Instant>,
) -> CacheSnapshot {
    let changed = cur.updated.is_none() != updated.is_none() || !same_pods(&cur.pods, &pods);
    CacheSnapshot {
        pods,
        updated,
        generation: cur.generation + 1,
        content: cur.content + u64::from(changed),
    }
}

/// The writer, held by PLEG.
#[derive(Debug)]
pub struct RuntimeCache {
    tx: watch::Sender<Arc<CacheSnapshot>>,
}

/// A read handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct CacheReader {
    rx: watch::Receiver<Arc<CacheSnapshot>>,
}

/// A new, empty cache.
pub fn cache() -> (RuntimeCache, CacheReader) {
    let (tx, rx) = watch::channel(Arc::new(CacheSnapshot::default()));
    (RuntimeCache { tx }, CacheReader { rx })
}

impl RuntimeCache {
    /// The current generation.
    pub fn current(&self) -> Arc<CacheSnapshot> {
        self.tx.borrow().clone()
    }

    /// Publishes the result of the relist that started at `relist_started`.
    pub fn publish(&self, pods: HashMap<String, CachedPod>, relist_started: Instant) {
        self.tx.send_modify(|cur| {
            *cur = Arc::new(next(cur, pods, Some(relist_started)));
        });
    }
}

impl RuntimeCache {
    /// Publishes a correction of the current generation that no relist made (an OOM kill
    /// the runtime has not seen yet): `updated` stays, so a pod worker waiting for a relist
    /// newer than its last action still waits for one.
    pub fn correct(&self, pods: HashMap<String, CachedPod>) {
        self.tx.send_modify(|cur| {
            let updated = cur.updated;
            *cur = Arc::new(next(cur, pods, updated));
        });
    }
}

impl CacheReader {
    /// The current generation.
    pub fn snapshot(&self) -> Arc<CacheSnapshot> {
        self.rx.borrow().clone()
    }

    /// The pod's state from a relist that started after `after` (with `None`, from any relist:
    /// never before PLEG's first, so a restarted agent does not take its running pods for
    /// absent ones, as the kubelet's GetNewerThan waits for the cache's first timestamp); an
    /// absent pod is an empty state. Waits for PLEG otherwise: if PLEG has
    /// stopped, this waits until the caller gives up (the kubelet blocks the same way).
    pub async fn newer_than(&mut self, uid: &str, after: Option<Instant>) -> Arc<PodRuntimeState> {
        loop {
            {
                let snap = self.rx.borrow_and_update();
                let fresh = match (after, snap.updated) {
                    (None, updated) => updated.is_some(),
                    (Some(a), Some(u)) => u > a,
                    (Some(_), None) => false,
                };
                if fresh {
                    return snap
                        .pods
                        .get(uid)
                        .map(|p| p.state.clone())
                        .unwrap_or_default();
                }
            }
            if self.rx.changed().await.is_err() {
                // The writer is gone (shutdown): nothing newer will come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits for the next generation; false once the writer is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn one(uid: &str) -> HashMap<String, CachedPod> {
        [(
            uid.to_string(),
            CachedPod {
                pod: PodRef {
                    namespace: "ns".into(),
                    name: "p".into(),
                    uid: uid.into(),
                },
                state: Arc::default(),
            },
        )]
        .into()
    }

    #[tokio::test]
    async fn newer_than_waits_for_a_relist_that_started_after_the_last_action() {
        let (w, mut r) = cache();
        // Before PLEG's first relist nothing is known, not even with no previous action.
        let early = tokio::time::timeout(Duration::from_millis(50), r.newer_than("u", None));
        assert!(early.await.is_err(), "answered before the first relist");
        let t0 = Instant::now();
        w.publish(one("u"), t0);
        // No previous action: the current state at once.
        assert!(r.newer_than("u", None).await.is_empty());
        let acted = Instant::now();
        // A relist that started before the action does not count.
        w.publish(one("u"), t0);
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), r.newer_than("u", Some(acted)));
        assert!(
            waiting.await.is_err(),
            "state older than the action must not be returned"
        );
        let mut r2 = r.clone();
        let wait = tokio::spawn(async move { r2.newer_than("u", Some(acted)).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        w.publish(one("u"), Instant::now());
        assert!(wait.await.is_ok());
    }

    /// `content` moves on the first relist and when a pod comes, goes or gets a new state;
    /// not when a relist keeps every pod's record.
    #[test]
    fn content_moves_only_when_pods_change() {
        let (w, r) = cache();
        let content = || r.snapshot().content;
        w.publish(HashMap::new(), Instant::now());
        assert_eq!(content(), 1, "the first relist is news even with no pods");
        w.publish(one("u"), Instant::now());
        assert_eq!(content(), 2);
        let kept = r.snapshot().pods.clone();
        w.publish(kept.clone(), Instant::now());
        w.correct(kept);
        assert_eq!(content(), 2, "same records: no news");
        assert_eq!(r.snapshot().generation, 4);
        // A new state (a fresh Arc) for the same pod is news.
        w.publish(one("u"), Instant::now());
        assert_eq!(content(), 3);
        w.publish(HashMap::new(), Instant::now());
        assert_eq!(content(), 4);
    }
}
