//! Filesystem use per pod and container, and block I/O per cgroup, measured on a slow timer
//! and published whole: one writer task, cheap read-only [`FsUsageReader`] clones.
//!
//! - Container rootfs: CRI `ListContainerStats` `writable_layer` (containerd measures its
//!   snapshots itself every 10 s; we never walk a layer).
//! - Logs: the files of `<podLogsDir>/<ns>_<name>_<uid>/<container>/` per container, and the
//!   files directly in the pod's log directory (kubelet host_stats_provider.go).
//! - Volumes: every emptyDir, configMap, secret, projected and downwardAPI volume under
//!   `<rootDir>/pods/<uid>/volumes/`, walked by [`walk::walk`] (lstat, no symlink followed,
//!   one filesystem, at most [`walk::MAX_ENTRIES`] entries per volume).
//! - Block I/O: [`blkio`] files of every pod and container cgroup the pod view knows.
//!
//! Timers: block I/O and the CRI call every [`IO_EVERY`] (10 s: containerd's own snapshot
//! usage period and the details sweep's, so I/O rates line up with the other cAdvisor
//! families); the directory walks every [`WALK_EVERY`] (30 s: half the kubelet's
//! volumeStatsAggPeriod and cAdvisor's du period of ~1 min, so disk-pressure eviction sees a
//! filling emptyDir within 30 s, while a walk of 1000 files costs ~2 ms of CPU; see README).
//! Scrapes and the Summary API only clone the published `Arc`. Like the details sweep, the
//! passes keep their timers only while the Summary API or /metrics/cadvisor is read
//! ([`super::on_demand`]).

pub mod blkio;
pub mod merge;
pub mod walk;

use crate::kuberuntime::client::Cri;
use crate::stats::cgroupfs::{CgroupLayout, cgroup_dir};
use crate::stats::on_demand::{self, Demand};
use crate::stats::pods::PodStatsView;
use crate::stats::pods::provider::fs_stats;
use crate::stats::summary::{RuntimeFsUsage, VolumeStats};
use blkio::DeviceIo;
use proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use walk::DirUsage;

/// How often block I/O and the writable layers are read.
pub const IO_EVERY: Duration = Duration::from_secs(10);
/// How often log and volume directories are walked.
pub const WALK_EVERY: Duration = Duration::from_secs(30);

/// The volume plugin directories this task measures, and whether the kubelet counts the
/// volume as local ephemeral storage (pkg/volume/util IsLocalEphemeralVolume: emptyDir on
/// disk and configMap; secret, projected and downwardAPI are memory-backed there).
const PLUGINS: [(&str, bool); 5] = [
    ("kubernetes.io~empty-dir", true),
    ("kubernetes.io~configmap", true),
    ("kubernetes.io~secret", false),
    ("kubernetes.io~projected", false),
    ("kubernetes.io~downward-api", false),
];

/// One volume's measurement.
#[derive(Debug, Clone, Default)]
pub struct VolumeUse {
    /// Name and numbers as the Summary shows them.
    pub stats: VolumeStats,
    /// Counted in the pod's ephemeral storage (and by eviction).
    pub local_ephemeral: bool,
}

/// What the walks found for one pod.
#[derive(Debug, Clone, Default)]
pub struct PodFs {
    /// Files directly in the pod's log directory.
    pub logs: Option<RuntimeFsUsage>,
    /// Per container name: its log directory's files.
    pub container_logs: HashMap<String, RuntimeFsUsage>,
    /// Volumes, by name order.
    pub volumes: Vec<VolumeUse>,
}

/// One container's writable layer, from the runtime.
#[derive(Debug, Clone, Default)]
pub struct Rootfs {
    /// Pod UID (the CRI `io.kubernetes.pod.uid` label).
    pub pod_uid: String,
    /// Use, with the capacity of the filesystem holding it.
    pub fs: RuntimeFsUsage,
}

/// Cost of the task's last passes (README and the benchmark table report them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsCounters {
    /// Walk passes done.
    pub walks: u64,
    /// Wall time of the last walk pass.
    pub walk_took: Duration,
    /// Inodes the last walk pass counted.
    pub walk_inodes: u64,
    /// Walks of the last pass stopped at the entry cap.
    pub walk_truncated: u64,
    /// I/O passes done.
    pub io_passes: u64,
    /// Wall time of the last I/O pass (blkio files only, not the CRI call).
    pub io_took: Duration,
    /// Cgroups read by the last I/O pass.
    pub io_cgroups: u64,
}

/// One consistent set of measurements, replaced as a whole.
#[derive(Debug, Clone, Default)]
pub struct FsSnapshot {
    /// Per pod UID.
    pub pods: HashMap<String, PodFs>,
    /// Per container id.
    pub rootfs: HashMap<String, Rootfs>,
    /// Per cgroup path (relative to the hierarchy root, as the stats store keys it).
    pub io: HashMap<String, Arc<[DeviceIo]>>,
    /// When the block I/O was read.
    pub io_at: Option<SystemTime>,
    /// When this pass ran.
    pub taken_at: Option<SystemTime>,
    /// Costs.
    pub counters: FsCounters,
}

// The eviction manager (layer 5) reads these once its nodefs ranking is wired to them.
#[cfg_attr(not(test), allow(dead_code))]
/// A pod's local ephemeral storage use, what the eviction manager ranks pods by for the
/// nodefs signals: container writable layers, container and pod logs, local volumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodDiskUsage {
    /// Total bytes (the three below).
    pub bytes: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Writable layers of the pod's containers (every container the runtime still has).
    pub rootfs_bytes: u64,
    /// Container and pod log files.
    pub logs_bytes: u64,
    /// emptyDir (on disk) and configMap volumes.
    pub volumes_bytes: u64,
}

#[cfg_attr(not(test), allow(dead_code))]
impl FsSnapshot {
    /// The pod's local ephemeral storage use; `None` if nothing is known about the pod.
    pub fn pod_disk_usage(&self, uid: &str) -> Option<PodDiskUsage> {
        let pod = self.pods.get(uid);
        let layers: Vec<&Rootfs> = self.rootfs.values().filter(|r| r.pod_uid == uid).collect();
        if pod.is_none() && layers.is_empty() {
            return None;
        }
        let mut u = PodDiskUsage::default();
        for r in layers {
            u.rootfs_bytes += r.fs.fs.used_bytes;
            u.inodes += r.fs.inodes_used.unwrap_or(0);
        }
        if let Some(p) = pod {
            for l in p.logs.iter().chain(p.container_logs.values()) {
                u.logs_bytes += l.fs.used_bytes;
                u.inodes += l.inodes_used.unwrap_or(0);
            }
            for v in p.volumes.iter().filter(|v| v.local_ephemeral) {
                u.volumes_bytes += v.stats.fs.fs.used_bytes;
                u.inodes += v.stats.fs.inodes_used.unwrap_or(0);
            }
        }
        u.bytes = u.rootfs_bytes + u.logs_bytes + u.volumes_bytes;
        Some(u)
    }
}

/// Read handle on the task's measurements.
#[derive(Debug, Clone)]
pub struct FsUsageReader {
    rx: watch::Receiver<Arc<FsSnapshot>>,
    /// Absent for a fixed snapshot.
    demand: Option<Demand>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl FsUsageReader {
    /// A reader of a fixed snapshot (tests, and callers without a task).
    pub fn fixed(snap: FsSnapshot) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(snap));
        Self { rx, demand: None }
    }

    /// Keeps the passes on schedule and, when they had stopped or none ran yet, waits briefly
    /// for a fresh one ([`Demand::read`]).
    pub async fn read(&self) {
        if let Some(d) = &self.demand {
            d.read(&self.rx, |s| {
                on_demand::older_than(s.taken_at, 2 * IO_EVERY)
            })
            .await;
        }
    }

    /// The latest measurements.
    pub fn snapshot(&self) -> Arc<FsSnapshot> {
        self.rx.borrow().clone()
    }

    /// Local ephemeral storage use of one pod by UID (eviction's read accessor); `None`
    /// before the first pass or for a pod with no directories and no containers.
    pub fn pod_disk_usage(&self, uid: &str) -> Option<PodDiskUsage> {
        self.snapshot().pod_disk_usage(uid)
    }

    /// The same for every pod known to the last pass, by UID.
    pub fn pods_disk_usage(&self) -> HashMap<String, PodDiskUsage> {
        let snap = self.snapshot();
        let uids = snap
            .pods
            .keys()
            .chain(snap.rootfs.values().map(|r| &r.pod_uid));
        uids.filter_map(|uid| Some((uid.clone(), snap.pod_disk_usage(uid)?)))
            .collect()
    }
}

/// Where the task looks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The kubelet's root dir (pods live in `<root>/pods/<uid>`).
    pub root_dir: PathBuf,
    /// Container log root (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
}

/// statvfs of the filesystem holding `path`, and its device name, cached per path.
#[derive(Default)]
struct Capacity(HashMap<PathBuf, Option<(crate::stats::summary::FsStats, String)>>);

impl Capacity {
    fn usage(&mut self, path: &Path, time: SystemTime, u: DirUsage) -> RuntimeFsUsage {
        let (mut fs, device) = self
            .0
            .entry(path.to_path_buf())
            .or_insert_with(|| Some((fs_stats(path)?, device_of(path))))
            .clone()
            .unwrap_or_default();
        fs.used_bytes = u.bytes;
        RuntimeFsUsage {
            time: Some(time),
            fs,
            inodes_used: Some(u.inodes),
            device,
        }
    }
}

/// The device name of the filesystem holding `path`: `/dev/<name>` for a block device, else
/// the mount source from mountinfo (`overlay`, `tmpfs`), as cAdvisor labels filesystems.
pub fn device_of(path: &Path) -> String {
    let Ok(m) = std::fs::metadata(path) else {
        return String::new();
    };
    let dev = m.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major != 0 {
        let name = blkio::device_name(major, minor);
        if !name.is_empty() {
            return name;
        }
    }
    let want = format!("{major}:{minor}");
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                (f.nth(2)? == want).then_some(())?;
                let rest = l.split_once(" - ")?.1;
                rest.split_whitespace().nth(1).map(str::to_owned)
            })
        })
        .unwrap_or_default()
}

/// Whether `path` is on a tmpfs (a memory-backed volume is not local ephemeral storage).
fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is NUL-terminated and `st` is writable statfs storage.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    kind == TMPFS_MAGIC
}

/// Walks every pod's log and volume directories.
pub fn walk_pods(s: &Settings, counters: &mut FsCounters) -> HashMap<String, PodFs> {
    let started = Instant::now();
    let mut caps = Capacity::default();
    let mut pods: HashMap<String, PodFs> = HashMap::new();
    let (mut inodes, mut truncated) = (0, 0);
    let mut tally = |u: &DirUsage| {
        inodes += u.inodes;
        truncated += u64::from(u.truncated);
    };
    for entry in std::fs::read_dir(&s.pod_logs_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        // <namespace>_<name>_<uid>: none of the three may hold '_'.
        let Some(uid) = name
            .rsplit('_')
            .next()
            .filter(|_| name.matches('_').count() == 2)
        else {
            continue;
        };
        let dir = entry.path();
        let pod = pods.entry(uid.to_owned()).or_default();
        let now = SystemTime::now();
        if let Some(u) = walk::files_in(&dir) {
            tally(&u);
            pod.logs = Some(caps.usage(&s.pod_logs_dir, now, u));
        }
        for c in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !c.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(u) = walk::files_in(&c.path()) {
                tally(&u);
                let name = c.file_name().to_string_lossy().into_owned();
                pod.container_logs
                    .insert(name, caps.usage(&s.pod_logs_dir, now, u));
            }
        }
    }
    for entry in std::fs::read_dir(s.root_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let uid = entry.file_name().to_string_lossy().into_owned();
        let vols = entry.path().join("volumes");
        let mut found = Vec::new();
        for (plugin, local) in PLUGINS {
            for v in std::fs::read_dir(vols.join(plugin))
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = v.path();
                let Ok(u) = walk::walk(&path, walk::MAX_ENTRIES) else {
                    continue;
                };
                tally(&u);
                found.push(VolumeUse {
                    stats: VolumeStats {
                        name: v.file_name().to_string_lossy().into_owned(),
                        fs: caps.usage(&path, SystemTime::now(), u),
                    },
                    local_ephemeral: local && !on_tmpfs(&path),
                });
            }
        }
        if found.is_empty() {
            continue;
        }
        found.sort_by(|a, b| a.stats.name.cmp(&b.stats.name));
        pods.entry(uid).or_default().volumes = found;
    }
    counters.walks += 1;
    counters.walk_took = started.elapsed();
    counters.walk_inodes = inodes;
    counters.walk_truncated = truncated;
    pods
}

/// Writable layers from a `ListContainerStats` answer, keyed by container id.
pub fn rootfs_from(stats: &[cri::ContainerStats]) -> HashMap<String, Rootfs> {
    let mut caps = Capacity::default();
    let mut out = HashMap::new();
    for s in stats {
        let (Some(a), Some(w)) = (&s.attributes, &s.writable_layer) else {
            continue;
        };
        let mount = w.fs_id.as_ref().map(|f| PathBuf::from(&f.mountpoint));
        let time = u64::try_from(w.timestamp)
            .ok()
            .filter(|&t| t > 0)
            .map_or_else(SystemTime::now, |t| UNIX_EPOCH + Duration::from_nanos(t));
        let used = DirUsage {
            bytes: w.used_bytes.as_ref().map_or(0, |v| v.value),
            inodes: w.inodes_used.as_ref().map_or(0, |v| v.value),
            truncated: false,
        };
        let fs = match mount.filter(|m| !m.as_os_str().is_empty()) {
            Some(m) => caps.usage(&m, time, used),
            None => RuntimeFsUsage {
                time: Some(time),
                fs: crate::stats::summary::FsStats {
                    used_bytes: used.bytes,
                    ..Default::default()
                },
                inodes_used: Some(used.inodes),
                device: String::new(),
            },
        };
        out.insert(
            a.id.clone(),
            Rootfs {
                pod_uid: a
                    .labels
                    .get("io.kubernetes.pod.uid")
                    .cloned()
                    .unwrap_or_default(),
                fs,
            },
        );
    }
    out
}

/// Reads block I/O of `cgroups`; returns what it read and how long it took.
pub fn read_io(
    layout: &CgroupLayout,
    cgroups: &[String],
    names: &mut HashMap<(u32, u32), String>,
) -> HashMap<String, Arc<[DeviceIo]>> {
    let Some(m) = layout
        .controller("blkio")
        .or_else(|| layout.controller("io"))
    else {
        return HashMap::new();
    };
    cgroups
        .iter()
        .filter_map(|c| {
            let io = blkio::read(&cgroup_dir(&m.mount, c), m.v2, names)?;
            Some((c.clone(), io.into()))
        })
        .collect()
}

/// Starts the writer task. `cri` absent: no rootfs; `layout` absent: no block I/O.
pub fn start(
    cri: Option<Cri>,
    view: Option<PodStatsView>,
    layout: Option<CgroupLayout>,
    settings: Settings,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> FsUsageReader {
    let (tx, rx) = watch::channel(Arc::new(FsSnapshot::default()));
    let (mut schedule, demand) = on_demand::schedule(IO_EVERY, on_demand::IDLE_AFTER);
    tasks.spawn(async move {
        let mut last_walk: Option<Instant> = None;
        let mut warned = false;
        let mut names = HashMap::new();
        while schedule.next(&cancel).await {
            let stats = match &cri {
                Some(c) => match c.list_container_stats().await {
                    Ok(s) => {
                        warned = false;
                        Some(s)
                    }
                    Err(e) => {
                        if !warned {
                            warned = true;
                            tracing::warn!(error = %e, "ListContainerStats failed; container rootfs keeps its last answer");
                        }
                        None
                    }
                },
                None => None,
            };
            let walk_due = last_walk.is_none_or(|t| t.elapsed() >= WALK_EVERY);
            if walk_due {
                last_walk = Some(Instant::now());
            }
            let cgroups: Vec<String> = view
                .iter()
                .flat_map(|v| {
                    let pods = v.pod_totals().into_iter().map(|p| p.cgroup);
                    pods.chain(v.containers().into_iter().map(|c| c.cgroup))
                })
                .collect();
            let prev = tx.borrow().clone();
            let (settings, layout) = (settings.clone(), layout.clone());
            let mut n = std::mem::take(&mut names);
            let job = tokio::task::spawn_blocking(move || {
                let mut snap = FsSnapshot::clone(&prev);
                snap.taken_at = Some(SystemTime::now());
                if let Some(s) = stats {
                    snap.rootfs = rootfs_from(&s);
                }
                if walk_due {
                    snap.pods = walk_pods(&settings, &mut snap.counters);
                }
                if let Some(layout) = layout {
                    let started = Instant::now();
                    snap.io = read_io(&layout, &cgroups, &mut n);
                    snap.io_at = Some(SystemTime::now());
                    snap.counters.io_passes += 1;
                    snap.counters.io_took = started.elapsed();
                    snap.counters.io_cgroups = cgroups.len() as u64;
                }
                (snap, n)
            });
            match job.await {
                Ok((snap, n)) => {
                    names = n;
                    tx.send_replace(Arc::new(snap));
                }
                Err(e) => tracing::warn!(error = %e, "filesystem usage pass failed"),
            }
        }
    });
    FsUsageReader {
        rx,
        demand: Some(demand),
    }
}

#[cfg(test)]
mod tests;
