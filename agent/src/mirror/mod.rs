//! Mirror pods (kubelet pkg/kubelet/pod/mirror_client.go and syncPod's mirror pod part): in
//! cluster mode every static pod gets a copy in the API server, so `kubectl get pods` shows
//! it and the status writer (`status::sync`) has an object to write its status to.
//!
//! The copy has the static pod's name, namespace, labels and spec (nodeName set), the
//! annotations `kubernetes.io/config.mirror=<config hash>`, `config.hash`, `config.source`
//! and `config.seen`, and one owner reference, controller, to this node's Node object: the
//! NodeRestriction admission plugin refuses a node's pod create without it (since 1.17), and
//! the garbage collector removes the copies when the Node goes.
//!
//! [`plan`] compares the static pods of the desired set with the mirror pods the API server
//! source sees (one watch, `config::apiserver`) and says what to do; [`manager`] does it, once
//! per change of either side, and retries with back-off while the API server is unreachable.
//! A mirror pod whose deletion was requested (`kubectl delete`), whose hash is not the static
//! pod's (the manifest changed) or whose owner is not this Node is deleted (grace 0, UID
//! precondition) and made again; one whose static pod is gone is deleted, but only once every
//! config source has spoken, so a slow file source never wipes the mirrors.

pub mod manager;

pub use manager::start;

use crate::config::DesiredPods;
use crate::config::apiserver::{MIRROR_ANNOTATION, MirrorPod, config_hash};
use crate::pod::DesiredPod;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::{BTreeMap, HashSet};

/// Annotation with the time the agent first saw a static pod (kubetypes.ConfigFirstSeenAnnotationKey).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";

/// A pod's (namespace, name).
pub type Key = (String, String);

/// Why an existing mirror pod is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Someone asked the API server to delete it; it is made again at once.
    Deleting,
    /// It copies another version of the static pod (the manifest changed).
    Outdated {
        /// The hash it carries.
        had: String,
    },
    /// Its owner is not this node's Node object (a re-registered Node has a new UID).
    WrongOwner,
    /// No static pod of that name runs here any more.
    Orphan,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deleting => write!(f, "its deletion was requested"),
            Self::Outdated { had } => write!(f, "it copies an older static pod (hash {had})"),
            Self::WrongOwner => write!(f, "its owner is not this node's Node"),
            Self::Orphan => write!(f, "its static pod is gone"),
        }
    }
}

/// One step of a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the mirror pod `uid` at `key` (grace 0, UID precondition).
    Delete {
        /// Namespace and name.
        key: Key,
        /// The mirror pod's UID.
        uid: String,
        /// Why.
        why: Why,
    },
    /// Create the mirror pod of the static pod with UID `static_uid` (after the preceding
    /// delete of the same key, if any, succeeded).
    Create {
        /// Namespace and name.
        key: Key,
        /// The static pod's UID in the desired set.
        static_uid: String,
    },
}

/// What to do so that every static pod of `desired` has exactly one current mirror pod owned
/// by the Node with UID `node_uid`. Mirror pods whose UID is in `deleted` (deleted by us, the
/// watch not caught up yet) count as absent.
pub fn plan(
    desired: &DesiredPods,
    mirrors: &BTreeMap<Key, MirrorPod>,
    node_uid: &str,
    deleted: &HashSet<String>,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut statics = HashSet::new();
    for (uid, d) in desired.iter().filter(|(_, d)| !d.is_api()) {
        let key = (d.pod_ref.namespace.clone(), d.pod_ref.name.clone());
        statics.insert(key.clone());
        let hash = config_hash(d);
        if let Some(m) = mirrors.get(&key).filter(|m| !deleted.contains(&m.uid)) {
            let why = if m.deleting {
                Why::Deleting
            } else if m.hash != hash {
                Why::Outdated {
                    had: m.hash.clone(),
                }
            } else if m.node_owner_uid.as_deref() != Some(node_uid) {
                Why::WrongOwner
            } else {
                continue;
            };
            out.push(Action::Delete {
                key: key.clone(),
                uid: m.uid.clone(),
                why,
            });
        }
        out.push(Action::Create {
            key,
            static_uid: uid.clone(),
        });
    }
    // The kubelet removes orphaned mirror pods in HandlePodCleanups, only once sources are ready.
    if desired.all_sources_seen {
        for (key, m) in mirrors {
            if !statics.contains(key) && !deleted.contains(&m.uid) {
                out.push(Action::Delete {
                    key: key.clone(),
                    uid: m.uid.clone(),
                    why: Why::Orphan,
                });
            }
        }
    }
    out
}

/// The mirror pod to create for static pod `d` (kubelet CreateMirrorPod): its metadata and
/// spec, the mirror annotation, the first-seen time `seen`, and the Node as controller owner.
/// No UID, resourceVersion or status: the API server assigns them.
pub fn mirror_pod(d: &DesiredPod, node_name: &str, node_uid: &str, seen: &str) -> Pod {
    let mut pod = d.pod.clone();
    let hash = config_hash(d).to_owned();
    let m = &mut pod.metadata;
    m.uid = None;
    m.resource_version = None;
    m.creation_timestamp = None;
    m.managed_fields = None;
    let ann = m.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(MIRROR_ANNOTATION.into(), hash);
    ann.entry(CONFIG_SEEN_ANNOTATION.into())
        .or_insert_with(|| seen.to_owned());
    m.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_owned(),
        uid: node_uid.to_owned(),
        controller: Some(true),
        // NodeRestriction refuses blockOwnerDeletion from a node.
        block_owner_deletion: None,
    }]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_owned());
    }
    pod.status = None;
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::{CONFIG_HASH_ANNOTATION, apply_defaults};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;
    use std::path::Path;
    use std::sync::Arc;

    fn static_pod(name: &str, image: &str) -> Arc<DesiredPod> {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        Arc::new(apply_defaults(pod, Path::new("/m/p.yaml"), "n1"))
    }

    fn desired(pods: &[&Arc<DesiredPod>], all_seen: bool) -> DesiredPods {
        DesiredPods {
            pods: pods
                .iter()
                .map(|p| (p.pod_ref.uid.clone(), Arc::clone(p)))
                .collect(),
            all_sources_seen: all_seen,
        }
    }

    fn mirror_of(d: &DesiredPod, uid: &str) -> (Key, MirrorPod) {
        let key = (d.pod_ref.namespace.clone(), d.pod_ref.name.clone());
        let m = MirrorPod {
            uid: uid.into(),
            hash: config_hash(d).into(),
            deleting: false,
            node_owner_uid: Some("node".into()),
        };
        (key, m)
    }

    #[test]
    fn a_static_pod_without_mirror_gets_one_and_a_current_mirror_is_left_alone() {
        let p = static_pod("web", "busybox");
        let d = desired(&[&p], true);
        let none = HashSet::new();
        let key = ("default".to_string(), "web-n1".to_string());
        assert_eq!(
            plan(&d, &BTreeMap::new(), "node", &none),
            [Action::Create {
                key: key.clone(),
                static_uid: p.pod_ref.uid.clone()
            }]
        );
        let mirrors: BTreeMap<_, _> = [mirror_of(&p, "m1")].into();
        assert!(plan(&d, &mirrors, "node", &none).is_empty(), "idempotent");
    }

    #[test]
    fn deleting_outdated_and_foreign_owned_mirrors_are_replaced() {
        let p = static_pod("web", "busybox");
        let d = desired(&[&p], true);
        let none = HashSet::new();
        let (key, base) = mirror_of(&p, "m1");
        let cases = [
            (
                MirrorPod {
                    deleting: true,
                    ..base.clone()
                },
                Why::Deleting,
            ),
            (
                MirrorPod {
                    hash: "old".into(),
                    ..base.clone()
                },
                Why::Outdated { had: "old".into() },
            ),
            (
                MirrorPod {
                    node_owner_uid: Some("old-node".into()),
                    ..base.clone()
                },
                Why::WrongOwner,
            ),
            (
                MirrorPod {
                    node_owner_uid: None,
                    ..base.clone()
                },
                Why::WrongOwner,
            ),
        ];
        for (m, why) in cases {
            let mirrors: BTreeMap<_, _> = [(key.clone(), m)].into();
            assert_eq!(
                plan(&d, &mirrors, "node", &none),
                [
                    Action::Delete {
                        key: key.clone(),
                        uid: "m1".into(),
                        why
                    },
                    Action::Create {
                        key: key.clone(),
                        static_uid: p.pod_ref.uid.clone()
                    }
                ]
            );
        }
    }

    #[test]
    fn orphans_are_deleted_only_once_every_source_has_spoken() {
        let gone = static_pod("gone", "busybox");
        let mirrors: BTreeMap<_, _> = [mirror_of(&gone, "m9")].into();
        let none = HashSet::new();
        assert!(plan(&desired(&[], false), &mirrors, "node", &none).is_empty());
        assert_eq!(
            plan(&desired(&[], true), &mirrors, "node", &none),
            [Action::Delete {
                key: ("default".into(), "gone-n1".into()),
                uid: "m9".into(),
                why: Why::Orphan
            }]
        );
        let deleted: HashSet<String> = ["m9".to_string()].into();
        assert!(
            plan(&desired(&[], true), &mirrors, "node", &deleted).is_empty(),
            "a delete already made is not repeated"
        );
    }

    #[test]
    fn api_pods_get_no_mirror() {
        let mut api = (*static_pod("api", "busybox")).clone();
        api.source = crate::pod::PodSource::Api;
        let d = desired(&[&Arc::new(api)], true);
        assert!(plan(&d, &BTreeMap::new(), "node", &HashSet::new()).is_empty());
    }

    #[test]
    fn the_mirror_copies_the_static_pod_and_is_owned_by_the_node() {
        let p = static_pod("web", "busybox");
        let m = mirror_pod(&p, "n1", "node-uid", "2026-01-01T00:00:00Z");
        let ann = m.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(ann.get(MIRROR_ANNOTATION), Some(&p.pod_ref.uid));
        assert_eq!(ann.get(CONFIG_HASH_ANNOTATION), Some(&p.pod_ref.uid));
        assert_eq!(
            ann.get(CONFIG_SEEN_ANNOTATION).map(String::as_str),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            ann.get("kubernetes.io/config.source").map(String::as_str),
            Some("file")
        );
        assert_eq!(m.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(m.metadata.uid, None, "the API server assigns the UID");
        let owners = m.metadata.owner_references.as_ref().expect("owner");
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            ("v1", "Node", "n1", "node-uid")
        );
        assert_eq!(o.controller, Some(true));
        assert_eq!(m.spec, p.pod.spec, "the spec is the static pod's");
        assert!(m.status.is_none());
    }
}
