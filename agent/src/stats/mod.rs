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

pub mod cgroupfs;

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
    /// Nothing published yet.
    #[default]
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

/// One OOM kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomEvent {
    /// Cgroup path of the victim (memory hierarchy); `None` if it could not be resolved.
    pub cgroup: Option<String>,
    /// Victim thread id (eBPF only).
    pub pid: Option<u32>,
    /// Victim process id (eBPF only).
    pub tgid: Option<u32>,
    /// Victim command name (eBPF only).
    pub comm: Option<String>,
    /// When the kernel chose the victim (CLOCK_MONOTONIC ns) (eBPF only).
    pub kernel_ts_ns: Option<u64>,
    /// When the agent learnt of it.
    pub seen_at: SystemTime,
}

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
    /// Node-wide working set, bytes (root memcg based; `None` if unknown).
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

/// The snapshot, and when the writer last confirmed it still holds.
#[derive(Debug, Default)]
struct Inner {
    snap: RwLock<Arc<Snapshot>>,
    /// Unix ns of the last [`StatsWriter::confirm`]; 0 = never.
    confirmed_ns: AtomicU64,
    /// Kernel ids of the eBPF programs feeding the store, by name (set once by the writer).
    programs: OnceLock<Vec<(&'static str, u32)>>,
    /// Node working set, bytes, when the writer keeps it apart from snapshots; 0 = not kept.
    node_ws: AtomicU64,
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

    /// Node working set, bytes: the writer's latest, else the snapshot's.
    pub fn node_working_set_bytes(&self) -> Option<u64> {
        match self.inner.node_ws.load(Ordering::Relaxed) {
            0 => self.snapshot().node_working_set_bytes,
            b => Some(b),
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
        let taken = self.snapshot().taken_at;
        let ns = self.inner.confirmed_ns.load(Ordering::Relaxed);
        let confirmed = (ns > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ns));
        taken.max(confirmed)
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

    /// Replaces the snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        match self.inner.snap.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Publishes the node working set apart from the snapshot (it changes with any memory
    /// use on the machine; rebuilding a snapshot for it would cost more than the rest).
    pub fn set_node_working_set(&self, bytes: u64) {
        self.inner.node_ws.store(bytes.max(1), Ordering::Relaxed);
    }

    /// Names the eBPF programs that feed this store (once; later calls are ignored).
    pub fn set_programs(&self, ids: Vec<(&'static str, u32)>) {
        let _ = self.inner.programs.set(ids);
    }

    /// Records that the current snapshot was found still true at `at` (no rebuild needed).
    pub fn confirm(&self, at: SystemTime) {
        if let Ok(d) = at.duration_since(UNIX_EPOCH) {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.inner.confirmed_ns.store(ns, Ordering::Relaxed);
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

    #[test]
    fn readers_see_published_snapshot_and_keep_old_one() {
        let (writer, store) = store();
        assert_eq!(store.source(), Source::None);
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
