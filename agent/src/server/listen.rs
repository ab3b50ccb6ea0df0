//! Connection handling (TLS, hyper, Go-like teardown), apart because it is transport, not API.

use super::auth::PeerCerts;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Go's http.Server DefaultMaxHeaderBytes (1 MiB) plus its 4 KiB slack: larger headers get 431.
const MAX_HEADER_BYTES: usize = (1 << 20) + 4096;

/// Serves `routes` on `addr` until `cancel`; a port that cannot be bound is logged and left off.
pub(super) async fn serve(
    name: &'static str,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    routes: Router,
    cancel: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(port = name, %addr, error = %e, "cannot listen; this endpoint is off");
            return;
        }
    };
    info!(port = name, addr = %listener.local_addr().unwrap_or(addr), tls = tls.is_some(), "serving");
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(port = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let routes = routes.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            match tls {
                Some(acc) => {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acc.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let certs = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| Arc::new(c.to_vec()));
                    connection(stream, PeerCerts(certs), routes, cancel).await;
                }
                None => connection(tcp, PeerCerts(None), routes, cancel).await,
            }
        });
    }
}

async fn connection<S>(io: S, peer: PeerCerts, routes: Router, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        routes.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEADER_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(Linger(Some(io))), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, "connection ended") },
        _ = cancel.cancelled() => {}
    }
}

/// A connection that, when dropped, keeps reading (and discarding) what the client still sends
/// for a moment before closing, as Go's net/http does (closeWriteAndWait). Without it, closing
/// on an oversized request with unread input resets the connection and the client never sees
/// its 431.
struct Linger<S: tokio::io::AsyncRead + Unpin + Send + 'static>(Option<S>);

impl<S: tokio::io::AsyncRead + Unpin + Send + 'static> Drop for Linger<S> {
    fn drop(&mut self) {
        let Some(mut io) = self.0.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 * 1024];
            let mut left: usize = 4 << 20;
            let drain = async {
                while left > 0 {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        });
    }
}

impl<S: tokio::io::AsyncRead + Unpin + Send + 'static> Linger<S> {
    fn io(&mut self) -> std::io::Result<&mut S> {
        self.0
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl<S: tokio::io::AsyncRead + Unpin + Send + 'static> tokio::io::AsyncRead for Linger<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl<S> tokio::io::AsyncWrite for Linger<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}
