//! The mapper task: container ids to pods from CRI, OOM kills and memory marks logged.

use super::*;

/// The index's only writer.
pub(super) struct Mapper {
    pub(super) view: TelemetryView,
    pub(super) cri: Cri,
    pub(super) dump: Option<PathBuf>,
    pub(super) last_relist: Option<Instant>,
    /// Ids the runtime did not know at the last relist (not retried until the full relist).
    pub(super) unknown_after_relist: HashSet<String>,
    pub(super) dirty: bool,
    /// Per-cgroup OOM counts already logged (cgroupfs source, which has no OOM records).
    pub(super) seen_ooms: HashMap<String, u64>,
    /// eBPF mark handle.
    pub(super) handle: Option<ebpf::TelemetryHandle>,
    /// Mark to put on every container.
    pub(super) mark_bytes: Option<u64>,
    /// Container cgroups that have the mark.
    pub(super) marked: HashSet<String>,
    /// Recent mark crossings: (cgroup, rising, kernel ts, agent mono ts).
    pub(super) marks: std::collections::VecDeque<MarkSeen>,
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
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<TelemetryEvent>,
        cancel: CancellationToken,
    ) {
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

/// CLOCK_MONOTONIC now, ns (the clock of BPF record timestamps).
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
