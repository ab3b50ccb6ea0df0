//! cgroupfs: where the hierarchies are mounted, how to read a cgroup's CPU/memory/OOM files,
//! and the polling reader used when BPF cannot load (and as the truth in tests).
//!
//! Reads the files cAdvisor reads (`pkg/kubelet/stats` via cAdvisor's `libcontainer` cgroup
//! manager): v1 `cpuacct.usage`, `memory.usage_in_bytes`, `memory.stat` (`total_*`),
//! `memory.limit_in_bytes`, `memory.oom_control`; v2 `cpu.stat`, `memory.current`,
//! `memory.stat`, `memory.max`, `memory.events`. Direct file reads rather than cgroups-rs:
//! cgroups-rs reads every file of a controller per call, which is the cost this project exists
//! to avoid; here a cgroup costs 4-5 reads. `ebpf/` uses the same readers for its baselines.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{CgroupStats, CpuStats, MemoryStats, Snapshot, Source};

/// Limits at or above this are "unlimited" (v1 reports `PAGE_COUNTER_MAX * PAGE_SIZE`).
const UNLIMITED_FROM: u64 = 1 << 62;

/// One mounted v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Hierarchy id (`/proc/cgroups` column 2; also `cgroup->root->hierarchy_id`).
    pub id: u32,
    /// Controllers bound to it (`cpu`, `cpuacct`, `memory`, ... or `name=systemd`).
    pub controllers: Vec<String>,
    /// Mount point.
    pub mount: PathBuf,
}

/// Where a controller's cgroups live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerMount {
    /// Hierarchy id; 0 for cgroup v2.
    pub hierarchy_id: u32,
    /// Mount point of that hierarchy.
    pub mount: PathBuf,
    /// True on cgroup v2.
    pub v2: bool,
}

/// The cgroup hierarchies mounted on this host (v1, v2 or hybrid).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// v1 hierarchies.
    pub v1: Vec<V1Hierarchy>,
    /// cgroup2 mount point, if mounted.
    pub v2: Option<PathBuf>,
    /// Controllers enabled at the v2 root (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl CgroupLayout {
    /// Reads `/proc/self/mountinfo`, `/proc/cgroups` and the v2 root's controllers.
    pub fn detect() -> io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        // /proc/cgroups is absent on kernels without v1 support: then ids do not matter.
        let proc_cgroups = fs::read_to_string("/proc/cgroups").unwrap_or_default();
        let mut layout = parse_layout(&mountinfo, &proc_cgroups);
        if let Some(v2) = &layout.v2
            && let Ok(text) = fs::read_to_string(v2.join("cgroup.controllers"))
        {
            layout.v2_controllers = text.split_whitespace().map(str::to_owned).collect();
        }
        Ok(layout)
    }

    /// Where `controller` is mounted: its v1 hierarchy if it has one, else v2 if enabled there.
    pub fn controller(&self, controller: &str) -> Option<ControllerMount> {
        if let Some(h) = self
            .v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
        {
            return Some(ControllerMount {
                hierarchy_id: h.id,
                mount: h.mount.clone(),
                v2: false,
            });
        }
        let v2 = self.v2.as_ref()?;
        self.v2_controllers
            .iter()
            .any(|c| c == controller)
            .then(|| ControllerMount {
                hierarchy_id: 0,
                mount: v2.clone(),
                v2: true,
            })
    }

    /// Mount of a hierarchy id (0: v2).
    pub fn hierarchy_mount(&self, hierarchy_id: u32) -> Option<&Path> {
        if hierarchy_id == 0 {
            return self.v2.as_deref();
        }
        self.v1
            .iter()
            .find(|h| h.id == hierarchy_id)
            .map(|h| h.mount.as_path())
    }
}

/// Builds a layout from the text of `/proc/self/mountinfo` and `/proc/cgroups`.
pub fn parse_layout(mountinfo: &str, proc_cgroups: &str) -> CgroupLayout {
    let ids: HashMap<&str, u32> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?.parse().ok()?))
        })
        .collect();
    let mut layout = CgroupLayout::default();
    for m in crate::cm::parse_cgroup_mounts(mountinfo) {
        if m.v2 {
            layout.v2 = layout.v2.take().or(Some(m.mount));
            continue;
        }
        let controllers: Vec<String> = m
            .super_opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains("relatime"))
            .filter(|o| ids.contains_key(o) || o.starts_with("name="))
            .map(str::to_owned)
            .collect();
        let id = controllers
            .iter()
            .find_map(|c| ids.get(c.as_str()).copied())
            .unwrap_or(u32::MAX);
        if layout.v1.iter().any(|h| h.controllers == controllers) {
            continue; // bind mounts of the same hierarchy
        }
        layout.v1.push(V1Hierarchy {
            id,
            controllers,
            mount: m.mount,
        });
    }
    layout
}

/// Parses `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`, `oom_control`).
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// `mount` + relative cgroup path (`/a/b`).
pub fn cgroup_dir(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Like [`read_u64`] but "max" (v2) and huge v1 values are `None`.
fn read_limit(path: &Path) -> io::Result<Option<u64>> {
    let text = fs::read_to_string(path)?;
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    let v: u64 = text.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok((v < UNLIMITED_FROM).then_some(v))
}

/// Reads a cgroup's CPU usage; `Ok(None)` if the cgroup does not exist there.
pub fn read_cpu(layout: &CgroupLayout, cgroup: &str) -> io::Result<Option<CpuStats>> {
    Ok(read_cpu_usage(layout, cgroup)?.map(|usage_ns| CpuStats {
        usage_ns,
        throttled_periods: read_throttled(layout, cgroup),
        ..CpuStats::default()
    }))
}

/// A cgroup's cumulative CPU time, ns (v1 `cpuacct.usage`, else v2 `cpu.stat` `usage_usec`):
/// one file. `Ok(None)` if the cgroup does not exist there. For `/`, the node's CPU time.
pub fn read_cpu_usage(layout: &CgroupLayout, cgroup: &str) -> io::Result<Option<u64>> {
    let usage_ns = if let Some(m) = layout.controller("cpuacct").filter(|m| !m.v2) {
        read_u64(&cgroup_dir(&m.mount, cgroup).join("cpuacct.usage"))
    } else if let Some(v2) = &layout.v2 {
        fs::read_to_string(cgroup_dir(v2, cgroup).join("cpu.stat")).and_then(|t| {
            parse_flat_keyed(&t)
                .get("usage_usec")
                .map(|us| us * 1000)
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "cpu.stat: no usage_usec")
                })
        })
    } else {
        return Ok(None);
    };
    match usage_ns {
        Ok(usage_ns) => Ok(Some(usage_ns)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// CFS throttled periods (`cpu.stat` `nr_throttled`) of a cgroup with a quota; `None` without
/// a CPU limit or when the files are missing.
fn read_throttled(layout: &CgroupLayout, cgroup: &str) -> Option<u64> {
    let m = layout.controller("cpu")?;
    let dir = cgroup_dir(&m.mount, cgroup);
    let limited = if m.v2 {
        let max = fs::read_to_string(dir.join("cpu.max")).ok()?;
        max.split_whitespace().next().is_some_and(|q| q != "max")
    } else {
        let quota = fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
        quota.trim() != "-1"
    };
    if !limited {
        return None;
    }
    let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
    parse_flat_keyed(&stat).get("nr_throttled").copied()
}

/// Reads a cgroup's memory usage alone (one file, where [`read_memory`] reads four); `Ok(None)`
/// if the cgroup does not exist there.
pub fn read_memory_usage(layout: &CgroupLayout, cgroup: &str) -> io::Result<Option<u64>> {
    let Some(m) = layout.controller("memory") else {
        return Ok(None);
    };
    let file = if m.v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    match read_u64(&cgroup_dir(&m.mount, cgroup).join(file)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a cgroup's memory files; `Ok(None)` if the cgroup does not exist there.
pub fn read_memory(layout: &CgroupLayout, cgroup: &str) -> io::Result<Option<MemoryStats>> {
    let Some(m) = layout.controller("memory") else {
        return Ok(None);
    };
    let dir = cgroup_dir(&m.mount, cgroup);
    let result = if m.v2 {
        read_memory_v2(&dir)
    } else {
        read_memory_v1(&dir)
    };
    match result {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_memory_v1(dir: &Path) -> io::Result<MemoryStats> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat_text = fs::read_to_string(dir.join("memory.stat"))?;
    let stat = parse_flat_keyed(&stat_text);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let inactive_file = get("total_inactive_file");
    Ok(MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive_file),
        rss_bytes: get("total_rss"),
        cache_bytes: get("total_cache"),
        mapped_file_bytes: get("total_mapped_file"),
        shmem_bytes: get("total_shmem"),
        inactive_file_bytes: inactive_file,
        // Absent when the kernel has no v1 kmem files: 0, not an error.
        kernel_bytes: read_u64(&dir.join("memory.kmem.usage_in_bytes")).unwrap_or(0),
        pgfault: get("total_pgfault"),
        pgmajfault: get("total_pgmajfault"),
        limit_bytes: read_limit(&dir.join("memory.limit_in_bytes"))?,
    })
}

fn read_memory_v2(dir: &Path) -> io::Result<MemoryStats> {
    let usage = read_u64(&dir.join("memory.current"))?;
    let stat_text = fs::read_to_string(dir.join("memory.stat"))?;
    let stat = parse_flat_keyed(&stat_text);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let inactive_file = get("inactive_file");
    Ok(MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive_file),
        rss_bytes: get("anon"),
        cache_bytes: get("file"),
        mapped_file_bytes: get("file_mapped"),
        shmem_bytes: get("shmem"),
        inactive_file_bytes: inactive_file,
        kernel_bytes: get("kernel"),
        pgfault: get("pgfault"),
        pgmajfault: get("pgmajfault"),
        limit_bytes: read_limit(&dir.join("memory.max"))?,
    })
}

/// OOM kills the kernel counted in this cgroup (`oom_kill`), 0 if unknown.
pub fn read_oom_kills(layout: &CgroupLayout, cgroup: &str) -> u64 {
    let Some(m) = layout.controller("memory") else {
        return 0;
    };
    let file = if m.v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    fs::read_to_string(cgroup_dir(&m.mount, cgroup).join(file))
        .map(|t| parse_flat_keyed(&t).get("oom_kill").copied().unwrap_or(0))
        .unwrap_or(0)
}

/// Relative paths of `root` and every cgroup below it in the hierarchy mounted at `mount`.
pub fn walk(mount: &Path, root: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.trim_end_matches('/').to_owned()];
    while let Some(rel) = stack.pop() {
        let dir = cgroup_dir(mount, &rel);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed while walking: normal churn.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !out.is_empty() => continue,
            Err(e) => return Err(e),
        };
        out.push(if rel.is_empty() {
            "/".to_owned()
        } else {
            rel.clone()
        });
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && let Some(name) = entry.file_name().to_str()
            {
                stack.push(format!("{rel}/{name}"));
            }
        }
    }
    Ok(out)
}

/// Reads everything the store holds for one cgroup from cgroupfs.
pub fn read_cgroup(layout: &CgroupLayout, cgroup: &str) -> io::Result<CgroupStats> {
    Ok(CgroupStats {
        cpu: read_cpu(layout, cgroup)?,
        memory: read_memory(layout, cgroup)?,
        oom_kills: read_oom_kills(layout, cgroup),
        last_oom: None,
    })
}

/// Polling reader: the fallback source of the store, and the reference in tests.
#[derive(Clone, Debug)]
pub struct CgroupfsPoller {
    layout: CgroupLayout,
    roots: Vec<String>,
}

impl CgroupfsPoller {
    /// Polls the cgroups at and below each of `roots` (relative paths, e.g. `/kubepods`).
    pub fn new(layout: CgroupLayout, roots: Vec<String>) -> Self {
        Self { layout, roots }
    }

    /// The node's CPU time now (root cgroup), ns, and when it was read; `None` if the root
    /// has no readable CPU file.
    pub fn node_cpu(&self) -> (SystemTime, Option<u64>) {
        let at = SystemTime::now();
        (at, read_cpu_usage(&self.layout, "/").ok().flatten())
    }

    /// One sweep: walk the roots in the memory (else cpu) hierarchy and read every cgroup.
    /// A cgroup that disappears mid-read is skipped; other errors fail the sweep.
    pub fn sweep(&self, previous: &Snapshot) -> io::Result<Snapshot> {
        let mount = self
            .layout
            .controller("memory")
            .or_else(|| self.layout.controller("cpu"))
            .map(|m| m.mount)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no memory or cpu cgroup mount")
            })?;
        let mut snap = Snapshot {
            source: Source::Cgroupfs,
            taken_at: Some(SystemTime::now()),
            recent_ooms: previous.recent_ooms.clone(),
            counters: previous.counters,
            ..Snapshot::default()
        };
        snap.counters.sweeps += 1;
        for root in &self.roots {
            let paths = match walk(&mount, root) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for path in paths {
                match read_cgroup(&self.layout, &path) {
                    Ok(stats) => {
                        snap.cgroups.insert(path, stats);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        snap.node_working_set_bytes = read_memory(&self.layout, "/")
            .ok()
            .flatten()
            .map(|m| m.working_set_bytes);
        // The reads spread over the sweep (tens of ms at 250 cgroups on a busy node): its
        // midpoint is the single time closest to all of them, which halves the skew a rate
        // computed from two snapshots can carry.
        if let Some(start) = snap.taken_at
            && let Ok(took) = SystemTime::now().duration_since(start)
        {
            snap.taken_at = Some(start + took / 2);
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
33 24 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 33 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 33 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
36 33 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 33 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
38 33 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
cpuacct\t2\t1\t1
memory\t4\t13\t1
";

    #[test]
    fn hybrid_layout_maps_controllers_to_their_hierarchies() {
        let l = parse_layout(MOUNTINFO, PROC_CGROUPS);
        let cpu = l.controller("cpu").expect("cpu");
        assert_eq!((cpu.hierarchy_id, cpu.v2), (1, false));
        assert_eq!(cpu.mount, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(l.controller("memory").map(|m| m.hierarchy_id), Some(4));
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            l.hierarchy_mount(2),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            l.hierarchy_mount(0),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert!(l.v1.iter().any(|h| h.controllers == ["name=systemd"]));
        // v2 has no controllers enabled here: cpu is not served by v2.
        assert!(l.controller("io").is_none());
    }

    #[test]
    fn pure_v2_serves_enabled_controllers() {
        let mut l = parse_layout("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "");
        l.v2_controllers = vec!["cpu".into(), "memory".into()];
        let m = l.controller("memory").expect("memory on v2");
        assert!(m.v2);
        assert_eq!(m.hierarchy_id, 0);
    }

    #[test]
    fn flat_keyed_files_parse_and_skip_junk() {
        let m = parse_flat_keyed(
            "cache 4096\nrss 8192\nbad line here\nhierarchical_memory_limit 9223372036854771712\n",
        );
        assert_eq!(m["cache"], 4096);
        assert_eq!(m["rss"], 8192);
        assert_eq!(m.len(), 3);
    }
}
