//! `NODELET_TELEMETRY_DUMP`: the view as JSON, written atomically after each snapshot.

use super::*;

pub(super) fn memory_json(m: &Option<MemoryStats>) -> serde_json::Value {
    match m {
        None => serde_json::Value::Null,
        Some(m) => serde_json::json!({
            "usage_bytes": m.usage_bytes,
            "working_set_bytes": m.working_set_bytes,
            "rss_bytes": m.rss_bytes,
            "cache_bytes": m.cache_bytes,
            "pgfault": m.pgfault,
            "pgmajfault": m.pgmajfault,
            "limit_bytes": m.limit_bytes,
        }),
    }
}

pub(super) fn pod_json(p: &PodRef) -> serde_json::Value {
    serde_json::json!({ "namespace": p.namespace, "name": p.name, "uid": p.uid })
}

/// The view as JSON (the dump's format; not an API).
pub(super) fn dump_json(
    view: &PodStatsView,
    marks: &std::collections::VecDeque<MarkSeen>,
) -> serde_json::Value {
    let snap = view.snapshot();
    let c = snap.counters;
    let (now_sys, now_mono) = (SystemTime::now(), monotonic_ns());
    let containers: Vec<_> = view
        .containers()
        .iter()
        .map(|s| {
            serde_json::json!({
                "pod": pod_json(&s.pod),
                "container": s.container,
                "id": s.id,
                "cgroup": s.cgroup,
                "cpu_usage_ns": s.cpu.map(|c| c.usage_ns),
                "cpu_throttled_periods": s.cpu.and_then(|c| c.throttled_periods),
                "run_queue_wait_ns": s.cpu.and_then(|c| c.run_queue_wait_ns),
                "memory": memory_json(&s.memory),
                "oom_kills": s.oom_kills,
            })
        })
        .collect();
    let pods: Vec<_> = view
        .pod_totals()
        .iter()
        .map(|s| {
            serde_json::json!({
                "pod": pod_json(&s.pod),
                "cgroup": s.cgroup,
                "cpu_usage_ns": s.cpu.map(|c| c.usage_ns),
                "memory": memory_json(&s.memory),
                "oom_kills": s.oom_kills,
            })
        })
        .collect();
    let ooms: Vec<_> = view
        .recent_ooms()
        .iter()
        .map(|k| {
            // kernel -> store latency: both ends brought to "now" on their own clocks.
            let store_latency_ns = k.event.kernel_ts_ns.map(|kts| {
                let since_seen = now_sys
                    .duration_since(k.event.seen_at)
                    .map_or(0, |d| d.as_nanos() as i128);
                now_mono as i128 - kts as i128 - since_seen
            });
            serde_json::json!({
                "pod": k.pod.as_ref().map(pod_json),
                "container": k.container,
                "id": k.id,
                "cgroup": k.event.cgroup,
                "pid": k.event.pid,
                "comm": k.event.comm,
                "kernel_ts_ns": k.event.kernel_ts_ns,
                "seen_at_unix_ns": unix_ns(k.event.seen_at),
                "store_latency_ns": store_latency_ns,
            })
        })
        .collect();
    let marks: Vec<_> = marks
        .iter()
        .map(|m| {
            serde_json::json!({
                "cgroup": m.cgroup,
                "rising": m.rising,
                "bytes": m.bytes,
                "kernel_ts_ns": m.kernel_ts_ns,
                "latency_ns": m.received_mono_ns.saturating_sub(m.kernel_ts_ns),
            })
        })
        .collect();
    let node = view.node();
    serde_json::json!({
        "marks": marks,
        "source": snap.source.as_str(),
        "taken_at_unix_ns": snap.taken_at.map(unix_ns),
        "node": {
            "cpu_usage_ns": node.cpu_usage_ns,
            "memory_working_set_bytes": node.memory_working_set_bytes,
        },
        "containers": containers,
        "pods": pods,
        "ooms": ooms,
        "counters": {
            "records_read": c.records_read,
            "records_produced": c.records_produced,
            "ring_full": c.ring_full,
            "malformed": c.malformed,
            "map_full": c.map_full,
            "memory_drift_bytes": c.memory_drift_bytes,
            "cpu_drift_ns": c.cpu_drift_ns,
            "rebaseline_interval_s": c.rebaseline_interval_s,
            "baseline_passes": c.baseline_passes,
            "baseline_cpu_ns": c.baseline_cpu_ns,
            "unresolved_ids": c.unresolved_ids,
            "events_dropped": c.events_dropped,
            "sweeps": c.sweeps,
        },
    })
}

pub(super) fn write_dump(
    file: &std::path::Path,
    view: &PodStatsView,
    marks: &std::collections::VecDeque<MarkSeen>,
) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(&dump_json(view, marks)).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}
