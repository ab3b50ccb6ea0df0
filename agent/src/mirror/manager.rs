//! The mirror pod manager's task: reconciles on every change of the desired set or of the
//! mirror pods the API server source sees, and on a back-off timer after a failed call. A pass
//! with nothing to do makes no API call; a pass that creates first reads the Node (its UID for
//! the owner reference, and a Node being deleted gets no new mirror pods, as in the kubelet).

use super::{Action, Key, mirror_pod, plan};
use crate::config::PodSet;
use crate::config::apiserver::MirrorSet;
use crate::errors::error_chain;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams, Preconditions};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Deadline of one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed pass; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Errors of one API call; each names the call and the object.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The API server refused or failed the call.
    #[error("{call} {what}")]
    Api {
        /// The call (`create mirror pod`, `delete mirror pod`, `get node`).
        call: &'static str,
        /// The object.
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// No answer in time.
    #[error("{call} {what}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        /// The call.
        call: &'static str,
        /// The object.
        what: String,
    },
    /// The Node object does not exist (yet): node status registers it.
    #[error("node {0} is not registered yet; mirror pods wait for it")]
    NodeMissing(String),
}

/// Starts the manager (cluster mode only).
pub fn start(
    client: kube::Client,
    node_name: String,
    config: watch::Receiver<Option<PodSet>>,
    mirrors: watch::Receiver<Option<MirrorSet>>,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) {
    let m = Manager {
        client,
        node_name,
        node_uid: None,
        deleted: HashSet::new(),
        seen: HashMap::new(),
    };
    tasks.spawn(m.run(config, mirrors, cancel));
}

struct Manager {
    client: kube::Client,
    node_name: String,
    /// The Node's UID as last read.
    node_uid: Option<String>,
    /// Mirror pod UIDs we deleted that the watch may still show.
    deleted: HashSet<String>,
    /// First sight of each static pod UID (the config.seen annotation).
    seen: HashMap<String, String>,
}

impl Manager {
    async fn run(
        mut self,
        mut config: watch::Receiver<Option<PodSet>>,
        mut mirrors: watch::Receiver<Option<MirrorSet>>,
        cancel: CancellationToken,
    ) {
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        info!(node = %self.node_name, "mirror pod manager started");
        loop {
            let desired = config.borrow_and_update().clone();
            let seen_mirrors = mirrors.borrow_and_update().clone();
            // Both sides must be known: without the initial list of mirror pods every static
            // pod would look mirror-less.
            let failed = match (&desired, &seen_mirrors) {
                (Some(d), Some(m)) => !self.reconcile(d, m).await,
                _ => false,
            };
            let retry_at = if failed {
                failing = true;
                let at = Instant::now() + crate::wait::jitter(retry, 0.5);
                retry = (retry * 2).min(MAX_RETRY);
                Some(at)
            } else {
                if failing {
                    info!("mirror pods are in sync again");
                    failing = false;
                }
                retry = FIRST_RETRY;
                None
            };
            // While backing off, changes wait for the retry (which reads the latest of both):
            // a flapping watch or config cannot turn a failing API server into a busy loop.
            let waiting = retry_at.is_none();
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = config.changed(), if waiting => if r.is_err() { return },
                r = mirrors.changed(), if waiting => if r.is_err() { return },
                _ = sleep_until(retry_at) => {}
            }
        }
    }

    /// One pass; `false` when a call failed (the caller retries with back-off).
    async fn reconcile(&mut self, desired: &PodSet, mirrors: &MirrorSet) -> bool {
        self.deleted
            .retain(|uid| mirrors.values().any(|m| &m.uid == uid));
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        self.seen.retain(|uid, _| desired.contains_key(uid));
        for (uid, _) in desired.iter().filter(|(_, d)| !d.is_api()) {
            self.seen.entry(uid.clone()).or_insert_with(|| now.clone());
        }
        let known = self.node_uid.clone().unwrap_or_default();
        let mut actions = plan(desired, mirrors, &known, &self.deleted);
        if actions.is_empty() {
            return true;
        }
        // Creates (and owner checks) need the Node as it is now.
        let creating = actions.iter().any(|a| matches!(a, Action::Create { .. }));
        let mut node_deleting = false;
        if creating || self.node_uid.is_none() {
            match self.node().await {
                Ok(node) => {
                    let uid = node.metadata.uid.unwrap_or_default();
                    node_deleting = node.metadata.deletion_timestamp.is_some();
                    if self.node_uid.as_deref() != Some(uid.as_str()) {
                        debug!(node = %self.node_name, uid = %uid, "node UID for mirror pod owners");
                        self.node_uid = Some(uid.clone());
                        actions = plan(desired, mirrors, &uid, &self.deleted);
                    }
                }
                Err(MirrorError::NodeMissing(n)) => {
                    info!(node = %n, "waiting for the Node object before making mirror pods");
                    return false;
                }
                Err(e) => {
                    warn!(error = %error_chain(&e), "cannot read the Node; mirror pods wait (will retry)");
                    return false;
                }
            }
        }
        let node_uid = self.node_uid.clone().unwrap_or_default();
        let mut ok = true;
        // A failed delete blocks the create of the same key (the name is still taken).
        let mut blocked: HashSet<Key> = HashSet::new();
        for a in actions {
            match a {
                Action::Delete { key, uid, why } => match self.delete(&key, &uid).await {
                    Ok(()) => {
                        info!(pod = %format_key(&key), uid = %uid, reason = %why, "mirror pod deleted");
                        self.deleted.insert(uid);
                    }
                    Err(e) => {
                        warn!(error = %error_chain(&e), reason = %why, "mirror pod not deleted; will retry");
                        blocked.insert(key);
                        ok = false;
                    }
                },
                Action::Create { key, static_uid } => {
                    if blocked.contains(&key) {
                        continue;
                    }
                    if node_deleting {
                        // Retried with back-off: the Node may be registered again.
                        debug!(pod = %format_key(&key), "the Node is being deleted; no mirror pod made");
                        ok = false;
                        continue;
                    }
                    let Some(d) = desired.get(&static_uid) else {
                        continue;
                    };
                    let seen = self.seen.get(&static_uid).cloned().unwrap_or_default();
                    let pod = mirror_pod(d, &self.node_name, &node_uid, &seen);
                    match self.create(&key, &pod).await {
                        Ok(Some(uid)) => {
                            info!(pod = %format_key(&key), uid = %uid, static_pod = %d.pod_ref, "mirror pod created");
                        }
                        Ok(None) => {
                            debug!(pod = %format_key(&key), "mirror pod exists already; the watch will show it");
                        }
                        Err(e) => {
                            warn!(error = %error_chain(&e), static_pod = %d.pod_ref, "mirror pod not created; will retry");
                            ok = false;
                        }
                    }
                }
            }
        }
        ok
    }

    async fn node(&self) -> Result<Node, MirrorError> {
        let api: kube::Api<Node> = kube::Api::all(self.client.clone());
        let what = || format!("node {}", self.node_name);
        match tokio::time::timeout(CALL_TIMEOUT, api.get(&self.node_name)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                Err(MirrorError::NodeMissing(self.node_name.clone()))
            }
            Ok(Err(source)) => Err(MirrorError::Api {
                call: "get",
                what: what(),
                source,
            }),
            Err(_) => Err(MirrorError::Timeout {
                call: "get",
                what: what(),
            }),
        }
    }

    /// Creates `pod`; `Ok(None)` when a pod of that name exists already (kubelet
    /// CreateMirrorPod treats AlreadyExists the same: the next pass compares it).
    async fn create(&self, key: &Key, pod: &Pod) -> Result<Option<String>, MirrorError> {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &key.0);
        let what = || format!("mirror pod {}", format_key(key));
        match tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), pod)).await {
            Ok(Ok(p)) => Ok(Some(p.metadata.uid.unwrap_or_default())),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(None),
            Ok(Err(source)) => Err(MirrorError::Api {
                call: "create",
                what: what(),
                source,
            }),
            Err(_) => Err(MirrorError::Timeout {
                call: "create",
                what: what(),
            }),
        }
    }

    /// Deletes the mirror pod `uid` at once (kubelet DeleteMirrorPod: grace 0, UID
    /// precondition, so a newer pod of the same name is never hit).
    async fn delete(&self, key: &Key, uid: &str) -> Result<(), MirrorError> {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &key.0);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let what = || format!("mirror pod {} ({uid})", format_key(key));
        match tokio::time::timeout(CALL_TIMEOUT, api.delete(&key.1, &params)).await {
            Ok(Ok(_)) => Ok(()),
            // Gone already, or the name belongs to a newer pod: done either way.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => Ok(()),
            Ok(Err(source)) => Err(MirrorError::Api {
                call: "delete",
                what: what(),
                source,
            }),
            Err(_) => Err(MirrorError::Timeout {
                call: "delete",
                what: what(),
            }),
        }
    }
}

fn format_key(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
