//! Node allocatable: what is reserved from the node's capacity, and the `kubepods` cgroup and
//! its QoS children limited to what is left (kubelet pkg/kubelet/cm:
//! node_container_manager_linux.go, qos_container_manager_linux.go, helpers.go).
//!
//! Two different subtractions, as in the kubelet: the `kubepods` cgroup is limited to
//! capacity - kubeReserved - systemReserved (getNodeAllocatableAbsolute), while the
//! allocatable the node reports and admission uses also subtracts the hard eviction
//! thresholds (GetNodeAllocatableReservation), so that pods are evicted before the cgroup
//! limit makes the kernel OOM killer act. cgroups-rs does the writing (cgroupfs driver, v1
//! hierarchies or the v2 unified tree); the stats readers keep their own cgroupfs code.

use super::ContainerManager;
use crate::options::CgroupDriver;
use crate::options::eviction::{EvictionOptions, Signal};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, MaxValue};
use tracing::{debug, info};

/// cpu.shares of the besteffort cgroup and the floor of every computed share (MinShares).
pub const MIN_SHARES: u64 = 2;
/// The cgroup v1 ceiling of cpu.shares (MaxShares).
const MAX_SHARES: u64 = 262_144;

/// Amounts of the resources node allocatable is computed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// CPU, millicores.
    pub cpu_milli: i64,
    /// Memory, bytes.
    pub memory: i64,
    /// Local ephemeral storage, bytes (0 when unknown).
    pub ephemeral_storage: i64,
    /// Process ids (the kubelet's internal `pid` resource).
    pub pid: i64,
}

/// Why node allocatable cannot be enforced.
#[derive(Debug, thiserror::Error)]
pub enum NodeAllocatableError {
    /// A reservation exceeds the capacity (validateNodeAllocatable).
    #[error(
        "invalid Node Allocatable configuration: resource {resource:?} has a reservation of {reserved} but capacity of {capacity} (kubeReserved + systemReserved + evictionHard must not exceed capacity)"
    )]
    Reservation {
        /// `cpu`, `memory` or `ephemeral-storage`.
        resource: &'static str,
        /// What is reserved.
        reserved: i64,
        /// What the node has.
        capacity: i64,
    },
    /// Creating or writing a cgroup failed.
    #[error("cgroup {cgroup}: cannot set {what}")]
    Cgroup {
        /// The cgroup, relative to the hierarchy root.
        cgroup: String,
        /// What was being done (`create`, `memory limit`, `cpu shares`, `pids limit`).
        what: &'static str,
        /// cgroups-rs's error (it names the file).
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
}

/// kubeReserved + systemReserved + the hard eviction thresholds on memory.available and
/// nodefs.available (GetNodeAllocatableReservation): what the reported allocatable lacks.
pub fn reservation(o: &EvictionOptions, capacity: Amounts) -> Amounts {
    let (k, s) = (o.kube_reserved, o.system_reserved);
    let mut r = Amounts {
        cpu_milli: k.cpu_milli + s.cpu_milli,
        memory: k.memory + s.memory,
        ephemeral_storage: k.ephemeral_storage + s.ephemeral_storage,
        pid: k.pid + s.pid,
    };
    // hardEvictionReservation: the last hard threshold of a signal wins, as in the Go map.
    let (mut mem, mut fs) = (0, 0);
    for t in o.thresholds.iter().filter(|t| t.is_hard()) {
        match t.signal {
            Signal::MemoryAvailable => mem = t.value.quantity(capacity.memory),
            Signal::NodeFsAvailable => fs = t.value.quantity(capacity.ephemeral_storage),
            _ => {}
        }
    }
    r.memory += mem;
    r.ephemeral_storage += fs;
    r
}

/// The allocatable the node reports: capacity less [`reservation`]; an error names the first
/// resource reserved beyond capacity (the kubelet refuses to start then).
pub fn allocatable(
    o: &EvictionOptions,
    capacity: Amounts,
) -> Result<Amounts, NodeAllocatableError> {
    let r = reservation(o, capacity);
    let check = |resource, reserved: i64, capacity: i64| {
        if reserved > capacity && reserved > 0 {
            Err(NodeAllocatableError::Reservation {
                resource,
                reserved,
                capacity,
            })
        } else {
            Ok((capacity - reserved).max(0))
        }
    };
    Ok(Amounts {
        cpu_milli: check("cpu", r.cpu_milli, capacity.cpu_milli)?,
        memory: check("memory", r.memory, capacity.memory)?,
        ephemeral_storage: if capacity.ephemeral_storage > 0 {
            check(
                "ephemeral-storage",
                r.ephemeral_storage,
                capacity.ephemeral_storage,
            )?
        } else {
            0
        },
        pid: (capacity.pid - r.pid).max(0),
    })
}

/// What the `kubepods` cgroup is limited to: capacity - kubeReserved - systemReserved when
/// `pods` is enforced, the whole capacity otherwise (createNodeAllocatableCgroups). Eviction
/// thresholds are not subtracted: the eviction manager must act below this limit.
pub fn pods_cgroup_limits(o: &EvictionOptions, capacity: Amounts) -> Amounts {
    if !o.enforce_pods() {
        return capacity;
    }
    let (k, s) = (o.kube_reserved, o.system_reserved);
    let sub = |c: i64, a: i64, b: i64| (c - a - b).max(0);
    Amounts {
        cpu_milli: sub(capacity.cpu_milli, k.cpu_milli, s.cpu_milli),
        memory: sub(capacity.memory, k.memory, s.memory),
        ephemeral_storage: sub(
            capacity.ephemeral_storage,
            k.ephemeral_storage,
            s.ephemeral_storage,
        ),
        pid: sub(capacity.pid, k.pid, s.pid),
    }
}

/// cpu.shares for a CPU amount (MilliCPUToShares): 1024 per core, within [2, 262144].
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    let milli = u64::try_from(milli).unwrap_or(0);
    (milli * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// cgroup v2 cpu.weight for v1 shares (runc's ConvertCPUSharesToCgroupV2Value).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The machine's pid capacity: min(pid_max, threads-max) (pidlimit.Stats' MaxPID).
pub fn pid_capacity() -> i64 {
    let read = |f: &str| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
    };
    [
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(0)
}

fn cg_err(
    cgroup: &str,
    what: &'static str,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> NodeAllocatableError {
    let cgroup = cgroup.to_owned();
    move |source| NodeAllocatableError::Cgroup {
        cgroup,
        what,
        source,
    }
}

/// Writes cpu shares (v1) or the matching weight (v2).
fn set_shares(cg: &Cgroup, path: &str, shares: u64, v2: bool) -> Result<(), NodeAllocatableError> {
    if let Some(cpu) = cg.controller_of::<CpuController>() {
        let v = if v2 { shares_to_weight(shares) } else { shares };
        cpu.set_shares(v).map_err(cg_err(path, "cpu shares"))?;
    }
    Ok(())
}

impl ContainerManager {
    /// Creates `kubepods` limited to `limits` (memory, cpu shares, pids) and its `burstable`
    /// and `besteffort` children (besteffort at the minimum cpu shares), as the kubelet does at
    /// start. Without per-QoS cgroups or with the systemd driver nothing is written (logged).
    pub fn enforce_node_allocatable(&self, limits: Amounts) -> Result<(), NodeAllocatableError> {
        if !self.per_qos {
            info!("cgroupsPerQOS is off: no kubepods cgroup, node allocatable is not enforced");
            return Ok(());
        }
        if self.driver == CgroupDriver::Systemd {
            info!(
                "systemd cgroup driver: kubepods.slice is left to systemd, node allocatable is not enforced by nodelet"
            );
            return Ok(());
        }
        let v2 = hierarchies::is_cgroup2_unified_mode();
        // cgroups-rs joins the path below each hierarchy root: an absolute one would replace it.
        let root = self.pods_root().trim_start_matches('/').to_owned();
        let start = std::time::Instant::now();
        let pods = Cgroup::new(hierarchies::auto(), &root).map_err(cg_err(&root, "create"))?;
        if let Some(mem) = pods.controller_of::<MemController>() {
            mem.set_limit(limits.memory)
                .map_err(cg_err(&root, "memory limit"))?;
        }
        set_shares(&pods, &root, milli_cpu_to_shares(limits.cpu_milli), v2)?;
        if let Some(p) = pods.controller_of::<PidController>()
            && limits.pid > 0
        {
            p.set_pid_max(MaxValue::Value(limits.pid))
                .map_err(cg_err(&root, "pids limit"))?;
        }
        self.ops.observe("create", start.elapsed());
        info!(cgroup = %root, memory = limits.memory, cpu_milli = limits.cpu_milli, pids = limits.pid, v2, "node allocatable enforced on the pods cgroup");
        for qos in ["burstable", "besteffort"] {
            let path = format!("{root}/{qos}");
            let start = std::time::Instant::now();
            let cg = Cgroup::new(hierarchies::auto(), &path).map_err(cg_err(&path, "create"))?;
            if qos == "besteffort" {
                set_shares(&cg, &path, MIN_SHARES, v2)?;
            }
            self.ops.observe("create", start.elapsed());
            debug!(cgroup = %path, "QoS cgroup ready");
        }
        Ok(())
    }

    /// Sets the burstable cgroup's cpu shares to the sum of the burstable pods' CPU requests
    /// (setCPUCgroupConfig; the kubelet re-runs it on pod changes and every minute).
    pub fn update_burstable_shares(&self, requests_milli: i64) -> Result<(), NodeAllocatableError> {
        if !self.per_qos || self.driver == CgroupDriver::Systemd {
            return Ok(());
        }
        let path = format!("{}/burstable", self.pods_root().trim_start_matches('/'));
        let cg = Cgroup::load(hierarchies::auto(), &path);
        if !cg.exists() {
            return Ok(());
        }
        let start = std::time::Instant::now();
        let set = set_shares(
            &cg,
            &path,
            milli_cpu_to_shares(requests_milli),
            hierarchies::is_cgroup2_unified_mode(),
        );
        self.ops.observe("update", start.elapsed());
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::eviction::{Reserved, Threshold, ThresholdValue};
    use std::time::Duration;

    fn opts(hard_mem: i64, enforce: &[&str]) -> EvictionOptions {
        EvictionOptions {
            thresholds: vec![
                Threshold {
                    signal: Signal::MemoryAvailable,
                    value: ThresholdValue::Quantity {
                        value: hard_mem,
                        binary: true,
                    },
                    grace_period: Duration::ZERO,
                    min_reclaim: None,
                },
                Threshold {
                    signal: Signal::NodeFsAvailable,
                    value: ThresholdValue::Percentage(0.1),
                    grace_period: Duration::ZERO,
                    min_reclaim: None,
                },
            ],
            pressure_transition_period: Duration::from_secs(300),
            max_pod_grace_period_seconds: 0,
            kube_reserved: Reserved {
                cpu_milli: 100,
                memory: 1 << 30,
                ephemeral_storage: 0,
                pid: 100,
            },
            system_reserved: Reserved {
                cpu_milli: 400,
                memory: 512 << 20,
                ephemeral_storage: 1000,
                pid: 0,
            },
            enforce_node_allocatable: enforce.iter().map(|s| s.to_string()).collect(),
        }
    }

    const CAP: Amounts = Amounts {
        cpu_milli: 2000,
        memory: 4 << 30,
        ephemeral_storage: 100_000,
        pid: 32768,
    };

    #[test]
    fn reported_allocatable_subtracts_reserved_and_hard_eviction() {
        let a = allocatable(&opts(100 << 20, &["pods"]), CAP).expect("valid");
        assert_eq!(a.cpu_milli, 1500);
        assert_eq!(a.memory, (4 << 30) - (1 << 30) - (512 << 20) - (100 << 20));
        assert_eq!(a.ephemeral_storage, 100_000 - 1000 - 10_000);
        assert_eq!(a.pid, 32768 - 100);
    }

    #[test]
    fn pods_cgroup_leaves_out_eviction_thresholds_and_follows_enforcement() {
        let l = pods_cgroup_limits(&opts(100 << 20, &["pods"]), CAP);
        assert_eq!(l.memory, (4 << 30) - (1 << 30) - (512 << 20));
        assert_eq!(l.cpu_milli, 1500);
        assert_eq!(l.pid, 32768 - 100);
        assert_eq!(pods_cgroup_limits(&opts(0, &[]), CAP), CAP);
    }

    #[test]
    fn over_reservation_names_the_resource() {
        let e = allocatable(&opts(4 << 30, &["pods"]), CAP).expect_err("too much");
        assert!(e.to_string().contains("\"memory\""), "{e}");
    }

    #[test]
    fn shares_and_weights_match_the_kubelet_and_runc() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(1500), 1536);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(MAX_SHARES), 10000);
    }
}
