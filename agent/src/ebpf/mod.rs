//! eBPF telemetry: loads `agent-ebpf`, reads its maps and ring buffer, feeds the stats store.
//!
//! Owns the BPF object, the cgroup id -> path index and the baselines; talks to the stats
//! store (sole writer), the event bus (OOM kills, memory marks, cgroup create/remove) and
//! cgroupfs. When BPF cannot load (no BTF, no privileges, verifier rejection, or the
//! `disabled` switch) the task [`start`] spawns logs one error naming the program and reason
//! and runs the cgroupfs poller instead, which fills the same store. Kubelet counterpart:
//! cAdvisor's housekeeping behind `pkg/kubelet/stats`, with push instead of polling.
//!
//! Nothing here blocks the async runtime: loading runs on the blocking pool (the store says
//! [`Source::Loading`] meanwhile), and once loaded the BPF object and the [`Collector`] live
//! on a thread of their own (sweeps read maps and, on a re-baseline, every pod cgroup's
//! files). The async task only waits: on the ring buffer (`AsyncFd`), the sweep tick and mark
//! commands, and hands each to that thread through one queue, in order.
//!
//! Where to start: [`start`]; the pieces are [`Telemetry::load`] (loader, typed maps),
//! [`EventReader`] (ring buffer via `AsyncFd`), [`Collector`] (maps -> [`Snapshot`]).

mod batch;
mod collector;
mod ids;
#[cfg(test)]
mod kernel_tests;
mod loader;
mod records;
mod ringbuf;
pub mod settings;

use std::{io, time::Duration, time::SystemTime};

use agent_common::{MARK_SCOPE_NODE, MemMarkRecord, OomRecord};
use aya::{maps::MapError, programs::ProgramError};
use tokio::{
    sync::{
        mpsc::{self, error::TrySendError},
        oneshot,
    },
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use collector::{Collector, CollectorConfig};
pub use loader::{Telemetry, TelemetryConfig};
pub use records::Record;
pub use ringbuf::EventReader;

use crate::stats::{
    OomEvent, Source, StatsWriter,
    cgroupfs::{self, CgroupLayout, CgroupfsPoller},
};

/// Why eBPF telemetry could not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Turned off by configuration (the fallback test switch).
    #[error("eBPF telemetry disabled by configuration")]
    Disabled,
    /// No kernel BTF: CO-RE relocation and tp_btf need `/sys/kernel/btf/vmlinux`.
    #[error("kernel BTF unavailable (/sys/kernel/btf/vmlinux)")]
    Btf(#[source] aya::BtfError),
    /// A controller the programs key by is not mounted.
    #[error("no {controller} cgroup controller mounted")]
    NoController {
        /// Controller name.
        controller: &'static str,
    },
    /// The object could not be parsed, relocated or its maps created.
    #[error("loading the telemetry object failed")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object lacks a program the agent expects (object and agent out of step).
    #[error("program {program} missing from the telemetry object")]
    MissingProgram {
        /// Program name.
        program: &'static str,
    },
    /// Loading or attaching one program failed.
    #[error("program {program} (tp_btf/{tracepoint}): {reason}")]
    Program {
        /// Program name.
        program: &'static str,
        /// Tracepoint it attaches to.
        tracepoint: &'static str,
        /// Short reason: privileges, verifier log tail, ...
        reason: String,
        /// aya's error (boxed: it carries the verifier log).
        #[source]
        source: Box<ProgramError>,
    },
    /// The object lacks a map the agent expects.
    #[error("map {map} missing from the telemetry object")]
    MissingMap {
        /// Map name.
        map: &'static str,
    },
    /// A map had the wrong type or sizes, or a map operation failed.
    #[error("map {map}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: MapError,
    },
    /// A syscall on a map's descriptor (batch read, dup) failed.
    #[error("map {map}")]
    MapIo {
        /// Map name.
        map: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Reading a cgroup's files failed.
    #[error("cgroup {path}")]
    Cgroup {
        /// Cgroup path.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error("detecting cgroup mounts")]
    Layout(#[source] io::Error),
    /// Registering or polling the ring buffer failed.
    #[error("ring buffer")]
    RingBuf(#[source] io::Error),
    /// The telemetry task is gone.
    #[error("telemetry task stopped")]
    Stopped,
    /// The blocking task that loads the object panicked or was cancelled.
    #[error("loading eBPF telemetry did not finish")]
    LoadTask(#[source] tokio::task::JoinError),
    /// The collector's thread could not be started.
    #[error("starting the eBPF collector thread")]
    Thread(#[source] io::Error),
}

impl EbpfError {
    fn program(program: &'static str, tracepoint: &'static str, source: ProgramError) -> Self {
        Self::Program {
            program,
            tracepoint,
            reason: loader::explain(&source),
            source: Box::new(source),
        }
    }
}

/// Run-time statistics of one attached program, as the kernel counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    /// Program name.
    pub name: &'static str,
    /// Total run time, ns (0 unless run-time statistics are enabled).
    pub run_ns: u64,
    /// Runs (0 unless run-time statistics are enabled).
    pub runs: u64,
}

/// Current run-time statistics of the programs `ids` names (a walk of the kernel's loaded
/// programs: a few syscalls per program, for a metrics scrape, not a hot path).
pub fn program_runs(ids: &[(&'static str, u32)]) -> Vec<ProgramRuns> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(ids.len());
    for info in aya::programs::loaded_programs().flatten() {
        if let Some((name, _)) = ids.iter().find(|(_, id)| *id == info.id()) {
            out.push(ProgramRuns {
                name,
                run_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                runs: info.run_count(),
            });
        }
    }
    out.sort_by_key(|p| p.name);
    out
}

pub use crate::errors::error_chain;

use crate::stats::pods::mapper::{MarkLevel, MarkRequest};

/// Kernel records for the stats mapper (defined with the bus's payloads).
pub use crate::events::KernelEvent as TelemetryEvent;

/// Requests to the telemetry task.
#[derive(Debug)]
enum Command {
    SetMemoryMark {
        path: String,
        level: MarkLevel,
        reply: oneshot::Sender<Result<(), EbpfError>>,
    },
    #[allow(dead_code)] // see TelemetryHandle::set_node_mark
    SetNodeMark {
        high_bytes: u64,
        low_bytes: u64,
        reply: oneshot::Sender<Result<(), EbpfError>>,
    },
}

/// Handle on a running eBPF telemetry task (cheap to clone).
#[derive(Clone, Debug)]
pub struct TelemetryHandle {
    tx: mpsc::Sender<Command>,
}

impl TelemetryHandle {
    /// Push a record when leaf cgroup `path`'s memory usage rises to the mark `level` places,
    /// and when it falls back below its low mark.
    pub async fn set_memory_mark(&self, path: &str, level: MarkLevel) -> Result<(), EbpfError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::SetMemoryMark {
                path: path.to_owned(),
                level,
                reply,
            })
            .await
            .map_err(|_| EbpfError::Stopped)?;
        rx.await.map_err(|_| EbpfError::Stopped)?
    }

    /// Push a record when the node's working set reaches `high_bytes` / falls below `low_bytes`.
    // The eviction manager sets this from its memory.available threshold; until it exists only
    // the kernel side and this entry point are in place.
    #[allow(dead_code)]
    pub async fn set_node_mark(&self, high_bytes: u64, low_bytes: u64) -> Result<(), EbpfError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::SetNodeMark {
                high_bytes,
                low_bytes,
                reply,
            })
            .await
            .map_err(|_| EbpfError::Stopped)?;
        rx.await.map_err(|_| EbpfError::Stopped)?
    }
}

/// Everything [`start`] needs.
#[derive(Clone, Debug)]
pub struct TelemetryOptions {
    /// Load-time settings (map sizes, marks granule, disable switch).
    pub load: TelemetryConfig,
    /// Sweep settings (roots, re-baseline period).
    pub collector: CollectorConfig,
    /// How often maps (or, in fallback, cgroup files) are read into the store.
    pub sweep_every: Duration,
    /// Ring-buffer records handled per wake-up before yielding.
    pub batch: usize,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        Self {
            load: TelemetryConfig::default(),
            collector: CollectorConfig::default(),
            sweep_every: Duration::from_secs(1),
            batch: 256,
        }
    }
}

/// A started telemetry task. Which source it runs is decided in the task and published in
/// the store ([`Source::Loading`] until then).
#[derive(Debug)]
pub struct Started {
    /// Marks are set through it; `None` when eBPF is switched off. If eBPF then fails to
    /// load, its calls fail with [`EbpfError::Stopped`].
    pub handle: Option<TelemetryHandle>,
    /// The task; it ends when `cancel` fires.
    pub task: JoinHandle<Result<(), EbpfError>>,
}

/// Starts telemetry as `settings` ask: the eBPF task (or the cgroupfs fallback) writing
/// `writer`, with kernel records to `records` (the stats mapper). Returns where the mapper
/// sends its mark requests (eBPF only). Never fails the agent: with telemetry off the store
/// says [`Source::None`]; a source that cannot start is logged by the task.
pub fn start_telemetry(
    settings: &settings::Settings,
    writer: StatsWriter,
    records: mpsc::Sender<TelemetryEvent>,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> Option<mpsc::Sender<MarkRequest>> {
    if settings.mode == settings::Mode::Off {
        tracing::info!(var = settings::MODE_VAR, "telemetry off");
        writer.set_source(Source::None);
        return None;
    }
    let mut opts = TelemetryOptions::default();
    opts.collector.roots = settings.roots.clone();
    opts.load.disabled = settings.mode == settings::Mode::Cgroupfs;
    opts.load.run_stats = settings.bpf_stats;
    // Returns at once: the source is chosen in the task (it logs and publishes its choice).
    let started = start(opts, writer, Some(records), cancel.child_token());
    let task = started.task;
    tasks.spawn(async move {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "telemetry task stopped"),
            Err(e) => tracing::warn!(error = %e, "telemetry task failed"),
        }
    });
    let handle = started.handle?;
    // Serves the mapper's mark requests (a benchmark aid until eviction sets real marks).
    let (tx, mut rx) = mpsc::channel::<MarkRequest>(64);
    tasks.spawn(async move {
        loop {
            let req = tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.recv() => r,
            };
            let Some((path, level)) = req else { return };
            if let Err(e) = handle.set_memory_mark(&path, level).await {
                tracing::debug!(cgroup = %path, error = %error_chain(&e), "setting a memory mark failed");
            }
        }
    });
    Some(tx)
}

/// Starts the telemetry task and returns at once. The task loads eBPF (off the runtime) and
/// runs it, or the cgroupfs poller if BPF cannot load (logged once, with the program and
/// reason); it publishes its choice in the store, or [`Source::None`] if neither can start.
/// Must run inside a tokio runtime.
pub fn start(
    opts: TelemetryOptions,
    writer: StatsWriter,
    events: Option<mpsc::Sender<TelemetryEvent>>,
    cancel: CancellationToken,
) -> Started {
    let (tx, commands) = mpsc::channel(16);
    let handle = (!opts.load.disabled).then_some(TelemetryHandle { tx });
    let task = tokio::spawn(run(opts, writer, events, commands, cancel));
    Started { handle, task }
}

/// What the blocking load produced.
enum Loaded {
    /// Loaded and attached, with its collector (boxed: both are large).
    Ebpf(Box<Telemetry>, Box<Collector>),
    /// BPF could not load: the cgroupfs poller runs on this layout instead.
    Fallback(CgroupLayout, EbpfError),
}

/// Blocking: mount table, object load and verification, attach, hierarchy walks.
fn load(load: &TelemetryConfig, collector: CollectorConfig) -> Result<Loaded, EbpfError> {
    let layout = CgroupLayout::detect().map_err(EbpfError::Layout)?;
    Ok(match Telemetry::load(load, layout.clone()) {
        Ok(mut telemetry) => {
            let collector = Collector::new(&mut telemetry, collector);
            Loaded::Ebpf(Box::new(telemetry), Box::new(collector))
        }
        Err(e) => Loaded::Fallback(layout, e),
    })
}

/// The telemetry task: decides the source, publishes it, runs it.
async fn run(
    opts: TelemetryOptions,
    writer: StatsWriter,
    events: Option<mpsc::Sender<TelemetryEvent>>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) -> Result<(), EbpfError> {
    // Loading parses the object, has the verifier check every program and walks the cgroup
    // hierarchies, all of it blocking: 56-177 ms on an idle machine, 1.5-2.9 s for a debug
    // build beside six busy loops on 2 cores. It runs on the blocking pool so that neither
    // `start` nor a runtime worker waits for it.
    let (load_cfg, collector_cfg) = (opts.load.clone(), opts.collector.clone());
    let started = std::time::Instant::now();
    let loading = tokio::task::spawn_blocking(move || load(&load_cfg, collector_cfg));
    let loaded = tokio::select! {
        // The load finishes on its own thread; what it made is dropped there.
        _ = cancel.cancelled() => return Ok(()),
        r = loading => r,
    };
    let loaded = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            writer.set_source(Source::None);
            return Err(e);
        }
        Err(join) => {
            writer.set_source(Source::None);
            return Err(EbpfError::LoadTask(join));
        }
    };
    let (roots, took) = (&opts.collector.roots, started.elapsed());
    match loaded {
        Loaded::Ebpf(telemetry, collector) => {
            tracing::info!(source = "ebpf", ?roots, ?took, "telemetry source in use");
            writer.set_source(Source::Ebpf);
            run_ebpf(
                *telemetry, *collector, writer, events, commands, &opts, cancel,
            )
            .await
        }
        Loaded::Fallback(layout, e) => {
            tracing::warn!(
                error = %error_chain(&e),
                "eBPF telemetry unavailable; falling back to cgroupfs polling"
            );
            tracing::info!(
                source = "cgroupfs",
                ?roots,
                ?took,
                reason = %error_chain(&e),
                "telemetry source in use"
            );
            writer.set_source(Source::Cgroupfs);
            let poller = CgroupfsPoller::new(layout, opts.collector.roots.clone());
            run_cgroupfs(poller, writer, opts.sweep_every, cancel).await
        }
    }
}

/// Work items queued to the collector thread.
/// 8 is a few ring-buffer batches plus a sweep: when it is full the async task stops reading
/// records (they wait in the kernel's ring buffer) and skips sweep ticks.
const WORK_QUEUE: usize = 8;

/// What the async task hands the collector thread, in the order it happened.
#[derive(Debug)]
enum Work {
    /// Ring-buffer records, in the order read.
    Records(Vec<Record>),
    /// A sweep, with the ring-buffer reader's counts (records read, malformed) as of now.
    Sweep {
        /// Records read.
        read: u64,
        /// Records that failed to parse.
        malformed: u64,
    },
    /// A mark command.
    Command(Command),
}

/// The eBPF source: a collector thread that owns all state, fed by the async task that
/// waits on the ring buffer, the tick and commands.
async fn run_ebpf(
    mut telemetry: Telemetry,
    collector: Collector,
    writer: StatsWriter,
    events: Option<mpsc::Sender<TelemetryEvent>>,
    mut commands: mpsc::Receiver<Command>,
    opts: &TelemetryOptions,
    cancel: CancellationToken,
) -> Result<(), EbpfError> {
    let ring = telemetry
        .events
        .take()
        .ok_or(EbpfError::MissingMap { map: "EVENTS" })?;
    let mut reader = EventReader::new(ring).map_err(EbpfError::RingBuf)?;
    writer.set_programs(telemetry.program_ids.clone());
    let (work, queue) = mpsc::channel(WORK_QUEUE);
    let (done_tx, done) = oneshot::channel::<()>();
    let worker = Worker {
        telemetry,
        collector,
        writer,
        events,
        dropped_events: 0,
    };
    std::thread::Builder::new()
        .name("ebpf-collector".into())
        .spawn(move || {
            worker.run(queue);
            let _ = done_tx.send(());
        })
        .map_err(EbpfError::Thread)?;
    let result = feed(&mut reader, &work, &mut commands, opts, &cancel).await;
    // A closed queue ends the thread once it has done what is queued; the object (and with
    // it the attached programs) goes with it. Wait for that, without blocking the runtime.
    drop(work);
    let _ = done.await;
    result
}

/// Hands the collector thread what arrives, in order, until `cancel`.
async fn feed(
    reader: &mut EventReader,
    work: &mpsc::Sender<Work>,
    commands: &mut mpsc::Receiver<Command>,
    opts: &TelemetryOptions,
    cancel: &CancellationToken,
) -> Result<(), EbpfError> {
    let mut tick = tokio::time::interval(opts.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(opts.batch);
    let mut commands_open = true;
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = reader.read_batch(opts.batch, &mut batch) => {
                r.map_err(EbpfError::RingBuf)?;
                Work::Records(std::mem::replace(&mut batch, Vec::with_capacity(opts.batch)))
            }
            _ = tick.tick() => {
                // A sweep reads whole maps, so one is as good as two: if the thread is behind
                // (queue full) this one is skipped and the next tick sweeps.
                let sweep = Work::Sweep { read: reader.read, malformed: reader.malformed };
                match work.try_send(sweep) {
                    Ok(()) | Err(TrySendError::Full(_)) => continue,
                    Err(TrySendError::Closed(_)) => return Err(EbpfError::Stopped),
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(cmd) => Work::Command(cmd),
                None => {
                    commands_open = false;
                    continue;
                }
            },
        };
        // Records are never dropped here: while the thread is behind they wait, and the next
        // ones wait in the kernel's ring buffer. One queue keeps them in order with the
        // sweeps, so a mkdir record is in the id index before any later sweep looks.
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = work.send(item) => r.map_err(|_| EbpfError::Stopped)?,
        }
    }
}

/// The collector thread's state: the BPF object, the collector, the store's writer.
struct Worker {
    telemetry: Telemetry,
    collector: Collector,
    writer: StatsWriter,
    events: Option<mpsc::Sender<TelemetryEvent>>,
    /// Telemetry events dropped because the bus was full.
    dropped_events: u64,
}

impl Worker {
    /// Does the queued work until the queue closes.
    fn run(mut self, mut queue: mpsc::Receiver<Work>) {
        while let Some(item) = queue.blocking_recv() {
            match item {
                Work::Records(records) => self.records(records),
                Work::Sweep { read, malformed } => self.sweep(read, malformed),
                Work::Command(cmd) => self.command(cmd),
            }
        }
    }

    fn records(&mut self, records: Vec<Record>) {
        for record in records {
            if let Some(ev) = handle_record(&mut self.collector, &self.writer, record) {
                self.emit(ev);
            }
        }
    }

    /// Telemetry drops and counts when the bus is full (never holds up the records).
    fn emit(&mut self, ev: TelemetryEvent) {
        if let Some(tx) = &self.events
            && tx.try_send(ev).is_err()
        {
            self.dropped_events += 1;
        }
    }

    /// One sweep into the store, and the node sample beside it.
    fn sweep(&mut self, read: u64, malformed: u64) {
        let writer = &self.writer;
        let prev = writer.current();
        let counts = (read, malformed, self.dropped_events);
        let c = &prev.counters;
        let counts_moved = (c.records_read, c.malformed, c.events_dropped) != counts;
        let swept = self
            .collector
            .sweep_if_changed(&mut self.telemetry, &prev, (read, malformed));
        // Held, it would make the in-place updates below copy the whole snapshot.
        drop(prev);
        let node_ws = match swept {
            Ok((snap, node_ws)) => {
                match snap {
                    Some(mut snap) => {
                        snap.counters.events_dropped = self.dropped_events;
                        writer.publish(snap);
                    }
                    // Nothing moved: the snapshot stands, confirmed current now, with the
                    // reader's counts (records from elsewhere on the machine).
                    None => {
                        if counts_moved {
                            writer.update(|s| {
                                s.counters.records_read = counts.0;
                                s.counters.malformed = counts.1;
                                s.counters.events_dropped = counts.2;
                            });
                        }
                        writer.confirm(SystemTime::now());
                    }
                }
                node_ws
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "eBPF telemetry sweep failed");
                None
            }
        };
        // The node's CPU time is one file, read once per sweep for every reader.
        let at = SystemTime::now();
        let node_cpu = cgroupfs::read_cpu_usage(&self.telemetry.layout, "/")
            .ok()
            .flatten();
        writer.publish_node(at, node_cpu, node_ws);
    }

    fn command(&mut self, cmd: Command) {
        let (c, t) = (&mut self.collector, &mut self.telemetry);
        match cmd {
            Command::SetMemoryMark { path, level, reply } => {
                let r = match level {
                    MarkLevel::Bytes { high, low } => c.set_memory_mark(t, &path, high, low),
                    MarkLevel::AroundUsage(step) => c.set_memory_mark_around(t, &path, step),
                };
                // Crossed between the caller's reading and now: the kernel saw that crossing
                // unmarked, so report it here, or the caller would wait for the next one.
                if let Ok(Some(bytes)) = r {
                    self.emit(TelemetryEvent::MemoryMark {
                        cgroup: Some(path),
                        node: false,
                        rising: true,
                        bytes: Some(bytes),
                        kernel_ts_ns: crate::events::monotonic_ns(),
                    });
                }
                let _ = reply.send(r.map(|_| ()));
            }
            Command::SetNodeMark {
                high_bytes,
                low_bytes,
                reply,
            } => {
                let _ = reply.send(c.set_node_mark(t, high_bytes, low_bytes));
            }
        }
    }
}

fn oom_event(collector: &mut Collector, r: &OomRecord) -> OomEvent {
    OomEvent {
        cgroup: collector.memcg_path(r.memcg_id),
        pid: Some(r.pid),
        tgid: Some(r.tgid),
        comm: Some(String::from_utf8_lossy(r.comm_bytes()).into_owned()),
        kernel_ts_ns: Some(r.hdr.ts_ns),
        seen_at: SystemTime::now(),
        ns_init: Some(r.kills_pid_namespace()),
    }
}

fn mark_event(collector: &mut Collector, r: &MemMarkRecord) -> TelemetryEvent {
    let node = r.scope == MARK_SCOPE_NODE;
    let cgroup = (!node).then(|| collector.memcg_path(r.cgroup_id)).flatten();
    let bytes = cgroup
        .as_deref()
        .and_then(|p| collector.mark_value_bytes(p, r.value_pages));
    TelemetryEvent::MemoryMark {
        cgroup,
        node,
        rising: r.rising != 0,
        bytes,
        kernel_ts_ns: r.hdr.ts_ns,
    }
}

/// Applies one record to the index/store and returns what goes to the bus.
fn handle_record(
    collector: &mut Collector,
    writer: &StatsWriter,
    record: Record,
) -> Option<TelemetryEvent> {
    match record {
        Record::Oom(r) => {
            let ev = oom_event(collector, &r);
            writer.update(|s| s.record_oom(ev.clone()));
            Some(TelemetryEvent::Oom(ev))
        }
        Record::MemMark(r) => Some(mark_event(collector, &r)),
        Record::CgroupMkdir(r) => {
            let path = String::from_utf8_lossy(r.path_bytes()).into_owned();
            collector
                .ids
                .insert(r.hierarchy_id, r.cgroup_id, path.clone());
            Some(TelemetryEvent::CgroupCreated {
                hierarchy_id: r.hierarchy_id,
                id: r.cgroup_id,
                path,
            })
        }
        Record::CgroupRmdir(r) => {
            let path = String::from_utf8_lossy(r.path_bytes()).into_owned();
            collector.cgroup_removed(r.hierarchy_id, r.cgroup_id);
            Some(TelemetryEvent::CgroupRemoved {
                hierarchy_id: r.hierarchy_id,
                id: r.cgroup_id,
                path,
            })
        }
    }
}

/// The fallback task: reads cgroup files every `every` (on the blocking pool) and publishes
/// them, and the node sample beside them.
pub async fn run_cgroupfs(
    poller: CgroupfsPoller,
    writer: StatsWriter,
    every: Duration,
    cancel: CancellationToken,
) -> Result<(), EbpfError> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let prev = writer.current();
                let p = poller.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let snap = p.sweep(&prev)?;
                    Ok::<_, io::Error>((snap, p.node_cpu()))
                })
                .await;
                match result {
                    Ok(Ok((snap, (at, node_cpu)))) => {
                        let node_ws = snap.node_working_set_bytes;
                        writer.publish(snap);
                        writer.publish_node(at, node_cpu, node_ws);
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cgroupfs sweep failed"),
                    Err(e) => tracing::warn!(error = %e, "cgroupfs sweep task failed"),
                }
            }
        }
    }
}
