//! `/metrics/probes`: the kubelet's prober families (pkg/kubelet/prober/prober_manager.go):
//! `prober_probe_total{probe_type, result, container, pod, namespace, pod_uid}` and
//! `prober_probe_duration_seconds{probe_type, container, pod, namespace}`. The endpoint and its
//! families exist whether or not a pod has probes, as the kubelet serves them; the prober
//! records into a shared [`ProberStats`].

use super::expo::{Encoder, Format, Kind};
use crate::instrument::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[allow(dead_code)]
/// The prober's duration buckets (the kubelet's: prometheus.DefBuckets).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Which probe of which container: the kubelet's label values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProbeTarget {
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'static str,
    /// Container name.
    pub container: String,
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub pod_uid: String,
}

/// Probe counts by result and durations of successful probes, per probe.
#[derive(Debug, Default)]
pub struct ProberStats {
    results: Mutex<BTreeMap<(ProbeTarget, &'static str), u64>>,
    durations: Mutex<BTreeMap<ProbeTarget, Histogram>>,
}

// The prober (its own module, being written beside this) is the caller of record/forget.
#[allow(dead_code)]
impl ProberStats {
    /// Counts one probe of `target` with `result` (`successful`, `failed` or `unknown`), and
    /// its duration when it succeeded (the kubelet times successful probes only).
    pub fn record(&self, target: &ProbeTarget, result: &'static str, took: Duration) {
        {
            let mut r = self.results.lock().unwrap_or_else(|p| p.into_inner());
            *r.entry((target.clone(), result)).or_default() += 1;
        }
        if result == "successful" {
            let mut d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
            d.entry(target.clone())
                .or_insert_with(|| Histogram::new(BUCKETS))
                .observe(took);
        }
    }

    /// Forgets a probe whose worker stopped (the kubelet deletes its series).
    pub fn forget(&self, target: &ProbeTarget) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _), _| t != target);
        self.durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target);
    }
}

/// Renders `/metrics/probes`.
pub fn render(stats: &ProberStats, format: Format) -> String {
    let mut e = Encoder::new(format, 4 * 1024);
    e.family(
        "prober_probe_total",
        "Cumulative number of a liveness, readiness or startup probe for a container by result.",
        Kind::Counter,
    );
    for ((t, result), n) in stats
        .results
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        e.sample(
            &[
                ("probe_type", t.probe_type),
                ("result", result),
                ("container", &t.container),
                ("pod", &t.pod),
                ("namespace", &t.namespace),
                ("pod_uid", &t.pod_uid),
            ],
            *n as f64,
            None,
        );
    }
    e.family(
        "prober_probe_duration_seconds",
        "Duration in seconds for a probe response.",
        Kind::Histogram,
    );
    for (t, h) in stats
        .durations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        let h = h.read();
        e.histogram(
            &[
                ("probe_type", t.probe_type),
                ("container", &t.container),
                ("pod", &t.pod),
                ("namespace", &t.namespace),
            ],
            &h.buckets,
            h.sum,
            h.count,
        );
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_successful_durations_render_with_the_kubelets_labels() {
        let s = ProberStats::default();
        let t = ProbeTarget {
            probe_type: "Readiness",
            container: "c".into(),
            pod: "p".into(),
            namespace: "ns".into(),
            pod_uid: "u".into(),
        };
        s.record(&t, "successful", Duration::from_millis(3));
        s.record(&t, "failed", Duration::from_millis(3));
        let text = render(&s, Format::Text);
        assert!(text.contains(
            "prober_probe_total{probe_type=\"Readiness\",result=\"successful\",container=\"c\",pod=\"p\",namespace=\"ns\",pod_uid=\"u\"} 1"
        ), "{text}");
        assert!(text.contains("prober_probe_duration_seconds_count{probe_type=\"Readiness\",container=\"c\",pod=\"p\",namespace=\"ns\"} 1"), "{text}");
        s.forget(&t);
        assert!(!render(&s, Format::Text).contains("pod=\"p\""));
        // The families are there with nothing probed.
        assert!(text.contains("# TYPE prober_probe_total counter"));
    }
}
