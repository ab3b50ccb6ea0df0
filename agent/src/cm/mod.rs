//! Container manager: pod cgroup naming under the QoS tiers, and removal of a pod's cgroup once
//! its sandbox is gone (kubelet pkg/kubelet/cm: pod_container_manager_linux.go,
//! cgroup_manager_linux.go). The runtime creates container cgroups below the parent we name, but
//! never removes the pod-level cgroup: the agent must (see ../shared/NOTES.md). [`node`] creates
//! and limits `kubepods` and its QoS children (node allocatable).

pub mod node;
pub mod path;

use crate::instrument::{DEF_BUCKETS, HistogramVec};
use crate::options::{CgroupDriver, Options};
use crate::pod::QosClass;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, warn};

/// Names pod cgroups and cleans them up for one node configuration.
#[derive(Debug, Clone)]
pub struct ContainerManager {
    driver: CgroupDriver,
    root: String,
    per_qos: bool,
    /// Durations of cgroup operations by `create`, `update`, `destroy`, as the kubelet's
    /// cgroup manager records them (kubelet_cgroup_manager_duration_seconds; clones share it).
    ops: Arc<HistogramVec>,
}

impl ContainerManager {
    /// From resolved options.
    pub fn new(o: &Options) -> Self {
        Self {
            driver: o.cgroup_driver,
            root: o.cgroup_root.clone(),
            per_qos: o.cgroups_per_qos,
            ops: Arc::new(HistogramVec::new(DEF_BUCKETS)),
        }
    }

    /// The cgroup operation durations, for `/metrics`.
    pub fn op_stats(&self) -> Arc<HistogramVec> {
        self.ops.clone()
    }

    /// Components of a pod's cgroup name: `[kubepods, burstable, pod<uid>]` (Guaranteed pods sit
    /// directly under kubepods).
    fn name_parts(&self, uid: &str, qos: QosClass) -> Vec<String> {
        let mut parts = Vec::new();
        if self.per_qos {
            parts.push("kubepods".to_string());
            match qos {
                QosClass::Guaranteed => {}
                QosClass::Burstable => parts.push("burstable".into()),
                QosClass::BestEffort => parts.push("besteffort".into()),
            }
        }
        parts.push(format!("pod{uid}"));
        parts
    }

    /// The subtree every pod cgroup lives in, relative to the hierarchy root: the node
    /// allocatable cgroup `<cgroupRoot>/kubepods` (`/kubepods.slice` with systemd), or the
    /// cgroup root itself without per-QoS cgroups.
    pub fn pods_root(&self) -> String {
        let root = self.root.trim_end_matches('/');
        match (self.driver, self.per_qos) {
            (CgroupDriver::Cgroupfs, true) => format!("{root}/kubepods"),
            (CgroupDriver::Systemd, true) => "/kubepods.slice".to_owned(),
            (_, false) if root.is_empty() => "/".to_owned(),
            (_, false) => root.to_owned(),
        }
    }

    /// The sandbox's `cgroup_parent` for the runtime.
    pub fn pod_cgroup_parent(&self, uid: &str, qos: QosClass) -> String {
        let parts = self.name_parts(uid, qos);
        match self.driver {
            CgroupDriver::Cgroupfs => {
                let root = self.root.trim_end_matches('/');
                format!("{root}/{}", parts.join("/"))
            }
            CgroupDriver::Systemd => {
                // systemd slices nest by name: kubepods.slice/kubepods-burstable.slice/…
                // (cgroup_manager_linux.go ToSystemd); '-' in a UID would read as nesting.
                let mut path = String::new();
                let mut prefix = String::new();
                for p in parts {
                    let p = p.replace('-', "_");
                    prefix = if prefix.is_empty() {
                        p
                    } else {
                        format!("{prefix}-{p}")
                    };
                    path.push('/');
                    path.push_str(&prefix);
                    path.push_str(".slice");
                }
                path
            }
        }
    }

    /// Removes the pod's cgroup from every mounted hierarchy (v1 controllers and cgroup2).
    /// A hierarchy where it is already gone is fine; one still busy is logged and left.
    pub fn remove_pod_cgroup(&self, uid: &str, qos: QosClass) {
        if self.driver == CgroupDriver::Systemd {
            debug!(
                uid,
                "systemd cgroup driver: the runtime's systemd removes pod slices"
            );
            return;
        }
        let start = Instant::now();
        let rel = self.pod_cgroup_parent(uid, qos);
        let mut existed = false;
        for mount in cgroup_mounts() {
            let dir = mount.join(rel.trim_start_matches('/'));
            match std::fs::remove_dir(&dir) {
                Ok(()) => {
                    existed = true;
                    debug!(dir = %dir.display(), "removed pod cgroup");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    existed = true;
                    warn!(dir = %dir.display(), error = %e, "cannot remove pod cgroup");
                }
            }
        }
        // Callers try every QoS tier; only the tier the pod was in counts as a Destroy.
        if existed {
            self.ops.observe("destroy", start.elapsed());
        }
    }
}

/// One cgroup mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Mount point (mountinfo's `\ooo` escapes undone).
    pub mount: PathBuf,
    /// cgroup2 (true) or a v1 hierarchy.
    pub v2: bool,
    /// Super options (`rw,cpu,cpuacct` for v1: the controllers are among them).
    pub super_opts: String,
}

/// The cgroup mounts in the text of `/proc/self/mountinfo`, in order: the one parser of that
/// file (the cgroupfs stats layout and pod cgroup removal both use it).
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        let (Some(mount), Some(fstype)) = (left.split_whitespace().nth(4), right.next()) else {
            continue;
        };
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            mount: PathBuf::from(unescape_mount(mount)),
            v2,
            super_opts: right.nth(1).unwrap_or_default().to_owned(),
        });
    }
    out
}

/// mountinfo escapes spaces and a few others as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of cgroup v1 hierarchies and cgroup2, from /proc/self/mountinfo.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = parse_cgroup_mounts(&info)
        .into_iter()
        .map(|m| m.mount)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(driver: CgroupDriver, per_qos: bool) -> ContainerManager {
        ContainerManager {
            driver,
            root: "/".into(),
            per_qos,
            ops: Arc::new(HistogramVec::new(DEF_BUCKETS)),
        }
    }

    #[test]
    fn cgroupfs_names_follow_qos() {
        let c = cm(CgroupDriver::Cgroupfs, true);
        assert_eq!(
            c.pod_cgroup_parent("u1", QosClass::Guaranteed),
            "/kubepods/podu1"
        );
        assert_eq!(
            c.pod_cgroup_parent("u1", QosClass::Burstable),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            c.pod_cgroup_parent("u1", QosClass::BestEffort),
            "/kubepods/besteffort/podu1"
        );
        assert_eq!(
            cm(CgroupDriver::Cgroupfs, false).pod_cgroup_parent("u1", QosClass::BestEffort),
            "/podu1"
        );
    }

    #[test]
    fn systemd_names_nest_slices() {
        let c = cm(CgroupDriver::Systemd, true);
        assert_eq!(
            c.pod_cgroup_parent("a-b", QosClass::Burstable),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice"
        );
    }

    #[test]
    fn mount_lines_parse_with_escapes_and_fstypes() {
        let info = "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n\
                    37 25 0:32 / /sys/fs/cgroup/un\\040ified rw - cgroup2 cgroup2 rw\n\
                    38 25 0:33 / /proc rw - proc proc rw\n";
        let m = parse_cgroup_mounts(info);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert!(!m[0].v2);
        assert_eq!(m[0].super_opts, "rw,cpu");
        assert_eq!(m[1].mount, PathBuf::from("/sys/fs/cgroup/un ified"));
        assert!(m[1].v2);
    }

    #[test]
    fn finds_cgroup_mounts() {
        // Every Linux host we run on has at least one cgroup mount.
        assert!(!cgroup_mounts().is_empty());
    }
}
