//! The rows measured with the agent joined to a fresh loopback control plane of the same release
//! (as the conformance run joins it: [`xtask::kubelet::Kubelet`], containerd of its own): the API
//! pod start batches (`kubectl create` -> Running seen by a watch, [`xtask::api_start`]) and the
//! memory-ramp race ([`super::ramp`]), each with a join of its own on one control plane.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use xtask::api_start;
use xtask::cluster::{Cluster, ClusterOpts};
use xtask::kubelet::{Kind, Kubelet, KubeletOpts};

use super::ramp::{self, RampRun};

/// What to measure on the control plane.
#[derive(Debug, Clone)]
pub struct ApiRows<'a> {
    /// API start batch sizes (0 pods: skip).
    pub sizes: &'a [usize],
    /// Repeats of a batch of 1.
    pub single: usize,
    /// Ramp rates of the race, MiB/s.
    pub ramp_rates: &'a [i64],
    /// Races per rate (0: skip).
    pub ramp_runs: usize,
}

impl ApiRows<'_> {
    /// Whether any row needs the control plane.
    pub fn any(&self) -> bool {
        self.sizes.iter().any(|&s| s > 0) || (self.ramp_runs > 0 && !self.ramp_rates.is_empty())
    }
}

/// What was measured on the control plane.
#[derive(Debug, Default)]
pub struct ApiResults {
    /// Per batch size, every pod's create -> Running, ms, sorted.
    pub starts: Vec<(usize, Vec<f64>)>,
    /// Per ramp rate, its races.
    pub ramps: Vec<(i64, Vec<RampRun>)>,
}

/// Starts a control plane, joins the agent for each kind of row in turn, stops everything.
pub fn measure(kind: Kind, bin: &Path, rows: &ApiRows<'_>) -> Result<ApiResults> {
    let dir = xtask::target_dir().join("bench-peer-api").join(kind.name());
    if dir.exists() {
        // A previous run's Node and pods would be in its etcd.
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let cluster = Cluster::start(ClusterOpts {
        node_name: xtask::cluster::default_node_name(),
        ..ClusterOpts::new(dir.join("cluster"))
    })?;
    let measured = rows_on(&cluster, kind, bin, &dir, rows);
    let stopped = cluster.stop();
    let out = measured?;
    stopped?;
    Ok(out)
}

fn rows_on(
    cluster: &Cluster,
    kind: Kind,
    bin: &Path,
    dir: &Path,
    rows: &ApiRows<'_>,
) -> Result<ApiResults> {
    let mut out = ApiResults::default();
    if rows.sizes.iter().any(|&s| s > 0) {
        out.starts = joined(cluster, kind, bin, dir, "starts", String::new(), |_| {
            rounds(cluster, kind, rows.sizes, rows.single)
        })?;
    }
    if rows.ramp_runs > 0 && !rows.ramp_rates.is_empty() {
        let config = xtask::race::config_lines_with(xtask::kubelet::DISK_EVICTION_HARD)?;
        out.ramps = joined(cluster, kind, bin, dir, "ramp", config, |k| {
            ramp::races(cluster, k, rows.ramp_rates, rows.ramp_runs)
        })?;
    }
    Ok(out)
}

/// Joins the agent (log `<dir>/<kind>-<what>.log`, KubeletConfiguration plus `config_extra`),
/// runs `f` once its Node is Ready, stops it.
fn joined<T>(
    cluster: &Cluster,
    kind: Kind,
    bin: &Path,
    dir: &Path,
    what: &str,
    config_extra: String,
    f: impl FnOnce(&Kubelet) -> Result<T>,
) -> Result<T> {
    let log = dir.join(format!("{}-{what}.log", kind.name()));
    let mut kubelet = Kubelet::start(
        cluster,
        &KubeletOpts {
            kind,
            bin: bin.to_owned(),
            insecure_registries: Vec::new(),
            log: log.clone(),
            // Production verbosity for both.
            args: vec!["--v=0".to_owned()],
            config_extra,
        },
    )?;
    let measured = kubelet
        .wait_ready(cluster, Duration::from_secs(120))
        .and_then(|()| f(&kubelet))
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
