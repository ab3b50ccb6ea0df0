//! The memory-ramp race of the eviction issue ([`xtask::race`]) for both agents, each joined to
//! the control plane with the race's KubeletConfiguration: a Guaranteed pod beside one BestEffort
//! pod at a time that adds memory at a fixed rate until it is evicted. The pods are API pods:
//! the Go kubelet never evicts a static pod (to it every static pod is critical). Won: the agent
//! evicted the pod and the kernel's OOM killer fired nowhere in the agent's pods cgroup
//! meanwhile (its `oom-kill:` records in /dev/kmsg), the same rule as `cargo xtask bench
//! eviction`. Agent-neutral throughout: API status and node conditions, no agent log lines.

use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::cluster::Cluster;
use xtask::kubelet::Kubelet;
use xtask::race;

use crate::bench_eviction::kernel::Kmsg;

/// How long a race, a pod start or a pressure condition may take (the Go kubelet evaluates
/// memory every 10 s and reports node status every 10 s).
const T: Duration = Duration::from_secs(120);
/// The Go kubelet's eviction monitoring period: each race starts at a random phase of it, or
/// every race would meet its schedule at the same point.
const PHASE: Duration = Duration::from_secs(10);
/// Attempts of one race when the node refuses the pod at admission (pressure not yet over).
const ATTEMPTS: usize = 3;

/// One race.
#[derive(Debug, Clone, Default)]
pub struct RampRun {
    /// How the pod ended (`Evicted`, `TerminationByKubelet`, empty: see [`end_of`]).
    pub reason: String,
    /// The agent evicted the pod (whatever the kernel did before).
    pub evicted: bool,
    /// Kernel OOM kills in the agent's pods cgroup during the race.
    pub kills: usize,
    /// Of which the Guaranteed pod was the victim.
    pub guaranteed_kills: usize,
}

impl RampRun {
    /// Evicted, and the kernel killed nothing in the pods cgroup.
    pub fn won(&self) -> bool {
        self.evicted && self.kills == 0
    }
}

/// Per rate, `runs` races, on the agent `kubelet` joined to `cluster`.
pub fn races(
    cluster: &Cluster,
    kubelet: &Kubelet,
    rates: &[i64],
    runs: usize,
) -> Result<Vec<(i64, Vec<RampRun>)>> {
    create(cluster, race::GUARANTEED_MANIFEST)?;
    let uid = wait_running(cluster, "guaranteed")?;
    let mut kmsg = Kmsg::open()?;
    let pods_cgroup = format!("{}/kubepods", kubelet.cgroup_root().trim_end_matches('/'));
    let mut out = Vec::new();
    for &rate in rates {
        let mut done = Vec::new();
        for i in 0..runs {
            eprintln!(
                "bench: {}: ramp race at {rate} MiB/s ({}/{runs})",
                kubelet.kind(),
                i + 1
            );
            let run = race(cluster, &mut kmsg, &pods_cgroup, &uid, rate, i)
                .with_context(|| format!("ramp race at {rate} MiB/s"))?;
            eprintln!(
                "bench: {}: {} after {} kernel OOM kill(s)",
                kubelet.kind(),
                if run.reason.is_empty() {
                    "failed"
                } else {
                    &run.reason
                },
                run.kills
            );
            done.push(run);
        }
        out.push((rate, done));
    }
    cluster.kubectl(&[
        "delete",
        "pod",
        "guaranteed",
        "--wait=true",
        "--timeout=120s",
    ])?;
    Ok(out)
}

/// One race: retried (with a new pod) when the node refused the pod at admission.
fn race(
    cluster: &Cluster,
    kmsg: &mut Kmsg,
    pods_cgroup: &str,
    guaranteed_uid: &str,
    rate: i64,
    seq: usize,
) -> Result<RampRun> {
    for attempt in 0..ATTEMPTS {
        wait_pressure_over(cluster)?;
        let name = format!("ramp{rate}-{seq}-{attempt}");
        let watch = EndWatch::start(cluster, &name)?;
        race::sleep_random_phase(PHASE);
        kmsg.kills()?;
        create(cluster, &race::ramp_manifest(&name, rate))?;
        let ended = watch.wait();
        let kills: Vec<_> = kmsg
            .kills()?
            .into_iter()
            .filter(|k| {
                k.oom_memcg.starts_with(pods_cgroup) || k.task_memcg.starts_with(pods_cgroup)
            })
            .collect();
        cluster.kubectl(&["delete", "pod", &name, "--wait=true", "--timeout=120s"])?;
        let end = ended?;
        if !end.ran {
            eprintln!(
                "bench: {name} was refused ({}: {}); again once the pressure is over",
                end.reason, end.message
            );
            continue;
        }
        let uid_dir = format!("pod{guaranteed_uid}");
        return Ok(RampRun {
            reason: end.reason,
            evicted: end.evicted,
            kills: kills.len(),
            guaranteed_kills: kills
                .iter()
                .filter(|k| k.task_memcg.contains(&uid_dir))
                .count(),
        });
    }
    bail!("the node refused the ramp pod {ATTEMPTS} times")
}

/// `kubectl create` of a race manifest as an API pod in namespace default.
fn create(cluster: &Cluster, manifest: &str) -> Result<()> {
    // The race's manifests are static pods; an API pod with a token volume would also wait for
    // the ServiceAccount and mount a projected volume, which neither race is about.
    let pod = manifest.replacen(
        "spec:\n",
        "spec:\n  automountServiceAccountToken: false\n",
        1,
    );
    cluster
        .kubectl_in(
            &cluster.admin_kubeconfig(),
            &["create", "-f", "-"],
            Some(&pod),
        )
        .map(drop)
}

/// Polls every 500 ms, at most [`T`].
fn poll<R>(what: &str, mut f: impl FnMut() -> Result<Option<R>>) -> Result<R> {
    let start = Instant::now();
    loop {
        if let Some(r) = f()? {
            return Ok(r);
        }
        if start.elapsed() > T {
            bail!("{what}: not after {T:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits for pod `name` to run; its UID.
fn wait_running(cluster: &Cluster, name: &str) -> Result<String> {
    poll(&format!("pod {name} Running"), || {
        let v: Value =
            serde_json::from_str(&cluster.kubectl(&["get", "pod", name, "-o", "json"])?)?;
        Ok((v["status"]["phase"] == "Running")
            .then(|| v["metadata"]["uid"].as_str().map(str::to_owned))
            .flatten())
    })
}

/// Waits until the node's MemoryPressure condition is False: under pressure a BestEffort pod
/// is refused at admission.
fn wait_pressure_over(cluster: &Cluster) -> Result<()> {
    let node = cluster.node_name().to_owned();
    poll("MemoryPressure False", || {
        let s = cluster.kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        ])?;
        Ok((s.trim() == "False").then_some(()))
    })
}

/// How a race pod ended, as the API saw it.
#[derive(Debug)]
struct End {
    /// `status.reason`, else the reason of a DisruptionTarget condition.
    reason: String,
    message: String,
    /// Its agent evicted it.
    evicted: bool,
    /// It was Running before: a pod refused at admission never is.
    ran: bool,
}

/// How a pod status says the pod ended; `None` while it has not.
///
/// nodelet says Evicted in `status.reason`. The Go kubelet v1.37 leaves `status.reason` empty
/// and the phase to its containers' exit (Succeeded here: the ramp exits 0 on SIGTERM); its
/// eviction shows as a DisruptionTarget condition with reason TerminationByKubelet.
fn end_of(status: &Value, ran: bool) -> Option<End> {
    let phase = status["phase"].as_str()?;
    if phase != "Failed" && phase != "Succeeded" {
        return None;
    }
    let disruption = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionTarget" && c["status"] == "True");
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let (reason, message) = match (text(&status["reason"]), disruption) {
        (Some(r), _) => (r, text(&status["message"])),
        (None, Some(c)) => (text(&c["reason"]).unwrap_or_default(), text(&c["message"])),
        (None, None) => (String::new(), None),
    };
    Some(End {
        evicted: reason == "Evicted" || reason == "TerminationByKubelet",
        reason,
        message: message.unwrap_or_default(),
        ran,
    })
}

/// A watch on one pod (opened before it exists) that reports how it ended.
struct EndWatch {
    child: Child,
    /// Every update's `status`.
    rx: mpsc::Receiver<Value>,
}

/// How long after the first terminal phase a reason may still arrive: a kubelet may report the
/// phase its containers' exit implies before the eviction's reason (seen with the Go kubelet).
const REASON_GRACE: Duration = Duration::from_secs(5);

impl EndWatch {
    fn start(cluster: &Cluster, name: &str) -> Result<EndWatch> {
        let mut child = Command::new(cluster.kubectl_path())
            .arg("--kubeconfig")
            .arg(cluster.admin_kubeconfig())
            .args(["get", "pods", "--field-selector"])
            .arg(format!("metadata.name={name}"))
            .args(["--watch", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl get --watch")?;
        let out = child.stdout.take().context("watch stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(BufReader::new(out)).into_iter();
            for v in stream {
                let Ok(v): Result<Value, _> = v else { return };
                if tx.send(v["status"].clone()).is_err() {
                    return;
                }
            }
        });
        Ok(EndWatch { child, rx })
    }

    /// The pod's end: its first terminal phase, and the reason given by then or within
    /// [`REASON_GRACE`].
    fn wait(mut self) -> Result<End> {
        let got = self.end();
        let _ = self.child.kill();
        let _ = self.child.wait();
        got
    }

    fn end(&self) -> Result<End> {
        let start = Instant::now();
        let mut ran = false;
        let mut terminal: Option<(Instant, End)> = None;
        loop {
            let deadline = match &terminal {
                Some((at, _)) => *at + REASON_GRACE,
                None => start + T,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let status = match self.rx.recv_timeout(left) {
                Ok(u) => u,
                Err(_) => {
                    return terminal
                        .map(|(_, end)| end)
                        .with_context(|| format!("the ramp pod did not end within {T:?}"));
                }
            };
            ran |= status["phase"] == "Running";
            if let Some(end) = end_of(&status, ran) {
                if !end.reason.is_empty() {
                    return Ok(end);
                }
                let at = terminal.as_ref().map_or_else(Instant::now, |(at, _)| *at);
                terminal = Some((at, end));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_evicted_pod_without_kernel_kills_wins() {
        let run = |evicted, kills| RampRun {
            reason: String::new(),
            evicted,
            kills,
            guaranteed_kills: 0,
        };
        assert!(run(true, 0).won());
        assert!(!run(true, 2).won());
        assert!(!run(false, 0).won());
    }

    #[test]
    fn both_kubelets_ways_of_saying_evicted_count() {
        let nodelet = serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "m"});
        let end = end_of(&nodelet, true).expect("terminal");
        assert!(end.evicted && end.ran);
        // The Go kubelet v1.37, as seen in this race.
        let go = serde_json::json!({"phase": "Succeeded", "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
             "message": "The node was low on resource: memory."},
            {"type": "Ready", "status": "False", "reason": "PodCompleted"}]});
        let end = end_of(&go, true).expect("terminal");
        assert!(end.evicted, "{end:?}");
        assert!(end.message.contains("low on resource"));
        let oom = serde_json::json!({"phase": "Failed", "conditions": []});
        let end = end_of(&oom, true).expect("terminal");
        assert!(!end.evicted && end.reason.is_empty());
        assert!(end_of(&serde_json::json!({"phase": "Running"}), true).is_none());
    }
}
