//! eBPF telemetry: loads `agent-ebpf`, reads its maps and ring buffer, feeds the stats store.
//!
//! Owns the BPF object, the cgroup id -> path index and the baselines; talks to the stats
//! store (sole writer), the event bus (OOM kills, memory marks, cgroup create/remove) and
//! cgroupfs. When BPF cannot load (no BTF, no privileges, verifier rejection, or the
//! `disabled` switch) [`start`] logs one error naming the program and reason and runs the
//! cgroupfs poller instead, which fills the same store. Kubelet counterpart: cAdvisor's
//! housekeeping behind `pkg/kubelet/stats`, with push instead of polling.
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

use std::{io, time::Duration, time::SystemTime};

use agent_common::{MARK_SCOPE_NODE, MemMarkRecord, OomRecord};
use aya::{maps::MapError, programs::ProgramError};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use collector::{Collector, CollectorConfig};
pub use loader::{Telemetry, TelemetryConfig};
pub use records::Record;
pub use ringbuf::EventReader;

use crate::stats::{
    OomEvent, Source, StatsWriter,
    cgroupfs::{CgroupLayout, CgroupfsPoller},
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

/// `e` and its sources on one line, for the single log line of a failure.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Telemetry pushed to the event bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TelemetryEvent {
    /// The kernel OOM-killed a task.
    Oom(OomEvent),
    /// A memcg (leaf) or the node crossed a memory mark.
    MemoryMark {
        /// Cgroup path; `None` for the node mark or an unknown memcg.
        cgroup: Option<String>,
        /// True for the node-wide working-set mark.
        node: bool,
        /// True when rising through the high mark, false when falling below the low one.
        rising: bool,
        /// Usage (cgroup) or working set (node) in bytes at the crossing, if known.
        bytes: Option<u64>,
        /// Kernel time of the crossing (CLOCK_MONOTONIC ns).
        kernel_ts_ns: u64,
    },
    /// A cgroup was created in a hierarchy the agent keys by.
    CgroupCreated {
        /// Hierarchy id (0: v2).
        hierarchy_id: u32,
        /// kernfs id.
        id: u64,
        /// Path relative to the hierarchy root.
        path: String,
    },
    /// A cgroup was removed.
    CgroupRemoved {
        /// Hierarchy id (0: v2).
        hierarchy_id: u32,
        /// kernfs id.
        id: u64,
        /// Path relative to the hierarchy root.
        path: String,
    },
}

/// Requests to the telemetry task.
#[derive(Debug)]
enum Command {
    SetMemoryMark {
        path: String,
        high_bytes: u64,
        low_bytes: u64,
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
    /// Push a record when leaf cgroup `path`'s memory usage reaches `high_bytes`, and when it
    /// falls back below `low_bytes`.
    pub async fn set_memory_mark(
        &self,
        path: &str,
        high_bytes: u64,
        low_bytes: u64,
    ) -> Result<(), EbpfError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::SetMemoryMark {
                path: path.to_owned(),
                high_bytes,
                low_bytes,
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

/// A started telemetry source.
#[derive(Debug)]
pub struct Started {
    /// Which source feeds the store.
    pub source: Source,
    /// Set for eBPF: marks can be set through it.
    pub handle: Option<TelemetryHandle>,
    /// Why eBPF is not in use (fallback only).
    pub fallback_reason: Option<EbpfError>,
    /// The task; it ends when `cancel` fires.
    pub task: JoinHandle<Result<(), EbpfError>>,
}

/// Starts eBPF telemetry, or the cgroupfs poller if BPF cannot load (logged once, with the
/// program and reason). Must run inside a tokio runtime.
pub fn start(
    opts: TelemetryOptions,
    writer: StatsWriter,
    events: Option<mpsc::Sender<TelemetryEvent>>,
    cancel: CancellationToken,
) -> Result<Started, EbpfError> {
    let layout = CgroupLayout::detect().map_err(EbpfError::Layout)?;
    match Telemetry::load(&opts.load, layout.clone()) {
        Ok(telemetry) => {
            let (tx, rx) = mpsc::channel(16);
            let mut telemetry = telemetry;
            let collector = Collector::new(&mut telemetry, opts.collector.clone());
            let task = tokio::spawn(run_ebpf(
                telemetry, collector, writer, events, rx, opts, cancel,
            ));
            Ok(Started {
                source: Source::Ebpf,
                handle: Some(TelemetryHandle { tx }),
                fallback_reason: None,
                task,
            })
        }
        Err(e) => {
            tracing::warn!(
                error = %error_chain(&e),
                "eBPF telemetry unavailable; falling back to cgroupfs polling"
            );
            let poller = CgroupfsPoller::new(layout, opts.collector.roots.clone());
            let task = tokio::spawn(run_cgroupfs(poller, writer, opts.sweep_every, cancel));
            Ok(Started {
                source: Source::Cgroupfs,
                handle: None,
                fallback_reason: Some(e),
                task,
            })
        }
    }
}

/// The eBPF task: ring buffer, periodic sweeps and mark commands, one owner for all state.
async fn run_ebpf(
    mut telemetry: Telemetry,
    mut collector: Collector,
    writer: StatsWriter,
    events: Option<mpsc::Sender<TelemetryEvent>>,
    mut commands: mpsc::Receiver<Command>,
    opts: TelemetryOptions,
    cancel: CancellationToken,
) -> Result<(), EbpfError> {
    let ring = telemetry
        .events
        .take()
        .ok_or(EbpfError::MissingMap { map: "EVENTS" })?;
    let mut reader = EventReader::new(ring).map_err(EbpfError::RingBuf)?;
    writer.set_programs(telemetry.program_ids.clone());
    let mut tick = tokio::time::interval(opts.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(opts.batch);
    let mut dropped_events = 0u64;
    let mut commands_open = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = reader.read_batch(opts.batch, &mut batch) => {
                r.map_err(EbpfError::RingBuf)?;
                for record in batch.drain(..) {
                    // Telemetry drops and counts when the bus is full (never blocks the ring
                    // buffer).
                    if let Some(ev) = handle_record(&mut collector, &writer, record)
                        && let Some(tx) = &events
                        && tx.try_send(ev).is_err()
                    {
                        dropped_events += 1;
                    }
                }
            }
            _ = tick.tick() => {
                let prev = writer.current();
                let counts = (reader.read, reader.malformed, dropped_events);
                let c = &prev.counters;
                let counts_moved = (c.records_read, c.malformed, c.events_dropped) != counts;
                let swept = collector.sweep_if_changed(&mut telemetry, &prev, (counts.0, counts.1));
                // Held, it would make the in-place update below copy the whole snapshot.
                drop(prev);
                match swept {
                    Ok((snap, node_ws)) => {
                        if let Some(bytes) = node_ws {
                            writer.set_node_working_set(bytes);
                        }
                        match snap {
                            Some(mut snap) => {
                                snap.counters.events_dropped = dropped_events;
                                writer.publish(snap);
                            }
                            // Nothing moved: the snapshot stands, confirmed current now, with
                            // the reader's counts (records from elsewhere on the machine).
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
                    }
                    Err(e) => tracing::warn!(error = %error_chain(&e), "eBPF telemetry sweep failed"),
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(Command::SetMemoryMark { path, high_bytes, low_bytes, reply }) => {
                    let _ = reply.send(collector.set_memory_mark(&mut telemetry, &path, high_bytes, low_bytes));
                }
                Some(Command::SetNodeMark { high_bytes, low_bytes, reply }) => {
                    let _ = reply.send(collector.set_node_mark(&mut telemetry, high_bytes, low_bytes));
                }
                None => commands_open = false,
            },
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

/// The fallback task: reads cgroup files every `every` (on the blocking pool) and publishes.
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
                let result = tokio::task::spawn_blocking(move || p.sweep(&prev)).await;
                match result {
                    Ok(Ok(snap)) => writer.publish(snap),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cgroupfs sweep failed"),
                    Err(e) => tracing::warn!(error = %e, "cgroupfs sweep task failed"),
                }
            }
        }
    }
}
