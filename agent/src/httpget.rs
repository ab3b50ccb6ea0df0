//! The HTTP GET the agent makes into pods, shared by httpGet probes (`prober`) and httpGet
//! lifecycle hooks (`kuberuntime::lifecycle`): the kubelet's pkg/probe/http request building
//! (NewRequestForHTTPGetAction: host default the pod IP, port by number or name, path, headers,
//! its User-Agent) over a hyper HTTP/1.1 connection, HTTPS without verification as the
//! kubelet's probe transport (InsecureSkipVerify).

use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Most of a response body kept (10 KiB, as the kubelet's maxRespBodyLength).
pub const MAX_BODY: usize = 10 * 1024;

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

/// `host:port`, brackets around an IPv6 host.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects within the deadline, worded as Go's dialer (`dial tcp H:P: connect: connection refused`).
pub async fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
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

/// One URL the agent asks (scheme, host, port, path with query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// HTTPS or HTTP.
    pub https: bool,
    /// Host (an IP or a name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path with query.
    pub path: String,
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
    pub fn follow(&self, location: &str) -> Option<Url> {
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

/// What one GET answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Location` header, if any.
    pub location: Option<String>,
    /// Up to [`MAX_BODY`] bytes of the body, lossily decoded.
    pub body: String,
}

/// The URL and headers of an HTTPGetAction (NewRequestForHTTPGetAction): host default the pod
/// IP, path default `/` (a leading `/` added), scheme HTTP unless HTTPS; `port` already resolved.
pub fn request_for(h: &HTTPGetAction, pod_ip: &str, port: u16) -> (Url, Vec<(String, String)>) {
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
    let headers = h
        .http_headers
        .iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    (url, headers)
}

/// One GET with the given `User-Agent` (unless the headers set one); redirects are not
/// followed (the caller decides). No deadline of its own: callers bound it.
pub async fn get(
    url: &Url,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<Response, String> {
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
        request(stream, url, headers, user_agent).await
    } else {
        request(tcp, url, headers, user_agent).await
    }
}

async fn request<S>(
    io: S,
    url: &Url,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<Response, String>
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
        b = b.header(hyper::header::USER_AGENT, user_agent);
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
    while buf.len() < MAX_BODY {
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
    buf.truncate(MAX_BODY);
    conn.abort();
    Ok(Response {
        status,
        location,
        body: String::from_utf8_lossy(&buf).into_owned(),
    })
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
