//! Container lifecycle on a real containerd (issue 14): postStart and preStop hooks (exec,
//! httpGet, sleep), termination messages (file and FallbackToLogsOnError), activeDeadlineSeconds
//! and sidecar containers (init containers with restartPolicy Always), judged through the
//! read-only port's /pods, the containers' logs and files the hooks write.

use anyhow::{Context, Result};
use nodelet_tests::{Node, NodeOpts, listed_pod};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// A hostNetwork pod; `spec` is merged over the defaults (JSON is YAML too).
fn pod(name: &str, spec: Value) -> String {
    let mut s = json!({"hostNetwork": true, "terminationGracePeriodSeconds": 2});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s}).to_string()
}

/// The status of container `c` of pod `name` (`init`: among the init containers).
fn status_of(port: u16, name: &str, c: &str, init: bool) -> Result<Option<Value>> {
    let key = if init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    Ok(listed_pod(port, name)?.and_then(|p| {
        p["status"][key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == c)
            .cloned()
    }))
}

/// The grace the agent gave StopContainer for container `c`, from its log line.
fn stop_grace(log: &str, c: &str) -> Option<i64> {
    log.lines()
        .filter(|l| l.contains("killing container with a grace period"))
        .filter(|l| l.contains(&format!("container={c} ")))
        .filter_map(|l| {
            let rest = l.split(" grace=").nth(1)?;
            rest.split(|ch: char| !ch.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .next_back()
}

#[test]
fn post_start_hooks_run_after_start_and_a_failing_one_kills_the_container() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    // exec: the hook writes a file the container waits for.
    let exec = pod(
        "ps-exec",
        json!({"containers": [{
            "name": "c", "image": "busybox:1.35",
            "command": ["sh", "-c", "while [ ! -f /tmp/hooked ]; do sleep 0.1; done; echo seen $(cat /tmp/hooked); sleep 3600"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo by-hook > /tmp/hooked"]}}},
        }]}),
    );
    // httpGet: the hook calls a server of the test's on the host network.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let http_port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> Result<String> {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf)?;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let http = pod(
        "ps-http",
        json!({"containers": [{
            "name": "c", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "lifecycle": {"postStart": {"httpGet": {"host": "127.0.0.1", "port": http_port, "path": "/started"}}},
        }]}),
    );
    // A failing hook: the container is killed and started again.
    let bad = pod(
        "ps-bad",
        json!({"containers": [{
            "name": "c", "image": "busybox:1.35", "command": ["sleep", "3600"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}},
        }]}),
    );
    node.write_manifest("ps-exec.yaml", &exec)?;
    node.write_manifest("ps-http.yaml", &http)?;
    node.write_manifest("ps-bad.yaml", &bad)?;

    // Any attempt: on a loaded machine an exec hook can miss its window and the container is
    // started again (as the kubelet does), and then the line is in a later attempt's log.
    node.wait("the container sees the postStart file", T, || {
        Ok((0..3).find_map(|attempt| {
            node.container_log("default", "ps-exec", "c", attempt)
                .filter(|l| l.contains("seen by-hook"))
        }))
    })?;

    let request = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    assert!(
        request.starts_with("GET /started HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("user-agent: kube-lifecycle/1.37\r\n"),
        "{request}"
    );
    node.wait("ps-http running", T, || {
        Ok(status_of(ro, "ps-http", "c", false)?.filter(|c| c["state"]["running"].is_object()))
    })?;

    let restarted = node.wait("ps-bad restarted after its hook failed", T, || {
        Ok(status_of(ro, "ps-bad", "c", false)?.filter(|c| c["restartCount"].as_i64() >= Some(1)))
    })?;
    assert!(
        restarted["lastState"]["terminated"].is_object(),
        "{restarted}"
    );
    let log = node.agent_log();
    assert!(
        log.contains(r#"Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container \"c\" in Pod \"ps-bad-"#)
            || log.contains(r#"Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container "c" in Pod "ps-bad-"#),
        "no hook failure message in the agent log"
    );
    assert!(
        log.contains("command 'sh -c echo nope; exit 3' exited with 3"),
        "no exit code in the hook failure message"
    );
    for f in ["ps-exec.yaml", "ps-http.yaml", "ps-bad.yaml"] {
        node.remove_manifest(f)?;
    }
    Ok(())
}

#[test]
fn pre_stop_hooks_run_on_removal_inside_the_grace_period() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let out = tempfile::tempdir()?;
    // `sleep` as PID 1 ignores SIGTERM: the container stays until StopContainer's grace ends.
    let exec = pod(
        "stop-exec",
        json!({
            "terminationGracePeriodSeconds": 8,
            "containers": [{
                "name": "c", "image": "busybox:1.35", "command": ["sleep", "3600"],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /out/prestop; sleep 3"]}}},
                "volumeMounts": [{"name": "out", "mountPath": "/out"}],
            }],
            "volumes": [{"name": "out", "hostPath": {"path": out.path()}}],
        }),
    );
    let sleep = pod(
        "stop-sleep",
        json!({
            "terminationGracePeriodSeconds": 8,
            "containers": [{
                "name": "s", "image": "busybox:1.35", "command": ["sleep", "3600"],
                "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
            }],
        }),
    );
    node.write_manifest("stop-exec.yaml", &exec)?;
    node.write_manifest("stop-sleep.yaml", &sleep)?;
    for (p, c) in [("stop-exec", "c"), ("stop-sleep", "s")] {
        node.wait(&format!("{p} running"), T, || {
            Ok(status_of(ro, p, c, false)?.filter(|s| s["state"]["running"].is_object()))
        })?;
    }
    node.remove_manifest("stop-exec.yaml")?;
    node.remove_manifest("stop-sleep.yaml")?;
    for p in ["stop-exec", "stop-sleep"] {
        node.wait(&format!("{p}'s containers gone"), T, || {
            Ok(node.pod_containers(p)?.is_empty().then_some(()))
        })?;
    }
    let written = std::fs::read_to_string(out.path().join("prestop"))
        .context("the preStop hook wrote nothing")?;
    assert_eq!(written, "stopping\n");
    // The hooks took at least 3 of the 8 s: StopContainer got what was left, never more.
    let log = node.agent_log();
    for c in ["c", "s"] {
        let grace = stop_grace(&log, c).context("no StopContainer grace in the agent log")?;
        assert!((2..=5).contains(&grace), "container {c}: grace {grace}");
    }
    Ok(())
}

#[test]
fn termination_messages_come_from_the_file_or_the_log() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let file = pod(
        "msg-file",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox:1.35",
            "command": ["sh", "-c", "printf 'all done' > /dev/termination-log; echo not this"],
        }]}),
    );
    let custom = pod(
        "msg-path",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox:1.35",
            "terminationMessagePath": "/tmp/why",
            "command": ["sh", "-c", "printf 'custom path' > /tmp/why; exit 4"],
        }]}),
    );
    let logs = pod(
        "msg-logs",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox:1.35",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "command": ["sh", "-c", "{ echo first; echo second; } >&2; exit 2"],
        }]}),
    );
    let quiet = pod(
        "msg-ok",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox:1.35",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "command": ["sh", "-c", "echo fine"],
        }]}),
    );
    for (f, text) in [
        ("msg-file.yaml", &file),
        ("msg-path.yaml", &custom),
        ("msg-logs.yaml", &logs),
        ("msg-ok.yaml", &quiet),
    ] {
        node.write_manifest(f, text)?;
    }
    let terminated = |p: &str| -> Result<Value> {
        node.wait(&format!("{p} terminated"), T, || {
            Ok(status_of(ro, p, "c", false)?
                .map(|c| c["state"]["terminated"].clone())
                .filter(Value::is_object))
        })
    };
    let t = terminated("msg-file")?;
    assert_eq!(t["message"], "all done", "{t}");
    assert_eq!(t["exitCode"], 0, "{t}");
    let t = terminated("msg-path")?;
    assert_eq!(t["message"], "custom path", "{t}");
    let t = terminated("msg-logs")?;
    assert_eq!(t["message"], "first\nsecond\n", "{t}");
    let t = terminated("msg-ok")?;
    assert!(t.get("message").is_none_or(Value::is_null), "{t}");
    for f in [
        "msg-file.yaml",
        "msg-path.yaml",
        "msg-logs.yaml",
        "msg-ok.yaml",
    ] {
        node.remove_manifest(f)?;
    }
    Ok(())
}

#[test]
fn a_pod_past_its_active_deadline_fails() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let text = pod(
        "deadline",
        json!({"activeDeadlineSeconds": 3, "containers": [{
            "name": "c", "image": "busybox:1.35", "command": ["sleep", "3600"],
        }]}),
    );
    node.write_manifest("deadline.yaml", &text)?;
    let st = node.wait("deadline pod Failed", T, || {
        Ok(listed_pod(ro, "deadline")?
            .map(|p| p["status"].clone())
            .filter(|s| s["phase"] == "Failed"))
    })?;
    assert_eq!(st["reason"], "DeadlineExceeded", "{st}");
    assert_eq!(
        st["message"], "Pod was active on the node longer than the specified deadline",
        "{st}"
    );
    node.wait("its containers stopped", T, || {
        let running = node
            .pod_containers("deadline")?
            .iter()
            .any(|c| c.state == nodelet_tests::running());
        Ok((!running).then_some(()))
    })?;
    // It is not started again while its manifest stays.
    std::thread::sleep(Duration::from_secs(3));
    let st = listed_pod(ro, "deadline")?.context("deadline pod listed")?;
    assert_eq!(st["status"]["phase"], "Failed", "{st}");
    assert!(
        !node
            .pod_containers("deadline")?
            .iter()
            .any(|c| c.state == nodelet_tests::running())
    );
    node.remove_manifest("deadline.yaml")?;
    Ok(())
}

#[test]
fn a_sidecar_starts_first_keeps_running_is_restarted_and_stops_last() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let text = pod(
        "sidecar",
        json!({
            "initContainers": [{
                "name": "side", "image": "busybox:1.35", "restartPolicy": "Always",
                // Up for a few seconds, then it exits: a sidecar is restarted whatever the
                // pod's restart policy.
                "command": ["sh", "-c", "sleep 1; echo up >> /shared/side; sleep 4; exit 1"],
                "startupProbe": {"exec": {"command": ["cat", "/shared/side"]}, "periodSeconds": 1},
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            }],
            "restartPolicy": "Never",
            "containers": [{
                "name": "c", "image": "busybox:1.35",
                "command": ["sh", "-c", "[ -f /shared/side ] && echo sidecar-was-first; sleep 3600"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            }],
            "volumes": [{"name": "shared", "emptyDir": {}}],
        }),
    );
    node.write_manifest("sidecar.yaml", &text)?;
    let seen = node.wait("the main container saw the sidecar's file", T, || {
        Ok(node
            .container_log("default", "sidecar", "c", 0)
            .filter(|l| l.contains("sidecar-was-first")))
    });
    if seen.is_err() {
        for l in node
            .agent_log()
            .lines()
            .filter(|l| l.contains("sidecar") && !l.contains("stats::"))
        {
            eprintln!("{l}");
        }
        eprintln!("{:?}", listed_pod(ro, "sidecar"));
    }
    seen?;
    let side = node.wait("the sidecar restarted beside the main container", T, || {
        Ok(status_of(ro, "sidecar", "side", true)?
            .filter(|s| s["restartCount"].as_i64() >= Some(1)))
    })?;
    assert!(side["lastState"]["terminated"].is_object(), "{side}");
    let main = status_of(ro, "sidecar", "c", false)?.context("main status")?;
    assert!(main["state"]["running"].is_object(), "{main}");
    assert_eq!(main["restartCount"], 0, "{main}");
    let p = listed_pod(ro, "sidecar")?.context("pod listed")?;
    assert_eq!(p["status"]["phase"], "Running", "{p}");

    // Make sure the sidecar runs, then remove the pod: the main container is stopped first.
    node.wait("the sidecar running again", T, || {
        Ok(status_of(ro, "sidecar", "side", true)?.filter(|s| s["state"]["running"].is_object()))
    })?;
    node.remove_manifest("sidecar.yaml")?;
    node.wait("sidecar pod's containers gone", T, || {
        Ok(node.pod_containers("sidecar")?.is_empty().then_some(()))
    })?;
    let log = node.agent_log();
    let order: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("killing container with a grace period") && l.contains("sidecar-"))
        .filter_map(|l| l.split("container=").nth(1)?.split(' ').next())
        .collect();
    let last_main = order.iter().rposition(|c| *c == "c");
    let last_side = order.iter().rposition(|c| *c == "side");
    assert!(
        matches!((last_main, last_side), (Some(m), Some(s)) if m < s),
        "stop order {order:?}"
    );
    Ok(())
}
