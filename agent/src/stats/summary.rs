//! The stats model every reader shares: node, pod and container usage in the Summary API's
//! terms (kubelet pkg/kubelet/apis/stats/v1alpha1), and [`StatsSource`], the narrow read
//! interface `server/` (/stats/summary) and `metrics/` (/metrics/cadvisor, /metrics/resource)
//! use. Rates (`usageNanoCores`) are computed once per sweep by the store's single writer,
//! never by a reader. Readers never walk cgroups.

use std::time::SystemTime;

/// CPU and memory of one cgroup at one instant.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// When the numbers were taken.
    pub timestamp: Option<SystemTime>,
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU rate over the last interval, nanocores (None until two samples exist).
    pub cpu_usage_nano_cores: Option<u64>,
    /// Working set: usage minus inactive file.
    pub memory_working_set_bytes: u64,
    /// Total memory usage.
    pub memory_usage_bytes: u64,
    /// Anonymous + swap cache.
    pub memory_rss_bytes: u64,
    /// Page cache.
    pub memory_cache_bytes: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// OOM kills seen in this cgroup.
    pub oom_events: u64,
    /// Memory limit, if any.
    pub memory_limit_bytes: Option<u64>,
    /// CFS throttled periods, for cgroups with a CPU limit.
    pub cpu_throttled_periods: Option<u64>,
    /// Time its tasks waited on a run queue, ns (eBPF; counted since the agent loaded).
    pub cpu_run_queue_ns: Option<u64>,
    /// Times its tasks ran on a CPU (eBPF; counted since the agent loaded).
    pub cpu_run_periods: Option<u64>,
    /// The slower cgroup figures (spec, CFS, swap, tasks ...), when the details sweep has them.
    pub details: Option<crate::stats::details::CgroupDetails>,
    /// When the details were read.
    pub details_at: Option<SystemTime>,
    /// Interfaces of the cgroup's network namespace (pods and the node), read with the details.
    pub network: Option<std::sync::Arc<[crate::stats::network::Interface]>>,
    /// Block I/O per device (blkio / io.stat), read on the filesystem task's timer.
    pub io: Option<std::sync::Arc<[crate::stats::fs_usage::blkio::DeviceIo]>>,
    /// When the block I/O was read.
    pub io_at: Option<SystemTime>,
}

/// One container of a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerStats {
    /// Container name in the pod spec.
    pub name: String,
    /// Runtime container id (no `containerd://` prefix).
    pub id: String,
    /// Image reference.
    pub image: String,
    /// cgroup path as cAdvisor's `id` label shows it, e.g. `/kubepods/besteffort/pod<uid>/<id>`.
    pub cgroup: String,
    /// When the container started.
    pub start_time: Option<SystemTime>,
    /// Whether it is running now.
    pub running: bool,
    /// Usage.
    pub usage: Usage,
    /// Writable layer (CRI `writable_layer`), on the container filesystem.
    pub rootfs: Option<RuntimeFsUsage>,
    /// The container's log files, on the node filesystem.
    pub logs: Option<RuntimeFsUsage>,
}

/// One volume of a pod (the Summary API's VolumeStats without `pvcRef`: we have no PVCs).
#[derive(Debug, Clone, Default)]
pub struct VolumeStats {
    /// Volume name in the pod spec.
    pub name: String,
    /// Use by the volume, capacity of the filesystem holding it.
    pub fs: RuntimeFsUsage,
}

/// One pod.
#[derive(Debug, Clone, Default)]
pub struct PodStats {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Pod-level cgroup path (cAdvisor `id` for `container=""`).
    pub cgroup: String,
    /// Pod start time.
    pub start_time: Option<SystemTime>,
    /// Pod-level cgroup usage, when known.
    pub usage: Option<Usage>,
    /// Containers.
    pub containers: Vec<ContainerStats>,
    /// Volumes under the pod's volumes dir (emptyDir, configMap, secret, projected,
    /// downwardAPI).
    pub volumes: Vec<VolumeStats>,
    /// Local ephemeral storage: container rootfs and logs, pod logs, local volumes
    /// (kubelet stats helper.go calcEphemeralStorage).
    pub ephemeral_storage: Option<RuntimeFsUsage>,
}

/// Filesystem numbers (node root fs).
#[derive(Debug, Clone, Default)]
pub struct FsStats {
    /// Bytes available to non-root.
    pub available_bytes: u64,
    /// Total bytes.
    pub capacity_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
    /// Free inodes.
    pub inodes_free: u64,
    /// Total inodes.
    pub inodes: u64,
}

/// The node.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    /// When the node (agent) started.
    pub start_time: Option<SystemTime>,
    /// Node-level usage.
    pub usage: Usage,
    /// Memory available (capacity minus working set).
    pub memory_available_bytes: Option<u64>,
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// Physical memory.
    pub memory_capacity_bytes: u64,
    /// kernel.pid_max.
    pub max_pid: Option<u64>,
    /// Processes running.
    pub cur_proc: Option<u64>,
    /// Root filesystem of the node.
    pub fs: Option<FsStats>,
    /// /proc/sys/kernel/random/boot_id (cAdvisor's `boot_id` label).
    pub boot_id: String,
    /// /etc/machine-id (cAdvisor's `machine_id` label).
    pub machine_id: String,
    /// DMI product UUID (cAdvisor's `system_uuid` label).
    pub system_uuid: String,
    /// The kubelet's system containers (`kubelet`, `runtime`, `pods`) whose cgroups are known.
    pub system_containers: Vec<SystemContainer>,
    /// The runtime's image and container filesystems (CRI ImageFsInfo).
    pub runtime_fs: Option<RuntimeFs>,
}

/// A system container of the Summary API (kubelet SystemContainerKubelet/Runtime/Pods).
#[derive(Debug, Clone, Default)]
pub struct SystemContainer {
    /// `kubelet`, `runtime` or `pods`.
    pub name: &'static str,
    /// When its cgroup was created, if known.
    pub start_time: Option<SystemTime>,
    /// Its usage.
    pub usage: Usage,
}

/// One runtime filesystem: capacity from the filesystem, use from the runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeFsUsage {
    /// When the runtime measured it.
    pub time: Option<SystemTime>,
    /// Capacity and free space of the filesystem holding it; `used_bytes` and `inodes`
    /// use are the runtime's.
    pub fs: FsStats,
    /// Inodes the runtime's data uses.
    pub inodes_used: Option<u64>,
    /// The block device holding it (`/dev/vda`), cAdvisor's `device` label; may be empty.
    pub device: String,
}

/// The Summary API's `node.runtime`.
#[derive(Debug, Clone, Default)]
pub struct RuntimeFs {
    /// Where images are stored.
    pub image_fs: Option<RuntimeFsUsage>,
    /// Where container writable layers are stored (the image fs when the runtime has no
    /// separate one, as the kubelet reports it).
    pub container_fs: Option<RuntimeFsUsage>,
}

/// One consistent read of everything the stats endpoints show.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    /// Node.
    pub node: NodeStats,
    /// Pods with their containers.
    pub pods: Vec<PodStats>,
    /// Whether the cgroup numbers could be read (cAdvisor's `container_scrape_error` is 1
    /// when not): no telemetry source or no details sweep yet.
    pub container_scrape_error: bool,
}

/// Source of usage numbers for /stats/summary, /metrics/cadvisor and /metrics/resource.
pub trait StatsSource: Send + Sync + 'static {
    /// The current numbers; cheap (a copy of the store, no cgroup reads).
    fn snapshot(&self) -> StatsSnapshot;

    /// Call before a [`snapshot`](Self::snapshot) that serves the cgroup details (Summary API,
    /// /metrics/cadvisor): they are swept only while read, and this waits briefly for a fresh
    /// sweep when they had stopped.
    fn refresh(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// Where the numbers come from and the pipeline's counters, for `nodelet_*` metrics;
    /// `None` when telemetry is off.
    fn health(&self) -> Option<TelemetryHealth> {
        None
    }
}

/// The telemetry pipeline's state, as `/metrics` reports it.
#[derive(Debug, Clone, Default)]
pub struct TelemetryHealth {
    /// `ebpf`, `cgroupfs` or `none`.
    pub source: &'static str,
    /// Collector and ring-buffer counters.
    pub counters: crate::stats::CollectorCounters,
    /// Kernel ids of the eBPF programs feeding the store, by name (empty without eBPF); the
    /// metrics scrape asks the kernel for their run-time statistics.
    pub program_ids: Vec<(&'static str, u32)>,
    /// Cgroup details sweeps done, the last one's duration and how many cgroups it read.
    pub details: Option<(u64, std::time::Duration, usize)>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A source with `n` running containers, one per pod, with every family cAdvisor has
    /// for them (a CPU quota, the details, and an interface per pod): the serving
    /// benchmark's worst case.
    pub(crate) fn stub(n: usize) -> StatsSnapshot {
        use crate::stats::details::{CgroupDetails, CpuDetails, MemoryDetails, ProcessDetails};
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let psi = crate::stats::psi::Psi {
            some: crate::stats::psi::PsiData {
                total_us: 123_456,
                avg10: 150,
                avg60: 75,
                avg300: 10,
            },
            full: crate::stats::psi::PsiData {
                total_us: 23_456,
                ..Default::default()
            },
        };
        let details = CgroupDetails {
            cpu: Some(CpuDetails {
                usage_ns: Some(1_000_000),
                user_ns: Some(600_000),
                system_ns: Some(400_000),
                cfs_periods: Some(1000),
                cfs_throttled_periods: Some(10),
                cfs_throttled_ns: Some(50_000_000),
                period_us: 100_000,
                quota_us: 50_000,
                shares: 512,
            }),
            memory: Some(MemoryDetails {
                usage_bytes: 8192,
                working_set_bytes: 4096,
                pgfault: 100,
                total_pgfault: 100,
                limit_bytes: 1 << 30,
                ..Default::default()
            }),
            processes: Some(ProcessDetails {
                processes: 1,
                threads: Some(1),
                threads_max: Some(0),
                fds: 4,
                sockets: 1,
            }),
            created: Some(t),
            pressure: Some(crate::stats::psi::Pressure {
                cpu: Some(psi),
                memory: Some(psi),
                io: Some(psi),
            }),
        };
        let usage = |i: usize| Usage {
            timestamp: Some(t),
            cpu_usage_ns: 1_000_000 + i as u64,
            cpu_usage_nano_cores: Some(5_000),
            memory_working_set_bytes: 4096 * (i as u64 + 1),
            memory_usage_bytes: 8192 * (i as u64 + 1),
            memory_rss_bytes: 4096,
            memory_cache_bytes: 4096,
            memory_limit_bytes: Some(1 << 30),
            details: Some(details),
            details_at: Some(t),
            ..Default::default()
        };
        let fs = |used: u64| RuntimeFsUsage {
            time: Some(t),
            fs: FsStats {
                available_bytes: 1 << 34,
                capacity_bytes: 1 << 35,
                used_bytes: used,
                inodes_free: 1 << 20,
                inodes: 1 << 21,
            },
            inodes_used: Some(3),
            device: "/dev/vda".into(),
        };
        let io: std::sync::Arc<[crate::stats::fs_usage::blkio::DeviceIo]> =
            vec![crate::stats::fs_usage::blkio::DeviceIo {
                major: 254,
                minor: 0,
                device: "/dev/vda".into(),
                bytes: [
                    Some(4096),
                    Some(8192),
                    Some(12288),
                    Some(0),
                    Some(0),
                    Some(12288),
                ],
                ios: [Some(1), Some(2), Some(3), Some(0), Some(0), Some(3)],
            }]
            .into();
        let usage = |i: usize| Usage {
            io: Some(io.clone()),
            io_at: Some(t),
            ..usage(i)
        };
        let pod_usage = |i: usize| Usage {
            network: Some(
                vec![crate::stats::network::Interface {
                    name: "eth0".into(),
                    rx_bytes: 1000,
                    tx_bytes: 1000,
                    ..Default::default()
                }]
                .into(),
            ),
            ..usage(i)
        };
        StatsSnapshot {
            node: NodeStats {
                start_time: Some(t),
                usage: usage(0),
                cpu_cores: 2,
                memory_capacity_bytes: 4 << 30,
                max_pid: Some(4_194_304),
                cur_proc: Some(120),
                ..Default::default()
            },
            pods: (0..n)
                .map(|i| PodStats {
                    namespace: "default".into(),
                    name: format!("p{i}"),
                    uid: format!("uid-{i}"),
                    cgroup: format!("/kubepods/besteffort/poduid-{i}"),
                    start_time: Some(t),
                    usage: Some(pod_usage(i)),
                    containers: vec![ContainerStats {
                        name: "c".into(),
                        id: format!("{i:064x}"),
                        image: "busybox:1.35".into(),
                        cgroup: format!("/kubepods/besteffort/poduid-{i}/{i:064x}"),
                        start_time: Some(t),
                        running: true,
                        usage: usage(i),
                        rootfs: Some(fs(8192)),
                        logs: Some(fs(4096)),
                    }],
                    volumes: vec![VolumeStats {
                        name: "cache".into(),
                        fs: fs(1 << 20),
                    }],
                    ephemeral_storage: Some(fs(8192 + 4096 + (1 << 20))),
                })
                .collect(),
            container_scrape_error: false,
        }
    }
}
