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

/// Waits for the agent to say eBPF feeds its telemetry, so that the kernel's first OOM record
/// reaches it (the programs take up to ~0.7 s to load on a busy machine).
fn wait_for_ebpf(node: &Node) -> Result<()> {
    node.wait("eBPF telemetry in use", T, || {
        Ok(node
            .agent_log()
            .lines()
            .any(|l| l.contains("telemetry source in use") && l.contains("ebpf"))
            .then_some(()))
    })
}

fn oom_pod(name: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Always\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
         command: [\"sh\", \"-c\", \"{script}\"]\n    \
         resources:\n      limits:\n        memory: 20Mi\n"
    )
}

/// Every terminated state (current or last) /pods shows, by container id: its finishedAt.
fn finished_at_by_id(pod: &Value) -> Vec<(String, String)> {
    let c = &pod["status"]["containerStatuses"][0];
    [&c["state"]["terminated"], &c["lastState"]["terminated"]]
        .into_iter()
        .filter_map(|t| {
            Some((
                t["containerID"].as_str()?.to_owned(),
                t["finishedAt"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn an_oom_kill_of_the_main_process_reaches_the_pod_status_and_the_restart_logic() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    wait_for_ebpf(&node)?;
    // `tail -c` of an endless stream holds 100 MiB against a 20 MiB limit: the kernel kills
    // the container's main process (its PID namespace's init), so the container is over.
    node.write_manifest(
        "oom.yaml",
        &oom_pod("oom", "exec tail -c 104857600 /dev/zero"),
    )?;
    let pod = node.wait("/pods to show the OOM kill as the last state", T, || {
        Ok(listed_pod(ro, "oom")?.filter(|p| {
            p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] == "OOMKilled"
        }))
    })?;
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "{pod:#}");
    assert!(c["restartCount"].as_i64() >= Some(1), "restarted: {pod:#}");
    // The kernel's record made the status, before the runtime had reaped the process.
    assert!(
        node.agent_log()
            .contains("OOM kill of the container's main process: reporting it terminated"),
        "the OOM record did not terminate the container"
    );
    assert!(
        node.agent_log().contains("OOMKilling"),
        "no OOMKilling event"
    );
    // What was reported from the record and what the runtime said later never disagree: a
    // container's finishedAt, once shown, stays (the pod keeps being killed and restarted).
    let mut shown: std::collections::HashMap<String, String> = Default::default();
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < until {
        if let Some(p) = listed_pod(ro, "oom")? {
            for (id, at) in finished_at_by_id(&p) {
                let first = shown.entry(id.clone()).or_insert_with(|| at.clone());
                assert_eq!(*first, at, "finishedAt of {id} changed: {p:#}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!shown.is_empty());
    node.wait("an OOM record on the bus to make PLEG relist", T, || {
        let metrics = read_only_get(ro, "/metrics")?;
        Ok((counter(&metrics, "nodelet_pleg_oom_relists_total") >= 1.0).then_some(()))
    })?;
    Ok(())
}

#[test]
fn an_oom_kill_of_another_process_is_an_event_and_the_container_survives() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    wait_for_ebpf(&node)?;
    // The pipeline's `tail` is the largest process and the kernel's victim; the shell, the
    // container's main process, goes on.
    node.write_manifest(
        "child.yaml",
        &oom_pod(
            "child",
            "head -c 104857600 /dev/zero | tail -c 104857600 >/dev/null; echo survived; sleep 3600",
        ),
    )?;
    node.wait("the kernel's OOM kill of the child process", T, || {
        Ok(node
            .agent_log()
            .lines()
            .any(|l| l.contains("OOMKilling") && l.contains("child"))
            .then_some(()))
    })?;
    node.wait("the shell to go on after the kill", T, || {
        Ok(node
            .container_log("default", "child", "c", 0)
            .filter(|l| l.contains("survived")))
    })?;
    // Past the OOM relists' follow-ups: still running, never restarted.
    std::thread::sleep(Duration::from_secs(2));
    let p = listed_pod(ro, "child")?.context("child pod gone")?;
    let c = &p["status"]["containerStatuses"][0];
    assert!(c["state"]["running"].is_object(), "not running: {p:#}");
    assert_eq!(c["restartCount"], 0, "{p:#}");
    assert!(c["lastState"]["terminated"].is_null(), "{p:#}");
    assert!(
        !node.agent_log().contains("reporting it terminated"),
        "a child's kill terminated the container"
    );
    Ok(())
}
