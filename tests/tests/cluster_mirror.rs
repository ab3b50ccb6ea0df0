//! Cluster mode, mirror pods (issue 11): the real nodelet joined to the real loopback control
//! plane gives each static pod a mirror pod in the API server, as the kubelet does:
//! - it appears with the static pod's name, the `kubernetes.io/config.mirror` (= config.hash),
//!   `config.source=file` and `config.seen` annotations and one controller owner reference to
//!   the Node (NodeRestriction admits nothing else from a node);
//! - the static pod's status is written to it: Running, with its container running;
//! - `kubectl delete pod <mirror>` -> a new mirror pod (new UID) appears and the static pod's
//!   container keeps running, not restarted;
//! - an edited manifest -> the mirror pod is replaced by one with the new hash;
//! - the manifest removed -> the mirror pod is gone.
//!
//! Only what kubectl and the runtime (CRI) show is judged; waits have generous ceilings and no
//! timing is asserted (durations are printed). Skips when the control plane or containerd
//! cannot be had, fails instead under `NODELET_REQUIRE_ALL=1`.

use anyhow::{Context, Result, ensure};
use nodelet_tests::cluster::{self, kubectl_json};
use nodelet_tests::{NODE, Node, NodeOpts, host_pod, restart_count, running};
use serde_json::Value;
use std::time::{Duration, Instant};
use xtask::cluster::Cluster;

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);
/// The static pod's name in the manifest; the agent (and so the API) names it `<name>-<node>`.
const STATIC: &str = "mirrored";
/// A static pod whose manifest goes while the agent is stopped.
const ORPHAN: &str = "orphaned";

fn mirror_name() -> String {
    format!("{STATIC}-{NODE}")
}

/// The mirror pod as the API shows it, when there is one.
fn mirror(c: &Cluster) -> Option<Value> {
    kubectl_json(c, &["get", "pod", &mirror_name()]).ok()
}

fn annotation<'a>(p: &'a Value, key: &str) -> Option<&'a str> {
    p["metadata"]["annotations"][key].as_str()
}

fn uid(p: &Value) -> &str {
    p["metadata"]["uid"].as_str().unwrap_or_default()
}

/// Waits for a mirror pod that `accept` takes, with the agent's mirror lines on failure.
fn wait_mirror(
    c: &Cluster,
    node: &Node,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let t0 = Instant::now();
    let got = node
        .wait(what, T, || Ok(mirror(c).filter(|p| accept(p))))
        .with_context(|| {
            let log = node.agent_log();
            let ours: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("mirror::") || l.contains("status::sync"))
                .collect();
            format!(
                "the mirror pod as the API shows it: {}\nagent lines about mirror pods and status:\n{}",
                mirror(c).map_or_else(|| "none".into(), |p| p.to_string()),
                ours.join("\n")
            )
        })?;
    println!("{what}: {:?}", t0.elapsed());
    Ok(got)
}

/// The API server stopped with SIGSTOP until dropped (SIGCONT), so a failing test never
/// leaves it frozen.
struct Frozen(i32);

impl Frozen {
    fn new(c: &Cluster) -> Result<Frozen> {
        let pid = c
            .pid(xtask::cluster::Component::ApiServer)
            .context("the API server's pid")?;
        let pid = i32::try_from(pid)?;
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        ensure!(
            unsafe { libc::kill(pid, libc::SIGSTOP) } == 0,
            "SIGSTOP kube-apiserver"
        );
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The static pod's running container: (id, restart count).
fn running_container(node: &Node) -> Result<Option<(String, u32)>> {
    let cs = node.pod_containers(STATIC)?;
    let mut running_ones = cs.iter().filter(|c| c.state == running());
    let first = running_ones
        .next()
        .map(|c| (c.id.clone(), restart_count(c)));
    ensure!(
        running_ones.next().is_none(),
        "more than one running container for {STATIC}: {cs:?}"
    );
    Ok(first)
}

#[test]
fn static_pods_get_mirror_pods_that_follow_them() -> Result<()> {
    let opts = NodeOpts {
        extra_config: cluster::loopback_config()?,
        ..Default::default()
    };
    let Some(mut cn) = cluster::node_and_cluster("nodelet-cluster-mirror-", opts)? else {
        return Ok(());
    };
    cn.join(&[])?;
    let kubeconfig = cn.kubeconfig_flag();
    let (c, node) = (&cn.cluster, &mut cn.node);
    // A second static pod, removed while the agent is down: its mirror pod is an orphan.
    node.write_manifest("orphan.yaml", &host_pod(ORPHAN, "Always", "sleep 3600"))?;
    node.write_manifest(
        "mirrored.yaml",
        &host_pod(STATIC, "Always", "echo v1; sleep 3600"),
    )?;

    // 1. The mirror pod: annotations and owner.
    let node_uid = node
        .wait("the Node registered", T, || {
            Ok(kubectl_json(c, &["get", "node", NODE])
                .ok()
                .and_then(|n| n["metadata"]["uid"].as_str().map(str::to_owned)))
        })
        .context("the agent registers its Node")?;
    let first = wait_mirror(c, node, "the mirror pod created", |_| true)?;
    let hash = annotation(&first, "kubernetes.io/config.hash")
        .context("config.hash annotation")?
        .to_owned();
    ensure!(
        annotation(&first, "kubernetes.io/config.mirror") == Some(hash.as_str()),
        "config.mirror is the static pod's hash: {}",
        first["metadata"]
    );
    ensure!(
        annotation(&first, "kubernetes.io/config.source") == Some("file"),
        "config.source: {}",
        first["metadata"]
    );
    ensure!(
        annotation(&first, "kubernetes.io/config.seen").is_some(),
        "config.seen: {}",
        first["metadata"]
    );
    let owners = first["metadata"]["ownerReferences"]
        .as_array()
        .context("ownerReferences")?;
    ensure!(
        owners.len() == 1
            && owners[0]["apiVersion"] == "v1"
            && owners[0]["kind"] == "Node"
            && owners[0]["name"] == NODE
            && owners[0]["uid"] == node_uid.as_str()
            && owners[0]["controller"] == true,
        "one controller owner, the Node {NODE} ({node_uid}): {owners:?}"
    );
    ensure!(
        first["spec"]["nodeName"] == NODE,
        "nodeName: {}",
        first["spec"]
    );

    // 2. The static pod's status on its mirror pod.
    let status_ok = |p: &Value| {
        p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| {
                    cs.len() == 1
                        && cs[0]["name"] == "c"
                        && cs[0]["state"]["running"].is_object()
                        && cs[0]["containerID"]
                            .as_str()
                            .is_some_and(|id| id.starts_with("containerd://"))
                })
    };
    let running_mirror = wait_mirror(c, node, "the mirror pod Running", status_ok)?;
    let (container, restarts) = node.wait("the static pod's container running", T, || {
        running_container(node)
    })?;
    ensure!(
        running_mirror["status"]["containerStatuses"][0]["containerID"]
            == format!("containerd://{container}").as_str(),
        "the mirror pod shows the static pod's container {container}: {}",
        running_mirror["status"]
    );

    // 3. kubectl delete: a new mirror pod, the container untouched.
    let old_uid = uid(&running_mirror).to_owned();
    let t0 = Instant::now();
    c.kubectl(&["delete", "pod", &mirror_name(), "--timeout=120s"])?;
    println!(
        "kubectl delete of the mirror pod returned after {:?}",
        t0.elapsed()
    );
    let again = wait_mirror(c, node, "a new mirror pod after kubectl delete", |p| {
        uid(p) != old_uid && !p["metadata"]["deletionTimestamp"].is_string()
    })?;
    ensure!(
        annotation(&again, "kubernetes.io/config.mirror") == Some(hash.as_str()),
        "same static pod, same hash: {}",
        again["metadata"]
    );
    wait_mirror(c, node, "the new mirror pod Running", |p| {
        uid(p) == uid(&again) && status_ok(p)
    })?;
    ensure!(
        running_container(node)? == Some((container.clone(), restarts)),
        "deleting the mirror pod leaves the static pod's container {container} running, not restarted: {:?}",
        node.pod_containers(STATIC)?
    );

    // 4. An edited manifest: the mirror pod is replaced (new hash, new UID).
    node.write_manifest(
        "mirrored.yaml",
        &host_pod(STATIC, "Always", "echo v2; sleep 3600"),
    )?;
    let edited = wait_mirror(c, node, "the mirror pod replaced after the edit", |p| {
        annotation(p, "kubernetes.io/config.mirror").is_some_and(|h| h != hash)
            && uid(p) != uid(&again)
    })?;
    ensure!(
        annotation(&edited, "kubernetes.io/config.mirror")
            == annotation(&edited, "kubernetes.io/config.hash"),
        "the new mirror copies the new static pod: {}",
        edited["metadata"]
    );
    wait_mirror(c, node, "the replaced mirror pod Running", |p| {
        uid(p) == uid(&edited) && status_ok(p)
    })?;

    // 5. The API server frozen (SIGSTOP: connections hang) while the manifest changes: the
    //    static pod is replaced all the same, the mirror pod manager backs off, and once the
    //    API server runs again the mirror pod follows.
    let edited_hash = annotation(&edited, "kubernetes.io/config.mirror")
        .unwrap_or_default()
        .to_owned();
    let offset = node.agent_log().len();
    let frozen = Frozen::new(c)?;
    node.write_manifest(
        "mirrored.yaml",
        &host_pod(STATIC, "Always", "echo v3; sleep 3600"),
    )?;
    let t0 = Instant::now();
    node.wait(
        "a mirror pod call failing while the API server is frozen",
        T,
        || {
            let log = node.agent_log();
            let since = log.get(offset..).unwrap_or_default();
            Ok(since
                .lines()
                .any(|l| l.contains("mirror::manager") && l.contains("will retry"))
                .then_some(()))
        },
    )?;
    drop(frozen);
    let current = wait_mirror(c, node, "the mirror pod replaced after the thaw", |p| {
        annotation(p, "kubernetes.io/config.mirror").is_some_and(|h| h != edited_hash)
    })?;
    let since = node
        .agent_log()
        .get(offset..)
        .unwrap_or_default()
        .to_owned();
    println!(
        "API server frozen for {:?}; failed mirror pod calls logged meanwhile: {}",
        t0.elapsed(),
        since
            .lines()
            .filter(|l| l.contains("mirror::manager") && l.contains("will retry"))
            .count()
    );
    wait_mirror(c, node, "the thawed mirror pod Running", |p| {
        uid(p) == uid(&current) && status_ok(p)
    })?;

    // 6. An agent restart leaves a current mirror pod alone and removes the orphan of a
    //    manifest removed meanwhile.
    node.wait("the orphan-to-be's mirror pod", T, || {
        Ok(kubectl_json(c, &["get", "pod", &format!("{ORPHAN}-{NODE}")]).ok())
    })?;
    node.stop_agent(libc::SIGTERM)?;
    node.remove_manifest("orphan.yaml")?;
    let offset = node.agent_log().len();
    node.start_agent(&[&kubeconfig])?;
    let t0 = Instant::now();
    node.wait(
        "the orphaned mirror pod deleted after the restart",
        T,
        || {
            let out = c.kubectl(&["get", "pods", "-o", "name"])?;
            Ok((!out.lines().any(|l| l == format!("pod/{ORPHAN}-{NODE}"))).then_some(()))
        },
    )?;
    println!(
        "the orphaned mirror pod gone after the restart: {:?}",
        t0.elapsed()
    );
    // The pass that deleted the orphan saw every source, so it judged the other mirror too.
    let kept = mirror(c).context("the current mirror pod after the restart")?;
    let after = node
        .agent_log()
        .get(offset..)
        .unwrap_or_default()
        .to_owned();
    ensure!(
        uid(&kept) == uid(&current) && !after.contains("mirror pod created"),
        "the restart kept the current mirror pod {} (now {}); agent lines since the restart:\n{after}",
        uid(&current),
        uid(&kept)
    );

    // 7. The manifest removed: the mirror pod goes.
    node.remove_manifest("mirrored.yaml")?;
    let t0 = Instant::now();
    node.wait("the mirror pod gone", T, || {
        let out = c.kubectl(&["get", "pods", "-o", "name"])?;
        Ok((!out.lines().any(|l| l == format!("pod/{}", mirror_name()))).then_some(()))
    })?;
    println!(
        "the mirror pod gone after the manifest's removal: {:?}",
        t0.elapsed()
    );
    let log = node.agent_log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("mirror::")).collect();
    println!("agent lines about mirror pods:\n{}", ours.join("\n"));
    Ok(())
}
