//! One agent of `bench peer` on a containerd of its own: standalone (static pods, no API
//! server), its read-only port for /pods and the stats endpoints, its own cpuacct cgroup, and
//! containerd's task events as the clock of "container running".

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::containerd::{Env, EnvOpts};
use xtask::kubelet::Kind;

use crate::bench::{http_get, read_u64};

/// The node name both agents run as; a static pod `x` is listed as `x-peer-node`.
pub(super) const NODE: &str = "peer-node";
/// How long an agent may take to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(20);

/// A free TCP port on loopback.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr().context("no local address")?.port())
}

/// CLOCK_MONOTONIC now, ns (the clock of the kernel's log records once calibrated).
pub(super) fn mono_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The KubeletConfiguration of both agents, standalone: kubelet.rs's deviations for this
/// machine (cgroup v1, swap, disk thresholds at 1 %, image GC off) plus a static pod dir, a
/// read-only port, anonymous AlwaysAllow (no API server to ask) and `maxPods: 300` (250 pods
/// exceed the default 110).
fn render_config(
    port: u16,
    ro_port: u16,
    manifests: &Path,
    cgroup_root: &str,
    endpoint: &str,
    logs: &Path,
) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         address: 127.0.0.1\n\
         port: {port}\n\
         readOnlyPort: {ro_port}\n\
         healthzPort: 0\n\
         staticPodPath: {manifests}\n\
         authentication:\n  anonymous:\n    enabled: true\n  webhook:\n    enabled: false\n\
         authorization:\n  mode: AlwaysAllow\n\
         cgroupDriver: cgroupfs\n\
         cgroupRoot: {root}\n\
         failCgroupV1: false\n\
         failSwapOn: false\n\
         maxPods: 300\n\
         containerRuntimeEndpoint: {endpoint}\n\
         podLogsDir: {logs}\n\
         evictionHard:\n  memory.available: 100Mi\n  nodefs.available: 1%\n  \
         imagefs.available: 1%\n  nodefs.inodesFree: 1%\n\
         imageGCHighThresholdPercent: 100\n\
         imageGCLowThresholdPercent: 99\n",
        manifests = q(&manifests.to_string_lossy()),
        root = q(cgroup_root),
        endpoint = q(endpoint),
        logs = q(&logs.to_string_lossy()),
    )
}

/// `/tasks/start` events of containerd: (containerd's timestamp, container id).
#[derive(Debug)]
struct Events {
    child: Child,
    starts: Arc<Mutex<Vec<(SystemTime, String)>>>,
}

/// `YYYY-MM-DD` and `HH:MM:SS` (UTC) -> seconds since the epoch.
pub(super) fn civil_seconds(date: &str, hms: &str) -> Option<i64> {
    let num = |s: &str, sep: char| -> Option<Vec<i64>> {
        let v: Vec<i64> = s
            .split(sep)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 3).then_some(v)
    };
    let (d, t) = (num(date, '-')?, num(hms, ':')?);
    Some(days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-06 03:55:00.123456789 +0000 UTC k8s.io /tasks/start {"container_id":"…",…}` (Go's
/// time.Time format, as `ctr events` prints) -> (time, topic, json).
fn parse_event(line: &str) -> Option<(SystemTime, &str, &str)> {
    let mut it = line.split_whitespace();
    let (date, time, offset) = (it.next()?, it.next()?, it.next()?);
    let (_tz, _ns, topic) = (it.next()?, it.next()?, it.next()?);
    let json = &line[line.find('{')?..];
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    if frac.len() > 9 {
        return None;
    }
    let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let off = offset.trim_start_matches(['+', '-']);
    let off_s = sign
        * (off.get(..2)?.parse::<i64>().ok()? * 3600 + off.get(2..4)?.parse::<i64>().ok()? * 60);
    let secs = civil_seconds(date, hms)? - off_s;
    let at = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(secs).ok()?)
        + Duration::from_nanos(u64::try_from(nanos).ok()?);
    Some((at, topic, json))
}

impl Events {
    fn start(env: &Env) -> Result<Events> {
        let mut child = env
            .ctr()
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ctr events")?;
        let out = child.stdout.take().context("ctr events has no stdout")?;
        let starts = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&starts);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let Some((at, "/tasks/start", json)) = parse_event(&line) else {
                    continue;
                };
                let id = serde_json::from_str::<Value>(json)
                    .ok()
                    .and_then(|v| v["container_id"].as_str().map(str::to_owned));
                if let (Some(id), Ok(mut s)) = (id, sink.lock()) {
                    s.push((at, id));
                }
            }
        });
        Ok(Events { child, starts })
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One agent and its containerd.
#[derive(Debug)]
pub(super) struct PeerNode {
    /// Which agent.
    pub kind: Kind,
    bin: PathBuf,
    env: Option<Env>,
    dir: PathBuf,
    /// The static pod dir.
    pub manifests: PathBuf,
    config: PathBuf,
    /// The read-only port on 127.0.0.1.
    pub ro_port: u16,
    cpu_cgroup: PathBuf,
    /// cgroupRoot of the agent (and the Env's cgroup parent).
    pub cgroup_root: String,
    child: Option<Child>,
    events: Option<Events>,
    log: PathBuf,
}

impl PeerNode {
    /// Starts containerd, then the agent on an empty static pod dir.
    pub fn start(kind: Kind, bin: &Path) -> Result<PeerNode> {
        let cgroup_root = format!("/nodelet-peer-{}-{}", std::process::id(), kind.name());
        let env = Env::start(EnvOpts {
            cgroup_parent: Some(cgroup_root.clone()),
            ..EnvOpts::default()
        })?;
        let dir = env.dir().to_owned();
        let cpu_cgroup = PathBuf::from(format!(
            "/sys/fs/cgroup/cpuacct/nodelet-peer-agent-{}-{}",
            std::process::id(),
            kind.name()
        ));
        let mut node = PeerNode {
            kind,
            bin: bin.to_owned(),
            manifests: dir.join("manifests"),
            config: dir.join("config.yaml"),
            log: dir.join("agent.log"),
            ro_port: free_port()?,
            cpu_cgroup,
            cgroup_root,
            child: None,
            events: None,
            dir,
            env: Some(env),
        };
        // From here on a failure drops `node`, which removes everything.
        for d in [
            node.manifests.clone(),
            node.dir.join("root"),
            node.dir.join("logs"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        fs::create_dir_all(&node.cpu_cgroup)
            .with_context(|| format!("cannot create {}", node.cpu_cgroup.display()))?;
        xtask::kubelet::make_cgroup(&node.cgroup_root)?;
        let env = node.env.as_ref().context("no Env")?;
        fs::write(
            &node.config,
            render_config(
                free_port()?,
                node.ro_port,
                &node.manifests,
                &node.cgroup_root,
                &env.endpoint(),
                &node.dir.join("logs"),
            ),
        )
        .with_context(|| format!("cannot write {}", node.config.display()))?;
        node.events = Some(Events::start(env)?);
        node.launch()?;
        Ok(node)
    }

    /// Spawns the agent into its cpuacct cgroup and waits until its read-only port answers.
    pub fn launch(&mut self) -> Result<()> {
        let env = self.env.as_ref().context("no Env")?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--config={}", self.config.display()))
            .arg(format!("--root-dir={}", self.dir.join("root").display()))
            .arg(format!("--hostname-override={NODE}"));
        match self.kind {
            Kind::Nodelet => cmd.arg(format!("--container-runtime-endpoint={}", env.endpoint())),
            Kind::Go => cmd.arg(format!("--cert-dir={}", self.dir.join("pki").display())),
        };
        let out = fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let err = out.try_clone().context("cannot duplicate a file handle")?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; the agent
        // dies with us, so an interrupted run leaves no kubelet behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let procs = self.cpu_cgroup.join("cgroup.procs");
        let pid = child.id();
        self.child = Some(child);
        fs::write(&procs, pid.to_string())
            .with_context(|| format!("cannot write {}", procs.display()))?;
        let started = Instant::now();
        while http_get(self.ro_port, "/pods").is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!(
                    "the {} exited ({st}); {} ends with:\n{}",
                    self.kind,
                    self.log.display(),
                    xtask::process::log_tail(&self.log, 30)
                );
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!(
                    "the {}'s read-only port {} did not answer in 90 s; {} ends with:\n{}",
                    self.kind,
                    self.ro_port,
                    self.log.display(),
                    xtask::process::log_tail(&self.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGTERM, SIGKILL after [`GRACE`]; pods keep running.
    pub fn stop_agent(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + GRACE;
        while c.try_wait().context("cannot wait for the agent")?.is_none() {
            if Instant::now() >= deadline {
                let _ = c.kill();
                c.wait().context("cannot wait for the agent")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The agent's CPU time so far (its cpuacct cgroup: every thread and child), ns.
    pub fn cpu_ns(&self) -> Result<u64> {
        read_u64(&self.cpu_cgroup.join("cpuacct.usage"))
    }

    /// The containerd daemon's CPU time so far (utime + stime; its shims and runc are not its
    /// children and are left out), ns.
    pub fn containerd_cpu_ns(&self) -> Result<u64> {
        let pid = self
            .env
            .as_ref()
            .and_then(Env::containerd_pid)
            .context("containerd not running")?;
        let p = format!("/proc/{pid}/stat");
        let s = fs::read_to_string(&p).with_context(|| format!("cannot read {p}"))?;
        // Fields after the command, which is in parentheses and may hold spaces.
        let rest = s.rsplit_once(')').map(|r| r.1).context("bad stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        let (Some(u), Some(k)) = (ticks(11), ticks(12)) else {
            bail!("no utime/stime in {p}");
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok((u + k) * 1_000_000_000 / hz)
    }

    /// The agent's resident set, MiB.
    pub fn rss_mib(&self) -> Result<f64> {
        let pid = self.child.as_ref().context("agent not running")?.id();
        let p = format!("/proc/{pid}/status");
        let s = fs::read_to_string(&p).with_context(|| format!("cannot read {p}"))?;
        let kib: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no VmRSS in {p}"))?;
        Ok(kib / 1024.0)
    }

    /// Run time of the agent's BPF programs so far, ns (`kernel.bpf_stats_enabled`): the
    /// programs whose fds the agent holds (`prog_id` in /proc/PID/fdinfo; this bpftool lists
    /// no holders, and other sessions' agents load the same programs).
    pub fn bpf_ns(&self) -> Result<u64> {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return Ok(0);
        };
        let fds = format!("/proc/{pid}/fd");
        let mut ids = Vec::new();
        for e in fs::read_dir(&fds)
            .with_context(|| format!("cannot list {fds}"))?
            .flatten()
        {
            if fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog") {
                let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
                if let Some(id) = fs::read_to_string(&info).ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("prog_id:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                }) {
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(crate::bench::bpf_progs()?
            .into_iter()
            .filter(|p| ids.contains(&p.0))
            .map(|p| p.2)
            .sum())
    }

    /// Running tasks in containerd (a pod: its sandbox and its container).
    pub fn running_tasks(&self) -> Result<usize> {
        let env = self.env.as_ref().context("no Env")?;
        let out = env
            .ctr()
            .args(["tasks", "ls"])
            .output()
            .context("ctr tasks ls")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("RUNNING"))
            .count())
    }

    /// Every container in containerd (sandboxes included), id -> image.
    pub fn containers(&self) -> Result<HashMap<String, String>> {
        let env = self.env.as_ref().context("no Env")?;
        let out = env
            .ctr()
            .args(["containers", "ls"])
            .output()
            .context("ctr containers ls")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_owned(), it.next()?.to_owned()))
            })
            .collect())
    }

    /// `/tasks/start` events seen so far.
    pub fn task_starts(&self) -> Vec<(SystemTime, String)> {
        self.events
            .as_ref()
            .and_then(|e| e.starts.lock().ok().map(|s| s.clone()))
            .unwrap_or_default()
    }

    /// Stops the agent, then containerd and its pods, cgroups and dir.
    pub fn stop(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.stop_agent() {
            errors.push(format!("{e:#}"));
        }
        self.events = None;
        if let Some(env) = self.env.take() {
            if let Err(e) = env.stop() {
                errors.push(format!("{e:#}"));
            }
            xtask::kubelet::remove_log_links(&self.dir);
        }
        errors.extend(xtask::containerd::remove_cgroup_subtree(&self.cgroup_root));
        if self.cpu_cgroup.exists()
            && let Err(e) = fs::remove_dir(&self.cpu_cgroup)
        {
            errors.push(format!("cannot remove {}: {e}", self.cpu_cgroup.display()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("stopping the {}: {}", self.kind, errors.join("; "))
        }
    }
}

impl Drop for PeerNode {
    fn drop(&mut self) {
        if self.env.is_some()
            && let Err(e) = self.teardown()
        {
            eprintln!("bench: {e:#}");
        }
    }
}

/// The kernel log (`/dev/kmsg`), read from its end, with its clock mapped to CLOCK_MONOTONIC.
pub(super) struct Kmsg {
    f: fs::File,
    /// Record time (ns) minus CLOCK_MONOTONIC.
    offset_ns: i64,
}

impl Kmsg {
    /// Opens the log at its end and calibrates its clock with a record of our own: printk's
    /// clock (local_clock) and CLOCK_MONOTONIC may differ by an offset.
    pub fn open() -> Result<Kmsg> {
        let mut f = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .context("cannot open /dev/kmsg")?;
        f.seek(SeekFrom::End(0)).context("cannot seek /dev/kmsg")?;
        let mut k = Kmsg { f, offset_ns: 0 };
        let tag = format!("nodelet bench peer: clock mark {}", mono_ns());
        let mut w = fs::File::options()
            .write(true)
            .open("/dev/kmsg")
            .context("cannot open /dev/kmsg for writing")?;
        let before = mono_ns();
        // A record without its newline waits as a continuation line until the next one.
        w.write_all(format!("{tag}\n").as_bytes())
            .context("cannot write /dev/kmsg")?;
        let after = mono_ns();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            if let Some((ns, _)) = k.read_new()?.into_iter().find(|(_, m)| m.contains(&tag)) {
                k.offset_ns = ns - (before + after) / 2;
                return Ok(k);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("our own /dev/kmsg record did not come back")
    }

    /// New records: (CLOCK_MONOTONIC ns, message).
    pub fn read_new(&mut self) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let Some((head, msg)) = rec.split_once(';') else {
                        continue;
                    };
                    let Some(us) = head.split(',').nth(2).and_then(|v| v.parse::<i64>().ok())
                    else {
                        continue;
                    };
                    out.push((us * 1000 - self.offset_ns, msg.trim_end().to_owned()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // EPIPE: records were overwritten before we read them; go on from the next.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(e).context("cannot read /dev/kmsg"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_event_lines_parse_with_containerds_time() {
        let l = "2026-12-06 03:55:00.5 +0000 UTC k8s.io /tasks/start \
                 {\"container_id\":\"abc\",\"pid\":42}";
        let (at, topic, json) = parse_event(l).expect("parsed");
        assert_eq!(topic, "/tasks/start");
        assert_eq!(json, "{\"container_id\":\"abc\",\"pid\":42}");
        let t = at.duration_since(UNIX_EPOCH).expect("after epoch");
        // date -u -d '2026-12-06 03:55:00' +%s
        assert_eq!(t.as_secs(), 1_796_529_300);
        assert_eq!(t.subsec_nanos(), 500_000_000);
        assert!(parse_event("not an event").is_none());
    }
}
