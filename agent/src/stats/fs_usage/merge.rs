//! Puts the task's measurements into the Summary model: container `rootfs` and `logs`, pod
//! `volume` and `ephemeral-storage` (kubelet stats helper.go calcEphemeralStorage), and block
//! I/O on pod and container usage.

use super::FsSnapshot;
use crate::stats::summary::{FsStats, PodStats, RuntimeFsUsage, Usage};

fn later(
    a: Option<std::time::SystemTime>,
    b: Option<std::time::SystemTime>,
) -> Option<std::time::SystemTime> {
    a.max(b)
}

fn add(total: &mut RuntimeFsUsage, part: &RuntimeFsUsage) {
    total.fs.used_bytes += part.fs.used_bytes;
    total.inodes_used = Some(total.inodes_used.unwrap_or(0) + part.inodes_used.unwrap_or(0));
    total.time = later(total.time, part.time);
}

fn io(u: &mut Usage, snap: &FsSnapshot, cgroup: &str) {
    if let Some(io) = snap.io.get(cgroup) {
        u.io = Some(io.clone());
        u.io_at = snap.io_at;
    }
}

/// Fills `pods` from `snap`; `node_fs` is the filesystem the pod's ephemeral storage is
/// reported against (the kubelet's root fs: capacity, available, inodes).
pub fn apply(snap: &FsSnapshot, pods: &mut [PodStats], node_fs: Option<&FsStats>) {
    for p in pods {
        if let Some(u) = &mut p.usage {
            io(u, snap, &p.cgroup);
        }
        let fs = snap.pods.get(&p.uid);
        let mut eph = RuntimeFsUsage {
            fs: FsStats {
                used_bytes: 0,
                ..node_fs.cloned().unwrap_or_default()
            },
            ..RuntimeFsUsage::default()
        };
        let mut known = false;
        for c in &mut p.containers {
            io(&mut c.usage, snap, &c.cgroup);
            c.rootfs = snap.rootfs.get(&c.id).map(|r| r.fs.clone());
            c.logs = fs.and_then(|f| f.container_logs.get(&c.name)).cloned();
            // As addContainerUsage: a container's logs count with its rootfs.
            if let Some(r) = &c.rootfs {
                known = true;
                add(&mut eph, r);
                if let Some(l) = &c.logs {
                    add(&mut eph, l);
                }
            }
        }
        if let Some(f) = fs {
            p.volumes = f.volumes.iter().map(|v| v.stats.clone()).collect();
            for v in f.volumes.iter().filter(|v| v.local_ephemeral) {
                known = true;
                add(&mut eph, &v.stats.fs);
            }
            if let Some(l) = &f.logs {
                known = true;
                add(&mut eph, l);
            }
        }
        if known {
            p.ephemeral_storage = Some(eph);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::fs_usage::{PodFs, Rootfs, VolumeUse};
    use crate::stats::summary::{ContainerStats, VolumeStats};

    fn used(bytes: u64, inodes: u64) -> RuntimeFsUsage {
        RuntimeFsUsage {
            fs: FsStats {
                used_bytes: bytes,
                capacity_bytes: 1 << 40,
                ..Default::default()
            },
            inodes_used: Some(inodes),
            time: Some(std::time::UNIX_EPOCH),
            device: "/dev/vda".into(),
        }
    }

    #[test]
    fn ephemeral_storage_is_rootfs_logs_and_local_volumes_only() {
        let mut snap = FsSnapshot::default();
        snap.rootfs.insert(
            "id1".into(),
            Rootfs {
                pod_uid: "u".into(),
                fs: used(1000, 10),
            },
        );
        let vol = |name: &str, bytes, local| VolumeUse {
            stats: VolumeStats {
                name: name.into(),
                fs: used(bytes, 1),
            },
            local_ephemeral: local,
        };
        snap.pods.insert(
            "u".into(),
            PodFs {
                logs: Some(used(0, 0)),
                container_logs: [("app".to_string(), used(200, 1))].into(),
                volumes: vec![vol("cache", 5000, true), vol("token", 7, false)],
            },
        );
        let mut pods = vec![PodStats {
            uid: "u".into(),
            containers: vec![ContainerStats {
                name: "app".into(),
                id: "id1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let node = FsStats {
            capacity_bytes: 100,
            available_bytes: 50,
            ..Default::default()
        };
        apply(&snap, &mut pods, Some(&node));
        let p = &pods[0];
        assert_eq!(
            p.containers[0].rootfs.as_ref().map(|r| r.fs.used_bytes),
            Some(1000)
        );
        assert_eq!(
            p.containers[0].logs.as_ref().map(|r| r.fs.used_bytes),
            Some(200)
        );
        assert_eq!(p.volumes.len(), 2, "every volume is listed");
        let e = p.ephemeral_storage.as_ref().expect("ephemeral storage");
        assert_eq!(
            e.fs.used_bytes,
            1000 + 200 + 5000,
            "the secret is not local ephemeral"
        );
        assert_eq!(e.inodes_used, Some(10 + 1 + 1));
        assert_eq!((e.fs.capacity_bytes, e.fs.available_bytes), (100, 50));
    }
}
