//! TLS bootstrapping and client certificate rotation (issue 11), as kubeadm-joined kubelets
//! use them: the real nodelet, on a real containerd, joins the real loopback control plane
//! `xtask` builds with only `--bootstrap-kubeconfig` (a bootstrap token), a `--kubeconfig`
//! that does not exist yet and a `--cert-dir`, and
//! - a bootstrap kubeconfig that does not exist is an error naming the file, and the agent
//!   keeps serving standalone (its static pod runs);
//! - the node's CSR (signer kubernetes.io/kube-apiserver-client-kubelet, from
//!   system:bootstrap:<token id>) is approved by the controller-manager and issued; the
//!   certificate in cert-dir says CN=system:node:<NODE>, O=system:nodes, the file is 0600; the
//!   Node registers and is Ready;
//! - a restarted agent reuses that certificate: no new CSR;
//! - with `--rotate-certificates` and the test-only `NODELET_TEST_CERT_ROTATE_AFTER_SECONDS`
//!   (the deadline, normally 70-90 % of the lifetime), a second CSR, from system:node:<NODE>,
//!   is issued, `kubelet-client-current.pem` points at a new file, the agent's API clients
//!   switch to it without a restart, the Lease is still renewed afterwards and a pod bound to
//!   the node through the API runs and reports Running.
//!
//! Only what the API and the files show is judged; no timing is asserted (printed for
//! information). Skips when the control plane or containerd cannot be had, fails instead under
//! `NODELET_REQUIRE_ALL=1`.

use anyhow::{Context, Result, ensure};
use nodelet_tests::{NODE, Node, NodeOpts, free_port, host_pod, running};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use xtask::cluster::{self, Cluster, ClusterOpts};

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Seconds to the forced rotation deadline.
const ROTATE_AFTER: &str = "15";

fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = c.kubectl(&a)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {args:?} printed no JSON"))
}

/// The kubelet-client CSRs, oldest first.
fn node_csrs(c: &Cluster) -> Result<Vec<Value>> {
    let list = get_json(c, &["get", "csr"])?;
    let mut items: Vec<Value> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["spec"]["signerName"] == SIGNER)
        .collect();
    items.sort_by_key(|i| {
        i["metadata"]["creationTimestamp"]
            .as_str()
            .map(str::to_owned)
    });
    Ok(items)
}

fn approved_and_issued(csr: &Value) -> bool {
    let approved = csr["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Approved" && c["status"] == "True")
    });
    approved
        && csr["status"]["certificate"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
}

fn node_ready(c: &Cluster) -> Option<Value> {
    let n = get_json(c, &["get", "node", NODE]).ok()?;
    let ready = n["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    ready.then_some(n)
}

fn lease_renew_time(c: &Cluster) -> Option<String> {
    let l = get_json(c, &["get", "lease", "-n", "kube-node-lease", NODE]).ok()?;
    l["spec"]["renewTime"].as_str().map(str::to_owned)
}

/// Subject of the first certificate in the PEM file at `path`.
fn subject(path: &Path) -> Result<String> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
        .map_err(|e| anyhow::anyhow!("{}: no PEM: {e}", path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not X.509: {e}", path.display()))?;
    Ok(cert.subject().to_string())
}

#[test]
fn a_node_bootstraps_its_client_certificate_reuses_it_and_rotates_it() -> Result<()> {
    let port = free_port()?;
    let Some(mut node) = Node::start(NodeOpts {
        extra_config: format!("port: {port}\nhealthzPort: 0\naddress: 127.0.0.1\n"),
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    let dir = tempfile::Builder::new()
        .prefix("nodelet-cluster-bootstrap-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let opts = ClusterOpts {
        node_name: NODE.to_owned(),
        ..ClusterOpts::new(dir.path().join("cluster"))
    };
    let Some(c) = cluster::start_or_skip(opts)? else {
        return Ok(());
    };
    node.stop_agent(libc::SIGTERM)?;
    let kubeconfig = dir.path().join("kubelet.conf");
    let cert_dir = dir.path().join("pki");
    let kubeconfig_flag = format!("--kubeconfig={}", kubeconfig.display());
    let cert_dir_flag = format!("--cert-dir={}", cert_dir.display());

    // Bad input: the bootstrap kubeconfig does not exist.
    let missing = dir.path().join("no-such-bootstrap.kubeconfig");
    let missing_flag = format!("--bootstrap-kubeconfig={}", missing.display());
    node.write_manifest(
        "standalone.yaml",
        &host_pod("standalone", "Always", "sleep 3600"),
    )?;
    node.start_agent(&[&missing_flag, &kubeconfig_flag, &cert_dir_flag])?;
    node.wait("the bootstrap error naming the file", T, || {
        let log = node.agent_log();
        Ok(log
            .lines()
            .any(|l| {
                l.contains("TLS bootstrapping failed") && l.contains(&*missing.to_string_lossy())
            })
            .then_some(()))
    })?;
    node.wait("the static pod running without a cluster", T, || {
        let cs = node.pod_containers("standalone")?;
        Ok(cs.iter().any(|c| c.state == running()).then_some(()))
    })?;
    ensure!(
        !kubeconfig.exists(),
        "a kubeconfig was written without a certificate"
    );
    node.stop_agent(libc::SIGTERM)?;

    // Bootstrap with the token.
    let bootstrap_flag = format!(
        "--bootstrap-kubeconfig={}",
        c.bootstrap_kubeconfig().display()
    );
    let flags = [&bootstrap_flag[..], &kubeconfig_flag, &cert_dir_flag];
    let started = Instant::now();
    node.start_agent(&flags)?;
    let registered = node.wait("the Node to be Ready", T, || Ok(node_ready(&c)))?;
    eprintln!(
        "cluster_bootstrap: agent start -> CSR issued -> Node Ready in {:.1} s (information, not a limit)",
        started.elapsed().as_secs_f64()
    );
    let csrs = node_csrs(&c)?;
    ensure!(csrs.len() == 1, "expected one node CSR, got {}", csrs.len());
    let first = &csrs[0];
    ensure!(
        approved_and_issued(first),
        "the CSR is not approved and issued: {first}"
    );
    let token_user = format!("system:bootstrap:{}", c.bootstrap_token().id);
    ensure!(
        first["spec"]["username"] == token_user.as_str(),
        "CSR from {}",
        first["spec"]["username"]
    );
    let current = cert_dir.join("kubelet-client-current.pem");
    let sub = subject(&current)?;
    ensure!(
        sub.contains(&format!("CN=system:node:{NODE}")),
        "subject {sub}"
    );
    ensure!(sub.contains("O=system:nodes"), "subject {sub}");
    let first_file = std::fs::canonicalize(&current)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first_file)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "{} has mode {mode:o}", first_file.display());
    }
    ensure!(kubeconfig.exists(), "--kubeconfig was not written");
    let uid = registered["metadata"]["uid"].clone();

    // Restart: the certificate is reused, no new CSR.
    node.stop_agent(libc::SIGTERM)?;
    let before = lease_renew_time(&c);
    node.start_agent(&flags)?;
    node.wait("the lease renewed by the restarted agent", T, || {
        Ok(lease_renew_time(&c).filter(|t| Some(t) != before.as_ref()))
    })?;
    ensure!(
        node_csrs(&c)?.len() == 1,
        "the restarted agent made a new CSR"
    );
    ensure!(
        node.agent_log().contains("no bootstrap needed"),
        "the restarted agent did not say it reused its certificate"
    );
    ensure!(
        std::fs::canonicalize(&current)? == first_file,
        "the current certificate changed"
    );

    // Rotation, forced early by the test-only deadline.
    node.stop_agent(libc::SIGTERM)?;
    let reloads_before = node
        .agent_log()
        .matches("client certificate changed")
        .count();
    let rotate = [
        &bootstrap_flag[..],
        &kubeconfig_flag,
        &cert_dir_flag,
        "--rotate-certificates",
    ];
    let started = Instant::now();
    node.start_agent_env(
        &rotate,
        &[("NODELET_TEST_CERT_ROTATE_AFTER_SECONDS", ROTATE_AFTER)],
    )?;
    let second = node.wait("a second CSR approved and issued", T, || {
        let csrs = node_csrs(&c)?;
        Ok(csrs.get(1).filter(|s| approved_and_issued(s)).cloned())
    })?;
    eprintln!(
        "cluster_bootstrap: rotation CSR issued {:.1} s after the agent start (deadline {ROTATE_AFTER} s; information)",
        started.elapsed().as_secs_f64()
    );
    let node_user = format!("system:node:{NODE}");
    ensure!(
        second["spec"]["username"] == node_user.as_str(),
        "rotation CSR from {}",
        second["spec"]["username"]
    );
    node.wait(
        "kubelet-client-current.pem pointing at a new file",
        T,
        || Ok((std::fs::canonicalize(&current)? != first_file).then_some(())),
    )?;
    let sub = subject(&current)?;
    ensure!(
        sub.contains(&format!("CN=system:node:{NODE}")),
        "rotated subject {sub}"
    );
    node.wait(
        "the API clients switching to the new certificate",
        T,
        || {
            let n = node
                .agent_log()
                .matches("client certificate changed")
                .count();
            Ok((n > reloads_before).then_some(()))
        },
    )?;
    let after = lease_renew_time(&c);
    node.wait("the lease renewed after the rotation", T, || {
        Ok(lease_renew_time(&c).filter(|t| Some(t) != after.as_ref()))
    })?;
    // The pod watch and the status writes run on the rotated credentials too.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: after-rotation\n  namespace: default\n\
         spec:\n  nodeName: {NODE}\n  hostNetwork: true\n  automountServiceAccountToken: false\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
         imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n"
    );
    c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(&pod))?;
    node.wait("the API's pod Running after the rotation", T, || {
        let p = get_json(&c, &["get", "pod", "after-rotation"])?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })?;
    let again = node.wait("the Node still Ready", T, || Ok(node_ready(&c)))?;
    ensure!(again["metadata"]["uid"] == uid, "the Node was recreated");
    let log = node.agent_log();
    eprintln!(
        "cluster_bootstrap: {} CSRs in all, {} client reloads logged",
        node_csrs(&c)?.len(),
        log.matches("client certificate changed").count()
    );
    for l in log.lines().filter(|l| {
        [
            "bootstrap",
            "certificate signing request",
            "client certificate",
        ]
        .iter()
        .any(|w| l.contains(w))
    }) {
        eprintln!("cluster_bootstrap: agent: {l}");
    }
    ensure!(!log.contains("panicked"), "the agent panicked:\n{log}");
    node.stop_agent(libc::SIGTERM)?;
    c.stop()
}
