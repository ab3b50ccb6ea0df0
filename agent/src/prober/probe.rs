//! Running one probe (kubelet pkg/kubelet/prober/prober.go runProbe and pkg/probe/{exec,http,
//! tcp,grpc}): exec through CRI ExecSync (the runtime manager makes the call), httpGet, tcpSocket
//! and grpc from the agent to the pod's IP, each bounded by `timeoutSeconds`.

use crate::kuberuntime::{ExecOutcome, RuntimeManager};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Most of a response body or command output kept for the event message (10 KiB, as the
/// kubelet's maxReadLength / maxRespBodyLength).
const MAX_OUTPUT: usize = 10 * 1024;
/// The kubelet's probe User-Agent (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.37";
/// Redirects followed to the same host before giving up (Go's http.Client limit).
const MAX_REDIRECTS: usize = 10;

/// A probe's verdict with its output (pkg/probe Result plus the output string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Success(String),
    /// Passed, with something worth an event (a redirect to another host).
    Warning(String),
    /// Failed; the string says why (for the `Unhealthy` event).
    Failure(String),
}

/// Where and how to run a probe.
pub struct Target<'a> {
    /// The container the probe belongs to (ports by name, env for exec expansion).
    pub container: &'a Container,
    /// The pod's IP (the default host).
    pub pod_ip: &'a str,
    /// The runtime's container ID (without the `containerd://` scheme).
    pub container_id: &'a str,
    /// `namespace/name (uid)` for CRI errors.
    pub pod: &'a str,
}

/// Runs the probe once. `Err` is "the probe could not be run" (the kubelet retries it and
/// keeps the previous result), not "the container is unhealthy".
pub async fn run(
    probe: &Probe,
    t: &Target<'_>,
    runtime: &RuntimeManager,
) -> Result<Outcome, String> {
    let timeout = Duration::from_secs(
        u64::try_from(probe.timeout_seconds.unwrap_or(1))
            .unwrap_or(1)
            .max(1),
    );
    if let Some(e) = &probe.exec {
        let cmd = expand_command(e.command.as_deref().unwrap_or_default(), t.container);
        return exec(runtime, t, cmd, timeout).await;
    }
    if let Some(h) = &probe.http_get {
        let port = resolve_port(&h.port, t.container)?;
        return Ok(http_get(h, t.pod_ip, port, timeout).await);
    }
    if let Some(s) = &probe.tcp_socket {
        let port = resolve_port(&s.port, t.container)?;
        let host = s
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(t.pod_ip);
        return Ok(tcp(host, port, timeout).await);
    }
    if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {}", g.port))?;
        let service = g.service.clone().unwrap_or_default();
        return Ok(super::grpc::check(t.pod_ip, port, service, timeout).await);
    }
    Err(format!(
        "missing probe handler for {}:{}",
        t.pod, t.container.name
    ))
}

/// `$(VAR)` references to the container's literal env values (ExpandContainerCommandOnlyStatic).
fn expand_command(cmd: &[String], c: &Container) -> Vec<String> {
    let env = c.env.as_deref().unwrap_or_default();
    let lookup = |k: &str| {
        env.iter()
            .find(|e| e.name == k)
            .map(|e| e.value.clone().unwrap_or_default())
    };
    cmd.iter()
        .map(|s| crate::kuberuntime::env::expand(s, &lookup))
        .collect()
}

async fn exec(
    runtime: &RuntimeManager,
    t: &Target<'_>,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<Outcome, String> {
    let shown = cmd.join(" ");
    match runtime
        .run_in_container(t.container_id, cmd, timeout, t.pod)
        .await
    {
        Ok(ExecOutcome::Exited { code, mut output }) => {
            output.truncate(MAX_OUTPUT);
            let out = String::from_utf8_lossy(&output).into_owned();
            Ok(if code == 0 {
                Outcome::Success(out)
            } else {
                Outcome::Failure(out)
            })
        }
        // The kubelet's remote runtime error for an exec past its deadline.
        Ok(ExecOutcome::TimedOut) => Ok(Outcome::Failure(format!(
            "command timed out: {shown:?} timed out after {}",
            go_duration(timeout)
        ))),
        Err(e) => Err(e.to_string()),
    }
}

/// Go's Duration string for whole seconds (`1s`, `1m30s`).
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// probe.ResolveContainerPort: a number, or a port name looked up in the container's ports.
pub fn resolve_port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    let port = match p {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| i64::from(cp.container_port))
            .ok_or_else(|| format!("port {name:?} not found"))?,
    };
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {port}"))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects within the deadline, worded as Go's dialer (`dial tcp H:P: connect: connection refused`).
async fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let why = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => e.to_string(),
            };
            Err(format!("dial tcp {addr}: connect: {why}"))
        }
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// tcpSocket: the probe passes when a connection opens (DoTCPProbe).
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match dial(&host_port(host, port), timeout).await {
        Ok(_) => Outcome::Success(String::new()),
        Err(e) => Outcome::Failure(e),
    }
}

/// One URL the probe asks (scheme, host, port, path with query).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}{}",
            host_port(&self.host, self.port),
            self.path
        )
    }
}

impl Url {
    /// Where a `Location` header points, relative to this URL.
    fn follow(&self, location: &str) -> Option<Url> {
        if location.starts_with('/') {
            return Some(Url {
                path: location.to_owned(),
                ..self.clone()
            });
        }
        let uri: hyper::Uri = location.parse().ok()?;
        let https = match uri.scheme_str()? {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let host = uri.host()?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Some(Url {
            https,
            host,
            port,
            path,
        })
    }
}

/// httpGet (NewRequestForHTTPGetAction + DoHTTPProbe): 200-399 passes; redirects are followed
/// to the same host only, a redirect elsewhere ends the probe with a warning.
pub async fn http_get(h: &HTTPGetAction, pod_ip: &str, port: u16, timeout: Duration) -> Outcome {
    let host = h
        .host
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(pod_ip);
    let path = match h.path.as_deref() {
        None | Some("") => "/".to_owned(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(p) => format!("/{p}"),
    };
    let url = Url {
        https: h
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https")),
        host: host.to_owned(),
        port,
        path,
    };
    let headers: Vec<(String, String)> = h
        .http_headers
        .iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    let first = url.to_string();
    match tokio::time::timeout(timeout, follow(url, &headers)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Failure(format!("Get {first:?}: {e}")),
        Err(_) => Outcome::Failure(format!(
            "Get {first:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

async fn follow(mut url: Url, headers: &[(String, String)]) -> Result<Outcome, String> {
    let origin_host = url.host.clone();
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, body) = get_once(&url, headers).await?;
        if (300..400).contains(&status)
            && let Some(next) = location.as_deref().and_then(|l| url.follow(l))
        {
            if next.host == origin_host {
                url = next;
                continue;
            }
            return Ok(Outcome::Warning(format!(
                "Probe terminated redirects, Response body: {body}"
            )));
        }
        return Ok(match status {
            200..=299 => Outcome::Success(body),
            300..=399 => {
                Outcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
            }
            _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
        });
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// One GET: status, `Location`, and up to [`MAX_OUTPUT`] bytes of the body.
async fn get_once(
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String> {
    let addr = host_port(&url.host, url.port);
    let tcp = dial(&addr, Duration::from_secs(3600)).await?;
    if url.https {
        let tls = tls_connector();
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("tls: {e}"))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        request(stream, url, headers).await
    } else {
        request(tcp, url, headers).await
    }
}

async fn request<S>(
    io: S,
    url: &Url,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut b = hyper::Request::get(url.path.as_str());
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    // The Host header the user set wins, as Go's req.Host = headers.Get("Host").
    if !has("host") {
        b = b.header(hyper::header::HOST, host_port(&url.host, url.port));
    }
    if !has("user-agent") {
        b = b.header(hyper::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        b = b.header(hyper::header::ACCEPT, "*/*");
    }
    for (k, v) in headers {
        // An empty Accept removes the default (newProbeRequest).
        if k.eq_ignore_ascii_case("accept") && v.is_empty() {
            continue;
        }
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while buf.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    buf.truncate(MAX_OUTPUT);
    conn.abort();
    Ok((status, location, String::from_utf8_lossy(&buf).into_owned()))
}

/// A TLS client that accepts any certificate: the kubelet's probe transport sets
/// InsecureSkipVerify (a pod's serving certificate is not the node's to judge).
fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    match config {
        Ok(c) => tokio_rustls::TlsConnector::from(Arc::new(c)),
        // ring's default provider always supports the default versions; keep a client anyway.
        Err(_) => tokio_rustls::TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )),
    }
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn ports_resolve_by_name_or_number() {
        let c = Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("web".into()), &c),
            Err("port \"web\" not found".into())
        );
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[test]
    fn redirects_resolve_against_the_probed_url() {
        let u = Url {
            https: false,
            host: "10.0.0.1".into(),
            port: 8080,
            path: "/a".into(),
        };
        assert_eq!(
            u.follow("/b?x=1").map(|n| n.to_string()),
            Some("http://10.0.0.1:8080/b?x=1".into())
        );
        let other = u.follow("https://example.test/z").expect("absolute");
        assert_eq!(
            (other.host.as_str(), other.port, other.https),
            ("example.test", 443, true)
        );
    }

    #[tokio::test]
    async fn http_probe_judges_status_codes_and_sends_the_kubelet_agent() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for code in ["200 OK", "500 Internal Server Error", "302 Found"] {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let extra = if code.starts_with("302") {
                    "Location: http://elsewhere.test/\r\n"
                } else {
                    ""
                };
                let resp = format!("HTTP/1.1 {code}\r\n{extra}Content-Length: 2\r\n\r\nok");
                s.write_all(resp.as_bytes()).await.expect("write");
            }
            seen
        });
        let h = HTTPGetAction {
            path: Some("/healthz".into()),
            ..Default::default()
        };
        let t = Duration::from_secs(5);
        assert_eq!(
            http_get(&h, "127.0.0.1", port, t).await,
            Outcome::Success("ok".into())
        );
        assert_eq!(
            http_get(&h, "127.0.0.1", port, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            http_get(&h, "127.0.0.1", port, t).await,
            Outcome::Warning("Probe terminated redirects, Response body: ok".into())
        );
        let seen = server.await.expect("server");
        assert!(
            seen[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("user-agent: kube-probe/1.37\r\n"),
            "{}",
            seen[0]
        );
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(
            tcp("127.0.0.1", port, Duration::from_secs(5)).await,
            Outcome::Success(String::new())
        );
        drop(l);
        let Outcome::Failure(why) = tcp("127.0.0.1", port, Duration::from_secs(5)).await else {
            panic!("a closed port passed");
        };
        assert_eq!(
            why,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }
}
