//! `/metrics/resource`: what metrics-server parses (kubelet
//! pkg/kubelet/metrics/collectors/resource_metrics.go). CPU and memory samples carry the time
//! they were taken; a running container or pod with a zero CPU or memory number is left out,
//! because metrics-server drops the whole pod when it sees one.

use super::cadvisor::unix_secs;
use super::expo::{Encoder, Format, Kind};
use crate::stats::summary::{StatsSnapshot, Usage};

fn usable(u: &Usage) -> bool {
    u.cpu_usage_ns > 0 && u.memory_working_set_bytes > 0 && u.timestamp.is_some()
}

/// Renders the resource metrics of a snapshot.
pub fn render(format: Format, s: &StatsSnapshot) -> String {
    let mut e = Encoder::new(format, 1024 + s.pods.len() * 900);
    let node = &s.node.usage;
    let node_ok = usable(node);
    e.family(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        Kind::Counter,
    );
    if node_ok {
        e.sample(&[], node.cpu_usage_ns as f64 / 1e9, node.timestamp);
    }
    e.family(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        Kind::Gauge,
    );
    if node_ok {
        e.sample(&[], node.memory_working_set_bytes as f64, node.timestamp);
    }

    let containers: Vec<_> = s
        .pods
        .iter()
        .flat_map(|p| {
            p.containers
                .iter()
                .filter(|c| c.running && usable(&c.usage))
                .map(move |c| (p, c))
        })
        .collect();
    e.family(
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        Kind::Counter,
    );
    for (p, c) in &containers {
        let l = [
            ("container", c.name.as_str()),
            ("namespace", &p.namespace),
            ("pod", &p.name),
        ];
        e.sample(&l, c.usage.cpu_usage_ns as f64 / 1e9, c.usage.timestamp);
    }
    e.family(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        Kind::Gauge,
    );
    for (p, c) in &containers {
        let l = [
            ("container", c.name.as_str()),
            ("namespace", &p.namespace),
            ("pod", &p.name),
        ];
        e.sample(
            &l,
            c.usage.memory_working_set_bytes as f64,
            c.usage.timestamp,
        );
    }
    e.family(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        Kind::Gauge,
    );
    for (p, c) in &containers {
        if let Some(t) = c.start_time {
            let l = [
                ("container", c.name.as_str()),
                ("namespace", &p.namespace),
                ("pod", &p.name),
            ];
            e.sample(&l, unix_secs(t), c.usage.timestamp);
        }
    }

    let pods: Vec<_> = s
        .pods
        .iter()
        .filter_map(|p| p.usage.as_ref().filter(|u| usable(u)).map(|u| (p, u)))
        .collect();
    e.family(
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        Kind::Counter,
    );
    for (p, u) in &pods {
        let l = [("namespace", p.namespace.as_str()), ("pod", &p.name)];
        e.sample(&l, u.cpu_usage_ns as f64 / 1e9, u.timestamp);
    }
    e.family(
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        Kind::Gauge,
    );
    for (p, u) in &pods {
        let l = [("namespace", p.namespace.as_str()), ("pod", &p.name)];
        e.sample(&l, u.memory_working_set_bytes as f64, u.timestamp);
    }
    e.family(
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
    );
    e.sample(&[], if node_ok { 0.0 } else { 1.0 }, None);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::tests::stub;

    #[test]
    fn zero_usage_containers_are_left_out_and_samples_have_timestamps() {
        let mut s = stub(2);
        s.pods[0].containers[0].usage.cpu_usage_ns = 0;
        let t = render(Format::Text, &s);
        assert!(
            !t.contains("pod=\"p0\",")
                && !t.contains("container=\"c\",namespace=\"default\",pod=\"p0\""),
            "{t}"
        );
        assert!(t.contains("container_memory_working_set_bytes{container=\"c\",namespace=\"default\",pod=\"p1\"} 8192 1800000000000\n"), "{t}");
        assert!(t.contains("resource_scrape_error 0\n"));
        assert!(
            t.contains("node_cpu_usage_seconds_total 0.001 1800000000000\n"),
            "{t}"
        );
    }
}
