//! Node-level garbage collection of dead containers, dead sandboxes and unused images
//! (kubelet pkg/kubelet/kuberuntime/kuberuntime_gc.go and pkg/kubelet/images/image_gc_manager.go).
//! The choices are plain functions over a listing ([`containers_to_remove`],
//! [`sandboxes_to_remove`], [`images_in_eviction_order`], [`plan_free_space`],
//! [`amount_to_free`]); [`NodeGc`] lists, chooses and removes. Who runs it, and when, is the
//! caller's business: the eviction manager runs it every minute (containers) and every five
//! minutes (images), as the kubelet's StartGarbageCollection, and before evicting a pod for disk
//! pressure. Which pods are gone is asked through a [`PodStateFn`], since the desired pods and
//! their statuses live above this layer.

use super::client::{Cri, CriError};
use super::labels;
use crate::instrument::CounterVec;
use crate::options::gc::{ContainerGcPolicy, ImageGcPolicy};
use proto::runtime::v1 as cri;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info, warn};

/// What the node knows of a pod, for GC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodGcState {
    /// Desired and not terminal: keep its newest dead instances.
    Active,
    /// Desired but terminal (Succeeded/Failed): ShouldPodRuntimeBeRemoved.
    Terminated,
    /// No longer desired: ShouldPodContentBeRemoved.
    Deleted,
}

/// Tells the GC the state of a pod UID.
pub type PodStateFn = Arc<dyn Fn(&str) -> PodGcState + Send + Sync>;

/// `kubelet_image_garbage_collected_total{reason}` (reason `age` or `space`).
#[derive(Debug, Default)]
pub struct GcStats {
    /// Images removed, by reason.
    pub images_collected: CounterVec,
}

/// A dead-container candidate (containerGCInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcContainer {
    /// Runtime id.
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Pod UID label.
    pub pod_uid: String,
    /// Container name.
    pub name: String,
    /// Creation, ns since the epoch.
    pub created_ns: i64,
    /// Running containers are never collected.
    pub running: bool,
}

impl GcContainer {
    fn of(c: &cri::Container) -> Self {
        Self {
            id: c.id.clone(),
            sandbox_id: c.pod_sandbox_id.clone(),
            pod_uid: c.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
            name: c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            created_ns: c.created_at,
            running: c.state == cri::ContainerState::ContainerRunning as i32,
        }
    }
}

/// evictContainers: which dead containers to remove. Dead containers older than the policy's
/// minimum age are grouped by (pod UID, name), newest first; every one of a deleted pod goes
/// (and of a terminated pod when `evict_non_deleted`, as eviction asks), then each group is
/// cut to `max_per_pod_container`, then the node to `max_containers`, oldest first.
pub fn containers_to_remove(
    containers: &[GcContainer],
    policy: &ContainerGcPolicy,
    now_ns: i64,
    state: &dyn Fn(&str) -> PodGcState,
    evict_non_deleted: bool,
) -> Vec<String> {
    let newest =
        now_ns.saturating_sub(i64::try_from(policy.min_age.as_nanos()).unwrap_or(i64::MAX));
    let mut units: BTreeMap<(String, String), Vec<&GcContainer>> = BTreeMap::new();
    for c in containers
        .iter()
        .filter(|c| !c.running && c.created_ns <= newest)
    {
        units
            .entry((c.pod_uid.clone(), c.name.clone()))
            .or_default()
            .push(c);
    }
    for u in units.values_mut() {
        u.sort_by_key(|c| std::cmp::Reverse(c.created_ns));
    }
    let mut out = Vec::new();
    units.retain(|(uid, _), u| {
        let st = state(uid);
        let all = st == PodGcState::Deleted || (evict_non_deleted && st == PodGcState::Terminated);
        if all {
            out.extend(u.iter().map(|c| c.id.clone()));
        }
        !all
    });
    let cut = |units: &mut BTreeMap<_, Vec<&GcContainer>>, keep: usize, out: &mut Vec<String>| {
        for u in units.values_mut() {
            if u.len() > keep {
                out.extend(u.drain(keep..).map(|c| c.id.clone()));
            }
        }
    };
    if let Ok(keep) = usize::try_from(policy.max_per_pod_container) {
        cut(&mut units, keep, &mut out);
    }
    if let Ok(max) = usize::try_from(policy.max_containers) {
        let total: usize = units.values().map(Vec::len).sum();
        if total > max && !units.is_empty() {
            let per_unit = (max / units.len()).max(1);
            cut(&mut units, per_unit, &mut out);
            let mut flat: Vec<&GcContainer> = units.values().flatten().copied().collect();
            if flat.len() > max {
                flat.sort_by_key(|c| std::cmp::Reverse(c.created_ns));
                out.extend(flat.drain(max..).map(|c| c.id.clone()));
            }
        }
    }
    out
}

/// A sandbox as the GC sees it (sandboxGCInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSandbox {
    /// Runtime id.
    pub id: String,
    /// Pod UID label.
    pub pod_uid: String,
    /// Creation, ns since the epoch.
    pub created_ns: i64,
    /// Ready, or still holding containers: never removed.
    pub active: bool,
}

/// evictSandboxes: every inactive sandbox of a deleted pod (or a terminated one when
/// `evict_non_deleted`); of other pods all but the newest sandbox, if inactive.
pub fn sandboxes_to_remove(
    sandboxes: &[GcSandbox],
    state: &dyn Fn(&str) -> PodGcState,
    evict_non_deleted: bool,
) -> Vec<String> {
    let mut by_pod: BTreeMap<&str, Vec<&GcSandbox>> = BTreeMap::new();
    for s in sandboxes {
        by_pod.entry(&s.pod_uid).or_default().push(s);
    }
    let mut out = Vec::new();
    for (uid, mut list) in by_pod {
        list.sort_by_key(|s| std::cmp::Reverse(s.created_ns));
        let st = state(uid);
        let skip =
            if st == PodGcState::Deleted || (evict_non_deleted && st == PodGcState::Terminated) {
                0
            } else {
                1
            };
        out.extend(
            list.iter()
                .skip(skip)
                .filter(|s| !s.active)
                .map(|s| s.id.clone()),
        );
    }
    out
}

/// What the image GC remembers of an image (imageRecord).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRecord {
    /// When the GC first saw it.
    pub first_detected: SystemTime,
    /// When a container last used it (`UNIX_EPOCH`: never seen in use).
    pub last_used: SystemTime,
    /// Bytes, as the runtime reports.
    pub size: u64,
    /// Pinned by the runtime (the sandbox image): never removed.
    pub pinned: bool,
}

/// imagesInEvictionOrder: unused, unpinned images, least recently used first, ties broken by
/// first detection.
pub fn images_in_eviction_order(
    records: &HashMap<String, ImageRecord>,
    in_use: &HashSet<String>,
) -> Vec<(String, ImageRecord)> {
    let mut v: Vec<(String, ImageRecord)> = records
        .iter()
        .filter(|(id, r)| !in_use.contains(*id) && !r.pinned)
        .map(|(id, r)| (id.clone(), *r))
        .collect();
    v.sort_by(|a, b| {
        a.1.last_used
            .cmp(&b.1.last_used)
            .then(a.1.first_detected.cmp(&b.1.first_detected))
            .then(a.0.cmp(&b.0))
    });
    v
}

/// freeSpace's choice: in eviction order, images not used at `now` and first seen at least
/// `min_age` ago, until `bytes` are covered.
pub fn plan_free_space(
    order: &[(String, ImageRecord)],
    bytes: u64,
    now: SystemTime,
    min_age: Duration,
) -> Vec<(String, u64)> {
    let mut freed = 0u64;
    let mut out = Vec::new();
    for (id, r) in order {
        if freed >= bytes {
            break;
        }
        if r.last_used >= now {
            continue;
        }
        if now.duration_since(r.first_detected).unwrap_or_default() < min_age {
            continue;
        }
        freed = freed.saturating_add(r.size);
        out.push((id.clone(), r.size));
    }
    out
}

/// GarbageCollect's trigger: bytes to free to get from usage at or above `high` percent down
/// to `low` percent; `None` below `high`.
pub fn amount_to_free(capacity: i64, available: i64, high: i32, low: i32) -> Option<i64> {
    if capacity <= 0 {
        return None;
    }
    let available = available.min(capacity);
    let usage = 100 - available.saturating_mul(100) / capacity;
    (usage >= i64::from(high)).then(|| capacity * i64::from(100 - low) / 100 - available)
}

/// statvfs of `path`: (available bytes, capacity bytes, free inodes, inodes).
pub fn statvfs(path: &Path) -> std::io::Result<(i64, i64, i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs(3) writes only into the zeroed struct we own; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as i64;
    Ok((
        st.f_bavail as i64 * frsize,
        st.f_blocks as i64 * frsize,
        st.f_ffree as i64,
        st.f_files as i64,
    ))
}

/// The GC: the runtime, both policies, the image records and the counters.
pub struct NodeGc {
    cri: Cri,
    containers: ContainerGcPolicy,
    images: ImageGcPolicy,
    records: Mutex<HashMap<String, ImageRecord>>,
    began: Instant,
    /// Counters for `/metrics`.
    pub stats: Arc<GcStats>,
}

impl std::fmt::Debug for NodeGc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeGc")
            .field("containers", &self.containers)
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl NodeGc {
    /// A GC over `cri` with the given policies.
    pub fn new(cri: Cri, containers: ContainerGcPolicy, images: ImageGcPolicy) -> Self {
        Self {
            cri,
            containers,
            images,
            records: Mutex::new(HashMap::new()),
            began: Instant::now(),
            stats: Arc::default(),
        }
    }

    /// The image policy.
    pub fn image_policy(&self) -> &ImageGcPolicy {
        &self.images
    }

    /// The mount point of the runtime's image filesystem (ImageFsInfo).
    pub async fn image_fs_mountpoint(&self) -> Result<Option<PathBuf>, CriError> {
        let r = self.cri.image_fs_info().await?;
        Ok(r.image_filesystems
            .iter()
            .find_map(|u| u.fs_id.as_ref())
            .map(|f| PathBuf::from(&f.mountpoint))
            .filter(|p| !p.as_os_str().is_empty()))
    }

    /// Container GC (GarbageCollect): dead containers per the policy, then dead sandboxes.
    /// `evict_non_deleted` is DeleteAllUnusedContainers' mode: terminated pods lose all theirs.
    pub async fn collect_containers(
        &self,
        state: &PodStateFn,
        evict_non_deleted: bool,
    ) -> Result<usize, CriError> {
        let listed = self.cri.list_containers(None).await?;
        let all: Vec<GcContainer> = listed.iter().map(GcContainer::of).collect();
        let remove = containers_to_remove(
            &all,
            &self.containers,
            now_ns(),
            &**state,
            evict_non_deleted,
        );
        let mut removed = HashSet::new();
        for id in &remove {
            let target = "container GC";
            // The kubelet removes the log file with the container (removeContainerLog).
            if let Ok(Some(st)) = self.cri.container_status(id, target).await
                && !st.log_path.is_empty()
            {
                let _ = tokio::fs::remove_file(&st.log_path).await;
            }
            match self.cri.remove_container(id, target).await {
                Ok(()) => {
                    debug!(container = %id, "container GC: removed dead container");
                    removed.insert(id.clone());
                }
                Err(e) => warn!(container = %id, error = %e, "container GC: cannot remove"),
            }
        }
        let holding: HashSet<&str> = all
            .iter()
            .filter(|c| !removed.contains(&c.id))
            .map(|c| c.sandbox_id.as_str())
            .collect();
        let sandboxes: Vec<GcSandbox> = self
            .cri
            .list_pod_sandboxes(None)
            .await?
            .iter()
            .map(|s| GcSandbox {
                id: s.id.clone(),
                pod_uid: s.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
                created_ns: s.created_at,
                active: s.state == cri::PodSandboxState::SandboxReady as i32
                    || holding.contains(s.id.as_str()),
            })
            .collect();
        for id in sandboxes_to_remove(&sandboxes, &**state, evict_non_deleted) {
            if let Err(e) = self.cri.stop_pod_sandbox(&id, "sandbox GC").await {
                warn!(sandbox = %id, error = %e, "sandbox GC: cannot stop");
                continue;
            }
            if let Err(e) = self.cri.remove_pod_sandbox(&id, "sandbox GC").await {
                warn!(sandbox = %id, error = %e, "sandbox GC: cannot remove");
            }
        }
        if !removed.is_empty() {
            info!(
                containers = removed.len(),
                "container GC: removed dead containers"
            );
        }
        Ok(removed.len())
    }

    /// detectImages: refreshes the records from the runtime (new images get `now` as first
    /// detection; images any container, running or dead, refers to get `now` as last use)
    /// and returns the images in use.
    async fn detect(&self, now: SystemTime) -> Result<HashSet<String>, CriError> {
        let images = self.cri.list_images().await?;
        let containers = self.cri.list_containers(None).await?;
        let mut in_use: HashSet<String> = HashSet::new();
        for c in &containers {
            in_use.insert(c.image_ref.clone());
            if let Some(spec) = &c.image {
                in_use.insert(spec.image.clone());
            }
        }
        // The sandbox image is never collected even when the runtime does not pin it
        // (containerd 1.6 does not): every pod start needs it.
        if let Ok(Some(pause)) = self.cri.sandbox_image().await {
            in_use.insert(pause.clone());
            in_use.insert(format!("docker.io/library/{pause}"));
            in_use.insert(format!("docker.io/{pause}"));
        }
        // A container may name its image by tag or digest: map those to the image id.
        let mut used_ids = HashSet::new();
        for i in &images {
            let named = in_use.contains(&i.id)
                || i.repo_tags.iter().any(|t| in_use.contains(t))
                || i.repo_digests.iter().any(|d| in_use.contains(d));
            if named {
                used_ids.insert(i.id.clone());
            }
        }
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        records.retain(|id, _| present.contains(id.as_str()));
        for i in &images {
            let r = records.entry(i.id.clone()).or_insert(ImageRecord {
                first_detected: now,
                last_used: SystemTime::UNIX_EPOCH,
                size: i.size,
                pinned: i.pinned,
            });
            r.size = i.size;
            r.pinned = i.pinned;
            if used_ids.contains(&i.id) {
                r.last_used = now;
            }
        }
        Ok(used_ids)
    }

    /// The image manager's own periodic detection (realImageGCManager.Start): records first
    /// sightings even when periodic GC is off, so the minimum age counts from the start.
    pub async fn detect_images(&self) -> Result<(), CriError> {
        self.detect(SystemTime::now()).await.map(drop)
    }

    async fn order(&self, now: SystemTime) -> Result<Vec<(String, ImageRecord)>, CriError> {
        let in_use = self.detect(now).await?;
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(images_in_eviction_order(&records, &in_use))
    }

    async fn free(&self, id: &str, size: u64, reason: &'static str) -> bool {
        info!(image = %id, size, reason, "image GC: removing image to free bytes");
        match self.cri.remove_image(id).await {
            Ok(()) => {
                self.records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id);
                self.stats.images_collected.inc(reason);
                true
            }
            Err(e) => {
                warn!(image = %id, error = %e, "image GC: cannot remove image");
                false
            }
        }
    }

    /// DeleteUnusedImages (disk pressure): every unused image past the minimum age.
    pub async fn delete_unused_images(&self) -> Result<u64, CriError> {
        let now = SystemTime::now();
        let order = self.order(now).await?;
        let mut freed = 0;
        for (id, size) in plan_free_space(&order, u64::MAX, now, self.images.min_age) {
            if self.free(&id, size, "space").await {
                freed += size;
            }
        }
        Ok(freed)
    }

    /// The periodic image GC (GarbageCollect): images unused past the maximum age, then, when
    /// `image_fs` is at or above the high threshold, unused images down to the low one.
    pub async fn collect_images(&self, image_fs: &Path) -> Result<(), String> {
        let now = SystemTime::now();
        let mut order = self.order(now).await.map_err(|e| e.to_string())?;
        let max_age = self.images.max_age;
        if !max_age.is_zero() && self.began.elapsed() > max_age {
            let mut left = Vec::new();
            for (id, r) in order {
                let unused = now.duration_since(r.last_used).unwrap_or_default();
                if unused > max_age && self.free(&id, r.size, "age").await {
                    continue;
                }
                left.push((id, r));
            }
            order = left;
        }
        let (available, capacity, ..) = statvfs(image_fs)
            .map_err(|e| format!("image filesystem {}: {e}", image_fs.display()))?;
        if capacity == 0 {
            return Err(format!(
                "invalid capacity 0 on image filesystem {}",
                image_fs.display()
            ));
        }
        let p = &self.images;
        let Some(want) = amount_to_free(
            capacity,
            available,
            p.high_threshold_percent,
            p.low_threshold_percent,
        ) else {
            return Ok(());
        };
        info!(
            amount_to_free = want,
            high = p.high_threshold_percent,
            low = p.low_threshold_percent,
            "image GC: disk usage on the image filesystem is over the high threshold"
        );
        let want = u64::try_from(want).unwrap_or(0);
        let mut freed = 0;
        for (id, size) in plan_free_space(&order, want, now, p.min_age) {
            if self.free(&id, size, "space").await {
                freed += size;
            }
        }
        if freed < want {
            return Err(format!(
                "Insufficient free disk space on the node's image filesystem: freed {freed} bytes of the {want} wanted by deleting unused images"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
