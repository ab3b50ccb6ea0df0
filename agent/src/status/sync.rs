//! The status manager's API writer (kubelet pkg/kubelet/status/status_manager.go syncPod):
//! writes the statuses of the API server's pods back to it, and asks for the final delete of
//! pods whose deletion the API server requested once nothing of them runs.
//!
//! - A status is patched only when it differs from the last one the API server accepted, as
//!   a strategic merge patch of `pods/status` that carries the pod's UID, so a patch never
//!   lands on a newer pod of the same name (the API server refuses a changed UID). A terminal
//!   phase never regresses: the manager that builds the statuses guards that.
//! - Every `RESYNC` the whole set is sent again (the kubelet's periodic syncBatch), so a
//!   status changed by someone else is put right; a failed write is retried with back-off.
//! - Final delete: grace period 0 with a UID precondition, when the pod has a
//!   deletionTimestamp and the runtime cache, relisted, shows nothing of it (the kubelet's
//!   canBeDeleted after its containers and sandbox are gone).
//!
//! Static pods' statuses go to their mirror pods (the kubelet's TranslatePodUID): to the
//! mirror pod of the same name whose hash is the static pod's, with that mirror pod's UID as
//! the precondition; a static pod without a current mirror pod waits for the mirror pod
//! manager (`mirror`) to make one, whose appearance on the watch wakes this writer.

use super::StatusStore;
use crate::config::PodSet;
use crate::config::apiserver::MirrorSet;
use crate::errors::error_chain;
use crate::pleg::cache::CacheReader;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Full resend of every status (the kubelet resyncs its batch every 10 s, comparing with
/// its API copy; we keep no copy of what others wrote, so resend less often).
const RESYNC: Duration = Duration::from_secs(60);
/// Deadline of one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed write; doubles up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Errors of one write; each names the call and the pod.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{call} pod {pod}")]
    Api {
        call: &'static str,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("{call} pod {pod}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { call: &'static str, pod: String },
}

/// Starts the writer.
pub fn start(
    client: kube::Client,
    config: watch::Receiver<Option<PodSet>>,
    mirrors: watch::Receiver<Option<MirrorSet>>,
    store: StatusStore,
    cache: CacheReader,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) {
    let w = Writer {
        client,
        sent: HashMap::new(),
        deleted: HashSet::new(),
    };
    tasks.spawn(w.run(config, mirrors, store, cache, cancel));
}

/// The UID of static pod `d`'s mirror pod, when the API server holds one that copies this
/// version of it and is not being deleted (kubelet IsMirrorPodOf).
fn mirror_uid<'a>(d: &crate::pod::DesiredPod, mirrors: &'a MirrorSet) -> Option<&'a str> {
    let key = (d.pod_ref.namespace.clone(), d.pod_ref.name.clone());
    let m = mirrors.get(&key)?;
    (!m.deleting && m.hash == crate::config::apiserver::config_hash(d)).then_some(m.uid.as_str())
}

struct Writer {
    client: kube::Client,
    /// The last status the API server accepted, by the UID of the API object written (the
    /// mirror pod's for a static pod, so a new mirror pod gets the status at once).
    sent: HashMap<String, PodStatus>,
    /// UIDs whose final delete the API server accepted.
    deleted: HashSet<String>,
}

impl Writer {
    async fn run(
        mut self,
        mut config: watch::Receiver<Option<PodSet>>,
        mut mirrors: watch::Receiver<Option<MirrorSet>>,
        mut store: StatusStore,
        mut cache: CacheReader,
        cancel: CancellationToken,
    ) {
        let mut resync_at = Instant::now() + RESYNC;
        let mut retry = FIRST_RETRY;
        let mut mirrors_open = true;
        loop {
            let desired = config.borrow_and_update().clone();
            let mirror_pods = mirrors.borrow_and_update().clone().unwrap_or_default();
            let statuses = store.pods_and_update();
            let snap = cache.snapshot();
            let (failed, deleting) = match &desired {
                Some(d) => self.sync(d, &mirror_pods, &statuses, &snap).await,
                None => (false, false),
            };
            let retry_at = if failed {
                let at = Instant::now() + retry;
                retry = (retry * 2).min(MAX_RETRY);
                at
            } else {
                retry = FIRST_RETRY;
                resync_at
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = config.changed() => if r.is_err() { return },
                // A sender gone (no API source) keeps the last set; stop waiting on it.
                r = mirrors.changed(), if mirrors_open => if r.is_err() { mirrors_open = false },
                ok = store.changed() => if !ok { return },
                // The runtime matters only while a deleted pod waits for its containers to go.
                _ = cache.changed(), if deleting => {}
                _ = tokio::time::sleep_until(retry_at) => {
                    if Instant::now() >= resync_at {
                        debug!("status resync: sending every API pod's status again");
                        self.sent.clear();
                        resync_at = Instant::now() + RESYNC;
                    }
                }
            }
        }
    }

    /// One pass; returns whether a write failed and whether a deleted pod still waits.
    async fn sync(
        &mut self,
        desired: &PodSet,
        mirrors: &MirrorSet,
        statuses: &super::PodStatuses,
        snap: &crate::pleg::cache::CacheSnapshot,
    ) -> (bool, bool) {
        let mut failed = false;
        let mut waiting = false;
        let mut written = HashSet::new();
        for (uid, d) in desired.iter() {
            // The API object that shows this pod: itself, or a static pod's current mirror.
            let target = if d.is_api() {
                Some(uid.as_str())
            } else {
                mirror_uid(d, mirrors)
            };
            let Some(target) = target else { continue };
            written.insert(target.to_owned());
            if let Some(pod) = statuses.get(uid)
                && let Some(status) = pod.status.as_ref()
                && self.sent.get(target) != Some(status)
            {
                match self.patch(pod, target, status).await {
                    Ok(()) => {
                        self.sent.insert(target.to_owned(), status.clone());
                    }
                    Err(e) => {
                        warn!(error = %error_chain(&e), "status not written; will retry");
                        failed = true;
                    }
                }
            }
            if d.is_api() && d.deleting() && !self.deleted.contains(uid) {
                // Gone from the runtime, and the API server holds the status that says so (no
                // container running): the final status goes before the delete, as the
                // kubelet's canBeDeleted waits for its terminal status to be synced.
                let status = statuses.get(uid).and_then(|p| p.status.as_ref());
                let gone = snap.updated.is_some()
                    && !snap.pods.contains_key(uid)
                    && status.is_none_or(|s| !any_running(s) && self.sent.get(target) == Some(s));
                if !gone {
                    waiting = true;
                    continue;
                }
                match self.delete(&d.pod_ref, uid).await {
                    Ok(()) => {
                        info!(pod = %d.pod_ref, "pod terminated; deleted from the API server");
                        self.deleted.insert(uid.clone());
                    }
                    Err(e) => {
                        warn!(error = %error_chain(&e), "final delete failed; will retry");
                        failed = true;
                    }
                }
            }
        }
        self.sent.retain(|uid, _| written.contains(uid));
        self.deleted.retain(|uid| desired.contains_key(uid));
        (failed, waiting)
    }

    async fn patch(&self, pod: &Pod, uid: &str, status: &PodStatus) -> Result<(), WriteError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), ns);
        // Only the kubelet's own conditions: others' (readiness gates') are theirs to write,
        // and a copy of ours could be older than what they wrote since.
        let mut status = status.clone();
        if let Some(cs) = status.conditions.as_mut() {
            cs.retain(|c| crate::pod::kubelet_owned_condition(&c.type_));
        }
        let body = serde_json::json!({ "metadata": { "uid": uid }, "status": status });
        let what = || format!("{ns}/{name} ({uid})");
        let (params, patch) = (PatchParams::default(), Patch::Strategic(&body));
        let call = api.patch_status(name, &params, &patch);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            // The pod is gone (or a newer one has the name): nothing to write.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(()),
            Ok(Err(source)) => Err(WriteError::Api {
                call: "patch status of",
                pod: what(),
                source,
            }),
            Err(_) => Err(WriteError::Timeout {
                call: "patch status of",
                pod: what(),
            }),
        }
    }

    async fn delete(&self, pod: &crate::pod::PodRef, uid: &str) -> Result<(), WriteError> {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &pod.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let call = api.delete(&pod.name, &params);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            // Already gone, or the name now belongs to another pod: done either way.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => Ok(()),
            Ok(Err(source)) => Err(WriteError::Api {
                call: "delete",
                pod: pod.to_string(),
                source,
            }),
            Err(_) => Err(WriteError::Timeout {
                call: "delete",
                pod: pod.to_string(),
            }),
        }
    }
}

/// Whether any container of the status (init and ephemeral included) is running.
fn any_running(s: &PodStatus) -> bool {
    super::all_container_statuses(s)
        .any(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::apiserver::MirrorPod;
    use crate::config::manifest::apply_defaults;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn a_static_pods_status_goes_to_its_current_mirror_pod_only() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = apply_defaults(pod, std::path::Path::new("/m/web.yaml"), "n1");
        let key = ("default".to_string(), "web-n1".to_string());
        let current = MirrorPod {
            uid: "m1".into(),
            hash: d.pod_ref.uid.clone(),
            deleting: false,
            node_owner_uid: None,
        };
        let set = |m: MirrorPod| -> MirrorSet { Arc::new(BTreeMap::from([(key.clone(), m)])) };
        assert_eq!(mirror_uid(&d, &set(current.clone())), Some("m1"));
        let outdated = MirrorPod {
            hash: "old".into(),
            ..current.clone()
        };
        assert_eq!(
            mirror_uid(&d, &set(outdated)),
            None,
            "an older version's mirror"
        );
        let deleting = MirrorPod {
            deleting: true,
            ..current
        };
        assert_eq!(
            mirror_uid(&d, &set(deleting)),
            None,
            "a mirror on its way out"
        );
        assert_eq!(mirror_uid(&d, &MirrorSet::default()), None, "no mirror yet");
    }
}
