//! Pod start latency and agent overhead, against the CRI floor measured in the same run.
//!
//! Run: `cargo build --release -p agent && NODELET_BIN=target/release/nodelet cargo bench -p nodelet-tests --bench pod_start`
//! (`cargo xtask bench pods` does both). Prints one table. No Go kubelet can be installed on
//! this machine kind, so the baseline is the floor any agent pays: the same CRI calls
//! (RunPodSandbox, CreateContainer, StartContainer) issued directly, one pod after another and
//! all at once.

use anyhow::{Context, Result, bail};
use nodelet_tests::*;
use proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

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

    let floor_seq = floor(&node, SEQUENTIAL, false)?;
    let floor_burst = floor(&node, BURST, true)?;
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

fn pct(v: &[f64], p: usize) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p as f64 / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// RunPodSandbox + CreateContainer + StartContainer issued directly; ms per pod (sequential)
/// or ms until the last pod started (burst, all at once).
fn floor(node: &Node, n: usize, burst: bool) -> Result<Vec<f64>> {
    let client = node.block_on(proto::Client::connect(node.env.socket()))?;
    let logs = node.logs.join("floor");
    std::fs::create_dir_all(&logs)?;
    let one = |i: usize| {
        let client = client.clone();
        let logs = logs.clone();
        let cgroup = format!("{}/floor/pod{i}", node.cgroup_root);
        async move {
            let t0 = Instant::now();
            let cfg = cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: format!("floor-{i}-{burst}"),
                    uid: format!("floor-{i}-{burst}"),
                    namespace: "bench".into(),
                    attempt: 0,
                }),
                log_directory: logs.to_string_lossy().into_owned(),
                linux: Some(cri::LinuxPodSandboxConfig {
                    cgroup_parent: cgroup,
                    security_context: Some(cri::LinuxSandboxSecurityContext {
                        namespace_options: Some(cri::NamespaceOption {
                            network: cri::NamespaceMode::Node as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let sb = client
                .runtime()
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(cfg.clone()),
                    runtime_handler: String::new(),
                })
                .await?
                .into_inner()
                .pod_sandbox_id;
            let c = client
                .runtime()
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sb.clone(),
                    config: Some(cri::ContainerConfig {
                        metadata: Some(cri::ContainerMetadata {
                            name: "c".into(),
                            attempt: 0,
                        }),
                        image: Some(cri::ImageSpec {
                            image: "busybox:1.35".into(),
                            ..Default::default()
                        }),
                        command: vec![
                            "sh".into(),
                            "-c".into(),
                            "trap 'exit 0' TERM; sleep 3600 & wait".into(),
                        ],
                        log_path: format!("c-{i}-{burst}.log"),
                        ..Default::default()
                    }),
                    sandbox_config: Some(cfg),
                })
                .await?
                .into_inner()
                .container_id;
            client
                .runtime()
                .start_container(cri::StartContainerRequest { container_id: c })
                .await?;
            Ok::<(f64, String), anyhow::Error>((t0.elapsed().as_secs_f64() * 1000.0, sb))
        }
    };
    let mut out = Vec::new();
    let mut sandboxes = Vec::new();
    if burst {
        let t0 = Instant::now();
        let results = node.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                set.spawn(one(i));
            }
            let mut r = Vec::new();
            while let Some(x) = set.join_next().await {
                r.push(x.context("join")??);
            }
            Ok::<_, anyhow::Error>(r)
        })?;
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        sandboxes.extend(results.into_iter().map(|(_, s)| s));
    } else {
        for i in 0..n {
            let (ms, sb) = node.block_on(one(i))?;
            out.push(ms);
            sandboxes.push(sb);
        }
    }
    node.block_on(async {
        for sb in sandboxes {
            let rt = client.runtime();
            let mut rt2 = rt.clone();
            let _ = rt2
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.clone(),
                })
                .await;
            let _ = rt2
                .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb })
                .await;
        }
    });
    Ok(out)
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

struct Idle {
    cpu_ms_per_s: f64,
    rss_mib: f64,
}

fn agent_pid(node: &Node) -> Result<u32> {
    let needle = node.config.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("nodelet") && cmd.contains(&needle) {
            return Ok(pid);
        }
    }
    bail!("agent process not found")
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted after the ")".
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
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
    let pid = agent_pid(node)?;
    let hz = 100.0; // USER_HZ on Linux
    let c0 = cpu_ticks(pid)?;
    std::thread::sleep(IDLE_WINDOW);
    let c1 = cpu_ticks(pid)?;
    let idle = Idle {
        cpu_ms_per_s: (c1 - c0) as f64 / hz * 1000.0 / IDLE_WINDOW.as_secs_f64(),
        rss_mib: rss_kib(pid)? as f64 / 1024.0,
    };
    for n in &names {
        node.remove_manifest(&format!("{n}.yaml"))?;
    }
    Ok((burst_ms, idle))
}
