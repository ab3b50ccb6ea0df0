//! Turns the BPF maps into store snapshots.
//!
//! The kernel keeps per-cgroup totals since load (CPU) or since an entry was created (memory
//! deltas); both are local to the cgroup, not hierarchical. A sweep reads each map once, maps
//! ids to paths, sums every cgroup into itself and its ancestors (cpuacct and memory files
//! are hierarchical), and adds a baseline read once from the cgroup's files when the path is
//! first seen: `value = file value at baseline + (sum now - sum at baseline)`. The files are
//! read again after `rebaseline_every`; the largest differences found are exported as drift,
//! and map entries of removed cgroups are deleted then. While the drift stays small the
//! interval doubles up to `rebaseline_max`: a pass reads every pod cgroup's files, which is
//! most of what the agent spends on an idle node, and the traced numbers have not needed it.
//!
//! CPU time of slices still running is not in the map (it is added at switch-out). The sweep
//! adds it from CPU_SLOTS and `/proc/<tid>/schedstat` (the same `sum_exec_runtime`), reading
//! the slots before and after, and keeping a CPU's correction only if its slot did not change.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use agent_common::{MemAcct, mem_item};

mod maps;
mod snapshot;

use snapshot::pages_delta;

use super::{EbpfError, ids::CgroupIds, loader::Telemetry};
use crate::stats::{MemoryStats, Snapshot, cgroupfs::CgroupLayout};

/// Local (non-hierarchical) CPU sums of one cgroup or subtree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSums {
    /// On-CPU ns (maps plus in-flight slices).
    pub run_ns: u64,
    /// Run-queue wait ns.
    pub wait_ns: u64,
    /// Slices.
    pub slices: u64,
    /// Longest wait.
    pub wait_max_ns: u64,
}

impl CpuSums {
    fn add(&mut self, o: &CpuSums) {
        self.run_ns = self.run_ns.wrapping_add(o.run_ns);
        self.wait_ns = self.wait_ns.wrapping_add(o.wait_ns);
        self.slices = self.slices.wrapping_add(o.slices);
        self.wait_max_ns = self.wait_max_ns.max(o.wait_max_ns);
    }
}

/// Memory delta sums of one memcg or subtree (pages; faults as counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemSums {
    /// Per [`mem_item`] slot.
    pub pages: [i64; mem_item::COUNT],
    /// Charged pages (usage).
    pub charged: i64,
    /// Page faults.
    pub pgfault: i64,
    /// Major faults.
    pub pgmajfault: i64,
}

impl MemSums {
    fn add(&mut self, o: &MemSums) {
        for (a, b) in self.pages.iter_mut().zip(o.pages) {
            *a = a.wrapping_add(b);
        }
        self.charged = self.charged.wrapping_add(o.charged);
        self.pgfault = self.pgfault.wrapping_add(o.pgfault);
        self.pgmajfault = self.pgmajfault.wrapping_add(o.pgmajfault);
    }
}

impl From<&MemAcct> for MemSums {
    fn from(m: &MemAcct) -> Self {
        Self {
            pages: m.pages,
            charged: m.charged_pages,
            pgfault: m.pgfault as i64,
            pgmajfault: m.pgmajfault as i64,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct CpuBaseline {
    file_ns: u64,
    at: CpuSums,
}

#[derive(Clone, Copy, Debug)]
struct MemBaseline {
    file: MemoryStats,
    at: MemSums,
}

#[derive(Clone, Copy, Debug)]
struct NodeBaseline {
    ws_bytes: u64,
    ws_pages_at: i64,
}

/// Sweep settings.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Only cgroups at or below these paths are published (empty: all).
    pub roots: Vec<String>,
    /// How soon baselines are re-read from the cgroup files (and again after any drift).
    pub rebaseline_every: Duration,
    /// Longest re-baseline interval, reached by doubling while passes find no drift.
    pub rebaseline_max: Duration,
    /// Memory drift up to this many bytes lets the interval grow.
    pub quiet_drift_bytes: u64,
    /// CPU drift up to this many ns lets the interval grow. A busy container runs on while a
    /// pass reads its file after the maps, so a few ms show up without any real drift.
    pub quiet_drift_cpu_ns: u64,
    /// Minimum time between two hierarchy walks for unknown ids.
    pub min_walk_interval: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            roots: Vec::new(),
            rebaseline_every: Duration::from_secs(60),
            rebaseline_max: Duration::from_secs(600),
            quiet_drift_bytes: 512 << 10,
            quiet_drift_cpu_ns: 100_000_000,
            min_walk_interval: Duration::from_secs(5),
        }
    }
}

/// Reads the maps into snapshots; owns the id index and the baselines.
pub struct Collector {
    cfg: CollectorConfig,
    layout: CgroupLayout,
    /// id -> path index (updated by the run loop from mkdir/rmdir records).
    pub ids: CgroupIds,
    cpu_h: u32,
    mem_h: u32,
    page: i64,
    granule: i64,
    cpu_base: HashMap<String, CpuBaseline>,
    mem_base: HashMap<String, MemBaseline>,
    node_base: Option<NodeBaseline>,
    /// Removed cgroups: still summed into their ancestors until the next re-baseline.
    dead: HashMap<(u32, u64), String>,
    last_rebaseline: Instant,
    /// Time from one re-baseline to the next (see [`CollectorConfig::rebaseline_max`]).
    rebaseline_interval: Duration,
    drift_bytes: u64,
    cpu_drift_ns: u64,
    /// Passes that read every cgroup's files (the first build and re-baselines).
    baseline_passes: u64,
    /// Thread CPU time those passes took, ns.
    baseline_cpu_ns: u64,
    /// (hierarchy, id) with map entries created here: the in-kernel filter's allow list.
    registered: HashSet<(u32, u64)>,
    /// `ids.generation` at the last registration pass.
    registered_gen: Option<u64>,
    /// Entries that could not be created (map full); counted with the kernel's map-full.
    register_failed: u64,
    /// Last value written to MEM_GEN.
    mem_gen: u64,
    /// Raw bytes and scalars of the previous read, to skip sweeps that would change nothing.
    last_read: Vec<u8>,
    /// A cgroup went away since the last snapshot: the next one must drop it.
    removed_since_build: bool,
    /// [`quick_fingerprint`](Self::quick_fingerprint) before the last full read.
    last_quick: Option<Vec<u64>>,
    /// Each CPU slot's switch count at the last sweep (a CPU with no switch since is probed).
    last_seqs: Vec<u64>,
}

/// Is `path` at or below one of `roots` (all paths if `roots` is empty)?
pub fn under_roots(roots: &[String], path: &str) -> bool {
    roots.is_empty()
        || roots.iter().any(|r| {
            let r = r.trim_end_matches('/');
            r.is_empty()
                || path == r
                || (path.starts_with(r) && path.as_bytes().get(r.len()) == Some(&b'/'))
        })
}

impl Collector {
    /// A collector for a loaded object; creates the map entries of the cgroups under the roots.
    pub fn new(t: &mut Telemetry, cfg: CollectorConfig) -> Self {
        let mut ids = CgroupIds::new(cfg.min_walk_interval);
        for h in [t.cpu_hierarchy, t.memory_hierarchy] {
            if let Some(m) = t.layout.hierarchy_mount(h) {
                ids.track(h, m);
                // Start-up walk: cgroups that existed before load (mkdir records cover the
                // rest). A failure only delays resolution to the first unknown id.
                if let Err(e) = ids.walk_if_due(h) {
                    tracing::warn!(hierarchy = h, error = %e, "walking cgroup hierarchy failed");
                }
            }
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let mut c = Self {
            layout: t.layout.clone(),
            ids,
            cpu_h: t.cpu_hierarchy,
            mem_h: t.memory_hierarchy,
            page: if page > 0 { page as i64 } else { 4096 },
            granule: t.mark_granule_pages,
            cpu_base: HashMap::new(),
            mem_base: HashMap::new(),
            node_base: None,
            dead: HashMap::new(),
            last_rebaseline: Instant::now(),
            rebaseline_interval: cfg.rebaseline_every,
            drift_bytes: 0,
            cpu_drift_ns: 0,
            baseline_passes: 0,
            baseline_cpu_ns: 0,
            registered: HashSet::new(),
            registered_gen: None,
            register_failed: 0,
            mem_gen: 0,
            last_read: Vec::new(),
            removed_since_build: false,
            last_quick: None,
            last_seqs: Vec::new(),
            cfg,
        };
        c.register_new(t);
        c
    }

    /// Hierarchy id of CPU keys.
    #[cfg(test)]
    pub fn cpu_hierarchy(&self) -> u32 {
        self.cpu_h
    }

    /// Hierarchy id of memory keys.
    #[cfg(test)]
    pub fn memory_hierarchy(&self) -> u32 {
        self.mem_h
    }

    /// A cgroup was removed: keep its path for aggregation until the next re-baseline.
    pub fn cgroup_removed(&mut self, hierarchy_id: u32, id: u64) {
        // One removed elsewhere on the machine was never published: nothing to rebuild.
        if let Some(path) = self.ids.remove(hierarchy_id, id)
            && under_roots(&self.cfg.roots, &path)
        {
            self.dead.insert((hierarchy_id, id), path);
            self.removed_since_build = true;
        }
    }

    /// Path of a memcg id, walking the memory hierarchy once if it is unknown.
    pub fn memcg_path(&mut self, id: u64) -> Option<String> {
        self.resolve(self.mem_h, id)
    }

    fn resolve(&mut self, h: u32, id: u64) -> Option<String> {
        if let Some(p) = self.ids.path(h, id) {
            return Some(p.to_owned());
        }
        if let Some(p) = self.dead.get(&(h, id)) {
            return Some(p.clone());
        }
        match self.ids.walk_if_due(h) {
            Ok(true) => self.ids.path(h, id).map(str::to_owned),
            _ => None,
        }
    }

    fn paths_of<T: Copy>(
        &mut self,
        h: u32,
        by_id: &HashMap<u64, T>,
        unresolved: &mut u64,
    ) -> Vec<(String, T, bool)> {
        let mut out = Vec::with_capacity(by_id.len());
        for (&id, &v) in by_id {
            match self.resolve(h, id) {
                Some(p) => {
                    let dead = self.dead.contains_key(&(h, id));
                    out.push((p, v, dead));
                }
                None => *unresolved += 1,
            }
        }
        out
    }

    /// One sweep: maps -> snapshot. `prev` provides OOM history; `reader` the user-side
    /// ring-buffer counters. (The run loop uses [`sweep_if_changed`](Self::sweep_if_changed).)
    #[cfg(test)]
    pub fn sweep(
        &mut self,
        t: &mut Telemetry,
        prev: &Snapshot,
        reader: (u64, u64),
    ) -> Result<Snapshot, EbpfError> {
        self.register_new(t);
        let (read, _) = self.read_maps(t)?;
        Ok(self.build(t, read, prev, reader))
    }

    /// One sweep: a new snapshot, or `None` when no pod cgroup's numbers changed since the
    /// last sweep, none went away and no re-baseline is due (an idle node costs a few
    /// syscalls a second, no rebuild); and the node working set, which moves with any memory
    /// use on the machine and so is published apart from the snapshot.
    pub fn sweep_if_changed(
        &mut self,
        t: &mut Telemetry,
        prev: &Snapshot,
        reader: (u64, u64),
    ) -> Result<(Option<Snapshot>, Option<u64>), EbpfError> {
        self.register_new(t);
        // Ring-buffer records are not a reason to rebuild: OOM kills reach the store as they
        // come, cgroups made under the roots show as new registrations, and one made anywhere
        // else on the machine changes nothing here. The caller updates the reader's counts.
        let due = self.rebaseline_due();
        let steady = !due && !self.removed_since_build;
        // Two cheap reads first: on a quiet node that is the whole sweep.
        let quick = self.quick_fingerprint(t)?;
        if steady && quick.is_some() && quick == self.last_quick {
            let pages = self.read_node_ws_pages(t)?;
            return Ok((None, self.node_ws_bytes(pages)));
        }
        self.last_quick = quick;
        let (read, changed) = self.read_maps(t)?;
        let node_ws_pages = read.node_ws_pages;
        let snap = if !changed && steady {
            None
        } else {
            Some(self.build(t, read, prev, reader))
        };
        Ok((snap, self.node_ws_bytes(node_ws_pages)))
    }

    /// Whether this sweep re-reads the files. Removed cgroups wait at most the shortest
    /// interval: their map entries go only then, and churn must not fill the maps.
    fn rebaseline_due(&self) -> bool {
        let since = self.last_rebaseline.elapsed();
        since >= self.rebaseline_interval
            || (!self.dead.is_empty() && since >= self.cfg.rebaseline_every)
    }

    /// Node working set from the traced node-wide pages and the root memcg baseline.
    fn node_ws_bytes(&self, node_ws_pages: i64) -> Option<u64> {
        self.node_base
            .map(|b| pages_delta(b.ws_bytes, node_ws_pages, b.ws_pages_at, self.page))
    }

    /// Usage in bytes that a memcg counter value from a mark record stands for, if the path
    /// has a baseline. Leaf cgroups only: marks are on a memcg's own charges, and for a leaf
    /// the subtree sum in the baseline is its own counter.
    pub fn mark_value_bytes(&self, path: &str, value_pages: i64) -> Option<u64> {
        let base = self.mem_base.get(path)?;
        Some(pages_delta(
            base.file.usage_bytes,
            value_pages,
            base.at.charged,
            self.page,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_match_whole_path_components() {
        let roots = vec!["/kubepods".to_owned()];
        assert!(under_roots(&roots, "/kubepods"));
        assert!(under_roots(&roots, "/kubepods/pod1/c"));
        assert!(!under_roots(&roots, "/kubepodsX"));
        assert!(!under_roots(&roots, "/"));
        assert!(under_roots(&[], "/anything"));
    }
}
