//! The slow-moving figures cAdvisor reports beside usage: the CPU user/system split, CFS
//! periods and throttled time, the cgroup's spec (quota, period, shares, memory limit,
//! reservation, swap limit), swap, failcnt, peak usage, kernel memory, page faults by scope,
//! and processes, threads, file descriptors and sockets (cadvisor container/libcontainer
//! handler.go, container/common/helpers.go).
//!
//! Read from cgroupfs by one task every [`EVERY`] (the kubelet's cAdvisor housekeeping
//! interval) for the root, the pod and container cgroups the pod view knows and the system
//! containers, and published whole on a `watch` channel: readers clone an `Arc`. The usage the
//! store holds stays the fresher source; these are stamped with their own sweep time.
//!
//! Unlike cAdvisor, the sweep keeps its schedule only while someone reads the details
//! ([`DetailsFeed::read`]: /stats/summary, /metrics/cadvisor; see [`super::on_demand`]). On a
//! node nobody scrapes they were most of the agent's idle CPU: at 110 pods 10 ms/s of 24
//! (perf, 2026-12-07).
//! Cost (v1): ~16 small files per cgroup plus one `/proc/<pid>/fd` listing per process
//! (one readlink per descriptor for sockets), ~0.1-0.2 ms a cgroup.

use super::cgroupfs::{CgroupLayout, cgroup_dir, parse_flat_keyed};
use super::network::{self, Interface};
use super::on_demand::{self, Demand};
use super::pods::PodStatsView;
use super::system::{SystemCgroups, system_cgroups};
use crate::cm::path::{CgroupKind, classify};
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the details are read (cAdvisor's housekeeping interval in the kubelet).
pub const EVERY: Duration = Duration::from_secs(10);
/// A reader finding the latest sweep older than this (or none) waits for the next one.
const STALE_AFTER: Duration = Duration::from_secs(2 * EVERY.as_secs());

/// The details as readers see them: the latest sweep, and a way to ask for sweeps.
#[derive(Debug, Clone)]
pub struct DetailsFeed {
    rx: watch::Receiver<Arc<Details>>,
    demand: Demand,
}

impl DetailsFeed {
    /// The latest sweep, without asking for more (counters, health).
    pub fn latest(&self) -> Arc<Details> {
        self.rx.borrow().clone()
    }

    /// Keeps the sweeps on schedule and, when they had stopped or none was done yet, waits
    /// briefly for a fresh one ([`Demand::read`]).
    pub async fn read(&self) -> Arc<Details> {
        self.demand
            .read(&self.rx, |d| {
                d.sweeps == 0 || on_demand::older_than(d.taken_at, STALE_AFTER)
            })
            .await;
        self.latest()
    }
}

/// CPU figures of one cgroup beyond its usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuDetails {
    /// Total CPU time, ns (for system containers, which the store does not hold).
    pub usage_ns: Option<u64>,
    /// Time in user mode, ns.
    pub user_ns: Option<u64>,
    /// Time in kernel mode, ns.
    pub system_ns: Option<u64>,
    /// Elapsed CFS enforcement periods.
    pub cfs_periods: Option<u64>,
    /// Periods in which the cgroup was throttled.
    pub cfs_throttled_periods: Option<u64>,
    /// Time throttled, ns.
    pub cfs_throttled_ns: Option<u64>,
    /// CFS period, µs (cAdvisor's spec `Cpu.Period`).
    pub period_us: u64,
    /// CFS quota, µs; 0 without a quota (cAdvisor's spec `Cpu.Quota`).
    pub quota_us: u64,
    /// cpu.shares (v2: cpu.weight converted as cAdvisor does).
    pub shares: u64,
}

/// Memory figures of one cgroup beyond the store's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryDetails {
    /// Usage, bytes.
    pub usage_bytes: u64,
    /// Working set, bytes.
    pub working_set_bytes: u64,
    /// Anonymous memory, bytes.
    pub rss_bytes: u64,
    /// Page cache, bytes.
    pub cache_bytes: u64,
    /// Inactive file pages, bytes.
    pub inactive_file_bytes: u64,
    /// Swap in use, bytes.
    pub swap_bytes: u64,
    /// Mapped files, bytes.
    pub mapped_file_bytes: u64,
    /// Kernel memory, bytes.
    pub kernel_bytes: u64,
    /// Times usage hit the limit (v2: `memory.events` `max`).
    pub failcnt: u64,
    /// Peak usage, bytes (v1 `max_usage_in_bytes`, v2 `memory.peak`; 0 if absent).
    pub max_usage_bytes: u64,
    /// Page faults of the cgroup's own tasks (cAdvisor's `container` scope).
    pub pgfault: u64,
    /// Major page faults, own tasks.
    pub pgmajfault: u64,
    /// Page faults of the whole subtree (cAdvisor's `hierarchy` scope).
    pub total_pgfault: u64,
    /// Major page faults, subtree.
    pub total_pgmajfault: u64,
    /// Limit as cAdvisor's spec writes it (0 for unlimited).
    pub limit_bytes: u64,
    /// Reservation (v1 soft limit, v2 `memory.min`), 0 for none.
    pub reservation_bytes: u64,
    /// Memory + swap limit (v1 memsw) or swap limit (v2), 0 for none.
    pub swap_limit_bytes: u64,
}

/// Tasks of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessDetails {
    /// Processes directly in the cgroup (`cgroup.procs`), as cAdvisor counts them.
    pub processes: u64,
    /// Threads in the subtree (`pids.current`), if the pids controller is there.
    pub threads: Option<u64>,
    /// `pids.max` (0: unlimited).
    pub threads_max: Option<u64>,
    /// Open file descriptors of those processes.
    pub fds: u64,
    /// Open sockets of those processes.
    pub sockets: u64,
}

/// Everything read for one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupDetails {
    /// CPU, if the cgroup exists in the CPU hierarchy.
    pub cpu: Option<CpuDetails>,
    /// Memory, if it exists in the memory hierarchy.
    pub memory: Option<MemoryDetails>,
    /// Tasks (pod and container cgroups only).
    pub processes: Option<ProcessDetails>,
    /// When the cgroup directory was created (its mtime bounds it), for system containers.
    pub created: Option<SystemTime>,
    /// Pressure stall information, where the kernel exposes pressure files.
    pub pressure: Option<super::psi::Pressure>,
}

/// One sweep's details.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// When the sweep started.
    pub taken_at: Option<SystemTime>,
    /// How long it took.
    pub took: Duration,
    /// Per cgroup path (relative to the hierarchy root).
    pub cgroups: HashMap<String, CgroupDetails>,
    /// Sweeps done so far.
    pub sweeps: u64,
    /// The system containers' cgroups as this sweep found them.
    pub system: SystemCgroups,
    /// Interfaces per pod cgroup, and the node's under `/`.
    pub networks: HashMap<String, Arc<[Interface]>>,
}

/// Converts cgroup v2 `cpu.weight` [1, 10000] to v1 shares [2, 262144] (cAdvisor's
/// convertCPUWeightToCPULimit, KEP 2254).
pub fn weight_to_shares(weight: u64) -> Option<u64> {
    (1..=10_000)
        .contains(&weight)
        .then(|| 2 + (weight - 1) * 262_142 / 9_999)
}

/// A memory limit file's value as cAdvisor's spec metrics write it: "max" and v1's
/// page-rounded "unlimited" (above 2^62) are 0.
pub fn spec_memory(text: &str) -> u64 {
    match text.trim().parse::<u64>() {
        Ok(v) if v <= 1 << 62 => v,
        _ => 0,
    }
}

/// `cpu.max` (`quota period`, quota `max` when unlimited) as (quota µs or 0, period µs).
pub fn parse_cpu_max(text: &str) -> (u64, u64) {
    let mut f = text.split_whitespace();
    let quota = f.next().and_then(|q| q.parse().ok()).unwrap_or(0);
    let period = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (quota, period)
}

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

fn read_num(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// CPU details of `cgroup`; `None` if it has no CPU directory.
pub fn read_cpu(layout: &CgroupLayout, cgroup: &str) -> Option<CpuDetails> {
    let mut d = CpuDetails::default();
    let mut found = false;
    if let Some(m) = layout.controller("cpu") {
        let dir = cgroup_dir(&m.mount, cgroup);
        if let Some(stat) = read(&dir, "cpu.stat") {
            found = true;
            let s = parse_flat_keyed(&stat);
            d.cfs_periods = s.get("nr_periods").copied();
            d.cfs_throttled_periods = s.get("nr_throttled").copied();
            if m.v2 {
                d.cfs_throttled_ns = s.get("throttled_usec").map(|u| u * 1000);
                d.usage_ns = s.get("usage_usec").map(|u| u * 1000);
                d.user_ns = s.get("user_usec").map(|u| u * 1000);
                d.system_ns = s.get("system_usec").map(|u| u * 1000);
                (d.quota_us, d.period_us) =
                    parse_cpu_max(&read(&dir, "cpu.max").unwrap_or_default());
                d.shares = read_num(&dir, "cpu.weight")
                    .and_then(weight_to_shares)
                    .unwrap_or(0);
            } else {
                d.cfs_throttled_ns = s.get("throttled_time").copied();
                d.period_us = read_num(&dir, "cpu.cfs_period_us").unwrap_or(0);
                // -1 (no quota) does not parse as u64: 0, as cAdvisor's spec has it.
                d.quota_us = read_num(&dir, "cpu.cfs_quota_us").unwrap_or(0);
                d.shares = read_num(&dir, "cpu.shares").unwrap_or(0);
            }
        }
    }
    if let Some(m) = layout.controller("cpuacct").filter(|m| !m.v2) {
        let dir = cgroup_dir(&m.mount, cgroup);
        if let Some(stat) = read(&dir, "cpuacct.stat") {
            found = true;
            // USER_HZ ticks, as runc converts them.
            let ns = 1_000_000_000 / clock_ticks();
            let s = parse_flat_keyed(&stat);
            d.user_ns = s.get("user").map(|t| t * ns);
            d.system_ns = s.get("system").map(|t| t * ns);
            d.usage_ns = read_num(&dir, "cpuacct.usage");
        }
    } else if d.user_ns.is_none()
        && let Some(v2) = &layout.v2
        && let Some(stat) = read(&cgroup_dir(v2, cgroup), "cpu.stat")
    {
        // v2 without the cpu controller enabled still has the core usage split.
        found = true;
        let s = parse_flat_keyed(&stat);
        d.usage_ns = s.get("usage_usec").map(|u| u * 1000);
        d.user_ns = s.get("user_usec").map(|u| u * 1000);
        d.system_ns = s.get("system_usec").map(|u| u * 1000);
    }
    found.then_some(d)
}

/// Memory details of `cgroup`; `None` if it has no memory directory.
pub fn read_memory(layout: &CgroupLayout, cgroup: &str) -> Option<MemoryDetails> {
    let m = layout.controller("memory")?;
    let dir = cgroup_dir(&m.mount, cgroup);
    let stat_text = read(&dir, "memory.stat")?;
    let s = parse_flat_keyed(&stat_text);
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    let spec = |f: &str| read(&dir, f).map_or(0, |t| spec_memory(&t));
    let d = if m.v2 {
        let usage = read_num(&dir, "memory.current").unwrap_or(0);
        let events = read(&dir, "memory.events").unwrap_or_default();
        MemoryDetails {
            usage_bytes: usage,
            working_set_bytes: usage.saturating_sub(get("inactive_file")),
            rss_bytes: get("anon"),
            cache_bytes: get("file"),
            inactive_file_bytes: get("inactive_file"),
            swap_bytes: read_num(&dir, "memory.swap.current").unwrap_or(0),
            mapped_file_bytes: get("file_mapped"),
            kernel_bytes: get("kernel"),
            failcnt: parse_flat_keyed(&events).get("max").copied().unwrap_or(0),
            max_usage_bytes: read_num(&dir, "memory.peak").unwrap_or(0),
            // v2 has no per-scope split: cAdvisor reports the same number for both.
            pgfault: get("pgfault"),
            pgmajfault: get("pgmajfault"),
            total_pgfault: get("pgfault"),
            total_pgmajfault: get("pgmajfault"),
            limit_bytes: spec("memory.max"),
            reservation_bytes: spec("memory.min"),
            swap_limit_bytes: spec("memory.swap.max"),
        }
    } else {
        let usage = read_num(&dir, "memory.usage_in_bytes").unwrap_or(0);
        MemoryDetails {
            usage_bytes: usage,
            working_set_bytes: usage.saturating_sub(get("total_inactive_file")),
            rss_bytes: get("total_rss"),
            cache_bytes: get("total_cache"),
            inactive_file_bytes: get("total_inactive_file"),
            swap_bytes: get("total_swap"),
            mapped_file_bytes: get("total_mapped_file"),
            kernel_bytes: read_num(&dir, "memory.kmem.usage_in_bytes").unwrap_or(0),
            failcnt: read_num(&dir, "memory.failcnt").unwrap_or(0),
            max_usage_bytes: read_num(&dir, "memory.max_usage_in_bytes").unwrap_or(0),
            pgfault: get("pgfault"),
            pgmajfault: get("pgmajfault"),
            total_pgfault: get("total_pgfault"),
            total_pgmajfault: get("total_pgmajfault"),
            limit_bytes: spec("memory.limit_in_bytes"),
            reservation_bytes: spec("memory.soft_limit_in_bytes"),
            swap_limit_bytes: spec("memory.memsw.limit_in_bytes"),
        }
    };
    Some(d)
}

/// File descriptors and sockets of one process (cAdvisor's processStatsFromProcs); a process
/// that exited meanwhile counts nothing.
fn fds_of(pid: &str) -> (u64, u64) {
    let dir = Path::new("/proc").join(pid).join("fd");
    let Ok(entries) = fs::read_dir(&dir) else {
        return (0, 0);
    };
    let (mut fds, mut sockets) = (0, 0);
    for e in entries.flatten() {
        fds += 1;
        if fs::read_link(e.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
        {
            sockets += 1;
        }
    }
    (fds, sockets)
}

/// Tasks of `cgroup`; `None` if it has no directory in the hierarchy listing processes.
pub fn read_processes(layout: &CgroupLayout, cgroup: &str) -> Option<ProcessDetails> {
    let m = layout
        .controller("memory")
        .or_else(|| layout.controller("cpu"))?;
    let procs = read(&cgroup_dir(&m.mount, cgroup), "cgroup.procs")?;
    let mut d = ProcessDetails::default();
    for pid in procs.split_whitespace() {
        d.processes += 1;
        let (f, s) = fds_of(pid);
        d.fds += f;
        d.sockets += s;
    }
    if let Some(p) = layout.controller("pids") {
        let dir = cgroup_dir(&p.mount, cgroup);
        d.threads = read_num(&dir, "pids.current");
        d.threads_max = read(&dir, "pids.max").map(|t| t.trim().parse().unwrap_or(0));
    }
    Some(d)
}

fn created(layout: &CgroupLayout, cgroup: &str) -> Option<SystemTime> {
    let m = layout
        .controller("memory")
        .or_else(|| layout.controller("cpu"))?;
    fs::metadata(cgroup_dir(&m.mount, cgroup))
        .ok()?
        .modified()
        .ok()
}

/// What one sweep reads: (path, with processes).
fn targets(view: &PodStatsView, system: &SystemCgroups) -> Vec<(String, bool)> {
    let mut out = vec![("/".to_owned(), false)];
    for s in [&system.kubelet, &system.runtime, &system.pods]
        .into_iter()
        .flatten()
    {
        out.push((s.clone(), false));
    }
    out.extend(view.pod_totals().into_iter().map(|p| (p.cgroup, true)));
    out.extend(view.containers().into_iter().map(|c| (c.cgroup, true)));
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// One sweep over `paths`.
pub fn sweep(layout: &CgroupLayout, paths: &[(String, bool)], previous: u64) -> Details {
    let taken_at = SystemTime::now();
    let started = Instant::now();
    let mut d = Details {
        taken_at: Some(taken_at),
        sweeps: previous + 1,
        ..Details::default()
    };
    for (path, with_procs) in paths {
        let c = CgroupDetails {
            cpu: read_cpu(layout, path),
            memory: read_memory(layout, path),
            processes: with_procs.then(|| read_processes(layout, path)).flatten(),
            created: created(layout, path),
            // Three small files: ~30 µs a cgroup on this sweep, instead of on every scrape.
            pressure: super::psi::read(layout.v2.as_deref(), path),
        };
        if c.cpu.is_none() && c.memory.is_none() {
            // Gone between listing and reading: normal churn.
            continue;
        }
        d.cgroups.insert(path.clone(), c);
        let net = if path == "/" {
            network::read_node()
        } else if let Some(CgroupKind::Pod { .. }) = classify(path) {
            network::read_pod(layout, path)
        } else {
            None
        };
        if let Some(n) = net {
            d.networks.insert(path.clone(), n.into());
        }
    }
    d.took = started.elapsed();
    d
}

/// Starts the details task; the feed holds the latest sweep (empty until the first). Sweeps
/// run only while read, the first on the first read (see the module doc). The system containers are
/// looked up at every sweep: the runtime may start (or restart) after the agent.
pub fn start(
    layout: CgroupLayout,
    view: PodStatsView,
    runtime_endpoint: String,
    pods_root: Option<String>,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> DetailsFeed {
    let (tx, rx) = watch::channel(Arc::new(Details::default()));
    let (mut schedule, demand) = on_demand::schedule(EVERY, on_demand::IDLE_AFTER);
    tasks.spawn(async move {
        let mut sweeps = 0;
        while schedule.next(&cancel).await {
            let (view, layout) = (view.clone(), layout.clone());
            let (endpoint, pods_root) = (runtime_endpoint.clone(), pods_root.clone());
            let run = move || {
                let system = system_cgroups(&layout, &endpoint, pods_root);
                let mut d = sweep(&layout, &targets(&view, &system), sweeps);
                d.system = system;
                d
            };
            match tokio::task::spawn_blocking(run).await {
                Ok(d) => {
                    sweeps = d.sweeps;
                    tx.send_replace(Arc::new(d));
                }
                Err(e) => tracing::warn!(error = %e, "cgroup details sweep failed"),
            }
        }
    });
    DetailsFeed { rx, demand }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_weight_converts_to_shares_as_cadvisor() {
        assert_eq!(weight_to_shares(1), Some(2));
        assert_eq!(weight_to_shares(10_000), Some(262_144));
        assert_eq!(weight_to_shares(100), Some(2597));
        assert_eq!(weight_to_shares(0), None);
        assert_eq!(weight_to_shares(10_001), None);
    }

    #[test]
    fn unlimited_memory_is_zero_in_the_spec() {
        assert_eq!(spec_memory("max\n"), 0);
        assert_eq!(spec_memory("9223372036854771712\n"), 0);
        assert_eq!(spec_memory("20971520\n"), 20 << 20);
        assert_eq!(parse_cpu_max("max 100000\n"), (0, 100_000));
        assert_eq!(parse_cpu_max("50000 100000\n"), (50_000, 100_000));
    }

    /// Reads a fake v1 and v2 tree laid out in a temp dir.
    #[test]
    fn v1_and_v2_files_give_the_same_details() {
        let root = std::env::temp_dir().join(format!("nodelet-details-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, text).expect("write");
        };
        // v1: cpu, cpuacct and memory hierarchies.
        w(
            "cpu/k/c/cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000\n",
        );
        w("cpu/k/c/cpu.cfs_quota_us", "50000\n");
        w("cpu/k/c/cpu.cfs_period_us", "100000\n");
        w("cpu/k/c/cpu.shares", "512\n");
        let ticks = clock_ticks();
        w(
            "cpuacct/k/c/cpuacct.stat",
            &format!("user {}\nsystem {}\n", 3 * ticks, ticks),
        );
        w("cpuacct/k/c/cpuacct.usage", "4000000000\n");
        w(
            "memory/k/c/memory.stat",
            "pgfault 5\npgmajfault 1\ntotal_pgfault 50\ntotal_pgmajfault 10\ntotal_rss 4096\n\
             total_cache 8192\ntotal_inactive_file 4096\ntotal_swap 0\ntotal_mapped_file 1024\n",
        );
        w("memory/k/c/memory.usage_in_bytes", "16384\n");
        w("memory/k/c/memory.failcnt", "3\n");
        w("memory/k/c/memory.max_usage_in_bytes", "32768\n");
        w("memory/k/c/memory.limit_in_bytes", "20971520\n");
        w(
            "memory/k/c/memory.soft_limit_in_bytes",
            "9223372036854771712\n",
        );
        w("memory/k/c/cgroup.procs", "");
        // v2: the same numbers in v2's files.
        w(
            "v2/k/c/cpu.stat",
            "usage_usec 4000000\nuser_usec 3000000\nsystem_usec 1000000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2000\n",
        );
        w("v2/k/c/cpu.max", "50000 100000\n");
        w("v2/k/c/cpu.weight", "20\n");
        w(
            "v2/k/c/memory.stat",
            "anon 4096\nfile 8192\ninactive_file 4096\nfile_mapped 1024\npgfault 50\npgmajfault 10\n",
        );
        w("v2/k/c/memory.current", "16384\n");
        w(
            "v2/k/c/memory.events",
            "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n",
        );
        w("v2/k/c/memory.peak", "32768\n");
        w("v2/k/c/memory.max", "20971520\n");
        w("v2/k/c/memory.min", "0\n");
        w("v2/k/c/memory.swap.max", "max\n");
        let mountinfo = format!(
            "1 0 0:1 / {r}/cpu rw - cgroup cgroup rw,cpu\n\
             2 0 0:2 / {r}/cpuacct rw - cgroup cgroup rw,cpuacct\n\
             3 0 0:3 / {r}/memory rw - cgroup cgroup rw,memory\n",
            r = root.display()
        );
        let v1 = super::super::cgroupfs::parse_layout(
            &mountinfo,
            "cpu 1 1 1\ncpuacct 2 1 1\nmemory 3 1 1\n",
        );
        let mut v2 = super::super::cgroupfs::parse_layout(
            &format!("1 0 0:1 / {}/v2 rw - cgroup2 cgroup2 rw\n", root.display()),
            "",
        );
        v2.v2_controllers = vec!["cpu".into(), "memory".into()];
        let a = read_cpu(&v1, "/k/c").expect("v1 cpu");
        let b = read_cpu(&v2, "/k/c").expect("v2 cpu");
        assert_eq!(
            (a.user_ns, a.system_ns),
            (Some(3_000_000_000), Some(1_000_000_000))
        );
        assert_eq!(
            (a.user_ns, a.system_ns, a.usage_ns),
            (b.user_ns, b.system_ns, b.usage_ns)
        );
        assert_eq!(
            (a.cfs_periods, a.cfs_throttled_periods),
            (Some(10), Some(4))
        );
        assert_eq!(
            (a.cfs_periods, a.cfs_throttled_periods, a.cfs_throttled_ns),
            (b.cfs_periods, b.cfs_throttled_periods, b.cfs_throttled_ns)
        );
        assert_eq!((a.quota_us, a.period_us, a.shares), (50_000, 100_000, 512));
        assert_eq!(
            (b.quota_us, b.period_us, b.shares),
            (50_000, 100_000, 2 + 19 * 262_142 / 9_999)
        );
        let m1 = read_memory(&v1, "/k/c").expect("v1 memory");
        let m2 = read_memory(&v2, "/k/c").expect("v2 memory");
        assert_eq!(m1.working_set_bytes, 12_288);
        assert_eq!((m1.pgfault, m1.total_pgfault), (5, 50));
        assert_eq!((m2.pgfault, m2.total_pgfault), (50, 50));
        {
            let (x, y) = (m1, m2);
            assert_eq!(
                (
                    x.usage_bytes,
                    x.working_set_bytes,
                    x.rss_bytes,
                    x.cache_bytes,
                    x.mapped_file_bytes
                ),
                (
                    y.usage_bytes,
                    y.working_set_bytes,
                    y.rss_bytes,
                    y.cache_bytes,
                    y.mapped_file_bytes
                )
            );
            assert_eq!(
                (x.failcnt, x.max_usage_bytes, x.limit_bytes),
                (y.failcnt, y.max_usage_bytes, y.limit_bytes)
            );
            assert_eq!((x.reservation_bytes, x.swap_limit_bytes), (0, 0));
        }
        let p = read_processes(&v1, "/k/c").expect("procs");
        assert_eq!((p.processes, p.threads), (0, None));
        assert!(read_cpu(&v1, "/k/gone").is_none() && read_memory(&v1, "/k/gone").is_none());
        let _ = fs::remove_dir_all(&root);
    }
}
