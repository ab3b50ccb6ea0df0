//! What the kernel and the agent's log say, and when: the kernel's OOM-kill records
//! (/dev/kmsg), kubepods' threshold crossing (a 1 ms watcher), log and clock conversions.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use xtask::race::{self, MI, THRESHOLD_MI};

use crate::bench::read_u64;

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, ns: brings the kernel's record timestamps to wall time.
pub(super) fn monotonic_to_unix_ns() -> i128 {
    let m0 = now(libc::CLOCK_MONOTONIC);
    let r = now(libc::CLOCK_REALTIME);
    let m1 = now(libc::CLOCK_MONOTONIC);
    r - (m0 + m1) / 2
}

/// Unix ns of a time (0 before the epoch).
pub(super) fn unix_ns(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The kernel's log (/dev/kmsg), read from where it stood when opened.
pub(crate) struct Kmsg {
    file: fs::File,
    /// Unix time of the log's clock zero, ns (the log stamps records with its own clock).
    offset_ns: i128,
}

/// One kernel OOM kill: the memcg that ran out, and the victim's.
#[derive(Debug)]
pub(crate) struct KernelKill {
    /// The memcg that ran out.
    pub(crate) oom_memcg: String,
    /// The victim's.
    pub(crate) task_memcg: String,
    /// When, unix ns.
    pub(crate) at_unix_ns: i128,
}

impl Kmsg {
    /// Opens the log at its end.
    pub(crate) fn open() -> Result<Kmsg> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .context("opening /dev/kmsg")?;
        file.seek(SeekFrom::End(0)).context("seeking /dev/kmsg")?;
        // The log's clock (the scheduler clock) is neither wall nor monotonic time: a record
        // of our own, written between two wall clock reads, ties it to wall time.
        let marker = format!("nodelet-bench: clock {}", std::process::id());
        let mut w = fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .context("opening /dev/kmsg for writing")?;
        let t0 = now(libc::CLOCK_REALTIME);
        w.write_all(format!("<6>{marker}\n").as_bytes())
            .context("writing /dev/kmsg")?;
        let t1 = now(libc::CLOCK_REALTIME);
        let mut k = Kmsg { file, offset_ns: 0 };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stamp = k
                .records()?
                .into_iter()
                .find_map(|(ts_us, msg)| msg.contains(&marker).then_some(ts_us));
            if let Some(ts_us) = stamp {
                k.offset_ns = (t0 + t1) / 2 - ts_us as i128 * 1000;
                return Ok(k);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "our record never showed in /dev/kmsg"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The OOM kills logged since the last call.
    pub(crate) fn kills(&mut self) -> Result<Vec<KernelKill>> {
        Ok(self
            .records()?
            .into_iter()
            .filter_map(|(ts_us, msg)| {
                let mut k = parse_kill(&msg)?;
                k.at_unix_ns = ts_us as i128 * 1000 + self.offset_ns;
                Some(k)
            })
            .collect())
    }

    /// (timestamp in µs, message) of the records logged since the last call.
    fn records(&mut self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // One record per read: `prio,seq,ts_us,flags;message`.
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some((head, msg)) = rec.split_once(';')
                        && let Some(ts) = head.split(',').nth(2).and_then(|t| t.parse().ok())
                    {
                        out.push((ts, msg.trim_end().to_owned()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // EPIPE: records were overwritten before we read them; go on from the next.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) => return Err(e).context("reading /dev/kmsg"),
            }
        }
        Ok(out)
    }
}

/// `oom-kill:constraint=...,oom_memcg=/a,task_memcg=/a/b,task=tail,...` (a record's message);
/// its time is set by the caller.
fn parse_kill(msg: &str) -> Option<KernelKill> {
    let rest = msg.trim().strip_prefix("oom-kill:")?;
    let field = |k: &str| {
        rest.split(',')
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_owned)
    };
    Some(KernelKill {
        oom_memcg: field("oom_memcg")?,
        task_memcg: field("task_memcg")?,
        at_unix_ns: 0,
    })
}

/// Unix ns of a log line's leading RFC 3339 UTC timestamp (`2026-12-06T03:50:12.123456Z`).
pub(super) fn log_time_ns(line: &str) -> Option<i128> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac_ns = format!("{frac:0<9}").get(..9)?.parse::<i64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs as i128 * 1_000_000_000 + frac_ns as i128)
}

/// Watches kubepods' memory every millisecond; the first moment its available memory (limit
/// minus working set, as the agent computes it) is under the threshold.
pub(super) struct Watcher {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Option<SystemTime>>,
}

impl Watcher {
    /// Starts watching `<cgroup_root>/kubepods`.
    pub(super) fn start(cgroup_root: &str) -> Watcher {
        let dir = race::kubepods_memory_dir(cgroup_root);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let v1 = dir.join("memory.limit_in_bytes").exists();
            let (limit_f, usage_f, inactive_key) = if v1 {
                (
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "total_inactive_file ",
                )
            } else {
                ("memory.max", "memory.current", "inactive_file ")
            };
            let limit = read_u64(&dir.join(limit_f)).ok()? as i64;
            let threshold = THRESHOLD_MI * MI;
            while !flag.load(Ordering::Relaxed) {
                let usage = read_u64(&dir.join(usage_f)).unwrap_or(0) as i64;
                // The working set only matters near the threshold: read memory.stat then.
                if limit - usage < threshold {
                    let inactive = fs::read_to_string(dir.join("memory.stat"))
                        .ok()
                        .and_then(|s| {
                            s.lines()
                                .find_map(|l| l.strip_prefix(inactive_key))
                                .and_then(|v| v.trim().parse::<i64>().ok())
                        })
                        .unwrap_or(0);
                    if limit - (usage - inactive) < threshold {
                        return Some(SystemTime::now());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        });
        Watcher { stop, handle }
    }

    /// Stops; the crossing time, if one was seen.
    pub(super) fn finish(self) -> Option<SystemTime> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_oom_records_name_both_memcgs() {
        let rec = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\
                   cpuset=x,mems_allowed=0,oom_memcg=/n/kubepods,task_memcg=/n/kubepods/\
                   besteffort/podu/c,task=tail,pid=14291,uid=0\n";
        let k = parse_kill(rec).expect("a kill");
        assert_eq!(k.oom_memcg, "/n/kubepods");
        assert_eq!(k.task_memcg, "/n/kubepods/besteffort/podu/c");
        assert!(parse_kill("Memory cgroup out of memory: Killed process 1").is_none());
    }

    #[test]
    fn log_timestamps_are_unix_time() {
        let l = "2026-12-06T03:50:12.123456Z  WARN nodelet: evicting pod";
        assert_eq!(log_time_ns(l), Some(1_796_529_012_123_456_000));
        assert_eq!(log_time_ns("1970-01-01T00:00:01Z x"), Some(1_000_000_000));
        assert!(log_time_ns("no time").is_none());
    }
}
