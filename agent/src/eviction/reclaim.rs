//! Node-level reclaim (kubelet reclaimNodeLevelResources and StartGarbageCollection): the
//! periodic container GC (every minute) and image GC (every five minutes) the kubelet runs
//! beside its eviction manager, and the reclaim a disk signal asks for before any pod is
//! evicted (DeleteAllUnusedContainers, then DeleteUnusedImages). The GC itself is
//! `kuberuntime::gc`; this module tells it which pods are gone.

use crate::config::PodSet;
use crate::kuberuntime::gc::{NodeGc, PodGcState, PodStateFn};
use crate::options::eviction::Signal;
use crate::status::StatusStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The kubelet's ContainerGCPeriod.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);
/// The kubelet's ImageGCPeriod.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// A pod is Deleted once no source wants it (and every source has spoken, the kubelet's
/// allSourcesReady), Terminated when its status phase is terminal, else Active.
pub fn pod_state_fn(config: watch::Receiver<Option<PodSet>>, status: StatusStore) -> PodStateFn {
    Arc::new(move |uid: &str| {
        let set = config.borrow().clone();
        let Some(set) = set else {
            return PodGcState::Active;
        };
        if !set.contains_key(uid) {
            return if set.all_sources_seen {
                PodGcState::Deleted
            } else {
                PodGcState::Active
            };
        }
        let terminal = status.pods().get(uid).is_some_and(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            matches!(phase, Some("Failed" | "Succeeded"))
        });
        if terminal {
            PodGcState::Terminated
        } else {
            PodGcState::Active
        }
    })
}

/// The image filesystem's mount point and whether it is another device than `root_dir`'s
/// (HasDedicatedImageFs); `None` when the runtime does not say.
pub async fn image_fs(gc: &NodeGc, root_dir: &Path) -> Option<(PathBuf, bool)> {
    use std::os::unix::fs::MetadataExt;
    let p = match gc.image_fs_mountpoint().await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            warn!(error = %e, "eviction manager: ImageFsInfo failed; no imagefs signals yet");
            return None;
        }
    };
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let dedicated = match (dev(&p), dev(root_dir)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    info!(image_fs = %p.display(), dedicated, "eviction manager: filesystem detection");
    Some((p, dedicated))
}

/// Runs the node-level reclaim `signal` asks for; false when it asks for none.
pub async fn reclaim(gc: &NodeGc, state: &PodStateFn, signal: Signal, dedicated: bool) -> bool {
    let (containers, images) = super::disk::reclaim_for(signal, dedicated);
    if containers {
        match gc.collect_containers(state, true).await {
            Ok(n) => info!(
                removed = n,
                "eviction manager: deleted all unused containers"
            ),
            Err(e) => {
                info!(error = %e, "eviction manager: unexpected error when attempting to reduce resource pressure")
            }
        }
    }
    if images {
        match gc.delete_unused_images().await {
            Ok(freed) => info!(freed, "eviction manager: deleted unused images"),
            Err(e) => {
                info!(error = %e, "eviction manager: unexpected error when attempting to reduce resource pressure")
            }
        }
    }
    containers || images
}

/// Spawns the periodic container and image GC loops (the first pass runs at once, so image
/// records start with the agent, as the kubelet's image manager detects at start; with image
/// GC disabled the loop still detects images, as the kubelet's image manager does).
pub fn start_periodic(
    gc: Arc<NodeGc>,
    state: PodStateFn,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) {
    let (g, c) = (gc.clone(), cancel.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(CONTAINER_GC_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = c.cancelled() => return,
                _ = tick.tick() => {}
            }
            match g.collect_containers(&state, false).await {
                Ok(_) => debug!("container garbage collection succeeded"),
                Err(e) => warn!(error = %e, "container garbage collection failed"),
            }
        }
    });
    let enabled = gc.image_policy().periodic_enabled();
    if !enabled {
        info!("imageGCHighThresholdPercent is 100 and imageMaximumGCAge is 0: image GC disabled");
    }
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(IMAGE_GC_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !enabled {
                if let Err(e) = gc.detect_images().await {
                    debug!(error = %e, "image detection failed");
                }
                continue;
            }
            let mount = match gc.image_fs_mountpoint().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    warn!("image garbage collection: the runtime names no image filesystem");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "image garbage collection failed");
                    continue;
                }
            };
            match gc.collect_images(&mount).await {
                Ok(()) => debug!("image garbage collection succeeded"),
                Err(e) => warn!(error = %e, "image garbage collection failed"),
            }
        }
    });
}
