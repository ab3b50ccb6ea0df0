//! `cargo xtask bench eviction`: how fast the agent learns of an OOM kill and of a memory
//! threshold crossing, and who wins the race between eviction and the kernel's OOM killer, in
//! one run, printed as one table.
//!
//! One private containerd, the agent restarted per set-up (the pods stay and are adopted), the
//! race set-up of [`xtask::race`] (kubepods ~512 MiB, hard `allocatableMemory.available` 100 MiB,
//! a Guaranteed pod):
//! - OOM kill -> status: pods (20 MiB limit, `restartPolicy: Never`) whose main process is
//!   killed by the kernel. From the kill's eBPF record (kernel timestamp, in the agent's dump)
//!   to the container status `OOMKilled` first served on the read-only port's `/pods`, polled
//!   every ~2 ms (the figure includes up to one poll period).
//! - Threshold crossing -> decision: a 1 ms watcher of kubepods' memory files (working set as
//!   the agent computes it) times the crossing; the decision is the agent's "evicting pod" log
//!   line (its timestamp, microseconds). Taken from every race run, plus extra 100 MiB/s ramps
//!   on eBPF until `crossings` is reached.
//! - The race: BestEffort ramps at each rate for three set-ups: nodelet on eBPF records,
//!   nodelet on the cgroupfs poller (`NODELET_TELEMETRY=cgroupfs`, 1 s), and the kubelet's
//!   schedule (the poller plus `NODELET_EVICTION_KUBELET_SCHEDULE=1`: memory evaluated every
//!   10 s only). Each ramp starts at a random phase of the set-up's evaluation period (1 s or
//!   10 s). A run is won when the pod is evicted and the kernel logged no OOM kill inside
//!   this node's kubepods (its own `oom-kill:` record in /dev/kmsg, the same event as eBPF's
//!   mark_victim, available whatever the agent's telemetry). Also counted: runs where the
//!   decision came before the first kill (the log's clock tied to wall time by a record of our
//!   own), which tells a lost decision from a pod that outgrew kubepods while being stopped;
//!   and runs where a victim was the Guaranteed pod (which the kubelet's ranking spares).

pub(crate) mod kernel;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::containerd::{Env, EnvOpts};
use xtask::race::{self, THRESHOLD_MI};

use crate::bench::{Bed, http_get, percentile, pod_manifest};
use kernel::{KernelKill, Kmsg, Watcher, log_time_ns, monotonic_to_unix_ns, unix_ns};

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct EvictionBench {
    /// Races per rate and set-up.
    pub runs: usize,
    /// OOM kills to time (0: skip).
    pub ooms: usize,
    /// Threshold crossings to time on eBPF (at least; every race run counts too).
    pub crossings: usize,
    /// Ramp rates, MiB/s.
    pub rates: Vec<i64>,
    /// The agent binary.
    pub bin: PathBuf,
    /// Set-ups to run, by key (`ebpf`, `cgroupfs`, `kubelet`); empty: all.
    pub setups: Vec<String>,
}

/// A set-up of the race: name and the agent's environment.
struct Setup {
    /// Its `--setups` key.
    key: &'static str,
    name: &'static str,
    telemetry: &'static str,
    kubelet_schedule: bool,
}

const SETUPS: [Setup; 3] = [
    Setup {
        key: "ebpf",
        name: "nodelet, eBPF",
        telemetry: "auto",
        kubelet_schedule: false,
    },
    Setup {
        key: "cgroupfs",
        name: "nodelet, cgroupfs 1 s",
        telemetry: "cgroupfs",
        kubelet_schedule: false,
    },
    Setup {
        key: "kubelet",
        name: "kubelet schedule 10 s",
        telemetry: "cgroupfs",
        kubelet_schedule: true,
    },
];

/// The static pod name the agent gives manifest `name`.
const NODE: &str = "bench-node";
/// How long a pod may take to reach the state waited for.
const T: Duration = Duration::from_secs(120);

/// One race run.
#[derive(Debug, Default, Clone)]
struct Run {
    evicted: bool,
    /// The pod's final status reason (`Evicted` when evicted).
    reason: String,
    /// Kernel OOM kills inside this node's kubepods during the run.
    ooms: usize,
    /// Of which before the eviction decision (all of them without a decision).
    ooms_before_decision: usize,
    /// Of which the Guaranteed pod was the victim.
    guaranteed_ooms: usize,
    /// Threshold crossing -> decision, ms.
    crossing_ms: Option<f64>,
}

impl Run {
    fn won(&self) -> bool {
        self.evicted && self.ooms == 0
    }
}

/// Results of one set-up: runs per rate, and crossing -> decision samples.
#[derive(Debug, Default)]
struct Outcome {
    /// The set-up's name.
    name: &'static str,
    /// Whether it is the eBPF set-up, the one whose OOM latencies are timed.
    ebpf: bool,
    runs: Vec<(i64, Vec<Run>)>,
    crossings: Vec<f64>,
    source: String,
}

/// Runs everything and prints the table.
pub fn eviction(b: &EvictionBench) -> Result<()> {
    if let Some(k) = b
        .setups
        .iter()
        .find(|k| SETUPS.iter().all(|s| s.key != k.as_str()))
    {
        bail!("unknown set-up {k:?} (known: ebpf, cgroupfs, kubelet)");
    }
    let tmp = tempfile::Builder::new()
        .prefix("nodelet-bench-eviction-")
        .tempdir()?;
    let cpu_cgroup = PathBuf::from(format!(
        "/sys/fs/cgroup/cpuacct/nodelet-bench-eviction-{}",
        std::process::id()
    ));
    fs::create_dir_all(&cpu_cgroup).context("creating the agent's cpuacct cgroup")?;
    let cgroup_root = format!("/nodelet-bench-eviction-{}", std::process::id());
    let env = Env::start(EnvOpts {
        cgroup_parent: Some(cgroup_root.clone()),
        ..Default::default()
    })?;
    let dir = tmp.path().to_owned();
    let bed = match bed(b, env, &dir, &cgroup_root, &cpu_cgroup) {
        Ok(bed) => bed,
        Err(e) => {
            let _ = fs::remove_dir(&cpu_cgroup);
            return Err(e);
        }
    };
    let mut bed = bed;
    let result = measure(b, &mut bed, &cgroup_root);
    let stopped = bed.env.stop();
    let _ = fs::remove_dir(&cpu_cgroup);
    let (ooms, outcomes) = result?;
    stopped?;
    print_table(b, &ooms, &outcomes);
    Ok(())
}

fn bed(
    b: &EvictionBench,
    env: Env,
    dir: &Path,
    cgroup_root: &str,
    cpu_cgroup: &Path,
) -> Result<Bed> {
    let manifests = dir.join("manifests");
    fs::create_dir_all(&manifests)?;
    fs::create_dir_all(dir.join("root"))?;
    let free_port = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (ro_port, port) = (free_port()?, free_port()?);
    let config = dir.join("config.yaml");
    // Disk thresholds off (only the memory one is set) and image GC off: a shared machine's
    // disk says nothing about this race.
    fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: {}\npodLogsDir: {}\ncgroupRoot: {cgroup_root}\n\
             fileCheckFrequency: 5s\naddress: 127.0.0.1\nreadOnlyPort: {ro_port}\nport: {port}\n\
             healthzPort: 0\nimageGCHighThresholdPercent: 100\n{}",
            manifests.display(),
            dir.join("logs").display(),
            race::config_lines()?
        ),
    )?;
    Ok(Bed {
        bin: b.bin.clone(),
        settle: Duration::ZERO,
        window: Duration::ZERO,
        env,
        dir: dir.to_owned(),
        config,
        dump: dir.join("dump.json"),
        cpu_cgroup: cpu_cgroup.to_owned(),
        ro_port,
        agent_env: vec![("NODELET_EVICT_STATIC_PODS".into(), "1".into())],
    })
}

fn manifests(bed: &Bed) -> PathBuf {
    bed.dir.join("manifests")
}

/// The agent's log from byte `from` on (where the current agent's part starts).
fn agent_log(bed: &Bed, from: usize) -> String {
    let log = fs::read_to_string(bed.dir.join("agent.log")).unwrap_or_default();
    log.get(from..).unwrap_or_default().to_owned()
}

/// The agent's view of static pod `name` on its read-only port (`None`: not listed).
fn listed(bed: &Bed, name: &str) -> Result<Option<Value>> {
    xtask::testing::listed_static_pod(bed.ro_port, name, NODE)
}

/// Polls `f` every `every` until it yields, at most [`T`].
fn wait<R>(what: &str, every: Duration, mut f: impl FnMut() -> Result<Option<R>>) -> Result<R> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            // The agent may be between restarts: retry until the deadline.
            Err(e) if start.elapsed() > T => return Err(e.context(format!("waiting for {what}"))),
            Err(_) => {}
        }
        if start.elapsed() > T {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

fn measure(
    b: &EvictionBench,
    bed: &mut Bed,
    cgroup_root: &str,
) -> Result<(Vec<f64>, Vec<Outcome>)> {
    fs::write(
        manifests(bed).join("guaranteed.yaml"),
        race::GUARANTEED_MANIFEST,
    )?;
    let mut ooms = Vec::new();
    let mut outcomes = Vec::new();
    let chosen = SETUPS
        .iter()
        .enumerate()
        .filter(|(_, s)| b.setups.is_empty() || b.setups.iter().any(|k| k == s.key));
    for (n, (k, setup)) in chosen.enumerate() {
        eprintln!("bench: set-up {:?}", setup.name);
        // eBPF is the set-up whose OOM and crossing latencies the table reports.
        let ebpf = setup.key == "ebpf";
        bed.agent_env = vec![
            ("NODELET_EVICT_STATIC_PODS".into(), "1".into()),
            (
                "NODELET_EVICTION_KUBELET_SCHEDULE".into(),
                if setup.kubelet_schedule { "1" } else { "" }.into(),
            ),
        ];
        let bed = &*bed;
        let log_from = agent_log(bed, 0).len();
        let agent = bed.start_agent_with(setup.telemetry, None, n == 0)?;
        let result = (|| -> Result<Outcome> {
            wait(
                "the Guaranteed pod to run",
                Duration::from_millis(200),
                || Ok(listed(bed, "guaranteed")?.filter(|p| p["status"]["phase"] == "Running")),
            )?;
            if ebpf && b.ooms > 0 {
                ooms = oom_to_status(bed, b.ooms)?;
            }
            let mut out = Outcome {
                name: setup.name,
                ebpf,
                source: telemetry_source(bed),
                ..Outcome::default()
            };
            let mut kmsg = Kmsg::open()?;
            // The agent's memory evaluation period in this set-up.
            let period = Duration::from_secs(if setup.kubelet_schedule { 10 } else { 1 });
            for &rate in &b.rates {
                let mut runs = Vec::new();
                for i in 0..b.runs {
                    // Names (so static pod UIDs) never repeat across set-ups.
                    let tag = format!("{k}-{i}");
                    let r = race_run(bed, cgroup_root, log_from, &mut kmsg, rate, &tag, period)?;
                    eprintln!("bench: {} {rate} MiB/s run {i}: {r:?}", setup.name);
                    out.crossings.extend(r.crossing_ms);
                    runs.push(r);
                }
                out.runs.push((rate, runs));
            }
            // More crossings on eBPF, at 100 MiB/s, until the count asked for.
            let mut extra = 0;
            while ebpf && out.crossings.len() < b.crossings && extra < 2 * b.crossings {
                let r = race_run(
                    bed,
                    cgroup_root,
                    log_from,
                    &mut kmsg,
                    100,
                    &format!("x{extra}"),
                    period,
                )?;
                eprintln!("bench: extra crossing {extra}: {r:?}");
                out.crossings.extend(r.crossing_ms);
                extra += 1;
            }
            out.crossings.sort_by(f64::total_cmp);
            Ok(out)
        })();
        agent.stop()?;
        outcomes.push(result?);
    }
    Ok((ooms, outcomes))
}

/// Which source the agent reports (`nodelet_telemetry_source`), for the table.
fn telemetry_source(bed: &Bed) -> String {
    let m = wait("the agent's /metrics", Duration::from_millis(200), || {
        http_get(bed.ro_port, "/metrics").map(Some)
    })
    .unwrap_or_default();
    m.lines()
        .filter(|l| l.starts_with("nodelet_telemetry_source{") && l.ends_with(" 1"))
        .find_map(|l| l.split('"').nth(1).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Whether a pod's first container status says OOMKilled (now or as its last state).
fn oom_killed(pod: &Value) -> bool {
    let c = &pod["status"]["containerStatuses"][0];
    c["state"]["terminated"]["reason"] == "OOMKilled"
        || c["lastState"]["terminated"]["reason"] == "OOMKilled"
}

/// OOM kill (eBPF record, kernel time) -> status `OOMKilled` served on `/pods`, ms, over
/// `count` pods whose main process the kernel kills.
fn oom_to_status(bed: &Bed, count: usize) -> Result<Vec<f64>> {
    eprintln!("bench: OOM kill -> status over {count} kills");
    let mut out = Vec::new();
    for i in 0..count {
        let name = format!("oom{i}");
        let file = manifests(bed).join(format!("{name}.yaml"));
        // `tail` replaces the shell as the container's main process (its PID namespace's
        // init) and holds 50 MiB against 20: the kernel kills it, which ends the container.
        let m = pod_manifest(
            &name,
            1,
            "sleep 1; exec tail -c 52428800 /dev/zero",
            Some("20Mi"),
        ) + "  restartPolicy: Never\n";
        fs::write(&file, m)?;
        let seen = wait(
            &format!("{name} to show OOMKilled"),
            Duration::from_millis(2),
            || {
                let p = listed(bed, &name)?;
                Ok(p.filter(oom_killed).map(|_| SystemTime::now()))
            },
        )?;
        let full = format!("{name}-{NODE}");
        let d = bed.wait_dump(&format!("the OOM record of {name}"), |d| {
            d["ooms"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x["pod"]["name"] == full.as_str()))
        })?;
        let kts = d["ooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["pod"]["name"] == full.as_str())
            .filter_map(|x| x["kernel_ts_ns"].as_u64())
            .min()
            .context("OOM record without a kernel timestamp")?;
        let kill = kts as i128 + monotonic_to_unix_ns();
        let ms = (unix_ns(seen) - kill) as f64 / 1e6;
        eprintln!("bench: {name}: kill -> status {ms:.2} ms");
        out.push(ms);
        fs::remove_file(&file)?;
        wait(
            &format!("{name} to be gone"),
            Duration::from_millis(100),
            || Ok(listed(bed, &name)?.is_none().then_some(())),
        )?;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// One race: a BestEffort pod ramping at `rate` MiB/s beside the Guaranteed pod.
fn race_run(
    bed: &Bed,
    cgroup_root: &str,
    log_from: usize,
    kmsg: &mut Kmsg,
    rate: i64,
    tag: &str,
    period: Duration,
) -> Result<Run> {
    let name = format!("ramp{rate}-{tag}");
    let file = manifests(bed).join(format!("{name}.yaml"));
    // The previous run's pressure must be over, or the BestEffort pod would be refused.
    wait(
        "MemoryPressure to clear",
        Duration::from_millis(200),
        || Ok((!race::memory_pressure(&agent_log(bed, log_from))).then_some(())),
    )?;
    // Pressure clears on one of the agent's passes: start at a random phase of its period, or
    // every run would cross the threshold at the same point of the schedule.
    race::sleep_random_phase(period);
    let guaranteed_uid = listed(bed, "guaranteed")?
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        .context("the Guaranteed pod is not listed")?;
    let log_start = log_from + agent_log(bed, log_from).len();
    kmsg.kills()?;
    let watcher = Watcher::start(cgroup_root);
    fs::write(&file, race::ramp_manifest(&name, rate))?;
    let evicted = wait(&format!("{name} to end"), Duration::from_millis(50), || {
        Ok(listed(bed, &name)?
            .filter(|p| p["status"]["phase"] == "Failed")
            .map(|p| p["status"]["reason"].as_str().unwrap_or("").to_owned()))
    });
    let crossing = watcher.finish();
    fs::remove_file(&file)?;
    let reason = evicted?;
    let prefix = format!("{}/kubepods", cgroup_root.trim_end_matches('/'));
    let kills: Vec<KernelKill> = kmsg
        .kills()?
        .into_iter()
        .filter(|k| k.oom_memcg.starts_with(&prefix) || k.task_memcg.starts_with(&prefix))
        .collect();
    let uid_dir = format!("pod{guaranteed_uid}");
    let decision = agent_log(bed, log_start)
        .lines()
        .find(|l| l.contains("evicting pod") && l.contains(&name))
        .and_then(log_time_ns);
    let crossing_ms = match (crossing, decision) {
        (Some(c), Some(d)) => Some((d - unix_ns(c)) as f64 / 1e6),
        _ => None,
    };
    wait(
        &format!("{name} to be gone"),
        Duration::from_millis(100),
        || Ok(listed(bed, &name)?.is_none().then_some(())),
    )?;
    Ok(Run {
        evicted: reason == "Evicted",
        reason,
        ooms: kills.len(),
        ooms_before_decision: kills
            .iter()
            .filter(|k| decision.is_none_or(|d| k.at_unix_ns < d))
            .count(),
        guaranteed_ooms: kills
            .iter()
            .filter(|k| k.task_memcg.contains(&uid_dir))
            .count(),
        crossing_ms,
    })
}

fn print_table(b: &EvictionBench, ooms: &[f64], outcomes: &[Outcome]) {
    let pct = |v: &[f64]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{:.1} / {:.1} ms ({})",
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.len()
            )
        }
    };
    println!(
        "\neviction: kubepods {} MiB, hard allocatableMemory.available {THRESHOLD_MI} MiB, \
         {} run(s) per rate and set-up, agent {}\n",
        race::PODS_MI,
        b.runs,
        b.bin.display()
    );
    let head: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} (source {})", o.name, o.source))
        .collect();
    println!("| measure | {} | goal |", head.join(" | "));
    println!("|---|{}---|", "---|".repeat(outcomes.len()));
    // OOM kills are timed on the eBPF set-up only.
    let oom_cells: Vec<String> = outcomes
        .iter()
        .map(|o| if o.ebpf { pct(ooms) } else { "-".to_owned() })
        .collect();
    println!(
        "| OOM kill (kernel record) -> status OOMKilled, p50 / p99 (n) | {} | p99 <= 20 ms |",
        oom_cells.join(" | ")
    );
    let cross: Vec<String> = outcomes.iter().map(|o| pct(&o.crossings)).collect();
    println!(
        "| threshold crossing -> eviction decision, p50 / p99 (n) | {} | p99 <= 50 ms (eBPF) |",
        cross.join(" | ")
    );
    for (i, &rate) in b.rates.iter().enumerate() {
        let cells: Vec<String> = outcomes
            .iter()
            .map(|o| {
                let runs = o.runs.get(i).map_or(&[][..], |(_, r)| r.as_slice());
                let won = runs.iter().filter(|r| r.won()).count();
                let first = runs
                    .iter()
                    .filter(|r| r.evicted && r.ooms_before_decision == 0)
                    .count();
                let not_evicted = runs.iter().filter(|r| !r.evicted).count();
                let kills: usize = runs.iter().map(|r| r.ooms).sum();
                let guaranteed = runs.iter().filter(|r| r.guaranteed_ooms > 0).count();
                let mut c = format!(
                    "won {won}/{n}; decided first {first}/{n}; OOM kills {kills}; \
                     Guaranteed killed in {guaranteed}",
                    n = runs.len()
                );
                if not_evicted > 0 {
                    let reasons: Vec<&str> = runs
                        .iter()
                        .filter(|r| !r.evicted)
                        .map(|r| match r.reason.as_str() {
                            "" => "Failed, no reason",
                            other => other,
                        })
                        .collect();
                    c += &format!("; not evicted {not_evicted} ({reasons:?})");
                }
                c
            })
            .collect();
        println!(
            "| race {rate} MiB/s | {} | eBPF wins every race |",
            cells.join(" | ")
        );
    }
    println!(
        "\nwon: evicted with no kernel OOM kill in kubepods during the run; decided first: the \
         eviction decision came before any such kill (kills after it hit the pod while it was \
         being stopped); OOM kills: the \
         kernel's oom-kill records in kubepods (/dev/kmsg); Guaranteed killed in: runs where a \
         victim was the Guaranteed pod, which the kubelet's ranking spares. OOM -> status is \
         measured on eBPF only (the poller has no kill timestamp); it includes up to one 2 ms \
         poll of /pods."
    );
}
