//! nodelet's eBPF programs, compiled from C (CO-RE) by `build.rs` and embedded here.
//!
//! One object holds every program and map: CPU accounting (`cpu.bpf.c`), memcg deltas and
//! watermarks (`memory.bpf.c`), OOM victims (`oom.bpf.c`) and cgroup mkdir/rmdir
//! (`cgroup.bpf.c`). Names of programs, maps and load-time globals, and the record layouts,
//! live in `agent-common`; `agent/src/ebpf` loads the object with aya.
#![no_std]

/// Wrapper that gives the embedded bytes the alignment an ELF parser expects.
#[repr(C, align(32))]
struct Aligned<B: ?Sized>(B);

static OBJ: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/telemetry.bpf.o"
)));

/// The linked BPF ELF object (all programs and maps), 32-byte aligned.
pub static TELEMETRY_OBJ: &[u8] = &OBJ.0;
