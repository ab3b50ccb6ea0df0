//! `/metrics/cadvisor`: the series the kubelet's embedded cAdvisor exposes for containers
//! (cadvisor metrics/prometheus.go), with its label set: container, id, image, name, namespace,
//! pod (and cpu on the CPU counter). Pod-level cgroups appear with container="", name="",
//! image=""; the root cgroup "/" carries the node's numbers.

use super::expo::{Encoder, Format, Kind};
use crate::stats::summary::{StatsSnapshot, Usage};
use std::time::SystemTime;

struct Series<'a> {
    container: &'a str,
    id: &'a str,
    image: &'a str,
    name: &'a str,
    namespace: &'a str,
    pod: &'a str,
    usage: &'a Usage,
    start: Option<SystemTime>,
}

impl Series<'_> {
    fn labels(&self) -> [(&str, &str); 6] {
        [
            ("container", self.container),
            ("id", self.id),
            ("image", self.image),
            ("name", self.name),
            ("namespace", self.namespace),
            ("pod", self.pod),
        ]
    }
}

/// Renders the cAdvisor view of a snapshot.
pub fn render(format: Format, s: &StatsSnapshot) -> String {
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
            });
        }
    }
    let mut e = Encoder::new(format, 256 + series.len() * 1800);

    e.family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Kind::Counter,
    );
    for x in &series {
        let l = x.labels();
        let labels = [l[0], ("cpu", "total"), l[1], l[2], l[3], l[4], l[5]];
        e.sample(
            &labels,
            x.usage.cpu_usage_ns as f64 / 1e9,
            x.usage.timestamp,
        );
    }
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
            e.sample(&x.labels(), f(x.usage), x.usage.timestamp);
        }
    }
    e.family(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        Kind::Counter,
    );
    for x in &series {
        e.sample(&x.labels(), x.usage.oom_events as f64, x.usage.timestamp);
    }
    e.family(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        Kind::Gauge,
    );
    for x in &series {
        // cAdvisor reports 0 for "no limit".
        e.sample(
            &x.labels(),
            x.usage.memory_limit_bytes.unwrap_or(0) as f64,
            None,
        );
    }
    e.family(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        Kind::Counter,
    );
    for x in &series {
        if let Some(n) = x.usage.cpu_throttled_periods {
            e.sample(&x.labels(), n as f64, x.usage.timestamp);
        }
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
                e.sample(&x.labels(), v, x.usage.timestamp);
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
            e.sample(&x.labels(), unix_secs(t), None);
        }
    }
    e.family(
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        Kind::Gauge,
    );
    e.sample(&[], f64::from(s.node.cpu_cores), None);
    e.family(
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        Kind::Gauge,
    );
    e.sample(&[], s.node.memory_capacity_bytes as f64, None);
    e.finish()
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
    use crate::stats::summary::tests::stub;

    #[test]
    fn containers_carry_the_cadvisor_label_set_and_pods_an_empty_container() {
        let t = render(Format::Text, &stub(2));
        assert!(t.contains("container_cpu_usage_seconds_total{container=\"c\",cpu=\"total\",id=\"/kubepods/besteffort/poduid-1/"), "{t}");
        assert!(t.contains("container_memory_working_set_bytes{container=\"\",id=\"/kubepods/besteffort/poduid-0\",image=\"\",name=\"\",namespace=\"default\",pod=\"p0\"} 4096 1800000000000\n"), "{t}");
        assert!(t.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(t.contains("machine_cpu_cores 2\n"));
        // No limit and no scheduler statistics in the stub: no such series.
        assert!(
            !t.contains("container_cpu_cfs_throttled_periods_total{"),
            "{t}"
        );
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
}
