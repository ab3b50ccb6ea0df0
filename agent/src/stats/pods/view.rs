//! The read side: a cheap, cloneable view of per-container, per-pod and node usage.

use super::*;

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

/// One snapshot's container memory, held for reading ([`PodStatsView::container_memory`]).
#[derive(Debug)]
pub struct ContainerMemory {
    snap: Arc<Snapshot>,
    index: Arc<Index>,
}

impl ContainerMemory {
    /// (cgroup path, memory) of each running container whose id is resolved, as
    /// [`PodStatsView::containers`] lists them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MemoryStats)> {
        resolved_containers(&self.snap, &self.index)
            .filter_map(|c| Some((c.cgroup, c.stats.memory.as_ref()?)))
    }
}

/// A container cgroup of the snapshot with its owner in the index.
struct Resolved<'a> {
    cgroup: &'a str,
    id: &'a str,
    name: &'a str,
    owner: &'a Owner,
    stats: &'a stats::CgroupStats,
}

/// The snapshot's container cgroups whose id the index resolves to a named container. Callers
/// skip those without the numbers they need (a cgroup with only OOM history is gone).
fn resolved_containers<'a>(
    snap: &'a Snapshot,
    index: &'a Index,
) -> impl Iterator<Item = Resolved<'a>> {
    snap.cgroups.iter().filter_map(|(cgroup, stats)| {
        let Some(CgroupKind::Container { id, .. }) = classify(cgroup) else {
            return None;
        };
        let owner = index.by_id.get(id)?;
        let name = owner.container.as_deref()?;
        Some(Resolved {
            cgroup,
            id,
            name,
            owner,
            stats,
        })
    })
}

/// Read-only, cheap-to-clone view of pod and container telemetry.
#[derive(Clone, Debug)]
pub struct PodStatsView {
    pub(super) stats: StatsStore,
    pub(super) index: Arc<RwLock<Arc<Index>>>,
}

impl PodStatsView {
    /// A view over the store; its index fills once the mapper runs.
    pub fn new(stats: StatsStore) -> Self {
        Self {
            stats,
            index: Arc::default(),
        }
    }

    pub(super) fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The latest store snapshot (cgroup paths; for metrics that want everything).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.stats.snapshot()
    }

    /// Which source feeds the store (`Loading` until it is chosen, `None` with telemetry off).
    pub fn source(&self) -> Source {
        self.stats.source()
    }

    /// When the current numbers were taken.
    pub fn taken_at(&self) -> Option<SystemTime> {
        self.stats.taken_at()
    }

    /// Collection counters (records, losses, drift).
    pub fn counters(&self) -> CollectorCounters {
        self.stats.snapshot().counters
    }

    /// Every running container whose id is resolved, with its numbers.
    pub fn containers(&self) -> Vec<ContainerStats> {
        let snap = self.stats.snapshot();
        let index = self.index();
        let mut out: Vec<ContainerStats> = resolved_containers(&snap, &index)
            .filter(|c| c.stats.cpu.is_some() || c.stats.memory.is_some())
            .map(|c| ContainerStats {
                pod: c.owner.pod.clone(),
                container: c.name.to_owned(),
                id: c.id.to_owned(),
                cgroup: c.cgroup.to_owned(),
                cpu: c.stats.cpu,
                memory: c.stats.memory,
                oom_kills: c.stats.oom_kills,
                image: c.owner.image.clone(),
                created_at: unix_time(c.owner.created_at_ns),
                running: c.owner.running,
            })
            .collect();
        out.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
        out
    }

    /// The running containers' memory as of now, borrowed rather than copied: the eviction
    /// manager looks at every container each second, and [`Self::containers`] would copy
    /// five strings of each.
    pub fn container_memory(&self) -> ContainerMemory {
        ContainerMemory {
            snap: self.stats.snapshot(),
            index: self.index(),
        }
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
        // The pod's creation: its earliest sandbox, gathered in one pass (a scan of the index
        // per pod made every request O(pods x containers)).
        let mut sandbox_created: HashMap<&str, i64> = HashMap::new();
        for o in index.by_id.values() {
            if o.container.is_none() && o.created_at_ns > 0 {
                let t = sandbox_created
                    .entry(o.pod.uid.as_str())
                    .or_insert(i64::MAX);
                *t = (*t).min(o.created_at_ns);
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
            let created = sandbox_created
                .get(uid.as_str())
                .copied()
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

    /// Node CPU, its rate and working set as the writer sampled them at the last sweep.
    pub fn node(&self) -> stats::NodeSample {
        self.stats.node()
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

pub(super) fn attribute(index: &Index, e: &stats::OomEvent) -> OomKill {
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
