//! `/metrics/cadvisor`: the series the kubelet's embedded cAdvisor exposes for containers
//! (cadvisor metrics/prometheus.go), with its label set: container, id, image, name, namespace,
//! pod (and cpu on the CPU counter). Pod-level cgroups appear with container="", name="",
//! image=""; the root cgroup "/" carries the node's numbers.

use super::expo::{Encoder, Format, Kind, Sink, push_label};
use crate::stats::details::{CpuDetails, MemoryDetails, ProcessDetails};
use crate::stats::network::Interface;
use crate::stats::summary::{StatsSnapshot, Usage};
use std::time::SystemTime;

mod fs;

struct Series<'a> {
    container: &'a str,
    id: &'a str,
    image: &'a str,
    name: &'a str,
    namespace: &'a str,
    pod: &'a str,
    usage: &'a Usage,
    start: Option<SystemTime>,
    /// The labels rendered once; set before any family is written.
    block: String,
    /// Where each of the six labels starts in `block`.
    starts: [usize; 6],
}

/// The series label names, in the order client_golang writes them.
const LABEL_NAMES: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

impl Series<'_> {
    /// Renders the six labels once into `block`.
    fn render_block(&mut self) {
        let values = [
            self.container,
            self.id,
            self.image,
            self.name,
            self.namespace,
            self.pod,
        ];
        let mut block = String::new();
        for (i, (k, v)) in LABEL_NAMES.iter().zip(values).enumerate() {
            self.starts[i] = block.len() + usize::from(i > 0);
            push_label(&mut block, k, v);
        }
        self.block = block;
    }

    /// The label block with `extra` (sorted by name) merged in name order, as client_golang
    /// writes labels, into `out`: the series' own labels are copied, not rendered again.
    fn block_with(&self, extra: &[(&str, &str)], out: &mut String) {
        out.clear();
        let mut extra = extra.iter().peekable();
        for (i, key) in LABEL_NAMES.iter().enumerate() {
            while let Some((k, v)) = extra.next_if(|(k, _)| k < key) {
                push_label(out, k, v);
            }
            let end = self.starts.get(i + 1).map_or(self.block.len(), |s| s - 1);
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&self.block[self.starts[i]..end]);
        }
        for (k, v) in extra {
            push_label(out, k, v);
        }
    }
}

/// Renders the cAdvisor view of a snapshot into one string (the tests' and benchmarks' form;
/// the server streams).
#[cfg(test)]
pub fn render(format: Format, s: &StatsSnapshot) -> String {
    render_at(format, s, SystemTime::now())
}

/// Renders the cAdvisor view of a snapshot through `sink`, in chunks (see
/// [`Encoder::streaming`]).
pub fn render_streaming(format: Format, s: &StatsSnapshot, sink: Sink) {
    render_with(s, SystemTime::now(), |_| Encoder::streaming(format, sink));
}

type Value = fn(&Usage) -> Option<f64>;

fn cpu(u: &Usage) -> Option<CpuDetails> {
    u.details.and_then(|d| d.cpu)
}

/// cAdvisor writes the CFS families only for containers with a quota.
fn cfs(u: &Usage) -> Option<CpuDetails> {
    cpu(u).filter(|c| c.quota_us != 0)
}

fn mem(u: &Usage) -> Option<MemoryDetails> {
    u.details.and_then(|d| d.memory)
}

fn procs(u: &Usage) -> Option<ProcessDetails> {
    u.details.and_then(|d| d.processes)
}

fn ns(v: Option<u64>) -> Option<f64> {
    v.map(|n| n as f64 / 1e9)
}

/// One family whose samples all come from a [`Usage`], `None` leaving a series out.
fn family(e: &mut Encoder, series: &[Series], f: (&str, &str, Kind, Value), stamped: bool) {
    let (name, help, kind, value) = f;
    if series.iter().all(|x| value(x.usage).is_none()) {
        return;
    }
    e.family(name, help, kind);
    for x in series {
        if let Some(v) = value(x.usage) {
            let at = if stamped { x.usage.details_at } else { None };
            e.sample_block(&x.block, v, at);
        }
    }
}

/// Renders the cAdvisor view as of `now` (`container_last_seen`).
#[cfg(test)]
pub fn render_at(format: Format, s: &StatsSnapshot, now: SystemTime) -> String {
    render_with(s, now, |capacity| Encoder::new(format, capacity))
}

/// Renders at `now` with the encoder `encoder` makes for the expected size.
fn render_with(
    s: &StatsSnapshot,
    now: SystemTime,
    encoder: impl FnOnce(usize) -> Encoder,
) -> String {
    let mut series = Vec::with_capacity(1 + s.pods.len() * 2);
    series.push(Series {
        container: "",
        id: "/",
        image: "",
        name: "",
        namespace: "",
        pod: "",
        usage: &s.node.usage,
        start: s.node.start_time,
        block: String::new(),
        starts: [0; 6],
    });
    for p in &s.pods {
        if let Some(u) = &p.usage {
            series.push(Series {
                container: "",
                id: &p.cgroup,
                image: "",
                name: "",
                namespace: &p.namespace,
                pod: &p.name,
                usage: u,
                start: p.start_time,
                block: String::new(),
                starts: [0; 6],
            });
        }
        for c in p.containers.iter().filter(|c| c.running) {
            series.push(Series {
                container: &c.name,
                id: &c.cgroup,
                image: &c.image,
                name: &c.id,
                namespace: &p.namespace,
                pod: &p.name,
                usage: &c.usage,
                start: c.start_time,
                block: String::new(),
                starts: [0; 6],
            });
        }
    }
    for x in &mut series {
        x.render_block();
    }
    let mut scratch = String::new();
    let mut e = encoder(256 + series.len() * 8500);

    e.family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Kind::Counter,
    );
    for x in &series {
        x.block_with(&[("cpu", "total")], &mut scratch);
        e.sample_block(
            &scratch,
            x.usage.cpu_usage_ns as f64 / 1e9,
            x.usage.timestamp,
        );
    }
    let stamped: [(&str, &str, Kind, Value); 13] = [
        (
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
            Kind::Counter,
            |u| ns(cpu(u)?.user_ns),
        ),
        (
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
            Kind::Counter,
            |u| ns(cpu(u)?.system_ns),
        ),
        (
            "container_cpu_cfs_periods_total",
            "Number of elapsed enforcement period intervals.",
            Kind::Counter,
            |u| cfs(u)?.cfs_periods.map(|n| n as f64),
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "Number of throttled period intervals.",
            Kind::Counter,
            // The store's count where it has one (fresher), else the details'.
            |u| {
                u.cpu_throttled_periods
                    .or_else(|| cfs(u)?.cfs_throttled_periods)
                    .map(|n| n as f64)
            },
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            "Total time duration the container has been throttled.",
            Kind::Counter,
            |u| ns(cfs(u)?.cfs_throttled_ns),
        ),
        (
            "container_memory_swap",
            "Container swap usage in bytes.",
            Kind::Gauge,
            |u| Some(mem(u)?.swap_bytes as f64),
        ),
        (
            "container_memory_mapped_file",
            "Size of memory mapped files in bytes.",
            Kind::Gauge,
            |u| Some(mem(u)?.mapped_file_bytes as f64),
        ),
        (
            "container_memory_failcnt",
            "Number of memory usage hits limits",
            Kind::Counter,
            |u| Some(mem(u)?.failcnt as f64),
        ),
        (
            "container_memory_max_usage_bytes",
            "Maximum memory usage recorded in bytes",
            Kind::Gauge,
            |u| Some(mem(u)?.max_usage_bytes as f64),
        ),
        (
            "container_memory_kernel_usage",
            "Size of kernel memory allocated in bytes.",
            Kind::Gauge,
            |u| Some(mem(u)?.kernel_bytes as f64),
        ),
        (
            "container_processes",
            "Number of processes running inside the container.",
            Kind::Gauge,
            |u| Some(procs(u)?.processes as f64),
        ),
        (
            "container_file_descriptors",
            "Number of open file descriptors for the container.",
            Kind::Gauge,
            |u| Some(procs(u)?.fds as f64),
        ),
        (
            "container_sockets",
            "Number of open sockets for the container.",
            Kind::Gauge,
            |u| Some(procs(u)?.sockets as f64),
        ),
    ];
    for f in stamped {
        family(&mut e, &series, f, true);
    }
    for f in [
        (
            "container_threads",
            "Number of threads running inside the container",
            Kind::Gauge,
            (|u| Some(procs(u)?.threads? as f64)) as Value,
        ),
        (
            "container_threads_max",
            "Maximum number of threads allowed inside the container, infinity if value is zero",
            Kind::Gauge,
            |u| Some(procs(u)?.threads_max? as f64),
        ),
    ] {
        family(&mut e, &series, f, true);
    }
    if series.iter().any(|x| mem(x.usage).is_some()) {
        e.family(
            "container_memory_failures_total",
            "Cumulative count of memory allocation failures.",
            Kind::Counter,
        );
        for x in &series {
            let Some(m) = mem(x.usage) else { continue };
            for (kind, scope, v) in [
                ("pgfault", "container", m.pgfault),
                ("pgmajfault", "container", m.pgmajfault),
                ("pgfault", "hierarchy", m.total_pgfault),
                ("pgmajfault", "hierarchy", m.total_pgmajfault),
            ] {
                x.block_with(&[("failure_type", kind), ("scope", scope)], &mut scratch);
                e.sample_block(&scratch, v as f64, x.usage.details_at);
            }
        }
    }
    render_network(&mut e, &series);
    render_pressure(&mut e, &series);
    fs::render(&mut e, &series, s);
    type Gauge = (&'static str, &'static str, fn(&Usage) -> f64);
    let gauges: [Gauge; 4] = [
        (
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            |u| u.memory_working_set_bytes as f64,
        ),
        (
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            |u| u.memory_usage_bytes as f64,
        ),
        ("container_memory_rss", "Size of RSS in bytes.", |u| {
            u.memory_rss_bytes as f64
        }),
        (
            "container_memory_cache",
            "Number of bytes of page cache memory.",
            |u| u.memory_cache_bytes as f64,
        ),
    ];
    for (name, help, f) in gauges {
        e.family(name, help, Kind::Gauge);
        for x in &series {
            e.sample_block(&x.block, f(x.usage), x.usage.timestamp);
        }
    }
    e.family(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        Kind::Counter,
    );
    for x in &series {
        e.sample_block(&x.block, x.usage.oom_events as f64, x.usage.timestamp);
    }
    e.family(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        Kind::Gauge,
    );
    for x in &series {
        // cAdvisor reports 0 for "no limit".
        e.sample_block(
            &x.block,
            x.usage.memory_limit_bytes.unwrap_or(0) as f64,
            None,
        );
    }
    // The spec (cAdvisor's containerSpec metrics): no sample time.
    for f in [
        (
            "container_spec_memory_reservation_limit_bytes",
            "Memory reservation limit for the container.",
            Kind::Gauge,
            (|u| Some(mem(u)?.reservation_bytes as f64)) as Value,
        ),
        (
            "container_spec_memory_swap_limit_bytes",
            "Memory swap limit for the container.",
            Kind::Gauge,
            |u| Some(mem(u)?.swap_limit_bytes as f64),
        ),
        (
            "container_spec_cpu_period",
            "CPU period of the container.",
            Kind::Gauge,
            |u| Some(cpu(u)?.period_us as f64),
        ),
        (
            "container_spec_cpu_quota",
            "CPU quota of the container.",
            Kind::Gauge,
            |u| Some(cfs(u)?.quota_us as f64),
        ),
        (
            "container_spec_cpu_shares",
            "CPU share of the container.",
            Kind::Gauge,
            |u| Some(cpu(u)?.shares as f64),
        ),
    ] {
        family(&mut e, &series, f, false);
    }
    // cAdvisor's `sched` group (off in the kubelet's embedded cAdvisor, which polls
    // /proc/<pid>/schedstat for it); the eBPF source has it for free. Since agent start.
    type Sched = (&'static str, &'static str, fn(&Usage) -> Option<f64>);
    let sched: [Sched; 3] = [
        (
            "container_cpu_schedstat_run_seconds_total",
            "Time duration the processes of the container have run on the CPU.",
            |u| u.cpu_run_periods.map(|_| u.cpu_usage_ns as f64 / 1e9),
        ),
        (
            "container_cpu_schedstat_runqueue_seconds_total",
            "Time duration processes of the container have been waiting on a runqueue.",
            |u| u.cpu_run_queue_ns.map(|ns| ns as f64 / 1e9),
        ),
        (
            "container_cpu_schedstat_run_periods_total",
            "Number of times processes of the cgroup have run on the cpu",
            |u| u.cpu_run_periods.map(|n| n as f64),
        ),
    ];
    for (name, help, f) in sched {
        if series.iter().all(|x| f(x.usage).is_none()) {
            continue;
        }
        e.family(name, help, Kind::Counter);
        for x in &series {
            if let Some(v) = f(x.usage) {
                e.sample_block(&x.block, v, x.usage.timestamp);
            }
        }
    }
    e.family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        Kind::Gauge,
    );
    for x in &series {
        if let Some(t) = x.start {
            e.sample_block(&x.block, unix_secs(t), None);
        }
    }
    e.family(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        Kind::Gauge,
    );
    let seen = unix_secs(now).trunc();
    for x in &series {
        e.sample_block(&x.block, seen, Some(now));
    }
    e.family(
        "container_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
    );
    e.sample(&[], f64::from(u8::from(s.container_scrape_error)), None);

    let n = &s.node;
    let machine = [
        ("boot_id", n.boot_id.as_str()),
        ("machine_id", n.machine_id.as_str()),
        ("system_uuid", n.system_uuid.as_str()),
    ];
    e.family(
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        Kind::Gauge,
    );
    e.sample(&machine, f64::from(n.cpu_cores), None);
    e.family(
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        Kind::Gauge,
    );
    e.sample(&machine, n.memory_capacity_bytes as f64, None);
    e.family(
        "machine_scrape_error",
        "1 if there was an error while getting machine metrics, 0 otherwise.",
        Kind::Gauge,
    );
    let machine_error = n.cpu_cores == 0 || n.memory_capacity_bytes == 0;
    e.sample(&[], f64::from(u8::from(machine_error)), None);
    e.finish()
}

fn pressure(u: &Usage) -> Option<crate::stats::psi::Pressure> {
    u.details?.pressure
}

/// µs (the kernel's PSI totals) as seconds, cAdvisor's asMicrosecondsToSeconds.
fn us(v: u64) -> Option<f64> {
    Some(v as f64 / 1e6)
}

/// cAdvisor's PSI families (PressureMetrics, which the kubelet enables with KubeletPSI):
/// `waiting` is the kernel's `some` total, `stalled` its `full` total.
fn render_pressure(e: &mut Encoder, series: &[Series]) {
    let families: [(&str, &str, Kind, Value); 6] = [
        (
            "container_pressure_cpu_stalled_seconds_total",
            "Total time duration no tasks in the container could make progress due to CPU congestion.",
            Kind::Counter,
            |u| us(pressure(u)?.cpu?.full.total_us),
        ),
        (
            "container_pressure_cpu_waiting_seconds_total",
            "Total time duration tasks in the container have waited due to CPU congestion.",
            Kind::Counter,
            |u| us(pressure(u)?.cpu?.some.total_us),
        ),
        (
            "container_pressure_memory_stalled_seconds_total",
            "Total time duration no tasks in the container could make progress due to memory congestion.",
            Kind::Counter,
            |u| us(pressure(u)?.memory?.full.total_us),
        ),
        (
            "container_pressure_memory_waiting_seconds_total",
            "Total time duration tasks in the container have waited due to memory congestion.",
            Kind::Counter,
            |u| us(pressure(u)?.memory?.some.total_us),
        ),
        (
            "container_pressure_io_stalled_seconds_total",
            "Total time duration no tasks in the container could make progress due to IO congestion.",
            Kind::Counter,
            |u| us(pressure(u)?.io?.full.total_us),
        ),
        (
            "container_pressure_io_waiting_seconds_total",
            "Total time duration tasks in the container have waited due to IO congestion.",
            Kind::Counter,
            |u| us(pressure(u)?.io?.some.total_us),
        ),
    ];
    for f in families {
        family(e, series, f, true);
    }
}

/// cAdvisor's network families, one series per interface of the pod's namespace (on the
/// pod-level series; dashboards sum them by namespace and pod).
fn render_network(e: &mut Encoder, series: &[Series]) {
    type Net = (&'static str, &'static str, fn(&Interface) -> u64);
    let nets: [Net; 8] = [
        (
            "container_network_receive_bytes_total",
            "Cumulative count of bytes received",
            |i| i.rx_bytes,
        ),
        (
            "container_network_receive_packets_total",
            "Cumulative count of packets received",
            |i| i.rx_packets,
        ),
        (
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
            |i| i.rx_dropped,
        ),
        (
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
            |i| i.rx_errors,
        ),
        (
            "container_network_transmit_bytes_total",
            "Cumulative count of bytes transmitted",
            |i| i.tx_bytes,
        ),
        (
            "container_network_transmit_packets_total",
            "Cumulative count of packets transmitted",
            |i| i.tx_packets,
        ),
        (
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
            |i| i.tx_dropped,
        ),
        (
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
            |i| i.tx_errors,
        ),
    ];
    if series.iter().all(|x| x.usage.network.is_none()) {
        return;
    }
    let mut scratch = String::new();
    for (name, help, f) in nets {
        e.family(name, help, Kind::Counter);
        for x in series {
            for i in x.usage.network.iter().flat_map(|n| n.iter()) {
                x.block_with(&[("interface", &i.name)], &mut scratch);
                e.sample_block(&scratch, f(i) as f64, x.usage.details_at);
            }
        }
    }
}

/// Seconds since the epoch, as a float.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_blocks_equal_the_labels_rendered_in_name_order() {
        let usage = Usage::default();
        let mut x = Series {
            container: "c,\"1\"",
            id: "/kubepods/pod1/abc",
            image: "",
            name: "id\\x",
            namespace: "ns",
            pod: "p\n",
            usage: &usage,
            start: None,
            block: String::new(),
            starts: [0; 6],
        };
        x.render_block();
        let base = [
            ("container", x.container),
            ("id", x.id),
            ("image", x.image),
            ("name", x.name),
            ("namespace", x.namespace),
            ("pod", x.pod),
        ];
        assert_eq!(x.block, super::super::expo::label_block(&base));
        let mut out = String::new();
        for extra in [
            &[][..],
            &[("cpu", "total")][..],
            &[("failure_type", "pgfault"), ("scope", "container")][..],
            &[("interface", "eth\"0")][..],
            &[("a", "first"), ("zz", "last")][..],
        ] {
            let mut all: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            all.sort_by_key(|(k, _)| *k);
            x.block_with(extra, &mut out);
            assert_eq!(out, super::super::expo::label_block(&all), "{extra:?}");
        }
    }
    use crate::stats::summary::tests::stub;

    #[test]
    fn containers_carry_the_cadvisor_label_set_and_pods_an_empty_container() {
        let t = render(Format::Text, &stub(2));
        assert!(t.contains("container_cpu_usage_seconds_total{container=\"c\",cpu=\"total\",id=\"/kubepods/besteffort/poduid-1/"), "{t}");
        assert!(t.contains("container_memory_working_set_bytes{container=\"\",id=\"/kubepods/besteffort/poduid-0\",image=\"\",name=\"\",namespace=\"default\",pod=\"p0\"} 4096 1800000000000\n"), "{t}");
        assert!(t.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(
            t.contains("machine_cpu_cores{boot_id=\"\",machine_id=\"\",system_uuid=\"\"} 2\n"),
            "{t}"
        );
        // No scheduler statistics in the stub: no such series.
        assert!(
            !t.contains("# TYPE container_cpu_schedstat_run_seconds_total"),
            "{t}"
        );
    }

    #[test]
    fn throttling_and_scheduler_statistics_appear_where_known() {
        let mut s = stub(1);
        let u = &mut s.pods[0].containers[0].usage;
        u.cpu_throttled_periods = Some(7);
        u.cpu_run_queue_ns = Some(2_500_000_000);
        u.cpu_run_periods = Some(42);
        let t = render(Format::Text, &s);
        let line = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(name) && l.contains("container=\"c\""))
                .map(|l| l.split(' ').nth(1).unwrap_or_default().to_owned())
        };
        assert_eq!(
            line("container_cpu_cfs_throttled_periods_total{").as_deref(),
            Some("7")
        );
        assert_eq!(
            line("container_cpu_schedstat_runqueue_seconds_total{").as_deref(),
            Some("2.5")
        );
        assert_eq!(
            line("container_cpu_schedstat_run_periods_total{").as_deref(),
            Some("42")
        );
        assert!(t.contains("# TYPE container_cpu_schedstat_run_seconds_total counter\n"));
    }

    #[test]
    fn details_families_follow_cadvisor_labels_types_and_conditions() {
        use crate::stats::details::{CgroupDetails, CpuDetails, MemoryDetails, ProcessDetails};
        let mut s = stub(1);
        s.node.usage.details = None;
        let at = s.node.usage.timestamp;
        let d = |quota_us| CgroupDetails {
            cpu: Some(CpuDetails {
                user_ns: Some(2_000_000_000),
                system_ns: Some(500_000_000),
                cfs_periods: Some(100),
                cfs_throttled_periods: Some(10),
                cfs_throttled_ns: Some(1_500_000_000),
                period_us: 100_000,
                quota_us,
                shares: 102,
                ..Default::default()
            }),
            memory: Some(MemoryDetails {
                swap_bytes: 4096,
                pgfault: 5,
                total_pgfault: 50,
                reservation_bytes: 1 << 20,
                ..Default::default()
            }),
            processes: Some(ProcessDetails {
                processes: 2,
                threads: Some(3),
                fds: 9,
                sockets: 1,
                ..Default::default()
            }),
            created: None,
            pressure: None,
        };
        s.pods[0].containers[0].usage.details = Some(d(20_000));
        s.pods[0].containers[0].usage.details_at = at;
        // The pod has no quota: no CFS series, but its spec and user/system times.
        let pod_usage = s.pods[0].usage.as_mut().expect("pod usage");
        pod_usage.details = Some(d(0));
        pod_usage.details_at = at;
        pod_usage.network = Some(
            vec![crate::stats::network::Interface {
                name: "eth0".into(),
                tx_packets: 7,
                ..Default::default()
            }]
            .into(),
        );
        s.node.boot_id = "b".into();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
        let t = render_at(Format::Text, &s, now);
        let c = "container=\"c\",id=\"/kubepods/besteffort/poduid-0/";
        let has = |l: &str| assert!(t.contains(l), "{l} in\n{t}");
        has("# TYPE container_cpu_cfs_periods_total counter\n");
        has(&format!("container_cpu_cfs_periods_total{{{c}"));
        has("container_cpu_cfs_throttled_seconds_total{container=\"c\"");
        has("container_spec_cpu_quota{container=\"c\"");
        has("container_memory_failures_total{container=\"c\",failure_type=\"pgfault\",id=");
        has("namespace=\"default\",pod=\"p0\",scope=\"hierarchy\"} 50 1800000000000\n");
        has("# TYPE container_memory_failcnt counter\n");
        has("# TYPE container_memory_swap gauge\n");
        has(
            "container_last_seen{container=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"} 1900000000 1900000000000\n",
        );
        has("container_scrape_error 0\n");
        has("# TYPE container_network_transmit_packets_total counter\n");
        has(
            "container_network_transmit_packets_total{container=\"\",id=\"/kubepods/besteffort/poduid-0\",image=\"\",interface=\"eth0\",name=\"\",namespace=\"default\",pod=\"p0\"} 7 1800000000000\n",
        );
        has("machine_memory_bytes{boot_id=\"b\",machine_id=\"\",system_uuid=\"\"} 4294967296\n");
        has("machine_scrape_error 0\n");
        let pod = "id=\"/kubepods/besteffort/poduid-0\"";
        let lines = |name: &str| {
            t.lines()
                .filter(|l| l.starts_with(name) && l.contains(pod))
                .count()
        };
        assert_eq!(
            lines("container_cpu_cfs_periods_total{"),
            0,
            "no quota, no CFS"
        );
        assert_eq!(lines("container_spec_cpu_quota{"), 0);
        assert_eq!(lines("container_spec_cpu_shares{"), 1);
        assert_eq!(lines("container_cpu_user_seconds_total{"), 1);
        // Spec series carry no timestamp; the root has no details here, so no spec series.
        assert!(
            t.contains("container_spec_cpu_period{container=\"c\"")
                && t.lines().any(
                    |l| l.starts_with("container_spec_cpu_period{container=\"c\"")
                        && l.ends_with("} 100000")
                ),
            "{t}"
        );
        assert!(!t.contains("container_spec_cpu_shares{container=\"\",id=\"/\""));
    }
}
