//! Cluster mode, kubectl side (issue 11): kubectl through the real kube-apiserver reaches the
//! real nodelet, and `kubectl top` goes through a real metrics-server scraping it.
//! - the apiserver calls nodelet's :10250 at the Node's InternalIP with its kubelet-client
//!   certificate; nodelet checks it against the cluster CA (`authentication.x509.clientCAFile`)
//!   and authorizes it by SubjectAccessReview against the same apiserver (`Webhook` mode):
//!   `kubectl logs` (also `-f`, and `--previous` after a restart), `kubectl exec` (output and
//!   exit code), `kubectl attach`, `kubectl port-forward` all work;
//! - nodelet's webhook authn/authz answer other callers as the kubelet's do: a certificate of
//!   the cluster CA without RBAC gets 403, a service-account token (TokenReview) without RBAC
//!   403, a made-up token 401;
//! - a user without RBAC gets Forbidden from the apiserver for `kubectl exec`;
//! - `kubectl top node` and `kubectl top pod` show numbers from metrics-server, which scrapes
//!   nodelet's `/metrics/resource` and is served through the aggregation layer (see
//!   `xtask::metrics_server` for why its Service is an ExternalName one).
//!
//! Only what kubectl and curl show is judged; waits have generous ceilings and timings are
//! printed, never asserted. Skips when the control plane or containerd cannot be had, fails
//! instead under `NODELET_REQUIRE_ALL=1`.

use anyhow::{Context, Result, bail, ensure};
use nodelet_tests::cluster::webhook_node;
use nodelet_tests::{NODE, free_port};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xtask::cluster::Cluster;
use xtask::metrics_server::MetricsServer;

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);

/// The pod: `c` counts a line a second, `srv` answers on 8080 with its hostname (the pod's
/// name).
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talk\n  namespace: default\n\
spec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
- name: c\n    image: busybox:1.35\n    imagePullPolicy: IfNotPresent\n    \
command: [sh, -c, 'i=0; while true; do echo line-$i; i=$((i+1)); sleep 1; done']\n  \
- name: srv\n    image: busybox:1.35\n    imagePullPolicy: IfNotPresent\n    \
command: [nc, -ll, -p, '8080', -e, hostname]\n";

/// A pod whose container prints one line and fails, so it restarts (for `logs --previous`). A
/// pod of its own: metrics-server leaves out a pod while one of its containers restarts.
const CRASH: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  namespace: default\n\
spec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
- name: once\n    image: busybox:1.35\n    imagePullPolicy: IfNotPresent\n    \
command: [sh, -c, 'echo attempt-$(date +%s%N); sleep 1; exit 1']\n";

fn kubectl_cmd(c: &Cluster, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(c.kubectl_path());
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd
}

/// `kubectl <args>` as the admin, whatever its exit.
fn kubectl_out(c: &Cluster, args: &[&str]) -> Result<Output> {
    kubectl_cmd(c, &c.admin_kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run kubectl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = c.kubectl(&a)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {args:?} printed no JSON"))
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

/// A kubectl process whose stdout lines arrive on a channel; killed on drop.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    fn spawn(mut cmd: Command) -> Result<Streaming> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kubectl")?;
        let out = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Streaming { child, lines })
    }

    /// The next line that satisfies `want`, within `timeout`.
    fn line(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("no wanted line within {timeout:?}; kubectl's stderr: {err}");
                }
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counter of a `line-N` line.
fn line_no(l: &str) -> Option<u64> {
    l.trim().strip_prefix("line-")?.parse().ok()
}

/// `curl` against nodelet's secure port with `args` (credentials); the HTTP status.
fn curl_status(url: &str, args: &[&str]) -> Result<u16> {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(args)
        .arg(url)
        .output()
        .context("cannot run curl")?;
    text(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("curl {url} printed no status: {}", text(&out.stderr)))
}

#[test]
fn kubectl_logs_exec_attach_port_forward_and_top_reach_nodelet() -> Result<()> {
    let Some((cn, ip, port)) = webhook_node(
        "nodelet-cluster-kubectl-",
        "evictionHard:\n  memory.available: 100Mi\n",
    )?
    else {
        return Ok(());
    };
    let (c, node) = (&cn.cluster, &cn.node);
    node.wait("the Node to be Ready", T, || {
        let Ok(n) = get_json(c, &["get", "node", NODE]) else {
            return Ok(None);
        };
        let ready = n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        Ok(ready.then_some(()))
    })?;
    // metrics-server starts now, so it has scraped by the time `top` is asked.
    let ms = MetricsServer::start(c)?;
    node.wait("the default ServiceAccount", T, || {
        Ok(c.kubectl(&["get", "serviceaccount", "default"]).ok())
    })?;
    for pod in [POD, CRASH] {
        c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(pod))?;
    }
    let started = Instant::now();
    node.wait("talk's containers c and srv running", T, || {
        let p = get_json(c, &["get", "pod", "talk"])?;
        let running =
            |n: &str| container_status(&p, n).is_some_and(|s| s["state"]["running"].is_object());
        Ok((running("c") && running("srv")).then_some(()))
    })?;
    eprintln!(
        "cluster_kubectl: pod running in {:.1} s (information, not a limit)",
        started.elapsed().as_secs_f64()
    );

    // logs: the apiserver fetches /containerLogs from nodelet.
    let logs = node.wait("kubectl logs to show lines", T, || {
        let out = kubectl_out(c, &["logs", "talk", "-c", "c"])?;
        let s = text(&out.stdout);
        Ok((out.status.success() && s.lines().any(|l| line_no(l).is_some())).then_some(s))
    })?;
    ensure!(logs.starts_with("line-0\n"), "kubectl logs: {logs}");
    let mut follow = Streaming::spawn({
        let mut k = kubectl_cmd(c, &c.admin_kubeconfig());
        k.args(["logs", "-f", "--tail=1", "talk", "-c", "c"]);
        k
    })?;
    let first = follow.line(T, |l| line_no(l).is_some())?;
    let later = follow.line(T, |l| line_no(l) > line_no(&first))?;
    eprintln!("cluster_kubectl: logs -f streamed {first} then {later}");
    drop(follow);

    // exec: output, then a failing command's exit code.
    let out = kubectl_out(c, &["exec", "talk", "-c", "c", "--", "echo", "hi"])?;
    ensure!(
        out.status.success() && text(&out.stdout) == "hi\n",
        "kubectl exec echo hi: {:?} {} {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = kubectl_out(c, &["exec", "talk", "-c", "c", "--", "sh", "-c", "exit 7"])?;
    ensure!(
        out.status.code() == Some(7),
        "kubectl exec exit 7: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let out = kubectl_out(
        c,
        &[
            "exec",
            "-i",
            "talk",
            "-c",
            "c",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x",
        ],
    )?;
    ensure!(
        // stdin is /dev/null: `read` fails, the echo runs with an empty x.
        text(&out.stdout) == "got-\n",
        "kubectl exec -i: {:?} {} {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // attach: the running counter's output.
    let mut attach = Streaming::spawn({
        let mut k = kubectl_cmd(c, &c.admin_kubeconfig());
        k.args(["attach", "talk", "-c", "c"]);
        k
    })?;
    let seen = attach.line(T, |l| line_no(l).is_some())?;
    eprintln!("cluster_kubectl: attach showed {seen}");
    drop(attach);

    // port-forward: a local port reaches srv's listener through apiserver and nodelet.
    let local = free_port()?;
    let mut pf = Streaming::spawn({
        let mut k = kubectl_cmd(c, &c.admin_kubeconfig());
        k.args([
            "port-forward",
            "--address=127.0.0.1",
            "pod/talk",
            &format!("{local}:8080"),
        ]);
        k
    })?;
    pf.line(T, |l| l.contains("Forwarding from"))?;
    let mut answer = String::new();
    TcpStream::connect((Ipv4Addr::LOCALHOST, local))
        .context("cannot connect to the forwarded port")?
        .read_to_string(&mut answer)
        .context("reading through port-forward")?;
    ensure!(answer.trim() == "talk", "port-forward answered {answer:?}");
    drop(pf);

    // kubectl sends WebSockets; what reached nodelet is what the apiserver says it did with them
    // (translated to SPDY unless the Node declares ExtendWebSocketsToKubelet).
    let metrics = c.kubectl(&["get", "--raw", "/metrics"])?;
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_websocket_streaming_requests_total{"))
    {
        eprintln!("cluster_kubectl: {l}");
    }

    // logs --previous once `once` has restarted.
    node.wait("container once restarted", T, || {
        let p = get_json(c, &["get", "pod", "crash"])?;
        Ok(container_status(&p, "once")
            .is_some_and(|s| s["restartCount"].as_u64() >= Some(1))
            .then_some(()))
    })?;
    let out = kubectl_out(c, &["logs", "crash", "-c", "once", "--previous"])?;
    ensure!(
        out.status.success() && text(&out.stdout).starts_with("attempt-"),
        "kubectl logs --previous: {:?} {} {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // A user the apiserver knows but RBAC does not: Forbidden before nodelet is asked.
    let nobody = c.user_kubeconfig("nodelet-nobody", None)?;
    let out = kubectl_cmd(c, &nobody)
        .args(["exec", "talk", "-c", "c", "--", "echo", "hi"])
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        !out.status.success() && text(&out.stderr).contains("Forbidden"),
        "kubectl exec without RBAC: {:?} {}",
        out.status,
        text(&out.stderr)
    );

    // nodelet's own authn/authz against the real apiserver, called directly.
    let base = format!("https://{ip}:{port}/pods");
    let (crt, key) = c.apiserver_kubelet_client();
    let (ncrt, nkey) = c.user_cert("nodelet-nobody", None)?;
    let path = |p: &Path| p.display().to_string();
    let token = c.kubectl(&["create", "token", "default"])?;
    let bearer = format!("Authorization: Bearer {}", token.trim());
    for (who, args, want) in [
        (
            "the apiserver's kubelet client (system:kubelet-api-admin)",
            vec![
                "--cert".to_owned(),
                path(&crt),
                "--key".to_owned(),
                path(&key),
            ],
            200,
        ),
        (
            "a CA-signed user without RBAC (SubjectAccessReview denies)",
            vec![
                "--cert".to_owned(),
                path(&ncrt),
                "--key".to_owned(),
                path(&nkey),
            ],
            403,
        ),
        (
            "a service-account token (TokenReview ok, SubjectAccessReview denies)",
            vec!["-H".to_owned(), bearer.clone()],
            403,
        ),
        (
            "a made-up token (TokenReview refuses)",
            vec!["-H".to_owned(), "Authorization: Bearer made-up".to_owned()],
            401,
        ),
        ("nobody (anonymous disabled)", vec![], 401),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = curl_status(&base, &args)?;
        ensure!(got == want, "{who}: HTTP {got}, want {want}");
    }

    // top: metrics-server scraped nodelet; the aggregator serves its API.
    ms.wait_available(c, T)?;
    let top_started = Instant::now();
    // `NAME CPU(cores) [CPU(%)] MEMORY(bytes) …`: millicores and MiB for `name`.
    let numbers = |out: &str, name: &str| {
        out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let unit = |suffix: &str| {
                f.iter().any(|v| {
                    v.strip_suffix(suffix)
                        .is_some_and(|n| n.parse::<u64>().is_ok())
                })
            };
            f.first() == Some(&name) && unit("m") && unit("Mi")
        })
    };
    let top_node = node.wait("kubectl top node", T, || {
        let out = kubectl_out(c, &["top", "node"])?;
        let s = text(&out.stdout);
        Ok(numbers(&s, NODE).then_some(s))
    })?;
    let top_pod = node.wait("kubectl top pod talk", T, || {
        let out = kubectl_out(c, &["top", "pod", "talk"])?;
        let s = text(&out.stdout);
        Ok(numbers(&s, "talk").then_some(s))
    })?;
    eprintln!(
        "cluster_kubectl: top answered {:.1} s after the APIService was available \
         (information, not a limit):\n{top_node}{top_pod}",
        top_started.elapsed().as_secs_f64()
    );

    c.kubectl(&["delete", "pod", "talk", "crash", "--wait=false"])?;
    let log = node.agent_log();
    ensure!(!log.contains("panicked"), "the agent panicked:\n{log}");
    ms.stop()?;
    cn.cluster.stop()
}
