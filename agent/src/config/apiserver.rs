//! The API server source (kubelet pkg/kubelet/config/apiserver.go): the pods bound to this
//! node, from a watch of `pods` with `spec.nodeName=<node>` in every namespace.
//!
//! kube-runtime's watcher does the list-then-watch, resumes from the last resourceVersion and
//! relists when the server answers 410 Gone; its back-off keeps an unreachable API server
//! from becoming a busy loop. The first full set is published only after the initial list is
//! complete (`InitDone`), so a half-listed node never looks like one whose pods were deleted;
//! during an outage the last set stays, so running pods keep running.
//!
//! Mirror pods (the API's copies of this node's static pods) are not pods to run: they are
//! left out of the desired set, as the kubelet's pod manager keeps them apart, and published
//! on a second channel ([`MirrorSet`]) for the mirror pod manager and the status writer, so one
//! watch serves both.

use super::SourceSet;
use crate::pod::{DesiredPod, PodHandle, PodRef, PodSource};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Annotation that marks a mirror pod (kubetypes.ConfigMirrorAnnotationKey).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A mirror pod as the API server holds it: what the mirror pod manager compares with the
/// static pod it copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPod {
    /// The mirror pod's own UID (deletes and status patches carry it as a precondition).
    pub uid: String,
    /// `kubernetes.io/config.mirror`: the config hash of the static pod it was made from.
    pub hash: String,
    /// The API server was asked to delete it (deletionTimestamp set).
    pub deleting: bool,
    /// UID in its controller owner reference to a Node named as this node, if it has one.
    pub node_owner_uid: Option<String>,
}

/// A static pod's config hash (kubelet getPodHash: the config.hash annotation, which the file
/// source sets to the UID), the value its mirror pod's `kubernetes.io/config.mirror` carries.
pub fn config_hash(d: &DesiredPod) -> &str {
    d.pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::manifest::CONFIG_HASH_ANNOTATION))
        .map_or(d.pod_ref.uid.as_str(), String::as_str)
}

/// This node's mirror pods by (namespace, name), as the watch last saw them.
pub type MirrorSet = Arc<BTreeMap<(String, String), MirrorPod>>;

/// Watch errors are logged at most this often during an outage (each retry would log).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// Errors building an API client from `--kubeconfig`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// `--kubeconfig`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No client could be built from the kubeconfig.
    #[error("API client from kubeconfig {path}")]
    Client {
        /// `--kubeconfig`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// A client from the kubeconfig at `path`. With `timeout`, every connect, read and write
/// gives up after it (heartbeats); without, kube's defaults suit long watches. A rotated
/// client certificate is picked up without a restart (`certificate::reloading_client`).
pub async fn client(path: &Path, timeout: Option<Duration>) -> Result<kube::Client, ClientError> {
    let p = path.to_owned();
    crate::certificate::reloading_client(path, move || build(p.clone(), timeout)).await
}

async fn build(path: PathBuf, timeout: Option<Duration>) -> Result<kube::Client, ClientError> {
    let path = path.as_path();
    let kc =
        kube::config::Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|source| ClientError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    if let Some(t) = timeout {
        config.connect_timeout = Some(t);
        config.read_timeout = Some(t);
        config.write_timeout = Some(t);
    }
    kube::Client::try_from(config).map_err(|source| ClientError::Client {
        path: path.to_owned(),
        source,
    })
}

/// A pod from the API as a desired pod, or `None` for mirror pods and objects without
/// identity.
pub fn desired(pod: Pod) -> Option<DesiredPod> {
    let m = &pod.metadata;
    if m.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return None;
    }
    let pod_ref = PodRef {
        namespace: m.namespace.clone().filter(|s| !s.is_empty())?,
        name: m.name.clone().filter(|s| !s.is_empty())?,
        uid: m.uid.clone().filter(|s| !s.is_empty())?,
    };
    Some(DesiredPod {
        pod_ref,
        pod,
        source: PodSource::Api,
    })
}

/// A pod from the API as a mirror pod of node `node_name`, or `None` when it is not one (or
/// has no identity).
pub fn mirror(pod: &Pod, node_name: &str) -> Option<((String, String), MirrorPod)> {
    let m = &pod.metadata;
    let hash = m.annotations.as_ref()?.get(MIRROR_ANNOTATION)?.clone();
    let key = (
        m.namespace.clone().filter(|s| !s.is_empty())?,
        m.name.clone().filter(|s| !s.is_empty())?,
    );
    let node_owner_uid = m.owner_references.iter().flatten().find_map(|o| {
        (o.api_version == "v1"
            && o.kind == "Node"
            && o.name == node_name
            && o.controller == Some(true))
        .then(|| o.uid.clone())
    });
    let mp = MirrorPod {
        uid: m.uid.clone().filter(|s| !s.is_empty())?,
        hash,
        deleting: m.deletion_timestamp.is_some(),
        node_owner_uid,
    };
    Some((key, mp))
}

/// Records `pod` in `mirrors` when it is a mirror pod; forgets a mirror of the same UID when
/// it no longer is one. Returns whether the set changed.
fn upsert_mirror(
    mirrors: &mut BTreeMap<(String, String), MirrorPod>,
    pod: &Pod,
    node_name: &str,
) -> bool {
    match mirror(pod, node_name) {
        Some((key, mp)) => mirrors.insert(key, mp.clone()) != Some(mp),
        None => remove_mirror(mirrors, pod),
    }
}

/// Forgets the mirror pod with `pod`'s UID; whether there was one.
fn remove_mirror(mirrors: &mut BTreeMap<(String, String), MirrorPod>, pod: &Pod) -> bool {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return false;
    };
    let before = mirrors.len();
    mirrors.retain(|_, m| m.uid != uid);
    mirrors.len() != before
}

/// Whether `new` asks anything different of the node than `old`: a status written back (by
/// this agent) or a new resourceVersion alone does not, so it wakes no worker; a condition
/// others own (a readiness gate's) does, since Ready depends on it.
fn same_for_the_node(old: &DesiredPod, new: &DesiredPod) -> bool {
    let (a, b) = (&old.pod.metadata, &new.pod.metadata);
    let gates = |d: &DesiredPod| {
        d.external_conditions()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect::<Vec<_>>()
    };
    old.pod.spec == new.pod.spec
        && a.deletion_timestamp == b.deletion_timestamp
        && a.deletion_grace_period_seconds == b.deletion_grace_period_seconds
        && a.labels == b.labels
        && a.annotations == b.annotations
        && gates(old) == gates(new)
}

/// Keeps the previous handle when nothing the node acts on changed.
fn upsert(pods: &mut BTreeMap<String, PodHandle>, pod: Pod) -> bool {
    let Some(d) = desired(pod) else {
        return false;
    };
    let uid = d.pod_ref.uid.clone();
    if pods.get(&uid).is_some_and(|old| same_for_the_node(old, &d)) {
        return false;
    }
    pods.insert(uid, Arc::new(d));
    true
}

/// Runs the source until cancelled, publishing the node's API pods on `tx` and its mirror
/// pods on `mirrors_tx`, each after the initial list and on every change. A pod the watch
/// deletes is also sent, as its final object, on `removals` before the set without it is
/// published: a watch channel keeps only the latest set, so the update carrying a force
/// delete's grace period 0 may never be seen, and the kubelet kills with the deleted
/// object's grace (HandlePodRemoves).
pub async fn run(
    client: kube::Client,
    node_name: String,
    tx: watch::Sender<Option<SourceSet>>,
    mirrors_tx: watch::Sender<Option<MirrorSet>>,
    removals: mpsc::UnboundedSender<PodHandle>,
    cancel: CancellationToken,
) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut pods: BTreeMap<String, PodHandle> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, PodHandle>> = None;
    let mut mirrors: BTreeMap<(String, String), MirrorPod> = BTreeMap::new();
    let mut mirrors_relist: Option<BTreeMap<(String, String), MirrorPod>> = None;
    let mut last_error_log: Option<Instant> = None;
    let mut failing = false;
    info!(node = %node_name, "watching the API server for this node's pods");
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        // (desired pods changed, mirror pods changed)
        let (changed, mirrors_changed) = match ev {
            None => return,
            Some(Err(e)) => {
                if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                    warn!(error = %e, "watching this node's pods failed; retrying with back-off (running pods keep running)");
                    last_error_log = Some(Instant::now());
                }
                failing = true;
                (false, false)
            }
            Some(Ok(ev)) => {
                if failing {
                    info!("watching this node's pods again");
                    failing = false;
                    last_error_log = None;
                }
                match ev {
                    Event::Init => {
                        relist = Some(BTreeMap::new());
                        mirrors_relist = Some(BTreeMap::new());
                        (false, false)
                    }
                    Event::InitApply(p) => {
                        if let Some(next) = mirrors_relist.as_mut()
                            && let Some((key, mp)) = mirror(&p, &node_name)
                        {
                            next.insert(key, mp);
                        }
                        // Reuse unchanged handles so a relist wakes only changed pods.
                        if let Some(next) = relist.as_mut()
                            && let Some(d) = desired(p)
                        {
                            let uid = d.pod_ref.uid.clone();
                            let keep = pods.get(&uid).filter(|old| same_for_the_node(old, &d));
                            next.insert(uid, keep.cloned().unwrap_or_else(|| Arc::new(d)));
                        }
                        (false, false)
                    }
                    Event::InitDone => {
                        if let Some(next) = relist.take() {
                            pods = next;
                        }
                        if let Some(next) = mirrors_relist.take() {
                            mirrors = next;
                        }
                        debug!(
                            pods = pods.len(),
                            mirror_pods = mirrors.len(),
                            "initial list of this node's pods complete"
                        );
                        (true, true)
                    }
                    Event::Apply(p) => {
                        let m = upsert_mirror(&mut mirrors, &p, &node_name);
                        (upsert(&mut pods, p), m)
                    }
                    Event::Delete(p) => {
                        let m = remove_mirror(&mut mirrors, &p);
                        let removed = desired(p).filter(|d| pods.remove(&d.pod_ref.uid).is_some());
                        let d = removed.is_some();
                        if let Some(last) = removed {
                            // Only fails when the pod workers are gone (shutting down).
                            let _ = removals.send(Arc::new(last));
                        }
                        (d, m)
                    }
                }
            }
        };
        if changed {
            tx.send_replace(Some(Arc::new(pods.clone())));
        }
        if mirrors_changed {
            mirrors_tx.send_replace(Some(Arc::new(mirrors.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn api_pod(uid: &str, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                resource_version: Some("1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    #[test]
    fn mirror_pods_and_pods_without_identity_are_not_run() {
        assert!(desired(api_pod("u", &[])).is_some());
        assert!(desired(api_pod("u", &[(MIRROR_ANNOTATION, "h")])).is_none());
        assert!(desired(api_pod("", &[])).is_none());
    }

    #[test]
    fn mirror_pods_are_recognised_with_their_hash_and_node_owner() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        assert!(mirror(&api_pod("u", &[]), "n1").is_none());
        let mut p = api_pod("m1", &[(MIRROR_ANNOTATION, "h1")]);
        let (key, m) = mirror(&p, "n1").expect("a mirror pod");
        assert_eq!(key, ("default".to_string(), "web".to_string()));
        assert_eq!((m.uid.as_str(), m.hash.as_str()), ("m1", "h1"));
        assert!(!m.deleting && m.node_owner_uid.is_none());
        let owner = |name: &str, controller| OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.into(),
            uid: "node-uid".into(),
            controller: Some(controller),
            ..Default::default()
        };
        p.metadata.owner_references = Some(vec![owner("other", true), owner("n1", false)]);
        assert_eq!(mirror(&p, "n1").map(|(_, m)| m.node_owner_uid), Some(None));
        p.metadata.owner_references = Some(vec![owner("n1", true)]);
        assert_eq!(
            mirror(&p, "n1")
                .and_then(|(_, m)| m.node_owner_uid)
                .as_deref(),
            Some("node-uid")
        );

        let mut set = BTreeMap::new();
        assert!(upsert_mirror(&mut set, &p, "n1"));
        assert!(!upsert_mirror(&mut set, &p, "n1"), "unchanged");
        assert!(remove_mirror(&mut set, &p));
        assert!(set.is_empty());
    }

    #[test]
    fn status_write_backs_keep_the_handle_and_spec_or_deletion_changes_replace_it() {
        let mut pods = BTreeMap::new();
        assert!(upsert(&mut pods, api_pod("u", &[])));
        let mut echoed = api_pod("u", &[]);
        echoed.metadata.resource_version = Some("2".into());
        echoed.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        assert!(
            !upsert(&mut pods, echoed),
            "our own status coming back wakes nothing"
        );
        let mut deleted = api_pod("u", &[]);
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(upsert(&mut pods, deleted));
        assert!(pods.get("u").is_some_and(|p| p.deleting()));
    }
}
