//! The accuracy row of `bench peer` (issue 15): each agent's container CPU and working set in
//! /stats/summary against the container's own cgroup files over the same window.
//!
//! `pods` static pods run a steady load each (one container, CPU limit [`CPU_LIMIT`], a busy
//! loop plus a `tail` holding [`HOLD_BYTES`] of anonymous memory). While we poll the cgroup
//! files every [`CGROUP_EVERY`] ourselves, we poll /stats/summary every [`SUMMARY_EVERY`] and
//! compare each agent sample with the cgroup series interpolated at the sample's instant:
//! CPU as the `usageCoreNanoSeconds` delta between an agent's first and last sample, memory as
//! `workingSetBytes` against usage - inactive_file (the kubelet's working set,
//! `pkg/kubelet/stats/helper.go` via cAdvisor's `setMemoryStats`).
//!
//! Both agents print `cpu.time`/`memory.time` as metav1.Time, whole seconds. A sample's instant
//! is therefore bounded by that second and by our polls: it was taken after the last poll that
//! still returned the previous sample started, and before the poll that returned it ended. We
//! use the middle of that interval and report its half-width as the timing uncertainty.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::node::PeerNode;
use super::{full, remove_pods, wait_tasks};
use crate::bench::{http_get, percentile, pod_manifest, read_u64};

/// The CPU limit of each load container (a CFS quota, so its usage is steady).
const CPU_LIMIT: &str = "200m";
/// Anonymous memory each load container holds.
const HOLD_BYTES: u64 = 64 << 20;
/// Our cgroup poll period.
const CGROUP_EVERY: Duration = Duration::from_millis(100);
/// Our /stats/summary poll period: short, since it bounds the sample instants.
const SUMMARY_EVERY: Duration = Duration::from_millis(100);
/// How long the agents get to list the load containers in /stats/summary (the Go kubelet's
/// cAdvisor notices new cgroups on its housekeeping).
const LIST_TIMEOUT: Duration = Duration::from_secs(90);

/// What one agent's numbers were.
#[derive(Debug, Default, Clone)]
pub(super) struct Accuracy {
    /// Per container: |agent CPU delta - cgroup delta| / cgroup delta, %.
    pub cpu_err: Vec<f64>,
    /// Per container: the CPU error the timing uncertainty alone could explain, %.
    pub cpu_timing: Vec<f64>,
    /// Per agent sample: |workingSetBytes - cgroup working set| / cgroup working set, %.
    pub mem_err: Vec<f64>,
    /// Per agent sample: (workingSetBytes - cgroup working set) / cgroup working set, %.
    pub mem_signed: Vec<f64>,
    /// Per agent sample: |usageBytes - cgroup usage| / cgroup usage, % (tells a working-set
    /// error from the usage apart from one from inactive_file).
    pub usage_err: Vec<f64>,
    /// Distinct CPU samples per container (min over containers).
    pub cpu_samples: usize,
    /// Age of the sample a poll returned (poll end - sample instant), s.
    pub staleness: Vec<f64>,
}

/// One container's cgroup files.
#[derive(Debug, Clone)]
struct Files {
    /// cgroup v2 (unified, at /sys/fs/cgroup) or v1 (cpuacct and memory hierarchies).
    v2: bool,
    cpu: PathBuf,
    mem: PathBuf,
}

impl Files {
    /// (cumulative CPU ns, working set bytes, usage bytes) now.
    fn read(&self) -> Result<(f64, f64, f64)> {
        if self.v2 {
            let cpu = stat_key(&self.cpu.join("cpu.stat"), "usage_usec")? * 1000;
            let usage = read_u64(&self.mem.join("memory.current"))?;
            let inactive = stat_key(&self.mem.join("memory.stat"), "inactive_file")?;
            Ok((
                cpu as f64,
                usage.saturating_sub(inactive) as f64,
                usage as f64,
            ))
        } else {
            let cpu = read_u64(&self.cpu.join("cpuacct.usage"))?;
            let usage = read_u64(&self.mem.join("memory.usage_in_bytes"))?;
            let inactive = stat_key(&self.mem.join("memory.stat"), "total_inactive_file")?;
            Ok((
                cpu as f64,
                usage.saturating_sub(inactive) as f64,
                usage as f64,
            ))
        }
    }
}

/// `key value` from a flat-keyed cgroup file.
fn stat_key(p: &Path, key: &str) -> Result<u64> {
    let t = fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    t.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {key} in {}", p.display()))
}

/// The directory named `name` below `dir` (depth-first; cgroup trees here are shallow).
fn find_dir(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    let subdirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    if let Some(hit) = subdirs
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
    {
        return Some(hit.clone());
    }
    if depth == 0 {
        return None;
    }
    subdirs.iter().find_map(|d| find_dir(d, name, depth - 1))
}

/// The cgroup files of container `id` below the agent's cgroup root: where the runtime put it,
/// whatever the agent's QoS layout (`kubepods/burstable/pod<uid>/<id>` for both here).
fn locate(cgroup_root: &str, id: &str) -> Result<Files> {
    let rel = cgroup_root.trim_start_matches('/');
    // A pure v2 host mounts the unified tree at /sys/fs/cgroup itself.
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let base = Path::new("/sys/fs/cgroup").join(rel);
        let dir = find_dir(&base, id, 6)
            .with_context(|| format!("no cgroup of container {id} below {}", base.display()))?;
        return Ok(Files {
            v2: true,
            cpu: dir.clone(),
            mem: dir,
        });
    }
    let base = Path::new("/sys/fs/cgroup/memory").join(rel);
    let mem = find_dir(&base, id, 6)
        .with_context(|| format!("no cgroup of container {id} below {}", base.display()))?;
    let below = mem
        .strip_prefix("/sys/fs/cgroup/memory")
        .context("memory cgroup outside its hierarchy")?;
    Ok(Files {
        v2: false,
        cpu: Path::new("/sys/fs/cgroup/cpuacct").join(below),
        mem,
    })
}

/// Seconds since the epoch.
fn epoch_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// metav1.Time (`2026-12-06T21:30:05Z`, fractions allowed) -> seconds since the epoch.
fn parse_time(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let frac: f64 = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse().ok()?
    };
    Some(super::node::civil_seconds(date, hms)? as f64 + frac)
}

/// Whether a metav1.Time string carries a fraction (then it is the instant itself).
fn has_fraction(s: &str) -> bool {
    s.contains('.')
}

/// `series` (time, value), sorted by time, linearly interpolated at `t` (None outside it).
fn interpolate(series: &[(f64, f64)], t: f64) -> Option<f64> {
    let i = series.partition_point(|&(x, _)| x <= t);
    if i == 0 || i == series.len() {
        return None;
    }
    let ((t0, v0), (t1, v1)) = (series[i - 1], series[i]);
    if t1 <= t0 {
        return Some(v0);
    }
    Some(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
}

/// One distinct agent sample: its instant (estimate, half-width) and value.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    half: f64,
    value: f64,
    /// A second value of the same sample (memory: usageBytes).
    extra: f64,
}

/// Turns successive poll answers of one (container, resource) into distinct samples.
#[derive(Debug, Default)]
struct Tracker {
    /// (time string, value) of the last answer.
    last: Option<(String, u64)>,
    /// Start of the last poll that returned `last`.
    last_poll_start: f64,
    samples: Vec<Sample>,
}

impl Tracker {
    /// Records an answer of the poll [start, end]; returns the current sample's instant.
    fn observe(
        &mut self,
        time: &str,
        (value, extra): (u64, u64),
        start: f64,
        end: f64,
    ) -> Option<f64> {
        let t = parse_time(time)?;
        let key = (time.to_owned(), value);
        match &self.last {
            Some(k) if *k == key => {}
            Some(_) => {
                // Taken after the previous sample was last returned, before this poll ended,
                // within its (whole) second.
                let (lo, hi) = if has_fraction(time) {
                    (t, t)
                } else {
                    (t.max(self.last_poll_start), (t + 1.0).min(end))
                };
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (t, t + 1.0) };
                self.samples.push(Sample {
                    at: (lo + hi) / 2.0,
                    half: (hi - lo) / 2.0,
                    value: value as f64,
                    extra: extra as f64,
                });
            }
            // The first answer's sample may predate our polls: its instant is unbounded below.
            None => {}
        }
        self.last = Some(key);
        self.last_poll_start = start;
        self.samples.last().map(|s| s.at)
    }
}

/// The static pod manifest of load pod `name`.
fn load_manifest(name: &str) -> String {
    // `tail -c N` keeps the last N bytes of its input in one buffer: 64 MiB of anonymous
    // memory, held while the subshell sleeps and the pipe stays open. The busy loop runs into
    // the CFS quota, so CPU grows at the limit's rate.
    let script = format!(
        "(head -c {HOLD_BYTES} /dev/zero; exec sleep 36000) | tail -c {HOLD_BYTES} & \
         while :; do :; done"
    );
    format!(
        "{}    resources:\n      limits:\n        cpu: {CPU_LIMIT}\n",
        pod_manifest(name, 1, &script, None)
    )
}

/// The containerd id of the static pod `name`'s running container, from /pods.
fn container_id(port: u16, name: &str) -> Result<Option<String>> {
    Ok(super::container_statuses(port, name)?
        .into_iter()
        .filter(|c| c["state"]["running"].is_object())
        .find_map(|c| {
            c["containerID"]
                .as_str()
                .and_then(|id| id.split_once("://"))
                .map(|(_, id)| id.to_owned())
        }))
}

/// One cgroup poll of one container: (time, CPU ns, working set, usage).
type Point = (f64, f64, f64, f64);

/// One container's figures in one /stats/summary answer.
type Answer = (String, u64, String, u64, u64);

/// (cpu.time, usageCoreNanoSeconds, memory.time, workingSetBytes, usageBytes) of container c0
/// of each of `names` in a summary, if listed with all of them.
fn from_summary(v: &Value, names: &[String]) -> Vec<Option<Answer>> {
    let pods = v["pods"].as_array().cloned().unwrap_or_default();
    names
        .iter()
        .map(|n| {
            let full = full(n);
            let pod = pods.iter().find(|p| p["podRef"]["name"] == full.as_str())?;
            let c = pod["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "c0")?;
            Some((
                c["cpu"]["time"].as_str()?.to_owned(),
                c["cpu"]["usageCoreNanoSeconds"].as_u64()?,
                c["memory"]["time"].as_str()?.to_owned(),
                c["memory"]["workingSetBytes"].as_u64()?,
                c["memory"]["usageBytes"].as_u64()?,
            ))
        })
        .collect()
}

/// Starts `pods` load pods on `node`, compares over `window`, removes them again.
pub(super) fn measure(node: &PeerNode, pods: usize, window: Duration) -> Result<Accuracy> {
    let base = node.running_tasks()?;
    let names: Vec<String> = (0..pods).map(|i| format!("acc{i}")).collect();
    eprintln!(
        "bench: {}: accuracy: {pods} load pod(s), window {window:?}",
        node.kind
    );
    for n in &names {
        let p = node.manifests.join(format!("{n}.yaml"));
        fs::write(&p, load_manifest(n)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let result = compare(node, &names, window);
    remove_pods(node, &names)?;
    wait_tasks(
        node,
        &format!("<= {base}"),
        |t| t <= base,
        Duration::from_secs(120),
    )?;
    result
}

fn compare(node: &PeerNode, names: &[String], window: Duration) -> Result<Accuracy> {
    // Running, then listed with both stats, then holding its memory.
    let started = Instant::now();
    let files: Vec<Files> = loop {
        let ids: Vec<Option<String>> = names
            .iter()
            .map(|n| container_id(node.ro_port, n).ok().flatten())
            .collect();
        if let Some(ids) = ids.into_iter().collect::<Option<Vec<_>>>() {
            break ids
                .iter()
                .map(|id| locate(&node.cgroup_root, id))
                .collect::<Result<_>>()?;
        }
        if started.elapsed() > LIST_TIMEOUT {
            bail!("the load pods were not running after {LIST_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    loop {
        let listed = http_get(node.ro_port, "/stats/summary")
            .ok()
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .is_some_and(|v| from_summary(&v, names).iter().all(Option::is_some));
        let held = files
            .iter()
            .all(|f| f.read().is_ok_and(|(_, ws, _)| ws >= HOLD_BYTES as f64));
        if listed && held {
            break;
        }
        if started.elapsed() > LIST_TIMEOUT {
            bail!(
                "after {LIST_TIMEOUT:?}: load containers listed in /stats/summary: {listed}, \
                 holding {HOLD_BYTES} bytes: {held}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "bench: {}: accuracy: load running and listed after {:.1} s",
        node.kind,
        started.elapsed().as_secs_f64()
    );

    let stop = AtomicBool::new(false);
    let series: Mutex<Vec<Vec<Point>>> = Mutex::new(vec![Vec::new(); files.len()]);
    let mut cpu: Vec<Tracker> = names.iter().map(|_| Tracker::default()).collect();
    let mut mem: Vec<Tracker> = names.iter().map(|_| Tracker::default()).collect();
    let mut staleness = Vec::new();
    let poll_err = std::thread::scope(|s| -> Result<()> {
        let poller = s.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                for (i, f) in files.iter().enumerate() {
                    // Stamped after the read: the read itself takes microseconds.
                    let (c, w, u) = f.read()?;
                    let at = epoch_s(SystemTime::now());
                    if let Ok(mut s) = series.lock() {
                        s[i].push((at, c, w, u));
                    }
                }
                std::thread::sleep(CGROUP_EVERY);
            }
            Ok(())
        });
        // The poller's series must start before the first agent sample it is asked about.
        std::thread::sleep(CGROUP_EVERY * 3);
        let until = Instant::now() + window;
        let mut result = Ok(());
        while Instant::now() < until {
            let t0 = epoch_s(SystemTime::now());
            let body = http_get(node.ro_port, "/stats/summary");
            let t1 = epoch_s(SystemTime::now());
            match body.and_then(|b| serde_json::from_str::<Value>(&b).context("bad JSON")) {
                Ok(v) => {
                    for (i, got) in from_summary(&v, names).into_iter().enumerate() {
                        let Some((ct, cv, mt, mv, mu)) = got else {
                            continue;
                        };
                        if let Some(at) = cpu[i].observe(&ct, (cv, 0), t0, t1) {
                            staleness.push(t1 - at);
                        }
                        mem[i].observe(&mt, (mv, mu), t0, t1);
                    }
                }
                Err(e) => {
                    result = Err(e.context("GET /stats/summary during the window"));
                    break;
                }
            }
            std::thread::sleep(SUMMARY_EVERY);
        }
        // Let the series run past the last sample's instant.
        std::thread::sleep(CGROUP_EVERY * 3);
        stop.store(true, Ordering::Relaxed);
        poller
            .join()
            .map_err(|_| anyhow::anyhow!("the cgroup poller panicked"))??;
        result
    });
    poll_err?;
    let series = series
        .into_inner()
        .map_err(|_| anyhow::anyhow!("the cgroup series lock is poisoned"))?;

    let mut acc = Accuracy {
        cpu_samples: usize::MAX,
        staleness,
        ..Accuracy::default()
    };
    for (i, s) in series.iter().enumerate() {
        let cs: Vec<(f64, f64)> = s.iter().map(|&(t, c, _, _)| (t, c)).collect();
        let ws: Vec<(f64, f64)> = s.iter().map(|&(t, _, w, _)| (t, w)).collect();
        let us: Vec<(f64, f64)> = s.iter().map(|&(t, _, _, u)| (t, u)).collect();
        let samples: Vec<Sample> = cpu[i]
            .samples
            .iter()
            .copied()
            .filter(|x| interpolate(&cs, x.at).is_some())
            .collect();
        acc.cpu_samples = acc.cpu_samples.min(samples.len());
        if let (Some(a), Some(b)) = (samples.first(), samples.last())
            && samples.len() >= 2
            && let (Some(ca), Some(cb)) = (interpolate(&cs, a.at), interpolate(&cs, b.at))
            && cb > ca
        {
            let truth = cb - ca;
            acc.cpu_err
                .push(((b.value - a.value) - truth).abs() / truth * 100.0);
            // The CPU the container burns while the instants are uncertain.
            let rate = truth / (b.at - a.at);
            acc.cpu_timing
                .push((a.half + b.half) * rate / truth * 100.0);
        }
        for x in &mem[i].samples {
            if let Some(w) = interpolate(&ws, x.at)
                && w > 0.0
            {
                acc.mem_err.push((x.value - w).abs() / w * 100.0);
                acc.mem_signed.push((x.value - w) / w * 100.0);
            }
            if let Some(u) = interpolate(&us, x.at)
                && u > 0.0
            {
                acc.usage_err.push((x.extra - u).abs() / u * 100.0);
            }
        }
    }
    if acc.cpu_samples == usize::MAX {
        acc.cpu_samples = 0;
    }
    for v in [
        &mut acc.cpu_err,
        &mut acc.cpu_timing,
        &mut acc.mem_err,
        &mut acc.mem_signed,
        &mut acc.usage_err,
        &mut acc.staleness,
    ] {
        v.sort_by(f64::total_cmp);
    }
    Ok(acc)
}

/// Table rows (same columns as `print_table`) for nodelet `n` and the Go kubelet `g`.
pub(super) fn rows(pods: usize, n: &Accuracy, g: &Accuracy) -> Vec<String> {
    let med_max = |v: &[f64]| (percentile(v, 0.5), v.last().copied().unwrap_or(f64::NAN));
    let row = |what: String, a: &[f64], k: &[f64], goal: &str| {
        let (a, k) = (med_max(a), med_max(k));
        // An exact kubelet figure (0) has no meaningful ratio.
        let ratio = if k.0 > 0.0 {
            format!("{:.3}", a.0 / k.0)
        } else {
            "-".to_owned()
        };
        format!(
            "| {what} | {:.2} ({:.2}) | {:.2} ({:.2}) | {ratio} | {goal} |",
            a.0, a.1, k.0, k.1
        )
    };
    vec![
        row(
            format!(
                "CPU error vs cgroup %, median (max) of {pods} containers, first..last sample \
                 ({} / {} samples each)",
                n.cpu_samples, g.cpu_samples
            ),
            &n.cpu_err,
            &g.cpu_err,
            "<= 1 (kubelet <= 5)",
        ),
        row(
            "  CPU error the sample-instant uncertainty allows %, median (max)".to_owned(),
            &n.cpu_timing,
            &g.cpu_timing,
            "",
        ),
        row(
            format!(
                "working set error vs cgroup %, median (max) of {} / {} samples",
                n.mem_err.len(),
                g.mem_err.len()
            ),
            &n.mem_err,
            &g.mem_err,
            "<= 1 (kubelet <= 5)",
        ),
        row(
            "  working set signed error %, median (max)".to_owned(),
            &n.mem_signed,
            &g.mem_signed,
            "",
        ),
        row(
            "  memory usage error vs cgroup %, median (max)".to_owned(),
            &n.usage_err,
            &g.usage_err,
            "",
        ),
        row(
            "stats age when read s, median (max)".to_owned(),
            &n.staleness,
            &g.staleness,
            "",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metav1_times_parse_with_and_without_fraction() {
        // date -u -d '2026-12-06 03:55:00' +%s
        assert_eq!(parse_time("2026-12-06T03:55:00Z"), Some(1_796_529_300.0));
        assert_eq!(parse_time("2026-12-06T03:55:00.5Z"), Some(1_796_529_300.5));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn interpolation_is_linear_inside_and_none_outside() {
        let s = [(0.0, 0.0), (1.0, 10.0), (3.0, 30.0)];
        assert_eq!(interpolate(&s, 0.5), Some(5.0));
        assert_eq!(interpolate(&s, 2.0), Some(20.0));
        assert_eq!(interpolate(&s, -1.0), None);
        assert_eq!(interpolate(&s, 3.0), None);
    }

    #[test]
    fn a_new_sample_is_placed_between_the_polls_that_bound_it() {
        let mut t = Tracker::default();
        let base = parse_time("2026-12-06T03:55:00Z").expect("time");
        // The first answer is not a sample: nothing bounds it below.
        assert_eq!(
            t.observe("2026-12-06T03:55:00Z", (1, 0), base + 0.1, base + 0.2),
            None
        );
        assert_eq!(
            t.observe("2026-12-06T03:55:00Z", (1, 0), base + 0.4, base + 0.5),
            None
        );
        // Changed between the poll that started at .4 and the one that ended at .8.
        let at = t.observe("2026-12-06T03:55:00Z", (2, 0), base + 0.7, base + 0.8);
        let s = t.samples[0];
        assert!((s.at - (base + 0.6)).abs() < 1e-6, "{s:?}");
        assert!((s.half - 0.2).abs() < 1e-6, "{s:?}");
        assert_eq!(at, Some(s.at));
    }
}
