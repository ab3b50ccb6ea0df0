//! Kubernetes Events from the agent (issue 11), as `kubectl get events` shows them on a real
//! control plane:
//! - a pod that runs: Scheduled (from the scheduler), then the kubelet's Pulled, Created and
//!   Started, about container `c` (`spec.containers{c}`), source kubelet on this node;
//! - a pod whose image does not exist: Failed (the pull, `Error: ErrImagePull`), counted up on
//!   one Event object as it repeats, not one object per attempt;
//! - a crash-looping pod: BackOff `Back-off restarting failed container c in pod ...`, counted
//!   up on one object;
//! - the node: Starting, NodeReady and the pressure conditions from the agent, RegisteredNode
//!   from the node controller;
//! - `kubectl delete` of the running pod: Killing `Stopping container c`;
//! - no two Event objects from the agent describe the same event (the dedup works).
//!
//! Skips when the control plane or containerd cannot be had, fails instead under
//! `NODELET_REQUIRE_ALL=1`. No timing is asserted; how long the counts took is printed.

use anyhow::{Result, ensure};
use nodelet_tests::NODE;
use nodelet_tests::cluster::{self as kit, kubectl_apply, kubectl_json, pod_yaml};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use xtask::cluster::Cluster;

/// Ceiling for "it happened" waits (crash-loop back-off doubles from 10 s).
const T: Duration = Duration::from_secs(180);

/// Every Event in `default` (pods' and the Node's).
fn events(c: &Cluster) -> Result<Vec<Value>> {
    let list = kubectl_json(c, &["get", "events", "-n", "default"])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Events about the object named `name`, with `reason`.
fn about<'a>(evs: &'a [Value], name: &str, reason: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .collect()
}

fn count(e: &Value) -> i64 {
    e["count"].as_i64().unwrap_or(1)
}

/// The first event about `name` with `reason` from the kubelet with at least `min` count.
fn wait_event(
    cn: &kit::ClusterNode,
    name: &str,
    reason: &str,
    min: i64,
    message: impl Fn(&str) -> bool,
) -> Result<Value> {
    let started = Instant::now();
    let e = cn
        .node
        .wait(&format!("event {reason} x{min} about {name}"), T, || {
            let evs = events(&cn.cluster)?;
            Ok(about(&evs, name, reason)
                .into_iter()
                .find(|e| count(e) >= min && message(e["message"].as_str().unwrap_or("")))
                .cloned())
        });
    let e = e.map_err(|err| {
        let seen: Vec<String> = events(&cn.cluster)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["involvedObject"]["name"] == name)
            .map(|e| format!("{} x{} {}", e["reason"], count(e), e["message"]))
            .collect();
        err.context(format!("events about {name}:\n{}", seen.join("\n")))
    })?;
    eprintln!(
        "cluster_events: {reason} x{min} about {name} after {:.1} s (information, not a limit)",
        started.elapsed().as_secs_f64()
    );
    Ok(e)
}

#[test]
fn kubelet_events_reach_the_api_counted_and_deduplicated() -> Result<()> {
    let Some(cn) = kit::start_or_skip("nodelet-cluster-events-", T)? else {
        return Ok(());
    };
    let c = &cn.cluster;
    kubectl_apply(
        c,
        &pod_yaml(
            "good",
            "busybox:1.35",
            "Always",
            30,
            "trap 'exit 0' TERM; sleep 3600 & wait",
        ),
    )?;
    kubectl_apply(
        c,
        // Nothing listens on port 1: the pull fails at once, without reaching outside.
        &pod_yaml("noimage", "127.0.0.1:1/missing:1", "Always", 2, "true"),
    )?;
    kubectl_apply(c, &pod_yaml("crash", "busybox:1.35", "Always", 2, "exit 1"))?;

    // The running pod: the scheduler's event and the kubelet's, about container c.
    wait_event(&cn, "good", "Scheduled", 1, |_| true)?;
    for (reason, msg) in [
        ("Pulled", "busybox:1.35"),
        ("Created", "Container created"),
        ("Started", "Container started"),
    ] {
        let e = wait_event(&cn, "good", reason, 1, |m| m.contains(msg))?;
        ensure!(
            e["involvedObject"]["fieldPath"] == "spec.containers{c}"
                && e["involvedObject"]["kind"] == "Pod"
                && e["involvedObject"]["uid"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
            "{reason}: involvedObject {}",
            e["involvedObject"]
        );
        ensure!(
            e["source"]["component"] == "kubelet"
                && e["source"]["host"] == NODE
                && e["reportingComponent"] == "kubelet"
                && e["reportingInstance"] == NODE
                && e["type"] == "Normal",
            "{reason}: source {} reporting {} {} type {}",
            e["source"],
            e["reportingComponent"],
            e["reportingInstance"],
            e["type"]
        );
    }

    // Repeats are counted on one object.
    let failed = wait_event(&cn, "noimage", "Failed", 2, |_| true)?;
    ensure!(failed["type"] == "Warning", "pull failure: {failed}");
    let backoff = wait_event(&cn, "crash", "BackOff", 2, |m| {
        m.starts_with("Back-off restarting failed container c in pod crash_default(")
    })?;
    ensure!(
        backoff["type"] == "Warning"
            && backoff["involvedObject"]["fieldPath"] == "spec.containers{c}",
        "crash loop: {backoff}"
    );
    ensure!(
        backoff["firstTimestamp"] != backoff["lastTimestamp"],
        "a counted event keeps its first timestamp: {backoff}"
    );

    // The node's events: the agent's own, and the node controller's registration.
    for (reason, component) in [
        ("Starting", "kubelet"),
        ("NodeReady", "kubelet"),
        ("NodeHasSufficientMemory", "kubelet"),
        ("RegisteredNode", "node-controller"),
    ] {
        let e = wait_event(&cn, NODE, reason, 1, |_| true)?;
        ensure!(
            e["involvedObject"]["kind"] == "Node" && e["source"]["component"] == component,
            "{reason}: {e}"
        );
    }

    // Delete: the agent stops the container and says so.
    c.kubectl(&["delete", "pod", "good", "--wait=false"])?;
    let e = wait_event(&cn, "good", "Killing", 1, |m| m == "Stopping container c")?;
    ensure!(
        e["involvedObject"]["fieldPath"] == "spec.containers{c}",
        "Killing: {e}"
    );

    // Dedup: the agent never wrote two objects for one event.
    let evs = events(c)?;
    let mut seen: HashMap<String, &str> = HashMap::new();
    for e in evs.iter().filter(|e| e["source"]["component"] == "kubelet") {
        let o = &e["involvedObject"];
        let key = format!(
            "{}/{}/{}/{}/{}/{}",
            o["kind"], o["name"], o["uid"], o["fieldPath"], e["reason"], e["message"]
        );
        let name = e["metadata"]["name"].as_str().unwrap_or("");
        if let Some(other) = seen.insert(key.clone(), name) {
            anyhow::bail!("two Event objects ({other}, {name}) for one event: {key}");
        }
    }
    let (objects, total): (usize, i64) = evs
        .iter()
        .filter(|e| e["source"]["component"] == "kubelet")
        .fold((0, 0), |(n, t), e| (n + 1, t + count(e)));
    eprintln!(
        "cluster_events: {objects} Event objects from the agent carry {total} occurrences (information)"
    );
    for e in evs.iter().filter(|e| e["source"]["component"] == "kubelet") {
        eprintln!(
            "  {} {}/{} {} x{}: {}",
            e["type"].as_str().unwrap_or(""),
            e["involvedObject"]["kind"].as_str().unwrap_or(""),
            e["involvedObject"]["name"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            count(e),
            e["message"].as_str().unwrap_or("")
        );
    }
    let log = cn.node.agent_log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("event") && (l.contains("rejected") || l.contains("unable to write"))
        })
        .collect();
    ensure!(
        refused.is_empty(),
        "the API server refused events:\n{}",
        refused.join("\n")
    );
    Ok(())
}
