//! The API pod start rows: the agent joined to a fresh loopback control plane of the same
//! release (as the conformance run joins it: [`xtask::kubelet::Kubelet`], containerd of its own),
//! then per batch size `kubectl create` -> Running seen by a watch ([`xtask::api_start`]).

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use xtask::api_start;
use xtask::cluster::{Cluster, ClusterOpts};
use xtask::kubelet::{Kind, Kubelet, KubeletOpts};

/// Per batch size, every pod's create -> Running, ms, sorted; a batch of 1 runs `single` times.
pub fn starts(
    kind: Kind,
    bin: &Path,
    sizes: &[usize],
    single: usize,
) -> Result<Vec<(usize, Vec<f64>)>> {
    let dir = xtask::target_dir().join("bench-peer-api").join(kind.name());
    if dir.exists() {
        // A previous run's Node and pods would be in its etcd.
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let cluster = Cluster::start(ClusterOpts {
        node_name: xtask::cluster::default_node_name(),
        ..ClusterOpts::new(dir.join("cluster"))
    })?;
    let measured = joined(&cluster, kind, bin, &dir, sizes, single);
    let stopped = cluster.stop();
    let out = measured?;
    stopped?;
    Ok(out)
}

fn joined(
    cluster: &Cluster,
    kind: Kind,
    bin: &Path,
    dir: &Path,
    sizes: &[usize],
    single: usize,
) -> Result<Vec<(usize, Vec<f64>)>> {
    let log = dir.join(format!("{}.log", kind.name()));
    let mut kubelet = Kubelet::start(
        cluster,
        &KubeletOpts {
            kind,
            bin: bin.to_owned(),
            insecure_registries: Vec::new(),
            log: log.clone(),
            // Production verbosity for both.
            args: vec!["--v=0".to_owned()],
        },
    )?;
    let measured = kubelet
        .wait_ready(cluster, Duration::from_secs(120))
        .and_then(|()| rounds(cluster, kind, sizes, single))
        .with_context(|| {
            format!(
                "the {kind} joined to the control plane (log {})",
                log.display()
            )
        });
    let stopped = kubelet.stop();
    let out = measured?;
    stopped?;
    Ok(out)
}

fn rounds(
    cluster: &Cluster,
    kind: Kind,
    sizes: &[usize],
    single: usize,
) -> Result<Vec<(usize, Vec<f64>)>> {
    let mut out = Vec::new();
    for &size in sizes.iter().filter(|&&s| s > 0) {
        let reps = if size == 1 { single } else { 1 };
        let mut lat = Vec::new();
        for rep in 0..reps {
            eprintln!(
                "bench: {kind}: API start batch of {size} ({}/{reps})",
                rep + 1
            );
            let tag = format!("a{size}r{rep}");
            let r = api_start::round(cluster, &tag, size)
                .with_context(|| format!("API start batch of {size}"))?;
            lat.extend(r.latencies);
            api_start::delete_round(cluster, &tag)?;
        }
        lat.sort_by(f64::total_cmp);
        out.push((size, lat));
    }
    Ok(out)
}
