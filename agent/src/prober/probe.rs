//! Running one probe (kubelet pkg/kubelet/prober/prober.go runProbe and pkg/probe/{exec,http,
//! tcp,grpc}): exec through CRI ExecSync (the runtime manager makes the call), httpGet, tcpSocket
//! and grpc from the agent to the pod's IP, each bounded by `timeoutSeconds`.

pub use crate::httpget::resolve_port;
use crate::httpget::{self, Url, dial, host_port};
use crate::kuberuntime::{ExecOutcome, RuntimeManager};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use std::time::Duration;

/// Most of a command's output kept for the event message (10 KiB, as the kubelet's
/// maxReadLength).
const MAX_OUTPUT: usize = httpget::MAX_BODY;
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

/// tcpSocket: the probe passes when a connection opens (DoTCPProbe).
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match dial(&host_port(host, port), timeout).await {
        Ok(_) => Outcome::Success(String::new()),
        Err(e) => Outcome::Failure(e),
    }
}

/// httpGet (NewRequestForHTTPGetAction + DoHTTPProbe): 200-399 passes; redirects are followed
/// to the same host only, a redirect elsewhere ends the probe with a warning.
pub async fn http_get(h: &HTTPGetAction, pod_ip: &str, port: u16, timeout: Duration) -> Outcome {
    let (url, headers) = httpget::request_for(h, pod_ip, port);
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
        let httpget::Response {
            status,
            location,
            body,
        } = httpget::get(&url, headers, USER_AGENT).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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
