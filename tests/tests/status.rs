//! Pod status from first sight (issue 10): a pod is listed by /pods from the moment its
//! manifest is read, Pending with the waiting reason of where its sync stands, and the pod
//! start duration is timed from that first sight, not from the first finished sync.

use anyhow::{Context, Result};
use nodelet_tests::{Node, NodeOpts, free_port};
use nodelet_tests::{listed_pod, read_only_get};
use serde_json::Value;

use std::net::TcpListener;
use std::time::{Duration, SystemTime};

const T: Duration = Duration::from_secs(60);

fn waiting_reason(pod: &Value) -> Option<String> {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .map(str::to_owned)
}

fn image_pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: Always\n"
    )
}

#[test]
fn a_pod_stuck_pulling_is_listed_pending_and_a_failed_pull_says_why() -> Result<()> {
    // A "registry" that accepts connections and never answers: the pull hangs.
    let hang = TcpListener::bind("127.0.0.1:0")?;
    let hang_port = hang.local_addr()?.port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in hang.incoming().take(8).flatten() {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(120));
    });
    // A registry port nobody listens on: the pull fails at once.
    let refused_port = free_port()?;
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    node.write_manifest(
        "hang.yaml",
        &image_pod("hang", &format!("127.0.0.1:{hang_port}/hang:1")),
    )?;
    node.write_manifest(
        "refused.yaml",
        &image_pod("refused", &format!("127.0.0.1:{refused_port}/gone:1")),
    )?;

    let pod = node.wait("/pods to list the pod whose pull hangs", T, || {
        listed_pod(ro, "hang")
    })?;
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    assert_eq!(
        waiting_reason(&pod).as_deref(),
        Some("ContainerCreating"),
        "{pod:#}"
    );
    assert!(
        pod["status"]["startTime"].is_string(),
        "startTime from first sight: {pod:#}"
    );

    let reason = node.wait("the failed pull to show in /pods", T, || {
        Ok(listed_pod(ro, "refused")?
            .and_then(|p| waiting_reason(&p))
            .filter(|r| r == "ErrImagePull" || r == "ImagePullBackOff"))
    })?;
    assert!(reason == "ErrImagePull" || reason == "ImagePullBackOff");
    // Still pulling, still listed.
    let pod = listed_pod(ro, "hang")?.context("the hanging pod vanished from /pods")?;
    assert_eq!(pod["status"]["phase"], "Pending");
    drop(node);
    drop(held);
    Ok(())
}

/// The histogram's `_sum` and `_count` for kubelet_pod_start_duration_seconds.
fn pod_start_metric(port: u16) -> Result<(f64, u64)> {
    let text = read_only_get(port, "/metrics")?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Ok((
        value("kubelet_pod_start_duration_seconds_sum").unwrap_or(0.0),
        value("kubelet_pod_start_duration_seconds_count").unwrap_or(0.0) as u64,
    ))
}

fn ns_time(ns: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

#[test]
fn pod_start_duration_is_timed_from_first_sight() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    node.write_manifest(
        "start.yaml",
        &nodelet_tests::host_pod("start", "Always", "sleep 3600"),
    )?;
    let c = node.wait("the container to run", T, || {
        Ok(node
            .pod_containers("start")?
            .into_iter()
            .find(|c| c.state == nodelet_tests::running()))
    })?;
    let (sum, count) = node.wait("the pod start to be observed", T, || {
        let (sum, count) = pod_start_metric(ro)?;
        Ok((count >= 1).then_some((sum, count)))
    })?;
    assert_eq!(count, 1, "one pod started");
    // The clock started before the sandbox was created and stopped after the container ran:
    // it covers at least that span of the runtime's own timestamps (a causal bound, not a
    // timing measurement).
    let sandbox = node
        .pod_sandboxes("start")?
        .into_iter()
        .next()
        .context("no sandbox")?;
    let started = node.container_status(&c.id)?.started_at;
    let span = ns_time(started)
        .duration_since(ns_time(sandbox.created_at))
        .unwrap_or_default();
    assert!(
        sum >= span.as_secs_f64(),
        "pod start {sum:.3}s must cover sandbox creation to container start ({:.3}s)",
        span.as_secs_f64()
    );
    Ok(())
}

/// A counter's value in a /metrics text.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[test]
fn an_oom_kill_reaches_the_pod_status_and_the_restart_logic() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    // 100 MiB through `tail -c` against a 20 MiB limit: the kernel kills the container's main
    // process, the eBPF record goes on the bus, PLEG relists at once.
    node.write_manifest(
        "oom.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: oom\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Always\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
         command: [\"sh\", \"-c\", \"head -c 104857600 /dev/zero | tail -c 104857600\"]\n    \
         resources:\n      limits:\n        memory: 20Mi\n",
    )?;
    let pod = node.wait("/pods to show the OOM kill as the last state", T, || {
        Ok(listed_pod(ro, "oom")?.filter(|p| {
            p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] == "OOMKilled"
        }))
    })?;
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "{pod:#}");
    assert!(c["restartCount"].as_i64() >= Some(1), "restarted: {pod:#}");
    // The first kill can come before the eBPF programs are attached (their load takes up to
    // ~0.7 s on a busy machine; the periodic relist then reports it), so wait for a later one:
    // the pod keeps being OOM-killed under restartPolicy Always.
    node.wait("an OOM record on the bus to make PLEG relist", T, || {
        let metrics = read_only_get(ro, "/metrics")?;
        Ok((counter(&metrics, "nodelet_pleg_oom_relists_total") >= 1.0).then_some(()))
    })?;
    Ok(())
}
