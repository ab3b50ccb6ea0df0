//! `/metrics/probes` (kubelet pkg/kubelet/server, proberMetricsPath): the probe workers'
//! `prober_probe_total` and `prober_probe_duration_seconds` (pkg/kubelet/prober/prober_manager.go).

use super::expo::{Encoder, Format, Kind};
use crate::prober::ProberStats;

/// Renders the prober's families.
pub fn render(format: Format, stats: &ProberStats) -> String {
    let series = stats.read();
    let mut e = Encoder::new(format, 512 + series.len() * 1200);
    e.family(
        "prober_probe_total",
        "[BETA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
        Kind::Counter,
    );
    for ((t, ns, pod, uid, container), s) in &series {
        let (ok, failed, unknown) = s.counts;
        for (result, n) in [("successful", ok), ("failed", failed), ("unknown", unknown)] {
            if n == 0 {
                // The kubelet's counter for a result appears with its first probe.
                continue;
            }
            let labels = [
                ("container", container.as_str()),
                ("namespace", ns.as_str()),
                ("pod", pod.as_str()),
                ("pod_uid", uid.as_str()),
                ("probe_type", t.as_str()),
                ("result", result),
            ];
            e.sample(&labels, n as f64, None);
        }
    }
    e.family(
        "prober_probe_duration_seconds",
        "[ALPHA] Duration in seconds for a probe response.",
        Kind::Histogram,
    );
    for ((t, ns, pod, _, container), s) in &series {
        if s.duration.count == 0 {
            continue;
        }
        let labels = [
            ("container", container.as_str()),
            ("namespace", ns.as_str()),
            ("pod", pod.as_str()),
            ("probe_type", t.as_str()),
        ];
        let h = &s.duration;
        e.histogram(&labels, &h.buckets, h.sum, h.count);
    }
    e.finish()
}
