//! Telemetry start-up settings, from options and the environment (read once at start-up):
//! - `NODELET_TELEMETRY=auto|cgroupfs|off`: `auto` (default) loads eBPF and falls back to
//!   cgroupfs polling when it cannot; `cgroupfs` forces the polling fallback (the tests' switch);
//!   `off` runs no telemetry at all (benchmark baseline).
//! - `NODELET_TELEMETRY_DUMP=<file>`: after every new store snapshot, the stats mapper writes
//!   the pod view as JSON to `<file>` (atomically). For tests and benchmarks.
//! - `NODELET_BPF_STATS=1`: have the kernel count the programs' run time (as
//!   `kernel.bpf_stats_enabled=1` does, for as long as the agent runs), exported as
//!   `nodelet_ebpf_program_run_seconds_total`. Off by default: two clock reads per run.
//! - `NODELET_TELEMETRY_MARK_BYTES=<n>` (benchmark aid, eBPF only): put a memory mark at `n`
//!   bytes (low mark 90 %) on every container; crossings are logged and dumped with their
//!   kernel -> agent latency. Eviction will set real marks.

use crate::options::Options;
use std::path::PathBuf;
use tracing::warn;

/// Environment variable choosing the source (`auto`, `cgroupfs`, `off`).
pub const MODE_VAR: &str = "NODELET_TELEMETRY";
/// Environment variable naming the JSON dump file.
pub const DUMP_VAR: &str = "NODELET_TELEMETRY_DUMP";
/// Environment variable: `1` turns on the kernel's run-time statistics of our programs.
pub const BPF_STATS_VAR: &str = "NODELET_BPF_STATS";
/// Environment variable: a memory mark (bytes) on every container (benchmark aid).
pub const MARK_VAR: &str = "NODELET_TELEMETRY_MARK_BYTES";
/// Kernel records queued for the stats mapper; when full the eBPF task drops and counts them.
pub const RECORDS_CAPACITY: usize = 1024;

/// Which telemetry source the agent should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// eBPF, falling back to cgroupfs polling.
    Auto,
    /// cgroupfs polling only.
    Cgroupfs,
    /// No telemetry.
    Off,
}

/// Start-up settings, from options and the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Source choice.
    pub mode: Mode,
    /// Cgroup subtrees published (relative to the hierarchy root).
    pub roots: Vec<String>,
    /// JSON dump file, if any.
    pub dump: Option<PathBuf>,
    /// Memory mark put on every container, bytes (benchmark aid).
    pub mark_bytes: Option<u64>,
    /// Count the eBPF programs' run time.
    pub bpf_stats: bool,
}

impl Settings {
    /// Settings for the agent's pod cgroups; `NODELET_TELEMETRY*` read here.
    pub fn from_options(o: &Options) -> Self {
        let kubepods = crate::cm::ContainerManager::new(o).pods_root();
        let mode = match std::env::var(MODE_VAR).as_deref() {
            Ok("cgroupfs") => Mode::Cgroupfs,
            Ok("off") => Mode::Off,
            Ok("auto") | Ok("") | Err(_) => Mode::Auto,
            Ok(other) => {
                warn!(
                    var = MODE_VAR,
                    value = other,
                    "unknown telemetry mode; using auto"
                );
                Mode::Auto
            }
        };
        Self {
            mode,
            roots: vec![kubepods],
            dump: std::env::var_os(DUMP_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            mark_bytes: std::env::var(MARK_VAR).ok().and_then(|v| v.parse().ok()),
            bpf_stats: std::env::var(BPF_STATS_VAR).is_ok_and(|v| v == "1"),
        }
    }
}
