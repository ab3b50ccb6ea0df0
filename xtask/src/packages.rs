//! Debian packages and kernel filesystems the project needs on a machine.
//!
//! A fresh machine has none of them and nothing may be downloaded except through the package
//! registries, so `ensure` installs what is missing with apt and mounts bpffs and tracefs.
//! When everything is present it costs one `dpkg-query` and a read of /proc/self/mounts.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::run;

/// Every Debian package the build, the agent and the tests use.
///
/// containerd/runc/containernetworking-plugins run pods; busybox-static and gcc/libc6-dev build
/// the local images; umoci/skopeo/docker-registry serve them from a loopback registry;
/// clang/llvm/libbpf-dev/bpftool build the eBPF programs; prometheus checks /metrics; iproute2
/// deletes test bridges.
pub const PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "umoci",
    "skopeo",
    "docker-registry",
    "clang",
    "llvm",
    "libbpf-dev",
    "bpftool",
    "prometheus",
    "gcc",
    "libc6-dev",
    "iproute2",
    // The HTTP API tests drive the agent with the clients operators use.
    "curl",
    "openssl",
];

/// Installs missing [`PACKAGES`] and mounts bpffs and tracefs if absent. Idempotent.
pub fn ensure() -> Result<()> {
    let missing = missing(PACKAGES)?;
    if !missing.is_empty() {
        install(&missing)?;
        let names: Vec<&str> = missing.iter().map(String::as_str).collect();
        let still = self::missing(&names)?;
        if !still.is_empty() {
            bail!("apt-get install did not install: {}", still.join(" "));
        }
    }
    ensure_mounts()
}

/// The subset of `pkgs` that dpkg does not report as "install ok installed".
pub fn missing(pkgs: &[&str]) -> Result<Vec<String>> {
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["-W", "-f=${Package} ${Status}\\n"]).args(pkgs);
    // dpkg-query exits 1 when some name is unknown but still prints the known ones.
    let out = cmd
        .output()
        .context("cannot run dpkg-query (is this Debian?)")?;
    let installed = parse_installed(&String::from_utf8_lossy(&out.stdout));
    Ok(pkgs
        .iter()
        .filter(|p| !installed.contains(**p))
        .map(|p| (*p).to_owned())
        .collect())
}

/// Names from `${Package} ${Status}` lines whose status is "install ok installed"; the package
/// name may carry an architecture suffix (`libc6-dev:amd64`).
fn parse_installed(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name).to_owned())
        .collect()
}

fn install(pkgs: &[String]) -> Result<()> {
    eprintln!("xtask: installing {}", pkgs.join(" "));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// Mounts bpffs on /sys/fs/bpf and tracefs on /sys/kernel/tracing when they are not mounted.
pub fn ensure_mounts() -> Result<()> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    for (fstype, point) in [("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")] {
        if is_mounted(&mounts, fstype, point) {
            continue;
        }
        if !Path::new(point).is_dir() {
            fs::create_dir_all(point).with_context(|| format!("cannot create {point}"))?;
        }
        run(Command::new("mount").args(["-t", fstype, fstype, point]))?;
    }
    Ok(())
}

fn is_mounted(mounts: &str, fstype: &str, point: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split(' ');
        let _dev = f.next();
        f.next() == Some(point) && f.next() == Some(fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lines_are_parsed() {
        let out = "containerd install ok installed\nlibc6-dev:amd64 install ok installed\n\
                   runc deinstall ok config-files\n";
        let got = parse_installed(out);
        assert!(got.contains("containerd"));
        assert!(got.contains("libc6-dev"));
        assert!(!got.contains("runc"));
    }

    #[test]
    fn mount_table_lookup_matches_type_and_point() {
        let m = "bpf /sys/fs/bpf bpf rw 0 0\nnone /sys/kernel/tracing tmpfs rw 0 0\n";
        assert!(is_mounted(m, "bpf", "/sys/fs/bpf"));
        assert!(!is_mounted(m, "tracefs", "/sys/kernel/tracing"));
    }
}
