//! metrics): store snapshots regrouped per pod, CPU rates as the store's writer set them.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use super::PodStatsView;
use crate::stats::details::{CgroupDetails, Details, DetailsFeed};
use crate::stats::summary::{self as api, StatsSnapshot, StatsSource};
use crate::stats::{CpuStats, MemoryStats};
use tokio::sync::watch;

/// What the provider reads besides the pod view, each owned by its own task.
#[derive(Debug, Default)]
pub struct Feeds {
    /// The cgroup details sweep ([`crate::stats::details`]).
    pub details: Option<DetailsFeed>,
    /// The runtime's filesystems ([`crate::stats::runtime_fs`]).
    pub runtime_fs: Option<watch::Receiver<Option<api::RuntimeFs>>>,
    /// Filesystem use and block I/O ([`crate::stats::fs_usage`]).
    pub fs: Option<crate::stats::fs_usage::FsUsageReader>,
}

/// [`StatsSource`] over a [`PodStatsView`]; node capacity and static facts come from `node`.
#[derive(Debug)]
pub struct ServerStats {
    view: Option<PodStatsView>,
    node: api::NodeStats,
    /// The filesystem the Summary API reports as the node's (the kubelet's root dir).
    node_fs: std::path::PathBuf,
    feeds: Feeds,
}

impl ServerStats {
    /// A source; `view` is `None` when telemetry is off (usage then stays empty). `node_fs` is
    /// the directory whose filesystem is the node's `fs` (the kubelet uses its root dir).
    pub fn new(
        view: Option<PodStatsView>,
        mut node: api::NodeStats,
        node_fs: std::path::PathBuf,
        feeds: Feeds,
    ) -> Arc<Self> {
        node.max_pid = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Arc::new(Self {
            view,
            node,
            node_fs,
            feeds,
        })
    }

    fn details(&self) -> Arc<Details> {
        self.feeds
            .details
            .as_ref()
            .map(DetailsFeed::latest)
            .unwrap_or_default()
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
pub(crate) fn fs_stats(path: &std::path::Path) -> Option<api::FsStats> {
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

fn usage(
    at: Option<SystemTime>,
    cpu: Option<CpuStats>,
    memory: Option<MemoryStats>,
    oom_events: u64,
    details: (Option<&CgroupDetails>, Option<SystemTime>),
) -> api::Usage {
    let cpu_ns = cpu.map_or(0, |c| c.usage_ns);
    let m = memory.unwrap_or_default();
    api::Usage {
        timestamp: at,
        cpu_usage_ns: cpu_ns,
        cpu_usage_nano_cores: cpu.and_then(|c| c.usage_nano_cores),
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
        details: details.0.copied(),
        details_at: details.1,
        network: None,
        io: None,
        io_at: None,
    }
}

/// Usage of a cgroup only the details sweep reads (system containers outside the pods root).
fn details_usage(d: &CgroupDetails, at: Option<SystemTime>) -> api::Usage {
    let m = d.memory.unwrap_or_default();
    api::Usage {
        timestamp: at,
        cpu_usage_ns: d.cpu.and_then(|c| c.usage_ns).unwrap_or(0),
        memory_working_set_bytes: m.working_set_bytes,
        memory_usage_bytes: m.usage_bytes,
        memory_rss_bytes: m.rss_bytes,
        memory_cache_bytes: m.cache_bytes,
        page_faults: m.total_pgfault,
        major_page_faults: m.total_pgmajfault,
        memory_limit_bytes: Some(m.limit_bytes).filter(|&l| l > 0),
        details: Some(*d),
        details_at: at,
        ..api::Usage::default()
    }
}

impl StatsSource for ServerStats {
    fn health(&self) -> Option<api::TelemetryHealth> {
        let view = self.view.as_ref()?;
        Some(api::TelemetryHealth {
            source: view.source().as_str(),
            counters: view.counters(),
            program_ids: view.stats.programs().to_vec(),
            details: self.feeds.details.as_ref().map(|feed| {
                let d = feed.latest();
                (d.sweeps, d.took, d.cgroups.len())
            }),
        })
    }

    fn refresh(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let details = async {
                if let Some(feed) = &self.feeds.details {
                    feed.read().await;
                }
            };
            let fs = async {
                if let Some(fs) = &self.feeds.fs {
                    fs.read().await;
                }
            };
            tokio::join!(details, fs);
        })
    }

    fn snapshot(&self) -> StatsSnapshot {
        let mut node = self.node.clone();
        node.cur_proc = cur_proc();
        node.fs = fs_stats(&self.node_fs).or_else(|| fs_stats(std::path::Path::new("/")));
        node.runtime_fs = self
            .feeds
            .runtime_fs
            .as_ref()
            .and_then(|rx| rx.borrow().clone());
        let Some(view) = &self.view else {
            return StatsSnapshot {
                node,
                pods: Vec::new(),
                container_scrape_error: true,
            };
        };
        let details = self.details();
        let dat = details.taken_at;
        let det = |path: &str| (details.cgroups.get(path), dat);
        // Rates come with the numbers: computed once per sweep by the store's writer.
        let at = view.taken_at();
        let n = view.node();
        if let Some(cpu) = n.cpu_usage_ns {
            node.usage.timestamp = Some(n.at);
            node.usage.cpu_usage_ns = cpu;
            node.usage.cpu_usage_nano_cores = n.cpu_usage_nano_cores;
        }
        let root = details.cgroups.get("/");
        node.usage.details = root.copied();
        node.usage.network = details.networks.get("/").cloned();
        node.usage.details_at = dat;
        let root_mem = root.and_then(|r| r.memory);
        if let Some(m) = root_mem {
            node.usage.memory_rss_bytes = m.rss_bytes;
            node.usage.memory_cache_bytes = m.cache_bytes;
            node.usage.page_faults = m.total_pgfault;
            node.usage.major_page_faults = m.total_pgmajfault;
        }
        if let Some(ws) = n.memory_working_set_bytes {
            node.usage.memory_working_set_bytes = ws;
            node.memory_available_bytes = Some(node.memory_capacity_bytes.saturating_sub(ws));
            // The working set is sampled every sweep, the root's inactive file pages with the
            // details: usage = working set + inactive file, so it never falls below it.
            node.usage.memory_usage_bytes = ws + root_mem.map_or(0, |m| m.inactive_file_bytes);
        } else if let Some(m) = root_mem {
            node.usage.memory_working_set_bytes = m.working_set_bytes;
            node.usage.memory_usage_bytes = m.usage_bytes;
            node.usage.timestamp = node.usage.timestamp.or(dat);
        }
        let snap = view.snapshot();
        for (name, path) in [
            ("kubelet", &details.system.kubelet),
            ("runtime", &details.system.runtime),
            ("pods", &details.system.pods),
        ] {
            let Some(path) = path else { continue };
            let d = details.cgroups.get(path.as_str());
            // The store's numbers are fresher where it has them (the pods root).
            let u = match snap.cgroups.get(path.as_str()) {
                Some(s) => usage(at, s.cpu, s.memory, s.oom_kills, det(path)),
                None => match d {
                    Some(d) => details_usage(d, dat),
                    None => continue,
                },
            };
            node.system_containers.push(api::SystemContainer {
                name,
                start_time: d.and_then(|d| d.created),
                usage: u,
            });
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
                    usage: Some(api::Usage {
                        network: details.networks.get(&p.cgroup).cloned(),
                        ..usage(at, p.cpu, p.memory, p.oom_kills, det(&p.cgroup))
                    }),
                    containers: Vec::new(),
                    ..Default::default()
                },
            );
        }
        for c in view.containers() {
            let u = usage(at, c.cpu, c.memory, c.oom_kills, det(&c.cgroup));
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
                ..Default::default()
            });
        }
        let mut pods: Vec<api::PodStats> = pods.into_values().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        if let Some(fs) = &self.feeds.fs {
            crate::stats::fs_usage::merge::apply(&fs.snapshot(), &mut pods, node.fs.as_ref());
        }
        let source = view.source();
        StatsSnapshot {
            node,
            pods,
            container_scrape_error: matches!(
                source,
                crate::stats::Source::None | crate::stats::Source::Loading
            ) || (self.feeds.details.is_some() && details.sweeps == 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::PodRef;
    use crate::stats::{CgroupStats, Snapshot, Source};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn every_read_of_one_sweep_gets_the_rate_and_the_node_its_sample_time() {
        let (writer, store) = crate::stats::store();
        let view = PodStatsView::new(store);
        let mut index = super::super::Index::default();
        let pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "a".into(),
        };
        index.pods.insert("a".into(), pod);
        *view.index.write().expect("not poisoned") = Arc::new(index);
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let t1 = t0 + Duration::from_secs(2);
        for (at, ns) in [(t0, 0), (t1, 1_000_000_000)] {
            let mut snap = Snapshot {
                source: Source::Ebpf,
                taken_at: Some(at),
                ..Snapshot::default()
            };
            let cpu = CpuStats {
                usage_ns: ns,
                ..CpuStats::default()
            };
            snap.cgroups.insert(
                "/r/kubepods/poda".into(),
                CgroupStats {
                    cpu: Some(cpu),
                    ..CgroupStats::default()
                },
            );
            writer.publish(snap);
        }
        writer.publish_node(t0, Some(0), Some(1 << 20));
        writer.publish_node(t1, Some(4_000_000_000), Some(1 << 20));
        let stats = ServerStats::new(
            Some(view),
            api::NodeStats::default(),
            "/".into(),
            Feeds::default(),
        );
        // Two readers of the same sweep (a scrape and /stats/summary): the same answer.
        for read in [stats.snapshot(), stats.snapshot()] {
            let pod = read.pods.first().and_then(|p| p.usage.clone());
            assert_eq!(pod.and_then(|u| u.cpu_usage_nano_cores), Some(500_000_000));
            assert_eq!(read.node.usage.cpu_usage_nano_cores, Some(2_000_000_000));
            assert_eq!(
                read.node.usage.timestamp,
                Some(t1),
                "stamped with the sample time"
            );
        }
    }
}
