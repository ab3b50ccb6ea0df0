//! `/exec`, `/attach`, `/portForward` and `/run` (kubelet server.go getExec/getAttach/
//! getPortForward/getRun). The streaming calls ask the runtime for a URL on its own streaming
//! server and proxy the (SPDY or WebSocket) upgrade to it, as the kubelet does since
//! --redirect-container-streaming went away; `/run` is one ExecSync.

use super::NodeView;
use super::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use proto::runtime::v1 as cri;

/// Decodes a query string into pairs (repeated keys kept, `+` as space).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    q.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(kv), String::new()),
        })
        .collect()
}

fn flag(pairs: &[(String, String)], names: &[&str]) -> bool {
    pairs.iter().any(|(k, v)| {
        names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True" | "TRUE")
    })
}

/// The kubelet's remotecommand options from the query: (stdin, stdout, stderr, tty). With a tty
/// stderr is dropped (one terminal stream); asking for no stream at all is a 400, as in the
/// kubelet's remotecommand NewOptions (the runtime would refuse it with a less useful error).
fn stream_opts(pairs: &[(String, String)]) -> Result<(bool, bool, bool, bool), ApiError> {
    let (stdin, stdout, stderr, tty) = (
        flag(pairs, &["stdin", "input"]),
        flag(pairs, &["stdout", "output"]),
        flag(pairs, &["stderr", "error"]),
        flag(pairs, &["tty"]),
    );
    if !stdin && !stdout && !stderr {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        ));
    }
    Ok((stdin, stdout, stderr && !tty, tty))
}

/// Whether `req` asks for a WebSocket (apimachinery wsstream.IsWebSocketRequest): `Upgrade:
/// websocket` plus an `upgrade` token in `Connection`.
fn is_websocket(req: &Request) -> bool {
    let h = req.headers();
    let upgrade = h.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    });
    let connection = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    upgrade && connection
}

/// The ports of a port-forward request (kubelet portforward.NewV4Options): `port` may repeat
/// and hold comma-separated lists; each must be 1-65535. WebSocket clients must name at least
/// one, since their channels are laid out per port up front; SPDY clients name each port in
/// the header of the streams they open later, so for them the list may be empty.
fn forward_ports(pairs: &[(String, String)], websocket: bool) -> Result<Vec<i32>, ApiError> {
    let mut ports = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "port") {
        if v.is_empty() {
            return Err(ApiError::BadRequest(
                "query parameter \"port\" cannot be empty".into(),
            ));
        }
        for p in v.split(',') {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(i32::from(n)),
                _ => return Err(ApiError::BadRequest(format!("invalid port {p:?}"))),
            }
        }
    }
    if websocket && ports.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter \"port\" is required".into(),
        ));
    }
    Ok(ports)
}

/// `GET|POST /exec/{ns}/{pod}/{container}?command=...`.
pub async fn exec(
    view: &NodeView,
    ns: &str,
    pod: &str,
    container: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (id, target) = view.running_container(ns, pod, container)?;
    let pairs = query_pairs(req.uri().query());
    let cmd: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if cmd.is_empty() {
        return Err(ApiError::BadRequest("missing command".into()));
    }
    let (stdin, stdout, stderr, tty) = stream_opts(&pairs)?;
    let url = view
        .cri
        .exec(
            cri::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
                ..Default::default()
            },
            &target,
        )
        .await?;
    proxy(&url, req).await
}

/// `GET|POST /attach/{ns}/{pod}/{container}`.
pub async fn attach(
    view: &NodeView,
    ns: &str,
    pod: &str,
    container: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (stdin, stdout, stderr, tty) = stream_opts(&query_pairs(req.uri().query()))?;
    let (id, target) = view.running_container(ns, pod, container)?;
    let url = view
        .cri
        .attach(
            cri::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr,
                ..Default::default()
            },
            &target,
        )
        .await?;
    proxy(&url, req).await
}

/// `GET|POST /portForward/{ns}/{pod}`.
pub async fn port_forward(
    view: &NodeView,
    ns: &str,
    pod: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let ports = forward_ports(&query_pairs(req.uri().query()), is_websocket(&req))?;
    let p = view.pod(ns, pod)?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let ready = cri::PodSandboxState::SandboxReady as i32;
    let sandbox = view
        .cri
        .list_pod_sandboxes(Some(&uid))
        .await?
        .into_iter()
        .find(|s| s.state == ready)
        .ok_or_else(|| ApiError::NotFound(format!("pod {ns}/{pod} has no running sandbox")))?;
    let url = view
        .cri
        .port_forward(
            cri::PortForwardRequest {
                pod_sandbox_id: sandbox.id,
                port: ports,
            },
            &format!("{ns}/{pod}"),
        )
        .await?;
    proxy(&url, req).await
}

/// `POST /run/{ns}/{pod}/{container}?cmd=...`: stdout then stderr of the command.
pub async fn run(
    view: &NodeView,
    ns: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let (id, target) = view.running_container(ns, pod, container)?;
    let cmd: Vec<String> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "cmd")
        .flat_map(|(_, v)| v.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    if cmd.is_empty() {
        return Err(ApiError::BadRequest("missing cmd".into()));
    }
    let r = view
        .cri
        .exec_sync(&id, cmd, std::time::Duration::ZERO, &target)
        .await?;
    if r.exit_code != 0 {
        return Err(ApiError::ExitCode { code: r.exit_code });
    }
    let mut out = r.stdout;
    out.extend_from_slice(&r.stderr);
    Ok((StatusCode::OK, out).into_response())
}

/// Forwards `req` to the runtime's streaming URL; a 101 answer joins the two upgraded
/// connections byte for byte.
async fn proxy(url: &str, mut req: Request) -> Result<Response, ApiError> {
    let proxy_err = |e: Box<dyn std::error::Error + Send + Sync>| ApiError::Proxy(e);
    let uri: Uri = url.parse().map_err(|e| proxy_err(Box::new(e)))?;
    if uri.scheme_str() != Some("http") {
        // containerd's enable_tls_streaming: its certificate is self-signed, so the kubelet's
        // default transport could not verify it either.
        return Err(proxy_err(
            format!("streaming URL {url}: only plain http is supported").into(),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| proxy_err(format!("streaming URL {url} has no host").into()))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| proxy_err(Box::new(e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| proxy_err(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming proxy connection ended");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| proxy_err(Box::new(e)))?;
    let out = out
        .header(header::HOST, host)
        .body(body)
        .map_err(|e| proxy_err(Box::new(e)))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| proxy_err(Box::new(e)))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((c, b)) => {
                    let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                }
                Err(e) => tracing::debug!(error = %e, "stream upgrade failed"),
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_query_keys_are_kept_and_decoded() {
        let p = super::query_pairs(Some("command=sh&command=-c&command=echo+a%20b&tty=1"));
        let cmds: Vec<_> = p
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmds, ["sh", "-c", "echo a b"]);
        assert!(super::flag(&p, &["tty"]));
    }

    #[test]
    fn a_tty_drops_stderr_and_no_stream_at_all_is_a_bad_request() {
        let opts = |q| super::stream_opts(&super::query_pairs(Some(q)));
        assert_eq!(
            opts("stdin=1&stdout=1&stderr=1&tty=1").ok(),
            Some((true, true, false, true))
        );
        assert_eq!(
            opts("stdout=1&stderr=1").ok(),
            Some((false, true, true, false))
        );
        assert!(opts("tty=1").is_err());
        assert!(opts("stdout=0").is_err());
    }

    #[test]
    fn forwarded_ports_repeat_and_split_on_commas() {
        let ports = |q, ws| super::forward_ports(&super::query_pairs(Some(q)), ws);
        assert_eq!(
            ports("port=8080&port=53,9", true).ok(),
            Some(vec![8080, 53, 9])
        );
        assert!(ports("port=0", false).is_err());
        assert!(ports("port=65536", false).is_err());
        assert!(ports("port=", false).is_err());
        assert!(ports("port=80,", false).is_err());
        // SPDY clients name ports per stream; WebSocket ones must list them up front.
        assert_eq!(ports("", false).ok(), Some(vec![]));
        assert!(ports("", true).is_err());
    }

    #[test]
    fn websocket_requests_need_both_upgrade_headers() {
        let req = |headers: &[(&str, &str)]| {
            let mut b = axum::http::Request::builder();
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(axum::body::Body::empty())
                .expect("valid test request")
        };
        assert!(super::is_websocket(&req(&[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "WebSocket"),
        ])));
        assert!(!super::is_websocket(&req(&[("Upgrade", "websocket")])));
        assert!(!super::is_websocket(&req(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
        ])));
    }
}
