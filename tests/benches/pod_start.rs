//! Pod start latency and agent overhead, against the CRI floor measured in the same run.
//!
//! Run: `cargo build --release -p agent && NODELET_BIN=target/release/nodelet cargo bench -p nodelet-tests --bench pod_start`
//! (`cargo xtask bench pods` does both). Prints one table. No Go kubelet can be installed on
//! this machine kind, so the baseline is the floor any agent pays: the same CRI calls
//! (RunPodSandbox, CreateContainer, StartContainer) issued directly, one pod after another and
//! all at once.

use anyhow::{Result, bail};
use nodelet_tests::bench::{Idle, agent_pid, floor, idle_cost, pct};
use nodelet_tests::*;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

const SEQUENTIAL: usize = 15;
const BURST: usize = 30;
const IDLE_WINDOW: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let Some(mut node) = Node::start(NodeOpts::default())? else {
        bail!("cannot run the benchmark here (see the SKIPPED line above)");
    };
    // Production verbosity: the events we time are info-level lines.
    node.stop_agent(libc::SIGTERM)?;
    node.start_agent(&["--v=0"])?;
    node.wait("agent up", Duration::from_secs(30), || {
        Ok(node.agent_log().contains("relisting every").then_some(()))
    })?;

    let floor_seq = floor(&node, SEQUENTIAL, false, "seq")?;
    let floor_burst = floor(&node, BURST, true, "burst")?;
    let agent_seq = agent_sequential(&node)?;
    let (agent_burst, idle) = agent_burst_and_idle(&node)?;

    println!();
    println!("pod start (hostNetwork busybox, manifest written -> container started), ms");
    println!("| case | CRI floor (direct calls) | nodelet | nodelet - floor |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, f, a) in [
        ("1 pod, p50", pct(&floor_seq, 50), pct(&agent_seq, 50)),
        ("1 pod, p90", pct(&floor_seq, 90), pct(&agent_seq, 90)),
        ("1 pod, max", pct(&floor_seq, 100), pct(&agent_seq, 100)),
        (
            &*format!("{BURST} pods at once, last started"),
            pct(&floor_burst, 100),
            agent_burst,
        ),
    ] {
        println!("| {name} | {f:.1} | {a:.1} | {:+.1} |", a - f);
    }
    println!();
    println!("agent at steady state with {BURST} running pods, over {IDLE_WINDOW:?}");
    println!("| what | nodelet |");
    println!("| --- | ---: |");
    println!("| CPU, ms per second | {:.2} |", idle.cpu_ms_per_s);
    println!("| RSS, MiB | {:.1} |", idle.rss_mib);
    println!("| CRI calls per second (relist) | 2 |");
    Ok(())
}

fn manifest(name: &str) -> String {
    host_pod(name, "Always", "trap 'exit 0' TERM; sleep 3600 & wait")
}

/// Time of each "started container" log line, by pod name.
fn started_times(log: &str) -> HashMap<String, SystemTime> {
    let mut out = HashMap::new();
    for line in log.lines().filter(|l| l.contains("started container")) {
        let (Some(ts), Some(pod)) = (
            line.split_whitespace().next().and_then(parse_rfc3339),
            line.split("pod=")
                .nth(1)
                .and_then(|r| r.split('/').nth(1))
                .and_then(|r| r.split(' ').next()),
        ) else {
            continue;
        };
        out.entry(pod.to_string()).or_insert(ts);
    }
    out
}

/// `2026-11-23T22:25:18.160754Z` -> time (tracing's UTC format).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn agent_sequential(node: &Node) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..SEQUENTIAL {
        let name = format!("seq{i}");
        let t0 = SystemTime::now();
        node.write_manifest(&format!("{name}.yaml"), &manifest(&name))?;
        let full = format!("{name}-{NODE}");
        let started = node.wait("pod started", Duration::from_secs(60), || {
            Ok(started_times(&node.agent_log()).get(&full).copied())
        })?;
        out.push(ms_between(t0, started));
        node.remove_manifest(&format!("{name}.yaml"))?;
    }
    node.wait("sequential pods removed", Duration::from_secs(120), || {
        Ok(node
            .sandboxes()?
            .iter()
            .all(|s| {
                !s.labels
                    .get(POD_NAME_LABEL)
                    .is_some_and(|n| n.starts_with("seq"))
            })
            .then_some(()))
    })?;
    Ok(out)
}

fn agent_burst_and_idle(node: &Node) -> Result<(f64, Idle)> {
    let names: Vec<String> = (0..BURST).map(|i| format!("burst{i}")).collect();
    // Write all manifests, then measure from the first write to the last start.
    let t0 = SystemTime::now();
    for n in &names {
        node.write_manifest(&format!("{n}.yaml"), &manifest(n))?;
    }
    let last = node.wait("all burst pods started", Duration::from_secs(180), || {
        let times = started_times(&node.agent_log());
        let got: Vec<SystemTime> = names
            .iter()
            .filter_map(|n| times.get(&format!("{n}-{NODE}")).copied())
            .collect();
        Ok((got.len() == names.len())
            .then(|| got.into_iter().max())
            .flatten())
    })?;
    let burst_ms = ms_between(t0, last);

    std::thread::sleep(Duration::from_secs(3));
    let idle = idle_cost(agent_pid(node)?, IDLE_WINDOW)?;
    for n in &names {
        node.remove_manifest(&format!("{n}.yaml"))?;
    }
    Ok((burst_ms, idle))
}
