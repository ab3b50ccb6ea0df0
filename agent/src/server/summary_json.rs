//! The Summary API document (`/stats/summary`, kubelet pkg/kubelet/apis/stats/v1alpha1)
//! serialised straight from a [`StatsSnapshot`]: typed views that borrow the snapshot, written
//! by serde_json into one pre-sized buffer. No intermediate `serde_json::Value` tree: at 250
//! containers that tree was ~126,000 allocations and most of the request's time.
//!
//! Field names, order and omissions follow the Go types' JSON tags: `omitempty` fields are left
//! out when absent, metav1.Time is RFC 3339 UTC in whole seconds (`null` when unset), floats are
//! written as Go writes them (`0`, `1.5`).

use crate::stats::network::Interface;
use crate::stats::psi::{Psi, PsiData};
use crate::stats::summary::{
    ContainerStats, FsStats, PodStats, RuntimeFsUsage, StatsSnapshot, SystemContainer, Usage,
};
use serde::ser::{Serialize, Serializer};
use std::time::SystemTime;

/// The document's bytes. Fails only if serde_json does (it cannot for these types; the error is
/// kept rather than unwrapped).
pub fn summary_json(node_name: &str, s: &StatsSnapshot) -> Result<Vec<u8>, serde_json::Error> {
    // ~1.7 KiB per pod with one container, volumes and PSI (README serving table): size the
    // buffer once so the writer never copies the document while growing it.
    let containers: usize = s.pods.iter().map(|p| p.containers.len()).sum();
    let volumes: usize = s.pods.iter().map(|p| p.volumes.len()).sum();
    let mut out = Vec::with_capacity(4096 + 640 * s.pods.len() + 1280 * containers + 256 * volumes);
    serde_json::to_writer(
        &mut out,
        &Summary {
            node: node(node_name, s),
            pods: Each(&s.pods, pod),
        },
    )?;
    Ok(out)
}

/// A slice serialised as a JSON array of views made on the fly (no Vec of views).
struct Each<'a, T, U>(&'a [T], fn(&'a T) -> U);

impl<'a, T, U: Serialize> Serialize for Each<'a, T, U> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

impl<T, U> Each<'_, T, U> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// metav1.Time: whole seconds, UTC; `null` for the zero time.
#[derive(Clone, Copy)]
struct Time(Option<SystemTime>);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(t) => {
                let secs = t
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                s.collect_str(&super::stats::Rfc3339 {
                    secs: i64::try_from(secs).unwrap_or(i64::MAX),
                    nanos: 0,
                })
            }
        }
    }
}

/// A PSI average in percent from hundredths, as Go writes a float64: `0`, `1.5`, `0.75`.
struct Percent(u32);

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            s.serialize_u32(self.0 / 100)
        } else {
            s.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    node: Node<'a>,
    pods: Each<'a, PodStats, Pod<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Node<'a> {
    node_name: &'a str,
    #[serde(skip_serializing_if = "Each::is_empty")]
    system_containers: Each<'a, SystemContainer, SysContainer<'a>>,
    start_time: Time,
    cpu: Cpu,
    memory: Memory,
    #[serde(skip_serializing_if = "Option::is_none")]
    io: Option<Io>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fs: Option<Fs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<Runtime<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rlimit: Option<Rlimit>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Runtime<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    image_fs: Option<Fs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_fs: Option<Fs<'a>>,
}

#[derive(serde::Serialize)]
struct Rlimit {
    time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxpid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    curproc: Option<u64>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SysContainer<'a> {
    name: &'a str,
    start_time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<Cpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<Memory>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PodRef<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Pod<'a> {
    pod_ref: PodRef<'a>,
    start_time: Time,
    containers: Each<'a, ContainerStats, Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<Cpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    io: Option<Io>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network<'a>>,
    /// VolumeStats: FsStats inline plus `name`; no `pvcRef` (no PVC-backed volumes).
    #[serde(skip_serializing_if = "Each::is_empty")]
    volume: Each<'a, crate::stats::summary::VolumeStats, Fs<'a>>,
    #[serde(rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    ephemeral_storage: Option<Fs<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Container<'a> {
    name: &'a str,
    start_time: Time,
    cpu: Cpu,
    memory: Memory,
    #[serde(skip_serializing_if = "Option::is_none")]
    io: Option<Io>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rootfs: Option<Fs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs: Option<Fs<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Cpu {
    time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_nano_cores: Option<u64>,
    usage_core_nano_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<PsiJson>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    available_bytes: Option<u64>,
    usage_bytes: u64,
    working_set_bytes: u64,
    rss_bytes: u64,
    page_faults: u64,
    major_page_faults: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<PsiJson>,
}

/// statsapi.IOStats: only PSI.
#[derive(serde::Serialize)]
struct Io {
    time: Time,
    psi: PsiJson,
}

/// statsapi.PSIStats: averages in percent, the total as the kernel writes it (µs; the kubelet
/// passes cAdvisor's value through although the type's comment says nanoseconds).
#[derive(serde::Serialize)]
struct PsiJson {
    full: PsiDataJson,
    some: PsiDataJson,
}

#[derive(serde::Serialize)]
struct PsiDataJson {
    total: u64,
    avg10: Percent,
    avg60: Percent,
    avg300: Percent,
}

/// statsapi.FsStats, and VolumeStats when `name` is set (its FsStats are inline, name last).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Fs<'a> {
    time: Time,
    available_bytes: u64,
    capacity_bytes: u64,
    used_bytes: u64,
    inodes_free: u64,
    inodes: u64,
    inodes_used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// statsapi.NetworkStats: the default interface (`eth0`, the kubelet's
/// network.DefaultInterfaceName) inline, then every interface.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Network<'a> {
    time: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rx_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tx_errors: Option<u64>,
    #[serde(skip_serializing_if = "Each::is_empty")]
    interfaces: Each<'a, Interface, Iface<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Iface<'a> {
    name: &'a str,
    rx_bytes: u64,
    rx_errors: u64,
    tx_bytes: u64,
    tx_errors: u64,
}

fn iface(i: &Interface) -> Iface<'_> {
    Iface {
        name: &i.name,
        rx_bytes: i.rx_bytes,
        rx_errors: i.rx_errors,
        tx_bytes: i.tx_bytes,
        tx_errors: i.tx_errors,
    }
}

fn psi(p: &Psi) -> PsiJson {
    let data = |d: &PsiData| PsiDataJson {
        total: d.total_us,
        avg10: Percent(d.avg10),
        avg60: Percent(d.avg60),
        avg300: Percent(d.avg300),
    };
    PsiJson {
        full: data(&p.full),
        some: data(&p.some),
    }
}

fn pressure(u: &Usage) -> Option<crate::stats::psi::Pressure> {
    u.details?.pressure
}

fn cpu(u: &Usage) -> Cpu {
    Cpu {
        time: Time(u.timestamp),
        usage_nano_cores: u.cpu_usage_nano_cores,
        usage_core_nano_seconds: u.cpu_usage_ns,
        psi: pressure(u).and_then(|p| p.cpu).as_ref().map(psi),
    }
}

/// `available` is the node's (capacity minus working set); a cgroup's comes from its limit.
fn memory(u: &Usage, available: Option<u64>) -> Memory {
    Memory {
        time: Time(u.timestamp),
        available_bytes: available.or_else(|| {
            u.memory_limit_bytes
                .map(|l| l.saturating_sub(u.memory_working_set_bytes))
        }),
        usage_bytes: u.memory_usage_bytes,
        working_set_bytes: u.memory_working_set_bytes,
        rss_bytes: u.memory_rss_bytes,
        page_faults: u.page_faults,
        major_page_faults: u.major_page_faults,
        psi: pressure(u).and_then(|p| p.memory).as_ref().map(psi),
    }
}

/// PSI is read on the details sweep, so `io` carries that sweep's time.
fn io(u: &Usage) -> Option<Io> {
    let p = pressure(u)?.io?;
    Some(Io {
        time: Time(u.details_at.or(u.timestamp)),
        psi: psi(&p),
    })
}

fn fs(time: Option<SystemTime>, fs: &FsStats, inodes_used: Option<u64>) -> Fs<'static> {
    Fs {
        time: Time(time),
        available_bytes: fs.available_bytes,
        capacity_bytes: fs.capacity_bytes,
        used_bytes: fs.used_bytes,
        inodes_free: fs.inodes_free,
        inodes: fs.inodes,
        inodes_used: inodes_used.unwrap_or(fs.inodes.saturating_sub(fs.inodes_free)),
        name: None,
    }
}

fn runtime_fs(u: &RuntimeFsUsage) -> Fs<'static> {
    fs(u.time, &u.fs, u.inodes_used)
}

fn network(u: &Usage) -> Option<Network<'_>> {
    let n = u.network.as_deref()?;
    let top = n.iter().find(|i| i.name == "eth0");
    Some(Network {
        time: Time(u.details_at),
        name: top.map(|i| i.name.as_str()),
        rx_bytes: top.map(|i| i.rx_bytes),
        rx_errors: top.map(|i| i.rx_errors),
        tx_bytes: top.map(|i| i.tx_bytes),
        tx_errors: top.map(|i| i.tx_errors),
        interfaces: Each(n, iface),
    })
}

/// A system container. On v1 a process sits in a different cgroup per hierarchy (the agent may
/// have its own memory cgroup but share the root CPU one); what its cgroup path does not hold
/// is left out, as cAdvisor leaves it out for a container without that controller.
fn sys_container(c: &SystemContainer) -> SysContainer<'_> {
    let d = c.usage.details;
    let has_cpu =
        c.usage.cpu_usage_ns > 0 || d.and_then(|d| d.cpu).is_some_and(|x| x.usage_ns.is_some());
    let has_memory = c.usage.memory_usage_bytes > 0 || d.is_some_and(|d| d.memory.is_some());
    SysContainer {
        name: c.name,
        start_time: Time(c.start_time),
        cpu: has_cpu.then(|| cpu(&c.usage)),
        memory: has_memory.then(|| memory(&c.usage, None)),
    }
}

fn node<'a>(node_name: &'a str, s: &'a StatsSnapshot) -> Node<'a> {
    let n = &s.node;
    Node {
        node_name,
        system_containers: Each(&n.system_containers, sys_container),
        start_time: Time(n.start_time),
        cpu: cpu(&n.usage),
        memory: memory(&n.usage, n.memory_available_bytes),
        io: io(&n.usage),
        network: network(&n.usage),
        fs: n.fs.as_ref().map(|f| fs(n.usage.timestamp, f, None)),
        runtime: n.runtime_fs.as_ref().map(|rt| Runtime {
            image_fs: rt.image_fs.as_ref().map(runtime_fs),
            container_fs: rt.container_fs.as_ref().map(runtime_fs),
        }),
        rlimit: (n.max_pid.is_some() || n.cur_proc.is_some()).then_some(Rlimit {
            time: Time(n.usage.timestamp),
            maxpid: n.max_pid,
            curproc: n.cur_proc,
        }),
    }
}

fn container(c: &ContainerStats) -> Container<'_> {
    Container {
        name: &c.name,
        start_time: Time(c.start_time),
        cpu: cpu(&c.usage),
        memory: memory(&c.usage, None),
        io: io(&c.usage),
        rootfs: c.rootfs.as_ref().map(runtime_fs),
        logs: c.logs.as_ref().map(runtime_fs),
    }
}

fn volume(v: &crate::stats::summary::VolumeStats) -> Fs<'_> {
    Fs {
        name: Some(&v.name),
        ..runtime_fs(&v.fs)
    }
}

fn pod(p: &PodStats) -> Pod<'_> {
    let u = p.usage.as_ref();
    Pod {
        pod_ref: PodRef {
            name: &p.name,
            namespace: &p.namespace,
            uid: &p.uid,
        },
        start_time: Time(p.start_time),
        containers: Each(&p.containers, container),
        cpu: u.map(cpu),
        memory: u.map(|u| memory(u, None)),
        io: u.and_then(io),
        network: u.and_then(network),
        volume: Each(&p.volumes, volume),
        ephemeral_storage: p.ephemeral_storage.as_ref().map(runtime_fs),
    }
}
