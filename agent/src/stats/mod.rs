//! Per-cgroup CPU, memory and OOM statistics: one writer, many cheap readers.
//!
//! Owns the node's current view of container resource use, keyed by cgroup path relative to
//! the hierarchy root (`/kubepods/pod<uid>/<id>`, the same on every v1 hierarchy and v2).
//! `ebpf/` is the writer (from BPF maps and the ring buffer) or, when BPF cannot load, the
//! cgroupfs poller in [`cgroupfs`]; eviction, the HTTP server and metrics read. The kubelet's
//! counterpart is cAdvisor's in-memory cache behind `pkg/kubelet/stats`.
//!
//! Shape follows kube-runtime's `reflector::store`: one [`StatsWriter`], cloneable
//! [`StatsStore`] handles. The writer publishes immutable [`Snapshot`]s behind an `Arc`, so a
//! read is a lock-protected `Arc` clone, never a copy of the map, and readers always see one
//! consistent sweep.
//!
//! Rates are part of what the writer publishes, not something a reader works out: CPU
//! nanocores are computed once per sweep in [`StatsWriter::publish`] (per cgroup) and
//! [`StatsWriter::publish_node`] (the node), from the previous sample and both sample times,
//! so every reader of one sweep sees the same rate (cAdvisor keeps them with its samples too;
//! the kubelet's Summary API only copies them out).

pub mod cgroupfs;
pub mod details;
#[cfg(test)]
mod details_bench;
pub mod fs_usage;
pub mod network;
pub mod on_demand;
pub mod pods;
pub mod psi;
pub mod runtime_fs;
pub mod summary;
pub mod system;
#[cfg(test)]
mod timers_bench;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// How many OOM events a snapshot keeps (oldest dropped first).
pub const RECENT_OOMS: usize = 64;

/// Where the numbers come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Source {
    /// Not decided yet: the store's state from creation until the writer has tried eBPF and
    /// settled on it or on the fallback (loading takes 0.1-0.2 s, more on a busy machine).
    #[default]
    Loading,
    /// No source: telemetry is off, or nothing could start (not even the fallback).
    None,
    /// BPF maps and ring buffer (`ebpf/`).
    Ebpf,
    /// Periodic cgroupfs reads (fallback, and the truth in tests).
    Cgroupfs,
}

impl Source {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Loading => "loading",
            Source::None => "none",
            Source::Ebpf => "ebpf",
            Source::Cgroupfs => "cgroupfs",
        }
    }
}

/// CPU use of one cgroup (including its descendants), cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// CPU time used, ns, comparable to `cpuacct.usage` / `cpu.stat usage_usec * 1000`.
    pub usage_ns: u64,
    /// CPU use since the previous sweep, in billionths of a core (the Summary API's
    /// `usageNanoCores`); `None` for a cgroup's first sample. Set by [`StatsWriter::publish`].
    pub usage_nano_cores: Option<u64>,
    /// Time its tasks waited runnable on a run queue, ns (eBPF only).
    pub run_queue_wait_ns: Option<u64>,
    /// Longest single run-queue wait since load, ns (eBPF only).
    pub run_queue_wait_max_ns: Option<u64>,
    /// Completed on-CPU slices (eBPF only).
    pub slices: Option<u64>,
    /// CFS periods in which the cgroup was throttled; `None` without a CPU limit (quota).
    pub throttled_periods: Option<u64>,
}

/// Memory use of one cgroup (including its descendants), in bytes unless noted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// `memory.usage_in_bytes` (v1) / `memory.current` (v2).
    pub usage_bytes: u64,
    /// usage minus inactive file pages, as cAdvisor and the kubelet compute it.
    pub working_set_bytes: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache_bytes: u64,
    /// Mapped file pages.
    pub mapped_file_bytes: u64,
    /// Shared memory (tmpfs, shm).
    pub shmem_bytes: u64,
    /// Inactive file pages.
    pub inactive_file_bytes: u64,
    /// Kernel memory charged to the cgroup.
    pub kernel_bytes: u64,
    /// Page faults.
    pub pgfault: u64,
    /// Major page faults.
    pub pgmajfault: u64,
    /// The cgroup's own limit (`None` when unlimited).
    pub limit_bytes: Option<u64>,
}

pub use crate::events::OomEvent;

/// Everything known about one cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU, if the cgroup exists in the CPU hierarchy.
    pub cpu: Option<CpuStats>,
    /// Memory, if the cgroup exists in the memory hierarchy.
    pub memory: Option<MemoryStats>,
    /// OOM kills in this cgroup (v1 `oom_control`/v2 `memory.events` `oom_kill` on cgroupfs;
    /// records seen since load on eBPF).
    pub oom_kills: u64,
    /// The last OOM kill, with victim details when eBPF saw it.
    pub last_oom: Option<OomEvent>,
}

/// Counters about the collection itself (exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectorCounters {
    /// Records read from the ring buffer.
    pub records_read: u64,
    /// Records the kernel submitted (kernel counter).
    pub records_produced: u64,
    /// Records the kernel dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Ring-buffer records user space could not parse (bad size or kind).
    pub malformed: u64,
    /// Map inserts the kernel could not do (map full), CPU and memory maps.
    pub map_full: u64,
    /// CPU slices not accounted because a switch was missed.
    pub cpu_slot_mismatch: u64,
    /// Largest |eBPF - file| memory usage difference found at the last re-baseline, bytes.
    pub memory_drift_bytes: u64,
    /// Largest |eBPF - file| CPU usage difference found at the last re-baseline, ns.
    pub cpu_drift_ns: u64,
    /// Seconds until the re-baseline after the last one (it grows while drift stays small).
    pub rebaseline_interval_s: u64,
    /// Passes that read every pod cgroup's files: the first build and each re-baseline.
    pub baseline_passes: u64,
    /// Thread CPU time those passes took, ns.
    pub baseline_cpu_ns: u64,
    /// Cgroup ids in the maps that could not be mapped to a path.
    pub unresolved_ids: u64,
    /// Telemetry events dropped because the event bus was full.
    pub events_dropped: u64,
    /// Sweeps done.
    pub sweeps: u64,
}

/// One consistent view, replaced as a whole by the writer.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Source of these numbers.
    pub source: Source,
    /// When the writer published it.
    pub taken_at: Option<SystemTime>,
    /// Per cgroup path (relative to the hierarchy root, starting with `/`).
    pub cgroups: HashMap<String, CgroupStats>,
    /// Node-wide working set, bytes, at the time of this snapshot (root memcg based; `None`
    /// if unknown). The latest is in [`StatsStore::node`].
    pub node_working_set_bytes: Option<u64>,
    /// Most recent OOM kills, oldest first, at most [`RECENT_OOMS`].
    pub recent_ooms: VecDeque<OomEvent>,
    /// Collection counters.
    pub counters: CollectorCounters,
}

impl Snapshot {
    /// Records an OOM kill against its cgroup (created if unknown) and in `recent_ooms`.
    pub fn record_oom(&mut self, event: OomEvent) {
        if let Some(path) = &event.cgroup {
            let entry = self.cgroups.entry(path.clone()).or_default();
            entry.oom_kills += 1;
            entry.last_oom = Some(event.clone());
        }
        if self.recent_ooms.len() == RECENT_OOMS {
            self.recent_ooms.pop_front();
        }
        self.recent_ooms.push_back(event);
    }
}

/// Node-wide figures of one sweep, published apart from the [`Snapshot`]: they move with any
/// use on the machine, and rebuilding a snapshot for them would cost more than the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSample {
    /// When the writer read them (the sample time, not the time of a later read of the
    /// store); `UNIX_EPOCH` before the first sample, whose values are all `None`.
    pub at: SystemTime,
    /// CPU time used by everything on the node, ns (root cgroup: v1 `cpuacct.usage`, v2
    /// `cpu.stat` `usage_usec`).
    pub cpu_usage_ns: Option<u64>,
    /// Node CPU use since the previous sample, in billionths of a core.
    pub cpu_usage_nano_cores: Option<u64>,
    /// Node working set, bytes (root memcg).
    pub memory_working_set_bytes: Option<u64>,
}

impl Default for NodeSample {
    fn default() -> Self {
        Self {
            at: UNIX_EPOCH,
            cpu_usage_ns: None,
            cpu_usage_nano_cores: None,
            memory_working_set_bytes: None,
        }
    }
}

/// Rate of a cumulative CPU counter between two samples, in billionths of a core; `None`
/// without a forward interval or if the counter went back (a new cgroup under an old path).
pub fn nano_cores(prev_ns: u64, prev_at: SystemTime, ns: u64, at: SystemTime) -> Option<u64> {
    let dt = at.duration_since(prev_at).ok()?.as_nanos();
    if dt == 0 || ns < prev_ns {
        return None;
    }
    Some(u64::try_from(u128::from(ns - prev_ns) * 1_000_000_000 / dt).unwrap_or(u64::MAX))
}

/// The snapshot, when the writer last confirmed it still holds, and the node sample.
#[derive(Debug, Default)]
struct Inner {
    snap: RwLock<Arc<Snapshot>>,
    /// Unix ns of the last [`StatsWriter::confirm`]; 0 = never.
    confirmed_ns: AtomicU64,
    /// Kernel ids of the eBPF programs feeding the store, by name (set once by the writer).
    programs: OnceLock<Vec<(&'static str, u32)>>,
    /// The latest node sample.
    node: RwLock<NodeSample>,
}

impl Inner {
    /// When the current snapshot was last known true (taken, or confirmed since).
    fn known_at(&self, snap: &Snapshot) -> Option<SystemTime> {
        let ns = self.confirmed_ns.load(Ordering::Relaxed);
        let confirmed = (ns > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ns));
        snap.taken_at.max(confirmed)
    }
}

type Shared = Arc<Inner>;

/// Read handle: cheap to clone, never blocks the writer for longer than an `Arc` swap.
#[derive(Clone, Debug)]
pub struct StatsStore {
    inner: Shared,
}

/// The only writer of the store.
#[derive(Debug)]
pub struct StatsWriter {
    inner: Shared,
}

/// A new empty store: its writer and a first read handle.
pub fn store() -> (StatsWriter, StatsStore) {
    let inner: Shared = Arc::default();
    (
        StatsWriter {
            inner: inner.clone(),
        },
        StatsStore { inner },
    )
}

impl StatsStore {
    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // A poisoned lock only means a writer panicked mid-swap; the Arc inside is whole.
        match self.inner.snap.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The latest node sample (CPU, its rate and the working set, with their sample time).
    pub fn node(&self) -> NodeSample {
        // A poisoned lock only means a writer panicked mid-store; the sample is `Copy`.
        match self.inner.node.read() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Kernel ids of the eBPF programs feeding the store (empty without eBPF).
    pub fn programs(&self) -> &[(&'static str, u32)] {
        self.inner
            .programs
            .get()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// When the current numbers were last known true: the snapshot's time, or later if the
    /// writer has since confirmed that nothing changed.
    pub fn taken_at(&self) -> Option<SystemTime> {
        self.inner.known_at(&self.snapshot())
    }

    /// Stats of one cgroup path, if known (tests compare single cgroups with their files).
    #[cfg(test)]
    pub fn get(&self, cgroup: &str) -> Option<CgroupStats> {
        self.snapshot().cgroups.get(cgroup).cloned()
    }

    /// Which source the current numbers come from.
    pub fn source(&self) -> Source {
        self.snapshot().source
    }
}

impl StatsWriter {
    /// A read handle on this writer's store.
    pub fn reader(&self) -> StatsStore {
        StatsStore {
            inner: self.inner.clone(),
        }
    }

    /// Replaces the snapshot, after setting each cgroup's CPU rate against the snapshot it
    /// replaces: usage then (at its `taken_at`, or the later time it was confirmed at: the
    /// usage still held then) and usage now (at `snapshot.taken_at`).
    pub fn publish(&self, mut snapshot: Snapshot) {
        let prev = self.current();
        let since = self.inner.known_at(&prev);
        for (path, stats) in &mut snapshot.cgroups {
            if let Some(cpu) = &mut stats.cpu {
                cpu.usage_nano_cores = match (since, snapshot.taken_at) {
                    (Some(t0), Some(t1)) => prev
                        .cgroups
                        .get(path)
                        .and_then(|p| p.cpu)
                        .and_then(|p| nano_cores(p.usage_ns, t0, cpu.usage_ns, t1)),
                    _ => None,
                };
            }
        }
        drop(prev);
        let snapshot = Arc::new(snapshot);
        match self.inner.snap.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Publishes the node's figures as read at `at`, with the CPU rate since the previous
    /// sample. Called once per sweep by whichever source runs.
    pub fn publish_node(
        &self,
        at: SystemTime,
        cpu_usage_ns: Option<u64>,
        memory_working_set_bytes: Option<u64>,
    ) {
        let mut guard = match self.inner.node.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let prev = *guard;
        let cpu_usage_nano_cores = match (prev.cpu_usage_ns, cpu_usage_ns) {
            (Some(c0), Some(c1)) => nano_cores(c0, prev.at, c1, at),
            _ => None,
        };
        *guard = NodeSample {
            at,
            cpu_usage_ns,
            cpu_usage_nano_cores,
            memory_working_set_bytes,
        };
    }

    /// Sets the source in place: the decision, published as soon as it is made (the first
    /// sweep follows), or [`Source::None`] when nothing will run.
    pub fn set_source(&self, source: Source) {
        if self.current().source != source {
            self.update(|s| s.source = source);
        }
    }

    /// Names the eBPF programs that feed this store (once; later calls are ignored).
    pub fn set_programs(&self, ids: Vec<(&'static str, u32)>) {
        let _ = self.inner.programs.set(ids);
    }

    /// Records that the current snapshot was found still true at `at` (no rebuild needed).
    /// Nothing moved since it was taken, so its CPU rates are now 0: set once, in place; a
    /// snapshot whose rates are all 0 already is left alone, so a quiet node copies nothing.
    pub fn confirm(&self, at: SystemTime) {
        if let Ok(d) = at.duration_since(UNIX_EPOCH) {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.inner.confirmed_ns.store(ns, Ordering::Relaxed);
        }
        let moving = |s: &Snapshot| {
            s.cgroups.values().any(|c| {
                c.cpu
                    .and_then(|c| c.usage_nano_cores)
                    .is_some_and(|r| r > 0)
            })
        };
        if moving(&self.current()) {
            self.update(|s| {
                for cpu in s.cgroups.values_mut().filter_map(|c| c.cpu.as_mut()) {
                    if cpu.usage_nano_cores.is_some() {
                        cpu.usage_nano_cores = Some(0);
                    }
                }
            });
        }
    }

    /// Edits the current snapshot in place (copy-on-write if readers hold it).
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut guard = match self.inner.snap.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(Arc::make_mut(&mut guard));
    }

    /// The current snapshot (what readers see).
    pub fn current(&self) -> Arc<Snapshot> {
        self.reader().snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    /// A snapshot taken at `secs` with one cgroup `/c` that has used `cpu_ns`.
    fn sweep(secs: u64, cpu_ns: u64) -> Snapshot {
        let mut snap = Snapshot {
            source: Source::Ebpf,
            taken_at: Some(at(secs)),
            ..Snapshot::default()
        };
        snap.cgroups.insert(
            "/c".into(),
            CgroupStats {
                cpu: Some(CpuStats {
                    usage_ns: cpu_ns,
                    ..CpuStats::default()
                }),
                ..CgroupStats::default()
            },
        );
        snap
    }

    fn rate(store: &StatsStore) -> Option<u64> {
        store
            .get("/c")
            .and_then(|c| c.cpu)
            .and_then(|c| c.usage_nano_cores)
    }

    #[test]
    fn a_new_store_says_loading_until_the_writer_decides() {
        let (writer, store) = store();
        assert_eq!(store.source(), Source::Loading);
        assert_eq!(Source::Loading.as_str(), "loading");
        writer.set_source(Source::Cgroupfs);
        assert_eq!(store.source(), Source::Cgroupfs);
        writer.set_source(Source::None);
        assert_eq!(store.source().as_str(), "none");
    }

    #[test]
    fn two_readers_in_one_sweep_both_see_the_rate() {
        let (writer, store) = store();
        let second = store.clone();
        writer.publish(sweep(0, 1_000));
        assert_eq!(rate(&store), None, "a first sample has no rate");
        writer.publish(sweep(2, 1_000 + 1_000_000_000));
        // Half a core over the 2 s between the two sweeps, for every reader, every read.
        for r in [&store, &second, &store, &second] {
            assert_eq!(rate(r), Some(500_000_000));
        }
    }

    #[test]
    fn a_quiet_sweep_sets_rates_to_zero_once_and_the_next_rate_starts_there() {
        let (writer, store) = store();
        writer.publish(sweep(0, 0));
        writer.publish(sweep(1, 250_000_000));
        assert_eq!(rate(&store), Some(250_000_000));
        writer.confirm(at(2));
        assert_eq!(rate(&store), Some(0), "nothing moved in the last second");
        let zeroed = store.snapshot();
        writer.confirm(at(3));
        assert!(
            Arc::ptr_eq(&zeroed, &store.snapshot()),
            "a snapshot already at 0 is not rebuilt on every quiet sweep"
        );
        // Usage still held at 3 s: the 1 s from there to 4 s carries all of the new use.
        writer.publish(sweep(4, 250_000_000 + 500_000_000));
        assert_eq!(rate(&store), Some(500_000_000));
    }

    #[test]
    fn a_counter_that_goes_back_has_no_rate() {
        assert_eq!(nano_cores(10, at(0), 5, at(1)), None);
        assert_eq!(nano_cores(10, at(1), 20, at(1)), None);
        assert_eq!(
            nano_cores(0, at(0), 3_000_000_000, at(1)),
            Some(3_000_000_000)
        );
    }

    #[test]
    fn the_node_sample_carries_its_sample_time_and_rate() {
        let (writer, store) = store();
        assert_eq!(store.node(), NodeSample::default());
        writer.publish_node(at(10), Some(5_000_000_000), Some(1 << 30));
        writer.publish_node(at(12), Some(7_000_000_000), Some(1 << 30));
        std::thread::sleep(Duration::from_millis(20));
        let (a, b) = (store.node(), store.clone().node());
        assert_eq!(a, b, "every reader sees the same sample");
        assert_eq!(a.at, at(12), "the time of the sample, not of the read");
        assert_eq!(a.cpu_usage_ns, Some(7_000_000_000));
        assert_eq!(a.cpu_usage_nano_cores, Some(1_000_000_000));
        assert_eq!(a.memory_working_set_bytes, Some(1 << 30));
    }

    #[test]
    fn readers_see_published_snapshot_and_keep_old_one() {
        let (writer, store) = store();
        let old = store.snapshot();
        let mut snap = Snapshot {
            source: Source::Ebpf,
            ..Snapshot::default()
        };
        snap.cgroups.insert("/a".into(), CgroupStats::default());
        writer.publish(snap);
        assert_eq!(store.source(), Source::Ebpf);
        assert!(store.get("/a").is_some());
        assert!(old.cgroups.is_empty(), "an old snapshot is immutable");
    }

    #[test]
    fn oom_is_counted_per_cgroup_and_recent_list_is_bounded() {
        let (writer, store) = store();
        for i in 0..(RECENT_OOMS + 3) {
            writer.update(|s| {
                s.record_oom(OomEvent {
                    cgroup: Some("/c".into()),
                    pid: Some(i as u32),
                    tgid: None,
                    comm: None,
                    kernel_ts_ns: None,
                    seen_at: SystemTime::now(),
                    ns_init: None,
                })
            });
        }
        let snap = store.snapshot();
        assert_eq!(snap.recent_ooms.len(), RECENT_OOMS);
        assert_eq!(snap.cgroups["/c"].oom_kills, (RECENT_OOMS + 3) as u64);
        assert_eq!(
            snap.cgroups["/c"].last_oom.as_ref().and_then(|o| o.pid),
            Some((RECENT_OOMS + 2) as u32)
        );
    }
}
