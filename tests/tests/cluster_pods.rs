//! Cluster mode, pod side (issue 11): the real nodelet joined to the real loopback control plane
//! runs the pods the API server binds to its node and reports their status back:
//! - a Pod created with `kubectl apply` runs: phase Running, podIP from the pod network,
//!   hostIP the Node's InternalIP, Ready and ContainersReady conditions, container statuses
//!   running and ready with the image and a containerID;
//! - a Deployment goes through the scheduler and the controller-manager: its replicas run here;
//! - a pod that exits 0 with restartPolicy Never reaches Succeeded;
//! - a container's env holds the service variables of its namespace's Services and of the
//!   master `kubernetes` service (FOO_SERVICE_HOST, FOO_PORT_8765_TCP...);
//! - pods bound past the scheduler that do not fit (CPU, nodeSelector) are refused by node
//!   admission: phase Failed with the kubelet's reason, never started;
//! - `kubectl delete` stops the containers within the grace period and the object goes away
//!   (the agent's final delete); a pod held by a finalizer keeps a final status with the
//!   container's end state and the terminal phase; a force delete kills the containers at once;
//! - the agent restarted meanwhile adopts what runs: nothing is started twice.
//!
//! Only what the API (kubectl) and the runtime (CRI) show is judged; waits have generous
//! ceilings and no timing is asserted. Skips when the control plane or containerd cannot be
//! had, fails instead under `NODELET_REQUIRE_ALL=1`.

use anyhow::{Context, Result, ensure};
use nodelet_tests::cluster::{self, condition, kubectl_apply, kubectl_json};
use nodelet_tests::{NODE, Node};
use serde_json::Value;
use std::time::{Duration, Instant};
use xtask::cluster::Cluster;

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);

/// A busybox pod bound to the node by the scheduler. No service-account token is mounted:
/// these pods test the pod lifecycle, the token volume has a test of its own.
fn pod_yaml(name: &str, policy: &str, grace: u32, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         automountServiceAccountToken: false\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: c\n    \
         image: busybox:1.35\n    imagePullPolicy: IfNotPresent\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

fn pod_json(c: &Cluster, name: &str) -> Result<Value> {
    kubectl_json(c, &["get", "pod", name])
}

/// Waits for the pod's phase.
fn wait_phase(c: &Cluster, node: &Node, name: &str, phase: &str) -> Result<Value> {
    node.wait(&format!("pod {name} {phase}"), T, || {
        let Ok(p) = pod_json(c, name) else {
            return Ok(None);
        };
        Ok((p["status"]["phase"] == phase).then_some(p))
    })
    .with_context(|| {
        let log = node.agent_log();
        let ours: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("config::") || l.contains("status::sync") || l.contains(name))
            .collect();
        format!(
            "pod {name} as the API shows it: {}\nnode taints: {}\nagent lines about sources, status and the pod:\n{}",
            pod_json(c, name).map_or_else(|e| e.to_string(), |p| p["status"].to_string()),
            kubectl_json(c, &["get", "node", NODE])
                .map_or_else(|e| e.to_string(), |n| n["spec"]["taints"].to_string()),
            ours.join("\n")
        )
    })
}

/// Waits until kubectl no longer finds the pod.
fn wait_gone(c: &Cluster, node: &Node, name: &str) -> Result<()> {
    node.wait(&format!("pod {name} gone from the API"), T, || {
        let out = c.kubectl(&["get", "pods", "-o", "name"])?;
        Ok((!out.lines().any(|l| l == format!("pod/{name}"))).then_some(()))
    })
}

/// Running containers of the API pod `pod` (named as is, unlike static pods).
fn running_containers(node: &Node, pod: &str) -> Result<usize> {
    Ok(node
        .containers()?
        .iter()
        .filter(|c| {
            c.labels
                .get(nodelet_tests::POD_NAME_LABEL)
                .map(String::as_str)
                == Some(pod)
                && c.state == nodelet_tests::running()
        })
        .count())
}

#[test]
fn api_pods_run_report_status_and_are_deleted() -> Result<()> {
    let Some(mut cn) = cluster::start_or_skip("nodelet-cluster-pods-", T)? else {
        return Ok(());
    };
    let kubeconfig = cn.kubeconfig_flag();
    let (c, node) = (&cn.cluster, &mut cn.node);
    let internal_ip = kubectl_json(c, &["get", "node", NODE])?["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .map(|a| a["address"].clone())
        .context("the Node has no InternalIP")?;

    // A pod through the scheduler: Running with the kubelet's status.
    let created = Instant::now();
    kubectl_apply(
        c,
        &pod_yaml("web", "Always", 30, "trap 'exit 0' TERM; sleep 3600 & wait"),
    )?;
    let p = wait_phase(c, node, "web", "Running")?;
    let p = node
        .wait("web Ready", T, || {
            let p = pod_json(c, "web")?;
            Ok(condition(&p, "Ready")
                .is_some_and(|r| r["status"] == "True")
                .then_some(p))
        })
        .unwrap_or(p);
    eprintln!(
        "cluster_pods: kubectl apply -> Running and Ready in {:.1} s (information, not a limit)",
        created.elapsed().as_secs_f64()
    );
    let st = &p["status"];
    ensure!(
        st["hostIP"] == internal_ip,
        "hostIP {} != InternalIP {internal_ip}",
        st["hostIP"]
    );
    let pod_ip = st["podIP"].as_str().context("no podIP")?;
    ensure!(
        pod_ip.parse::<std::net::IpAddr>().is_ok() && st["podIP"] != internal_ip,
        "podIP {pod_ip} is not a pod network address"
    );
    ensure!(st["startTime"].is_string(), "no startTime: {st}");
    ensure!(
        st["qosClass"] == "BestEffort",
        "qosClass {}",
        st["qosClass"]
    );
    for t in ["Initialized", "ContainersReady", "Ready", "PodScheduled"] {
        ensure!(
            condition(&p, t).is_some_and(|c| c["status"] == "True"),
            "condition {t} not True: {}",
            st["conditions"]
        );
    }
    let cs = &st["containerStatuses"][0];
    ensure!(
        cs["name"] == "c" && cs["ready"] == true,
        "container status {cs}"
    );
    ensure!(
        cs["state"]["running"]["startedAt"].is_string(),
        "not running: {cs}"
    );
    ensure!(
        cs["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://")),
        "containerID {}",
        cs["containerID"]
    );
    ensure!(
        cs["image"].as_str().is_some_and(|i| i.contains("busybox")),
        "image {}",
        cs["image"]
    );
    ensure!(
        running_containers(node, "web")? == 1,
        "web runs once in the runtime"
    );

    // A Deployment: scheduler and controller-manager place its replicas here.
    kubectl_apply(
        c,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dep\n  namespace: default\n\
         spec:\n  replicas: 2\n  selector:\n    matchLabels: {app: dep}\n  template:\n    \
         metadata:\n      labels: {app: dep}\n    spec:\n      \
         automountServiceAccountToken: false\n      terminationGracePeriodSeconds: 2\n      \
         containers:\n      - name: c\n        image: busybox:1.35\n        \
         imagePullPolicy: IfNotPresent\n        command: [\"sleep\", \"3600\"]\n",
    )?;
    node.wait("the Deployment's 2 replicas available", T, || {
        let d = kubectl_json(c, &["get", "deployment", "dep"])?;
        Ok((d["status"]["availableReplicas"] == 2).then_some(()))
    })?;

    // A pod that finishes: Succeeded, never restarted.
    kubectl_apply(c, &pod_yaml("job", "Never", 2, "echo done"))?;
    let done = wait_phase(c, node, "job", "Succeeded")?;
    let term = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    ensure!(
        term["exitCode"] == 0 && term["reason"] == "Completed",
        "job: {term}"
    );

    // Service environment variables (the upstream "environment variables for services"
    // test): a Service of the pod's namespace and the master `kubernetes` service, read from
    // the container's env (written to its termination message).
    kubectl_apply(
        c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: fooservice\n  namespace: default\n\
         spec:\n  selector:\n    name: none\n  ports:\n  - name: http\n    port: 8765\n    \
         targetPort: 8080\n",
    )?;
    let svc_ip = kubectl_json(c, &["get", "service", "fooservice"])?["spec"]["clusterIP"]
        .as_str()
        .context("fooservice has no clusterIP")?
        .to_owned();
    let master_ip = kubectl_json(c, &["get", "service", "kubernetes"])?["spec"]["clusterIP"]
        .as_str()
        .context("the kubernetes service has no clusterIP")?
        .to_owned();
    kubectl_apply(
        c,
        &pod_yaml(
            "envs",
            "Never",
            2,
            "env | grep -E '^(FOOSERVICE|KUBERNETES)_' | sort > /dev/termination-log",
        ),
    )?;
    let done = wait_phase(c, node, "envs", "Succeeded")?;
    let msg = done["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for want in [
        format!("FOOSERVICE_SERVICE_HOST={svc_ip}"),
        "FOOSERVICE_SERVICE_PORT=8765".to_owned(),
        "FOOSERVICE_SERVICE_PORT_HTTP=8765".to_owned(),
        format!("FOOSERVICE_PORT=tcp://{svc_ip}:8765"),
        format!("FOOSERVICE_PORT_8765_TCP=tcp://{svc_ip}:8765"),
        "FOOSERVICE_PORT_8765_TCP_PROTO=tcp".to_owned(),
        "FOOSERVICE_PORT_8765_TCP_PORT=8765".to_owned(),
        format!("FOOSERVICE_PORT_8765_TCP_ADDR={svc_ip}"),
        format!("KUBERNETES_SERVICE_HOST={master_ip}"),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".to_owned(),
    ] {
        ensure!(
            msg.lines().any(|l| l == want),
            "envs: {want} missing from the container's env:\n{msg}"
        );
    }

    // Node admission: pods bound past the scheduler are refused with the kubelet's reasons.
    for (name, extra, reason) in [
        (
            "greedy",
            "    resources: {requests: {cpu: \"100000\"}}\n",
            "OutOfcpu",
        ),
        ("elsewhere", "", "NodeAffinity"),
    ] {
        let selector = if reason == "NodeAffinity" {
            "  nodeSelector: {nodelet.test/zone: nowhere}\n"
        } else {
            ""
        };
        kubectl_apply(
            c,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
                 nodeName: {NODE}\n  automountServiceAccountToken: false\n{selector}  containers:\n  \
                 - name: c\n    image: busybox:1.35\n    command: [sleep, \"3600\"]\n{extra}"
            ),
        )?;
        let p = wait_phase(c, node, name, "Failed")?;
        ensure!(
            p["status"]["reason"] == reason
                && p["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Pod was rejected")),
            "{name}: {}",
            p["status"]
        );
        ensure!(running_containers(node, name)? == 0, "{name} was started");
    }

    // Restart the agent: everything is adopted, nothing started twice.
    node.stop_agent(libc::SIGTERM)?;
    node.start_agent(&[&kubeconfig])?;
    std::thread::sleep(Duration::from_secs(5));
    wait_phase(c, node, "web", "Running")?;
    ensure!(
        running_containers(node, "web")? == 1,
        "web was started twice after the restart"
    );
    let again = pod_json(c, "web")?;
    ensure!(
        again["status"]["containerStatuses"][0]["restartCount"] == 0,
        "web restarted: {}",
        again["status"]["containerStatuses"][0]
    );
    ensure!(
        pod_json(c, "job")?["status"]["phase"] == "Succeeded",
        "job regressed"
    );

    // Graceful delete: the container gets TERM (and exits 0 at once), then the object goes.
    let asked = Instant::now();
    c.kubectl(&["delete", "pod", "web", "--wait=false"])?;
    wait_gone(c, node, "web")?;
    eprintln!(
        "cluster_pods: kubectl delete -> object gone in {:.1} s (information, not a limit)",
        asked.elapsed().as_secs_f64()
    );
    node.wait("web's containers stopped", T, || {
        Ok((running_containers(node, "web")? == 0).then_some(()))
    })?;

    // A deleted pod that a finalizer holds: its final status (written before the agent's
    // final delete) shows the container's end, and the terminal phase, whatever the restart
    // policy, as the kubelet's SyncTerminatingPod status.
    let held = pod_yaml(
        "held",
        "Always",
        30,
        "trap 'exit 3' TERM; sleep 3600 & wait",
    )
    .replace(
        "  namespace: default\n",
        "  namespace: default\n  finalizers: [nodelet.test/hold]\n",
    );
    kubectl_apply(c, &held)?;
    wait_phase(c, node, "held", "Running")?;
    c.kubectl(&["delete", "pod", "held", "--wait=false"])?;
    let last = wait_phase(c, node, "held", "Failed")?;
    let state = &last["status"]["containerStatuses"][0]["state"];
    ensure!(
        state["terminated"]["exitCode"] == 3 && state["terminated"]["finishedAt"].is_string(),
        "held's final status lacks the container's end: {state}"
    );
    c.kubectl(&[
        "patch",
        "pod",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    wait_gone(c, node, "held")?;

    // Force delete: the object goes at once, the agent kills what runs.
    kubectl_apply(
        c,
        &pod_yaml("stubborn", "Always", 300, "trap '' TERM; sleep 3600"),
    )?;
    wait_phase(c, node, "stubborn", "Running")?;
    c.kubectl(&["delete", "pod", "stubborn", "--grace-period=0", "--force"])?;
    node.wait("stubborn's containers killed", T, || {
        Ok((running_containers(node, "stubborn")? == 0).then_some(()))
    })?;

    c.kubectl(&["delete", "deployment", "dep", "--wait=false"])?;
    let log = node.agent_log();
    // The deleted object's grace (0, raised to the kubelet's 2 s minimum), not the spec's 300:
    // the update that carried it may be coalesced away before the deletion.
    ensure!(
        log.lines().any(|l| l.contains("terminating pod")
            && l.contains("/stubborn")
            && l.contains("grace_seconds=Some(2)")),
        "stubborn was not killed with the force delete's grace:\n{}",
        log.lines()
            .filter(|l| l.contains("stubborn"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(!log.contains("panicked"), "the agent panicked:\n{log}");
    Ok(())
}
