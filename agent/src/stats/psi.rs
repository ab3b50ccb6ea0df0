//! Pressure stall information (PSI) per cgroup, as the kubelet's Summary API (`psi` in CPU,
//! memory and IO stats, KubeletPSI, GA in 1.36) and cAdvisor's `container_pressure_*` families
//! report it. Read from the cgroup2 hierarchy's `{cpu,memory,io}.pressure` files: they exist
//! for every cgroup2 directory whether or not the controllers are enabled there, so a hybrid
//! v1 host (cgroup2 at /sys/fs/cgroup/unified) has them too. The root cgroup has none on a
//! pure v2 host: there the node's come from /proc/pressure.

use std::fs;
use std::path::Path;

/// One line of a pressure file: the share of time tasks stalled, and the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsiData {
    /// Stall time since the cgroup was created, µs (the kernel's unit; the kubelet passes it
    /// through unchanged, cAdvisor divides by 1e6 for its `_seconds_total`).
    pub total_us: u64,
    /// 10 s average, hundredths of a percent (the kernel prints two decimals).
    pub avg10: u32,
    /// 60 s average, hundredths of a percent.
    pub avg60: u32,
    /// 300 s average, hundredths of a percent.
    pub avg300: u32,
}

/// `some` (at least one task stalled) and `full` (all stalled) of one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Psi {
    /// Some tasks waited: cAdvisor's `_waiting_seconds_total`.
    pub some: PsiData,
    /// All tasks stalled: cAdvisor's `_stalled_seconds_total`.
    pub full: PsiData,
}

/// Pressure of one cgroup, per resource present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// `cpu.pressure`.
    pub cpu: Option<Psi>,
    /// `memory.pressure`.
    pub memory: Option<Psi>,
    /// `io.pressure`.
    pub io: Option<Psi>,
}

/// "67.29" as 6729.
fn centi(v: &str) -> Option<u32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(int.parse::<u32>().ok()? * 100 + frac.parse::<u32>().ok()?)
}

fn parse_line(fields: std::str::SplitWhitespace) -> Option<PsiData> {
    let mut d = PsiData::default();
    for f in fields {
        let (k, v) = f.split_once('=')?;
        match k {
            "avg10" => d.avg10 = centi(v)?,
            "avg60" => d.avg60 = centi(v)?,
            "avg300" => d.avg300 = centi(v)?,
            "total" => d.total_us = v.parse().ok()?,
            _ => {}
        }
    }
    Some(d)
}

/// Parses a pressure file; `None` if it has no `some` line. A missing `full` line (the
/// system-wide cpu file before 5.13) reads as zeros, as runc and cAdvisor take it.
pub fn parse(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = PsiData::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("some") => some = parse_line(f),
            Some("full") => full = parse_line(f).unwrap_or_default(),
            _ => {}
        }
    }
    Some(Psi { some: some?, full })
}

fn read_dir(dir: &Path) -> Option<Pressure> {
    let one = |r: &str| {
        fs::read_to_string(dir.join(format!("{r}.pressure")))
            .ok()
            .and_then(|t| parse(&t))
    };
    let p = Pressure {
        cpu: one("cpu"),
        memory: one("memory"),
        io: one("io"),
    };
    (p != Pressure::default()).then_some(p)
}

/// Pressure of `cgroup` (a path relative to the hierarchy roots) under the cgroup2 mount
/// `v2`; the root falls back to /proc/pressure. `None` when the kernel exposes none.
pub fn read(v2: Option<&Path>, cgroup: &str) -> Option<Pressure> {
    let rel = cgroup.trim_start_matches('/');
    v2.and_then(|root| read_dir(&root.join(rel))).or_else(|| {
        rel.is_empty()
            .then(|| read_dir(Path::new("/proc/pressure")))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_files_parse_as_the_kernel_writes_them() {
        let p = parse(
            "some avg10=67.29 avg60=0.5 avg300=0.00 total=551476069\n\
             full avg10=0.12 avg60=0.02 avg300=0.00 total=1562653\n",
        )
        .expect("psi");
        assert_eq!(p.some.avg10, 6729);
        assert_eq!(p.some.avg60, 50);
        assert_eq!(p.some.total_us, 551_476_069);
        assert_eq!(p.full.avg10, 12);
        assert_eq!(p.full.total_us, 1_562_653);
        let cpu_only_some =
            parse("some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n").expect("some");
        assert_eq!(cpu_only_some.full, PsiData::default());
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn a_cgroup_directory_reads_each_resource_present() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = dir.path().join("pod1/c1");
        fs::create_dir_all(&c).expect("mkdir");
        fs::write(
            c.join("cpu.pressure"),
            "some avg10=1.00 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=2\n",
        )
        .expect("write");
        let p = read(Some(dir.path()), "/pod1/c1").expect("pressure");
        assert_eq!(p.cpu.map(|c| c.full.total_us), Some(2));
        assert_eq!(p.memory, None);
        assert_eq!(read(Some(dir.path()), "/pod1/none"), None);
    }
}
