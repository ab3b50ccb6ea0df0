//! metrics): store snapshots regrouped per pod, CPU rates from consecutive reads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use super::TelemetryView;
use crate::server::stats::{self as api, StatsSnapshot, StatsSource};
use crate::stats::{CpuStats, MemoryStats};

/// Previous cumulative CPU readings, per key, for rates.
type Prev = HashMap<String, (SystemTime, u64)>;

/// [`StatsSource`] over a [`TelemetryView`]; node capacity and static facts come from `node`.
#[derive(Debug)]
pub struct ServerStats {
    view: Option<TelemetryView>,
    node: api::NodeStats,
    prev: Mutex<Prev>,
    /// The filesystem the Summary API reports as the node's (the kubelet's root dir).
    node_fs: std::path::PathBuf,
}

impl ServerStats {
    /// A source; `view` is `None` when telemetry is off (usage then stays empty). `node_fs` is
    /// the directory whose filesystem is the node's `fs` (the kubelet uses its root dir).
    pub fn new(
        view: Option<TelemetryView>,
        mut node: api::NodeStats,
        node_fs: std::path::PathBuf,
    ) -> Arc<Self> {
        node.max_pid = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Arc::new(Self {
            view,
            node,
            prev: Mutex::new(HashMap::new()),
            node_fs,
        })
    }
}

/// Current number of processes and threads (sysinfo's procs; the 4th field of /proc/loadavg
/// is `running/total`), the Summary API's `rlimit.curproc`.
fn cur_proc() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()
}

/// Capacity and use of the filesystem holding `path` (statvfs), the Summary API's node `fs`.
// The statvfs fields are u64 here but narrower on 32-bit targets: keep the conversions.
#[allow(clippy::useless_conversion)]
fn fs_stats(path: &std::path::Path) -> Option<api::FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable statvfs storage.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let frsize = u64::from(st.f_frsize);
    Some(api::FsStats {
        available_bytes: u64::from(st.f_bavail) * frsize,
        capacity_bytes: u64::from(st.f_blocks) * frsize,
        used_bytes: u64::from(st.f_blocks).saturating_sub(u64::from(st.f_bfree)) * frsize,
        inodes_free: u64::from(st.f_ffree),
        inodes: u64::from(st.f_files),
    })
}

/// nanocores from the previous reading of `key`, then remembers this one.
fn rate(prev: &mut Prev, key: &str, at: Option<SystemTime>, cpu_ns: u64) -> Option<u64> {
    let at = at?;
    let old = prev.insert(key.to_owned(), (at, cpu_ns));
    let (t0, c0) = old?;
    let dt = at.duration_since(t0).ok()?.as_nanos();
    (dt > 0 && cpu_ns >= c0).then(|| ((cpu_ns - c0) as u128 * 1_000_000_000 / dt) as u64)
}

fn usage(
    prev: &mut Prev,
    key: &str,
    at: Option<SystemTime>,
    cpu: Option<CpuStats>,
    memory: Option<MemoryStats>,
    oom_events: u64,
) -> api::Usage {
    let cpu_ns = cpu.map_or(0, |c| c.usage_ns);
    let m = memory.unwrap_or_default();
    api::Usage {
        timestamp: at,
        cpu_usage_ns: cpu_ns,
        cpu_usage_nano_cores: cpu.and_then(|_| rate(prev, key, at, cpu_ns)),
        memory_working_set_bytes: m.working_set_bytes,
        memory_usage_bytes: m.usage_bytes,
        memory_rss_bytes: m.rss_bytes,
        memory_cache_bytes: m.cache_bytes,
        page_faults: m.pgfault,
        major_page_faults: m.pgmajfault,
        oom_events,
        memory_limit_bytes: m.limit_bytes,
        cpu_throttled_periods: cpu.and_then(|c| c.throttled_periods),
        cpu_run_queue_ns: cpu.and_then(|c| c.run_queue_wait_ns),
        cpu_run_periods: cpu.and_then(|c| c.slices),
    }
}

impl StatsSource for ServerStats {
    fn health(&self) -> Option<api::TelemetryHealth> {
        let view = self.view.as_ref()?;
        Some(api::TelemetryHealth {
            source: match view.source() {
                crate::stats::Source::Ebpf => "ebpf",
                crate::stats::Source::Cgroupfs => "cgroupfs",
                crate::stats::Source::None => "none",
            },
            counters: view.counters(),
            programs: crate::ebpf::program_runs(view.stats.programs()),
        })
    }

    fn snapshot(&self) -> StatsSnapshot {
        let mut node = self.node.clone();
        node.cur_proc = cur_proc();
        node.fs = fs_stats(&self.node_fs).or_else(|| fs_stats(std::path::Path::new("/")));
        let Some(view) = &self.view else {
            return StatsSnapshot {
                node,
                pods: Vec::new(),
            };
        };
        // A poisoned lock only loses rate history.
        let mut prev = match self.prev.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let at = view.taken_at();
        let n = view.node();
        let now = Some(SystemTime::now());
        if let Some(cpu) = n.cpu_usage_ns {
            node.usage.timestamp = now;
            node.usage.cpu_usage_ns = cpu;
            node.usage.cpu_usage_nano_cores = rate(&mut prev, "/", now, cpu);
        }
        if let Some(ws) = n.memory_working_set_bytes {
            node.usage.memory_working_set_bytes = ws;
            node.memory_available_bytes = Some(node.memory_capacity_bytes.saturating_sub(ws));
        }
        let mut pods: HashMap<String, api::PodStats> = HashMap::new();
        for p in view.pod_totals() {
            pods.insert(
                p.pod.uid.clone(),
                api::PodStats {
                    namespace: p.pod.namespace.clone(),
                    name: p.pod.name.clone(),
                    uid: p.pod.uid.clone(),
                    cgroup: p.cgroup.clone(),
                    start_time: p.created_at,
                    usage: Some(usage(
                        &mut prev,
                        &p.cgroup,
                        at,
                        p.cpu,
                        p.memory,
                        p.oom_kills,
                    )),
                    containers: Vec::new(),
                },
            );
        }
        for c in view.containers() {
            let u = usage(&mut prev, &c.cgroup, at, c.cpu, c.memory, c.oom_kills);
            let pod = pods
                .entry(c.pod.uid.clone())
                .or_insert_with(|| api::PodStats {
                    namespace: c.pod.namespace.clone(),
                    name: c.pod.name.clone(),
                    uid: c.pod.uid.clone(),
                    ..Default::default()
                });
            pod.containers.push(api::ContainerStats {
                name: c.container,
                id: c.id,
                image: c.image,
                cgroup: c.cgroup,
                start_time: c.created_at,
                running: c.running,
                usage: u,
            });
        }
        // Rate history of cgroups that are gone.
        let live: std::collections::HashSet<String> = pods
            .values()
            .flat_map(|p| {
                std::iter::once(p.cgroup.clone())
                    .chain(p.containers.iter().map(|c| c.cgroup.clone()))
            })
            .collect();
        prev.retain(|k, _| k == "/" || live.contains(k));
        let mut pods: Vec<api::PodStats> = pods.into_values().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        StatsSnapshot { node, pods }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_needs_two_readings_and_is_in_nanocores() {
        let mut prev = Prev::new();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(rate(&mut prev, "/a", Some(t0), 1_000), None);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            rate(&mut prev, "/a", Some(t1), 1_000 + 1_000_000_000),
            Some(500_000_000)
        );
    }
}
