//! Pod networking files as the kubelet manages them (issue 14), on the real nodelet and
//! containerd with static pods: a pod on the pod network gets the managed `/etc/hosts` (its IP
//! with hostname and subdomain FQDN, then hostAliases) and, with `setHostnameAsFQDN`, the FQDN
//! as its kernel hostname; a host-network pod gets the node's `/etc/hosts` under the
//! host-network header, plus its aliases.
//!
//! Judged from the container log; no timing asserted. Skips without containerd or the agent
//! binary; fails instead under NODELET_REQUIRE_ALL=1.

use anyhow::{Result, ensure};
use nodelet_tests::{Node, NodeOpts};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: named}
spec:
  hostname: web
  subdomain: front
  setHostnameAsFQDN: true
  restartPolicy: Never
  hostAliases: [{ip: 10.9.8.7, hostnames: [foo.local, bar.local]}]
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "cat /etc/hosts; echo hostname=$(hostname); echo done"]
"#;

const HOST_POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:
  hostNetwork: true
  restartPolicy: Never
  hostAliases: [{ip: 10.9.8.6, hostnames: [baz.local]}]
  containers:
  - name: c
    image: busybox:1.35
    command: ["sh", "-c", "cat /etc/hosts; echo done"]
"#;

#[test]
fn etc_hosts_and_hostname_as_the_kubelet_writes_them() -> Result<()> {
    let Some(node) = Node::start(NodeOpts {
        extra_config: "clusterDomain: cluster.local\n".into(),
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    node.write_manifest("named.yaml", POD)?;
    node.write_manifest("hostnet.yaml", HOST_POD)?;
    let log = node.wait("pod named to print its /etc/hosts", T, || {
        Ok(node
            .container_log("default", "named", "c", 0)
            .filter(|l| l.contains("done")))
    })?;
    let fqdn = "web.front.default.svc.cluster.local";
    ensure!(
        log.contains("# Kubernetes-managed hosts file."),
        "no managed header:\n{log}"
    );
    ensure!(
        log.lines().any(|l| l.ends_with(&format!("\t{fqdn}\tweb"))),
        "no line for the pod's IP with its FQDN:\n{log}"
    );
    ensure!(
        log.contains("# Entries added by HostAliases.")
            && log.contains("10.9.8.7\tfoo.local\tbar.local"),
        "no hostAliases:\n{log}"
    );
    ensure!(
        log.contains(&format!("hostname={fqdn}")),
        "hostname is not the FQDN:\n{log}"
    );
    let log = node.wait("pod hostnet to print its /etc/hosts", T, || {
        Ok(node
            .container_log("default", "hostnet", "c", 0)
            .filter(|l| l.contains("done")))
    })?;
    let node_hosts = std::fs::read_to_string("/etc/hosts")?;
    let first = node_hosts
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    ensure!(
        log.contains("# Kubernetes-managed hosts file (host network).")
            && log.contains(first)
            && log.contains("10.9.8.6\tbaz.local"),
        "host-network /etc/hosts is not the node's plus aliases:\n{log}"
    );
    Ok(())
}
