//! Serving certificate and client-certificate handling for the secure port.
//!
//! As the kubelet (Go's `tls.RequestClientCert`), a client certificate is asked for but not
//! verified during the handshake: a client with no certificate or one from another CA still
//! gets an HTTP answer (401), rather than a failed handshake. The handshake does check that the
//! client holds the key of what it presents; the chain is checked against the client CA by
//! [`ClientAuthenticator`] per request.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors setting up TLS; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("reading {what} {path}")]
    Pem {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file held nothing usable.
    #[error("{what} {path} holds no {expected}")]
    Empty {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// Writing the self-signed certificate failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed serving certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle is unusable.
    #[error("client CA file {path}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// The serving certificate chain and key: from the files given, or the self-signed pair under
/// `<root-dir>/pki` (reused when present, generated otherwise, as the kubelet does).
pub fn serving_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    root_dir: &Path,
    node_name: &str,
    ips: &[std::net::IpAddr],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        _ => {
            let dir = root_dir.join("pki");
            let (c, k) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
            if !(c.exists() && k.exists()) {
                generate_self_signed(&dir, &c, &k, node_name, ips)?;
            }
            (c, k)
        }
    };
    let chain = read_certs("tlsCertFile", &cert)?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|source| TlsError::Pem {
        what: "tlsPrivateKeyFile",
        path: key.clone(),
        source,
    })?;
    Ok((chain, key))
}

fn generate_self_signed(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    node_name: &str,
    ips: &[std::net::IpAddr],
) -> Result<(), TlsError> {
    let mut sans = vec![node_name.to_string(), "localhost".to_string()];
    sans.extend(ips.iter().map(ToString::to_string));
    sans.push("127.0.0.1".into());
    sans.dedup();
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!(
            "{node_name}@{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        ),
    );
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let write = |path: &Path, data: String, mode: u32| -> Result<(), TlsError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| TlsError::Write {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        std::io::Write::write_all(&mut f, data.as_bytes()).map_err(err)
    };
    write(key_path, key.serialize_pem(), 0o600)?;
    write(cert_path, cert.pem(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed serving certificate");
    Ok(())
}

/// Checks client certificate chains against the configured client CA.
#[derive(Debug, Clone)]
pub struct ClientAuthenticator {
    verifier: Arc<dyn ClientCertVerifier>,
}

/// A user as the kubelet's x509 authenticator names it: CN is the user, O the groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUser {
    /// Common name.
    pub name: String,
    /// Organizations.
    pub groups: Vec<String>,
}

impl ClientAuthenticator {
    /// Loads the CA bundle.
    pub fn from_file(path: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in read_certs("clientCAFile", path)? {
            roots.add(c).map_err(TlsError::Rustls)?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|source| TlsError::ClientCa {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { verifier })
    }

    /// The user of a verified chain, or `None` when it does not chain to the CA (or is expired).
    pub fn authenticate(&self, chain: &[CertificateDer<'static>]) -> Option<CertUser> {
        let (end, intermediates) = chain.split_first()?;
        self.verifier
            .verify_client_cert(end, intermediates, UnixTime::now())
            .ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(end).ok()?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_string();
        let groups = cert
            .subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(String::from))
            .collect();
        Some(CertUser { name, groups })
    }

    fn hints(&self) -> &[DistinguishedName] {
        self.verifier.root_hint_subjects()
    }
}

/// Asks for a client certificate, proves possession of its key, leaves the chain to HTTP.
#[derive(Debug)]
struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls server configuration of the secure port.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: Option<&ClientAuthenticator>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(c) => builder.with_client_cert_verifier(Arc::new(RequestClientCert {
            hints: c.hints().to_vec(),
            provider,
        })),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
