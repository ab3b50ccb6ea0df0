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
//! pods cgroup got before the eviction. The set-up (config, pods) is `xtask::race`, shared with
//! `cargo xtask bench eviction`, which measures the race at more rates and against baselines.

use anyhow::{Context, Result};
use nodelet_tests::{Node, NodeOpts};
use nodelet_tests::{listed_pod, read_only_get};
use xtask::race::{
    GUARANTEED_MANIFEST, MI, PODS_MI, config_lines, kubepods_memory_dir, mem_total_ki,
    pressure_lines, ramp_manifest,
};

use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

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

#[test]
fn nodelet_evicts_a_ramping_pod_before_the_kernel_oom_killer_fires_in_kubepods() -> Result<()> {
    let total_ki = mem_total_ki()?;
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts {
        extra_config: config_lines()?,
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

    node.write_manifest("guaranteed.yaml", GUARANTEED_MANIFEST)?;
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
