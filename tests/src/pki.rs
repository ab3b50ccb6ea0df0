//! A test PKI: a CA the agent is told to trust for client certificates (x509 client auth)
//! and one client certificate it signed, as kube-prometheus and `kubectl exec` present.

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// A test CA and one client certificate it signed (O system:masters).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Writes `ca.pem`, and `client.crt` and `client.key` for user `client_cn`, into a new
    /// temp dir.
    pub fn new(client_cn: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("nodelet-pki-").tempdir()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "nodelet e2e ca");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = ca.self_signed(&ca_key)?;
        let mut client = rcgen::CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, client_cn);
        client
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = client.signed_by(&key, &ca, &ca_key)?;
        let pki = Pki { dir };
        std::fs::write(pki.path("ca.pem"), ca.pem())?;
        std::fs::write(pki.path("client.crt"), cert.pem())?;
        std::fs::write(pki.path("client.key"), key.serialize_pem())?;
        Ok(pki)
    }

    /// A file of this PKI.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// KubeletConfiguration lines: secure port only, x509 client auth, AlwaysAllow.
    pub fn server_config(&self, port: u16) -> String {
        format!(
            "port: {port}\nreadOnlyPort: 0\nhealthzPort: 0\naddress: 127.0.0.1\n\
             authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: false\n  \
             x509:\n    clientCAFile: {}\nauthorization:\n  mode: AlwaysAllow\n",
            self.path("ca.pem").display()
        )
    }

    /// GET `path` on the agent's secure port with the client certificate (curl).
    pub fn get(&self, port: u16, path: &str) -> Result<String> {
        let out = Command::new("curl")
            .args(["-sfk", "--max-time", "20", "--cert"])
            .arg(self.path("client.crt"))
            .arg("--key")
            .arg(self.path("client.key"))
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()?;
        if !out.status.success() {
            bail!("GET {path}: {:?}", out.status);
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}
