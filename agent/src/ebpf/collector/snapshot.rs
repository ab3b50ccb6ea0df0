//! Building a store snapshot from one read of the maps: ids to paths, subtree sums, the
//! baselines read from the cgroup files, and the re-baselines that correct them.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use agent_common::{counter, mem_item};

use super::{
    Collector, CollectorConfig, CpuBaseline, CpuSums, MemBaseline, MemSums, NodeBaseline,
    maps::MapRead, under_roots,
};
use crate::ebpf::loader::Telemetry;
use crate::stats::{CollectorCounters, CpuStats, MemoryStats, Snapshot, Source, cgroupfs};

/// `path` and its ancestors that are under `roots`, deepest first.
fn self_and_ancestors<'a>(
    roots: &'a [String],
    path: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let cur = next?;
        next = if cur == "/" {
            None
        } else {
            match cur.rfind('/') {
                Some(0) => Some("/"),
                Some(i) => Some(&cur[..i]),
                None => None,
            }
        };
        Some(cur)
    })
    .filter(move |p| under_roots(roots, p))
}

/// Sums per-cgroup values into every tracked ancestor.
fn aggregate<T: Default + Copy>(
    roots: &[String],
    items: impl Iterator<Item = (String, T)>,
    add: impl Fn(&mut T, &T),
) -> HashMap<String, T> {
    let mut out: HashMap<String, T> = HashMap::new();
    for (path, v) in items {
        for p in self_and_ancestors(roots, &path) {
            add(out.entry(p.to_owned()).or_default(), &v);
        }
    }
    out
}

/// The interval after a re-baseline that found these drifts: doubled while they are small,
/// back to the shortest after any real one.
fn next_rebaseline(
    cfg: &CollectorConfig,
    now: Duration,
    mem_drift: u64,
    cpu_drift: u64,
) -> Duration {
    if mem_drift <= cfg.quiet_drift_bytes && cpu_drift <= cfg.quiet_drift_cpu_ns {
        (now * 2).clamp(
            cfg.rebaseline_every,
            cfg.rebaseline_max.max(cfg.rebaseline_every),
        )
    } else {
        cfg.rebaseline_every
    }
}

/// CPU time of the calling thread, ns (`None` if the clock cannot be read).
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

pub(super) fn pages_delta(base_bytes: u64, now: i64, at: i64, page: i64) -> u64 {
    let v = base_bytes as i128 + (now as i128 - at as i128) * page as i128;
    v.clamp(0, u64::MAX as i128) as u64
}

fn count_delta(base: u64, now: i64, at: i64) -> u64 {
    let v = base as i128 + (now as i128 - at as i128);
    v.clamp(0, u64::MAX as i128) as u64
}

impl Collector {
    /// One map read as a snapshot: baselines for paths seen the first time, and every
    /// path's files read again when a re-baseline is due.
    pub(super) fn build(
        &mut self,
        t: &mut Telemetry,
        read: MapRead,
        prev: &Snapshot,
        reader: (u64, u64),
    ) -> Snapshot {
        let MapRead {
            cpu,
            throttled,
            mem,
            kernel,
            node_ws_pages,
            at,
        } = read;
        self.removed_since_build = false;
        let rebaseline = self.rebaseline_due();
        let full_pass = rebaseline || (self.cpu_base.is_empty() && self.mem_base.is_empty());
        let cpu_at_start = if full_pass { thread_cpu_ns() } else { None };
        let throttled: HashMap<String, u64> = throttled
            .iter()
            .filter_map(|(id, n)| self.ids.path(self.cpu_h, *id).map(|p| (p.to_owned(), *n)))
            .collect();
        let mut unresolved = 0;
        let cpu_paths = self.paths_of(self.cpu_h, &cpu, &mut unresolved);
        let mem_paths = self.paths_of(self.mem_h, &mem, &mut unresolved);
        let roots = self.cfg.roots.clone();
        let mut cpu_tree = aggregate(
            &roots,
            cpu_paths.iter().map(|(p, v, _)| (p.clone(), *v)),
            CpuSums::add,
        );
        let mut mem_tree = aggregate(
            &roots,
            mem_paths.iter().map(|(p, v, _)| (p.clone(), *v)),
            MemSums::add,
        );
        // Cgroups whose tasks have not run (or charged) since load still get published: their
        // baseline is all there is.
        for p in self
            .ids
            .paths(self.cpu_h)
            .filter(|p| under_roots(&roots, p))
        {
            cpu_tree.entry(p.to_owned()).or_default();
        }
        for p in self
            .ids
            .paths(self.mem_h)
            .filter(|p| under_roots(&roots, p))
        {
            mem_tree.entry(p.to_owned()).or_default();
        }
        let dead_paths: HashSet<&str> = self.dead.values().map(String::as_str).collect();

        let (cpu_live, mem_live) = if rebaseline {
            (
                aggregate(
                    &roots,
                    cpu_paths
                        .iter()
                        .filter(|e| !e.2)
                        .map(|(p, v, _)| (p.clone(), *v)),
                    CpuSums::add,
                ),
                aggregate(
                    &roots,
                    mem_paths
                        .iter()
                        .filter(|e| !e.2)
                        .map(|(p, v, _)| (p.clone(), *v)),
                    MemSums::add,
                ),
            )
        } else {
            (HashMap::new(), HashMap::new())
        };

        let mut snap = Snapshot {
            source: Source::Ebpf,
            taken_at: Some(at),
            recent_ooms: prev.recent_ooms.clone(),
            ..Snapshot::default()
        };
        let mut drift: u64 = 0;
        let mut cpu_drift: u64 = 0;

        for (path, sums) in &cpu_tree {
            if dead_paths.contains(path.as_str()) {
                continue;
            }
            let base = match self.cpu_base.get(path) {
                Some(b) => *b,
                // The usage file alone: throttling comes from the maps, and the limit and
                // `cpu.stat` files read for it would double a re-baseline's opens.
                None => match cgroupfs::read_cpu_usage(&self.layout, path) {
                    Ok(Some(file_ns)) => {
                        let b = CpuBaseline { file_ns, at: *sums };
                        self.cpu_base.insert(path.clone(), b);
                        b
                    }
                    // Gone, or no cpuacct file: nothing to publish for it.
                    _ => continue,
                },
            };
            let usage_ns = count_delta(base.file_ns, sums.run_ns as i64, base.at.run_ns as i64);
            snap.cgroups.entry(path.clone()).or_default().cpu = Some(CpuStats {
                usage_ns,
                run_queue_wait_ns: Some(sums.wait_ns),
                run_queue_wait_max_ns: Some(sums.wait_max_ns),
                slices: Some(sums.slices),
                throttled_periods: throttled.get(path).copied(),
                // Filled by the store's writer at publish time.
                usage_nano_cores: None,
            });
            if rebaseline && let Ok(Some(file_ns)) = cgroupfs::read_cpu_usage(&self.layout, path) {
                cpu_drift = cpu_drift.max(usage_ns.abs_diff(file_ns));
                let live = cpu_live.get(path).copied().unwrap_or_default();
                self.cpu_base
                    .insert(path.clone(), CpuBaseline { file_ns, at: live });
            }
        }

        for (path, sums) in &mem_tree {
            if dead_paths.contains(path.as_str()) {
                continue;
            }
            let base = match self.mem_base.get(path) {
                Some(b) => *b,
                None => match cgroupfs::read_memory(&self.layout, path) {
                    Ok(Some(m)) => {
                        let b = MemBaseline { file: m, at: *sums };
                        self.mem_base.insert(path.clone(), b);
                        b
                    }
                    _ => continue,
                },
            };
            let stats = self.memory_from(&base, sums);
            snap.cgroups.entry(path.clone()).or_default().memory = Some(stats);
            if rebaseline && let Ok(Some(m)) = cgroupfs::read_memory(&self.layout, path) {
                drift = drift.max(stats.usage_bytes.abs_diff(m.usage_bytes));
                let live = mem_live.get(path).copied().unwrap_or_default();
                self.mem_base
                    .insert(path.clone(), MemBaseline { file: m, at: live });
            }
        }

        // Node working set (root memcg files on v1; unknown where the root has none).
        if (self.node_base.is_none() || rebaseline)
            && let Ok(Some(root)) = cgroupfs::read_memory(&self.layout, "/")
        {
            self.node_base = Some(NodeBaseline {
                ws_bytes: root.working_set_bytes,
                ws_pages_at: node_ws_pages,
            });
        }
        snap.node_working_set_bytes = self.node_ws_bytes(node_ws_pages);

        // Keep OOM history of every cgroup.
        for (path, old) in &prev.cgroups {
            if old.oom_kills > 0 {
                let e = snap.cgroups.entry(path.clone()).or_default();
                e.oom_kills = old.oom_kills;
                e.last_oom = old.last_oom.clone();
            }
        }

        if rebaseline {
            self.last_rebaseline = Instant::now();
            self.drift_bytes = drift;
            self.cpu_drift_ns = cpu_drift;
            self.rebaseline_interval =
                next_rebaseline(&self.cfg, self.rebaseline_interval, drift, cpu_drift);
            self.forget_dead(t);
            // Baselines of paths that no longer exist.
            self.cpu_base.retain(|p, _| cpu_tree.contains_key(p));
            self.mem_base.retain(|p, _| mem_tree.contains_key(p));
        }

        if let (Some(t0), Some(t1)) = (cpu_at_start, thread_cpu_ns()) {
            self.baseline_passes += 1;
            self.baseline_cpu_ns += t1.saturating_sub(t0);
        }
        snap.counters = CollectorCounters {
            records_read: reader.0,
            malformed: reader.1,
            records_produced: kernel[counter::RECORDS as usize],
            ring_full: kernel[counter::RINGBUF_FULL as usize],
            map_full: kernel[counter::CPU_MAP_FULL as usize]
                + kernel[counter::MEM_MAP_FULL as usize]
                + self.register_failed,
            cpu_slot_mismatch: kernel[counter::CPU_SLOT_MISMATCH as usize],
            memory_drift_bytes: self.drift_bytes,
            cpu_drift_ns: self.cpu_drift_ns,
            rebaseline_interval_s: self.rebaseline_interval.as_secs(),
            unresolved_ids: unresolved,
            events_dropped: prev.counters.events_dropped,
            sweeps: prev.counters.sweeps + 1,
            baseline_passes: self.baseline_passes,
            baseline_cpu_ns: self.baseline_cpu_ns,
        };
        snap
    }

    fn memory_from(&self, base: &MemBaseline, now: &MemSums) -> MemoryStats {
        let p = self.page;
        let item =
            |bytes: u64, slot: usize| pages_delta(bytes, now.pages[slot], base.at.pages[slot], p);
        let usage = pages_delta(base.file.usage_bytes, now.charged, base.at.charged, p);
        let inactive_file = item(base.file.inactive_file_bytes, mem_item::INACTIVE_FILE);
        MemoryStats {
            usage_bytes: usage,
            working_set_bytes: usage.saturating_sub(inactive_file),
            rss_bytes: item(base.file.rss_bytes, mem_item::ANON_MAPPED),
            cache_bytes: item(base.file.cache_bytes, mem_item::FILE_PAGES),
            mapped_file_bytes: item(base.file.mapped_file_bytes, mem_item::FILE_MAPPED),
            shmem_bytes: item(base.file.shmem_bytes, mem_item::SHMEM),
            inactive_file_bytes: inactive_file,
            kernel_bytes: item(base.file.kernel_bytes, mem_item::KMEM),
            pgfault: count_delta(base.file.pgfault, now.pgfault, base.at.pgfault),
            pgmajfault: count_delta(base.file.pgmajfault, now.pgmajfault, base.at.pgmajfault),
            limit_bytes: base.file.limit_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_reach_every_tracked_ancestor() {
        let roots = vec!["/k".to_owned()];
        let items = vec![
            (
                "/k/p/a".to_owned(),
                CpuSums {
                    run_ns: 5,
                    ..Default::default()
                },
            ),
            (
                "/k/p/b".to_owned(),
                CpuSums {
                    run_ns: 7,
                    ..Default::default()
                },
            ),
            (
                "/other".to_owned(),
                CpuSums {
                    run_ns: 100,
                    ..Default::default()
                },
            ),
        ];
        let tree = aggregate(&roots, items.into_iter(), CpuSums::add);
        assert_eq!(tree["/k/p/a"].run_ns, 5);
        assert_eq!(tree["/k/p"].run_ns, 12);
        assert_eq!(tree["/k"].run_ns, 12);
        assert!(!tree.contains_key("/"));
        assert!(!tree.contains_key("/other"));
        let all = aggregate(
            &[],
            vec![(
                "/x/y".to_owned(),
                CpuSums {
                    run_ns: 1,
                    ..Default::default()
                },
            )]
            .into_iter(),
            CpuSums::add,
        );
        assert_eq!(all["/"].run_ns, 1);
    }

    #[test]
    fn rebaseline_interval_doubles_while_quiet_and_resets_on_drift() {
        let cfg = CollectorConfig::default();
        let mut i = cfg.rebaseline_every;
        let mut seen = Vec::new();
        for _ in 0..6 {
            i = next_rebaseline(&cfg, i, 4 << 10, 2_000_000);
            seen.push(i.as_secs());
        }
        assert_eq!(seen, [120, 240, 480, 600, 600, 600]);
        assert_eq!(next_rebaseline(&cfg, i, 2 << 20, 0), cfg.rebaseline_every);
        assert_eq!(
            next_rebaseline(&cfg, i, 0, 500_000_000),
            cfg.rebaseline_every
        );
        let tests = CollectorConfig {
            rebaseline_every: Duration::ZERO,
            ..cfg
        };
        assert_eq!(
            next_rebaseline(&tests, Duration::ZERO, 0, 0),
            Duration::ZERO
        );
    }

    #[test]
    fn baseline_plus_delta_never_goes_negative() {
        assert_eq!(pages_delta(8192, 3, 1, 4096), 16384);
        assert_eq!(pages_delta(4096, -10, 0, 4096), 0);
        assert_eq!(count_delta(10, 5, 7), 8);
    }
}
