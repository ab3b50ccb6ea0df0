//! Block I/O of one cgroup, as cAdvisor reads it through libcontainer: v1
//! `blkio.throttle.io_service_bytes_recursive` / `io_serviced_recursive` (the CFQ/BFQ
//! `blkio.io_*` files first where an I/O scheduler provides them), v2 `io.stat`
//! (`rbytes`/`wbytes` as Read/Write bytes, `rios`/`wios` as Read/Write operations,
//! `dbytes`/`dios` as Discard). Devices are named `/dev/<name>` from
//! `/sys/dev/block/<major>:<minor>/uevent`, cAdvisor's machine disk map.
//!
//! Kernel fact (6.x, seen on 6.18 here): v1 throttle counters only move in a cgroup that has a
//! throttle limit on the device; elsewhere they stay 0. v2 `io.stat` always counts.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// The operations cAdvisor's `container_blkio_device_usage_total` names, in file order.
pub const OPS: [&str; 6] = ["Read", "Write", "Sync", "Async", "Discard", "Total"];

/// Counters of one device for one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// `/dev/<name>`, or empty when the kernel does not name it.
    pub device: String,
    /// Bytes per operation ([`OPS`] order; `None` where the source has no such counter).
    pub bytes: [Option<u64>; 6],
    /// Completed requests per operation ([`OPS`] order).
    pub ios: [Option<u64>; 6],
}

fn op_index(op: &str) -> Option<usize> {
    OPS.iter().position(|o| *o == op)
}

fn dev_entry<'a>(
    out: &'a mut Vec<DeviceIo>,
    majmin: &str,
    names: &mut HashMap<(u32, u32), String>,
) -> Option<&'a mut DeviceIo> {
    let (ma, mi) = majmin.split_once(':')?;
    let (major, minor) = (ma.parse().ok()?, mi.parse().ok()?);
    let i = match out
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(i) => i,
        None => {
            let device = names
                .entry((major, minor))
                .or_insert_with(|| device_name(major, minor))
                .clone();
            out.push(DeviceIo {
                major,
                minor,
                device,
                ..DeviceIo::default()
            });
            out.len() - 1
        }
    };
    out.get_mut(i)
}

/// Parses a v1 blkio stats file (`<maj>:<min> <Op> <value>` lines and a final `Total`) into
/// `out`, into the byte counters when `bytes` else the request counters.
pub fn parse_v1(
    text: &str,
    bytes: bool,
    out: &mut Vec<DeviceIo>,
    names: &mut HashMap<(u32, u32), String>,
) {
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(op), Some(v)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Some(i), Ok(v)) = (op_index(op), v.parse::<u64>()) else {
            continue;
        };
        if let Some(d) = dev_entry(out, dev, names) {
            let slot = if bytes { &mut d.bytes } else { &mut d.ios };
            if let Some(s) = slot.get_mut(i) {
                *s = Some(v);
            }
        }
    }
}

/// Parses v2 `io.stat` into `out`.
pub fn parse_v2(text: &str, out: &mut Vec<DeviceIo>, names: &mut HashMap<(u32, u32), String>) {
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(dev) = f.next() else { continue };
        let Some(d) = dev_entry(out, dev, names) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            let (slot, i) = match k {
                "rbytes" => (&mut d.bytes, 0),
                "wbytes" => (&mut d.bytes, 1),
                "dbytes" => (&mut d.bytes, 4),
                "rios" => (&mut d.ios, 0),
                "wios" => (&mut d.ios, 1),
                "dios" => (&mut d.ios, 4),
                _ => continue,
            };
            slot[i] = Some(v);
        }
    }
}

/// `/dev/<DEVNAME>` of a block device, or "" if the kernel does not say.
pub fn device_name(major: u32, minor: u32) -> String {
    let uevent = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"));
    uevent
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_default()
}

/// Reads one cgroup's block I/O from its directory in the blkio (v1) or io (v2) hierarchy;
/// `None` when the files are missing (the cgroup is gone, or the controller is not there).
pub fn read(
    dir: &Path,
    v2: bool,
    names: &mut HashMap<(u32, u32), String>,
) -> Option<Vec<DeviceIo>> {
    let mut out = Vec::new();
    if v2 {
        parse_v2(
            &fs::read_to_string(dir.join("io.stat")).ok()?,
            &mut out,
            names,
        );
        return Some(out);
    }
    // A proportional-weight scheduler (BFQ) keeps its own counters; the throttle ones are
    // what every v1 kernel has (libcontainer's order).
    for (bytes_file, ios_file) in [
        (
            "blkio.bfq.io_service_bytes_recursive",
            "blkio.bfq.io_serviced_recursive",
        ),
        (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced_recursive",
        ),
    ] {
        let Ok(b) = fs::read_to_string(dir.join(bytes_file)) else {
            continue;
        };
        parse_v1(&b, true, &mut out, names);
        if let Ok(s) = fs::read_to_string(dir.join(ios_file)) {
            parse_v1(&s, false, &mut out, names);
        }
        if !out.is_empty() {
            return Some(out);
        }
    }
    dir.join("blkio.throttle.io_service_bytes_recursive")
        .exists()
        .then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_files_fill_bytes_and_requests_per_device_and_skip_the_grand_total() {
        let mut out = Vec::new();
        let mut names = HashMap::new();
        names.insert((254, 0), "/dev/vda".to_string());
        let bytes = "254:0 Read 8388608\n254:0 Write 4096\n254:0 Sync 8392704\n254:0 Async 0\n254:0 Discard 0\n254:0 Total 8392704\nTotal 8392704\n";
        parse_v1(bytes, true, &mut out, &mut names);
        parse_v1(
            "254:0 Read 64\n254:0 Write 1\nTotal 65\n",
            false,
            &mut out,
            &mut names,
        );
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert_eq!((d.major, d.minor, d.device.as_str()), (254, 0, "/dev/vda"));
        assert_eq!(d.bytes[0], Some(8_388_608));
        assert_eq!(d.bytes[5], Some(8_392_704));
        assert_eq!(d.ios[..2], [Some(64), Some(1)]);
        assert_eq!(d.ios[5], None);
    }

    #[test]
    fn v2_io_stat_maps_to_read_write_and_discard() {
        let mut out = Vec::new();
        let mut names = HashMap::new();
        parse_v2(
            "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n",
            &mut out,
            &mut names,
        );
        let d = &out[0];
        assert_eq!(d.bytes[..2], [Some(1024), Some(2048)]);
        assert_eq!(d.ios[..2], [Some(3), Some(4)]);
        assert_eq!(d.bytes[4], Some(0));
        assert_eq!(d.bytes[5], None, "v2 has no Total");
    }
}
