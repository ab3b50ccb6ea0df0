//! The volume manager's metrics with the kubelet's names: `storage_operation_duration_seconds`
//! {volume_plugin, operation_name, status, migrated} (pkg/volume/util/metrics.go, one
//! observation per volume set-up or tear-down) and `volume_manager_total_volumes`
//! {plugin_name, state} (pkg/kubelet/volumemanager/metrics: volumes of the desired and actual
//! states of the world, counted at scrape time). Kept apart from the set-up code so it stays a
//! few calls there; `metrics/` reads them.

use super::{Plugin, VolumeManager};
use crate::instrument::{Histogram, HistogramRead};
use crate::pod::DesiredPod;
use k8s_openapi::api::core::v1::Volume;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// StorageOperationMetric's buckets (seconds).
const BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 25.0, 50.0, 120.0, 300.0, 600.0,
];

/// The kubelet's `operation_name` for a volume set-up (MountVolume.SetUp).
pub const MOUNT: &str = "volume_mount";

/// (volume_plugin, operation_name, status).
type OpKey = (&'static str, &'static str, &'static str);

/// Operation durations and the per-pod world sizes; shared by every clone of the manager.
#[derive(Debug, Default)]
pub struct VolumeMetrics {
    operations: Mutex<BTreeMap<OpKey, Arc<Histogram>>>,
    /// Pod UID -> (plugin name, set up) for each volume of the pod's spec.
    worlds: Mutex<HashMap<String, Vec<(&'static str, bool)>>>,
}

/// The kubelet's plugin name of a volume (`N/A` for kinds nodelet has no plugin for).
pub fn plugin_name(v: &Volume) -> &'static str {
    match Plugin::of(v) {
        Some(Plugin::ConfigMap) => "kubernetes.io/configmap",
        Some(Plugin::Secret) => "kubernetes.io/secret",
        Some(Plugin::Projected) => "kubernetes.io/projected",
        Some(Plugin::DownwardApi) => "kubernetes.io/downward-api",
        None if v.empty_dir.is_some() => "kubernetes.io/empty-dir",
        None if v.host_path.is_some() => "kubernetes.io/host-path",
        None => "N/A",
    }
}

impl VolumeMetrics {
    /// Records one operation; `ok` picks the kubelet's `success` or `fail-unknown`.
    pub fn observe(&self, plugin: &'static str, operation: &'static str, ok: bool, d: Duration) {
        let status = if ok { "success" } else { "fail-unknown" };
        let h = self
            .operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((plugin, operation, status))
            .or_insert_with(|| Arc::new(Histogram::new(BUCKETS)))
            .clone();
        h.observe(d);
    }

    /// Every (plugin, operation, status) histogram, in label order.
    pub fn operations(&self) -> Vec<(OpKey, HistogramRead)> {
        let all: Vec<_> = self
            .operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        all.into_iter().map(|(k, h)| (k, h.read())).collect()
    }

    /// Volumes per (state, plugin): `desired_state_of_world` counts every volume of every
    /// pod being set up, `actual_state_of_world` those set up.
    pub fn totals(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        for vols in self
            .worlds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            for (plugin, set_up) in vols {
                *out.entry(("desired_state_of_world", *plugin)).or_default() += 1;
                if *set_up {
                    *out.entry(("actual_state_of_world", *plugin)).or_default() += 1;
                }
            }
        }
        out
    }

    fn set_pod(&self, uid: &str, vols: Vec<(&'static str, bool)>) {
        self.worlds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned(), vols);
    }

    fn forget_pod(&self, uid: &str) {
        self.worlds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

impl VolumeManager {
    /// The manager's metrics, for `/metrics`.
    pub fn metrics(&self) -> Arc<VolumeMetrics> {
        self.metrics.clone()
    }

    /// After a prepare: the pod's volumes in the desired world, and in the actual world those
    /// whose directory is there (API-backed ones once written; emptyDir and hostPath once the
    /// runtime manager has made them for a container).
    pub(super) fn record_worlds(&self, p: &DesiredPod) {
        let vols = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .map(|v| {
                let dir = if let Some(hp) = &v.host_path {
                    Some(std::path::PathBuf::from(&hp.path))
                } else if v.empty_dir.is_some() {
                    Some(
                        self.pod_volumes_dir(&p.pod_ref.uid)
                            .join("kubernetes.io~empty-dir")
                            .join(&v.name),
                    )
                } else {
                    self.host_path(&p.pod_ref.uid, v)
                };
                (plugin_name(v), dir.is_some_and(|d| d.exists()))
            })
            .collect();
        self.metrics.set_pod(&p.pod_ref.uid, vols);
    }

    /// The pod is gone from both worlds.
    pub(super) fn forget_worlds(&self, uid: &str) {
        self.metrics.forget_pod(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_count_desired_and_set_up_volumes_per_plugin() {
        let m = VolumeMetrics::default();
        m.set_pod(
            "a",
            vec![
                ("kubernetes.io/empty-dir", true),
                ("kubernetes.io/configmap", false),
            ],
        );
        m.set_pod("b", vec![("kubernetes.io/empty-dir", false)]);
        let t = m.totals();
        assert_eq!(t[&("desired_state_of_world", "kubernetes.io/empty-dir")], 2);
        assert_eq!(t[&("actual_state_of_world", "kubernetes.io/empty-dir")], 1);
        assert_eq!(t[&("desired_state_of_world", "kubernetes.io/configmap")], 1);
        assert!(!t.contains_key(&("actual_state_of_world", "kubernetes.io/configmap")));
        m.forget_pod("a");
        m.forget_pod("b");
        assert!(m.totals().is_empty());
        m.observe(
            "kubernetes.io/secret",
            MOUNT,
            false,
            Duration::from_millis(3),
        );
        let ops = m.operations();
        assert_eq!(
            ops[0].0,
            ("kubernetes.io/secret", "volume_mount", "fail-unknown")
        );
        assert_eq!(ops[0].1.count, 1);
    }
}
