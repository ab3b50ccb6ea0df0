//! The per-pass cost of the stats sources that run on a timer (issue 13's telemetry table), at
//! the telemetry benchmark's shape: N = 250 containers, 10 per pod (25 pods). A benchmark,
//! not a test: `cargo test --release -p agent --bin nodelet -- --ignored --nocapture
//! timer_sources_cost`.
//!
//! - Directory walks (every 30 s): `walk_pods` over 25 pod log dirs of 10 containers (one
//!   4 KiB `0.log` each) and one emptyDir of 10 small files per pod.
//! - Block I/O (every 10 s): `read_io` of 275 empty cgroups (25 pods + 250 containers) of our
//!   own in this host's blkio (v1) or io (v2) hierarchy.
//! - CRI stats (every 10 s): decoding a 250-entry `ListContainerStatsResponse` and turning it
//!   into writable layers (`rootfs_from`); the socket transfer and containerd's own work are
//!   not the agent's CPU and are left out.
//! - PSI (on the 10 s details sweep): `psi::read` of the same 275 cgroups in the cgroup2
//!   hierarchy.

use super::cgroupfs::{CgroupLayout, cgroup_dir};
use super::fs_usage::{FsCounters, Settings, read_io, rootfs_from, walk_pods};
use prost::Message;
use proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PODS: usize = 25;
const PER_POD: usize = 10;

fn write(path: &Path, bytes: usize) {
    if let Some(p) = path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    if let Ok(mut f) = std::fs::File::create(path) {
        let _ = f.write_all(&vec![b'x'; bytes]);
    }
}

/// Best of `runs` passes, and the result of the last.
fn best<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = f();
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (best, out)
}

fn row(what: &str, period_s: u64, took: Duration, detail: &str) {
    let ms = took.as_secs_f64() * 1e3;
    println!(
        "| {what} | every {period_s} s | {ms:.2} ms | {:.3} ms/s | {detail} |",
        ms / period_s as f64
    );
}

fn cgroup_names() -> (String, Vec<String>) {
    let parent = format!("/nodelet-timers-bench-{}", std::process::id());
    let mut all = Vec::new();
    for p in 0..PODS {
        let pod = format!("{parent}/pod{p}");
        all.push(pod.clone());
        all.extend((0..PER_POD).map(|c| format!("{pod}/c{c}")));
    }
    (parent, all)
}

fn container_stats() -> cri::ListContainerStatsResponse {
    let stats = (0..PODS * PER_POD)
        .map(|i| cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: format!("{i:064x}"),
                metadata: Some(cri::ContainerMetadata {
                    name: format!("c{}", i % PER_POD),
                    attempt: 0,
                }),
                labels: [
                    (
                        "io.kubernetes.pod.uid".to_owned(),
                        format!("uid-{}", i / PER_POD),
                    ),
                    (
                        "io.kubernetes.pod.name".to_owned(),
                        format!("p{}", i / PER_POD),
                    ),
                    (
                        "io.kubernetes.pod.namespace".to_owned(),
                        "default".to_owned(),
                    ),
                    (
                        "io.kubernetes.container.name".to_owned(),
                        format!("c{}", i % PER_POD),
                    ),
                ]
                .into(),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: 1,
                usage_core_nano_seconds: Some(cri::UInt64Value { value: 1_000_000 }),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: 1,
                working_set_bytes: Some(cri::UInt64Value { value: 4096 }),
                ..Default::default()
            }),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: 1_800_000_000_000_000_000,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: std::env::temp_dir().to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: 8192 }),
                inodes_used: Some(cri::UInt64Value { value: 3 }),
            }),
            ..Default::default()
        })
        .collect();
    cri::ListContainerStatsResponse { stats }
}

#[test]
#[ignore = "benchmark; run explicitly"]
fn timer_sources_cost() {
    let runs = 5;
    println!(
        "| source | period | per pass (N = {}, {PODS} pods) | CPU | what |",
        PODS * PER_POD
    );
    println!("|---|---|---|---|---|");

    // Walks: log dirs and emptyDirs laid out as the kubelet lays them out.
    let d: PathBuf = std::env::temp_dir().join(format!("nodelet-timers-{}", std::process::id()));
    let s = Settings {
        root_dir: d.join("root"),
        pod_logs_dir: d.join("logs"),
    };
    for p in 0..PODS {
        let uid = format!("00000000-0000-0000-0000-{p:012}");
        let logs = s.pod_logs_dir.join(format!("default_p{p}_{uid}"));
        for c in 0..PER_POD {
            write(&logs.join(format!("c{c}/0.log")), 4096);
        }
        let vol = s
            .root_dir
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~empty-dir/cache");
        for f in 0..10 {
            write(&vol.join(format!("f{f}")), 1024);
        }
    }
    let mut counters = FsCounters::default();
    let (took, pods) = best(runs, || walk_pods(&s, &mut counters));
    row(
        "log and volume walks",
        30,
        took,
        &format!(
            "{} pods, {} inodes (warm cache)",
            pods.len(),
            counters.walk_inodes
        ),
    );
    let _ = std::fs::remove_dir_all(&d);

    // CRI: the agent's side of ListContainerStats.
    let bytes = container_stats().encode_to_vec();
    let (took, layers) = best(runs, || {
        cri::ListContainerStatsResponse::decode(bytes.as_slice())
            .map(|r| rootfs_from(&r.stats).len())
            .unwrap_or(0)
    });
    row(
        "CRI ListContainerStats (decode + writable layers)",
        10,
        took,
        &format!("{layers} containers, {} KiB message", bytes.len() / 1024),
    );

    // Block I/O and PSI: our own empty cgroups beside the host's.
    let Ok(layout) = CgroupLayout::detect() else {
        println!("| block I/O, PSI | - | - | - | no cgroup layout on this host |");
        return;
    };
    let (parent, cgroups) = cgroup_names();
    let io_mount = layout
        .controller("blkio")
        .or_else(|| layout.controller("io"))
        .map(|m| m.mount);
    let mounts: Vec<PathBuf> = io_mount
        .iter()
        .cloned()
        .chain(layout.v2.iter().cloned())
        .collect();
    for m in &mounts {
        for c in &cgroups {
            let _ = std::fs::create_dir_all(cgroup_dir(m, c));
        }
    }
    let mut names = HashMap::new();
    let (took, read) = best(runs, || read_io(&layout, &cgroups, &mut names).len());
    row(
        "block I/O (blkio / io.stat)",
        10,
        took,
        &format!("{read} of {} cgroups read", cgroups.len()),
    );
    let (took, with_psi) = best(runs, || {
        cgroups
            .iter()
            .filter(|c| super::psi::read(layout.v2.as_deref(), c).is_some())
            .count()
    });
    row(
        "PSI (cpu, memory, io pressure)",
        10,
        took,
        &format!(
            "{with_psi} of {} cgroups with pressure files",
            cgroups.len()
        ),
    );
    // Children first, then their parents.
    for m in &mounts {
        for c in cgroups.iter().rev() {
            let _ = std::fs::remove_dir(cgroup_dir(m, c));
        }
        let _ = std::fs::remove_dir(cgroup_dir(m, &parent));
    }
}
