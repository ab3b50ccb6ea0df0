//! The mapper task: container ids to pods from the runtime cache; kernel records resolved to
//! pods and published on the event bus.

use super::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A memory mark request: (container cgroup, where the mark goes). The eBPF side serves them;
/// the mapper (a benchmark aid) and the eviction manager do not know who does.
pub type MarkRequest = (String, MarkLevel);

/// Where a memory mark goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkLevel {
    /// Fire when usage rises to `high` bytes and when it falls below `low`.
    Bytes {
        /// Rising mark, bytes.
        high: u64,
        /// Falling mark, bytes.
        low: u64,
    },
    /// This many bytes above and below the usage the collector reads when it sets the mark:
    /// a caller with an older figure cannot place a mark already crossed.
    AroundUsage(u64),
}

/// What the mapper needs.
pub struct MapperSettings {
    /// JSON dump file, if any (`NODELET_TELEMETRY_DUMP`).
    pub dump: Option<PathBuf>,
    /// Memory mark to put on every container, bytes (`NODELET_TELEMETRY_MARK_BYTES`).
    pub mark_bytes: Option<u64>,
    /// Where mark requests go (eBPF only).
    pub marks: Option<mpsc::Sender<MarkRequest>>,
    /// Raises the node's `OOMKilling` events.
    pub recorder: crate::recorder::Recorder,
}

/// Starts the mapper: the index's only writer. Kernel records arrive on `records`; resolved
/// ones go to `bus`.
pub fn start(
    view: PodStatsView,
    cache: CacheReader,
    bus: Bus,
    records: mpsc::Receiver<KernelEvent>,
    settings: MapperSettings,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) {
    let m = Mapper {
        view,
        cache,
        bus,
        dump: settings.dump,
        seen_ooms: HashMap::new(),
        mark_requests: settings.marks,
        mark_bytes: settings.mark_bytes,
        marked: HashSet::new(),
        marks: std::collections::VecDeque::new(),
        pending_ooms: Vec::new(),
        recorder: settings.recorder,
        indexed: 0,
    };
    tasks.spawn(m.run(records, cancel));
}

/// The index's only writer.
struct Mapper {
    view: PodStatsView,
    cache: CacheReader,
    bus: Bus,
    dump: Option<PathBuf>,
    /// Per-cgroup OOM counts already reported (cgroupfs source, which has no OOM records).
    seen_ooms: HashMap<String, u64>,
    /// Where mark requests go.
    mark_requests: Option<mpsc::Sender<MarkRequest>>,
    /// Mark to put on every container.
    mark_bytes: Option<u64>,
    /// Raises the node's `OOMKilling` events.
    recorder: crate::recorder::Recorder,
    /// Container cgroups that have the mark.
    marked: HashSet<String>,
    /// Recent mark crossings.
    marks: std::collections::VecDeque<MarkSeen>,
    /// OOM kills in containers the runtime cache did not list yet (killed within a second of
    /// starting): reported at the next cache generation, attributed if it has them by then.
    pending_ooms: Vec<(u64, stats::OomEvent)>,
    /// The cache's `content` the index was built from.
    indexed: u64,
}

/// A memory mark crossing as the mapper received it.
#[derive(Clone, Debug)]
pub(super) struct MarkSeen {
    pub(super) cgroup: Option<String>,
    pub(super) rising: bool,
    pub(super) bytes: Option<u64>,
    pub(super) kernel_ts_ns: u64,
    pub(super) received_mono_ns: u64,
}

impl Mapper {
    async fn run(mut self, mut records: mpsc::Receiver<KernelEvent>, cancel: CancellationToken) {
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
        let mut records_open = true;
        let mut cache_open = true;
        self.reindex();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = records.recv(), if records_open => match ev {
                    Some(ev) => self.on_record(ev),
                    None => records_open = false,
                },
                ok = self.cache.changed(), if cache_open => {
                    cache_open = ok;
                    // Most generations are an idle relist that changed no pod.
                    if self.cache.snapshot().content != self.indexed {
                        self.reindex();
                    }
                    self.report_pending();
                }
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

    /// Resolves a kernel record and publishes it on the bus.
    fn on_record(&mut self, ev: KernelEvent) {
        match ev {
            KernelEvent::CgroupCreated { path, .. } => {
                self.bus.publish(NodeEvent::CgroupCreated(path));
            }
            KernelEvent::CgroupRemoved { path, .. } => {
                self.bus.publish(NodeEvent::CgroupRemoved(path));
            }
            KernelEvent::Oom(e) => {
                let unknown = e.cgroup.as_deref().is_some_and(|c| {
                    matches!(classify(c), Some(CgroupKind::Container { id, .. }) if !self.index().by_id.contains_key(id))
                });
                if unknown {
                    // A container PLEG has not listed yet: wait for the next relist (<= 1 s).
                    let generation = self.cache.snapshot().generation;
                    self.pending_ooms.push((generation, e));
                } else {
                    self.report_oom(&e);
                }
            }
            KernelEvent::MemoryMark {
                cgroup,
                node,
                rising,
                bytes,
                kernel_ts_ns,
            } => {
                let received_mono_ns = monotonic_ns();
                debug!(cgroup = ?cgroup, rising, bytes = ?bytes, latency_ns = received_mono_ns.saturating_sub(kernel_ts_ns), "memory mark crossed");
                if !node {
                    if self.marks.len() == RECENT_MARKS {
                        self.marks.pop_front();
                    }
                    self.marks.push_back(MarkSeen {
                        cgroup: cgroup.clone(),
                        rising,
                        bytes,
                        kernel_ts_ns,
                        received_mono_ns,
                    });
                }
                self.bus
                    .publish(NodeEvent::MemoryMark(crate::events::MemoryMark {
                        cgroup,
                        node,
                        rising,
                        bytes,
                        kernel_ts_ns,
                    }));
            }
        }
    }

    /// Reports the OOM kills that waited for a newer cache generation than the one they met.
    fn report_pending(&mut self) {
        let now = self.cache.snapshot().generation;
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_ooms)
            .into_iter()
            .partition(|(g, _)| *g < now);
        self.pending_ooms = wait;
        for (_, e) in &due {
            self.report_oom(e);
        }
    }

    /// Logs an OOM kill against its pod and container and publishes it on the bus.
    fn report_oom(&self, e: &stats::OomEvent) {
        let k = attribute(&self.index(), e);
        log_oom(&k);
        let whereabouts = match (&k.pod, &k.container) {
            (Some(pod), Some(c)) => format!("container {c} of pod {pod}"),
            (Some(pod), None) => format!("pod {pod}"),
            _ => format!("cgroup {}", e.cgroup.as_deref().unwrap_or("unknown")),
        };
        self.recorder.node(crate::recorder::reasons::oom_killing(
            e.comm.as_deref().unwrap_or("unknown"),
            e.tgid.or(e.pid),
            &whereabouts,
        ));
        // A container's main process is its PID namespace's init (the pod's pause is the
        // init of a shared namespace, and is not in the container's cgroup).
        let ends_container = e.ns_init.map(|init| init && k.container.is_some());
        self.bus.publish(NodeEvent::Oom(crate::events::OomKill {
            pod: k.pod,
            container: k.container,
            container_id: k.id,
            cgroup: e.cgroup.clone(),
            tgid: e.tgid,
            comm: e.comm.clone(),
            kernel_ts_ns: e.kernel_ts_ns,
            seen_at: e.seen_at,
            ends_container,
        }));
    }

    async fn on_snapshot(&mut self, snap: &Snapshot) {
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

    /// Asks for the configured mark on containers that do not have it yet.
    async fn set_marks(&mut self, snap: &Snapshot) {
        let (Some(tx), Some(high)) = (&self.mark_requests, self.mark_bytes) else {
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
            let level = MarkLevel::Bytes {
                high,
                low: high / 10 * 9,
            };
            if tx.send((cgroup.clone(), level)).await.is_ok() {
                self.marked.insert(cgroup.clone());
            }
        }
        self.marked.retain(|c| snap.cgroups.contains_key(c));
    }

    /// Polling has no OOM records: an increase of a cgroup's kill counter is reported instead.
    fn log_polled_ooms(&mut self, snap: &Snapshot) {
        let mut new = Vec::new();
        for (cgroup, s) in &snap.cgroups {
            let seen = self.seen_ooms.entry(cgroup.clone()).or_insert(0);
            if s.oom_kills > *seen {
                *seen = s.oom_kills;
                new.push(stats::OomEvent {
                    cgroup: Some(cgroup.clone()),
                    pid: None,
                    tgid: None,
                    comm: None,
                    kernel_ts_ns: None,
                    seen_at: snap.taken_at.unwrap_or_else(SystemTime::now),
                    ns_init: None,
                });
            }
        }
        self.seen_ooms.retain(|c, _| snap.cgroups.contains_key(c));
        for e in &new {
            self.report_oom(e);
        }
    }

    /// Rebuilds the index from PLEG's runtime cache (every container and sandbox the runtime
    /// has, with its pod). No CRI call: the cache is the one view of the runtime.
    fn reindex(&mut self) {
        let snap = self.cache.snapshot();
        self.indexed = snap.content;
        let mut index = Index::default();
        for p in snap.pods.values() {
            index.pods.insert(p.pod.uid.clone(), p.pod.clone());
            for sb in &p.state.sandboxes {
                index.by_id.insert(
                    sb.id.clone(),
                    Owner {
                        pod: p.pod.clone(),
                        container: None,
                        image: String::new(),
                        created_at_ns: sb.created_at,
                        running: sb.ready,
                    },
                );
            }
            for c in &p.state.containers {
                index.by_id.insert(
                    c.id.clone(),
                    Owner {
                        pod: p.pod.clone(),
                        container: Some(c.name.clone()),
                        image: c.image.clone(),
                        created_at_ns: c.created_at,
                        running: c.state == crate::kuberuntime::state::ContainerState::Running,
                    },
                );
            }
        }
        debug!(
            ids = index.by_id.len(),
            pods = index.pods.len(),
            generation = snap.generation,
            "stats: container index rebuilt from the runtime cache"
        );
        let index = Arc::new(index);
        match self.view.index.write() {
            Ok(mut g) => *g = index,
            Err(p) => *p.into_inner() = index,
        }
    }
}

pub(super) fn log_oom(k: &OomKill) {
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
pub(super) fn unix_time(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

pub(super) fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
