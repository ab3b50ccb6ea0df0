//! Webhook authentication and authorization of the secure port (TokenReview and
//! SubjectAccessReview through `--kubeconfig`) on a real agent. No kube-apiserver can be had on
//! this machine kind and the project runs no mock servers, so the kubeconfig points at a port
//! where nothing listens: every review fails and the agent must fail closed, as the kubelet
//! does. A second start with a kubeconfig that does not exist must name the file in its log and
//! still fail closed. Requests go through curl.

use anyhow::{Context, Result};
use nodelet_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
/// A token shaped like a service-account JWT; it must never reach the agent's log.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.e2e-webhook-token-0f3a9c.signature";

/// A test CA and one client certificate it signed (CN e2e-user, O e2e-group).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nodelet-authz-pki-")
            .tempdir()?;
        let pki = Pki { dir };
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "authz e2e ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = p.self_signed(&ca_key)?;
        std::fs::write(pki.path("ca.pem"), ca.pem())?;

        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "e2e-user");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "e2e-group");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca, &ca_key)?;
        std::fs::write(pki.path("client.crt"), cert.pem())?;
        std::fs::write(pki.path("client.key"), key.serialize_pem())?;
        Ok(pki)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A kubeconfig whose API server is 127.0.0.1:1, where nothing listens.
    fn unreachable_kubeconfig(&self) -> Result<PathBuf> {
        let path = self.path("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    \
                 server: https://127.0.0.1:1\n    certificate-authority: {}\n\
                 users:\n- name: node\n  user:\n    token: not-a-real-credential\n\
                 contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: node\n\
                 current-context: gone\n",
                self.path("ca.pem").display()
            ),
        )?;
        Ok(path)
    }
}

/// How a request identifies itself.
#[derive(Clone, Copy)]
enum Cred {
    Nothing,
    Bearer,
    ClientCert,
}

/// Status code and body of GET `path` on the secure port.
fn get(pki: &Pki, port: u16, cred: Cred, path: &str) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"]);
    match cred {
        Cred::Nothing => {}
        Cred::Bearer => {
            cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        }
        Cred::ClientCert => {
            cmd.arg("--cert")
                .arg(pki.path("client.crt"))
                .arg("--key")
                .arg(pki.path("client.key"));
        }
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("no status from curl")?;
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// Restarts the agent with `--kubeconfig=<kubeconfig>` and waits for the secure port.
fn restart_with(node: &mut Node, pki: &Pki, port: u16, kubeconfig: &Path) -> Result<()> {
    node.stop_agent(libc::SIGTERM)?;
    node.start_agent(&[&format!("--kubeconfig={}", kubeconfig.display())])?;
    node.wait("the secure port", T, || {
        let r = get(pki, port, Cred::Nothing, "/pods")?;
        Ok((r.0 != 0).then_some(()))
    })
}

#[test]
fn webhook_authn_and_authz_fail_closed_when_the_api_server_cannot_be_asked() -> Result<()> {
    if !have("curl") {
        skip("curl is not installed")?;
        return Ok(());
    }
    let pki = Pki::new()?;
    let port = free_port()?;
    let Some(mut node) = Node::start(NodeOpts {
        extra_config: format!(
            "port: {port}\nreadOnlyPort: 0\nhealthzPort: 0\naddress: 127.0.0.1\n\
             authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n    \
             cacheTTL: 2m\n  x509:\n    clientCAFile: {}\n\
             authorization:\n  mode: Webhook\n",
            pki.path("ca.pem").display()
        ),
        ..Default::default()
    })?
    else {
        return Ok(());
    };

    // The API server is configured but unreachable: every review fails.
    let kubeconfig = pki.unreachable_kubeconfig()?;
    restart_with(&mut node, &pki, port, &kubeconfig)?;
    assert_eq!(
        get(&pki, port, Cred::Bearer, "/pods")?,
        (401, "Unauthorized\n".to_string()),
        "a bearer token nobody could review"
    );
    assert_eq!(get(&pki, port, Cred::Nothing, "/pods")?.0, 401);
    let (code, body) = get(&pki, port, Cred::ClientCert, "/pods")?;
    // As the kubelet: the authorizer could not decide, which is a server error, not a "no".
    assert_eq!(
        code, 500,
        "a CA-signed certificate without a SubjectAccessReview"
    );
    assert_eq!(
        body.trim(),
        "Authorization error (user=e2e-user, verb=get, resource=nodes, subresource(s)=[pods proxy])"
    );
    let (code, body) = get(&pki, port, Cred::ClientCert, "/stats/summary")?;
    assert_eq!(
        (code, body.trim()),
        (
            500,
            "Authorization error (user=e2e-user, verb=get, resource=nodes, subresource(s)=[stats])"
        )
    );
    let log = node.agent_log();
    assert!(log.contains("API client ready"), "{log}");
    assert!(log.contains("TokenReview failed"), "{log}");
    assert!(log.contains("SubjectAccessReview failed"), "{log}");
    assert!(
        !log.contains("without an API server (standalone)"),
        "the standalone fallback must not apply with a kubeconfig"
    );
    assert!(
        !log.contains("e2e-webhook-token"),
        "the token leaked into the log"
    );

    // A kubeconfig that cannot be loaded: named at start-up, and still closed.
    let missing = pki.path("no-such-kubeconfig");
    restart_with(&mut node, &pki, port, &missing)?;
    assert_eq!(get(&pki, port, Cred::Bearer, "/pods")?.0, 401);
    assert_eq!(get(&pki, port, Cred::ClientCert, "/pods")?.0, 500);
    let log = node.agent_log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("webhook disabled")
            && l.contains(&missing.display().to_string())),
        "{log}"
    );
    assert!(
        !log.contains("e2e-webhook-token"),
        "the token leaked into the log"
    );
    Ok(())
}
