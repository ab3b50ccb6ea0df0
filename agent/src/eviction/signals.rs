//! Reading the signals (makeSignalObservations): memory from the root and pods cgroups, read
//! at the moment of the decision (two cgroup files each, ~25 us) rather than from the last
//! stats sweep; filesystems with statvfs; pids from the kernel's task limit and sysinfo.
//! Pod usage for ranking comes from the pod and container cgroups the stats view names.

use super::helpers::{Observation, Observations, PodUsage};
use crate::options::eviction::Signal;
use crate::stats::cgroupfs::{self, CgroupLayout};
use crate::stats::pods::PodStatsView;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where the signals are read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The cgroup mounts.
    pub layout: CgroupLayout,
    /// Machine memory capacity, bytes (MemTotal).
    pub memory_capacity: i64,
    /// The pods cgroup (`<cgroupRoot>/kubepods`), relative to the hierarchy root.
    pub pods_root: String,
    /// The kubelet's root directory: its filesystem is nodefs.
    pub root_dir: PathBuf,
}

/// memory.available and allocatableMemory.available. The node's working set is the root
/// memcg's usage minus inactive file pages, as cAdvisor computes it; allocatable is observed
/// only when the pods cgroup has a limit (node allocatable enforced), as in the kubelet.
pub fn observe_memory(s: &Sources, obs: &mut Observations) {
    let time = SystemTime::now();
    if s.memory_capacity > 0
        && let Ok(Some(root)) = cgroupfs::read_memory(&s.layout, "/")
    {
        let ws = i64::try_from(root.working_set_bytes).unwrap_or(i64::MAX);
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: s.memory_capacity - ws,
                capacity: s.memory_capacity,
                time,
            },
        );
    }
    if let Ok(Some(pods)) = cgroupfs::read_memory(&s.layout, &s.pods_root)
        && let Some(limit) = pods.limit_bytes
    {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ws = i64::try_from(pods.working_set_bytes).unwrap_or(i64::MAX);
        obs.insert(
            Signal::AllocatableMemoryAvailable,
            Observation {
                available: limit - ws,
                capacity: limit,
                time,
            },
        );
    }
}

/// statvfs of `path` (kept in `kuberuntime::gc`, which the image GC shares).
pub use crate::kuberuntime::gc::statvfs;

/// nodefs.available and nodefs.inodesFree from the root directory's filesystem (imagefs is
/// [`observe_image_fs`], once the runtime has named its mount point).
pub fn observe_fs(s: &Sources, obs: &mut Observations) {
    let time = SystemTime::now();
    if let Ok((avail, cap, ifree, inodes)) = statvfs(&s.root_dir) {
        obs.insert(
            Signal::NodeFsAvailable,
            Observation {
                available: avail,
                capacity: cap,
                time,
            },
        );
        obs.insert(
            Signal::NodeFsInodesFree,
            Observation {
                available: ifree,
                capacity: inodes,
                time,
            },
        );
    }
}

/// imagefs.available and imagefs.inodesFree from the image filesystem's mount point (the
/// same numbers as nodefs when they share a filesystem, as in the kubelet).
pub fn observe_image_fs(mount: &Path, obs: &mut Observations) {
    let time = SystemTime::now();
    if let Ok((avail, cap, ifree, inodes)) = statvfs(mount) {
        obs.insert(
            Signal::ImageFsAvailable,
            Observation {
                available: avail,
                capacity: cap,
                time,
            },
        );
        obs.insert(
            Signal::ImageFsInodesFree,
            Observation {
                available: ifree,
                capacity: inodes,
                time,
            },
        );
    }
}

/// pid.available: min(pid_max, threads-max) minus the processes sysinfo counts (the kubelet's
/// rlimit stats).
pub fn observe_pids(obs: &mut Observations) {
    let read = |f: &str| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
    };
    let Some(max) = [
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ]
    .into_iter()
    .flatten()
    .min() else {
        return;
    };
    // SAFETY: sysinfo(2) fills the zeroed struct we own.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return;
    }
    obs.insert(
        Signal::PidAvailable,
        Observation {
            available: max - i64::from(info.procs),
            capacity: max,
            time: SystemTime::now(),
        },
    );
}

/// Each pod's usage now, by UID: the pod cgroup's working set and task count, and each
/// container's working set, read fresh from the cgroups the stats view maps to the pod.
pub fn pod_usage(s: &Sources, view: &PodStatsView) -> HashMap<String, PodUsage> {
    let mut out: HashMap<String, PodUsage> = HashMap::new();
    for p in view.pod_totals() {
        let Ok(Some(m)) = cgroupfs::read_memory(&s.layout, &p.cgroup) else {
            continue;
        };
        out.insert(
            p.pod.uid.clone(),
            PodUsage {
                memory_working_set: i64::try_from(m.working_set_bytes).unwrap_or(i64::MAX),
                processes: tasks(&s.layout, &p.cgroup),
                containers: Vec::new(),
            },
        );
    }
    for c in view.containers() {
        let Some(u) = out.get_mut(&c.pod.uid) else {
            continue;
        };
        if let Ok(Some(m)) = cgroupfs::read_memory(&s.layout, &c.cgroup) {
            let ws = i64::try_from(m.working_set_bytes).unwrap_or(i64::MAX);
            u.containers.push((c.container.clone(), ws));
        }
    }
    out
}

/// Tasks in a cgroup (`pids.current`), 0 when the pids controller is not mounted.
fn tasks(layout: &CgroupLayout, cgroup: &str) -> i64 {
    let Some(m) = layout.controller("pids") else {
        return 0;
    };
    std::fs::read_to_string(cgroupfs::cgroup_dir(&m.mount, cgroup).join("pids.current"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_machine_has_memory_fs_and_pid_observations() {
        let s = Sources {
            layout: CgroupLayout::detect().expect("cgroup layout"),
            memory_capacity: 1 << 40,
            pods_root: "/no-such-pods-root".into(),
            root_dir: std::env::temp_dir(),
        };
        let mut obs = Observations::new();
        observe_memory(&s, &mut obs);
        observe_fs(&s, &mut obs);
        observe_pids(&mut obs);
        let mem = obs[&Signal::MemoryAvailable];
        assert!(mem.available > 0 && mem.available < mem.capacity, "{mem:?}");
        assert!(
            !obs.contains_key(&Signal::AllocatableMemoryAvailable),
            "no pods cgroup, no allocatable observation"
        );
        let fs = obs[&Signal::NodeFsAvailable];
        assert!(fs.available <= fs.capacity && fs.capacity > 0, "{fs:?}");
        let pid = obs[&Signal::PidAvailable];
        assert!(pid.available > 0 && pid.available < pid.capacity, "{pid:?}");
    }
}
