//! API pod start rounds on a [`Cluster`]: `kubectl create` of n pods at once, each timed from its
//! create returning to its first `Running` on a watch opened before the first create. Shared by
//! `tests/benches/api_pod_start.rs` (nodelet beside the CRI floor) and `cargo xtask bench peer`
//! (nodelet beside the Go kubelet).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cluster::Cluster;

/// How long a round may take to be Running, or to be gone after its delete.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(300);

/// One round's figures.
#[derive(Debug, Clone)]
pub struct Round {
    /// Per pod: its create returned -> first seen Running by the watch, ms.
    pub latencies: Vec<f64>,
    /// First create issued -> last pod seen Running, ms.
    pub total_ms: f64,
}

/// The round's label selector: every pod of round `tag` carries `bench=<tag>`.
fn selector(tag: &str) -> String {
    format!("bench={tag}")
}

/// A `List` of `n` hostNetwork busybox pods `<tag>-<i>` that stop at once on SIGTERM.
fn pod_list(tag: &str, n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: {tag}-{i}\n    \
                 namespace: default\n    labels:\n      bench: {tag}\n  spec:\n    \
                 automountServiceAccountToken: false\n    hostNetwork: true\n    \
                 terminationGracePeriodSeconds: 1\n    containers:\n    - name: c\n      \
                 image: busybox:1.35\n      imagePullPolicy: IfNotPresent\n      \
                 command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]\n"
            )
        })
        .collect();
    format!("apiVersion: v1\nkind: List\nitems:\n{}", items.join(""))
}

/// Creates `n` pods named `<tag>-<i>` at once (`tag` unique per round) and times each from its
/// create returning to its first Running event on a watch that was open before the first create.
pub fn round(c: &Cluster, tag: &str, n: usize) -> Result<Round> {
    let mut watch = Command::new(c.kubectl_path())
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .args(["get", "pods", "-l", &selector(tag), "--watch", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kubectl get --watch")?;
    let out = watch.stdout.take().context("watch stdout")?;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let reader = std::thread::spawn(move || {
        let stream = serde_json::Deserializer::from_reader(BufReader::new(out)).into_iter();
        for v in stream {
            let Ok(v): Result<Value, _> = v else { return };
            let at = Instant::now();
            if v["status"]["phase"] == "Running"
                && let Some(name) = v["metadata"]["name"].as_str()
                && tx.send((name.to_owned(), at)).is_err()
            {
                return;
            }
        }
    });
    let result = timed_create(c, tag, n, &rx);
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    result
}

fn timed_create(
    c: &Cluster,
    tag: &str,
    n: usize,
    rx: &mpsc::Receiver<(String, Instant)>,
) -> Result<Round> {
    // The watch prints nothing until a pod matches: give it a moment to be established.
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let mut create = Command::new(c.kubectl_path())
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting kubectl create")?;
    {
        let mut stdin = create.stdin.take().context("create stdin")?;
        stdin
            .write_all(pod_list(tag, n).as_bytes())
            .context("writing the pods to kubectl create")?;
    }
    let mut created: HashMap<String, Instant> = HashMap::new();
    let stdout = create.stdout.take().context("create stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading kubectl create")?;
        if let Some(name) = line
            .strip_prefix("pod/")
            .and_then(|r| r.strip_suffix(" created"))
        {
            created.insert(name.to_owned(), Instant::now());
        }
    }
    let st = create.wait().context("waiting for kubectl create")?;
    if !st.success() || created.len() != n {
        bail!(
            "kubectl create: {st}, {} of {n} pods created",
            created.len()
        );
    }
    let mut running: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while running.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, at) = rx.recv_timeout(left).with_context(|| {
            format!(
                "{} of {n} pods Running after {ROUND_TIMEOUT:?}",
                running.len()
            )
        })?;
        running.entry(name).or_insert(at);
    }
    let mut latencies = Vec::new();
    for (name, at) in &running {
        let c0 = created
            .get(name)
            .with_context(|| format!("{name} Running but not created by this round"))?;
        latencies.push(at.saturating_duration_since(*c0).as_secs_f64() * 1000.0);
    }
    let last = running.values().max().copied().unwrap_or(t0);
    Ok(Round {
        latencies,
        total_ms: last.saturating_duration_since(t0).as_secs_f64() * 1000.0,
    })
}

/// Deletes round `tag`'s pods and waits until the API has none of them (the agent's final
/// delete after stopping them).
pub fn delete_round(c: &Cluster, tag: &str) -> Result<()> {
    let label = selector(tag);
    c.kubectl(&["delete", "pods", "-l", &label, "--wait=false"])?;
    let deadline = Instant::now() + ROUND_TIMEOUT;
    loop {
        let left = c.kubectl(&["get", "pods", "-l", &label, "-o", "name"])?;
        if left.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pods of round {tag} still in the API after {ROUND_TIMEOUT:?}: {left}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_lists_n_labelled_pods() {
        let l = pod_list("r3", 3);
        assert_eq!(l.matches("kind: Pod").count(), 3);
        assert!(l.contains("name: r3-2\n"), "{l}");
        assert_eq!(l.matches("bench: r3\n").count(), 3);
    }
}
