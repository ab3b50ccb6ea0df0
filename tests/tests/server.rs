//! The kubelet HTTP API of a real agent on a real containerd (issue 5): the secure port with
//! client-certificate authentication, pod and log endpoints, /run, header limits, metrics checked
//! by promtool, and a real Prometheus scraping over mutual TLS. Requests go through curl.

use anyhow::{Context, Result, bail};
use nodelet_tests::*;
use rustls::pki_types::CertificateDer;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A test CA and a client certificate it signed (CN = user, O = group).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("nodelet-pki-").tempdir()?;
        let pki = Pki { dir };
        let (ca, ca_key) = pki.ca("ca")?;
        pki.client("good", "e2e-user", &ca, &ca_key)?;
        let (other, other_key) = pki.ca("other-ca")?;
        pki.client("bad", "intruder", &other, &other_key)?;
        Ok(pki)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, name: &str) -> Result<(rcgen::Certificate, rcgen::KeyPair)> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} e2e"));
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem())?;
        Ok((cert, key))
    }

    fn client(
        &self,
        file: &str,
        cn: &str,
        ca: &rcgen::Certificate,
        ca_key: &rcgen::KeyPair,
    ) -> Result<()> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = p.signed_by(&key, ca, ca_key)?;
        std::fs::write(self.path(&format!("{file}.crt")), cert.pem())?;
        std::fs::write(self.path(&format!("{file}.key")), key.serialize_pem())?;
        Ok(())
    }
}

/// Which client certificate a request presents.
#[derive(Clone, Copy)]
enum Who {
    Nobody,
    Good,
    Bad,
}

struct Api<'a> {
    pki: &'a Pki,
    port: u16,
}

impl Api<'_> {
    fn cert_args(&self, who: Who) -> Vec<String> {
        let pair = match who {
            Who::Nobody => return Vec::new(),
            Who::Good => "good",
            Who::Bad => "bad",
        };
        vec![
            "--cert".into(),
            self.pki.path(&format!("{pair}.crt")).display().to_string(),
            "--key".into(),
            self.pki.path(&format!("{pair}.key")).display().to_string(),
        ]
    }

    /// Status code and body of one request.
    fn call(&self, who: Who, extra: &[&str], path: &str) -> Result<(u16, String)> {
        let out = Command::new("curl")
            .args([
                "-sk",
                "--path-as-is",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
            ])
            .args(self.cert_args(who))
            .args(extra)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').context("no status from curl")?;
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        self.call(Who::Good, &[], path)
    }
}

macro_rules! node {
    ($opts:expr) => {
        match Node::start($opts)? {
            Some(n) => n,
            None => return Ok(()),
        }
    };
}

fn server_config(pki: &Pki, port: u16, ro_port: u16, healthz: u16) -> String {
    format!(
        "port: {port}\nreadOnlyPort: {ro_port}\nhealthzPort: {healthz}\naddress: 127.0.0.1\n\
         authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: false\n  \
         x509:\n    clientCAFile: {}\nauthorization:\n  mode: AlwaysAllow\n",
        pki.path("ca.pem").display()
    )
}

fn prerequisites() -> Result<bool> {
    for p in ["curl", "promtool", "openssl"] {
        if !have(p) {
            skip(&format!("{p} is not installed"))?;
            return Ok(false);
        }
    }
    Ok(true)
}

const SCRIPT: &str = "echo hello-logs; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done";

#[test]
fn secure_port_serves_pods_logs_and_run_to_authenticated_clients_only() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let pki = Pki::new()?;
    let (port, ro, hz) = (free_port()?, free_port()?, free_port()?);
    let node = node!(NodeOpts {
        extra_config: server_config(&pki, port, ro, hz),
        // The programs' run time is counted only when asked (it costs two clock reads a run).
        env: vec![("NODELET_BPF_STATS".into(), "1".into())],
        ..Default::default()
    });
    let api = Api { pki: &pki, port };
    node.write_manifest("web.yaml", &host_pod("web", "Always", SCRIPT))?;
    let pod = format!("web-{NODE}");

    // /pods lists the static pod once its status is in.
    let pods = node.wait("/pods to list the static pod running", T, || {
        let (code, body) = api.get("/pods")?;
        Ok((code == 200 && body.contains(&pod) && body.contains("\"running\"")).then_some(body))
    })?;
    let v: serde_json::Value = serde_json::from_str(&pods)?;
    assert_eq!(v["kind"], "PodList");
    assert!(
        v["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == pod.as_str()))
    );

    // Authentication: none -> 401 everywhere (healthz too); a foreign CA -> 401.
    for path in [
        "/pods",
        "/healthz",
        "/metrics",
        "/containerLogs/default/x/c",
    ] {
        assert_eq!(
            api.call(Who::Nobody, &[], path)?.0,
            401,
            "{path} without a certificate"
        );
        assert_eq!(
            api.call(Who::Bad, &[], path)?.0,
            401,
            "{path} with another CA's certificate"
        );
    }
    assert_eq!(api.get("/healthz")?, (200, "ok".into()));

    // Logs: what the container printed, without the CRI prefix.
    let logs_path = format!("/containerLogs/default/{pod}/c");
    let body = node.wait("container logs", T, || {
        let (code, body) = api.get(&logs_path)?;
        Ok((code == 200 && body.contains("tick-1")).then_some(body))
    })?;
    assert!(body.starts_with("hello-logs\ntick-0\n"), "{body}");
    let (code, tail) = api.get(&format!("{logs_path}?tailLines=1"))?;
    assert_eq!(code, 200);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let (_, stamped) = api.get(&format!("{logs_path}?tailLines=1&timestamps=true"))?;
    assert!(
        stamped.starts_with("20") && stamped.contains("Z tick-"),
        "{stamped}"
    );
    let (_, limited) = api.get(&format!("{logs_path}?limitBytes=5"))?;
    assert_eq!(limited, "hello");
    assert_eq!(
        api.get(&format!("/containerLogs/default/{pod}/nope"))?.0,
        404
    );
    assert_eq!(api.get("/containerLogs/default/nope/c")?.0, 404);

    // follow streams lines written after the request.
    let mut follow = Command::new("curl")
        .args(["-skN", "--max-time", "30"])
        .args(api.cert_args(Who::Good))
        .arg(format!(
            "https://127.0.0.1:{port}{logs_path}?follow=true&tailLines=1"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = follow.stdout.take().context("curl stdout")?;
    let mut lines = BufReader::new(out).lines();
    let first = lines.next().context("follow: no first line")??;
    let second = lines.next().context("follow: stream ended")??;
    let _ = follow.kill();
    let _ = follow.wait();
    let n = |l: &str| l.strip_prefix("tick-").and_then(|x| x.parse::<u64>().ok());
    assert!(
        n(&first).is_some() && n(&second) > n(&first),
        "{first} then {second}"
    );

    // Traversal: raw and URL-encoded; nothing outside the pod's log dir is read.
    let secret = node.logs.join("secret.log");
    std::fs::write(&secret, "2026-01-01T00:00:00Z stdout F TOP-SECRET\n")?;
    for path in [
        format!("/containerLogs/default/{pod}/../../secret"),
        format!("/containerLogs/default/{pod}/%2e%2e%2f%2e%2e%2fsecret"),
        format!("/containerLogs/default/{pod}/..%2f..%2f..%2fsecret"),
        "/containerLogs/%2e%2e/%2e%2e/c".to_string(),
        format!("/containerLogs/default/{pod}/c%2f..%2f..%2f..%2fsecret"),
    ] {
        let (code, body) = api.get(&path)?;
        assert!((400..500).contains(&code), "{path}: {code} {body}");
        assert!(!body.contains("TOP-SECRET"), "{path}: {body}");
    }

    // Oversized headers: 431, and the server keeps serving. curl caps a request at 1 MiB, so the
    // request goes through openssl s_client.
    assert_eq!(
        oversized_header_status(&api)?,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(api.get("/healthz")?.0, 200);

    // /run executes in the container (ExecSync) and returns its output.
    let (code, out) = api.call(
        Who::Good,
        &["-X", "POST"],
        &format!("/run/default/{pod}/c?cmd=echo+ran-inside"),
    )?;
    assert_eq!((code, out.as_str()), (200, "ran-inside\n"));
    let (code, out) = api.call(
        Who::Good,
        &["-X", "POST"],
        &format!("/run/default/{pod}/c?cmd=cat+/proc/1/cmdline"),
    )?;
    assert_eq!(code, 200);
    assert!(
        out.contains("tick-"),
        "PID 1 of the container runs the script: {out:?}"
    );

    // /exec proxies a WebSocket (v4.channel.k8s.io) upgrade to the runtime's streaming server.
    let (stdout, status) = ws_exec(
        &api,
        &format!("/exec/default/{pod}/c?command=sh&command=-c&command=echo+exec-$((6*7))&stdout=1"),
    )?;
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "exec-42\n",
        "status channel: {status}"
    );

    // /configz and /runningpods/.
    let (code, cfg) = api.get("/configz")?;
    assert_eq!(code, 200);
    let cfg: serde_json::Value = serde_json::from_str(&cfg)?;
    assert_eq!(cfg["kubeletconfig"]["port"], port);
    assert_eq!(
        cfg["kubeletconfig"]["authentication"]["anonymous"]["enabled"],
        false
    );
    let (code, running) = api.get("/runningpods/")?;
    assert!(code == 200 && running.contains(&pod), "{code} {running}");

    // Every exposition passes promtool.
    for path in ["/metrics", "/metrics/cadvisor", "/metrics/resource"] {
        let (code, text) = api.get(path)?;
        assert_eq!(code, 200, "{path}");
        promtool_check(path, &text, LINT_ALLOWED)?;
        let (_, om) = api.call(
            Who::Good,
            &["-H", "Accept: application/openmetrics-text;version=1.0.0"],
            path,
        )?;
        assert!(om.ends_with("# EOF\n"), "{path} OpenMetrics");
    }
    let (_, m) = api.get("/metrics")?;
    assert!(
        m.contains(&format!("kubelet_node_name{{node=\"{NODE}\"}} 1")),
        "{m}"
    );
    // Which telemetry source feeds the stats, and the eBPF pipeline's own accounting.
    assert!(
        m.contains("nodelet_telemetry_source{source=\"ebpf\"} 1")
            || m.contains("nodelet_telemetry_source{source=\"cgroupfs\"} 1"),
        "{m}"
    );
    for family in [
        "nodelet_ebpf_records_total",
        "nodelet_ebpf_lost_records_total",
    ] {
        assert!(m.contains(&format!("# TYPE {family} counter")), "{family}");
    }
    // With eBPF, each program's kernel run-time statistics (NODELET_BPF_STATS=1 above).
    if m.contains("nodelet_telemetry_source{source=\"ebpf\"} 1") {
        let runs = m
            .lines()
            .find_map(|l| {
                l.strip_prefix("nodelet_ebpf_program_runs_total{program=\"on_sched_switch\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(runs.is_some_and(|r| r > 0.0), "sched_switch runs: {runs:?}");
        assert!(
            m.contains("nodelet_ebpf_program_run_seconds_total{program=\"on_mark_victim\"}"),
            "every program has a run-time series"
        );
    }
    assert!(m.contains("kubelet_running_pods 1"), "{m}");
    assert!(
        m.contains(
            "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"list_containers\""
        ),
        "{m}"
    );
    assert!(m.contains("# TYPE kubelet_evictions counter"), "{m}");

    // The read-only port: no auth, no logs; healthz on its own port.
    let plain = |p: u16, path: &str| -> Result<(u16, String)> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{p}{path}"))
            .output()?;
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        let (b, c) = t.rsplit_once('\n').context("no status")?;
        Ok((c.trim().parse().unwrap_or(0), b.to_string()))
    };
    assert!(plain(ro, "/pods")?.1.contains(&pod));
    assert_eq!(plain(ro, &logs_path)?.0, 404);
    assert_eq!(plain(hz, "/healthz")?, (200, "ok".into()));
    Ok(())
}

/// The status line the secure port answers to a request with a 2 MiB header.
fn oversized_header_status(api: &Api) -> Result<String> {
    use std::io::{Read, Write};
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{}", api.port))
        .args(["-cert", &api.pki.path("good.crt").display().to_string()])
        .args(["-key", &api.pki.path("good.key").display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("s_client stdin")?;
    let writer = std::thread::spawn(move || {
        let req = format!(
            "GET /pods HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(2 << 20)
        );
        let _ = stdin.write_all(req.as_bytes());
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("s_client stdout")?
        .read_to_string(&mut out)?;
    let _ = writer.join();
    let _ = child.kill();
    let _ = child.wait();
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(pki: &Pki, target_port: u16) -> Result<Prometheus> {
    let dir = tempfile::Builder::new().prefix("nodelet-prom-").tempdir()?;
    let port = free_port()?;
    let cfg = dir.path().join("prometheus.yml");
    // One job per exposition, so Prometheus' own (OpenMetrics) parser checks all three.
    let mut text =
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n".to_string();
    for (job, path) in [
        ("nodelet", "/metrics"),
        ("cadvisor", "/metrics/cadvisor"),
        ("resource", "/metrics/resource"),
    ] {
        text.push_str(&format!(
            "- job_name: {job}\n  scheme: https\n  metrics_path: {path}\n  tls_config:\n    \
             cert_file: {}\n    key_file: {}\n    insecure_skip_verify: true\n  static_configs:\n  \
             - targets: ['127.0.0.1:{target_port}']\n",
            pki.path("good.crt").display(),
            pki.path("good.key").display()
        ));
    }
    std::fs::write(&cfg, text)?;
    let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(Prometheus {
        child,
        port,
        _dir: dir,
    })
}

fn query(prom: &Prometheus, q: &str) -> Result<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-G", "--data-urlencode"])
        .arg(format!("query={q}"))
        .arg(format!("http://127.0.0.1:{}/api/v1/query", prom.port))
        .output()?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn prom_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
}

#[test]
fn prometheus_scrapes_the_agent_over_mutual_tls() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    if !have("prometheus") {
        return skip("prometheus is not installed");
    }
    let pki = Pki::new()?;
    let port = free_port()?;
    let node = node!(NodeOpts {
        extra_config: server_config(&pki, port, 0, 0),
        ..Default::default()
    });
    let prom = start_prometheus(&pki, port)?;
    let got = node
        .wait("Prometheus to scrape kubelet_node_name", T, || {
            let v = query(&prom, "kubelet_node_name{job=\"nodelet\"}")?;
            let r = &v["data"]["result"];
            Ok(r.as_array().filter(|a| !a.is_empty()).map(|_| r.clone()))
        })
        .with_context(|| prom_log(prom._dir.path()))?;
    assert_eq!(got[0]["metric"]["node"], NODE);
    assert_eq!(got[0]["value"][1], "1");
    let up = node.wait("all three jobs scraped", T, || {
        let up = query(&prom, "up")?;
        Ok((up["data"]["result"].as_array().map_or(0, Vec::len) == 3).then_some(up))
    })?;
    for r in up["data"]["result"].as_array().into_iter().flatten() {
        assert_eq!(r["value"][1], "1", "{r}");
    }
    let machine = query(&prom, "machine_cpu_cores{job=\"cadvisor\"}")?;
    assert_eq!(
        machine["data"]["result"].as_array().map_or(0, Vec::len),
        1,
        "{machine}"
    );
    Ok(())
}

/// Accepts the agent's self-signed serving certificate (this test checks client auth, not it).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs an exec over a WebSocket with the v4 channel protocol: (stdout, error-channel text).
fn ws_exec(api: &Api, path: &str) -> Result<(Vec<u8>, String)> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain =
        CertificateDer::pem_file_iter(api.pki.path("good.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(api.pki.path("good.key"))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_client_auth_cert(chain, key)?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into()?)?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", api.port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    )?;
    s.flush()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)?;
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        bail!("no upgrade: {head}");
    }
    let (mut stdout, mut status) = (Vec::new(), String::new());
    loop {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).is_err() {
            break;
        }
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l)?;
            len = u64::from(u16::from_be_bytes(l));
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l)?;
            len = u64::from_be_bytes(l);
        }
        let mut payload = vec![0u8; usize::try_from(len)?];
        s.read_exact(&mut payload)?;
        match (opcode, payload.split_first()) {
            (8, _) => break,
            (1 | 2, Some((1, data))) => stdout.extend_from_slice(data),
            (1 | 2, Some((3, data))) => status.push_str(&String::from_utf8_lossy(data)),
            _ => {}
        }
    }
    Ok((stdout, status))
}

#[test]
fn webhook_mode_standalone_forbids_anonymous_and_allows_certificate_users() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let pki = Pki::new()?;
    let port = free_port()?;
    let node = node!(NodeOpts {
        extra_config: format!(
            "port: {port}\nreadOnlyPort: 0\nhealthzPort: 0\naddress: 127.0.0.1\n\
             authentication:\n  anonymous:\n    enabled: true\n  x509:\n    clientCAFile: {}\n\
             authorization:\n  mode: Webhook\n",
            pki.path("ca.pem").display()
        ),
        ..Default::default()
    });
    let api = Api { pki: &pki, port };
    let (code, _) = node.wait("the secure port", T, || {
        let r = api.call(Who::Nobody, &[], "/pods")?;
        Ok((r.0 != 0).then_some(r))
    })?;
    assert_eq!(code, 403, "anonymous under Webhook without an API server");
    assert_eq!(api.call(Who::Bad, &[], "/pods")?.0, 401);
    assert_eq!(api.get("/pods")?.0, 200);
    assert!(
        node.agent_log()
            .contains("authorization mode Webhook without an API server")
    );
    Ok(())
}

/// Reads one cgroup v1 file of a container of this node as a number.
fn cgroup_value(
    node: &Node,
    hierarchy: &str,
    pod_uid: &str,
    container_id: &str,
    file: &str,
) -> Result<u64> {
    for dir in node.pod_cgroups(hierarchy) {
        if dir.ends_with(format!("pod{pod_uid}")) {
            let text = std::fs::read_to_string(dir.join(container_id).join(file))?;
            return Ok(text.trim().parse()?);
        }
    }
    bail!("no {hierarchy} cgroup for pod {pod_uid}")
}

fn within(a: u64, b: u64, pct: f64) -> bool {
    let (a, b) = (a as f64, b as f64);
    (a - b).abs() <= b.max(1.0) * pct / 100.0
}

#[test]
fn stats_summary_agrees_with_the_cgroup_files() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let pki = Pki::new()?;
    let (port, ro, hz) = (free_port()?, free_port()?, free_port()?);
    let node = node!(NodeOpts {
        extra_config: server_config(&pki, port, ro, hz),
        ..Default::default()
    });
    let api = Api { pki: &pki, port };
    // "mem" holds 64 MiB resident in `tail`; "cpu" burns a core for 2 s, then sleeps, so its
    // counter stops moving and the two readings can be compared.
    node.write_manifest(
        "stats.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: stats}}\nspec:\n  hostNetwork: true\n  \
             terminationGracePeriodSeconds: 2\n  containers:\n  - name: mem\n    image: busybox:1.35\n    \
             command: [sh, -c, '(head -c 64m /dev/zero; sleep 3600) | tail -c 64m']\n  \
             - name: cpu\n    image: busybox:1.35\n    command: [sh, -c, {:?}]\n",
            "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done; echo burned; sleep 3600"
        ),
    )?;
    node.wait("the burn to finish", T, || {
        Ok(node
            .container_log("default", "stats", "cpu", 0)
            .filter(|l| l.contains("burned")))
    })?;
    let containers = node.pod_containers("stats")?;
    let id = |name: &str| {
        containers
            .iter()
            .find(|c| c.labels.get(CONTAINER_NAME_LABEL).map(String::as_str) == Some(name))
            .map(|c| c.id.clone())
            .context("container id")
    };
    let (mem_id, cpu_id) = (id("mem")?, id("cpu")?);
    let uid = containers
        .first()
        .and_then(|c| c.labels.get(POD_UID_LABEL).cloned())
        .context("pod uid")?;
    let pod_name = format!("stats-{NODE}");
    // The store refreshes on its own clock: wait until the summary caught up with the files,
    // then check both numbers within 5%.
    let (mem_summary, mem_file, cpu_summary, cpu_file) =
        node.wait("/stats/summary within 5% of the cgroup files", T, || {
            let (code, body) = api.get("/stats/summary")?;
            if code != 200 {
                return Ok(None);
            }
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let Some(pod) = v["pods"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["podRef"]["name"] == pod_name.as_str()))
            else {
                return Ok(None);
            };
            let c = |name: &str| {
                pod["containers"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                    .cloned()
            };
            let (Some(m), Some(cpu)) = (c("mem"), c("cpu")) else {
                return Ok(None);
            };
            let mem_summary = m["memory"]["usageBytes"].as_u64().unwrap_or(0);
            let cpu_summary = cpu["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0);
            let mem_file = cgroup_value(&node, "memory", &uid, &mem_id, "memory.usage_in_bytes")?;
            let cpu_file = cgroup_value(&node, "cpuacct", &uid, &cpu_id, "cpuacct.usage")?;
            Ok(
                (within(mem_summary, mem_file, 5.0) && within(cpu_summary, cpu_file, 5.0))
                    .then_some((mem_summary, mem_file, cpu_summary, cpu_file)),
            )
        })?;
    assert!(
        mem_file > 60 << 20,
        "the container holds 64 MiB: {mem_file}"
    );
    assert!(
        cpu_file > 300_000_000,
        "the container burned CPU: {cpu_file}"
    );
    eprintln!("memory {mem_summary} vs {mem_file}; cpu {cpu_summary} vs {cpu_file}");
    // The node section carries the kubelet's rlimit and fs blocks too.
    let (_, body) = api.get("/stats/summary")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let n = &v["node"];
    assert!(n["rlimit"]["maxpid"].as_u64().is_some_and(|p| p > 0), "{n}");
    assert!(
        n["rlimit"]["curproc"].as_u64().is_some_and(|p| p > 0),
        "{n}"
    );
    assert!(
        n["fs"]["capacityBytes"].as_u64().is_some_and(|c| c > 0),
        "{n}"
    );
    assert!(
        n["memory"]["workingSetBytes"]
            .as_u64()
            .is_some_and(|w| w > 0),
        "{n}"
    );
    Ok(())
}
