//! PullImage through a local registry: pull when absent, imagePullPolicy honoured, a missing
//! image reported by name while other pods keep running.

use anyhow::Result;
use nodelet_tests::*;
use std::time::Duration;
use xtask::registry::Registry;

const T: Duration = Duration::from_secs(60);

fn pod(name: &str, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {image}\n    \
         imagePullPolicy: {policy}\n    command: [sh, -c, 'echo pulled-ok; sleep 3600']\n"
    )
}

#[test]
fn images_are_pulled_per_policy_and_missing_ones_reported() -> Result<()> {
    if xtask::testing::containerd_unavailable().is_some()
        || !xtask::process::have_program("docker-registry")
        || !xtask::process::have_program("skopeo")
    {
        return skip("needs root, containerd, docker-registry and skopeo");
    }
    let images = xtask::images::build(&xtask::images_dir())?;
    let registry = Registry::start()?;
    let host = registry.host();
    registry.push_image(&images.busybox, "e2e/busybox:1")?;
    let Some(node) = Node::start(NodeOpts {
        insecure_registries: vec![host.clone()],
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    let remote = format!("{host}/e2e/busybox:1");
    node.write_manifest("pulled.yaml", &pod("pulled", &remote, "IfNotPresent"))?;
    node.write_manifest(
        "missing.yaml",
        &pod("missing", &format!("{host}/e2e/nope:1"), "IfNotPresent"),
    )?;
    node.write_manifest(
        "never.yaml",
        &pod("never", &format!("{host}/e2e/absent:1"), "Never"),
    )?;
    node.write_manifest("local.yaml", &pod("local", "busybox:1.35", "Never"))?;

    node.wait("pulled image runs", T, || {
        Ok(node
            .container_log("default", "pulled", "c", 0)
            .filter(|l| l.contains("pulled-ok")))
    })?;
    node.wait("local image runs with policy Never", T, || {
        Ok(node
            .container_log("default", "local", "c", 0)
            .filter(|l| l.contains("pulled-ok")))
    })?;
    let log = node.wait("pull errors in the agent log", T, || {
        let log = node.agent_log();
        Ok((log.contains("ErrImagePull") && log.contains("ErrImageNeverPull")).then_some(log))
    })?;
    assert!(log.contains("e2e/nope:1"), "the missing image is named");
    assert!(
        log.contains("e2e/absent:1"),
        "the never-pull image is named"
    );
    assert!(
        log.contains(&format!("pulling image \"{remote}\"")),
        "Pulling event logged"
    );
    assert!(node.pod_containers("missing")?.is_empty());
    assert!(node.pod_containers("never")?.is_empty());
    // Pull back-off: the second failure waits, it is not retried in a tight loop.
    node.wait("image pull back-off", T, || {
        Ok(node.agent_log().contains("ImagePullBackOff").then_some(()))
    })?;
    Ok(())
}

#[test]
fn removing_a_pod_cancels_its_hanging_pull() -> Result<()> {
    // A "registry" that accepts connections and never answers: PullImage hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let host = silent.local_addr()?.to_string();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in silent.incoming().flatten() {
            if let Ok(mut v) = keep.lock() {
                v.push(conn);
            }
        }
    });
    let Some(node) = Node::start(NodeOpts {
        insecure_registries: vec![host.clone()],
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    node.write_manifest(
        "stuck.yaml",
        &pod("stuck", &format!("{host}/slow/image:1"), "IfNotPresent"),
    )?;
    node.wait("the pull to start", T, || {
        Ok(node.agent_log().contains("/slow/image:1\"").then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    node.remove_manifest("stuck.yaml")?;
    node.wait("the pod terminated while its pull still hangs", T, || {
        let log = node.agent_log();
        Ok(log
            .lines()
            .any(|l| l.contains("pod terminated") && l.contains("stuck-e2e-node"))
            .then_some(()))
    })?;
    assert!(node.pod_sandboxes("stuck")?.is_empty());
    drop(held);
    Ok(())
}
