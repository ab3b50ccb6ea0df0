//! Loads the embedded telemetry object with aya, attaches every program and converts each
//! map to its typed view once, so a layout mismatch fails start-up, not a later read.

use std::io;

use agent_common::{
    CpuAcct, CpuSlot, MAX_AGENT_TGIDS, MemAcct, MemMark, NodeMem, globals, maps, programs,
    programs::ATTACH,
};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, ProgramError},
};

use super::{
    EbpfError,
    batch::{self, BatchMap},
};
use crate::stats::cgroupfs::CgroupLayout;

/// Load-time configuration: map sizes, marks, who is not accounted.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// Ring-buffer size in bytes (power of two, multiple of the page size). Default 256 KiB:
    /// 860 cgroup records (304 bytes each) or 2,300 OOM records unread at once. The reader
    /// drains as records come, and a pod adds 2 cgroups x 3 tracked hierarchies; a cgroup
    /// record lost anyway costs one hierarchy walk (`ids`), and drops are counted. The ring is
    /// mapped twice, so every KiB of it is two of RSS once written through: 1 MiB cost 2 MiB.
    pub ring_bytes: u32,
    /// Entries of the per-CPU CPU map: registered cgroups (the pods' subtree). Default 2048:
    /// 250 pods with a pause and 6 containers each. A batch read walks every bucket, so the
    /// size is a cost too.
    pub cpu_cgroups: u32,
    /// Entries of the memory map (registered memcgs), as `cpu_cgroups`.
    pub mem_cgroups: u32,
    /// Marks are checked every `1 << shift` pages of change (default 4: 64 KiB at 4 KiB
    /// pages). A crossing is seen within this much growth past the mark, so a ramp that stops
    /// just past an eviction threshold waits for its next step unless the granule is small;
    /// the cost is one MEM_MARKS lookup per granule of a registered memcg's charges.
    pub mark_granule_shift: u32,
    /// Processes whose CPU time is not accounted (default: this process).
    pub agent_tgids: Vec<u32>,
    /// Test/ops switch: refuse to load, as if BPF were unavailable (fallback path).
    pub disabled: bool,
    /// Have the kernel count the programs' run time while loaded (`BPF_ENABLE_STATS`, what
    /// `kernel.bpf_stats_enabled=1` does): costs two clock reads per program run, so off
    /// by default.
    pub run_stats: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            ring_bytes: 256 << 10,
            cpu_cgroups: 2048,
            mem_cgroups: 2048,
            mark_granule_shift: 4,
            agent_tgids: vec![std::process::id()],
            disabled: false,
            run_stats: false,
        }
    }
}

/// Typed views of the object's maps.
pub struct TelemetryMaps {
    /// cpu-cgroup id -> per-CPU [`CpuAcct`].
    pub cpu_acct: PerCpuHashMap<MapData, u64, CpuAcct>,
    /// What each CPU runs now.
    pub cpu_slots: PerCpuArray<MapData, CpuSlot>,
    /// memcg id -> running sums.
    pub mem_acct: HashMap<MapData, u64, MemAcct>,
    /// memcg id -> marks (written here).
    pub mem_marks: HashMap<MapData, u64, MemMark>,
    /// Node working set and its mark.
    pub node_mem: Array<MapData, NodeMem>,
    /// Generation of MEM_ACCT's key set (bumped after inserts; see `mem_entry` in C).
    pub mem_gen: Array<MapData, u64>,
    /// Whole-map readers of the maps the sweep reads every second.
    pub batch: BatchMaps,
}

/// Batch readers (one syscall per map per sweep) of the swept maps.
#[derive(Debug)]
pub struct BatchMaps {
    /// [`TelemetryMaps::cpu_acct`].
    pub cpu_acct: BatchMap,
    /// [`TelemetryMaps::mem_acct`].
    pub mem_acct: BatchMap,
    /// [`TelemetryMaps::counters`].
    pub counters: BatchMap,
    /// Possible CPUs: copies per per-CPU value.
    pub nr_cpus: usize,
}

/// A loaded, attached telemetry object.
pub struct Telemetry {
    /// Keeps programs and links alive; dropping it detaches everything.
    _ebpf: Ebpf,
    /// Typed maps.
    pub maps: TelemetryMaps,
    /// The ring buffer (moved into the reader task).
    pub events: Option<RingBuf<MapData>>,
    /// The cgroup layout the object was configured for.
    pub layout: CgroupLayout,
    /// cgroup hierarchy whose ids key CPU maps and records.
    pub cpu_hierarchy: u32,
    /// cgroup hierarchy whose ids key memory maps and records.
    pub memory_hierarchy: u32,
    /// Mark granule, pages.
    pub mark_granule_pages: i64,
    /// Kernel ids of the attached programs, by name (for their run-time statistics).
    pub program_ids: Vec<(&'static str, u32)>,
    /// The slot-repair program, run on each CPU before a sweep (`None` if it did not load:
    /// sweeps then only miss slices whose switch-in was not traced).
    pub cpu_probe: Option<std::os::fd::OwnedFd>,
    /// Held while run-time statistics are wanted; the kernel stops counting when it closes.
    _run_stats: Option<std::os::fd::OwnedFd>,
}

impl Telemetry {
    /// Loads and attaches everything, or says which program failed and why.
    pub fn load(cfg: &TelemetryConfig, layout: CgroupLayout) -> Result<Self, EbpfError> {
        if cfg.disabled {
            return Err(EbpfError::Disabled);
        }
        let btf = Btf::from_sys_fs().map_err(EbpfError::Btf)?;
        let cpu = layout
            .controller("cpu")
            .ok_or(EbpfError::NoController { controller: "cpu" })?;
        let memory = layout.controller("memory").ok_or(EbpfError::NoController {
            controller: "memory",
        })?;
        let cpu_key_mode = if cpu.v2 {
            agent_common::CPU_KEY_DFL
        } else {
            agent_common::CPU_KEY_V1_CPU
        };
        let mut tgids = [0u32; MAX_AGENT_TGIDS];
        for (slot, tgid) in tgids.iter_mut().zip(&cfg.agent_tgids) {
            *slot = *tgid;
        }
        // Only the hierarchies whose ids we key by; v1 fires one mkdir per hierarchy.
        let mut mask: u64 = 0;
        for id in [cpu.hierarchy_id, memory.hierarchy_id] {
            if id < 64 {
                mask |= 1 << id;
            }
        }

        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .override_global(globals::CPU_KEY_MODE, &cpu_key_mode, true)
            .override_global(globals::MARK_GRANULE_SHIFT, &cfg.mark_granule_shift, true)
            .override_global(globals::CGROUP_HIERARCHY_MASK, &mask, true)
            .override_global(globals::AGENT_TGIDS, &tgids, true)
            .map_max_entries(maps::EVENTS, cfg.ring_bytes)
            .map_max_entries(maps::CPU_ACCT, cfg.cpu_cgroups)
            .map_max_entries(maps::MEM_ACCT, cfg.mem_cgroups)
            .map_max_entries(maps::MEM_MARKS, cfg.mem_cgroups);
        // RLIMIT_MEMLOCK: not touched. Kernels >= 5.11 charge BPF memory to the memcg and aya
        // only tries to raise the limit on older ones (and only warns if it cannot).
        let mut ebpf = loader
            .load(agent_ebpf::TELEMETRY_OBJ)
            .map_err(|e| EbpfError::Load(Box::new(e)))?;

        let mut program_ids = Vec::with_capacity(ATTACH.len());
        for (program, tracepoint) in ATTACH {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or(EbpfError::MissingProgram { program })?
                .try_into()
                .map_err(|source| EbpfError::program(program, tracepoint, source))?;
            prog.load(tracepoint, &btf)
                .map_err(|source| EbpfError::program(program, tracepoint, source))?;
            prog.attach()
                .map_err(|source| EbpfError::program(program, tracepoint, source))?;
            // Only the metric needs the id: a failure leaves that program out of it.
            if let Ok(info) = prog.info() {
                program_ids.push((program, info.id()));
            }
        }
        let cpu_probe = load_cpu_probe(&mut ebpf);
        let run_stats = if cfg.run_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "enabling BPF run-time statistics failed");
                    None
                }
            }
        } else {
            None
        };

        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| EbpfError::Layout(e))?;
        let batch = BatchMaps {
            cpu_acct: batch_map(&ebpf, maps::CPU_ACCT, 8, size_of::<CpuAcct>(), nr_cpus)?,
            mem_acct: batch_map(&ebpf, maps::MEM_ACCT, 8, size_of::<MemAcct>(), 1)?,
            counters: batch_map(&ebpf, maps::COUNTERS, 4, 8, nr_cpus)?,
            nr_cpus,
        };
        let maps = TelemetryMaps {
            cpu_acct: typed(&mut ebpf, maps::CPU_ACCT)?,
            cpu_slots: typed(&mut ebpf, maps::CPU_SLOTS)?,
            mem_acct: typed(&mut ebpf, maps::MEM_ACCT)?,
            mem_marks: typed(&mut ebpf, maps::MEM_MARKS)?,
            node_mem: typed(&mut ebpf, maps::NODE_MEM)?,
            mem_gen: typed(&mut ebpf, maps::MEM_GEN)?,
            batch,
        };
        let events: RingBuf<MapData> = typed(&mut ebpf, maps::EVENTS)?;
        Ok(Self {
            _ebpf: ebpf,
            maps,
            events: Some(events),
            layout,
            cpu_hierarchy: cpu.hierarchy_id,
            memory_hierarchy: memory.hierarchy_id,
            mark_granule_pages: 1i64 << cfg.mark_granule_shift,
            program_ids,
            cpu_probe,
            _run_stats: run_stats,
        })
    }
}

/// Takes a map out of the object and checks its type and key/value sizes.
fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(EbpfError::MissingMap { map: name })?;
    T::try_from(map).map_err(|source| EbpfError::Map { map: name, source })
}

/// Loads (never attaches) the slot-repair program and keeps a descriptor to run it with.
fn load_cpu_probe(ebpf: &mut Ebpf) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let name = programs::CPU_PROBE;
    let result = (|| -> Result<std::os::fd::OwnedFd, String> {
        let prog: &mut aya::programs::RawTracePoint = ebpf
            .program_mut(name)
            .ok_or("missing from the object")?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        prog.load().map_err(|e| explain(&e))?;
        let fd = prog.fd().map_err(|e| e.to_string())?;
        fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
    })();
    match result {
        Ok(fd) => Some(fd),
        Err(reason) => {
            tracing::warn!(program = name, reason, "CPU slot probe unavailable");
            None
        }
    }
}

/// A batch reader on a duplicate of map `name`'s descriptor.
fn batch_map(
    ebpf: &Ebpf,
    name: &'static str,
    key_size: usize,
    value_size: usize,
    per_cpu_copies: usize,
) -> Result<BatchMap, EbpfError> {
    let map = ebpf.map(name).ok_or(EbpfError::MissingMap { map: name })?;
    let io_err = |source| EbpfError::MapIo { map: name, source };
    let fd = batch::map_fd(map)
        .ok_or_else(|| io_err(io::Error::other("map type cannot be batch-read")))?;
    BatchMap::new(fd, key_size, value_size, per_cpu_copies).map_err(io_err)
}

/// One-line reason for a program failure, for the log and the error.
pub(super) fn explain(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                return format!("not permitted ({io_error}): needs root or CAP_BPF+CAP_PERFMON");
            }
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("verifier rejected it ({io_error}): {}", tail.join(" | "))
        }
        ProgramError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::PermissionDenied => {
            format!("not permitted: {s}")
        }
        other => other.to_string(),
    }
}
