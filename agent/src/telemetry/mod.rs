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
//! - `NODELET_TELEMETRY_MARK_BYTES=<n>` (benchmark aid, eBPF only): put a memory mark at `n`
//!   bytes (low mark 90 %) on every container; crossings are logged and dumped with their
//!   kernel -> agent latency. Eviction will set real marks.
//!
//! The view may lag the kernel by one sweep (1 s) and a new container's name by one CRI
//! relist; a container whose id is not resolved yet is left out, not guessed.

// The read API is for the HTTP server and metrics (issue 5); only the dump uses it so far.
#![allow(dead_code)]

mod path;
pub mod server;

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

/// One container's resource use.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerStats {
    /// Its pod.
    pub pod: PodRef,
    /// Container name.
    pub container: String,
    /// Runtime container id.
    pub id: String,
    /// Cgroup path relative to the hierarchy root.
    pub cgroup: String,
    /// CPU (cumulative), if the cgroup exists in the CPU hierarchy.
    pub cpu: Option<CpuStats>,
    /// Memory, if the cgroup exists in the memory hierarchy.
    pub memory: Option<MemoryStats>,
    /// OOM kills seen in the container's cgroup.
    pub oom_kills: u64,
    /// Image as the runtime reports it.
    pub image: String,
    /// When the runtime created the container.
    pub created_at: Option<SystemTime>,
    /// Running at the last CRI relist.
    pub running: bool,
}

/// One pod's resource use (its pod cgroup: containers plus sandbox).
#[derive(Clone, Debug, PartialEq)]
pub struct PodStats {
    /// The pod.
    pub pod: PodRef,
    /// Pod cgroup path relative to the hierarchy root.
    pub cgroup: String,
    /// CPU (cumulative).
    pub cpu: Option<CpuStats>,
    /// Memory.
    pub memory: Option<MemoryStats>,
    /// OOM kills in the pod's containers.
    pub oom_kills: u64,
    /// When the pod's sandbox was created.
    pub created_at: Option<SystemTime>,
}

/// Node-wide figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// CPU time used by everything on the node, ns (root cgroup), read on call.
    pub cpu_usage_ns: Option<u64>,
    /// Node working set, bytes (root memcg).
    pub memory_working_set_bytes: Option<u64>,
}

/// One OOM kill, attributed to a pod and container when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomKill {
    /// The victim's pod.
    pub pod: Option<PodRef>,
    /// The victim's container name.
    pub container: Option<String>,
    /// The victim's container id.
    pub id: Option<String>,
    /// The store's record.
    pub event: stats::OomEvent,
}

/// Read-only, cheap-to-clone view of pod and container telemetry.
#[derive(Clone, Debug)]
pub struct TelemetryView {
    stats: StatsStore,
    index: Arc<RwLock<Arc<Index>>>,
    node_cpu: Option<NodeCpuFile>,
}

/// Where the root cgroup's CPU usage is.
#[derive(Clone, Debug)]
enum NodeCpuFile {
    /// v1 `cpuacct.usage` (ns).
    V1(PathBuf),
    /// v2 `cpu.stat` (`usage_usec`).
    V2(PathBuf),
}

impl NodeCpuFile {
    fn detect() -> Option<Self> {
        let layout = stats::cgroupfs::CgroupLayout::detect().ok()?;
        let m = layout
            .controller("cpuacct")
            .or_else(|| layout.controller("cpu"))?;
        Some(if m.v2 {
            NodeCpuFile::V2(m.mount.join("cpu.stat"))
        } else {
            NodeCpuFile::V1(m.mount.join("cpuacct.usage"))
        })
    }

    fn read(&self) -> Option<u64> {
        match self {
            NodeCpuFile::V1(p) => std::fs::read_to_string(p).ok()?.trim().parse().ok(),
            NodeCpuFile::V2(p) => {
                let text = std::fs::read_to_string(p).ok()?;
                stats::cgroupfs::parse_flat_keyed(&text)
                    .get("usage_usec")
                    .map(|us| us * 1000)
            }
        }
    }
}

impl TelemetryView {
    fn new(stats: StatsStore) -> Self {
        Self {
            stats,
            index: Arc::default(),
            node_cpu: NodeCpuFile::detect(),
        }
    }

    fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The latest store snapshot (cgroup paths; for metrics that want everything).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.stats.snapshot()
    }

    /// Which source feeds the store (`None` before the first sweep, and with telemetry off).
    pub fn source(&self) -> Source {
        self.stats.source()
    }

    /// When the current numbers were taken.
    pub fn taken_at(&self) -> Option<SystemTime> {
        self.stats.snapshot().taken_at
    }

    /// Collection counters (records, losses, drift).
    pub fn counters(&self) -> CollectorCounters {
        self.stats.snapshot().counters
    }

    /// Every running container whose id is resolved, with its numbers.
    pub fn containers(&self) -> Vec<ContainerStats> {
        let snap = self.stats.snapshot();
        let index = self.index();
        let mut out = Vec::new();
        for (cgroup, s) in &snap.cgroups {
            let Some(CgroupKind::Container { id, .. }) = classify(cgroup) else {
                continue;
            };
            let Some(
                owner @ Owner {
                    pod,
                    container: Some(name),
                    ..
                },
            ) = index.by_id.get(id)
            else {
                continue;
            };
            if s.cpu.is_none() && s.memory.is_none() {
                // Only OOM history is left: the cgroup is gone.
                continue;
            }
            out.push(ContainerStats {
                pod: pod.clone(),
                container: name.clone(),
                id: id.to_owned(),
                cgroup: cgroup.clone(),
                cpu: s.cpu,
                memory: s.memory,
                oom_kills: s.oom_kills,
                image: owner.image.clone(),
                created_at: unix_time(owner.created_at_ns),
                running: owner.running,
            });
        }
        out.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
        out
    }

    /// Per-pod totals (the pod cgroup, which includes the sandbox).
    pub fn pod_totals(&self) -> Vec<PodStats> {
        let snap = self.stats.snapshot();
        let index = self.index();
        let mut ooms: HashMap<&str, u64> = HashMap::new();
        for (cgroup, s) in &snap.cgroups {
            if let Some(CgroupKind::Container { id, .. }) = classify(cgroup)
                && let Some(o) = index.by_id.get(id)
            {
                *ooms.entry(o.pod.uid.as_str()).or_default() += s.oom_kills;
            }
        }
        let mut out = Vec::new();
        for (cgroup, s) in &snap.cgroups {
            let Some(CgroupKind::Pod { uid }) = classify(cgroup) else {
                continue;
            };
            let Some(pod) = index.pods.get(&uid) else {
                continue;
            };
            let created = index
                .by_id
                .values()
                .filter(|o| o.container.is_none() && o.pod.uid == uid)
                .map(|o| o.created_at_ns)
                .filter(|&t| t > 0)
                .min()
                .and_then(unix_time);
            out.push(PodStats {
                pod: pod.clone(),
                cgroup: cgroup.clone(),
                cpu: s.cpu,
                memory: s.memory,
                oom_kills: ooms.get(uid.as_str()).copied().unwrap_or(0),
                created_at: created,
            });
        }
        out.sort_by(|a, b| a.pod.cmp(&b.pod));
        out
    }

    /// Node CPU (read from the root cgroup now) and working set (from the store).
    pub fn node(&self) -> NodeStats {
        NodeStats {
            cpu_usage_ns: self.node_cpu.as_ref().and_then(NodeCpuFile::read),
            memory_working_set_bytes: self.stats.snapshot().node_working_set_bytes,
        }
    }

    /// Recent OOM kills (oldest first), attributed where the index knows the container.
    pub fn recent_ooms(&self) -> Vec<OomKill> {
        let snap = self.stats.snapshot();
        let index = self.index();
        snap.recent_ooms
            .iter()
            .map(|e| attribute(&index, e))
            .collect()
    }
}

fn attribute(index: &Index, e: &stats::OomEvent) -> OomKill {
    let id = e.cgroup.as_deref().and_then(|c| match classify(c) {
        Some(CgroupKind::Container { id, .. }) => Some(id.to_owned()),
        _ => None,
    });
    let owner = id.as_deref().and_then(|id| index.by_id.get(id));
    OomKill {
        pod: owner.map(|o| o.pod.clone()),
        container: owner.and_then(|o| o.container.clone()),
        id,
        event: e.clone(),
    }
}

/// A started telemetry: the view, and the task to await at shutdown.
pub struct Running {
    /// Read handle for the server, metrics and eviction.
    pub view: TelemetryView,
    /// eBPF mark handle (eviction thresholds), when eBPF is the source.
    pub handle: Option<ebpf::TelemetryHandle>,
    /// Which source was started.
    pub source: Source,
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
        return Running {
            view,
            handle: None,
            source: Source::None,
        };
    }
    let mut opts = TelemetryOptions::default();
    opts.collector.roots = settings.roots.clone();
    opts.load.disabled = settings.mode == Mode::Cgroupfs;
    let (ev_tx, ev_rx) = mpsc::channel(EVENTS_CAPACITY);
    let started = match ebpf::start(opts, writer, Some(ev_tx), cancel.child_token()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %ebpf::error_chain(&e), "telemetry could not start; no container stats");
            return Running {
                view,
                handle: None,
                source: Source::None,
            };
        }
    };
    info!(
        source = started.source.as_str(),
        roots = ?settings.roots,
        reason = started.fallback_reason.as_ref().map(|e| ebpf::error_chain(e)),
        "telemetry source in use"
    );
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
        source: started.source,
    }
}

/// The index's only writer.
struct Mapper {
    view: TelemetryView,
    cri: Cri,
    dump: Option<PathBuf>,
    last_relist: Option<Instant>,
    /// Ids the runtime did not know at the last relist (not retried until the full relist).
    unknown_after_relist: HashSet<String>,
    dirty: bool,
    /// Per-cgroup OOM counts already logged (cgroupfs source, which has no OOM records).
    seen_ooms: HashMap<String, u64>,
    /// eBPF mark handle.
    handle: Option<ebpf::TelemetryHandle>,
    /// Mark to put on every container.
    mark_bytes: Option<u64>,
    /// Container cgroups that have the mark.
    marked: HashSet<String>,
    /// Recent mark crossings: (cgroup, rising, kernel ts, agent mono ts).
    marks: std::collections::VecDeque<MarkSeen>,
}

/// A memory mark crossing as the mapper received it.
#[derive(Clone, Debug)]
struct MarkSeen {
    cgroup: Option<String>,
    rising: bool,
    bytes: Option<u64>,
    kernel_ts_ns: u64,
    received_mono_ns: u64,
}

impl Mapper {
    async fn run(mut self, mut events: mpsc::Receiver<TelemetryEvent>, cancel: CancellationToken) {
        // A new snapshot is noticed within one tick; fast when a dump is asked for, so a
        // test's reading of the dump is close to the snapshot time.
        let every = if self.dump.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(1)
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Arc<Snapshot>> = None;
        let mut events_open = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = events.recv(), if events_open => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => events_open = false,
                },
                _ = tick.tick() => {
                    let snap = self.view.stats.snapshot();
                    if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &snap)) {
                        continue;
                    }
                    self.on_snapshot(&snap).await;
                    last = Some(snap);
                }
            }
        }
    }

    fn index(&self) -> Arc<Index> {
        self.view.index()
    }

    fn known(&self, id: &str) -> bool {
        self.index().by_id.contains_key(id) || self.unknown_after_relist.contains(id)
    }

    async fn on_event(&mut self, ev: TelemetryEvent) {
        match ev {
            TelemetryEvent::CgroupCreated { path, .. } => {
                if let Some(CgroupKind::Container { id, .. }) = classify(&path)
                    && !self.known(id)
                {
                    self.dirty = true;
                }
            }
            TelemetryEvent::Oom(e) => {
                let needs = e.cgroup.as_deref().and_then(|c| match classify(c) {
                    Some(CgroupKind::Container { id, .. }) => {
                        Some(!self.index().by_id.contains_key(id))
                    }
                    _ => None,
                });
                if needs == Some(true) {
                    self.relist().await;
                }
                log_oom(&attribute(&self.index(), &e));
            }
            TelemetryEvent::MemoryMark {
                cgroup,
                node: false,
                rising,
                bytes,
                kernel_ts_ns,
            } => {
                let received_mono_ns = monotonic_ns();
                debug!(cgroup = ?cgroup, rising, bytes = ?bytes, latency_ns = received_mono_ns.saturating_sub(kernel_ts_ns), "memory mark crossed");
                if self.marks.len() == RECENT_MARKS {
                    self.marks.pop_front();
                }
                self.marks.push_back(MarkSeen {
                    cgroup,
                    rising,
                    bytes,
                    kernel_ts_ns,
                    received_mono_ns,
                });
            }
            TelemetryEvent::CgroupRemoved { .. } | TelemetryEvent::MemoryMark { .. } => {}
        }
    }

    async fn on_snapshot(&mut self, snap: &Snapshot) {
        if !self.dirty {
            self.dirty = snap.cgroups.keys().any(|c| match classify(c) {
                Some(CgroupKind::Container { id, .. }) => !self.known(id),
                _ => false,
            });
        }
        let due = self.last_relist.is_none_or(|t| t.elapsed() >= FULL_RELIST);
        let allowed = self.last_relist.is_none_or(|t| t.elapsed() >= MIN_RELIST);
        if due || (self.dirty && allowed) {
            self.relist().await;
        }
        if snap.source == Source::Cgroupfs {
            self.log_polled_ooms(snap);
        }
        self.set_marks(snap).await;
        if let Some(dump) = &self.dump
            && let Err(e) = write_dump(dump, &self.view, &self.marks)
        {
            debug!(file = %dump.display(), error = %e, "telemetry dump failed");
        }
    }

    /// Puts the configured mark on containers that do not have it yet.
    async fn set_marks(&mut self, snap: &Snapshot) {
        let (Some(handle), Some(high)) = (&self.handle, self.mark_bytes) else {
            return;
        };
        let index = self.index();
        for cgroup in snap.cgroups.keys() {
            let Some(CgroupKind::Container { id, .. }) = classify(cgroup) else {
                continue;
            };
            let is_container = index.by_id.get(id).is_some_and(|o| o.container.is_some());
            if !is_container || self.marked.contains(cgroup) {
                continue;
            }
            match handle.set_memory_mark(cgroup, high, high / 10 * 9).await {
                Ok(()) => {
                    self.marked.insert(cgroup.clone());
                }
                Err(e) => {
                    debug!(cgroup, error = %ebpf::error_chain(&e), "setting a memory mark failed")
                }
            }
        }
        self.marked.retain(|c| snap.cgroups.contains_key(c));
    }

    /// Polling has no OOM records: an increase of a cgroup's kill counter is logged instead.
    fn log_polled_ooms(&mut self, snap: &Snapshot) {
        let index = self.index();
        for (cgroup, s) in &snap.cgroups {
            let seen = self.seen_ooms.entry(cgroup.clone()).or_insert(0);
            if s.oom_kills > *seen {
                *seen = s.oom_kills;
                log_oom(&attribute(
                    &index,
                    &stats::OomEvent {
                        cgroup: Some(cgroup.clone()),
                        pid: None,
                        tgid: None,
                        comm: None,
                        kernel_ts_ns: None,
                        seen_at: snap.taken_at.unwrap_or_else(SystemTime::now),
                    },
                ));
            }
        }
        self.seen_ooms.retain(|c, _| snap.cgroups.contains_key(c));
    }

    /// Rebuilds the index from CRI. On failure the old index stays and the next tick retries.
    async fn relist(&mut self) {
        self.last_relist = Some(Instant::now());
        let (containers, sandboxes) = match tokio::join!(
            self.cri.list_containers(None),
            self.cri.list_pod_sandboxes(None)
        ) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => {
                debug!(error = %e, "telemetry: listing containers failed; keeping the old index");
                return;
            }
        };
        let mut index = Index::default();
        let pod_of = |l: &HashMap<String, String>| -> Option<PodRef> {
            Some(PodRef {
                namespace: l.get(labels::POD_NAMESPACE)?.clone(),
                name: l.get(labels::POD_NAME)?.clone(),
                uid: l.get(labels::POD_UID)?.clone(),
            })
        };
        for s in &sandboxes {
            if let Some(pod) = pod_of(&s.labels) {
                index.pods.insert(pod.uid.clone(), pod.clone());
                index.by_id.insert(
                    s.id.clone(),
                    Owner {
                        pod,
                        container: None,
                        image: String::new(),
                        created_at_ns: s.created_at,
                        running: s.state
                            == proto::runtime::v1::PodSandboxState::SandboxReady as i32,
                    },
                );
            }
        }
        for c in &containers {
            if let Some(pod) = pod_of(&c.labels) {
                let name = c
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .cloned()
                    .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()));
                index.pods.entry(pod.uid.clone()).or_insert(pod.clone());
                index.by_id.insert(
                    c.id.clone(),
                    Owner {
                        pod,
                        container: name,
                        image: c
                            .image
                            .as_ref()
                            .map(|i| i.image.clone())
                            .unwrap_or_default(),
                        created_at_ns: c.created_at,
                        running: c.state
                            == proto::runtime::v1::ContainerState::ContainerRunning as i32,
                    },
                );
            }
        }
        // Ids in the store the runtime does not know (not ours, or already removed): not asked
        // about again until the next full relist.
        let snap = self.view.stats.snapshot();
        self.unknown_after_relist = snap
            .cgroups
            .keys()
            .filter_map(|c| match classify(c) {
                Some(CgroupKind::Container { id, .. }) if !index.by_id.contains_key(id) => {
                    Some(id.to_owned())
                }
                _ => None,
            })
            .collect();
        debug!(
            containers = containers.len(),
            sandboxes = sandboxes.len(),
            unknown = self.unknown_after_relist.len(),
            "telemetry: container index rebuilt"
        );
        self.dirty = false;
        let index = Arc::new(index);
        match self.view.index.write() {
            Ok(mut g) => *g = index,
            Err(p) => *p.into_inner() = index,
        }
    }
}

fn log_oom(k: &OomKill) {
    match (&k.pod, &k.container) {
        (Some(pod), Some(container)) => warn!(
            reason = "OOMKilling",
            pod = %pod,
            container = %container,
            pid = ?k.event.pid,
            process = ?k.event.comm,
            "container process OOM-killed by the kernel"
        ),
        _ => warn!(
            reason = "OOMKilling",
            cgroup = ?k.event.cgroup,
            pid = ?k.event.pid,
            process = ?k.event.comm,
            "process OOM-killed by the kernel (not mapped to a container)"
        ),
    }
}

/// CRI nanoseconds since the epoch as a time (`None` for 0).
fn unix_time(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CLOCK_MONOTONIC now, ns (the clock of BPF record timestamps).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn memory_json(m: &Option<MemoryStats>) -> serde_json::Value {
    match m {
        None => serde_json::Value::Null,
        Some(m) => serde_json::json!({
            "usage_bytes": m.usage_bytes,
            "working_set_bytes": m.working_set_bytes,
            "rss_bytes": m.rss_bytes,
            "cache_bytes": m.cache_bytes,
            "pgfault": m.pgfault,
            "pgmajfault": m.pgmajfault,
            "limit_bytes": m.limit_bytes,
        }),
    }
}

fn pod_json(p: &PodRef) -> serde_json::Value {
    serde_json::json!({ "namespace": p.namespace, "name": p.name, "uid": p.uid })
}

/// The view as JSON (the dump's format; not an API).
fn dump_json(
    view: &TelemetryView,
    marks: &std::collections::VecDeque<MarkSeen>,
) -> serde_json::Value {
    let snap = view.snapshot();
    let c = snap.counters;
    let (now_sys, now_mono) = (SystemTime::now(), monotonic_ns());
    let containers: Vec<_> = view
        .containers()
        .iter()
        .map(|s| {
            serde_json::json!({
                "pod": pod_json(&s.pod),
                "container": s.container,
                "id": s.id,
                "cgroup": s.cgroup,
                "cpu_usage_ns": s.cpu.map(|c| c.usage_ns),
                "memory": memory_json(&s.memory),
                "oom_kills": s.oom_kills,
            })
        })
        .collect();
    let pods: Vec<_> = view
        .pod_totals()
        .iter()
        .map(|s| {
            serde_json::json!({
                "pod": pod_json(&s.pod),
                "cgroup": s.cgroup,
                "cpu_usage_ns": s.cpu.map(|c| c.usage_ns),
                "memory": memory_json(&s.memory),
                "oom_kills": s.oom_kills,
            })
        })
        .collect();
    let ooms: Vec<_> = view
        .recent_ooms()
        .iter()
        .map(|k| {
            // kernel -> store latency: both ends brought to "now" on their own clocks.
            let store_latency_ns = k.event.kernel_ts_ns.map(|kts| {
                let since_seen = now_sys
                    .duration_since(k.event.seen_at)
                    .map_or(0, |d| d.as_nanos() as i128);
                now_mono as i128 - kts as i128 - since_seen
            });
            serde_json::json!({
                "pod": k.pod.as_ref().map(pod_json),
                "container": k.container,
                "id": k.id,
                "cgroup": k.event.cgroup,
                "pid": k.event.pid,
                "comm": k.event.comm,
                "kernel_ts_ns": k.event.kernel_ts_ns,
                "seen_at_unix_ns": unix_ns(k.event.seen_at),
                "store_latency_ns": store_latency_ns,
            })
        })
        .collect();
    let marks: Vec<_> = marks
        .iter()
        .map(|m| {
            serde_json::json!({
                "cgroup": m.cgroup,
                "rising": m.rising,
                "bytes": m.bytes,
                "kernel_ts_ns": m.kernel_ts_ns,
                "latency_ns": m.received_mono_ns.saturating_sub(m.kernel_ts_ns),
            })
        })
        .collect();
    let node = view.node();
    serde_json::json!({
        "marks": marks,
        "source": snap.source.as_str(),
        "taken_at_unix_ns": snap.taken_at.map(unix_ns),
        "node": {
            "cpu_usage_ns": node.cpu_usage_ns,
            "memory_working_set_bytes": node.memory_working_set_bytes,
        },
        "containers": containers,
        "pods": pods,
        "ooms": ooms,
        "counters": {
            "records_read": c.records_read,
            "records_produced": c.records_produced,
            "ring_full": c.ring_full,
            "malformed": c.malformed,
            "map_full": c.map_full,
            "memory_drift_bytes": c.memory_drift_bytes,
            "unresolved_ids": c.unresolved_ids,
            "events_dropped": c.events_dropped,
            "sweeps": c.sweeps,
        },
    })
}

fn write_dump(
    file: &std::path::Path,
    view: &TelemetryView,
    marks: &std::collections::VecDeque<MarkSeen>,
) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(&dump_json(view, marks)).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
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
