//! The Summary API's `node.runtime` (imageFs, containerFs): use from CRI `ImageFsInfo`,
//! capacity from the filesystem holding each mountpoint (statvfs), as the kubelet's CRI stats
//! provider combines them (pkg/kubelet/stats/cri_stats_provider.go ImageFsStats). One task
//! asks every [`EVERY`] and publishes the answer on a `watch` channel; scrapes only read it.
//! containerd answers from usage its own syncer refreshes every 10 s (0 until its first pass),
//! so asking more often would only repeat the same numbers.

use super::pods::provider::fs_stats;
use super::summary::{RuntimeFs, RuntimeFsUsage};
use crate::kuberuntime::client::Cri;
use proto::runtime::v1 as cri;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the runtime is asked (containerd's snapshot usage sync period).
pub const EVERY: Duration = Duration::from_secs(10);

/// One filesystem of the answer, with the capacity of the filesystem it is on.
fn usage(u: &cri::FilesystemUsage) -> RuntimeFsUsage {
    let mount = u
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.as_str())
        .unwrap_or("");
    let mut fs = if mount.is_empty() {
        Default::default()
    } else {
        fs_stats(Path::new(mount)).unwrap_or_default()
    };
    if let Some(b) = &u.used_bytes {
        fs.used_bytes = b.value;
    }
    RuntimeFsUsage {
        time: u64::try_from(u.timestamp)
            .ok()
            .filter(|&ns| ns > 0)
            .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns)),
        fs,
        inodes_used: u.inodes_used.as_ref().map(|v| v.value),
        device: String::new(),
    }
}

/// The Summary's view of an `ImageFsInfo` answer: the first image filesystem, and the first
/// container filesystem or, when the runtime has none apart, the image one.
pub fn from_response(r: &cri::ImageFsInfoResponse) -> RuntimeFs {
    let image_fs = r.image_filesystems.first().map(usage);
    let container_fs = r
        .container_filesystems
        .first()
        .map(usage)
        .or_else(|| image_fs.clone());
    RuntimeFs {
        image_fs,
        container_fs,
    }
}

/// Starts the task; the receiver holds the latest answer (`None` until one came).
pub fn start(
    cri: Cri,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> watch::Receiver<Option<RuntimeFs>> {
    let (tx, rx) = watch::channel(None);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match cri.image_fs_info().await {
                Ok(r) => {
                    let fs = tokio::task::spawn_blocking(move || from_response(&r)).await;
                    if let Ok(fs) = fs {
                        tx.send_replace(Some(fs));
                    }
                    warned = false;
                }
                // Logged once per outage; the last answer stands meanwhile.
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "ImageFsInfo failed; node.runtime keeps its last answer");
                }
                Err(_) => {}
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_fs_defaults_to_the_image_fs_and_capacity_comes_from_statvfs() {
        let r = cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp: 1_800_000_000_000_000_000,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: "/".into(),
                }),
                used_bytes: Some(cri::UInt64Value { value: 4096 }),
                inodes_used: Some(cri::UInt64Value { value: 7 }),
            }],
            container_filesystems: vec![],
        };
        let fs = from_response(&r);
        let img = fs.image_fs.expect("image fs");
        assert_eq!(img.fs.used_bytes, 4096);
        assert_eq!(img.inodes_used, Some(7));
        assert!(img.fs.capacity_bytes > 0, "statvfs of /");
        assert_eq!(fs.container_fs.map(|c| c.fs.used_bytes), Some(4096));
        assert!(img.time.is_some());
    }
}
