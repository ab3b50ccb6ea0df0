//! The loopback control plane of the pinned release: it comes up, its controllers work, a node
//! can TLS-bootstrap with the bootstrap token, NodeRestriction holds, and nothing outlives
//! `Cluster::stop`.
//!
//! The first run on a machine builds the binaries from the Go module proxy (minutes; cached
//! afterwards). Skips (with a printed reason) when they are not built and cannot be (no Go);
//! fails instead under `NODELET_REQUIRE_ALL=1`.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde_json::{Value, json};
use xtask::cluster::{self, Cluster, ClusterOpts, Component};
use xtask::{k8s, process};

const NODE: &str = "nodelet-e2e-node";
/// The node that TLS-bootstraps with the bootstrap token.
const BOOTSTRAPPED: &str = "nodelet-e2e-bootstrapped";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[test]
fn control_plane_bootstraps_nodes_and_restricts_them() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("nodelet-cluster-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let opts = ClusterOpts {
        node_name: NODE.to_owned(),
        ..ClusterOpts::new(dir.path())
    };
    let Some(c) = cluster::start_or_skip(opts)? else {
        return Ok(());
    };
    let pids: Vec<u32> = Component::ALL.iter().filter_map(|&x| c.pid(x)).collect();
    ensure!(
        pids.len() == 4,
        "expected 4 control-plane pids, got {pids:?}"
    );
    let checked = checks(&c);
    let needle = format!("{}/", c.dir().display());
    let stopped = c.stop();
    checked?;
    stopped?;
    ensure!(
        process::wait_gone(&pids, Duration::from_secs(1)),
        "control-plane processes {pids:?} outlived stop()"
    );
    let left = process::pids_mentioning(&needle);
    ensure!(
        left.is_empty(),
        "processes still mention {needle}: {left:?}"
    );
    Ok(())
}

fn checks(c: &Cluster) -> Result<()> {
    versions_are_the_pinned_release(c)?;
    let readyz = c.kubectl(&["get", "--raw", "/readyz"])?;
    ensure!(readyz.trim() == "ok", "/readyz said {readyz:?}");
    // Made by the controller-manager's serviceaccount controller.
    c.kubectl(&["get", "serviceaccount", "default", "-n", "default"])?;
    bootstrap_csr_is_approved_and_signed(c)?;
    node_restriction_holds(c)
}

fn versions_are_the_pinned_release(c: &Cluster) -> Result<()> {
    let out = c.kubectl(&["version", "-o", "json"])?;
    let v: Value = serde_json::from_str(&out).context("kubectl version printed no JSON")?;
    for side in ["clientVersion", "serverVersion"] {
        ensure!(
            v[side]["gitVersion"] == k8s::RELEASE,
            "{side} is {} , expected {}",
            v[side]["gitVersion"],
            k8s::RELEASE
        );
    }
    Ok(())
}

/// What a kubelet does on TLS bootstrap: a key, a CSR for `system:node:<name>` sent with the
/// bootstrap token, then wait for the certificate.
fn bootstrap_csr_is_approved_and_signed(c: &Cluster) -> Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{BOOTSTRAPPED}"));
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let name = "nodelet-e2e-bootstrap";
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": b64().encode(csr_pem.as_bytes()),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            // An ECDSA key: no key encipherment (the approver rejects it for non-RSA keys).
            "usages": ["digital signature", "client auth"],
        },
    });
    let boot = c.bootstrap_kubeconfig();
    c.kubectl_in(&boot, &["create", "-f", "-"], Some(&csr.to_string()))
        .context("creating the CSR with the bootstrap token")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let cert_b64 = loop {
        let out = c.kubectl_in(
            &boot,
            &["get", "csr", name, "-o", "jsonpath={.status.certificate}"],
            None,
        )?;
        if !out.trim().is_empty() {
            break out;
        }
        if Instant::now() >= deadline {
            let csr = c.kubectl(&["get", "csr", name, "-o", "yaml"])?;
            bail!("CSR {name} not signed within 120 s:\n{csr}");
        }
        thread::sleep(Duration::from_millis(250));
    };
    let requestor = c.kubectl(&["get", "csr", name, "-o", "jsonpath={.spec.username}"])?;
    let token_user = format!("system:bootstrap:{}", c.bootstrap_token().id);
    ensure!(
        requestor == token_user,
        "CSR requested by {requestor:?}, expected {token_user}"
    );
    let approved = c.kubectl(&[
        "get",
        "csr",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Approved\")].status}",
    ])?;
    ensure!(approved == "True", "CSR Approved condition is {approved:?}");

    let cert_pem = b64()
        .decode(cert_b64.trim())
        .context("status.certificate is not base64")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem).context("not a PEM certificate")?;
    let cert = pem.parse_x509().context("not an X.509 certificate")?;
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let cn = first(&mut cert.subject().iter_common_name());
    let org = first(&mut cert.subject().iter_organization());
    let issuer = first(&mut cert.issuer().iter_common_name());
    ensure!(
        cn == format!("system:node:{BOOTSTRAPPED}"),
        "signed CN {cn:?}"
    );
    ensure!(org == "system:nodes", "signed O {org:?}");
    ensure!(issuer == "nodelet-ca", "signed by {issuer:?}");

    // The signed certificate authenticates as the node.
    let kc = c.dir().join("bootstrapped.kubeconfig");
    write_cert_kubeconfig(c, &kc, &cert_pem, key.serialize_pem().as_bytes())?;
    let who = c.kubectl_in(
        &kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    )?;
    ensure!(
        who == format!("system:node:{BOOTSTRAPPED}"),
        "the bootstrapped certificate authenticates as {who:?}"
    );
    Ok(())
}

fn write_cert_kubeconfig(c: &Cluster, path: &Path, crt: &[u8], key: &[u8]) -> Result<()> {
    let ca = std::fs::read(c.ca_path())?;
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "c", "cluster": {
            "server": c.server(), "certificate-authority-data": b64().encode(ca) } }],
        "users": [{ "name": "u", "user": {
            "client-certificate-data": b64().encode(crt), "client-key-data": b64().encode(key) } }],
        "contexts": [{ "name": "c", "context": { "cluster": "c", "user": "u" } }],
        "current-context": "c",
    });
    std::fs::write(path, v.to_string()).with_context(|| format!("cannot write {}", path.display()))
}

fn node_json(name: &str) -> String {
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } }).to_string()
}

/// A node may register itself, but neither create nor modify another node.
fn node_restriction_holds(c: &Cluster) -> Result<()> {
    let node_kc = c.node_kubeconfig();
    c.kubectl_in(&node_kc, &["create", "-f", "-"], Some(&node_json(NODE)))
        .context("the node cannot register itself")?;
    c.kubectl_in(
        &c.admin_kubeconfig(),
        &["create", "-f", "-"],
        Some(&node_json("other-node")),
    )?;
    // `kubectl label` reads the node first, which the Node authorizer already refuses.
    forbidden(
        "labelling another node",
        c.kubectl_in(
            &node_kc,
            &["label", "node", "other-node", "nodelet-e2e=yes"],
            None,
        ),
        "Forbidden",
    )?;
    // A write without a read gets past the authorizer (nodes may update nodes) and is refused
    // by the NodeRestriction admission plugin.
    let mut other: Value =
        serde_json::from_str(&c.kubectl(&["get", "node", "other-node", "-o", "json"])?)?;
    other["metadata"]["labels"]["nodelet-e2e"] = json!("yes");
    let restricted = "is not allowed to modify node";
    forbidden(
        "updating another node",
        c.kubectl_in(&node_kc, &["replace", "-f", "-"], Some(&other.to_string())),
        restricted,
    )?;
    forbidden(
        "creating another node",
        c.kubectl_in(
            &node_kc,
            &["create", "-f", "-"],
            Some(&node_json("third-node")),
        ),
        restricted,
    )?;
    let labels = c.kubectl(&[
        "get",
        "node",
        "other-node",
        "-o",
        "jsonpath={.metadata.labels}",
    ])?;
    ensure!(
        !labels.contains("nodelet-e2e"),
        "other-node got labelled: {labels}"
    );
    Ok(())
}

/// `r` must be an error that mentions `expected`.
fn forbidden(what: &str, r: Result<String>, expected: &str) -> Result<()> {
    match r {
        Ok(out) => bail!("{what} was allowed: {out}"),
        Err(e) if format!("{e:#}").contains(expected) => Ok(()),
        Err(e) => Err(e).context(format!("{what} failed, but not with {expected:?}")),
    }
}
