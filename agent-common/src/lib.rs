//! Wire types shared by nodelet's eBPF programs and the agent.
//!
//! Every type here is `#[repr(C)]`, made of fixed-width integers only and free of implicit
//! padding (explicit `_pad` fields instead), so the kernel side can write it and user space can
//! read it as plain bytes. The C programs in `agent-ebpf` cannot use this crate: their mirror is
//! `agent-ebpf/src/bpf/common.h`, and both sides assert every size (`_Static_assert` there,
//! `const` asserts here). Change both files together.
//!
//! With the `user` feature the types implement `aya::Pod`, so the agent reads maps and
//! ring-buffer records as these structs (aya-log-common and aya's integration-common follow the
//! same split).
#![no_std]

/// Length of a task's `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const TASK_COMM_LEN: usize = 16;
/// Bytes of cgroup path carried by a [`CgroupRecord`] (longer paths are cut, see its `flags`).
pub const CGROUP_PATH_LEN: usize = 256;
/// How many of the agent's own thread-group ids the CPU program can skip.
pub const MAX_AGENT_TGIDS: usize = 4;

/// Names of the programs in the embedded object, as the loader looks them up.
pub mod programs {
    /// `tp_btf/sched_switch`: per-CPU, per-cgroup on-CPU time and run-queue wait.
    pub const SCHED_SWITCH: &str = "on_sched_switch";
    /// `tp_btf/mod_memcg_lruvec_state`: per-memcg LRU and page-state deltas.
    pub const MEMCG_LRUVEC: &str = "on_mod_memcg_lruvec_state";
    /// `tp_btf/mod_memcg_state`: memcg-only counters (kernel memory, swap).
    pub const MEMCG_STATE: &str = "on_mod_memcg_state";
    /// `tp_btf/count_memcg_events`: page faults per memcg.
    pub const MEMCG_EVENTS: &str = "on_count_memcg_events";
    /// `tp_btf/mark_victim`: the OOM killer picked a task.
    pub const OOM_MARK_VICTIM: &str = "on_mark_victim";
    /// `tp_btf/cgroup_mkdir`.
    pub const CGROUP_MKDIR: &str = "on_cgroup_mkdir";
    /// `tp_btf/cgroup_rmdir`.
    pub const CGROUP_RMDIR: &str = "on_cgroup_rmdir";
    /// Not attached: run by user space on each CPU to repair a slot whose switch-in was
    /// never traced.
    pub const CPU_PROBE: &str = "on_cpu_probe";

    /// Every attached program and the `tp_btf` tracepoint it attaches to, in attach order:
    /// the one table the agent's loader, the load test and the bench all walk.
    pub const ATTACH: [(&str, &str); 7] = [
        (SCHED_SWITCH, "sched_switch"),
        (MEMCG_LRUVEC, "mod_memcg_lruvec_state"),
        (MEMCG_STATE, "mod_memcg_state"),
        (MEMCG_EVENTS, "count_memcg_events"),
        (OOM_MARK_VICTIM, "mark_victim"),
        (CGROUP_MKDIR, "cgroup_mkdir"),
        (CGROUP_RMDIR, "cgroup_rmdir"),
    ];
}

/// Names of the maps in the embedded object.
pub mod maps {
    /// Ring buffer of rare records ([`crate::RecordHeader`] first).
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU hash: cpu-cgroup id (`u64`) -> [`crate::CpuAcct`].
    pub const CPU_ACCT: &str = "CPU_ACCT";
    /// Per-CPU array, one entry: [`crate::CpuSlot`] of the task running on that CPU.
    pub const CPU_SLOTS: &str = "CPU_SLOTS";
    /// Hash: memcg id (`u64`) -> [`crate::MemAcct`].
    pub const MEM_ACCT: &str = "MEM_ACCT";
    /// Hash: memcg id (`u64`) -> [`crate::MemMark`], written by user space.
    pub const MEM_MARKS: &str = "MEM_MARKS";
    /// Array, one entry: [`crate::NodeMem`], the node-wide working set and its marks.
    pub const NODE_MEM: &str = "NODE_MEM";
    /// Per-CPU array of `u64` indexed by [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Array, one `u64`: bumped by user space after it creates MEM_ACCT entries, which
    /// forgets every CPU's remembered miss (MEM_MISS, kernel-only).
    pub const MEM_GEN: &str = "MEM_GEN";
}

/// Names of the load-time constants (`const volatile` globals in `.rodata`).
pub mod globals {
    /// `u32`: which cgroup keys CPU accounting, one of [`crate::CPU_KEY_V1_CPU`] or
    /// [`crate::CPU_KEY_DFL`].
    pub const CPU_KEY_MODE: &str = "cpu_key_mode";
    /// `u32`: marks are checked when a counter crosses a multiple of `1 << shift` pages.
    pub const MARK_GRANULE_SHIFT: &str = "mark_granule_shift";
    /// `u64`: bit `n` set = report cgroup mkdir/rmdir in hierarchy id `n` (0 is cgroup v2).
    pub const CGROUP_HIERARCHY_MASK: &str = "cgroup_hierarchy_mask";
    /// `[u32; MAX_AGENT_TGIDS]`: processes whose switches are not accounted (0 = unused).
    /// A load-time constant, not a map: the verifier then compares against immediates,
    /// which keeps a lookup off the per-switch path.
    pub const AGENT_TGIDS: &str = "agent_tgids";
}

/// [`globals::CPU_KEY_MODE`]: key CPU time by the task's v1 `cpu` controller cgroup.
pub const CPU_KEY_V1_CPU: u32 = 0;
/// [`globals::CPU_KEY_MODE`]: key CPU time by the task's cgroup v2 (default hierarchy) cgroup.
pub const CPU_KEY_DFL: u32 = 1;

/// Indexes of the kernel-side counters in [`maps::COUNTERS`].
pub mod counter {
    /// A switch-out whose task was not the one recorded at switch-in (interval not counted).
    pub const CPU_SLOT_MISMATCH: u32 = 0;
    /// A CPU_ACCT insert failed (map full).
    pub const CPU_MAP_FULL: u32 = 1;
    /// A MEM_ACCT insert failed (map full).
    pub const MEM_MAP_FULL: u32 = 2;
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full; the record was dropped.
    pub const RINGBUF_FULL: u32 = 3;
    /// Records submitted to the ring buffer (all kinds).
    pub const RECORDS: u32 = 4;
    /// Pending CPU sums flushed into a registered cgroup's [`crate::maps::CPU_ACCT`] entry.
    pub const CPU_FLUSHES: u32 = 5;
    /// Updates of a registered memcg's [`crate::maps::MEM_ACCT`] entry.
    pub const MEM_CHANGES: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;
}

/// Kinds of ring-buffer records, in [`RecordHeader::kind`].
pub mod kind {
    /// [`crate::OomRecord`].
    pub const OOM: u32 = 1;
    /// [`crate::MemMarkRecord`].
    pub const MEM_MARK: u32 = 2;
    /// [`crate::CgroupRecord`] for a created cgroup.
    pub const CGROUP_MKDIR: u32 = 3;
    /// [`crate::CgroupRecord`] for a removed cgroup.
    pub const CGROUP_RMDIR: u32 = 4;
}

/// Slots of [`MemAcct::pages`]; each is a running sum (in pages) of the kernel's deltas.
pub mod mem_item {
    /// `NR_INACTIVE_ANON`.
    pub const INACTIVE_ANON: usize = 0;
    /// `NR_ACTIVE_ANON`.
    pub const ACTIVE_ANON: usize = 1;
    /// `NR_INACTIVE_FILE`.
    pub const INACTIVE_FILE: usize = 2;
    /// `NR_ACTIVE_FILE`.
    pub const ACTIVE_FILE: usize = 3;
    /// `NR_UNEVICTABLE`.
    pub const UNEVICTABLE: usize = 4;
    /// `NR_ANON_MAPPED` (v1 `rss`).
    pub const ANON_MAPPED: usize = 5;
    /// `NR_FILE_PAGES` (v1 `cache`).
    pub const FILE_PAGES: usize = 6;
    /// `NR_FILE_MAPPED` (v1 `mapped_file`).
    pub const FILE_MAPPED: usize = 7;
    /// `NR_SHMEM`.
    pub const SHMEM: usize = 8;
    /// `MEMCG_KMEM`: kernel memory charged to the memcg (slab, stacks, page tables, ...).
    pub const KMEM: usize = 9;
    /// `MEMCG_SWAP`.
    pub const SWAP: usize = 10;
    /// Number of slots (rounded up to keep [`crate::MemAcct`] padding-free).
    pub const COUNT: usize = 12;
}

/// First bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// CPU that produced the record.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when it was produced.
    pub ts_ns: u64,
}

/// The OOM killer chose `pid` (`tp_btf/mark_victim`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomRecord {
    /// Header; `kind` is [`kind::OOM`].
    pub hdr: RecordHeader,
    /// Victim thread id.
    pub pid: u32,
    /// Victim thread-group (process) id.
    pub tgid: u32,
    /// kernfs id of the victim's memory cgroup (its directory inode).
    pub memcg_id: u64,
    /// kernfs id of the victim's cgroup in the CPU key hierarchy.
    pub cpu_cgroup_id: u64,
    /// kernfs id of the victim's cgroup v2 (default hierarchy) cgroup.
    pub dfl_cgroup_id: u64,
    /// Pages charged to the victim's memcg when it was chosen.
    pub memcg_usage_pages: u64,
    /// The memcg's own limit in pages (`u64::MAX`-ish when unlimited).
    pub memcg_limit_pages: u64,
    /// Victim's uid as given by the tracepoint.
    pub uid: u32,
    /// Victim's `oom_score_adj`.
    pub oom_score_adj: i32,
    /// Victim's `comm`, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// [`OOM_FLAG_NS_INIT`] and future bits.
    pub flags: u32,
    /// Keeps the size a multiple of 8 (no implicit padding).
    pub reserved: u32,
}

/// [`OomRecord::flags`]: the victim is the init of its PID namespace (its pid there is 1).
/// The kill ends every process of that namespace, so for a
/// container with its own PID namespace the container itself is over.
pub const OOM_FLAG_NS_INIT: u32 = 1;

/// A memcg (or the node) crossed a working-set/usage mark set by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemMarkRecord {
    /// Header; `kind` is [`kind::MEM_MARK`].
    pub hdr: RecordHeader,
    /// memcg kernfs id; 0 for the node-wide mark.
    pub cgroup_id: u64,
    /// Counter value (pages, in the counter's own units) after the crossing event.
    pub value_pages: i64,
    /// The mark that was crossed (pages, same units).
    pub mark_pages: i64,
    /// [`MARK_SCOPE_CGROUP`] or [`MARK_SCOPE_NODE`].
    pub scope: u32,
    /// 1 = crossed upwards the high mark, 0 = fell below the low mark.
    pub rising: u32,
}

/// [`MemMarkRecord::scope`]: a per-memcg usage mark.
pub const MARK_SCOPE_CGROUP: u32 = 0;
/// [`MemMarkRecord::scope`]: the node-wide working-set mark.
pub const MARK_SCOPE_NODE: u32 = 1;

/// A cgroup was created or removed (`tp_btf/cgroup_mkdir`, `cgroup_rmdir`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupRecord {
    /// Header; `kind` is [`kind::CGROUP_MKDIR`] or [`kind::CGROUP_RMDIR`].
    pub hdr: RecordHeader,
    /// kernfs id of the cgroup (its directory inode).
    pub cgroup_id: u64,
    /// Hierarchy id (`/proc/cgroups` column 2; 0 is cgroup v2).
    pub hierarchy_id: u32,
    /// Depth below the hierarchy root.
    pub level: u32,
    /// Bytes of `path` used, without the NUL.
    pub path_len: u32,
    /// [`CGROUP_PATH_TRUNCATED`] if the path did not fit.
    pub flags: u32,
    /// Path relative to the hierarchy root, NUL-terminated.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// [`CgroupRecord::flags`]: the path was cut to fit.
pub const CGROUP_PATH_TRUNCATED: u32 = 1;

impl Default for CgroupRecord {
    fn default() -> Self {
        Self {
            hdr: RecordHeader::default(),
            cgroup_id: 0,
            hierarchy_id: 0,
            level: 0,
            path_len: 0,
            flags: 0,
            path: [0; CGROUP_PATH_LEN],
        }
    }
}

/// Per-CPU, per-cgroup CPU accounting (value of [`maps::CPU_ACCT`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuAcct {
    /// On-CPU time (ns), from the tasks' `se.sum_exec_runtime`: what cpuacct charges.
    pub run_ns: u64,
    /// Run-queue wait (ns) before those runs, from `sched_info.run_delay`.
    pub wait_ns: u64,
    /// Completed on-CPU slices.
    pub slices: u64,
    /// Longest single run-queue wait seen (ns).
    pub wait_max_ns: u64,
    /// The cgroup's CFS throttled periods (the scheduler's own cumulative count, copied at
    /// switch-out: not a delta).
    pub nr_throttled: u32,
    /// 1 if the cgroup has a CFS quota (a CPU limit).
    pub has_quota: u32,
}

/// What a CPU is running now (value of [`maps::CPU_SLOTS`]); lets user space add the
/// in-flight slice that no switch has accounted yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlot {
    /// Opaque identity of the task switched in (compared at its switch-out).
    pub task: u64,
    /// Its cgroup key (0: not accounted, e.g. idle or the agent itself).
    pub cgroup_id: u64,
    /// Its `se.sum_exec_runtime` at switch-in.
    pub exec_base_ns: u64,
    /// Its `sched_info.run_delay` at switch-in.
    pub delay_base_ns: u64,
    /// Switches on this CPU so far (user space detects a switch during its read).
    pub seq: u64,
    /// Its thread id (`/proc/<tid>/schedstat` gives the in-flight runtime).
    pub tid: u32,
    /// Its thread-group id.
    pub tgid: u32,
    /// Key of the slices in `pending` (0: none; may be a key with no map entry).
    pub pending_key: u64,
    /// Slices run on this CPU and not yet added to [`maps::CPU_ACCT`]: consecutive slices of
    /// one cgroup are summed here and flushed when another cgroup's slice ends.
    pub pending: CpuAcct,
    /// Flushes of `pending` so far (user space detects one during its read).
    pub flushes: u64,
}

/// Per-memcg running sums (value of [`maps::MEM_ACCT`]). Counters start at zero when the
/// entry is created, so user space adds a baseline read from the cgroup's files.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemAcct {
    /// Page deltas summed per [`mem_item`] slot.
    pub pages: [i64; mem_item::COUNT],
    /// Sum of deltas of what the memcg's page counter charges: LRU pages + kernel memory.
    pub charged_pages: i64,
    /// `PGFAULT` events.
    pub pgfault: u64,
    /// `PGMAJFAULT` events.
    pub pgmajfault: u64,
    /// Events folded into this entry (statistics only: incremented without atomics).
    pub events: u64,
}

/// Marks for one memcg (value of [`maps::MEM_MARKS`]), in [`MemAcct::charged_pages`] units.
/// The kernel checks them when the counter crosses a granule boundary, so they should be
/// multiples of `1 << mark_granule_shift`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemMark {
    /// Emit a rising record when the counter reaches this.
    pub high: i64,
    /// Emit a falling record when the counter drops below this (hysteresis).
    pub low: i64,
    /// 1 while above `high` (until below `low`); the kernel flips it with cmpxchg.
    pub above: u32,
    /// Padding (keep zero).
    pub _pad: u32,
}

/// Node-wide working set (value of [`maps::NODE_MEM`]): sum over all memcgs of charged pages
/// minus inactive file pages, as deltas since load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeMem {
    /// Working-set pages (delta since load).
    pub ws_pages: i64,
    /// Marks on `ws_pages`.
    pub mark: MemMark,
}

const _: () = {
    assert!(core::mem::size_of::<RecordHeader>() == 16);
    assert!(core::mem::size_of::<OomRecord>() == 96);
    assert!(core::mem::size_of::<MemMarkRecord>() == 48);
    assert!(core::mem::size_of::<CgroupRecord>() == 296);
    assert!(core::mem::size_of::<CpuAcct>() == 40);
    assert!(core::mem::size_of::<CpuSlot>() == 104);
    assert!(core::mem::size_of::<MemAcct>() == 8 * (mem_item::COUNT + 4));
    assert!(core::mem::size_of::<MemMark>() == 24);
    assert!(core::mem::size_of::<NodeMem>() == 32);
    // The offsets common.h also asserts.
    assert!(core::mem::offset_of!(OomRecord, comm) == 72);
    assert!(core::mem::offset_of!(CgroupRecord, path) == 40);
    assert!(core::mem::offset_of!(MemAcct, charged_pages) == 8 * mem_item::COUNT);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, made of integers and integer arrays only, with no
    // implicit padding (checked by the size asserts above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::OomRecord {}
    unsafe impl aya::Pod for super::MemMarkRecord {}
    unsafe impl aya::Pod for super::CgroupRecord {}
    unsafe impl aya::Pod for super::CpuAcct {}
    unsafe impl aya::Pod for super::CpuSlot {}
    unsafe impl aya::Pod for super::MemAcct {}
    unsafe impl aya::Pod for super::MemMark {}
    unsafe impl aya::Pod for super::NodeMem {}
}

impl CgroupRecord {
    /// The path bytes (without the NUL), lossy if the kernel cut a multi-byte character.
    pub fn path_bytes(&self) -> &[u8] {
        let len = (self.path_len as usize).min(CGROUP_PATH_LEN);
        &self.path[..len]
    }
}

impl OomRecord {
    /// `comm` up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TASK_COMM_LEN);
        &self.comm[..end]
    }

    /// True when the victim was the init of its PID namespace ([`OOM_FLAG_NS_INIT`]).
    pub fn kills_pid_namespace(&self) -> bool {
        self.flags & OOM_FLAG_NS_INIT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::programs::*;

    #[test]
    fn the_attach_table_names_every_attached_program_once() {
        let attached = [
            SCHED_SWITCH,
            MEMCG_LRUVEC,
            MEMCG_STATE,
            MEMCG_EVENTS,
            OOM_MARK_VICTIM,
            CGROUP_MKDIR,
            CGROUP_RMDIR,
        ];
        for name in attached {
            assert_eq!(
                ATTACH.iter().filter(|(p, _)| *p == name).count(),
                1,
                "{name}"
            );
        }
        // The slot probe is run by user space, never attached.
        assert!(ATTACH.iter().all(|(p, _)| *p != CPU_PROBE));
        // Each program's name is `on_` + its tracepoint.
        for (p, tp) in ATTACH {
            assert_eq!(p.strip_prefix("on_"), Some(tp));
        }
    }
}
