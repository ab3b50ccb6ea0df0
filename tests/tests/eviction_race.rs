//! The race (issue 12) on real containerd, runc, cgroups and eBPF: node allocatable is
//! enforced with reservations that leave the pods cgroup (`<cgroupRoot>/kubepods`) about
//! 512 MiB, and a hard `allocatableMemory.available` threshold of 100 MiB. A BestEffort pod
//! ramps its memory at a fixed rate (100 and 400 MiB/s here; the benchmark covers more); nodelet
//! must evict it (phase Failed, reason Evicted) before the kernel's OOM killer fires inside
//! kubepods: no OOM record (the eBPF mark_victim record, logged as "OOM-killed by the kernel")
//! names a pod of this node, and the Guaranteed pod beside it keeps running, never restarted.
//!
//! Also checked: the agent created kubepods, burstable and besteffort with the kubelet's
//! limits (memory = capacity - kubeReserved - systemReserved, besteffort cpu.shares 2).
//!
//! `NODELET_EVICT_STATIC_PODS=1` for the reason given in eviction.rs (standalone: every pod is
//! static, which the kubelet never evicts). No timing is asserted; each run prints how far the
//! pods cgroup got before the eviction.

use anyhow::{Context, Result};
use nodelet_tests::{Node, NodeOpts};
use nodelet_tests::{listed_pod, read_only_get};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);
const MI: i64 = 1 << 20;
/// What the pods cgroup is left with.
const PODS_MI: i64 = 512;
/// kubeReserved memory; systemReserved takes the rest of the machine.
const KUBE_RESERVED_MI: i64 = 256;
/// How much the ramping pod asks for in all: well past the pods cgroup's limit.
const RAMP_TOTAL_MI: i64 = 1024;
/// Chunks are added every tenth of a second.
const STEP_S: f64 = 0.1;

fn mem_total_ki() -> Result<i64> {
    std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("MemTotal in /proc/meminfo")
}

/// The pods cgroup's directory in the memory hierarchy (v1) or the unified tree (v2).
fn kubepods_memory_dir(root: &str) -> PathBuf {
    let rel = format!("{}/kubepods", root.trim_matches('/'));
    let v1 = Path::new("/sys/fs/cgroup/memory").join(&rel);
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        v1
    } else {
        Path::new("/sys/fs/cgroup").join(rel)
    }
}

fn read_i64(p: &Path) -> Option<i64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// OOM records the agent logged for pods of this node, mapped or not (a record for a cgroup
/// already gone still names its path under this node's cgroup root).
fn oom_lines(log: &str, cgroup_root: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("OOM-killed by the kernel")
                && (l.contains(nodelet_tests::NODE) || l.contains(cgroup_root))
        })
        .map(str::to_owned)
        .collect()
}

fn pressure_lines(log: &str, status: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("node condition changed")
                && l.contains("MemoryPressure")
                && l.contains(&format!("status=\"{status}\""))
        })
        .count()
}

/// A BestEffort pod whose shell adds `rate/10` MiB every 0.1 s (each chunk held by a `tail`
/// that is never read from), after a 2 s pause so that the agent has mapped its cgroup. It
/// stops growing on SIGTERM, as a program that honours its graceful stop does: a hard eviction
/// kills with the kubelet's 1 s grace period (immediateEvictionGracePeriodSeconds), and a shell
/// as PID 1 ignores SIGTERM, so without the trap it would grow `rate` x 1 s more after the
/// decision, past a 100 MiB threshold at 100 MiB/s whatever the agent does (seen here).
fn ramp_manifest(name: &str, rate_mi: i64) -> String {
    let chunk = rate_mi * MI / 10;
    let n = RAMP_TOTAL_MI * MI / chunk;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Never\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    \
         image: busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 2; i=0; while [ $i -lt {n} ]; do \
         head -c {chunk} /dev/zero | tail -c {chunk} | sleep 3600 & sleep {STEP_S}; i=$((i+1)); done; \
         sleep 3600\"]\n"
    )
}

#[test]
fn nodelet_evicts_a_ramping_pod_before_the_kernel_oom_killer_fires_in_kubepods() -> Result<()> {
    let total_ki = mem_total_ki()?;
    let system_ki = total_ki - (PODS_MI + KUBE_RESERVED_MI) * 1024;
    anyhow::ensure!(
        system_ki > 0,
        "this machine has less than {} MiB",
        PODS_MI + KUBE_RESERVED_MI
    );
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts {
        extra_config: format!(
            "kubeReserved:\n  memory: {KUBE_RESERVED_MI}Mi\n  cpu: 100m\n\
             systemReserved:\n  memory: {system_ki}Ki\n\
             evictionHard:\n  allocatableMemory.available: 100Mi\n\
             evictionPressureTransitionPeriod: 2s\n"
        ),
        env: vec![("NODELET_EVICT_STATIC_PODS".into(), "1".into())],
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    let dir = kubepods_memory_dir(&node.cgroup_root);
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    let limit_file = dir.join(if v1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    });
    let limit = node.wait("the pods cgroup to be limited", T, || {
        Ok(read_i64(&limit_file).filter(|l| *l < total_ki * 1024))
    })?;
    assert_eq!(limit, PODS_MI * MI, "kubepods memory limit");
    let be = if v1 {
        Path::new("/sys/fs/cgroup/cpu")
            .join(node.cgroup_root.trim_matches('/'))
            .join("kubepods/besteffort/cpu.shares")
    } else {
        dir.join("besteffort/cpu.weight")
    };
    assert_eq!(
        read_i64(&be),
        Some(if v1 { 2 } else { 1 }),
        "besteffort cpu share"
    );
    assert!(dir.join("burstable").is_dir(), "burstable QoS cgroup");

    node.write_manifest(
        "guaranteed.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: guaranteed\nspec:\n  hostNetwork: true\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
         command: [\"sleep\", \"3600\"]\n    resources:\n      limits:\n        cpu: 100m\n        \
         memory: 64Mi\n",
    )?;
    node.wait("the Guaranteed pod to run", T, || {
        Ok(listed_pod(ro, "guaranteed")?.filter(|p| p["status"]["phase"] == "Running"))
    })?;

    for rate in [100, 400] {
        let name = format!("ramp{rate}");
        let cleared = pressure_lines(&node.agent_log(), "False");
        let written = Instant::now();
        node.write_manifest(&format!("{name}.yaml"), &ramp_manifest(&name, rate))?;
        let pod = node.wait(&format!("the {rate} MiB/s pod to be evicted"), T, || {
            Ok(listed_pod(ro, &name)?.filter(|p| p["status"]["phase"] == "Failed"))
        })?;
        println!(
            "{rate} MiB/s: evicted {:.1}s after the manifest was written; kubepods peak {} MiB of {} MiB",
            written.elapsed().as_secs_f64(),
            read_i64(&dir.join(if v1 {
                "memory.max_usage_in_bytes"
            } else {
                "memory.peak"
            }))
            .unwrap_or(-1)
                / MI,
            PODS_MI
        );
        assert_eq!(pod["status"]["reason"], "Evicted", "{pod:#}");
        let message = pod["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi"),
            "{message}"
        );
        let ooms = oom_lines(&node.agent_log(), &node.cgroup_root);
        assert!(
            ooms.is_empty(),
            "the kernel OOM killer fired before the eviction:\n{}",
            ooms.join("\n")
        );
        let g = listed_pod(ro, "guaranteed")?.context("the Guaranteed pod vanished")?;
        assert_eq!(g["status"]["phase"], "Running", "{g:#}");
        assert_eq!(
            g["status"]["containerStatuses"][0]["restartCount"], 0,
            "{g:#}"
        );
        // The next ramp is admitted only once MemoryPressure has cleared (BestEffort pods are
        // refused under it), after the short transition period.
        node.remove_manifest(&format!("{name}.yaml"))?;
        node.wait("MemoryPressure to clear", T, || {
            Ok((pressure_lines(&node.agent_log(), "False") > cleared).then_some(()))
        })?;
        node.wait("the evicted pod to be gone", T, || {
            Ok(listed_pod(ro, &name)?.is_none().then_some(()))
        })?;
    }
    let metrics = read_only_get(ro, "/metrics")?;
    for l in metrics.lines().filter(|l| {
        l.starts_with("kubelet_evictions{")
            || l.starts_with("nodelet_eviction_mark_to_decision_seconds_sum")
            || l.starts_with("nodelet_eviction_mark_to_decision_seconds_count")
    }) {
        println!("{l}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "kubelet_evictions{eviction_signal=\"allocatableMemory.available\"} 2"),
        "two evictions on allocatableMemory.available"
    );
    Ok(())
}
