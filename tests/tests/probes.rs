//! Probes on a real containerd (issue 14): an exec liveness probe that starts failing restarts
//! the container, an httpGet readiness probe against busybox `httpd` follows a file the test
//! creates and removes, a startup probe holds liveness back until it passes, tcpSocket probes
//! against an open and a closed port; and the kubelet's metrics on `/metrics/probes`.

use anyhow::{Context, Result};
use nodelet_tests::{Node, NodeOpts, free_port};
use nodelet_tests::{listed_pod, read_only_get};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// The status of container `c` of pod `name`.
fn container(port: u16, name: &str, c: &str) -> Result<Option<Value>> {
    Ok(listed_pod(port, name)?.and_then(|p| {
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == c)
            .cloned()
    }))
}

/// The status condition `type_` of pod `name` ("True"/"False").
fn condition(port: u16, name: &str, type_: &str) -> Result<Option<String>> {
    Ok(listed_pod(port, name)?.and_then(|p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .and_then(|c| c["status"].as_str().map(str::to_owned))
    }))
}

/// A hostNetwork busybox pod with the given containers (JSON is YAML too).
fn pod(name: &str, containers: Value, volumes: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 2,
            "containers": containers,
            "volumes": volumes,
        }
    })
    .to_string()
}

/// `prober_probe_total` for one pod, probe type and result (0 when absent).
fn probe_total(port: u16, pod: &str, probe_type: &str, result: &str) -> Result<u64> {
    let text = read_only_get(port, "/metrics/probes")?;
    let pod = format!("pod=\"{pod}-{}\"", nodelet_tests::NODE);
    let want = [
        pod.as_str(),
        &format!("probe_type=\"{probe_type}\""),
        &format!("result=\"{result}\""),
    ];
    Ok(text
        .lines()
        .filter(|l| l.starts_with("prober_probe_total{"))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum())
}

#[test]
fn failing_exec_liveness_probe_restarts_the_container() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    // Healthy for a few seconds after each start, then the probed file goes.
    let containers = json!([{
        "name": "c",
        "image": "busybox:1.35",
        "command": ["sh", "-c", "touch /tmp/ok; sleep 3; rm /tmp/ok; sleep 3600"],
        "livenessProbe": {
            "exec": {"command": ["cat", "/tmp/ok"]},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    }]);
    node.write_manifest("live.yaml", &pod("live", containers, json!([])))?;
    let restarted = node.wait("restartCount >= 1 after liveness failures", T, || {
        Ok(container(ro, "live", "c")?.filter(|c| c["restartCount"].as_i64() >= Some(1)))
    })?;
    // The killed instance is the last state; the kubelet's event message says why.
    assert!(
        restarted["lastState"]["terminated"].is_object(),
        "{restarted}"
    );
    let log = node.agent_log();
    assert!(
        log.contains("Container c failed liveness probe, will be restarted"),
        "no Killing message in the agent log"
    );
    assert!(
        log.contains("Liveness probe failed: "),
        "no Unhealthy message in the agent log"
    );
    assert!(probe_total(ro, "live", "Liveness", "failed")? >= 2);
    assert!(probe_total(ro, "live", "Liveness", "successful")? >= 1);
    let text = read_only_get(ro, "/metrics/probes")?;
    assert!(
        text.contains("prober_probe_duration_seconds_bucket{"),
        "{text}"
    );
    if nodelet_tests::have("promtool") {
        nodelet_tests::promtool_check("/metrics/probes", &text, nodelet_tests::LINT_ALLOWED)?;
    } else if std::env::var_os("NODELET_REQUIRE_ALL").is_some() {
        anyhow::bail!("promtool is missing (apt-get install prometheus)");
    } else {
        eprintln!("skipping the promtool check: promtool is missing");
    }
    Ok(())
}

#[test]
fn http_readiness_probe_follows_the_served_file() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let www = tempfile::tempdir()?;
    let port = free_port()?;
    let containers = json!([{
        "name": "web",
        "image": "busybox:1.35",
        "command": ["sh", "-c", format!("httpd -f -p {port} -h /www")],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http",
                        "httpHeaders": [{"name": "X-Probe", "value": "e2e"}]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        "volumeMounts": [{"name": "www", "mountPath": "/www"}],
    }]);
    let volumes = json!([{"name": "www", "hostPath": {"path": www.path()}}]);
    node.write_manifest("web.yaml", &pod("web", containers, volumes))?;

    // Running but not ready: /ready is a 404.
    node.wait("web running and probed failing", T, || {
        Ok((probe_total(ro, "web", "Readiness", "failed")? >= 1).then_some(()))
    })?;
    let c = container(ro, "web", "web")?.context("web status")?;
    assert_eq!(c["ready"], false, "{c}");
    assert_eq!(condition(ro, "web", "Ready")?.as_deref(), Some("False"));

    std::fs::write(www.path().join("ready"), "ok")?;
    node.wait("ready after the file appears", T, || {
        Ok(container(ro, "web", "web")?.filter(|c| c["ready"] == true))
    })?;
    node.wait("Ready and ContainersReady True", T, || {
        let r = condition(ro, "web", "Ready")?;
        let cr = condition(ro, "web", "ContainersReady")?;
        Ok((r.as_deref() == Some("True") && cr.as_deref() == Some("True")).then_some(()))
    })?;

    std::fs::remove_file(www.path().join("ready"))?;
    node.wait("not ready after the file goes", T, || {
        Ok(container(ro, "web", "web")?.filter(|c| c["ready"] == false))
    })?;
    assert_eq!(condition(ro, "web", "Ready")?.as_deref(), Some("False"));
    // Readiness never restarts anything.
    let c = container(ro, "web", "web")?.context("web status")?;
    assert_eq!(c["restartCount"], 0, "{c}");
    let log = node.agent_log();
    assert!(
        log.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "no Unhealthy message in the agent log"
    );
    node.remove_manifest("web.yaml")?;
    Ok(())
}

#[test]
fn startup_probe_holds_liveness_back_until_it_passes() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let gate = tempfile::tempdir()?;
    let containers = json!([{
        "name": "c",
        "image": "busybox:1.35",
        "command": ["sh", "-c", "sleep 3600"],
        "startupProbe": {
            "exec": {"command": ["cat", "/gate/started"]},
            "periodSeconds": 1,
            "failureThreshold": 1000,
        },
        // Would fail at once: only the startup gate keeps the container alive.
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", "exit 1"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        "volumeMounts": [{"name": "gate", "mountPath": "/gate"}],
    }]);
    let volumes = json!([{"name": "gate", "hostPath": {"path": gate.path()}}]);
    node.write_manifest("gated.yaml", &pod("gated", containers, volumes))?;

    node.wait("three failed startup probes", T, || {
        Ok((probe_total(ro, "gated", "Startup", "failed")? >= 3).then_some(()))
    })?;
    let c = container(ro, "gated", "c")?.context("status")?;
    assert_eq!(c["started"], false, "{c}");
    assert_eq!(c["ready"], false, "{c}");
    assert_eq!(c["restartCount"], 0, "{c}");
    assert_eq!(probe_total(ro, "gated", "Liveness", "failed")?, 0);

    std::fs::write(gate.path().join("started"), "")?;
    // Started, then liveness runs, fails and restarts the container.
    node.wait("liveness restarts the container once started", T, || {
        Ok(container(ro, "gated", "c")?.filter(|c| c["restartCount"].as_i64() >= Some(1)))
    })?;
    assert!(probe_total(ro, "gated", "Startup", "successful")? >= 1);
    assert!(probe_total(ro, "gated", "Liveness", "failed")? >= 1);
    Ok(())
}

#[test]
fn tcp_socket_probes_follow_open_and_closed_ports() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    let (open, closed) = (free_port()?, free_port()?);
    let www = tempfile::tempdir()?;
    let containers = json!([
        {
            "name": "open",
            "image": "busybox:1.35",
            "command": ["sh", "-c", format!("httpd -f -p {open} -h /www")],
            "readinessProbe": {"tcpSocket": {"port": open}, "periodSeconds": 1},
            "volumeMounts": [{"name": "www", "mountPath": "/www"}],
        },
        {
            "name": "closed",
            "image": "busybox:1.35",
            "command": ["sh", "-c", "sleep 3600"],
            "readinessProbe": {"tcpSocket": {"port": closed}, "periodSeconds": 1,
                               "failureThreshold": 1},
        },
    ]);
    let volumes = json!([{"name": "www", "hostPath": {"path": www.path()}}]);
    node.write_manifest("tcp.yaml", &pod("tcp", containers, volumes))?;
    node.wait("the open port's container ready", T, || {
        Ok(container(ro, "tcp", "open")?.filter(|c| c["ready"] == true))
    })?;
    node.wait("the closed port probed failing", T, || {
        Ok((probe_total(ro, "tcp", "Readiness", "failed")? >= 1).then_some(()))
    })?;
    let c = container(ro, "tcp", "closed")?.context("status")?;
    assert_eq!(c["ready"], false, "{c}");
    assert_eq!(
        condition(ro, "tcp", "ContainersReady")?.as_deref(),
        Some("False")
    );
    assert!(
        node.agent_log().contains("connect: connection refused"),
        "no connection refused in the agent log"
    );
    Ok(())
}
