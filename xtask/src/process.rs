//! Child processes the harness owns, and the sweeps that make sure none outlive it.
//!
//! Daemons (containerd, the registry) run in their own process group, so a Ctrl-C at the terminal
//! reaches only the harness, which then tears down in order (pods first: shims outlive
//! containerd). Each daemon is spawned from a dedicated keeper thread with
//! `PR_SET_PDEATHSIG=SIGKILL`: the kernel ties that signal to the thread that forked, and the
//! keeper lives exactly as long as the daemon, so a harness that dies without running `Drop`
//! (panic=abort, SIGKILL, test timeout) still takes its daemons with it.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Runs `cmd` to completion and returns its stdout; the error names the command and carries
/// its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program arg1 arg2…` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether `name` resolves to an executable file on `PATH` (or is such a path itself).
pub fn have_program(name: &str) -> bool {
    if name.contains('/') {
        return is_executable(Path::new(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| is_executable(&d.join(name)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `lines` lines of a log file (empty if it cannot be read); reads at most 64 KiB.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A long-running child (containerd, docker-registry) with stdout and stderr in a log file.
///
/// Dropping it terminates the process (SIGTERM, then SIGKILL after 5 s).
#[derive(Debug)]
pub struct Daemon {
    name: String,
    pid: u32,
    exit: Mutex<ExitState>,
}

/// The keeper's report channel and what it reported, if anything yet.
#[derive(Debug)]
struct ExitState {
    rx: mpsc::Receiver<io::Result<ExitStatus>>,
    exited: Option<String>,
}

impl ExitState {
    fn poll(&mut self, wait: Option<Duration>) -> Option<String> {
        if self.exited.is_none() {
            let got = match wait {
                None => self
                    .rx
                    .try_recv()
                    .map_err(|e| e == mpsc::TryRecvError::Disconnected),
                Some(t) => self
                    .rx
                    .recv_timeout(t)
                    .map_err(|e| e == mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(status) => self.exited = Some(describe_exit(status)),
                Err(true) => self.exited = Some("keeper thread gone".to_owned()),
                Err(false) => {}
            }
        }
        self.exited.clone()
    }
}

impl Daemon {
    /// Spawns `cmd` in its own process group with output appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let err = out
            .try_clone()
            .context("cannot duplicate log file handle")?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = describe(&cmd);
        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("{name}-keeper"))
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = exit_tx.send(child.wait());
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })
            .context("cannot start keeper thread")?;
        let pid = pid_rx
            .recv()
            .context("keeper thread died before spawning")?
            .with_context(|| format!("cannot start {shown}"))?;
        Ok(Daemon {
            name: name.to_owned(),
            pid,
            exit: Mutex::new(ExitState {
                rx: exit_rx,
                exited: None,
            }),
        })
    }

    /// Process id (valid until the daemon has exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn poll(&self, wait: Option<Duration>) -> Option<String> {
        match self.exit.lock() {
            Ok(mut st) => st.poll(wait),
            Err(poisoned) => poisoned.into_inner().poll(wait),
        }
    }

    /// `Some(description of the exit)` once the process has exited; never blocks.
    pub fn exited(&self) -> Option<String> {
        self.poll(None)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait for the exit.
    pub fn stop(&self, grace: Duration) -> Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        // The child is not reaped until the keeper's wait() returns, so the pid cannot have
        // been reused yet.
        signal(self.pid, libc::SIGTERM);
        if self.poll(Some(grace)).is_some() {
            return Ok(());
        }
        signal(self.pid, libc::SIGKILL);
        if self.poll(Some(Duration::from_secs(10))).is_some() {
            return Ok(());
        }
        Err(anyhow!(
            "{} (pid {}) did not exit after SIGKILL",
            self.name,
            self.pid
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(5)) {
            eprintln!("xtask: {e:#}");
        }
    }
}

fn describe_exit(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// One entry of /proc.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
    argv: Vec<String>,
}

fn processes() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid …": comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let argv = fs::read(entry.path().join("cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            state,
            argv,
        });
    }
    out
}

/// Kills (SIGKILL) every process whose program name starts with one of `programs` and whose
/// command line mentions `needle`, together with all their descendants (containers under a
/// shim), and waits up to 5 s for them to be gone. Returns how many processes were signalled.
///
/// Used after containerd is stopped: a shim still alive then is a leak of this environment.
pub fn kill_trees(programs: &[&str], needle: &str) -> usize {
    let me = std::process::id();
    let procs = processes();
    let mut victims: Vec<u32> = procs
        .iter()
        .filter(|p| p.pid != me && p.state != 'Z')
        .filter(|p| {
            let prog = p.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a));
            prog.is_some_and(|prog| programs.iter().any(|w| prog.starts_with(w)))
                && p.argv.iter().any(|a| a.contains(needle))
        })
        .map(|p| p.pid)
        .collect();
    let mut i = 0;
    while i < victims.len() {
        let parent = victims[i];
        for p in &procs {
            if p.ppid == parent && p.pid != me && !victims.contains(&p.pid) {
                victims.push(p.pid);
            }
        }
        i += 1;
    }
    for &pid in &victims {
        signal(pid, libc::SIGKILL);
    }
    wait_gone(&victims, Duration::from_secs(5));
    victims.len()
}

/// Pids of live (non-zombie) processes whose command line mentions `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.argv.iter().any(|a| a.contains(needle)))
        .map(|p| p.pid)
        .collect()
}

/// Waits until none of `pids` is alive (zombies count as gone: PID 1 here may not reap).
pub fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let alive = pids.iter().any(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rfind(')')
                    .and_then(|i| s[i + 1..].split_whitespace().next())
                    .is_some_and(|st| st != "Z" && st != "X")
            })
        });
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Lazily unmounts every mount point strictly under `dir` (deepest first): rootfs overlays,
/// sandbox shm and netns bind mounts that a killed containerd left behind.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("cannot read mountinfo")?;
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let mut failed = Vec::new();
    for p in points {
        let c = CString::new(Path::new(&p).as_os_str().as_bytes())
            .context("mount point contains NUL")?;
        // SAFETY: c is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
                failed.push(format!("{p}: {e}"));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("cannot unmount {}", failed.join(", "))
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount(r"/x\"), r"/x\");
    }

    #[test]
    fn run_reports_stderr_of_failing_command() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .expect_err("exit 3 must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("boom"), "{msg}");
        assert!(msg.contains("sh -c"), "{msg}");
    }

    #[test]
    fn daemon_stops_on_sigterm() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("log");
        let d = Daemon::spawn(
            "sleeper",
            {
                let mut c = Command::new("sleep");
                c.arg("300");
                c
            },
            &log,
        )?;
        assert!(d.exited().is_none());
        d.stop(Duration::from_secs(5))?;
        assert!(d.exited().is_some());
        Ok(())
    }
}
