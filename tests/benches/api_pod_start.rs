//! API pod start: `kubectl create` -> phase Running seen by a watch, for 1, 30 and 100 pods at
//! once, beside the CRI floor (the same three CRI calls issued directly, all at once) measured
//! in the same run, against the Kubernetes pod-startup SLO (p99 <= 5 s, image pull excluded:
//! the image is already on the node). Then the agent's CPU and RSS with 100 API pods running.
//!
//! Run: `cargo xtask bench pods` (builds the release agent, then runs this and `pod_start`).
//! Needs what `cargo xtask test` needs: root, containerd, the control plane (cached build).
//! Prints one table; nothing is asserted.

use anyhow::{Context, Result, bail};
use nodelet_tests::bench::{agent_pid, floor, idle_cost, pct};
use nodelet_tests::{NODE, Node, NodeOpts, wait_for};
use std::time::Duration;
use xtask::api_start;
use xtask::cluster::{self, ClusterOpts};

const ROUNDS: [usize; 3] = [1, 30, 100];
const IDLE_WINDOW: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(300);
const SLO_P99_MS: f64 = 5000.0;

fn main() -> Result<()> {
    let Some(mut node) = Node::start(NodeOpts {
        // Room for the largest round (the kit keeps disk thresholds off).
        extra_config: "maxPods: 150\n".into(),
        ..Default::default()
    })?
    else {
        bail!("cannot run the benchmark here (see the SKIPPED line above)");
    };
    let dir = tempfile::Builder::new()
        .prefix("nodelet-bench-api-")
        .tempdir()?;
    let Some(c) = cluster::start_or_skip(ClusterOpts {
        node_name: NODE.to_owned(),
        ..ClusterOpts::new(dir.path())
    })?
    else {
        bail!("cannot run the benchmark here: no control plane (see the SKIPPED line above)");
    };
    node.stop_agent(libc::SIGTERM)?;
    let kubeconfig = format!("--kubeconfig={}", c.node_kubeconfig().display());
    // Production verbosity.
    node.start_agent(&[&kubeconfig, "--v=0"])?;
    wait_for("the Node Ready", T, || {
        let r = c.kubectl(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        Ok(r.is_ok_and(|r| r == "True").then_some(()))
    })?;

    let mut rows = Vec::new();
    let mut idle = None;
    for n in ROUNDS {
        let floor_ms = floor(&node, n, true, &format!("r{n}"))?;
        let api = api_start::round(&c, &format!("r{n}"), n)
            .with_context(|| format!("round of {n} pods"))?;
        if n == *ROUNDS.last().unwrap_or(&n) {
            std::thread::sleep(Duration::from_secs(5));
            idle = Some(idle_cost(agent_pid(&node)?, IDLE_WINDOW)?);
        }
        api_start::delete_round(&c, &format!("r{n}"))?;
        rows.push((n, floor_ms, api));
    }
    let log = node.agent_log();
    if log.contains("panicked") {
        bail!("the agent panicked:\n{log}");
    }

    println!();
    println!(
        "API pod start (hostNetwork busybox, image present): create returned -> Running seen \
         by a watch, ms; CRI floor: RunPodSandbox+CreateContainer+StartContainer issued \
         directly, all at once, ms; SLO: p99 <= {SLO_P99_MS} ms"
    );
    println!(
        "| pods at once | CRI floor p50 | CRI floor p99 | nodelet p50 | nodelet p99 | first create -> last Running | SLO p99 met |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | :---: |");
    for (n, f, a) in &rows {
        let p99 = pct(&a.latencies, 99);
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            pct(f, 50),
            pct(f, 99),
            pct(&a.latencies, 50),
            p99,
            a.total_ms,
            if p99 <= SLO_P99_MS { "yes" } else { "no" }
        );
    }
    if let Some(i) = idle {
        println!();
        println!(
            "agent with {} API pods running, over {IDLE_WINDOW:?}: CPU {:.2} ms/s, RSS {:.1} MiB",
            ROUNDS[ROUNDS.len() - 1],
            i.cpu_ms_per_s,
            i.rss_mib
        );
    }
    c.stop()
}
