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
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xtask::cluster::{self, Cluster, ClusterOpts};

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
        let api = api_round(&c, n).with_context(|| format!("round of {n} pods"))?;
        if n == *ROUNDS.last().unwrap_or(&n) {
            std::thread::sleep(Duration::from_secs(5));
            idle = Some(idle_cost(agent_pid(&node)?, IDLE_WINDOW)?);
        }
        delete_round(&c, n)?;
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

/// One round's figures.
struct Round {
    /// Per pod: its create returned -> first seen Running by the watch, ms.
    latencies: Vec<f64>,
    /// First create issued -> last pod seen Running, ms.
    total_ms: f64,
}

fn pod_list(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: r{n}-{i}\n    \
                 namespace: default\n    labels:\n      bench: r{n}\n  spec:\n    \
                 automountServiceAccountToken: false\n    hostNetwork: true\n    \
                 terminationGracePeriodSeconds: 1\n    containers:\n    - name: c\n      \
                 image: busybox:1.35\n      imagePullPolicy: IfNotPresent\n      \
                 command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]\n"
            )
        })
        .collect();
    format!("apiVersion: v1\nkind: List\nitems:\n{}", items.join(""))
}

/// Creates `n` pods at once and times each from its create returning to its first Running
/// event on a watch that was open before the first create.
fn api_round(c: &Cluster, n: usize) -> Result<Round> {
    let label = format!("bench=r{n}");
    let mut watch = Command::new(c.kubectl_path())
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .args(["get", "pods", "-l", &label, "--watch", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kubectl get --watch")?;
    let out = watch.stdout.take().context("watch stdout")?;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let reader = std::thread::spawn(move || {
        let stream = serde_json::Deserializer::from_reader(BufReader::new(out)).into_iter();
        for v in stream {
            let Ok(v): Result<Value, _> = v else { return };
            let at = Instant::now();
            if v["status"]["phase"] == "Running"
                && let Some(name) = v["metadata"]["name"].as_str()
                && tx.send((name.to_owned(), at)).is_err()
            {
                return;
            }
        }
    });
    // The watch prints nothing until a pod matches: give it a moment to be established.
    std::thread::sleep(Duration::from_secs(2));

    let t0 = Instant::now();
    let mut create = Command::new(c.kubectl_path())
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting kubectl create")?;
    {
        use std::io::Write;
        let mut stdin = create.stdin.take().context("create stdin")?;
        stdin.write_all(pod_list(n).as_bytes())?;
    }
    let mut created: HashMap<String, Instant> = HashMap::new();
    let stdout = create.stdout.take().context("create stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(name) = line
            .strip_prefix("pod/")
            .and_then(|r| r.strip_suffix(" created"))
        {
            created.insert(name.to_owned(), Instant::now());
        }
    }
    let st = create.wait()?;
    if !st.success() || created.len() != n {
        bail!(
            "kubectl create: {st}, {} of {n} pods created",
            created.len()
        );
    }
    let mut running: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + T;
    while running.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, at) = rx
            .recv_timeout(left)
            .with_context(|| format!("{} of {n} pods Running after {T:?}", running.len()))?;
        running.entry(name).or_insert(at);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    let mut latencies = Vec::new();
    for (name, at) in &running {
        let c0 = created
            .get(name)
            .with_context(|| format!("{name} Running but not created by this round"))?;
        latencies.push(at.saturating_duration_since(*c0).as_secs_f64() * 1000.0);
    }
    let last = running.values().max().copied().unwrap_or(t0);
    Ok(Round {
        latencies,
        total_ms: last.saturating_duration_since(t0).as_secs_f64() * 1000.0,
    })
}

/// Deletes the round's pods and waits until the API has none of them (the agent's final
/// delete after stopping them).
fn delete_round(c: &Cluster, n: usize) -> Result<()> {
    let label = format!("bench=r{n}");
    c.kubectl(&["delete", "pods", "-l", &label, "--wait=false"])?;
    wait_for("the round's pods gone", T, || {
        let left = c.kubectl(&["get", "pods", "-l", &label, "-o", "name"])?;
        Ok(left.trim().is_empty().then_some(()))
    })
}
