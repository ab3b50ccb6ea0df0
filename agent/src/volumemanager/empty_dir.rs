//! emptyDir volumes (kubelet pkg/volume/emptydir): `<root>/pods/<uid>/volumes/
//! kubernetes.io~empty-dir/<name>`, a directory of mode 0777 on the node's disk, or for
//! `medium: Memory` a tmpfs mounted there (its root 1777, tmpfs's default) sized by
//! calculateEmptyDirMemorySize: the smallest of node allocatable memory, the pod's memory limit
//! and the volume's `sizeLimit`. The pod's fsGroup is applied as the volume is set up; a ready
//! file under `<root>/pods/<uid>/plugins/kubernetes.io~empty-dir/<name>/ready` makes later
//! syncs skip it. A disk emptyDir's `sizeLimit` is enforced by eviction, not here.

use super::ownership::{self, FsGroup};
use super::tmpfs;
use crate::pod::quantity;
use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, Pod, Volume};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tracing::warn;

/// The plugin's directory name under a pod's `volumes` and `plugins` directories.
pub const PLUGIN_DIR: &str = "kubernetes.io~empty-dir";
const PERM: u32 = 0o777;

/// Why an emptyDir could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct SetUpError {
    /// What was being done.
    pub op: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// Where a pod's emptyDir volume lives on the host.
pub fn volume_dir(root_dir: &Path, pod_uid: &str, name: &str) -> PathBuf {
    root_dir
        .join("pods")
        .join(pod_uid)
        .join("volumes")
        .join(PLUGIN_DIR)
        .join(name)
}

fn ready_file(root_dir: &Path, pod_uid: &str, name: &str) -> PathBuf {
    root_dir
        .join("pods")
        .join(pod_uid)
        .join("plugins")
        .join(PLUGIN_DIR)
        .join(name)
        .join("ready")
}

/// Whether the volume is memory-backed.
pub fn is_memory(s: &EmptyDirVolumeSource) -> bool {
    s.medium.as_deref() == Some("Memory")
}

/// calculateEmptyDirMemorySize: node allocatable memory, lowered to the pod's memory limit and
/// then to `sizeLimit` when those are positive and smaller.
pub fn memory_size(pod: &Pod, s: &EmptyDirVolumeSource, node_memory: i64) -> i64 {
    let mut size = node_memory;
    if let Some(l) = pod_memory_limit(pod).filter(|l| *l > 0 && *l <= size) {
        size = l;
    }
    if let Some(l) = s
        .size_limit
        .as_ref()
        .and_then(|q| quantity::parse(&q.0, false))
        .filter(|l| *l > 0 && *l <= size)
    {
        size = l;
    }
    size
}

fn memory_limit(c: &Container) -> Option<i64> {
    c.resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .and_then(|q| quantity::parse(&q.0, false))
}

/// The pod cgroup's memory limit as ResourceConfigForPod computes it: pod-level
/// `resources.limits.memory`, else the sum over containers (sidecars included) or the largest
/// init container's, whichever is larger; none if a container has no limit.
pub fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    if let Some(l) = spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(|q| quantity::parse(&q.0, false))
    {
        return Some(l);
    }
    let mut sum = 0i64;
    for c in &spec.containers {
        sum = sum.saturating_add(memory_limit(c)?);
    }
    // Sidecars (restartPolicy Always) run beside the containers and every later init
    // container; plain init containers run alone after the sidecars before them.
    let mut sidecars = 0i64;
    let mut init_max = 0i64;
    for c in spec.init_containers.iter().flatten() {
        let l = memory_limit(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.saturating_add(l);
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(sidecars.saturating_add(l));
        }
    }
    Some(sum.saturating_add(sidecars).max(init_max))
}

/// SetUpAt for one emptyDir of `pod` (idempotent): the directory, the tmpfs for Memory,
/// the fsGroup, then the ready file.
pub fn set_up(
    root_dir: &Path,
    pod: &Pod,
    pod_uid: &str,
    v: &Volume,
    node_memory: i64,
) -> Result<(), SetUpError> {
    let Some(s) = v.empty_dir.as_ref() else {
        return Ok(());
    };
    let dir = volume_dir(root_dir, pod_uid, &v.name);
    let ready = ready_file(root_dir, pod_uid, &v.name);
    let err = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SetUpError { op, path, source }
    };
    let memory = is_memory(s);
    if ready.exists() {
        let done = if memory {
            tmpfs::is_mount_point(&dir).unwrap_or(false)
        } else {
            dir.is_dir()
        };
        if done {
            return Ok(());
        }
    }
    // setupDir: 0777 whatever the agent's umask.
    std::fs::create_dir_all(&dir).map_err(err("creating directory", &dir))?;
    let meta = std::fs::symlink_metadata(&dir).map_err(err("stat", &dir))?;
    if meta.mode() & 0o777 != PERM {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(PERM))
            .map_err(err("chmod", &dir))?;
    }
    if memory && !tmpfs::is_mount_point(&dir).map_err(err("stat", &dir))? {
        let size = memory_size(pod, s, node_memory);
        let options = if size > 0 {
            format!("size={size}")
        } else {
            String::new()
        };
        // No nosuid/nodev: the kubelet mounts an emptyDir's tmpfs with only its size.
        tmpfs::mount(&dir, &options, 0).map_err(err("mounting tmpfs on", &dir))?;
    }
    // The kubelet ignores the ownership change's result here (per-file failures are logged).
    if let Some(g) = FsGroup::of(pod)
        && let Err(e) = ownership::apply(&dir, g, false)
    {
        warn!(dir = %dir.display(), error = %e, "cannot apply fsGroup to emptyDir");
    }
    if let Some(parent) = ready.parent() {
        std::fs::create_dir_all(parent).map_err(err("creating directory", parent))?;
    }
    std::fs::write(&ready, b"").map_err(err("writing", &ready))?;
    Ok(())
}

/// TearDownAt for every emptyDir of a pod: unmount the tmpfs ones, remove the directories.
pub fn tear_down_all(root_dir: &Path, pod_uid: &str) {
    let base = root_dir
        .join("pods")
        .join(pod_uid)
        .join("volumes")
        .join(PLUGIN_DIR);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    for vol in entries.flatten().map(|e| e.path()) {
        if let Err(e) = tmpfs::unmount(&vol) {
            warn!(dir = %vol.display(), error = %e, "cannot unmount emptyDir tmpfs");
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(&vol)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(dir = %vol.display(), error = %e, "cannot remove emptyDir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn limited(name: &str, mem: Option<&str>, restart: Option<&str>) -> Container {
        Container {
            name: name.into(),
            restart_policy: restart.map(Into::into),
            resources: mem.map(|m| ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".to_string(), Quantity(m.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, inits: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(inits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_size_is_the_smallest_positive_bound() {
        let node = 8 << 30;
        let src = |l: Option<&str>| EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: l.map(|l| Quantity(l.into())),
            ..Default::default()
        };
        let p = pod(
            vec![
                limited("a", Some("1Gi"), None),
                limited("b", Some("1Gi"), None),
            ],
            vec![],
        );
        assert_eq!(memory_size(&p, &src(None), node), 2 << 30);
        assert_eq!(memory_size(&p, &src(Some("10Mi")), node), 10 << 20);
        assert_eq!(
            memory_size(&p, &src(Some("4Gi")), node),
            2 << 30,
            "sizeLimit above the pod limit is ignored"
        );
        let unlimited = pod(vec![limited("a", None, None)], vec![]);
        assert_eq!(memory_size(&unlimited, &src(None), node), node);
        assert_eq!(memory_size(&unlimited, &src(Some("0")), node), node);
    }

    #[test]
    fn pod_limit_counts_sidecars_and_the_largest_init() {
        let p = pod(
            vec![limited("a", Some("100Mi"), None)],
            vec![
                limited("side", Some("50Mi"), Some("Always")),
                limited("big", Some("500Mi"), None),
            ],
        );
        assert_eq!(pod_memory_limit(&p), Some(550 << 20));
        let p = pod(
            vec![limited("a", Some("100Mi"), None)],
            vec![limited("side", None, Some("Always"))],
        );
        assert_eq!(pod_memory_limit(&p), None);
    }

    #[test]
    fn disk_volume_is_0777_and_ready_once() {
        let t = tempfile::tempdir().expect("tempdir");
        let v = Volume {
            name: "v".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        };
        let p = pod(vec![], vec![]);
        set_up(t.path(), &p, "u", &v, 1 << 30).expect("set up");
        let dir = volume_dir(t.path(), "u", "v");
        assert_eq!(
            std::fs::metadata(&dir).expect("stat").mode() & 0o7777,
            0o777
        );
        assert!(ready_file(t.path(), "u", "v").exists());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        set_up(t.path(), &p, "u", &v, 1 << 30).expect("again");
        assert_eq!(
            std::fs::metadata(&dir).expect("stat").mode() & 0o7777,
            0o700,
            "a ready volume is left as the pod made it"
        );
        tear_down_all(t.path(), "u");
        assert!(!dir.exists());
    }
}
