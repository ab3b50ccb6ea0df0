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

/// The kubelet's remotecommand options from the query.
fn stream_opts(pairs: &[(String, String)]) -> (bool, bool, bool, bool) {
    (
        flag(pairs, &["stdin", "input"]),
        flag(pairs, &["stdout", "output"]),
        flag(pairs, &["stderr", "error"]),
        flag(pairs, &["tty"]),
    )
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
    let (stdin, stdout, stderr, tty) = stream_opts(&pairs);
    let url = view
        .cri
        .exec(
            cri::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr: stderr && !tty,
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
    let (id, target) = view.running_container(ns, pod, container)?;
    let (stdin, stdout, stderr, tty) = stream_opts(&query_pairs(req.uri().query()));
    let url = view
        .cri
        .attach(
            cri::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr: stderr && !tty,
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
    let ports = query_pairs(req.uri().query())
        .into_iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| {
            v.parse::<i32>()
                .map_err(|_| ApiError::BadRequest(format!("invalid port {v:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
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
}
