//! Whole-map reads in one `BPF_MAP_LOOKUP_BATCH` call per chunk.
//!
//! aya 0.14 reads a hash map key by key (a `GET_NEXT_KEY` and a `LOOKUP_ELEM` syscall per
//! entry): at 250 containers that is over a thousand syscalls a second, most of the agent's
//! telemetry cost when the node is idle. The kernel has batched lookups since 5.6; this is the
//! one syscall aya lacks, on a duplicate of the map's descriptor.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use aya::maps::{Map, MapData};

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd` (uapi/linux/bpf.h): a stable ABI number.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr` (uapi/linux/bpf.h); the kernel zero-checks the rest.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_PROG_TEST_RUN` from `enum bpf_cmd`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_RUN_ON_CPU`: run on `cpu` (an IPI), not on the calling CPU.
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// The `test` member of `union bpf_attr` (uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs the raw-tracepoint program `prog` once on `cpu`, with an empty context: the one
/// syscall aya lacks for it.
pub fn run_on_cpu(prog: BorrowedFd<'_>, cpu: u32) -> io::Result<()> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        flags: BPF_F_TEST_RUN_ON_CPU,
        cpu,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid test-run attribute with no buffers; the size is its own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Entries per syscall: enough for every pod cgroup of a dense node in one or two calls.
const CHUNK: usize = 512;

/// A map read whole into reusable buffers.
#[derive(Debug)]
pub struct BatchMap {
    fd: OwnedFd,
    key_size: usize,
    /// Bytes per entry: the value, or for per-CPU maps each CPU's value rounded up to 8.
    value_size: usize,
    /// Bytes between two CPUs' copies of a per-CPU value.
    stride: usize,
    /// Copies per entry (possible CPUs for a per-CPU map, else 1).
    copies: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
    len: usize,
}

/// The descriptor inside an aya map of the kinds the collector batch-reads.
pub fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    let data: &MapData = match map {
        Map::HashMap(d) | Map::PerCpuHashMap(d) | Map::Array(d) | Map::PerCpuArray(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd())
}

impl BatchMap {
    /// Batch reader for a map with `key_size`-byte keys and `value_size`-byte values;
    /// `per_cpu_copies` is the number of possible CPUs for per-CPU maps, else 1.
    pub fn new(
        fd: BorrowedFd<'_>,
        key_size: usize,
        value_size: usize,
        per_cpu_copies: usize,
    ) -> io::Result<Self> {
        let copies = per_cpu_copies.max(1);
        // The kernel lays per-CPU copies out 8-byte aligned; plain maps as they are.
        let stride = if per_cpu_copies > 1 {
            value_size.next_multiple_of(8)
        } else {
            value_size
        };
        Ok(Self {
            fd: fd.try_clone_to_owned()?,
            key_size,
            value_size: stride * copies,
            stride,
            copies,
            keys: Vec::new(),
            values: Vec::new(),
            len: 0,
        })
    }

    /// Reads every entry; the previous contents are replaced.
    pub fn read(&mut self) -> io::Result<()> {
        self.len = 0;
        // The kernel's resume token is a bucket index or a key: 8 bytes fit both here.
        let mut token_in = [0u8; 8];
        let mut token_out = [0u8; 8];
        let mut first = true;
        loop {
            let need = self.len + CHUNK;
            if self.keys.len() < need * self.key_size {
                self.keys.resize(need * self.key_size, 0);
                self.values.resize(need * self.value_size, 0);
            }
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    token_in.as_mut_ptr() as u64
                },
                out_batch: token_out.as_mut_ptr() as u64,
                keys: self.keys[self.len * self.key_size..].as_mut_ptr() as u64,
                values: self.values[self.len * self.value_size..].as_mut_ptr() as u64,
                count: CHUNK as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` points at buffers with room for `count` keys and values and at
            // two 8-byte tokens, all alive for the call; the size passed is attr's own.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    std::mem::size_of::<BatchAttr>() as libc::c_uint,
                )
            };
            let err = (rc < 0).then(io::Error::last_os_error);
            self.len += attr.count as usize;
            match err {
                None => {}
                // ENOENT: the walk is complete (the last chunk is in `count`).
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Some(e) => return Err(e),
            }
            token_in = token_out;
            first = false;
        }
    }

    /// Entries read by the last [`read`](Self::read).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Key bytes of entry `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * self.key_size..(i + 1) * self.key_size]
    }

    /// Value bytes of entry `i` (all CPUs' copies for a per-CPU map).
    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.value_size..(i + 1) * self.value_size]
    }

    /// Each CPU's copy of entry `i`'s value (one item for a plain map).
    pub fn copies<T: aya::Pod>(&self, i: usize) -> impl Iterator<Item = T> + '_ {
        let v = self.value(i);
        (0..self.copies).map(move |c| read_pod(&v[c * self.stride..]))
    }

    /// The `u64` key of entry `i`.
    pub fn key_u64(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.key(i)[..8]);
        u64::from_ne_bytes(b)
    }

    /// Everything read, keys then values, for change detection.
    pub fn contents(&self) -> (&[u8], &[u8]) {
        (
            &self.keys[..self.len * self.key_size],
            &self.values[..self.len * self.value_size],
        )
    }
}

/// Copies `T` out of possibly unaligned bytes (`bytes` is at least `size_of::<T>()` long).
pub fn read_pod<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: T is Pod (any bit pattern is valid) and the length was checked.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}
