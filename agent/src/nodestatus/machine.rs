//! What the node is: CPUs, memory, huge pages, the root dir's filesystem, identity files and
//! addresses, read the way cAdvisor's machine info and the kubelet's NodeAddress setter read
//! them (pkg/kubelet/nodestatus/setters.go, cadvisor machine.go). Parsers are plain functions
//! over file contents, tested below; the readers only open files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::path::Path;

/// Machine facts read once at start (cAdvisor's cached MachineInfo and VersionInfo).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    /// Online logical CPUs.
    pub cpus: u64,
    /// MemTotal, bytes; `None` if /proc/meminfo could not be read.
    pub memory_bytes: Option<u64>,
    /// Huge page pools: (page size in bytes, bytes reserved in that pool).
    pub hugepages: Vec<(u64, u64)>,
    /// /etc/machine-id.
    pub machine_id: String,
    /// /sys/class/dmi/id/product_uuid, empty when unreadable (VMs without DMI, non-root).
    pub system_uuid: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// Kernel release (uname -r).
    pub kernel_version: String,
    /// PRETTY_NAME of /etc/os-release.
    pub os_image: String,
}

impl MachineInfo {
    /// Reads the host's files; what cannot be read stays empty (the kubelet does the same
    /// with cAdvisor's partial answers).
    pub fn read() -> MachineInfo {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let trimmed = |p: &str| text(p).trim().to_owned();
        let cpus = parse_cpu_list(&text("/sys/devices/system/cpu/online"))
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
        let machine_id = Some(trimmed("/etc/machine-id"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| trimmed("/var/lib/dbus/machine-id"));
        MachineInfo {
            cpus,
            memory_bytes: parse_mem_total(&text("/proc/meminfo")),
            hugepages: read_hugepages(Path::new("/sys/kernel/mm/hugepages")),
            machine_id,
            system_uuid: trimmed("/sys/class/dmi/id/product_uuid"),
            boot_id: trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version: trimmed("/proc/sys/kernel/osrelease"),
            os_image: parse_os_release_pretty_name(&text("/etc/os-release"))
                .unwrap_or_else(|| "Linux".to_owned()),
        }
    }
}

/// Counts the CPUs of a kernel cpu list such as `0-3,6,8-9`.
pub fn parse_cpu_list(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u64>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// MemTotal of /proc/meminfo, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// PRETTY_NAME of an os-release file, unquoted.
pub fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?
        .trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    Some(v.to_owned()).filter(|s| !s.is_empty())
}

/// Page size in bytes of a `hugepages-2048kB` directory name.
pub fn parse_hugepage_dir(name: &str) -> Option<u64> {
    let kb: u64 = name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn read_hugepages(dir: &Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let size = parse_hugepage_dir(&e.file_name().to_string_lossy())?;
            let pages: u64 = std::fs::read_to_string(e.path().join("nr_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((size, pages.saturating_mul(size)))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Capacity in bytes of the filesystem holding `path` (cAdvisor's RootFsInfo capacity).
pub fn filesystem_capacity(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` is writable statvfs storage.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets; these are widening conversions here.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    Ok(u64::from(st.f_blocks).saturating_mul(st.f_frsize as u64))
}

/// Why an IP cannot be the node's (the kubelet's validateNodeIP).
pub fn validate_node_ip(ip: IpAddr) -> Result<(), String> {
    if ip.is_loopback() {
        return Err("nodeIP can't be loopback address".into());
    }
    if ip.is_multicast() {
        return Err("nodeIP can't be a multicast address".into());
    }
    if ip.is_unspecified() {
        return Err("nodeIP can't be an all zeros address".into());
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if link_local {
        return Err("nodeIP can't be a link-local unicast address".into());
    }
    // Binding succeeds only for an address of this host (EADDRNOTAVAIL otherwise): the same
    // answer as the kubelet's walk over the interface addresses, without one.
    UdpSocket::bind((ip, 0))
        .map(drop)
        .map_err(|_| format!("node IP: {ip:?} not found in the host's network interfaces"))
}

/// The address this host would send from towards the default route, as the kubelet's last
/// resort (ResolveBindAddress: the IP of the default-gateway interface). `connect` on a UDP
/// socket only picks the route and source address: no packet is sent. The destinations are
/// documentation addresses (RFC 5737, RFC 3849) that no host-specific route matches.
pub fn default_route_ip(prefer_v6: bool) -> Option<IpAddr> {
    let v4 = || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        s.connect((Ipv4Addr::new(203, 0, 113, 1), 9)).ok()?;
        Some(s.local_addr().ok()?.ip())
    };
    let v6 = || {
        let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
        s.connect((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
            .ok()?;
        Some(s.local_addr().ok()?.ip())
    };
    let (first, second): (&dyn Fn() -> Option<IpAddr>, &dyn Fn() -> Option<IpAddr>) =
        if prefer_v6 { (&v6, &v4) } else { (&v4, &v6) };
    first()
        .filter(|ip| validate_node_ip(*ip).is_ok())
        .or_else(|| second().filter(|ip| validate_node_ip(*ip).is_ok()))
}

pub use crate::pod::quantity::binary_si;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let m = "MemTotal:        8141716 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_mem_total(m), Some(8_141_716 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn os_release_pretty_name_is_unquoted() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release_pretty_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release_pretty_name("PRETTY_NAME='Alpine'\n").as_deref(),
            Some("Alpine")
        );
        assert_eq!(
            parse_os_release_pretty_name("PRETTY_NAME=Plain\n").as_deref(),
            Some("Plain")
        );
        assert_eq!(parse_os_release_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn hugepage_dirs_and_sizes_are_named_as_the_kubelet() {
        assert_eq!(parse_hugepage_dir("hugepages-2048kB"), Some(2 << 20));
        assert_eq!(parse_hugepage_dir("hugepages-1048576kB"), Some(1 << 30));
        assert_eq!(parse_hugepage_dir("other"), None);
        assert_eq!(binary_si(2 << 20), "2Mi");
        assert_eq!(binary_si(1 << 30), "1Gi");
        assert_eq!(binary_si(0), "0");
        assert_eq!(binary_si(8_141_716 * 1024), "8141716Ki");
        assert_eq!(binary_si(1000), "1000");
    }

    #[test]
    fn node_ip_validation_refuses_what_the_kubelet_refuses() {
        for bad in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "224.0.0.1",
            "169.254.1.1",
            "fe80::1",
        ] {
            let ip: IpAddr = bad.parse().expect("ip");
            assert!(validate_node_ip(ip).is_err(), "{bad}");
        }
        // TEST-NET-2 is on no interface of a test machine.
        let err = validate_node_ip("198.51.100.7".parse().expect("ip")).expect_err("not local");
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn the_root_filesystem_has_a_capacity() {
        assert!(filesystem_capacity(Path::new("/")).expect("statvfs /") > 0);
        assert!(filesystem_capacity(Path::new("/no/such/dir/anywhere")).is_err());
    }
}
