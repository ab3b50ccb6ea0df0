//! The CRI client against a live containerd, and the agent across a runtime restart.

use anyhow::Result;
use nodelet_tests::*;
use proto::runtime::v1 as cri;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn cri_client_talks_to_containerd() -> Result<()> {
    let Some(node) = Node::start(NodeOpts::default())? else {
        return Ok(());
    };
    let client = node.block_on(proto::Client::connect(node.env.socket()))?;
    let version = node
        .block_on(client.runtime().version(cri::VersionRequest {
            version: "v1".into(),
        }))?
        .into_inner();
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    let status = node
        .block_on(
            client
                .runtime()
                .status(cri::StatusRequest { verbose: false }),
        )?
        .into_inner();
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status),
        "{conditions:?}"
    );
    let fs = node
        .block_on(client.image().image_fs_info(cri::ImageFsInfoRequest {}))?
        .into_inner();
    assert!(!fs.image_filesystems.is_empty());
    Ok(())
}

#[test]
fn agent_rides_out_a_runtime_restart() -> Result<()> {
    let Some(mut node) = Node::start(NodeOpts::default())? else {
        return Ok(());
    };
    node.write_manifest("a.yaml", &host_pod("a", "Always", "sleep 3600"))?;
    let before = node.wait("pod a running", T, || {
        Ok(node
            .pod_containers("a")?
            .into_iter()
            .find(|c| c.state == running()))
    })?;
    // containerd goes away long enough for the agent to notice, then comes back.
    node.env.restart_containerd(Duration::from_secs(3))?;
    node.wait("the agent noticed", T, || {
        Ok(node
            .agent_log()
            .contains("container runtime unreachable")
            .then_some(()))
    })?;
    // Same channel, reconnected: a new manifest is served and the old pod was left alone.
    node.write_manifest("b.yaml", &host_pod("b", "Always", "sleep 3600"))?;
    node.wait("pod b running after the restart", T, || {
        Ok(node
            .pod_containers("b")?
            .into_iter()
            .find(|c| c.state == running()))
    })?;
    let after = node.pod_containers("a")?;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, before.id, "the running pod was not restarted");
    // PLEG relists on its own one-second clock, independent of the pod that just started.
    node.wait("PLEG relisting again", T, || {
        Ok(node
            .agent_log()
            .contains("container runtime reachable again")
            .then_some(()))
    })?;
    Ok(())
}
