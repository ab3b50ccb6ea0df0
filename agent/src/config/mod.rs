//! Pod configuration sources (kubelet pkg/kubelet/config): where desired pods come from.
//! The static pod file source and, in cluster mode, the API server source; [`mux`] merges
//! them into the one desired set the status manager and the pod workers read.

pub mod apiserver;
pub mod file;
pub mod manifest;
#[cfg(test)]
mod manifest_props;
pub mod mux;
pub mod throttle;

use crate::pod::PodHandle;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One source's pods, keyed by UID.
pub type SourceSet = Arc<BTreeMap<String, PodHandle>>;

/// The merged desired set, cheap to clone.
pub type PodSet = Arc<DesiredPods>;

/// All pods of all sources, keyed by UID, and whether every source has spoken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredPods {
    /// Pods by UID.
    pub pods: BTreeMap<String, PodHandle>,
    /// Every configured source has delivered its first full set (the kubelet's
    /// SourcesReady): only then may what runs but is wanted by no source be removed.
    pub all_sources_seen: bool,
}

impl std::ops::Deref for DesiredPods {
    type Target = BTreeMap<String, PodHandle>;

    fn deref(&self) -> &Self::Target {
        &self.pods
    }
}
