//! Client certificate rotation (client-go util/certificate `manager.go`): one task sleeps until
//! a jittered 70-90 % of the current certificate's lifetime, requests a new certificate with
//! the current credentials (the node's own, which the csrapproving controller approves as
//! `selfnodeclient`) and repoints `kubelet-client-current.pem`; the API clients follow by
//! themselves (`client.rs`). Failures retry with a doubling back-off, as client-go's.

use super::{CSR_WAIT, CertError, Settings, blocking, csr, store};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// First retry after a failed rotation; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between failed rotations (client-go caps at 5 min too).
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// When a certificate valid from `not_before` to `not_after` should be renewed: at
/// `0.7 + 0.2 * jitter` of its lifetime, `jitter` in [0, 1) (client-go
/// `nextRotationDeadline`: `wait.Jitter(total, 0.2) - 0.3 * total`).
pub fn deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let fraction = 0.7 + 0.2 * jitter.clamp(0.0, 1.0);
    not_before + total.mul_f64(fraction)
}

/// A number in [0, 1) from the standard library's per-process random hash keys (no RNG crate
/// for one draw per rotation).
fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Starts the rotation task when `s.rotate` is set and `--kubeconfig` uses the cert-dir's
/// current pair (as after bootstrapping, or kubeadm's kubelet.conf); otherwise says why not.
pub fn start_rotation(
    s: Settings,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) {
    if !s.rotate {
        return;
    }
    tasks.spawn(async move {
        let current = s.current_pem();
        let files = match blocking(&s.kubeconfig, |p| store::client_files(&p)).await {
            Ok(f) => f,
            Err(e) => {
                error!(error = %e, "client certificate rotation is off");
                return;
            }
        };
        if !files.iter().any(|f| f == &current) {
            warn!(kubeconfig = %s.kubeconfig.display(), expected = %current.display(), "client certificate rotation is off: the kubeconfig's client certificate is not the cert-dir's current one");
            return;
        }
        run(s, cancel).await;
    });
}

/// The rotation loop; returns when `cancel` fires.
async fn run(s: Settings, cancel: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match next_wait(&s).await {
            Ok(w) => w,
            Err(e) => {
                error!(error = %chain(&e), "cannot read the current client certificate; retrying");
                backoff
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match rotate(&s).await {
            Ok(file) => {
                info!(file = %file.display(), "client certificate rotated");
                backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                error!(error = %chain(&e), retry_in = ?backoff, "client certificate rotation failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// `e` and its sources, `: `-separated (`errors::error_chain` is in the same layer).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// How long until the current certificate should be renewed (zero when overdue).
async fn next_wait(s: &Settings) -> Result<Duration, CertError> {
    let (nb, na) = current_validity(&s.current_pem()).await?;
    let at = match s.rotate_after {
        Some(d) => SystemTime::now() + d,
        None => deadline(nb, na, jitter()),
    };
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    info!(expires_in = ?na.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO), rotate_in = ?wait, "client certificate rotation scheduled");
    Ok(wait)
}

async fn current_validity(pem: &Path) -> Result<(SystemTime, SystemTime), CertError> {
    blocking(pem, |p| {
        let text = std::fs::read_to_string(&p).map_err(|source| CertError::Read {
            path: p.clone(),
            source,
        })?;
        store::validity(&text, &p.display().to_string())
    })
    .await?
}

/// One rotation: a CSR with the current credentials (the bootstrap ones when the current
/// certificate has already expired and there are some), the new pair written and linked.
async fn rotate(s: &Settings) -> Result<std::path::PathBuf, CertError> {
    let (_, not_after) = current_validity(&s.current_pem()).await?;
    let creds = match &s.bootstrap_kubeconfig {
        Some(b) if SystemTime::now() >= not_after => b.clone(),
        _ => s.kubeconfig.clone(),
    };
    let kc = blocking(&creds, |p| {
        kube::config::Kubeconfig::read_from(&p).map_err(|source| CertError::Kubeconfig {
            path: p.clone(),
            source,
        })
    })
    .await??;
    let client = csr::client_from(&creds, kc).await?;
    let issued = csr::request(&client, &s.node_name, "csr-", CSR_WAIT).await?;
    info!(csr = %issued.csr, "rotation certificate issued");
    let (dir, cert, key) = (s.cert_dir.clone(), issued.cert_pem, issued.key_pem);
    blocking(&s.cert_dir, move |_| store::write_pair(&dir, &cert, &key)).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_between_70_and_90_percent_of_the_lifetime() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let life = Duration::from_secs(365 * 86_400);
        let na = nb + life;
        // The fraction of the lifetime at which `jitter` renews (to a microsecond).
        let at = |j| {
            let d = deadline(nb, na, j)
                .duration_since(nb)
                .expect("after notBefore");
            (d.as_secs_f64() / life.as_secs_f64() * 1e6).round() / 1e6
        };
        assert_eq!(at(0.0), 0.7);
        assert_eq!(at(0.5), 0.8);
        assert_eq!(at(1.0), 0.9);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
            assert!((0.7..=0.9).contains(&at(j)), "{j}");
        }
        // A certificate whose notAfter is before its notBefore is renewed at once.
        assert_eq!(deadline(na, nb, 0.5), na);
    }
}
