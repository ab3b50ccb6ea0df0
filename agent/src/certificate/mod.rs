//! TLS bootstrapping and client certificate rotation (kubelet pkg/kubelet/certificate/bootstrap
//! and k8s.io/client-go/util/certificate).
//!
//! - [`bootstrap`] runs once before any API client exists: when `--kubeconfig` holds a client
//!   certificate that is valid now it is used as is; otherwise the `--bootstrap-kubeconfig`
//!   credentials (a bootstrap token) create a CertificateSigningRequest for
//!   `kubernetes.io/kube-apiserver-client-kubelet` (CN=system:node:<node>, O=system:nodes, a new
//!   ECDSA P-256 key), wait until it is approved and issued, write
//!   `<cert-dir>/kubelet-client-<time>.pem` (certificate and key, 0600), point the symlink
//!   `kubelet-client-current.pem` at it and write `--kubeconfig` to use that symlink, as the
//!   kubelet does (kubeadm writes its kubelet.conf the same way).
//! - [`start_rotation`] (`rotateCertificates`) renews the certificate at a jittered 70-90 % of
//!   its lifetime with a new CSR sent with the current credentials, and repoints the symlink.
//! - [`reloading_client`] is how every API client of the agent sees the new certificate without
//!   a restart (see `client.rs` for why it rebuilds clients rather than resolving certificates
//!   per handshake).
//!
//! Test-only knob: `NODELET_TEST_CERT_ROTATE_AFTER_SECONDS=N` makes every rotation deadline
//! N seconds after the current certificate was loaded, instead of 70-90 % of its lifetime, so
//! that an end-to-end test sees a rotation within seconds. Nothing else reads it.

mod client;
mod csr;
mod rotation;
mod store;

pub use client::reloading_client;
pub use rotation::start_rotation;

use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::info;

/// The test-only rotation deadline override (seconds after the certificate was loaded).
const ROTATE_AFTER_ENV: &str = "NODELET_TEST_CERT_ROTATE_AFTER_SECONDS";

/// What bootstrapping and rotation need from the options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name: the certificate's subject is CN=system:node:<node>.
    pub node_name: String,
    /// `--kubeconfig`: read when it holds a valid certificate, else written.
    pub kubeconfig: PathBuf,
    /// `--bootstrap-kubeconfig`.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--cert-dir`.
    pub cert_dir: PathBuf,
    /// `--rotate-certificates` / rotateCertificates.
    pub rotate: bool,
    /// Test-only deadline override ([`ROTATE_AFTER_ENV`]).
    pub rotate_after: Option<Duration>,
}

impl Settings {
    /// Settings from the resolved flags; reads the test-only knob from the environment once.
    pub fn new(
        node_name: String,
        kubeconfig: PathBuf,
        bootstrap_kubeconfig: Option<PathBuf>,
        cert_dir: PathBuf,
        rotate: bool,
    ) -> Self {
        let rotate_after = std::env::var(ROTATE_AFTER_ENV)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Settings {
            node_name,
            kubeconfig,
            bootstrap_kubeconfig,
            cert_dir,
            rotate,
            rotate_after,
        }
    }

    /// `<cert-dir>/kubelet-client-current.pem`.
    pub fn current_pem(&self) -> PathBuf {
        store::current_path(&self.cert_dir)
    }
}

/// Errors of bootstrapping and rotation; each names the file or the CSR.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A kubeconfig names no cluster for its current context.
    #[error("kubeconfig {path}: no cluster for its current context")]
    NoCluster {
        /// The file.
        path: PathBuf,
    },
    /// No API client could be built from a kubeconfig.
    #[error("API client from kubeconfig {path}")]
    Client {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The private key or the CSR could not be made.
    #[error("private key and certificate request for node {node}")]
    Key {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The API server refused to create the CSR.
    #[error("creating a CertificateSigningRequest for node {node}")]
    CreateCsr {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Watching the CSR failed.
    #[error("waiting for CertificateSigningRequest {name}")]
    WaitCsr {
        /// The CSR.
        name: String,
        /// The cause.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// The CSR was not issued in time.
    #[error("CertificateSigningRequest {name} was not approved and issued within {after:?}")]
    CsrTimeout {
        /// The CSR.
        name: String,
        /// How long was waited.
        after: Duration,
    },
    /// The CSR was denied or failed.
    #[error("CertificateSigningRequest {name} is {condition}: {reason}: {message}")]
    CsrRefused {
        /// The CSR.
        name: String,
        /// `Denied` or `Failed`.
        condition: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// A certificate (issued, or read from a file) is not usable.
    #[error("certificate in {what}: {reason}")]
    Certificate {
        /// The file or the CSR it came from.
        what: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file, directory or symlink could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig to write could not be serialised.
    #[error("kubeconfig {path} to write")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A blocking file task did not finish.
    #[error("file task for {path}")]
    Blocking {
        /// The file it worked on.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How [`bootstrap`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrapped {
    /// `--kubeconfig` already had a client certificate valid now.
    Existing,
    /// There is no `--bootstrap-kubeconfig`: `--kubeconfig` is used as it is.
    NotRequested,
    /// A new certificate was issued through this CSR and `--kubeconfig` written.
    Issued {
        /// The CSR's name.
        csr: String,
        /// The certificate file written.
        file: PathBuf,
    },
}

/// How long a bootstrap or rotation CSR may wait for approval and issuance (the kubelet waits
/// up to an hour at bootstrap; a quarter of that keeps a node without an approver from
/// looking hung, and the error says what happened).
const CSR_WAIT: Duration = Duration::from_secs(15 * 60);

/// TLS bootstrapping (kubelet `bootstrap.LoadClientCert`): makes sure `--kubeconfig` holds a
/// client certificate valid now, requesting one with the bootstrap credentials if needed.
pub async fn bootstrap(s: &Settings) -> Result<Bootstrapped, CertError> {
    let kubeconfig = s.kubeconfig.clone();
    let valid = blocking(&kubeconfig, move |p| store::kubeconfig_cert_valid(&p)).await?;
    let boot = match (valid, &s.bootstrap_kubeconfig) {
        (Ok(()), _) => {
            info!(kubeconfig = %s.kubeconfig.display(), "kubeconfig holds a valid client certificate; no bootstrap needed");
            return Ok(Bootstrapped::Existing);
        }
        (Err(_), None) => return Ok(Bootstrapped::NotRequested),
        (Err(why), Some(b)) => {
            info!(kubeconfig = %s.kubeconfig.display(), reason = %why, bootstrap_kubeconfig = %b.display(), "requesting a client certificate with the bootstrap kubeconfig");
            b.clone()
        }
    };
    let bkc = blocking(&boot, |p| {
        kube::config::Kubeconfig::read_from(&p).map_err(|source| CertError::Kubeconfig {
            path: p.clone(),
            source,
        })
    })
    .await??;
    let cluster =
        store::current_cluster(&bkc).ok_or_else(|| CertError::NoCluster { path: boot.clone() })?;
    let client = csr::client_from(&boot, bkc).await?;
    let issued = csr::request(&client, &s.node_name, "node-csr-", CSR_WAIT).await?;
    let (dir, kc, node) = (s.cert_dir.clone(), s.kubeconfig.clone(), issued.clone());
    let file = blocking(&s.cert_dir, move |_| {
        let file = store::write_pair(&dir, &node.cert_pem, &node.key_pem)?;
        store::write_kubeconfig(&kc, &cluster, &store::current_path(&dir))?;
        Ok::<_, CertError>(file)
    })
    .await??;
    info!(csr = %issued.csr, file = %file.display(), kubeconfig = %s.kubeconfig.display(), "client certificate issued; kubeconfig written");
    Ok(Bootstrapped::Issued {
        csr: issued.csr,
        file,
    })
}

/// Runs `f(path)` on the blocking pool (file I/O), naming `path` if the task is lost.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce(PathBuf) -> T + Send + 'static,
) -> Result<T, CertError> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || f(p))
        .await
        .map_err(|source| CertError::Blocking {
            path: path.to_owned(),
            source,
        })
}
