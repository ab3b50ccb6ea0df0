//! Pieces the benchmarks share (not tests): the CRI floor, percentiles, and the agent's CPU and
//! RSS read from /proc.

use crate::Node;
use anyhow::{Context, Result, bail};
use proto::runtime::v1 as cri;
use std::time::{Duration, Instant};

/// The `p`th percentile (nearest rank) of `v`; NaN when empty.
pub fn pct(v: &[f64], p: usize) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p as f64 / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// RunPodSandbox + CreateContainer + StartContainer issued directly on the node's containerd,
/// for `n` hostNetwork busybox pods named `floor-<tag>-<i>`: one after another, or all at
/// once (`burst`). Returns each pod's ms from its own first call (sequential) or from the
/// start of the burst to its StartContainer returning; the pods are removed afterwards.
pub fn floor(node: &Node, n: usize, burst: bool, tag: &str) -> Result<Vec<f64>> {
    let client = node.block_on(proto::Client::connect(node.env.socket()))?;
    let logs = node.logs.join(format!("floor-{tag}"));
    std::fs::create_dir_all(&logs)?;
    let one = |i: usize, t0: Instant| {
        let client = client.clone();
        let logs = logs.clone();
        let cgroup = format!("{}/floor/{tag}-pod{i}", node.cgroup_root);
        let name = format!("floor-{tag}-{i}");
        async move {
            let t0 = if burst { t0 } else { Instant::now() };
            let cfg = cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: name.clone(),
                    uid: name.clone(),
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
                        log_path: format!("c-{i}.log"),
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
                set.spawn(one(i, t0));
            }
            let mut r = Vec::new();
            while let Some(x) = set.join_next().await {
                r.push(x.context("join")??);
            }
            Ok::<_, anyhow::Error>(r)
        })?;
        for (ms, sb) in results {
            out.push(ms);
            sandboxes.push(sb);
        }
    } else {
        for i in 0..n {
            let (ms, sb) = node.block_on(one(i, Instant::now()))?;
            out.push(ms);
            sandboxes.push(sb);
        }
    }
    node.block_on(async {
        let mut rt = client.runtime();
        for sb in sandboxes {
            let _ = rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.clone(),
                })
                .await;
            let _ = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb })
                .await;
        }
    });
    Ok(out)
}

/// The pid of the node's agent (the nodelet process started with its config).
pub fn agent_pid(node: &Node) -> Result<u32> {
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

/// utime + stime of `pid`, in clock ticks (USER_HZ, 100 a second on Linux).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted after the ")".
    let field = |i: usize| -> Result<u64> {
        Ok(f.get(i).context("short /proc/<pid>/stat")?.parse::<u64>()?)
    };
    Ok(field(11)? + field(12)?)
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// An agent's steady-state cost.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// CPU, ms per second of the window.
    pub cpu_ms_per_s: f64,
    /// RSS at the end of the window, MiB.
    pub rss_mib: f64,
}

/// The agent's CPU over `window` and its RSS at the end.
pub fn idle_cost(pid: u32, window: Duration) -> Result<Idle> {
    let hz = 100.0; // USER_HZ on Linux
    let c0 = cpu_ticks(pid)?;
    std::thread::sleep(window);
    let c1 = cpu_ticks(pid)?;
    Ok(Idle {
        cpu_ms_per_s: c1.saturating_sub(c0) as f64 / hz * 1000.0 / window.as_secs_f64(),
        rss_mib: rss_kib(pid)? as f64 / 1024.0,
    })
}
