//! Cluster mode: container logs over a websocket through the real kube-apiserver (the upstream
//! "Pods should support retrieving logs from the container over websockets" test's path). The
//! apiserver relays nodelet's `/containerLogs` answer to the websocket client with a reader that
//! drops the data of a read that also returns EOF, so a log body whose end arrives together
//! with its last data reached the client empty. Here a pod writes a known set of lines, and a
//! websocket `GET .../pods/<pod>/log` (through `kubectl proxy`, plain HTTP on localhost; frames
//! read by hand) must return every one of them, as `kubectl logs` (plain HTTP) does.
//!
//! Only what the client receives is judged. Skips when the control plane or containerd cannot
//! be had, fails instead under `NODELET_REQUIRE_ALL=1`.

use anyhow::{Context, Result, bail, ensure};
use nodelet_tests::cluster::{kubectl_json, webhook_node};
use nodelet_tests::free_port;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);

/// How many lines the pod writes: more than one read's worth, so the body comes in pieces.
const LINES: usize = 3000;

/// The pod: `c` writes `LINES` numbered lines, then sleeps.
fn pod() -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: wslogs\n  namespace: default\n\
spec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
- name: c\n    image: busybox:1.35\n    imagePullPolicy: IfNotPresent\n    \
command: [sh, -c, 'i=0; while [ $i -lt {LINES} ]; do echo line-$i; i=$((i+1)); done; sleep 3600']\n"
    )
}

fn expected() -> String {
    (0..LINES).map(|i| format!("line-{i}\n")).collect()
}

/// `kubectl proxy` on a local port; killed on drop.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A websocket GET of `path` on `127.0.0.1:port` asking for `binary.k8s.io`; the payloads of
/// the data frames, concatenated, until the server closes.
fn websocket_get(port: u16, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("cannot reach kubectl proxy")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: binary.k8s.io\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    ensure!(
        status.starts_with("HTTP/1.1 101"),
        "no websocket upgrade: {status:?}"
    );
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        if l == "\r\n" || l.is_empty() {
            break;
        }
    }
    let mut data = Vec::new();
    loop {
        let mut h = [0u8; 2];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("reading a websocket frame"),
        }
        let opcode = h[0] & 0x0f;
        ensure!(h[1] & 0x80 == 0, "a masked frame from the server");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len)?];
        r.read_exact(&mut payload)?;
        match opcode {
            0x0..=0x2 => data.extend_from_slice(&payload),
            0x8 => break,
            0x9 | 0xa => {}
            o => bail!("unexpected websocket opcode {o}"),
        }
    }
    Ok(data)
}

#[test]
fn logs_over_a_websocket_through_the_apiserver_arrive_whole() -> Result<()> {
    // Served on the node's address, where the apiserver calls it for logs.
    let Some((cn, _, _)) = webhook_node("nodelet-cluster-wslogs-", "")? else {
        return Ok(());
    };
    let (c, node) = (&cn.cluster, &cn.node);
    node.wait("the default ServiceAccount", T, || {
        Ok(c.kubectl(&["get", "serviceaccount", "default"]).ok())
    })?;
    c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(&pod()))?;
    let want = expected();
    // kubectl logs (plain HTTP) first: every line is written before the websocket is tried.
    node.wait("kubectl logs to show every line", T, || {
        let p = kubectl_json(c, &["get", "pod", "wslogs"])?;
        if !p["status"]["containerStatuses"][0]["state"]["running"].is_object() {
            return Ok(None);
        }
        Ok(c.kubectl(&["logs", "wslogs", "-c", "c"])
            .ok()
            .filter(|l| *l == want)
            .map(|_| ()))
    })?;

    let proxy_port = free_port()?;
    let proxy = Proxy(
        Command::new(c.kubectl_path())
            .arg("--kubeconfig")
            .arg(c.admin_kubeconfig())
            .args([
                "proxy",
                "--address=127.0.0.1",
                &format!("--port={proxy_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run kubectl proxy")?,
    );
    node.wait("kubectl proxy to listen", T, || {
        Ok(TcpStream::connect(("127.0.0.1", proxy_port))
            .ok()
            .map(|_| ()))
    })?;
    let path = "/api/v1/namespaces/default/pods/wslogs/log?container=c";
    // Several times: the loss depended on how the last data and the end met in one read.
    for round in 0..5 {
        let got = websocket_get(proxy_port, path)?;
        let got = String::from_utf8_lossy(&got);
        ensure!(
            got == want,
            "round {round}: websocket logs had {} of {} bytes; {} lines, last {:?}",
            got.len(),
            want.len(),
            got.lines().count(),
            got.lines().last()
        );
    }
    eprintln!("cluster_logs_websocket: {LINES} lines over the websocket, 5 times");
    drop(proxy);
    let _ = c.kubectl(&["delete", "pod", "wslogs", "--wait=false"]);
    Ok(())
}
