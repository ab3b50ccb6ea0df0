//! Network counters per pod and for the node: the interfaces of the pod's network namespace,
//! read from `/proc/<pid>/net/dev` of one of its processes (any process of the pod shares the
//! sandbox's namespace), as cAdvisor reads them (container/libcontainer/handler.go
//! networkStatsFromProc), skipping the devices it skips. Read by the details sweep: one small
//! file per pod every 10 s. A hostNetwork pod sees the node's interfaces, as under cAdvisor.

use super::cgroupfs::{CgroupLayout, cgroup_dir};
use std::fs;
use std::path::Path;

/// One interface's cumulative counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Device name (`eth0`).
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// Devices cAdvisor leaves out: loopback, host-side veth ends and docker bridges.
fn ignored(name: &str) -> bool {
    name == "lo" || name.starts_with("veth") || name.starts_with("docker")
}

/// Parses `/proc/<pid>/net/dev`, sorted by name, without ignored devices.
pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    let mut out: Vec<Interface> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if ignored(name) {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets
            // errs drop fifo colls carrier compressed.
            (f.len() >= 16).then(|| Interface {
                name: name.to_owned(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A process of the pod: the first pid listed by the pod cgroup or one of its children.
fn pod_pid(layout: &CgroupLayout, pod_cgroup: &str) -> Option<String> {
    let m = layout
        .controller("memory")
        .or_else(|| layout.controller("cpu"))?;
    let dir = cgroup_dir(&m.mount, pod_cgroup);
    let first = |d: &Path| {
        fs::read_to_string(d.join("cgroup.procs"))
            .ok()
            .and_then(|t| t.split_whitespace().next().map(str::to_owned))
    };
    first(&dir).or_else(|| {
        fs::read_dir(&dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| first(&e.path()))
    })
}

/// The interfaces of a pod's network namespace; `None` when it has no process left.
pub fn read_pod(layout: &CgroupLayout, pod_cgroup: &str) -> Option<Vec<Interface>> {
    let pid = pod_pid(layout, pod_cgroup)?;
    Some(parse_net_dev(
        &fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?,
    ))
}

/// The node's interfaces (the agent's own namespace: it runs in the host's).
pub fn read_node() -> Option<Vec<Interface>> {
    Some(parse_net_dev(
        &fs::read_to_string("/proc/self/net/dev").ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1500 10 1 2 0 0 0 0 3000 20 3 4 0 0 0 0
vethab12: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0
";

    #[test]
    fn net_dev_parses_rx_and_tx_and_skips_loopback_and_veth() {
        let i = parse_net_dev(NET_DEV);
        assert_eq!(
            i,
            vec![Interface {
                name: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 3000,
                tx_packets: 20,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }
}
