//! Cluster-mode test kit: a [`Node`] joined to a real loopback control plane
//! (`xtask::cluster`), and the kubectl helpers the cluster tests share.

use crate::{NODE, Node, NodeOpts, free_port};
use anyhow::{Context, Result};
use serde_json::Value;
use std::time::Duration;
use xtask::cluster::{self, Cluster, ClusterOpts};

/// A node agent registered with a control plane; dropping it stops both.
pub struct ClusterNode {
    /// The control plane. Declared first: it stops before the node's containerd goes.
    pub cluster: Cluster,
    /// The agent and its containerd.
    pub node: Node,
    opts: ClusterOpts,
    _dir: tempfile::TempDir,
}

impl ClusterNode {
    /// Starts the agent as a cluster member: the node's kubeconfig, then `extra` flags.
    pub fn join(&mut self, extra: &[&str]) -> Result<()> {
        let flag = self.kubeconfig_flag();
        let mut args = vec![flag.as_str()];
        args.extend_from_slice(extra);
        self.node.start_agent(&args)
    }

    /// Waits for the Node to be Ready and for the default ServiceAccount (the ServiceAccount
    /// admission plugin needs it before pods can be created).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let (cluster, node) = (&self.cluster, &self.node);
        node.wait("the Node to be Ready", timeout, || {
            let Ok(n) = kubectl_json(cluster, &["get", "node", NODE]) else {
                return Ok(None);
            };
            Ok(condition(&n, "Ready")
                .is_some_and(|r| r["status"] == "True")
                .then_some(()))
        })?;
        node.wait("the default ServiceAccount", timeout, || {
            Ok(cluster.kubectl(&["get", "serviceaccount", "default"]).ok())
        })?;
        Ok(())
    }

    /// The agent's flag for the node's kubeconfig (to restart it as a cluster member).
    pub fn kubeconfig_flag(&self) -> String {
        format!("--kubeconfig={}", self.cluster.node_kubeconfig().display())
    }

    /// A control-plane outage: stops every component (etcd too), runs `during` on the node
    /// while they are down, then starts them again on the same state and returns the node
    /// with its new control plane.
    pub fn outage<T>(self, during: impl FnOnce(&mut Node) -> Result<T>) -> Result<(Self, T)> {
        let ClusterNode {
            cluster,
            mut node,
            opts,
            _dir,
        } = self;
        cluster
            .stop()
            .context("stopping the control plane for the outage")?;
        let out = during(&mut node)?;
        let cluster = Cluster::start(opts.clone()).context("starting the control plane again")?;
        Ok((
            ClusterNode {
                cluster,
                node,
                opts,
                _dir,
            },
            out,
        ))
    }
}

/// A temp dir named by `prefix` and the options of a control plane for [`NODE`] kept in it.
fn cluster_dir(prefix: &str) -> Result<(tempfile::TempDir, ClusterOpts)> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temp dir")?;
    let opts = ClusterOpts {
        node_name: NODE.to_owned(),
        ..ClusterOpts::new(dir.path())
    };
    Ok((dir, opts))
}

/// Starts containerd with the agent's `opts` (the agent is stopped again: it has not joined)
/// and a control plane for [`NODE`] whose state lives in a temp dir named by `prefix`;
/// `Ok(None)` after a printed skip when a component is missing. [`ClusterNode::join`] then
/// starts the agent as a cluster member.
pub fn node_and_cluster(prefix: &str, opts: NodeOpts) -> Result<Option<ClusterNode>> {
    let Some(mut node) = Node::start(opts)? else {
        return Ok(None);
    };
    node.stop_agent(libc::SIGTERM)?;
    let (dir, opts) = cluster_dir(prefix)?;
    let Some(cluster) = cluster::start_or_skip(opts.clone())? else {
        return Ok(None);
    };
    Ok(Some(ClusterNode {
        cluster,
        node,
        opts,
        _dir: dir,
    }))
}

/// A control plane (state in a temp dir named by `prefix`) and the agent joined to it, served
/// as kubeadm sets up the kubelet: on the host's address and a free port, client certificates of
/// the cluster CA, bearer tokens by TokenReview, every request authorized by
/// SubjectAccessReview, where the apiserver and metrics-server call it. `extra_config`: more
/// KubeletConfiguration lines. Returns the node (Ready not waited for), its address and port;
/// `Ok(None)` after a printed skip when a component is missing.
pub fn webhook_node(
    prefix: &str,
    extra_config: &str,
) -> Result<Option<(ClusterNode, std::net::IpAddr, u16)>> {
    // The cluster first: the node's config names its CA.
    let (dir, opts) = cluster_dir(prefix)?;
    let Some(cluster) = cluster::start_or_skip(opts.clone())? else {
        return Ok(None);
    };
    let ip = xtask::host_ip()?;
    let port = free_port()?;
    let Some(mut node) = Node::start(NodeOpts {
        extra_config: format!(
            "address: {ip}\nport: {port}\nhealthzPort: 0\nreadOnlyPort: 0\n\
             authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  \
             x509:\n    clientCAFile: {}\nauthorization:\n  mode: Webhook\n{extra_config}",
            cluster.ca_path().display()
        ),
        ..Default::default()
    })?
    else {
        return Ok(None);
    };
    node.stop_agent(libc::SIGTERM)?;
    let mut cn = ClusterNode {
        cluster,
        node,
        opts,
        _dir: dir,
    };
    cn.join(&[&format!("--node-ip={ip}")])?;
    Ok(Some((cn, ip, port)))
}

/// The KubeletConfiguration lines of a cluster node on loopback: its API on a free port of
/// 127.0.0.1, no healthz port (tests run side by side).
pub fn loopback_config() -> Result<String> {
    let port = free_port()?;
    Ok(format!(
        "port: {port}\nhealthzPort: 0\naddress: 127.0.0.1\n"
    ))
}

/// Starts containerd, the control plane and the agent with the node's kubeconfig, and waits
/// for the Node to be Ready and the default ServiceAccount to exist; `Ok(None)` after a printed
/// skip when a component is missing. `prefix` names the temp dir.
pub fn start_or_skip(prefix: &str, timeout: Duration) -> Result<Option<ClusterNode>> {
    let opts = NodeOpts {
        extra_config: loopback_config()?,
        ..Default::default()
    };
    let Some(mut cn) = node_and_cluster(prefix, opts)? else {
        return Ok(None);
    };
    cn.join(&[])?;
    cn.wait_ready(timeout)?;
    Ok(Some(cn))
}

/// `kubectl <args> -o json`, parsed.
pub fn kubectl_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = c.kubectl(&a)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {args:?} printed no JSON"))
}

/// `kubectl apply -f -` of `yaml` as the admin.
pub fn kubectl_apply(c: &Cluster, yaml: &str) -> Result<()> {
    c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(yaml))?;
    Ok(())
}

/// The object's status condition of `type_`.
pub fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A busybox pod in `default` bound by the scheduler, without a service-account token,
/// running `script` in container `c` from `image`.
pub fn pod_yaml(name: &str, image: &str, policy: &str, grace: u32, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         automountServiceAccountToken: false\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: c\n    \
         image: {image}\n    imagePullPolicy: IfNotPresent\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}
