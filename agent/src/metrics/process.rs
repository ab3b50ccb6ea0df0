//! The standard process collector on `/metrics` (client_golang's `process_*` families, which
//! the kubelet registers): the agent's CPU time, memory, file descriptors and start time, read
//! from `/proc/self` once per scrape. No crate: prometheus' and procfs' would bring a second
//! registry or a large dependency for six numbers our encoder writes directly.

use super::expo::{Encoder, Kind};

/// One reading of the agent's own process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors (`None`: unlimited or unknown).
    pub max_fds: Option<u64>,
    /// Soft limit on the address space, bytes (`None`: unlimited or unknown).
    pub max_virtual_bytes: Option<u64>,
}

/// Fields of `/proc/<pid>/stat` after the command name, in clock ticks and pages where the
/// kernel gives them so (proc(5)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size, bytes.
    pub vsize: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of proc(5), so field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_ticks: num(14)? + num(15)?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// `btime` of `/proc/stat`: boot time, seconds since the epoch.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of one row of `/proc/<pid>/limits` (e.g. `Max open files`); `None` when
/// unlimited or absent.
pub fn parse_limit(limits: &str, row: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(row))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Reads the agent's own process; `None` if `/proc/self/stat` is unreadable.
pub fn read_self() -> Option<ProcessSample> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let page = u64::try_from(page).unwrap_or(4096);
    let btime = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_btime(&t))
        .unwrap_or(0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    Some(ProcessSample {
        cpu_seconds: stat.cpu_ticks as f64 / ticks,
        resident_bytes: stat.rss_pages * page,
        virtual_bytes: stat.vsize,
        start_time_seconds: btime as f64 + stat.start_ticks as f64 / ticks,
        // The read_dir handle itself is one of the descriptors it counted.
        open_fds: open_fds.map(|n| n.saturating_sub(1)),
        max_fds: parse_limit(&limits, "Max open files"),
        max_virtual_bytes: parse_limit(&limits, "Max address space"),
    })
}

/// Writes the process families (client_golang process_collector.go names and help).
pub fn render(e: &mut Encoder, p: &ProcessSample) {
    e.family(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        Kind::Counter,
    );
    e.sample(&[], p.cpu_seconds, None);
    if let Some(n) = p.open_fds {
        e.family(
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
        );
        e.sample(&[], n as f64, None);
    }
    e.family(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        Kind::Gauge,
    );
    // client_golang writes an unlimited soft limit as the largest uint64 (as a float).
    e.sample(&[], p.max_fds.map_or(u64::MAX as f64, |n| n as f64), None);
    e.family(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        Kind::Gauge,
    );
    e.sample(&[], p.virtual_bytes as f64, None);
    e.family(
        "process_virtual_memory_max_bytes",
        "Maximum amount of virtual memory available in bytes.",
        Kind::Gauge,
    );
    e.sample(
        &[],
        p.max_virtual_bytes.map_or(u64::MAX as f64, |n| n as f64),
        None,
    );
    e.family(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        Kind::Gauge,
    );
    e.sample(&[], p.resident_bytes as f64, None);
    e.family(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        Kind::Gauge,
    );
    e.sample(&[], p.start_time_seconds, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::expo::Format;

    const STAT: &str = "4242 (no (de) let) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
        250 50 0 0 20 0 12 0 360000 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 \
        0 0 17 1 0 0 0 0 0\n";
    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max address space         unlimited            unlimited            bytes
";

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let s = parse_stat(STAT).expect("parses");
        assert_eq!(
            s,
            ProcStat {
                cpu_ticks: 300,
                start_ticks: 360_000,
                vsize: 123_456_789,
                rss_pages: 2048,
            }
        );
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn limits_read_the_soft_column_and_unlimited_is_none() {
        assert_eq!(parse_limit(LIMITS, "Max open files"), Some(1024));
        assert_eq!(parse_limit(LIMITS, "Max address space"), None);
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn families_have_client_golang_names_and_types() {
        let mut e = Encoder::new(Format::Text, 0);
        render(
            &mut e,
            &ProcessSample {
                cpu_seconds: 3.0,
                resident_bytes: 8 << 20,
                virtual_bytes: 100 << 20,
                start_time_seconds: 1_700_003_600.5,
                open_fds: Some(12),
                max_fds: Some(1024),
                max_virtual_bytes: None,
            },
        );
        let t = e.finish();
        for line in [
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n",
            "process_resident_memory_bytes 8388608\n",
            "process_virtual_memory_bytes 104857600\n",
            "process_start_time_seconds 1700003600.5\n",
            "process_open_fds 12\n",
            "process_max_fds 1024\n",
            "# TYPE process_virtual_memory_max_bytes gauge\n",
        ] {
            assert!(t.contains(line), "{line} in\n{t}");
        }
    }

    #[test]
    fn the_running_test_process_reads_sensibly() {
        let p = read_self().expect("/proc/self is readable");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs_f64();
        assert!(p.start_time_seconds > 1e9 && p.start_time_seconds <= now + 1.0);
    }
}
