//! Which ConfigMaps and Secrets a pod references, through its volumes and its containers' env:
//! the only objects the node asks the API server for (the node authorizer allows no others).

use super::objects::{Kind, ObjKey};
use crate::pod::DesiredPod;
use k8s_openapi::api::core::v1::{Container, Volume};
use std::collections::HashSet;

/// The ConfigMaps and Secrets a volume references.
pub(super) fn volume_refs(ns: &str, v: &Volume) -> Vec<ObjKey> {
    let key = |kind, name: &str| ObjKey {
        kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    let mut out = Vec::new();
    if let Some(s) = v.config_map.as_ref() {
        out.push(key(Kind::ConfigMap, &s.name));
    }
    if let Some(s) = v.secret.as_ref()
        && let Some(n) = s.secret_name.as_deref()
    {
        out.push(key(Kind::Secret, n));
    }
    for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
        if let Some(s) = src.config_map.as_ref() {
            out.push(key(Kind::ConfigMap, &s.name));
        }
        if let Some(s) = src.secret.as_ref() {
            out.push(key(Kind::Secret, &s.name));
        }
    }
    out
}

/// The ConfigMaps and Secrets the containers' env and envFrom reference.
pub(super) fn env_refs(p: &DesiredPod) -> HashSet<ObjKey> {
    let ns = &p.pod_ref.namespace;
    let key = |kind, name: &str| ObjKey {
        kind,
        namespace: ns.clone(),
        name: name.to_owned(),
    };
    let mut out = HashSet::new();
    let containers: Vec<&Container> = p
        .pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .collect();
    for c in containers {
        for e in c.env_from.iter().flatten() {
            if let Some(r) = e.config_map_ref.as_ref() {
                out.insert(key(Kind::ConfigMap, &r.name));
            }
            if let Some(r) = e.secret_ref.as_ref() {
                out.insert(key(Kind::Secret, &r.name));
            }
        }
        for v in c.env.iter().flatten() {
            let Some(from) = v.value_from.as_ref() else {
                continue;
            };
            if let Some(r) = from.config_map_key_ref.as_ref() {
                out.insert(key(Kind::ConfigMap, &r.name));
            }
            if let Some(r) = from.secret_key_ref.as_ref() {
                out.insert(key(Kind::Secret, &r.name));
            }
        }
    }
    out
}
