//! API-backed volumes and env, end to end (issue 11): the real nodelet on a real containerd,
//! joined to the real loopback control plane with its node certificate, runs API pods that
//! read what the volume manager wrote:
//! - a configMap volume (items, a mode), a secret volume, a downwardAPI volume and the
//!   kube-api-access-* projected volume the ServiceAccount admission adds (token, ca.crt,
//!   namespace), each `cat` into the container log;
//! - env from configMapKeyRef, secretKeyRef, envFrom with a prefix and fieldRef;
//! - a pod whose ConfigMap does not exist never starts, and the agent reports FailedMount
//!   naming the volume and the object.
//!
//! Judged from the container log files and the agent log; no timing asserted. Skips without
//! containerd, the agent binary or the control plane; fails instead under NODELET_REQUIRE_ALL=1.

use anyhow::{Result, ensure};
use nodelet_tests::cluster;
use nodelet_tests::{NODE, Node, NodeOpts, POD_NAME_LABEL};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

fn objects() -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg, namespace: default}}
data: {{a: "1", greeting: hello}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec, namespace: default}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: default}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: default, labels: {{app: reader}}}}
spec:
  nodeName: {NODE}
  serviceAccountName: app
  hostNetwork: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  tolerations: [{{operator: Exists}}]
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "echo cfg=$(cat /cfg/x/a.txt) mode=$(stat -L -c %a /cfg/x/a.txt); echo sec=$(cat /sec/password); echo labels=$(cat /info/labels); echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); echo tokenlen=$(wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token); grep -c BEGIN /var/run/secrets/kubernetes.io/serviceaccount/ca.crt | sed s/^/ca=/; echo env=$GREETING/$PASSWORD/$CFG_a/$POD; touch /cfg/w 2>/dev/null || echo readonly; echo done"]
    envFrom: [{{prefix: CFG_, configMapRef: {{name: cfg}}}}]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}}}
    - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
    - {{name: info, mountPath: /info}}
  volumes:
  - name: cfg
    configMap: {{name: cfg, items: [{{key: a, path: x/a.txt, mode: 0400}}]}}
  - name: sec
    secret: {{secretName: sec}}
  - name: info
    downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: stuck, namespace: default}}
spec:
  nodeName: {NODE}
  hostNetwork: true
  automountServiceAccountToken: false
  tolerations: [{{operator: Exists}}]
  containers:
  - name: c
    image: busybox:1.35
    command: ["sleep", "3600"]
    volumeMounts: [{{name: needed, mountPath: /n}}]
  volumes:
  - name: needed
    configMap: {{name: nope}}
"#
    )
}

/// The container log of API pod `name` (log dir `<ns>_<name>_<uid>`).
fn api_pod_log(node: &Node, name: &str) -> Option<String> {
    let prefix = format!("default_{name}_");
    let dir = std::fs::read_dir(&node.logs)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
    std::fs::read_to_string(dir.path().join("c/0.log")).ok()
}

#[test]
fn api_pods_read_configmap_secret_downward_and_token_volumes_and_env() -> Result<()> {
    let opts = NodeOpts {
        extra_config: cluster::loopback_config()?,
        ..Default::default()
    };
    let Some(mut cn) = cluster::node_and_cluster("nodelet-volumes-", opts)? else {
        return Ok(());
    };
    cn.join(&[])?;
    let (c, node) = (&cn.cluster, &mut cn.node);
    let started = Instant::now();
    c.kubectl_in(
        &c.admin_kubeconfig(),
        &["apply", "-f", "-"],
        Some(&objects()),
    )?;

    let log = node.wait("pod reader to print its volumes and env", T, || {
        Ok(api_pod_log(node, "reader").filter(|l| l.contains("done")))
    })?;
    eprintln!(
        "volumes: pod created -> files read in the container in {:.1} s (information, not a limit)",
        started.elapsed().as_secs_f64()
    );
    for want in [
        "cfg=1 mode=400",
        "sec=s3cret",
        "labels=app=\"reader\"",
        "ns=default",
        "ca=1",
        "env=hello/s3cret/1/reader",
        "readonly",
    ] {
        ensure!(
            log.contains(want),
            "{want:?} missing from the pod's log:\n{log}"
        );
    }
    let token_len = log
        .lines()
        .find_map(|l| l.split("tokenlen=").nth(1))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    ensure!(
        token_len > 100,
        "no service-account token in the pod:\n{log}"
    );

    node.wait("FailedMount for pod stuck", T, || {
        let l = node.agent_log();
        Ok((l.contains("FailedMount")
            && l.contains("volume \"needed\"")
            && l.contains("configmap \"nope\" not found"))
        .then_some(()))
    })?;
    let stuck: Vec<_> = node
        .containers()?
        .into_iter()
        .filter(|c| c.labels.get(POD_NAME_LABEL).map(String::as_str) == Some("stuck"))
        .collect();
    ensure!(
        stuck.is_empty() && api_pod_log(node, "stuck").is_none(),
        "pod stuck started a container without its volume"
    );
    let agent_log = node.agent_log();
    ensure!(
        !agent_log.contains("panicked"),
        "the agent panicked:\n{agent_log}"
    );
    Ok(())
}

/// Needs no control plane: a static pod's downwardAPI volume is written by the volume manager
/// (on a tmpfs), mounted read-only, and read by the container.
#[test]
fn static_pod_reads_its_downward_api_volume() -> Result<()> {
    let Some(node) = Node::start(NodeOpts::default())? else {
        return Ok(());
    };
    node.write_manifest(
        "info.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: info\n  labels: {app: info}\n  annotations: {note: hi}\nspec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [\"sh\", \"-c\", \"echo labels=$(cat /info/labels) note=$(cat /info/note) mem=$(cat /info/mem); touch /info/w 2>/dev/null || echo readonly; echo done\"]\n    resources: {limits: {memory: 64Mi}}\n    volumeMounts: [{name: info, mountPath: /info}]\n  volumes:\n  - name: info\n    downwardAPI:\n      items:\n      - {path: labels, fieldRef: {fieldPath: metadata.labels}}\n      - {path: note, fieldRef: {fieldPath: \"metadata.annotations['note']\"}}\n      - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}\n",
    )?;
    let log = node.wait("static pod info to print its downwardAPI volume", T, || {
        Ok(node
            .container_log("default", "info", "c", 0)
            .filter(|l| l.contains("done")))
    })?;
    for want in ["labels=app=\"info\"", "note=hi", "mem=64", "readonly"] {
        ensure!(
            log.contains(want),
            "{want:?} missing from the pod's log:\n{log}"
        );
    }
    // Removing the pod unmounts its tmpfs volume and removes the directory.
    node.remove_manifest("info.yaml")?;
    node.wait("the info pod's tmpfs volume to be unmounted", T, || {
        Ok((!volume_mounts_under(&node.root)?).then_some(()))
    })?;
    Ok(())
}

fn volume_mounts_under(root: &std::path::Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", root.display());
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| p.starts_with(&prefix) && p.contains("/volumes/kubernetes.io~")))
}
