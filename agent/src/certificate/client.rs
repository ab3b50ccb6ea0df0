//! API clients that follow a rotated client certificate without an agent restart.
//!
//! Why rebuild clients rather than resolve the certificate per TLS handshake: kube-rs builds
//! its rustls config and connection pool inside `Client::try_from(Config)`, so a dynamic
//! `ResolvesClientCert` would mean re-implementing kube's whole service stack (auth, retries,
//! timeouts, tracing) around our own connector. Instead the `kube::Client` handed out is a thin
//! one whose only service forwards each request to the *current* inner client, built the
//! usual way from the kubeconfig. Every [`RELOAD_CHECK`] a task looks at the certificate and
//! key files the kubeconfig names (target of the `kubelet-client-current.pem` symlink, size,
//! mtime); when they changed it builds a new inner client and swaps it in. New requests then
//! open new connections with the new certificate; the old client's connections end with the
//! requests (long watches: their timeout) still using them, while the old certificate, renewed
//! at 70-90 % of its life, is still valid. This is client-go's `ReloadTLSFiles` behaviour,
//! and it also follows certificates rotated by someone else (kubeadm, cert-manager) in place.
//! Users keep their `kube::Client` clones: nothing to re-wire anywhere.

use super::store;
use hyper::{Request, Response};
use kube::client::Body;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// How often the certificate files are looked at: a few `stat` calls, so a rotation reaches
/// the clients within seconds (client-go checks every 5 min and closes connections instead).
const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// What identifies the current certificate files: resolved path, size, mtime per file.
type Fingerprint = Vec<(Option<PathBuf>, Option<u64>, Option<SystemTime>)>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            (
                std::fs::canonicalize(f).ok(),
                meta.as_ref().map(std::fs::Metadata::len),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

/// A client from `build`, rebuilt whenever the client certificate files the kubeconfig at
/// `kubeconfig` names change; with inline or no client certificate, `build`'s client as is.
/// The watch task ends when the last clone of the returned client is dropped.
pub async fn reloading_client<E, F, Fut>(kubeconfig: &Path, build: F) -> Result<kube::Client, E>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<kube::Client, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let first = build().await?;
    let kc = kubeconfig.to_owned();
    let files = tokio::task::spawn_blocking(move || {
        let files = store::client_files(&kc);
        let fp = fingerprint(&files);
        (files, fp)
    })
    .await;
    let Ok((files, fp)) = files else {
        return Ok(first);
    };
    if files.is_empty() {
        return Ok(first);
    }
    let ns = first.default_namespace().to_owned();
    let slot = Arc::new(RwLock::new(first));
    tokio::spawn(follow(
        Arc::downgrade(&slot),
        kubeconfig.to_owned(),
        files,
        fp,
        build,
    ));
    Ok(kube::Client::new(Current { slot }, ns))
}

/// Swaps a new inner client into `slot` whenever the files' fingerprint changes.
async fn follow<E, F, Fut>(
    slot: Weak<RwLock<kube::Client>>,
    kubeconfig: PathBuf,
    files: Vec<PathBuf>,
    mut seen: Fingerprint,
    build: F,
) where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<kube::Client, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let files = Arc::new(files);
    loop {
        tokio::time::sleep(RELOAD_CHECK).await;
        if slot.strong_count() == 0 {
            return;
        }
        let f = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&f)).await else {
            continue;
        };
        if now == seen {
            continue;
        }
        match build().await {
            Ok(client) => {
                let Some(slot) = slot.upgrade() else { return };
                *slot.write().unwrap_or_else(|p| p.into_inner()) = client;
                info!(kubeconfig = %kubeconfig.display(), "client certificate changed; new API connections use it");
                seen = now;
            }
            // Half-written files (a rotation in progress elsewhere): the next check retries.
            Err(e) => {
                warn!(kubeconfig = %kubeconfig.display(), error = %e, "client certificate changed but cannot be loaded; keeping the previous one");
            }
        }
    }
}

/// The outer client's service: each request goes to the inner client current at that moment.
#[derive(Clone)]
struct Current {
    slot: Arc<RwLock<kube::Client>>,
}

impl tower::Service<Request<Body>> for Current {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The inner client buffers and applies its own back-pressure.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The lock is held only to clone the handle, never across the request.
        let client = self.slot.read().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move { client.send(req).await })
    }
}
