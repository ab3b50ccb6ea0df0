//! Disk pressure (pkg/kubelet/eviction/helpers.go): which pod usage each disk signal ranks by
//! and which node-level reclaim it tries first (buildSignalToRankFunc,
//! buildSignalToNodeReclaimFuncs, for a shared or a dedicated imagefs), the disk ranking
//! (rankDiskPressureFunc), the message's container part, and [`measure`]: each pod's disk use
//! read at decision time (decisions are rare), the one place a cached stats source can later
//! be plugged in.

use super::helpers::{Candidate, format_binary, priority};
use crate::kuberuntime::Cri;
use crate::options::eviction::Signal;
use crate::pod::{DesiredPod, quantity};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a disk ranking counts of a pod (fsStatsType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// Containers' writable layers (fsStatsRoot).
    pub root: bool,
    /// Containers' logs (fsStatsLogs).
    pub logs: bool,
    /// Local volumes: emptyDir on disk (fsStatsLocalVolumeSource).
    pub volumes: bool,
}

/// What is measured for `signal`; `None` for non-disk signals. With a dedicated imagefs,
/// nodefs counts logs and volumes and imagefs the writable layers; on a shared one, all.
pub fn measure_for(signal: Signal, dedicated_image_fs: bool) -> Option<Measure> {
    let all = Measure {
        root: true,
        logs: true,
        volumes: true,
    };
    match signal {
        Signal::NodeFsAvailable
        | Signal::NodeFsInodesFree
        | Signal::ContainerFsAvailable
        | Signal::ContainerFsInodesFree
            if dedicated_image_fs =>
        {
            Some(Measure { root: false, ..all })
        }
        Signal::ImageFsAvailable | Signal::ImageFsInodesFree if dedicated_image_fs => {
            Some(Measure {
                root: true,
                logs: false,
                volumes: false,
            })
        }
        Signal::NodeFsAvailable
        | Signal::NodeFsInodesFree
        | Signal::ImageFsAvailable
        | Signal::ImageFsInodesFree
        | Signal::ContainerFsAvailable
        | Signal::ContainerFsInodesFree => Some(all),
        _ => None,
    }
}

/// Node-level reclaim for `signal`: (dead containers, unused images). With a dedicated imagefs
/// nodefs pressure reclaims nothing at node level (logs are not rotated here); otherwise both.
pub fn reclaim_for(signal: Signal, dedicated_image_fs: bool) -> (bool, bool) {
    match signal {
        Signal::NodeFsAvailable | Signal::NodeFsInodesFree if dedicated_image_fs => (false, false),
        Signal::NodeFsAvailable
        | Signal::NodeFsInodesFree
        | Signal::ImageFsAvailable
        | Signal::ImageFsInodesFree
        | Signal::ContainerFsAvailable
        | Signal::ContainerFsInodesFree => (true, true),
        _ => (false, false),
    }
}

/// Bytes and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Use {
    /// Bytes.
    pub bytes: i64,
    /// Inodes.
    pub inodes: i64,
}

/// One container's disk use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDisk {
    /// Container name.
    pub name: String,
    /// Writable layer.
    pub root: Use,
    /// Log files.
    pub logs: Use,
}

/// One pod's disk use (the Summary API's rootfs, logs and volume stats of the pod).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDisk {
    /// Per container.
    pub containers: Vec<ContainerDisk>,
    /// Disk-backed emptyDir volumes.
    pub volumes: Use,
}

impl PodDisk {
    /// podDiskUsage: what `m` counts, in bytes or inodes.
    pub fn usage(&self, m: Measure, inodes: bool) -> i64 {
        let pick = |u: Use| if inodes { u.inodes } else { u.bytes };
        let mut total = 0;
        for c in &self.containers {
            if m.root {
                total += pick(c.root);
            }
            if m.logs {
                total += pick(c.logs);
            }
        }
        if m.volumes {
            total += pick(self.volumes);
        }
        total
    }
}

/// The pod's ephemeral-storage request (sum of containers, or the largest init container).
pub fn ephemeral_request(pod: &DesiredPod) -> i64 {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return 0;
    };
    let req = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("ephemeral-storage"))
            .and_then(|q| quantity::parse(&q.0, false))
            .unwrap_or(0)
    };
    let sum: i64 = spec.containers.iter().map(req).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(req)
        .max()
        .unwrap_or(0);
    sum.max(init)
}

/// rankDiskPressureFunc: pods without stats first, then pods over their ephemeral-storage
/// request, then lower priority, then larger use above the request. For inodes the
/// comparison with the request is the kubelet's too (a request in bytes against inodes).
pub fn rank_disk_pressure(
    pods: &mut [Candidate<'_>],
    disk: &HashMap<String, PodDisk>,
    m: Measure,
    inodes: bool,
) {
    pods.sort_by(|a, b| {
        let (da, db) = (disk.get(&a.pod.pod_ref.uid), disk.get(&b.pod.pod_ref.uid));
        match (da, db) {
            // cmpBool(!p1Found, !p2Found): the pod without stats goes first.
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (None, None) => return std::cmp::Ordering::Equal,
            (Some(_), Some(_)) => {}
        }
        let over = |c: &Candidate<'_>, d: Option<&PodDisk>| {
            d.map_or(0, |d| d.usage(m, inodes)) - ephemeral_request(c.pod)
        };
        let (oa, ob) = (over(a, da), over(b, db));
        (ob > 0)
            .cmp(&(oa > 0))
            .then_with(|| priority(a.pod).cmp(&priority(b.pod)))
            .then_with(|| ob.cmp(&oa))
    });
}

/// evictionMessage's container part for ephemeral-storage: each container whose writable
/// layer plus logs exceed its request.
pub fn container_message(pod: &DesiredPod, disk: Option<&PodDisk>) -> String {
    let (Some(spec), Some(disk)) = (pod.pod.spec.as_ref(), disk) else {
        return String::new();
    };
    let mut m = String::new();
    for cd in &disk.containers {
        let Some(c) = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == cd.name)
        else {
            continue;
        };
        let written = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("ephemeral-storage"))
            .map(|q| q.0.clone());
        let request = written
            .as_deref()
            .and_then(|q| quantity::parse(q, false))
            .unwrap_or(0);
        let used = cd.root.bytes + cd.logs.bytes;
        if used > request {
            m += &format!(
                "Container {} was using {}, request is {}, has larger consumption of ephemeral-storage. ",
                cd.name,
                format_binary(used),
                written.unwrap_or_else(|| "0".into())
            );
        }
    }
    m
}

/// Bytes (allocated blocks) and inodes under `dir`, not following links nor leaving its
/// filesystem's tree; a missing directory is zero.
pub(super) fn walk(dir: &Path) -> Use {
    use std::os::unix::fs::MetadataExt;
    let mut u = Use::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            u.inodes += 1;
            u.bytes += i64::try_from(md.blocks() * 512).unwrap_or(i64::MAX);
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    u
}

/// Where a pod's files are.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `--root-dir`: `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`.
    pub root_dir: PathBuf,
    /// podLogsDir: `<dir>/<ns>_<name>_<uid>/<container>/`.
    pub pod_logs_dir: PathBuf,
}

/// Each pod's disk use now: writable layers from CRI ContainerStats, logs and disk-backed
/// emptyDirs by walking their directories. A pod whose containers cannot be listed is left
/// out (ranked as "no stats"). h-fs's cached stats can replace this function.
pub async fn measure(cri: &Cri, dirs: &Dirs, pods: &[&DesiredPod]) -> HashMap<String, PodDisk> {
    let mut out = HashMap::new();
    for p in pods {
        let r = &p.pod_ref;
        let target = r.to_string();
        let Ok(containers) = cri.list_containers(Some(&r.uid)).await else {
            continue;
        };
        let mut disk = PodDisk::default();
        for c in &containers {
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let root = match cri.container_stats(&c.id, &target).await {
                Ok(Some(s)) => s.writable_layer.map_or(Use::default(), |w| Use {
                    bytes: w
                        .used_bytes
                        .map_or(0, |v| i64::try_from(v.value).unwrap_or(i64::MAX)),
                    inodes: w
                        .inodes_used
                        .map_or(0, |v| i64::try_from(v.value).unwrap_or(i64::MAX)),
                }),
                _ => Use::default(),
            };
            // Several instances of one container share a name: sum them, as their logs are.
            match disk.containers.iter_mut().find(|x| x.name == name) {
                Some(x) => {
                    x.root.bytes += root.bytes;
                    x.root.inodes += root.inodes;
                }
                None => disk.containers.push(ContainerDisk {
                    name,
                    root,
                    logs: Use::default(),
                }),
            }
        }
        let logs_dir = dirs
            .pod_logs_dir
            .join(format!("{}_{}_{}", r.namespace, r.name, r.uid));
        let volumes_dir = dirs
            .root_dir
            .join("pods")
            .join(&r.uid)
            .join("volumes/kubernetes.io~empty-dir");
        let on_disk: Vec<String> = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter(|v| {
                v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
            })
            .map(|v| v.name.clone())
            .collect();
        let names: Vec<String> = disk.containers.iter().map(|c| c.name.clone()).collect();
        let walked = tokio::task::spawn_blocking(move || {
            let logs: Vec<Use> = names.iter().map(|n| walk(&logs_dir.join(n))).collect();
            let mut vol = Use::default();
            for v in &on_disk {
                let u = walk(&volumes_dir.join(v));
                vol.bytes += u.bytes;
                vol.inodes += u.inodes;
            }
            (logs, vol)
        })
        .await;
        if let Ok((logs, vol)) = walked {
            for (c, l) in disk.containers.iter_mut().zip(logs) {
                c.logs = l;
            }
            disk.volumes = vol;
        }
        out.insert(r.uid.clone(), disk);
    }
    out
}

#[cfg(test)]
mod tests;
