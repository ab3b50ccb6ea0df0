//! The eviction race set-up (issue 12), shared by the `eviction_race` e2e test and
//! `cargo xtask bench eviction`: node allocatable enforced with reservations that leave the pods
//! cgroup (`<cgroupRoot>/kubepods`) [`PODS_MI`], a hard `allocatableMemory.available` threshold of
//! [`THRESHOLD_MI`], a Guaranteed pod, and BestEffort pods that ramp their memory at a fixed rate.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// MiB.
pub const MI: i64 = 1 << 20;
/// What the pods cgroup is left with, MiB.
pub const PODS_MI: i64 = 512;
/// kubeReserved memory, MiB; systemReserved takes the rest of the machine.
pub const KUBE_RESERVED_MI: i64 = 256;
/// The hard `allocatableMemory.available` threshold, MiB.
pub const THRESHOLD_MI: i64 = 100;
/// How much a ramping pod asks for in all: well past the pods cgroup's limit, MiB.
pub const RAMP_TOTAL_MI: i64 = 1024;
/// Chunks are added every tenth of a second.
pub const STEP_S: f64 = 0.1;

/// MemTotal of /proc/meminfo, KiB.
pub fn mem_total_ki() -> Result<i64> {
    std::fs::read_to_string("/proc/meminfo")
        .context("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("MemTotal in /proc/meminfo")
}

/// The KubeletConfiguration lines of the set-up: reservations leaving kubepods [`PODS_MI`],
/// the threshold, and a 2 s pressure transition period (so runs follow each other quickly).
pub fn config_lines() -> Result<String> {
    config_lines_with("")
}

/// [`config_lines`] with more `evictionHard` entries (indented lines) after the threshold.
pub fn config_lines_with(more_thresholds: &str) -> Result<String> {
    let total_ki = mem_total_ki()?;
    let system_ki = total_ki - (PODS_MI + KUBE_RESERVED_MI) * 1024;
    anyhow::ensure!(
        system_ki > 0,
        "this machine has less than {} MiB",
        PODS_MI + KUBE_RESERVED_MI
    );
    Ok(format!(
        "kubeReserved:\n  memory: {KUBE_RESERVED_MI}Mi\n  cpu: 100m\n\
         systemReserved:\n  memory: {system_ki}Ki\n\
         evictionHard:\n  allocatableMemory.available: {THRESHOLD_MI}Mi\n{more_thresholds}\
         evictionPressureTransitionPeriod: 2s\n"
    ))
}

/// The Guaranteed pod beside the ramps (static pod `guaranteed`): the kubelet's ranking
/// spares it, the kernel's OOM killer may not.
pub const GUARANTEED_MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: guaranteed\n\
spec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    \
image: busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    resources:\n      limits:\n        \
cpu: 100m\n        memory: 64Mi\n";

/// A BestEffort pod whose shell adds `rate/10` MiB every 0.1 s (each chunk held by a `tail`
/// that is never read from), after a 2 s pause so that the agent has mapped its cgroup. It
/// stops growing on SIGTERM, as a program that honours its graceful stop does: a hard eviction
/// kills with the kubelet's 1 s grace period (immediateEvictionGracePeriodSeconds), and a shell
/// as PID 1 ignores SIGTERM, so without the trap it would grow `rate` x 1 s more after the
/// decision, past a 100 MiB threshold at 100 MiB/s whatever the agent does (seen here). The
/// pause between chunks is a background `sleep` the shell `wait`s for: a trapped signal ends a
/// `wait` at once, where a foreground `sleep 0.1` would delay the trap by up to a step (40 MiB
/// more at 400 MiB/s, counted against the agent).
pub fn ramp_manifest(name: &str, rate_mi: i64) -> String {
    let chunk = rate_mi * MI / 10;
    let n = RAMP_TOTAL_MI * MI / chunk;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Never\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    \
         image: busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 2; i=0; while [ $i -lt {n} ]; do \
         head -c {chunk} /dev/zero | tail -c {chunk} | sleep 3600 & sleep {STEP_S} & wait $!; i=$((i+1)); done; \
         sleep 3600 & wait $!\"]\n"
    )
}

/// Sleeps for a random fraction of `period` (from the clock's nanoseconds), so that races start
/// at a random phase of the agent's evaluation period instead of all at the same point.
pub fn sleep_random_phase(period: Duration) {
    let fraction = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.5, |d| f64::from(d.subsec_nanos()) / 1e9);
    std::thread::sleep(period.mul_f64(fraction));
}

/// The pods cgroup's directory in the memory hierarchy (v1) or the unified tree (v2).
pub fn kubepods_memory_dir(root: &str) -> PathBuf {
    let rel = format!("{}/kubepods", root.trim_matches('/'));
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        Path::new("/sys/fs/cgroup/memory").join(rel)
    } else {
        Path::new("/sys/fs/cgroup").join(rel)
    }
}

/// How many times the agent's log says MemoryPressure turned `status` (`True`/`False`).
pub fn pressure_lines(log: &str, status: &str) -> usize {
    log.lines()
        .filter(|l| is_pressure_line(l) && l.contains(&format!("status=\"{status}\"")))
        .count()
}

/// Whether the agent's log, as of now, leaves MemoryPressure True (its last change said so).
pub fn memory_pressure(log: &str) -> bool {
    log.lines()
        .rfind(|l| is_pressure_line(l))
        .is_some_and(|l| l.contains("status=\"True\""))
}

fn is_pressure_line(l: &str) -> bool {
    l.contains("node condition changed") && l.contains("MemoryPressure")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_condition_line_decides() {
        let t = "x eviction manager: node condition changed condition=\"MemoryPressure\" status=\"True\"\n";
        let f = "x eviction manager: node condition changed condition=\"MemoryPressure\" status=\"False\"\n";
        assert!(!memory_pressure(""));
        assert!(memory_pressure(t));
        assert!(!memory_pressure(&format!("{t}{f}")));
        assert_eq!(pressure_lines(&format!("{t}{f}{t}"), "True"), 2);
    }

    #[test]
    fn a_ramp_adds_a_tenth_of_its_rate_per_step() {
        let m = ramp_manifest("r", 100);
        assert!(m.contains("head -c 10485760"), "{m}");
        assert!(m.contains("$i -lt 102"), "{m}");
    }
}
