//! The command line operators already have: kubelet unit-file flags start the agent, removed
//! flags are warned about, flags the kubelet never had are refused, config errors name the file.

use anyhow::Result;
use nodelet_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Result<Option<std::path::PathBuf>> {
    xtask::testing::nodelet_bin_or_skip()
}

#[test]
fn kubelet_unit_file_flags_start_the_agent() -> Result<()> {
    let Some(mut node) = Node::start(NodeOpts::default())? else {
        return Ok(());
    };
    node.stop_agent(libc::SIGTERM)?;
    // The ExecStart lines of real kubelet units, old and new.
    node.start_agent(&[
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--image-pull-progress-deadline=2m",
        "--node-ip=127.0.0.1",
        "--register-node=true",
        "--v=2",
        "--container-runtime=remote",
        "--network-plugin=cni",
        "--cni-bin-dir",
        "/opt/cni/bin",
        "--cni-conf-dir=/etc/cni/net.d",
        "--cgroup-driver=cgroupfs",
        "--rotate-server-certificates=false",
    ])?;
    node.write_manifest("p.yaml", &host_pod("p", "Always", "sleep 3600"))?;
    node.wait(
        "pod running under the legacy flags",
        Duration::from_secs(60),
        || {
            Ok(node
                .pod_containers("p")?
                .into_iter()
                .find(|c| c.state == running()))
        },
    )?;
    let log = node.agent_log();
    for removed in [
        "--container-runtime",
        "--network-plugin",
        "--cni-bin-dir",
        "--image-pull-progress-deadline",
    ] {
        assert!(
            log.contains(&format!("flag {removed} was removed from the kubelet")),
            "no deprecation warning for {removed}"
        );
    }
    assert!(log.contains("flag --rotate-server-certificates is not implemented yet; ignored"));
    Ok(())
}

#[test]
fn unknown_flag_fails_with_its_name() -> Result<()> {
    let Some(bin) = bin()? else { return Ok(()) };
    let out = Command::new(bin)
        .arg("--no-such-flag=1")
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    Ok(())
}

#[test]
fn bad_config_file_names_file_and_field() -> Result<()> {
    let Some(bin) = bin()? else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("kubelet.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nsyncFrequency: often\n",
    )?;
    let out = Command::new(bin)
        .arg(format!("--config={}", cfg.display()))
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&cfg.display().to_string()) && err.contains("syncFrequency"),
        "{err}"
    );
    Ok(())
}
