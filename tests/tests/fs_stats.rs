//! Filesystem use and block I/O on a real containerd (issue 13): a pod writes 8 MiB and 1000
//! small files into an emptyDir, 4 MiB into its writable layer and ~1 MiB to its log, and the
//! Summary API shows each in the right place (container `rootfs` and `logs`, pod `volume`,
//! `ephemeral-storage` as their sum) once the slow timer has run; /metrics/cadvisor carries
//! cAdvisor's `container_fs_*` and `container_blkio_device_usage_total` with its labels;
//! /metrics announces the kubelet's `kubelet_volume_stats_*` families with no sample (no
//! PVC-backed volume exists); both pass `promtool check metrics`.

use anyhow::{Context, Result};
use nodelet_tests::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The walk runs every 30 s and containerd measures layers every 10 s: allow a few rounds.
const T: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

fn get(port: u16, path: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()?;
    anyhow::ensure!(out.status.success(), "GET {path}: {:?}", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

/// Sample lines of `family` whose labels contain every one of `labels`.
fn lines<'a>(text: &'a str, family: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|r| r.starts_with('{')))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .collect()
}

fn value(line: &str) -> Option<f64> {
    line.split_once("} ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

const SCRIPT: &str = "dd if=/dev/zero of=/scratch/big bs=1M count=8 2>/dev/null; \
    dd if=/dev/zero of=/rootfs.bin bs=1M count=4 2>/dev/null; mkdir /scratch/many; \
    i=0; while [ $i -lt 1000 ]; do echo x > /scratch/many/f$i; i=$((i+1)); done; \
    l=$(printf '%01000d' 0); i=0; while [ $i -lt 1100 ]; do echo $l; i=$((i+1)); done; \
    sync; exec sleep 100000";

#[test]
fn summary_and_cadvisor_show_rootfs_logs_and_volume_use() -> Result<()> {
    for p in ["curl", "promtool"] {
        if !have(p) {
            skip(&format!("{p} is not installed"))?;
            return Ok(());
        }
    }
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
    node.write_manifest(
        "disk.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: disk\nspec:\n  hostNetwork: true\n  \
             terminationGracePeriodSeconds: 2\n  volumes:\n  - name: scratch\n    emptyDir: {{}}\n  \
             containers:\n  - name: c\n    image: busybox:1.35\n    volumeMounts:\n    \
             - {{name: scratch, mountPath: /scratch}}\n    command: [\"sh\", \"-c\", {SCRIPT:?}]\n"
        ),
    )?;
    let pod_name = format!("disk-{NODE}");
    let find_pod = |s: &Value| -> Option<Value> {
        s["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == pod_name.as_str())
            .cloned()
    };
    let used = |v: &Value| v["usedBytes"].as_u64().unwrap_or(0);
    let p = node.wait("rootfs, logs and volume use in the Summary", T, || {
        let s: Value = serde_json::from_str(&get(ro, "/stats/summary")?)?;
        let Some(p) = find_pod(&s) else {
            return Ok(None);
        };
        let c = &p["containers"][0];
        let vol = p["volume"].as_array().and_then(|v| v.first()).cloned();
        let ready = used(&c["rootfs"]) >= 4 * MIB
            && used(&c["logs"]) >= MIB
            && vol.is_some_and(|v| used(&v) >= 8 * MIB && v["inodesUsed"].as_u64() >= Some(1002));
        Ok(ready.then_some(p))
    })?;
    let c = &p["containers"][0];
    let vol = &p["volume"][0];
    println!(
        "rootfs {} logs {} volume {} ({} inodes) ephemeral {}",
        c["rootfs"], c["logs"], vol, vol["inodesUsed"], p["ephemeral-storage"]
    );
    assert_eq!(vol["name"], "scratch");
    assert!(vol.get("pvcRef").is_none(), "{vol}");
    // 8 MiB + 1000 one-block files (4 KiB each on ext4/xfs) + directories: within 5 MiB.
    assert!(used(vol) < 13 * MIB, "{vol}");
    assert!(
        used(&c["rootfs"]) < 5 * MIB,
        "4 MiB and a little metadata: {}",
        c["rootfs"]
    );
    assert!(used(&c["logs"]) < 2 * MIB, "{}", c["logs"]);
    for fs in [&c["rootfs"], &c["logs"], vol, &p["ephemeral-storage"]] {
        assert!(
            fs["capacityBytes"].as_u64() >= fs["availableBytes"].as_u64(),
            "{fs}"
        );
        assert!(fs["inodes"].as_u64() >= fs["inodesFree"].as_u64(), "{fs}");
        assert!(fs["time"].is_string(), "{fs}");
    }
    // As the kubelet sums it: rootfs + logs of each container, local volumes, pod logs.
    let eph = &p["ephemeral-storage"];
    assert_eq!(
        used(eph),
        used(&c["rootfs"]) + used(&c["logs"]) + used(vol),
        "{eph}"
    );

    // /metrics/cadvisor: the container's filesystem and I/O families with cAdvisor's labels.
    let pod = format!("pod=\"{pod_name}\"");
    let cl = [pod.as_str(), "container=\"c\"", "namespace=\"default\""];
    let cad = node.wait("container_fs_usage_bytes of the pod", T, || {
        let t = get(ro, "/metrics/cadvisor")?;
        let ok = lines(&t, "container_fs_usage_bytes", &cl)
            .first()
            .and_then(|l| value(l))
            .is_some_and(|v| v >= (5 * MIB) as f64);
        Ok(ok.then_some(t))
    })?;
    for f in [
        "container_fs_usage_bytes",
        "container_fs_limit_bytes",
        "container_fs_inodes_free",
        "container_fs_inodes_total",
    ] {
        let l = lines(&cad, f, &cl);
        let line = l.first().with_context(|| format!("{f} of the container"))?;
        for label in ["device=\"", "id=\"/", "image=\"", "name=\""] {
            assert!(line.contains(label), "{line}");
        }
        assert!(!line.contains("device=\"\""), "a named device: {line}");
        assert!(value(line).is_some_and(|v| v > 0.0), "{line}");
    }
    // Block I/O: the kernel's counters for the container's cgroup (v1 throttle counters on
    // 6.x kernels stay 0 without a limit; the unit test checks values on a throttled cgroup).
    for f in [
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
        "container_fs_reads_total",
        "container_fs_writes_total",
    ] {
        assert!(cad.contains(&format!("# TYPE {f} counter")), "{f}");
        if let Some(line) = lines(&cad, f, &cl).first() {
            assert!(line.contains("device=\"/dev/"), "{line}");
        }
    }
    assert!(cad.contains("# TYPE container_blkio_device_usage_total counter"));
    for line in lines(&cad, "container_blkio_device_usage_total", &cl) {
        for label in ["major=\"", "minor=\"", "operation=\""] {
            assert!(line.contains(label), "{line}");
        }
    }
    promtool_check("/metrics/cadvisor", &cad, LINT_ALLOWED)?;

    // /metrics: the kubelet's PVC volume families, announced and empty.
    let m = get(ro, "/metrics")?;
    for f in [
        "kubelet_volume_stats_capacity_bytes",
        "kubelet_volume_stats_available_bytes",
        "kubelet_volume_stats_used_bytes",
        "kubelet_volume_stats_inodes",
        "kubelet_volume_stats_inodes_free",
        "kubelet_volume_stats_inodes_used",
    ] {
        assert!(m.contains(&format!("# TYPE {f} gauge")), "{f}");
        assert!(
            !m.lines()
                .any(|l| l.starts_with(&format!("{f}{{")) || l.starts_with(&format!("{f} "))),
            "{f} has no sample without a PVC"
        );
    }
    promtool_check("/metrics", &m, LINT_ALLOWED)?;
    Ok(())
}
