//! The metric and Summary surface dashboards, alerts and metrics-server read (issue 13), from a
//! real agent on a real containerd: the process collector on /metrics, cAdvisor's spec, CFS,
//! memory and task families on /metrics/cadvisor held to the container's own cgroup files,
//! machine labels, and /stats/summary's node memory, times, rlimit, system containers and
//! runtime filesystems. Both expositions pass `promtool check metrics`.

use anyhow::{Context, Result};
use nodelet_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(90);

fn get(port: u16, path: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()?;
    anyhow::ensure!(out.status.success(), "GET {path}: {:?}", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

/// The value of the first sample of `family` whose labels contain every one of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| {
            l.split_once("} ")
                .map(|(_, v)| v)
                .or_else(|| l.split_once(' ').map(|(_, v)| v))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn cgroup_file(hierarchy: &str, id: &str, file: &str) -> Result<String> {
    let p = Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(id.trim_start_matches('/'))
        .join(file);
    Ok(std::fs::read_to_string(&p)
        .with_context(|| p.display().to_string())?
        .trim()
        .to_owned())
}

/// Every `time`/`startTime` string in a Summary document, with its path.
fn times(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if (k == "time" || k == "startTime")
                    && let Some(s) = x.as_str()
                {
                    out.push((p.clone(), s.to_owned()));
                }
                times(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                times(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// metav1.Time: `YYYY-MM-DDTHH:MM:SSZ`, nothing finer.
fn is_metav1_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn cadvisor_process_and_summary_series_match_the_cgroup_files() -> Result<()> {
    for p in ["curl", "promtool"] {
        if !have(p) {
            skip(&format!("{p} is not installed"))?;
            return Ok(());
        }
    }
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let (port, ro, hz) = (free_port()?, free_port()?, free_port()?);
    let Some(node) = Node::start(NodeOpts {
        extra_config: format!(
            "port: {port}\nreadOnlyPort: {ro}\nhealthzPort: {hz}\naddress: 127.0.0.1\n\
             authentication:\n  anonymous:\n    enabled: true\n  webhook:\n    enabled: false\n\
             authorization:\n  mode: AlwaysAllow\n"
        ),
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    let listen = free_port()?;
    // A CPU limit to be throttled against, a memory limit and a listening socket.
    let mut manifest = host_pod(
        "lim",
        "Always",
        &format!("nc -l -p {listen} >/dev/null & while true; do :; done"),
    );
    manifest.push_str(
        "    resources:\n      limits:\n        cpu: 200m\n        memory: 64Mi\n      \
         requests:\n        cpu: 100m\n        memory: 32Mi\n",
    );
    node.write_manifest("lim.yaml", &manifest)?;
    // A pod on the CNI bridge whose ARP requests leave through its eth0 every second.
    let cni = Path::new("/usr/lib/cni/bridge").exists();
    if cni {
        node.write_manifest(
            "net.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: net, namespace: web}\nspec:\n  \
             terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
             command: [sh, -c, 'while true; do ping -c1 -W1 10.88.0.254 >/dev/null 2>&1; sleep 1; done']\n",
        )?;
    } else {
        println!("no CNI bridge plugin at /usr/lib/cni/bridge: pod network not checked");
    }
    let pod = format!("pod=\"lim-{NODE}\"");
    let c = [pod.as_str(), "container=\"c\""];

    // The details sweep runs every 10 s: wait for the spec families of the container.
    let cad = node.wait("cAdvisor spec and CFS series of the container", T, || {
        let t = get(ro, "/metrics/cadvisor")?;
        Ok((sample(&t, "container_spec_cpu_quota", &c).is_some()
            && sample(&t, "container_cpu_cfs_throttled_periods_total", &c)
                .is_some_and(|n| n > 0.0)
            && sample(&t, "container_processes", &c).is_some_and(|n| n >= 2.0))
        .then_some(t))
    })?;
    let id_line = cad
        .lines()
        .find(|l| l.starts_with("container_spec_cpu_quota{") && c.iter().all(|x| l.contains(x)))
        .context("quota line")?;
    let id = id_line
        .split("id=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("id label")?;
    println!("container cgroup {id}");
    let num = |h: &str, f: &str| -> Result<f64> { Ok(cgroup_file(h, id, f)?.parse()?) };
    let v = |f: &str| sample(&cad, f, &c).with_context(|| format!("{f} of the container"));

    // Spec: the cgroup's own files (v1 here; the unit tests cover v2's).
    assert_eq!(
        v("container_spec_cpu_quota")?,
        num("cpu", "cpu.cfs_quota_us")?
    );
    assert_eq!(
        v("container_spec_cpu_quota")?,
        20_000.0,
        "200m of a 100 ms period"
    );
    assert_eq!(
        v("container_spec_cpu_period")?,
        num("cpu", "cpu.cfs_period_us")?
    );
    assert_eq!(v("container_spec_cpu_shares")?, num("cpu", "cpu.shares")?);
    assert_eq!(
        v("container_spec_memory_limit_bytes")?,
        64.0 * 1024.0 * 1024.0
    );
    v("container_spec_memory_reservation_limit_bytes")?;
    v("container_spec_memory_swap_limit_bytes")?;
    // CFS: counters that only grow, throttled below elapsed.
    let periods = v("container_cpu_cfs_periods_total")?;
    let throttled = v("container_cpu_cfs_throttled_periods_total")?;
    assert!(
        periods >= throttled && throttled > 0.0,
        "{periods} {throttled}"
    );
    assert!(v("container_cpu_cfs_throttled_seconds_total")? > 0.0);
    let user = v("container_cpu_user_seconds_total")?;
    let system = v("container_cpu_system_seconds_total")?;
    assert!(user > 0.0 && system >= 0.0, "{user} {system}");
    // Memory families and the failures split by type and scope.
    for f in [
        "container_memory_swap",
        "container_memory_mapped_file",
        "container_memory_failcnt",
        "container_memory_max_usage_bytes",
        "container_memory_kernel_usage",
    ] {
        v(f)?;
    }
    for (ty, scope) in [
        ("pgfault", "container"),
        ("pgmajfault", "container"),
        ("pgfault", "hierarchy"),
        ("pgmajfault", "hierarchy"),
    ] {
        let ty = format!("failure_type=\"{ty}\"");
        let scope = format!("scope=\"{scope}\"");
        let labels = [c[0], c[1], ty.as_str(), scope.as_str()];
        sample(&cad, "container_memory_failures_total", &labels)
            .with_context(|| format!("failures {ty} {scope}"))?;
    }
    // Tasks: sh and nc, their descriptors and nc's listening socket.
    assert!(v("container_threads")? >= 2.0);
    assert!(v("container_file_descriptors")? >= 3.0);
    assert!(v("container_sockets")? >= 1.0, "nc listens");
    assert!(v("container_last_seen")? >= started.trunc());
    // The root cgroup: real usage beside the working set.
    let root = ["id=\"/\""];
    let usage = sample(&cad, "container_memory_usage_bytes", &root).context("root usage")?;
    let ws = sample(&cad, "container_memory_working_set_bytes", &root).context("root ws")?;
    assert!(
        usage >= ws && ws > 0.0,
        "root usage {usage} working set {ws}"
    );
    // Machine identity labels, and no scrape errors.
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let boot = format!("boot_id=\"{}\"", boot_id.trim());
    assert!(
        sample(
            &cad,
            "machine_cpu_cores",
            &[&boot, "machine_id=", "system_uuid="]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(sample(&cad, "machine_memory_bytes", &[&boot]).is_some_and(|n| n > 0.0));
    assert_eq!(sample(&cad, "container_scrape_error", &[]), Some(0.0));
    assert_eq!(sample(&cad, "machine_scrape_error", &[]), Some(0.0));
    promtool_check("/metrics/cadvisor", &cad, LINT_ALLOWED)?;

    // Network: the pod's own namespace, on its pod-level series.
    if cni {
        let net = [
            "pod=\"net-e2e-node\"",
            "interface=\"eth0\"",
            "container=\"\"",
        ];
        let text = node.wait("network series of the CNI pod", T, || {
            let t = get(ro, "/metrics/cadvisor")?;
            let tx = sample(&t, "container_network_transmit_packets_total", &net);
            Ok(tx.is_some_and(|n| n > 0.0).then_some(t))
        })?;
        for f in [
            "container_network_receive_bytes_total",
            "container_network_receive_packets_total",
            "container_network_receive_errors_total",
            "container_network_receive_packets_dropped_total",
            "container_network_transmit_bytes_total",
            "container_network_transmit_errors_total",
            "container_network_transmit_packets_dropped_total",
        ] {
            sample(&text, f, &net).with_context(|| format!("{f} of the CNI pod"))?;
        }
        let s: Value = serde_json::from_str(&get(ro, "/stats/summary")?)?;
        let p = s["pods"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|p| p["podRef"]["name"] == format!("net-{NODE}").as_str())
            })
            .context("the CNI pod in the summary")?;
        assert_eq!(p["network"]["name"], "eth0", "{}", p["network"]);
        assert!(p["network"]["txBytes"].as_u64().is_some_and(|b| b > 0));
        assert!(
            s["node"]["network"]["interfaces"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
        );
    }

    // /metrics: the process collector.
    let m = get(ro, "/metrics")?;
    let start = sample(&m, "process_start_time_seconds", &[]).context("start time")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    assert!(
        start >= started - 1.0 && start <= now,
        "{started} <= {start} <= {now}"
    );
    assert!(sample(&m, "process_resident_memory_bytes", &[]).is_some_and(|n| n > 1e6));
    assert!(sample(&m, "process_virtual_memory_bytes", &[]).is_some_and(|n| n > 1e6));
    assert!(sample(&m, "process_cpu_seconds_total", &[]).is_some_and(|n| n > 0.0));
    let fds = sample(&m, "process_open_fds", &[]).context("open fds")?;
    let max = sample(&m, "process_max_fds", &[]).context("max fds")?;
    assert!(fds >= 3.0 && max >= fds, "{fds} of {max}");
    assert!(m.contains("# TYPE process_virtual_memory_max_bytes gauge"));
    let took = sample(&m, "nodelet_cgroup_details_sweep_seconds", &[]).context("sweep time")?;
    let read = sample(&m, "nodelet_cgroup_details_cgroups", &[]).context("sweep size")?;
    println!(
        "cgroup details sweep: {read} cgroups in {:.3} ms",
        took * 1e3
    );
    promtool_check("/metrics", &m, LINT_ALLOWED)?;

    // /stats/summary.
    let s: Value = serde_json::from_str(&node.wait("summary with runtime fs", T, || {
        let t = get(ro, "/stats/summary")?;
        let v: Value = serde_json::from_str(&t)?;
        // containerd counts snapshot usage on its own 10 s timer: 0 until its first pass.
        let used = v["node"]["runtime"]["imageFs"]["usedBytes"].as_u64();
        Ok(used.is_some_and(|b| b > 0).then_some(t))
    })?)?;
    let n = &s["node"];
    let (usage, ws) = (&n["memory"]["usageBytes"], &n["memory"]["workingSetBytes"]);
    assert!(
        ws.as_u64().is_some_and(|w| w > 0) && usage.as_u64() >= ws.as_u64(),
        "node memory {}",
        n["memory"]
    );
    assert!(n["rlimit"]["maxpid"].as_u64().is_some_and(|p| p > 0));
    assert!(n["rlimit"]["curproc"].as_u64().is_some_and(|p| p > 0));
    let img = &n["runtime"]["imageFs"];
    assert!(img["usedBytes"].as_u64().is_some_and(|b| b > 0), "{img}");
    assert!(
        img["capacityBytes"].as_u64() >= img["usedBytes"].as_u64(),
        "{img}"
    );
    assert!(n["runtime"]["containerFs"].is_object());
    let names: Vec<&str> = n["systemContainers"]
        .as_array()
        .context("systemContainers")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    println!("system containers: {names:?}");
    for c in n["systemContainers"].as_array().into_iter().flatten() {
        // What a system container's cgroups hold is reported, and real; the rest left out.
        if c["cpu"].is_object() {
            assert!(c["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0), "{c}");
        }
        assert!(c["memory"]["workingSetBytes"].as_u64() > Some(0), "{c}");
    }
    assert!(names.contains(&"pods"), "{names:?}");
    // The agent and containerd of this test run in a non-root cgroup of the test runner.
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    if own
        .lines()
        .any(|l| l.contains(":memory:") && !l.ends_with(":/"))
    {
        assert!(
            names.contains(&"kubelet") && names.contains(&"runtime"),
            "{names:?}"
        );
    }
    let mut all = Vec::new();
    times(&s, "", &mut all);
    assert!(all.len() > 10, "{all:?}");
    for (path, t) in &all {
        assert!(is_metav1_time(t), "{path} = {t}");
    }
    Ok(())
}
