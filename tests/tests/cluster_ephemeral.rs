//! Ephemeral containers (issue 14) on a real control plane: `kubectl debug` adds one to a
//! running pod through its `ephemeralcontainers` subresource, and the agent
//! - starts it in the pod's sandbox, in the PID namespace of its `--target` container (its `ps`
//!   shows the target's process);
//! - reports it in `status.ephemeralContainerStatuses` (running, image, imageID, containerID)
//!   with the kubelet's events about `spec.ephemeralContainers{debugger}`;
//! - serves `kubectl exec` and `kubectl logs` on it;
//! - never restarts it: once it exits it stays terminated, and the pod keeps running.
//!
//! Skips when the control plane or containerd cannot be had, fails instead under
//! `NODELET_REQUIRE_ALL=1`.

use anyhow::{Result, ensure};
use nodelet_tests::cluster::{self as kit, kubectl_apply, kubectl_json, pod_yaml};
use nodelet_tests::{NodeOpts, free_port};
use serde_json::Value;
use std::time::Duration;

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);

fn ephemeral_status(pod: &Value) -> Option<Value> {
    pod["status"]["ephemeralContainerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "debugger")
        .cloned()
}

#[test]
fn kubectl_debug_runs_an_ephemeral_container_once() -> Result<()> {
    // Served on the node's address, where the apiserver calls it for exec and logs; whoever
    // reaches it may (authn/authz are cluster_kubectl's subject).
    let ip = xtask::host_ip()?;
    let port = free_port()?;
    let opts = NodeOpts {
        extra_config: format!(
            "address: {ip}\nport: {port}\nhealthzPort: 0\nreadOnlyPort: 0\n\
             authentication:\n  anonymous:\n    enabled: true\n  webhook:\n    enabled: false\n\
             authorization:\n  mode: AlwaysAllow\n"
        ),
        ..Default::default()
    };
    let Some(mut cn) = kit::node_and_cluster("nodelet-cluster-ephemeral-", opts)? else {
        return Ok(());
    };
    cn.join(&[&format!("--node-ip={ip}")])?;
    cn.wait_ready(T)?;
    let c = &cn.cluster;
    kubectl_apply(
        c,
        &pod_yaml(
            "eph",
            "busybox:1.35",
            "Always",
            1,
            "trap 'exit 0' TERM; sleep 3600 & wait",
        ),
    )?;
    cn.node.wait("pod eph running", T, || {
        let p = kubectl_json(c, &["get", "pod", "eph", "-n", "default"])?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })?;

    c.kubectl(&[
        "debug",
        "-n",
        "default",
        "eph",
        "--image=busybox:1.35",
        "--image-pull-policy=IfNotPresent",
        "-c",
        "debugger",
        "--target=c",
        "--",
        "sh",
        "-c",
        "echo polo; sleep 15; echo done",
    ])?;
    let st = cn.node.wait("debugger running", T, || {
        let p = kubectl_json(c, &["get", "pod", "eph", "-n", "default"])?;
        Ok(ephemeral_status(&p).filter(|s| !s["state"]["running"].is_null()))
    })?;
    ensure!(
        st["image"] == "busybox:1.35"
            && st["imageID"].as_str().is_some_and(|s| !s.is_empty())
            && st["containerID"]
                .as_str()
                .is_some_and(|s| s.starts_with("containerd://"))
            && st["ready"] == false
            && st["restartCount"] == 0,
        "ephemeral status {st}"
    );

    // Exec while it sleeps: it sees the target's processes (targetContainerName).
    let ps = c.kubectl(&["exec", "-n", "default", "eph", "-c", "debugger", "--", "ps"])?;
    ensure!(
        ps.contains("sleep 3600"),
        "the debugger does not share c's PID namespace:\n{ps}"
    );

    let st = cn.node.wait("debugger terminated", T, || {
        let p = kubectl_json(c, &["get", "pod", "eph", "-n", "default"])?;
        Ok(ephemeral_status(&p).filter(|s| !s["state"]["terminated"].is_null()))
    })?;
    ensure!(
        st["state"]["terminated"]["exitCode"] == 0,
        "ephemeral status {st}"
    );
    let logs = c.kubectl(&["logs", "-n", "default", "eph", "-c", "debugger"])?;
    ensure!(
        logs.contains("polo") && logs.contains("done"),
        "logs: {logs}"
    );

    // Never restarted; the pod runs on.
    std::thread::sleep(Duration::from_secs(5));
    let p = kubectl_json(c, &["get", "pod", "eph", "-n", "default"])?;
    let st = ephemeral_status(&p).unwrap_or_default();
    ensure!(
        !st["state"]["terminated"].is_null() && st["restartCount"] == 0,
        "the ephemeral container was restarted: {st}"
    );
    ensure!(
        p["status"]["phase"] == "Running",
        "pod phase {}",
        p["status"]["phase"]
    );

    let evs = kubectl_json(c, &["get", "events", "-n", "default"])?;
    let started = evs["items"].as_array().into_iter().flatten().any(|e| {
        e["involvedObject"]["name"] == "eph"
            && e["reason"] == "Started"
            && e["involvedObject"]["fieldPath"] == "spec.ephemeralContainers{debugger}"
    });
    ensure!(
        started,
        "no Started event about spec.ephemeralContainers{{debugger}}"
    );
    Ok(())
}
