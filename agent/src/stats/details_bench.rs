//! The cost of the cgroup details sweep on this host (a benchmark, not a test).

use super::cgroupfs::{CgroupLayout, cgroup_dir};
use super::details::{read_processes, sweep};
use std::fs;
use std::time::Duration;

/// The sweep's cost on this host's real cgroups (every cgroup of the memory or cpu
/// hierarchy, up to 250, with processes): `cargo test --release -p agent --bin nodelet --
/// --ignored --nocapture details_sweep_cost`.
#[test]
#[ignore = "benchmark; run explicitly"]
fn details_sweep_cost() {
    let layout = CgroupLayout::detect().expect("cgroup layout");
    let mount = layout
        .controller("memory")
        .or_else(|| layout.controller("cpu"))
        .expect("a memory or cpu hierarchy")
        .mount;
    // 250 empty cgroups of our own in every v1 hierarchy we read (removed after), beside
    // the host's: the file-reading floor, as in the telemetry notes' polling figures.
    let parent = format!("/nodelet-details-bench-{}", std::process::id());
    let dirs: Vec<std::path::PathBuf> = ["memory", "cpu", "cpuacct", "pids"]
        .iter()
        .filter_map(|c| layout.controller(c).filter(|m| !m.v2))
        .map(|m| cgroup_dir(&m.mount, &parent))
        // The cgroup2 hierarchy too: its pressure files are read for PSI.
        .chain(layout.v2.as_deref().map(|v2| cgroup_dir(v2, &parent)))
        .collect();
    let own: Vec<String> = (0..250).map(|i| format!("{parent}/c{i}")).collect();
    for d in &dirs {
        for p in &own {
            let _ = fs::create_dir_all(d.join(p.rsplit('/').next().unwrap_or("c")));
        }
    }
    let host: Vec<(String, bool)> = super::cgroupfs::walk(&mount, "/")
        .expect("walk")
        .into_iter()
        .filter(|p| !p.starts_with(&parent))
        .map(|p| (p, true))
        .collect();
    let empty: Vec<(String, bool)> = own.iter().map(|p| (p.clone(), true)).collect();
    for (what, paths) in [("host", host), ("empty", empty)] {
        report(&layout, what, &paths);
    }
    for d in &dirs {
        for p in &own {
            let _ = fs::remove_dir(d.join(p.rsplit('/').next().unwrap_or("c")));
        }
        let _ = fs::remove_dir(d);
    }
}

fn report(layout: &CgroupLayout, what: &str, paths: &[(String, bool)]) {
    let procs: u64 = paths
        .iter()
        .filter_map(|(p, _)| read_processes(layout, p))
        .map(|p| p.processes)
        .sum();
    let runs = 5;
    let mut best = Duration::MAX;
    for _ in 0..runs {
        best = best.min(sweep(layout, paths, 0).took);
    }
    // The PSI part alone: what reading it at every scrape instead would cost.
    let mut psi_best = Duration::MAX;
    let mut with_psi = 0;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        with_psi = paths
            .iter()
            .filter(|(p, _)| super::psi::read(layout.v2.as_deref(), p).is_some())
            .count();
        psi_best = psi_best.min(t.elapsed());
    }
    println!(
        "| {what} | {} cgroups | {procs} processes | best of {runs} sweeps {:.2} ms | {:.0} us a cgroup | \
         PSI ({with_psi} with pressure files) {:.2} ms, {:.0} us a cgroup |",
        paths.len(),
        best.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e6 / paths.len().max(1) as f64,
        psi_best.as_secs_f64() * 1e3,
        psi_best.as_secs_f64() * 1e6 / paths.len().max(1) as f64
    );
}
