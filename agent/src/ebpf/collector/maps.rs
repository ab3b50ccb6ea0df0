//! The collector's side that talks to the BPF maps: which cgroups the programs account
//! (registration: the in-kernel filter), whole-map batch reads with change detection, and
//! memory marks.

use std::{collections::HashMap, fs, io, time::SystemTime};

use agent_common::{CpuAcct, CpuSlot, MemAcct, MemMark, counter};
use aya::maps::{MapError, PerCpuValues};

use super::{Collector, CpuSums, MemSums, under_roots};
use crate::ebpf::{EbpfError, batch::read_pod, loader::Telemetry};
use crate::stats::cgroupfs;

/// Runs the slot-repair program on `cpus`, so a slice whose switch-in was not traced shows
/// as running. A CPU that is offline (or a failed run) keeps its slot as it is.
fn repair_slots(t: &Telemetry, cpus: &[u32]) {
    use std::os::fd::AsFd;
    let Some(probe) = &t.cpu_probe else { return };
    for &cpu in cpus {
        if let Err(e) = crate::ebpf::batch::run_on_cpu(probe.as_fd(), cpu) {
            tracing::trace!(cpu, error = %e, "CPU slot probe failed");
        }
    }
}

/// One read of the maps.
#[derive(Debug)]
pub(super) struct MapRead {
    pub(super) cpu: HashMap<u64, CpuSums>,
    /// Throttled periods of CPU cgroups with a quota (the kernel's count, not summed).
    pub(super) throttled: HashMap<u64, u64>,
    pub(super) mem: HashMap<u64, MemSums>,
    pub(super) kernel: [u64; counter::COUNT as usize],
    pub(super) node_ws_pages: i64,
    /// When the CPU map was read: the snapshot's time. A rate is only as good as the time
    /// it divides by, and on a busy machine the thread can wait long before it builds.
    pub(super) at: SystemTime,
}

/// `BPF_NOEXIST`: create only, never reset an entry the kernel is already adding to.
const BPF_NOEXIST: u64 = 1;

/// `sum_exec_runtime` of a thread now (first field of `/proc/<tid>/schedstat`).
fn thread_runtime_ns(tid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{tid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "schedstat"))
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

pub(super) fn io_err(map: &'static str) -> impl Fn(io::Error) -> EbpfError {
    move |source| EbpfError::MapIo { map, source }
}

impl Collector {
    /// Whether CPU key `id` has map entries created here (0 is "not accounted").
    fn cpu_registered(&self, id: u64) -> bool {
        id != 0 && self.registered.contains(&(self.cpu_h, id))
    }

    /// Creates map entries for known cgroups under the roots that have none yet. The
    /// programs only add to existing entries, so this is what they account.
    pub fn register_new(&mut self, t: &mut Telemetry) {
        if self.registered_gen == Some(self.ids.generation) {
            return;
        }
        self.registered_gen = Some(self.ids.generation);
        let mut hierarchies = vec![self.cpu_h];
        if self.mem_h != self.cpu_h {
            hierarchies.push(self.mem_h);
        }
        let before = self.registered.len();
        for h in hierarchies {
            let new: Vec<u64> = self
                .ids
                .entries(h)
                .filter(|(id, p)| {
                    under_roots(&self.cfg.roots, p) && !self.registered.contains(&(h, *id))
                })
                .map(|(id, _)| id)
                .collect();
            for id in new {
                self.register(t, h, id);
            }
        }
        if self.registered.len() != before {
            // The memory programs remember their last miss per CPU until this moves: a memcg
            // that missed before it had an entry would otherwise stay skipped on that CPU.
            self.mem_gen += 1;
            if let Err(e) = t.maps.mem_gen.set(0, self.mem_gen, 0) {
                tracing::warn!(error = %e, "bumping MEM_GEN failed: new memcgs may go uncounted");
            }
        }
    }

    /// Creates `id`'s entries in the maps keyed by hierarchy `h` (an existing entry is kept).
    fn register(&mut self, t: &mut Telemetry, h: u32, id: u64) {
        let mut result: Result<(), MapError> = Ok(());
        if h == self.cpu_h {
            result = PerCpuValues::try_from(vec![CpuAcct::default(); t.maps.batch.nr_cpus])
                .map_err(|io_error| {
                    MapError::SyscallError(aya::sys::SyscallError {
                        call: "per-cpu values",
                        io_error,
                    })
                })
                .and_then(|z| t.maps.cpu_acct.insert(id, z, BPF_NOEXIST));
        }
        if h == self.mem_h && result.is_ok() {
            result = t.maps.mem_acct.insert(id, MemAcct::default(), BPF_NOEXIST);
        }
        match result {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                self.register_failed += 1;
                tracing::debug!(hierarchy = h, id, error = %e, "creating a cgroup's map entry failed");
                return;
            }
        }
        self.registered.insert((h, id));
    }

    /// Per-cgroup CPU sums (local), with in-flight slices of registered cgroups added.
    /// Also the throttled periods of cgroups with a quota (by id).
    #[allow(clippy::type_complexity)]
    pub fn read_cpu(
        &self,
        t: &mut Telemetry,
    ) -> Result<(HashMap<u64, CpuSums>, HashMap<u64, u64>), EbpfError> {
        let registered = |id: u64| self.cpu_registered(id);
        // A CPU's pending sums move into the map when another cgroup's slice ends on it. A
        // move during the batch read could count them twice or not at all: read again then
        // (rare: it takes two registered cgroups alternating on a CPU within these µs).
        let mut attempts = 0;
        let (before, running, after) = loop {
            attempts += 1;
            let before = t.maps.cpu_slots.get(&0, 0).map_err(map_err("CPU_SLOTS"))?;
            t.maps.batch.cpu_acct.read().map_err(io_err("CPU_ACCT"))?;
            // The slice still running, for cgroups we account (other tasks' /proc files are
            // not our business); kept only for CPUs whose slot did not change meanwhile.
            let running: Vec<Option<u64>> = before
                .iter()
                .map(|s: &CpuSlot| {
                    registered(s.cgroup_id)
                        .then(|| thread_runtime_ns(s.tid).ok())
                        .flatten()
                })
                .collect();
            let after = t.maps.cpu_slots.get(&0, 0).map_err(map_err("CPU_SLOTS"))?;
            let moved = before
                .iter()
                .zip(after.iter())
                .any(|(b, a)| b.flushes != a.flushes);
            if !moved || attempts == 3 {
                break (before, running, after);
            }
        };
        let b = &t.maps.batch.cpu_acct;
        let mut sums: HashMap<u64, CpuSums> = HashMap::with_capacity(b.len());
        let mut throttled = HashMap::new();
        let mut add = |id: u64, v: &CpuAcct| {
            // Each copy holds the count as of its last switch-out: the largest is newest.
            if v.has_quota != 0 {
                let n = throttled.entry(id).or_insert(0u64);
                *n = (*n).max(u64::from(v.nr_throttled));
            }
            sums.entry(id).or_default().add(&CpuSums {
                run_ns: v.run_ns,
                wait_ns: v.wait_ns,
                slices: v.slices,
                wait_max_ns: v.wait_max_ns,
            });
        };
        for i in 0..b.len() {
            let id = b.key_u64(i);
            for v in b.copies::<CpuAcct>(i) {
                add(id, &v);
            }
        }
        // Pending sums as of `after`: the map part of those CPUs did not move meanwhile.
        for s in after.iter() {
            if registered(s.pending_key) {
                add(s.pending_key, &s.pending);
            }
        }
        for ((b, a), now) in before.iter().zip(after.iter()).zip(running) {
            if let Some(now) = now
                && b == a
                && now > b.exec_base_ns
            {
                sums.entry(b.cgroup_id).or_default().run_ns += now - b.exec_base_ns;
            }
        }
        Ok((sums, throttled))
    }

    /// Per-memcg memory sums (local).
    pub fn read_memory(&self, t: &mut Telemetry) -> Result<HashMap<u64, MemSums>, EbpfError> {
        let b = &mut t.maps.batch.mem_acct;
        b.read().map_err(io_err("MEM_ACCT"))?;
        let mut out = HashMap::with_capacity(b.len());
        for i in 0..b.len() {
            let m: MemAcct = read_pod(b.value(i));
            out.insert(b.key_u64(i), MemSums::from(&m));
        }
        Ok(out)
    }

    /// Kernel-side counters summed over CPUs, indexed by [`counter`].
    pub fn read_counters(
        &self,
        t: &mut Telemetry,
    ) -> Result<[u64; counter::COUNT as usize], EbpfError> {
        let b = &mut t.maps.batch.counters;
        b.read().map_err(io_err("COUNTERS"))?;
        let mut out = [0u64; counter::COUNT as usize];
        for i in 0..b.len() {
            let idx = u32::from_ne_bytes([b.key(i)[0], b.key(i)[1], b.key(i)[2], b.key(i)[3]]);
            if let Some(slot) = out.get_mut(idx as usize) {
                *slot = b.copies::<u64>(i).fold(0u64, u64::wrapping_add);
            }
        }
        Ok(out)
    }

    /// A fingerprint of everything registered that can move, from two cheap reads (the
    /// counters and the CPU slots): the programs count each change to a registered entry.
    /// `None` when a registered task is on a CPU right now (its running slice grows).
    pub(super) fn quick_fingerprint(
        &mut self,
        t: &mut Telemetry,
    ) -> Result<Option<Vec<u64>>, EbpfError> {
        let mut slots = t.maps.cpu_slots.get(&0, 0).map_err(map_err("CPU_SLOTS"))?;
        // A CPU whose slot names the same non-idle task as a second ago either runs a busy
        // task (the probe changes nothing) or missed a switch-in: probe only those. Probing
        // every CPU costs an IPI each, and a halted vCPU makes the caller wait for it.
        let stuck: Vec<u32> = slots
            .iter()
            .enumerate()
            .filter(|(i, s)| s.tid != 0 && self.last_seqs.get(*i) == Some(&s.seq))
            .map(|(i, _)| i as u32)
            .collect();
        if !stuck.is_empty() {
            repair_slots(t, &stuck);
            slots = t.maps.cpu_slots.get(&0, 0).map_err(map_err("CPU_SLOTS"))?;
        }
        self.last_seqs = slots.iter().map(|s| s.seq).collect();
        let registered = |id: u64| self.cpu_registered(id);
        let kernel = self.read_counters(t)?;
        // Records (cgroups made anywhere on the machine, OOM kills, marks) are not in it: the
        // caller sees the ones that matter through the ring-buffer reader's count.
        // Not the id index's generation: it moves with cgroups made anywhere on the machine,
        // while one made under the roots shows here as a new registration.
        let mut fp = vec![
            kernel[counter::CPU_FLUSHES as usize],
            kernel[counter::MEM_CHANGES as usize],
            self.registered.len() as u64,
            self.register_failed,
        ];
        for s in slots.iter() {
            if registered(s.cgroup_id) {
                return Ok(None);
            }
            if registered(s.pending_key) {
                fp.extend([
                    s.pending_key,
                    s.pending.run_ns,
                    s.pending.slices,
                    u64::from(s.pending.nr_throttled),
                ]);
            }
        }
        Ok(Some(fp))
    }

    /// The node-wide working-set pages the programs keep.
    pub(super) fn read_node_ws_pages(&self, t: &Telemetry) -> Result<i64, EbpfError> {
        Ok(t.maps
            .node_mem
            .get(&0, 0)
            .map_err(map_err("NODE_MEM"))?
            .ws_pages)
    }

    /// Reads every map once; `true` if anything a snapshot shows changed since the last read.
    pub(super) fn read_maps(&mut self, t: &mut Telemetry) -> Result<(MapRead, bool), EbpfError> {
        let at = SystemTime::now();
        let (cpu, throttled) = self.read_cpu(t)?;
        let mem = self.read_memory(t)?;
        let kernel = self.read_counters(t)?;
        let node_ws_pages = self.read_node_ws_pages(t)?;
        // Change key: the raw map bytes, the CPU totals (pending and in-flight slices are
        // not in the map; every counter only grows, so their sums move with any of them) and
        // the scalars; left out is the node working set (it moves with any memory use on the
        // machine; published apart).
        let mut key = Vec::with_capacity(self.last_read.len());
        for b in [&t.maps.batch.cpu_acct, &t.maps.batch.mem_acct] {
            let (k, v) = b.contents();
            key.extend_from_slice(&(k.len() as u64).to_ne_bytes());
            key.extend_from_slice(k);
            key.extend_from_slice(v);
        }
        let mut total = CpuSums::default();
        for s in cpu.values() {
            total.add(s);
        }
        let throttled_total: u64 = throttled.values().sum();
        for v in [
            total.run_ns,
            total.wait_ns,
            total.slices,
            throttled_total,
            self.ids.generation,
        ] {
            key.extend_from_slice(&v.to_ne_bytes());
        }
        // Kernel counters that say nothing about registered cgroups stay out: slot mismatches
        // tick on host switches, records come through the reader.
        for i in [counter::CPU_MAP_FULL, counter::MEM_MAP_FULL] {
            key.extend_from_slice(&kernel[i as usize].to_ne_bytes());
        }
        let changed = key != self.last_read;
        self.last_read = key;
        Ok((
            MapRead {
                cpu,
                throttled,
                mem,
                kernel,
                node_ws_pages,
                at,
            },
            changed,
        ))
    }

    /// Deletes map entries of removed cgroups (their sums were left out of the new baselines).
    pub(super) fn forget_dead(&mut self, t: &mut Telemetry) {
        for (h, id) in std::mem::take(&mut self.dead).into_keys() {
            self.registered.remove(&(h, id));
            // NotFound is fine: the cgroup never had an entry in that map.
            if h == self.cpu_h {
                let _ = t.maps.cpu_acct.remove(&id);
            }
            if h == self.mem_h {
                let _ = t.maps.mem_acct.remove(&id);
                let _ = t.maps.mem_marks.remove(&id);
            }
        }
    }

    /// Sets a usage mark on a leaf cgroup's memcg: a record is pushed when its usage rises to
    /// `high_bytes` and again when it falls below `low_bytes`. Marks are rounded to the
    /// granule (up for high, down for low). Returns the usage when it is at `high_bytes`
    /// already (grown since the caller looked): the kernel will not report that crossing.
    pub fn set_memory_mark(
        &mut self,
        t: &mut Telemetry,
        path: &str,
        high_bytes: u64,
        low_bytes: u64,
    ) -> Result<Option<u64>, EbpfError> {
        self.place_memory_mark(t, path, |_| (high_bytes, low_bytes))
    }

    /// Sets a mark `step` bytes above and below the usage read now (see
    /// [`set_memory_mark`](Self::set_memory_mark)); never crossed when set.
    pub fn set_memory_mark_around(
        &mut self,
        t: &mut Telemetry,
        path: &str,
        step: u64,
    ) -> Result<Option<u64>, EbpfError> {
        let step = step.max(1);
        self.place_memory_mark(t, path, |usage| {
            (usage.saturating_add(step), usage.saturating_sub(step))
        })
    }

    /// Places a mark at `level(usage now)`: (high, low) bytes.
    fn place_memory_mark(
        &mut self,
        t: &mut Telemetry,
        path: &str,
        level: impl FnOnce(u64) -> (u64, u64),
    ) -> Result<Option<u64>, EbpfError> {
        let id = self
            .ids
            .id_of(self.mem_h, path)
            .map_err(|source| EbpfError::Cgroup {
                path: path.to_owned(),
                source,
            })?;
        self.ids.insert(self.mem_h, id, path.to_owned());
        // Marks fire only on registered memcgs (the kernel never creates entries).
        self.register(t, self.mem_h, id);
        let usage = cgroupfs::read_memory_usage(&self.layout, path)
            .map_err(|source| EbpfError::Cgroup {
                path: path.to_owned(),
                source,
            })?
            .ok_or_else(|| EbpfError::Cgroup {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "no memory cgroup"),
            })?;
        let (high_bytes, low_bytes) = level(usage);
        let own = match t.maps.mem_acct.get(&id, 0) {
            Ok(m) => m.charged_pages,
            Err(MapError::KeyNotFound) => 0,
            Err(source) => {
                return Err(EbpfError::Map {
                    map: "MEM_ACCT",
                    source,
                });
            }
        };
        let mark = self.counter_mark(own, usage, high_bytes, low_bytes);
        t.maps
            .mem_marks
            .insert(id, mark, 0)
            .map_err(map_err("MEM_MARKS"))?;
        Ok((mark.above != 0).then_some(usage))
    }

    /// Sets the node-wide working-set mark (needs a node baseline: v1 root memcg files).
    pub fn set_node_mark(
        &mut self,
        t: &mut Telemetry,
        high_bytes: u64,
        low_bytes: u64,
    ) -> Result<(), EbpfError> {
        let root = cgroupfs::read_memory(&self.layout, "/")
            .map_err(|source| EbpfError::Cgroup {
                path: "/".into(),
                source,
            })?
            .ok_or(EbpfError::NoController {
                controller: "memory (root files)",
            })?;
        let mut node = t.maps.node_mem.get(&0, 0).map_err(map_err("NODE_MEM"))?;
        node.mark = self.counter_mark(node.ws_pages, root.working_set_bytes, high_bytes, low_bytes);
        // Only the mark is meant to change; ws_pages may move between get and set, so the
        // kernel's value is re-read right before the write to keep the window small.
        node.ws_pages = t
            .maps
            .node_mem
            .get(&0, 0)
            .map_err(map_err("NODE_MEM"))?
            .ws_pages;
        t.maps.node_mem.set(0, node, 0).map_err(map_err("NODE_MEM"))
    }

    fn counter_mark(
        &self,
        counter_now: i64,
        bytes_now: u64,
        high_bytes: u64,
        low_bytes: u64,
    ) -> MemMark {
        let g = self.granule.max(1);
        let to_counter = |bytes: u64| counter_now + (bytes as i64 - bytes_now as i64) / self.page;
        // Marks sit on granule boundaries: the kernel only looks when a boundary is crossed.
        let high = to_counter(high_bytes).div_euclid(g) * g
            + g * i64::from(to_counter(high_bytes).rem_euclid(g) != 0);
        let low = to_counter(low_bytes.min(high_bytes)).div_euclid(g) * g;
        MemMark {
            high,
            low,
            above: u32::from(bytes_now >= high_bytes),
            _pad: 0,
        }
    }
}
