//! Pod-level telemetry: the stats store (cgroup paths) mapped to pods and containers.
//!
//! Owns the container id -> (pod, container name) index and the agent's start-up of the
//! telemetry source: [`start`] runs [`crate::ebpf::start`] restricted to the agent's pod
//! cgroups (`<cgroupRoot>/kubepods`) with the agent's own tgid filtered, plus one mapper task
//! that resolves unknown container ids from CRI (`ListContainers`, `ListPodSandbox`) when a
//! cgroup mkdir record or a new store path names one, relists every 30 s so removed containers
//! leave the index, and logs OOM kills with their pod and container (`reason="OOMKilling"`,
//! as the kubelet's event). Readers (the HTTP server, metrics, eviction) hold a cheap
//! [`TelemetryView`] clone. Kubelet counterpart: `pkg/kubelet/stats` (cAdvisor stats provider).
//!
//! Switches (environment, read once at start-up):
//! - `NODELET_TELEMETRY=auto|cgroupfs|off`: `auto` (default) loads eBPF and falls back to
//!   cgroupfs polling when it cannot; `cgroupfs` forces the polling fallback (the tests' switch);
//!   `off` runs no telemetry at all (benchmark baseline).
//! - `NODELET_TELEMETRY_DUMP=<file>`: after every new store snapshot, write the view as JSON to
//!   `<file>` (atomically). For tests and benchmarks until the HTTP API exists.
//! - `NODELET_BPF_STATS=1`: have the kernel count the programs' run time (as
//!   `kernel.bpf_stats_enabled=1` does, for as long as the agent runs), exported as
//!   `nodelet_ebpf_program_run_seconds_total`. Off by default: two clock reads per run.
//! - `NODELET_TELEMETRY_MARK_BYTES=<n>` (benchmark aid, eBPF only): put a memory mark at `n`
//!   bytes (low mark 90 %) on every container; crossings are logged and dumped with their
//!   kernel -> agent latency. Eviction will set real marks.
//!
//! The view may lag the kernel by one sweep (1 s) and a new container's name by one CRI
//! relist; a container whose id is not resolved yet is left out, not guessed.

// The read API is for the HTTP server and metrics (issue 5); only the dump uses it so far.
#![allow(dead_code)]

mod dump;
mod mapper;
mod path;
pub mod server;
mod view;

use dump::*;
use mapper::*;
use view::*;
pub use view::{OomKill, TelemetryView};

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ebpf::{self, TelemetryEvent, TelemetryOptions};
use crate::kuberuntime::{Cri, labels};
use crate::options::{CgroupDriver, Options};
use crate::pod::PodRef;
use crate::stats::{self, CollectorCounters, CpuStats, MemoryStats, Snapshot, Source, StatsStore};

pub use path::{CgroupKind, classify};

/// Environment variable choosing the source (`auto`, `cgroupfs`, `off`).
pub const MODE_VAR: &str = "NODELET_TELEMETRY";
/// Environment variable naming the JSON dump file.
pub const DUMP_VAR: &str = "NODELET_TELEMETRY_DUMP";
/// Environment variable: `1` turns on the kernel's run-time statistics of our programs.
pub const BPF_STATS_VAR: &str = "NODELET_BPF_STATS";
/// Environment variable: a memory mark (bytes) on every container (benchmark aid).
pub const MARK_VAR: &str = "NODELET_TELEMETRY_MARK_BYTES";
/// Mark crossings kept for the dump.
const RECENT_MARKS: usize = 64;

/// Minimum time between two CRI relists triggered by unknown ids.
const MIN_RELIST: Duration = Duration::from_secs(1);
/// Relist period that drops containers the runtime no longer has.
const FULL_RELIST: Duration = Duration::from_secs(30);
/// Telemetry events queued for the mapper; when full the ebpf task drops and counts them.
const EVENTS_CAPACITY: usize = 1024;

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
        let root = o.cgroup_root.trim_end_matches('/');
        let kubepods = match o.cgroup_driver {
            CgroupDriver::Cgroupfs => format!("{root}/kubepods"),
            CgroupDriver::Systemd => "/kubepods.slice".to_owned(),
        };
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

/// Who owns a container id.
#[derive(Clone, Debug)]
struct Owner {
    pod: PodRef,
    /// Container name; `None` for the pod sandbox (pause container).
    container: Option<String>,
    /// Image as the runtime reports it.
    image: String,
    /// Creation time, ns since the epoch (CRI `created_at`).
    created_at_ns: i64,
    /// Running at the last relist.
    running: bool,
}

/// The id index, replaced as a whole by the mapper.
#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, Owner>,
    pods: HashMap<String, PodRef>,
}

/// A started telemetry: the view, and the task to await at shutdown.
pub struct Running {
    /// Read handle for the server, metrics and eviction.
    pub view: TelemetryView,
    /// eBPF mark handle (eviction thresholds), unless eBPF is switched off.
    pub handle: Option<ebpf::TelemetryHandle>,
}

/// Starts the telemetry source and the mapper; logs the source in use. Never fails the
/// agent: a source that cannot start is logged and the view stays empty.
pub fn start(
    settings: Settings,
    cri: Cri,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> Running {
    let (writer, store) = stats::store();
    let view = TelemetryView::new(store);
    if settings.mode == Mode::Off {
        info!(var = MODE_VAR, "telemetry off");
        writer.set_source(Source::None);
        return Running { view, handle: None };
    }
    let mut opts = TelemetryOptions::default();
    opts.collector.roots = settings.roots.clone();
    opts.load.disabled = settings.mode == Mode::Cgroupfs;
    opts.load.run_stats = settings.bpf_stats;
    let (ev_tx, ev_rx) = mpsc::channel(EVENTS_CAPACITY);
    // Returns at once: the source is chosen in the task (it logs and publishes its choice).
    let started = ebpf::start(opts, writer, Some(ev_tx), cancel.child_token());
    let task = started.task;
    tasks.spawn(async move {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %ebpf::error_chain(&e), "telemetry task stopped"),
            Err(e) => warn!(error = %e, "telemetry task failed"),
        }
    });
    let mapper = Mapper {
        view: view.clone(),
        cri,
        dump: settings.dump,
        last_relist: None,
        unknown_after_relist: HashSet::new(),
        dirty: true,
        seen_ooms: HashMap::new(),
        handle: started.handle.clone(),
        mark_bytes: settings.mark_bytes,
        marked: HashSet::new(),
        marks: std::collections::VecDeque::new(),
    };
    tasks.spawn(mapper.run(ev_rx, cancel));
    Running {
        view,
        handle: started.handle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CgroupStats;

    fn pod(uid: &str) -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: format!("p-{uid}"),
            uid: uid.into(),
        }
    }

    #[test]
    fn view_maps_store_paths_to_containers_and_pods() {
        let (writer, store) = stats::store();
        let view = TelemetryView::new(store);
        let mut snap = Snapshot {
            source: Source::Ebpf,
            ..Snapshot::default()
        };
        let cpu = |ns| CgroupStats {
            cpu: Some(CpuStats {
                usage_ns: ns,
                ..Default::default()
            }),
            ..Default::default()
        };
        snap.cgroups.insert("/r/kubepods/poda".into(), cpu(30));
        snap.cgroups.insert("/r/kubepods/poda/c1".into(), cpu(10));
        snap.cgroups.insert("/r/kubepods/poda/s1".into(), cpu(20));
        snap.cgroups.insert("/r/kubepods/poda/zz".into(), cpu(1));
        writer.publish(snap);
        let mut index = Index::default();
        index.pods.insert("a".into(), pod("a"));
        index.by_id.insert(
            "c1".into(),
            Owner {
                pod: pod("a"),
                container: Some("web".into()),
                image: "busybox".into(),
                created_at_ns: 0,
                running: true,
            },
        );
        index.by_id.insert(
            "s1".into(),
            Owner {
                pod: pod("a"),
                container: None,
                image: String::new(),
                created_at_ns: 0,
                running: true,
            },
        );
        *view.index.write().expect("not poisoned") = Arc::new(index);
        let cs = view.containers();
        assert_eq!(cs.len(), 1, "sandbox and unknown ids are left out");
        assert_eq!(cs[0].container, "web");
        assert_eq!(cs[0].cpu.map(|c| c.usage_ns), Some(10));
        let ps = view.pod_totals();
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].cpu.map(|c| c.usage_ns), Some(30));
        assert_eq!(view.source(), Source::Ebpf);
    }
}
