//! emptyDir volumes as the kubelet sets them up (issue 14), on the real nodelet and containerd,
//! with static pods (no control plane needed):
//! - `medium: Memory` is a tmpfs (mode 1777) sized by the pod's memory limit, or by
//!   `sizeLimit` when smaller (`df` shows 10240 KiB for 10Mi, what the upstream test reads);
//! - a disk emptyDir is mode 0777; with an fsGroup both are group-owned by it with the setgid
//!   bit, the container runs with the fsGroup as a supplemental group, a non-root container
//!   writes there and its files get the group; a missing subPath is made with the volume's mode;
//! - removing the pod unmounts the tmpfs;
//! - a pod writing past its emptyDir's `sizeLimit` is evicted with the kubelet's message
//!   (localStorageEviction).
//!
//! Judged from the container log and the read-only API; no timing asserted. Skips without
//! containerd or the agent binary; fails instead under NODELET_REQUIRE_ALL=1.

use anyhow::{Context, Result, ensure};
use nodelet_tests::{Node, NodeOpts, free_port, listed_pod};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: ed}
spec:
  hostNetwork: true
  restartPolicy: Never
  securityContext: {runAsUser: 1001, fsGroup: 123}
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "echo mem=$(stat -c %a:%g /mem) type=$(awk '$2==\"/mem\"{print $3}' /proc/mounts) memkb=$(df -k /mem | tail -1 | awk '{print $2}') sized=$(df -k /sized | tail -1 | awk '{print $2}'); echo disk=$(stat -c %a:%g /disk) sub=$(stat -c %a:%g /sub); touch /disk/f /mem/f && echo wrote=$(stat -c %g /disk/f):$(stat -c %g /mem/f); echo groups=$(id -G); echo done"]
    resources: {limits: {memory: 64Mi}}
    volumeMounts:
    - {name: mem, mountPath: /mem}
    - {name: sized, mountPath: /sized}
    - {name: disk, mountPath: /disk}
    - {name: disk, mountPath: /sub, subPath: a/b}
  volumes:
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: sized, emptyDir: {medium: Memory, sizeLimit: 10Mi}}
  - {name: disk, emptyDir: {}}
"#;

#[test]
fn empty_dirs_have_the_kubelets_modes_sizes_and_fs_group() -> Result<()> {
    let Some(node) = Node::start(NodeOpts::default())? else {
        return Ok(());
    };
    node.write_manifest("ed.yaml", POD)?;
    let log = node.wait("pod ed to print its emptyDirs", T, || {
        Ok(node
            .container_log("default", "ed", "c", 0)
            .filter(|l| l.contains("done")))
    })?;
    for want in [
        "mem=3777:123",
        "type=tmpfs",
        "memkb=65536",
        "sized=10240",
        "disk=2777:123",
        "sub=2777:123",
        "wrote=123:123",
    ] {
        ensure!(
            log.contains(want),
            "{want:?} missing from the pod's log:\n{log}"
        );
    }
    let groups = log
        .lines()
        .find_map(|l| l.split("groups=").nth(1))
        .unwrap_or_default();
    ensure!(
        groups.split_whitespace().any(|g| g == "123"),
        "the fsGroup is not a group of the container: {log}"
    );
    ensure!(volume_mounts_under(&node.root)?, "no tmpfs under the root");
    node.remove_manifest("ed.yaml")?;
    node.wait("the pod's tmpfs emptyDirs to be unmounted", T, || {
        Ok((!volume_mounts_under(&node.root)?).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_pod_over_its_empty_dir_size_limit_is_evicted() -> Result<()> {
    let ro = free_port()?;
    let Some(node) = Node::start(NodeOpts {
        extra_config: format!(
            "readOnlyPort: {ro}\nport: {}\nhealthzPort: 0\naddress: 127.0.0.1\n",
            free_port()?
        ),
        // Standalone, every pod is static, and the kubelet never evicts static pods.
        env: vec![("NODELET_EVICT_STATIC_PODS".into(), "1".into())],
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    node.write_manifest(
        "filler.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: filler}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    \
         image: busybox:1.35\n    command: [\"sh\", \"-c\", \"dd if=/dev/zero of=/data/f bs=1M count=4; sync; sleep 3600\"]\n    \
         volumeMounts: [{name: data, mountPath: /data}]\n  volumes:\n  - {name: data, emptyDir: {sizeLimit: 1Mi}}\n",
    )?;
    let pod = node.wait("the filler to be evicted", T, || {
        Ok(listed_pod(ro, "filler")?.filter(|p| p["status"]["phase"] == "Failed"))
    })?;
    let status = &pod["status"];
    ensure!(status["reason"] == "Evicted", "{pod:#}");
    let message = status["message"].as_str().context("no message")?;
    ensure!(
        message.contains("Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\"."),
        "{message}"
    );
    Ok(())
}

/// Whether any volume of a pod under `root` is a mount point.
fn volume_mounts_under(root: &std::path::Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", root.display());
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| p.starts_with(&prefix) && p.contains("/volumes/kubernetes.io~")))
}
