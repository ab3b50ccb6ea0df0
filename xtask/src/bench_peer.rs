//! `cargo xtask bench peer`: nodelet beside the Go kubelet of [`xtask::k8s::RELEASE`], each in
//! turn on a containerd of its own (same build and config), same images, same static pod sets,
//! standalone (no API server), in one run printed as one table with the ratio column.
//!
//! Per agent, in this order: idle cost with no pods; OOM kill -> /pods says OOMKilled; pod
//! start batches (manifests written -> containerd's `/tasks/start` event); then idle cost at
//! each pod count (pods added up to it, a settle period, `rounds` windows: min and median),
//! the restart with ~100 pods (time until /pods shows every pod running again; containers and
//! sandboxes created meanwhile, which must be 0) and the stats endpoints at the largest count.
//! Between the start batches and the idle pods, the accuracy row ([`accuracy`]). Then, joined
//! to a loopback control plane of the same release, the API pod start batches ([`api`]).
//! Both agents get the KubeletConfiguration of [`node`] (kubelet.rs's deviations for this
//! machine, defaults otherwise).

mod accuracy;
mod api;
mod node;
mod ramp;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::kubelet::Kind;

use crate::bench::{ctxt, http_get, percentile, pod_manifest};
use node::{Kmsg, NODE, PeerNode, mono_ns};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct PeerBench {
    /// Running pod counts of the idle rows (one busybox container each).
    pub pods: Vec<usize>,
    /// Idle measurement window.
    pub window: Duration,
    /// Settle time after pods were added (or the agent restarted).
    pub settle: Duration,
    /// Idle windows per pod count (min and median reported).
    pub rounds: usize,
    /// OOM kills to time (0: skip).
    pub ooms: usize,
    /// Pod start batch sizes (0 pods: skip); a batch of 1 is repeated [`SINGLE_STARTS`] times.
    pub starts: Vec<usize>,
    /// API pod start batch sizes, each agent joined to a control plane (0 pods: skip).
    pub api_starts: Vec<usize>,
    /// nodelet (release build).
    pub nodelet: PathBuf,
    /// The Go kubelet.
    pub kubelet: PathBuf,
    /// Load pods of the accuracy row (0: skip).
    pub accuracy_pods: usize,
    /// The accuracy row's comparison window.
    pub accuracy_window: Duration,
    /// Ramp rates of the memory-ramp race, MiB/s (joined to a control plane).
    pub ramp_rates: Vec<i64>,
    /// Races per ramp rate (0: skip).
    pub ramp_runs: usize,
}

/// Repeats of the one-pod start.
const SINGLE_STARTS: usize = 20;
/// The pod count the restart is measured at (or the nearest count of the run).
const RESTART_PODS: usize = 100;
/// Requests per stats endpoint.
const SERVE_REQUESTS: usize = 5;
const ENDPOINTS: [&str; 3] = ["/metrics/cadvisor", "/metrics/resource", "/stats/summary"];

/// One idle window.
#[derive(Debug, Clone, Copy)]
struct Idle {
    /// Agent CPU, ms per s (cpuacct of its cgroup).
    cpu: f64,
    /// Its BPF programs' run time, ms per s.
    bpf: f64,
    /// RSS at the window's end, MiB.
    rss: f64,
    /// Context switches of the whole machine per s (what the BPF programs run on).
    switches: f64,
}

/// Restart with pods running.
#[derive(Debug, Clone, Copy)]
struct Restart {
    pods: usize,
    /// Spawn -> /pods lists every pod with its container running, s.
    secs: f64,
    new_sandboxes: usize,
    new_containers: usize,
}

/// Everything measured of one agent.
#[derive(Debug, Default)]
struct Report {
    idle: Vec<(usize, Vec<Idle>)>,
    ooms: Vec<f64>,
    starts: Vec<(usize, Vec<f64>)>,
    /// Per static batch size, CPU ms the agent and the containerd daemon spent from the first
    /// manifest written to the last container started (summed over the repetitions): an agent's
    /// calls (relists above all) load the runtime that starts its pods.
    start_cpu: Vec<(usize, f64, f64)>,
    /// API create -> Running seen by a watch, per batch size.
    api_starts: Vec<(usize, Vec<f64>)>,
    restart: Option<Restart>,
    /// (path, ms per request sorted, bytes) at `serve_at` containers.
    serving: Vec<(&'static str, Vec<f64>, usize)>,
    serve_at: usize,
    accuracy: Option<accuracy::Accuracy>,
    /// Per ramp rate, the races.
    ramps: Vec<(i64, Vec<ramp::RampRun>)>,
    notes: Vec<String>,
}

/// Runs both agents and prints the table.
pub fn peer(b: &PeerBench) -> Result<()> {
    let stats_flag = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let old_flag = fs::read_to_string(stats_flag).unwrap_or_else(|_| "0".into());
    fs::write(stats_flag, "1").context("enabling kernel.bpf_stats_enabled")?;
    let mut reports = Vec::new();
    let mut result = Ok(());
    for (kind, bin) in [(Kind::Nodelet, &b.nodelet), (Kind::Go, &b.kubelet)] {
        eprintln!("bench: === {kind} ===");
        let rows = api::ApiRows {
            sizes: &b.api_starts,
            single: SINGLE_STARTS,
            ramp_rates: &b.ramp_rates,
            ramp_runs: b.ramp_runs,
        };
        let measured = run_agent(b, kind, bin).and_then(|mut r| {
            if rows.any() {
                let api = api::measure(kind, bin, &rows)?;
                r.api_starts = api.starts;
                r.ramps = api.ramps;
            }
            Ok(r)
        });
        match measured {
            Ok(r) => reports.push((kind, r)),
            Err(e) => {
                result = Err(e.context(format!("bench peer: the {kind}")));
                break;
            }
        }
    }
    let _ = fs::write(stats_flag, old_flag.trim());
    result?;
    print_table(b, &reports);
    Ok(())
}

fn full(name: &str) -> String {
    format!("{name}-{NODE}")
}

/// Writes `names` as static pods at once (each file renamed into place, so no agent reads a
/// half-written one).
fn write_pods(node: &PeerNode, names: &[String], script: &str) -> Result<()> {
    let staging = node.manifests.with_file_name("staging");
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    for n in names {
        let tmp = staging.join(format!("{n}.yaml"));
        fs::write(&tmp, pod_manifest(n, 1, script, None))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    for n in names {
        let dst = node.manifests.join(format!("{n}.yaml"));
        fs::rename(staging.join(format!("{n}.yaml")), &dst)
            .with_context(|| format!("cannot create {}", dst.display()))?;
    }
    Ok(())
}

fn remove_pods(node: &PeerNode, names: &[String]) -> Result<()> {
    for n in names {
        let p = node.manifests.join(format!("{n}.yaml"));
        fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

/// Waits until containerd's running task count (sandboxes and containers) satisfies `ok`.
fn wait_tasks(
    node: &PeerNode,
    what: &str,
    ok: impl Fn(usize) -> bool,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let now = node.running_tasks()?;
        if ok(now) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("{now} running tasks after {timeout:?}, waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run_agent(b: &PeerBench, kind: Kind, bin: &Path) -> Result<Report> {
    let mut node = PeerNode::start(kind, bin)?;
    let mut r = Report::default();
    let mut pods: Vec<String> = Vec::new();
    let slow = Duration::from_secs(600);
    if b.pods.contains(&0) {
        r.idle.push((0, idle(b, &node)?));
    }
    if b.ooms > 0 {
        r.ooms = oom_latencies(&node, b.ooms, &mut r.notes)?;
    }
    for &size in b.starts.iter().filter(|&&s| s > 0) {
        let reps = if size == 1 { SINGLE_STARTS } else { 1 };
        let mut lat = Vec::new();
        let (mut agent_ms, mut runtime_ms) = (0.0, 0.0);
        for rep in 0..reps {
            eprintln!("bench: {kind}: start batch of {size} ({}/{reps})", rep + 1);
            let names: Vec<String> = (0..size).map(|i| format!("s{size}r{rep}n{i}")).collect();
            let base = node.running_tasks()?;
            let cpu0 = (node.cpu_ns()?, node.containerd_cpu_ns()?);
            lat.extend(start_batch(&node, &names, slow)?);
            let cpu1 = (node.cpu_ns()?, node.containerd_cpu_ns()?);
            agent_ms += cpu1.0.saturating_sub(cpu0.0) as f64 / 1e6;
            runtime_ms += cpu1.1.saturating_sub(cpu0.1) as f64 / 1e6;
            remove_pods(&node, &names)?;
            wait_tasks(&node, &format!("<= {base}"), |t| t <= base, slow)?;
        }
        lat.sort_by(f64::total_cmp);
        r.starts.push((size, lat));
        r.start_cpu.push((size, agent_ms, runtime_ms));
    }
    // Before the idle pods: they would share the CPU with the load and its pollers.
    if b.accuracy_pods > 0 {
        r.accuracy = Some(accuracy::measure(
            &node,
            b.accuracy_pods,
            b.accuracy_window,
        )?);
    }
    let mut counts: Vec<usize> = b.pods.iter().copied().filter(|&n| n > 0).collect();
    counts.sort_unstable();
    let restart_at = counts
        .iter()
        .copied()
        .min_by_key(|n| n.abs_diff(RESTART_PODS));
    for &n in &counts {
        let add: Vec<String> = (pods.len()..n).map(|i| format!("idle{i}")).collect();
        eprintln!("bench: {kind}: {n} pods");
        write_pods(&node, &add, "sleep 36000")?;
        pods.extend(add);
        wait_tasks(&node, &format!(">= {}", 2 * n), |t| t >= 2 * n, slow)?;
        if restart_at == Some(n) {
            r.restart = Some(restart(&mut node, &pods)?);
        }
        r.idle.push((n, idle(b, &node)?));
    }
    if let Some(&n) = counts.last() {
        r.serve_at = n;
        for path in ENDPOINTS {
            let mut ms = Vec::new();
            let mut bytes = 0;
            for _ in 0..SERVE_REQUESTS {
                let t = Instant::now();
                match http_get(node.ro_port, path) {
                    Ok(body) => {
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                        bytes = body.len();
                    }
                    Err(e) => {
                        r.notes.push(format!("GET {path}: {e:#}"));
                        break;
                    }
                }
            }
            ms.sort_by(f64::total_cmp);
            r.serving.push((path, ms, bytes));
        }
    }
    eprintln!("bench: {kind}: tearing down");
    node.stop()?;
    Ok(r)
}

/// `rounds` windows after the settle period.
fn idle(b: &PeerBench, node: &PeerNode) -> Result<Vec<Idle>> {
    eprintln!(
        "bench: {}: settling {:?}, then {} window(s) of {:?}",
        node.kind, b.settle, b.rounds, b.window
    );
    std::thread::sleep(b.settle);
    let w = b.window.as_secs_f64();
    let mut out = Vec::new();
    for _ in 0..b.rounds {
        let (c0, p0, s0) = (node.cpu_ns()?, node.bpf_ns()?, ctxt()?);
        std::thread::sleep(b.window);
        let (c1, p1, s1) = (node.cpu_ns()?, node.bpf_ns()?, ctxt()?);
        out.push(Idle {
            cpu: c1.saturating_sub(c0) as f64 / 1e6 / w,
            bpf: p1.saturating_sub(p0) as f64 / 1e6 / w,
            rss: node.rss_mib()?,
            switches: s1.saturating_sub(s0) as f64 / w,
        });
    }
    Ok(out)
}

/// Writes the batch and returns, per pod, manifest written -> its container's `/tasks/start`
/// (containerd's timestamp), ms.
fn start_batch(node: &PeerNode, names: &[String], timeout: Duration) -> Result<Vec<f64>> {
    let seen = node.task_starts().len();
    let t0 = SystemTime::now();
    write_pods(node, names, "sleep 36000")?;
    let started = Instant::now();
    loop {
        let starts = node.task_starts();
        let new = starts.get(seen..).unwrap_or_default();
        // Sandboxes start a task too: only the busybox containers count.
        if new.len() >= names.len() {
            let images = node.containers()?;
            let lat: Vec<f64> = new
                .iter()
                .filter(|(_, id)| images.get(id).is_some_and(|i| i.contains("busybox")))
                .map(|(at, _)| at.duration_since(t0).map_or(0.0, |d| d.as_secs_f64() * 1e3))
                .collect();
            if lat.len() >= names.len() {
                return Ok(lat);
            }
        }
        if started.elapsed() > timeout {
            bail!(
                "{} of {} containers started after {timeout:?}",
                new.len() / 2,
                names.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The container statuses /pods shows for the static pod `name`.
fn container_statuses(port: u16, name: &str) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_str(&http_get(port, "/pods")?).context("/pods: bad JSON")?;
    let full = full(name);
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["name"] == full.as_str())
        .flat_map(|p| p["status"]["containerStatuses"].as_array().cloned())
        .flatten()
        .collect())
}

/// Whether /pods shows the static pod `name` with a container terminated as OOMKilled.
fn oom_killed(port: u16, name: &str) -> Result<bool> {
    Ok(container_statuses(port, name)?.iter().any(|c| {
        c["state"]["terminated"]["reason"] == "OOMKilled"
            || c["lastState"]["terminated"]["reason"] == "OOMKilled"
    }))
}

/// Kernel `oom-kill:` record -> /pods says OOMKilled, ms, one pod at a time (restartPolicy
/// Never, 20 MiB limit, the container's main process allocating, as in most OOM kills). The kernel rate-limits that record (10 per
/// 5 s for the whole machine, other sessions' OOMs included): a kill without one is skipped
/// and named in the notes.
fn oom_latencies(node: &PeerNode, count: usize, notes: &mut Vec<String>) -> Result<Vec<f64>> {
    let mut kmsg = Kmsg::open()?;
    let mut out = Vec::new();
    for i in 0..count {
        eprintln!("bench: {}: OOM kill {}/{count}", node.kind, i + 1);
        let name = format!("oom{i}");
        let manifest = pod_manifest(
            &name,
            1,
            "sleep 1; exec tail -c 104857600 /dev/zero",
            Some("20Mi"),
        )
        .replace("spec:\n", "spec:\n  restartPolicy: Never\n");
        let path = node.manifests.join(format!("{name}.yaml"));
        fs::write(&path, manifest).with_context(|| format!("cannot write {}", path.display()))?;
        let (mut kill, mut seen) = (None, None);
        let started = Instant::now();
        while kill.is_none() || seen.is_none() {
            for (ns, msg) in kmsg.read_new()? {
                if kill.is_none() && msg.contains("oom-kill:") && msg.contains(&node.cgroup_root) {
                    kill = Some(ns);
                }
            }
            // The moment after the answer: never earlier than the agent knew.
            if seen.is_none() && oom_killed(node.ro_port, &name).unwrap_or(false) {
                seen = Some(mono_ns());
            }
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        match (kill, seen) {
            (Some(k), Some(s)) => out.push((s - k) as f64 / 1e6),
            _ => notes.push(format!(
                "OOM kill {i}: kernel record {}, OOMKilled in /pods {} within 30 s",
                if kill.is_some() { "seen" } else { "missing" },
                if seen.is_some() { "seen" } else { "not seen" }
            )),
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Stops the agent with `pods` running and starts it again.
fn restart(node: &mut PeerNode, pods: &[String]) -> Result<Restart> {
    eprintln!("bench: {}: restart with {} pods", node.kind, pods.len());
    let before = node.containers()?;
    node.stop_agent()?;
    let t0 = Instant::now();
    node.launch()?;
    let want: Vec<String> = pods.iter().map(|p| full(p)).collect();
    loop {
        let v: Value = http_get(node.ro_port, "/pods")
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null);
        let running = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| want.iter().any(|w| w == n))
            })
            .filter(|p| {
                p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| {
                        !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
                    })
            })
            .count();
        if running == want.len() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!(
                "{running} of {} pods reported running 600 s after the restart",
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t0.elapsed().as_secs_f64();
    // Whatever the agent would create anew comes right after its first sync.
    std::thread::sleep(Duration::from_secs(5));
    let after = node.containers()?;
    let new: Vec<&String> = after
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .map(|(_, image)| image)
        .collect();
    let new_sandboxes = new.iter().filter(|i| i.contains("pause")).count();
    Ok(Restart {
        pods: pods.len(),
        secs,
        new_sandboxes,
        new_containers: new.len() - new_sandboxes,
    })
}

fn print_table(b: &PeerBench, reports: &[(Kind, Report)]) {
    let get = |k: Kind| reports.iter().find(|(x, _)| *x == k).map(|(_, r)| r);
    let (Some(n), Some(g)) = (get(Kind::Nodelet), get(Kind::Go)) else {
        return;
    };
    println!(
        "\nnodelet vs Go kubelet {}, standalone (static pods), one containerd each in turn; \
         idle: settle {:?}, {} window(s) of {:?}, median (min)\n",
        xtask::k8s::RELEASE,
        b.settle,
        b.rounds,
        b.window
    );
    println!("| measure | nodelet | Go kubelet | nodelet/kubelet | goal |");
    println!("| --- | ---: | ---: | ---: | --- |");
    let mm = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (percentile(&s, 0.5), s.first().copied().unwrap_or(f64::NAN))
    };
    let row = |what: String, a: (f64, f64), k: (f64, f64), digits: usize, goal: &str| {
        println!(
            "| {what} | {:.d$} ({:.d$}) | {:.d$} ({:.d$}) | {:.3} | {goal} |",
            a.0,
            a.1,
            k.0,
            k.1,
            a.0 / k.0,
            d = digits
        );
    };
    for (count, ni) in &n.idle {
        let Some((_, gi)) = g.idle.iter().find(|(c, _)| c == count) else {
            continue;
        };
        let big = *count >= 100;
        let total: Vec<f64> = ni.iter().map(|x| x.cpu + x.bpf).collect();
        row(
            format!("idle CPU ms/s, {count} pods (nodelet incl. BPF)"),
            mm(&total),
            mm(&gi.iter().map(|x| x.cpu).collect::<Vec<_>>()),
            2,
            if big { "<= 0.1" } else { "" },
        );
        row(
            format!("idle RSS MiB, {count} pods"),
            mm(&ni.iter().map(|x| x.rss).collect::<Vec<_>>()),
            mm(&gi.iter().map(|x| x.rss).collect::<Vec<_>>()),
            1,
            if big { "<= 0.2" } else { "" },
        );
    }
    for ((path, nm, nb), (_, gm, gb)) in n.serving.iter().zip(&g.serving) {
        let goal = if *path == "/metrics/cadvisor" {
            "<= 1/50 (time)"
        } else {
            ""
        };
        row(
            format!("GET {path} ms, {} containers", n.serve_at),
            mm(nm),
            mm(gm),
            1,
            goal,
        );
        println!(
            "| GET {path} bytes | {nb} | {gb} | {:.3} | |",
            *nb as f64 / *gb as f64
        );
    }
    let p = |v: &[f64], q: f64| percentile(v, q);
    for (what, ns, gs) in [
        ("pod start", &n.starts, &g.starts),
        (
            "API pod start (create -> Running, watch)",
            &n.api_starts,
            &g.api_starts,
        ),
    ] {
        for ((size, nl), (_, gl)) in ns.iter().zip(gs) {
            for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
                println!(
                    "| {what} {label} ms, batch of {size}{} | {:.0} | {:.0} | {:.3} | {} |",
                    if *size == 1 {
                        format!(" (x{SINGLE_STARTS})")
                    } else {
                        String::new()
                    },
                    p(nl, q),
                    p(gl, q),
                    p(nl, q) / p(gl, q),
                    if q > 0.9 { "<= 1" } else { "" }
                );
            }
        }
    }
    for ((size, na, nc), (_, ga, gc)) in n.start_cpu.iter().zip(&g.start_cpu) {
        let reps = if *size == 1 { SINGLE_STARTS } else { 1 };
        println!(
            "| CPU ms during static start batches of {size} (x{reps}): agent / containerd daemon | {na:.0} / {nc:.0} | {ga:.0} / {gc:.0} | {:.3} | |",
            (na + nc) / (ga + gc)
        );
    }
    if !n.ooms.is_empty() || !g.ooms.is_empty() {
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            println!(
                "| OOM kill -> /pods OOMKilled {label} ms ({} / {} kills) | {:.1} | {:.1} | {:.3} | <= 1/50 |",
                n.ooms.len(),
                g.ooms.len(),
                p(&n.ooms, q),
                p(&g.ooms, q),
                p(&n.ooms, q) / p(&g.ooms, q)
            );
        }
    }
    for ((rate, nr), (_, gr)) in n.ramps.iter().zip(&g.ramps) {
        let cell = |runs: &[ramp::RampRun]| {
            format!(
                "{} / {} / {}",
                runs.iter().filter(|r| r.won()).count(),
                runs.iter().filter(|r| r.evicted).count(),
                runs.iter().map(|r| r.kills).sum::<usize>()
            )
        };
        println!(
            "| ramp race {rate} MiB/s, {} races: won / evicted / kernel OOM kills | {} | {} | | wins every race the kubelet loses |",
            nr.len(),
            cell(nr),
            cell(gr)
        );
    }
    if !n.ramps.is_empty() {
        let g_kills = |r: &Report| {
            r.ramps
                .iter()
                .flat_map(|(_, runs)| runs)
                .filter(|r| r.guaranteed_kills > 0)
                .count()
        };
        println!(
            "| ramp races where the kernel killed the Guaranteed pod | {} | {} | | 0 |",
            g_kills(n),
            g_kills(g)
        );
    }
    if let (Some(na), Some(ga)) = (&n.accuracy, &g.accuracy) {
        for line in accuracy::rows(b.accuracy_pods, na, ga) {
            println!("{line}");
        }
    }
    if let (Some(nr), Some(gr)) = (n.restart, g.restart) {
        println!(
            "| restart with {} pods: spawn -> all running in /pods, s | {:.2} | {:.2} | {:.3} | |",
            nr.pods,
            nr.secs,
            gr.secs,
            nr.secs / gr.secs
        );
        println!(
            "| restart: new sandboxes / containers | {} / {} | {} / {} | | 0 / 0 |",
            nr.new_sandboxes, nr.new_containers, gr.new_sandboxes, gr.new_containers
        );
    }
    println!(
        "\nnodelet idle CPU split, median ms/s (agent process + its BPF programs; the programs \
         run on every context switch of the machine, whose rate is shown)"
    );
    for (count, ni) in &n.idle {
        let cpu = mm(&ni.iter().map(|x| x.cpu).collect::<Vec<_>>()).0;
        let bpf = mm(&ni.iter().map(|x| x.bpf).collect::<Vec<_>>()).0;
        let sw = mm(&ni.iter().map(|x| x.switches).collect::<Vec<_>>()).0;
        println!("  {count} pods: {cpu:.2} + {bpf:.2} at {sw:.0} switches/s");
    }
    for (kind, r) in reports {
        for note in &r.notes {
            println!("note ({kind}): {note}");
        }
    }
}
