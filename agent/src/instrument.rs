//! Counters and histograms that components own and `metrics/` renders ("pulled, not pushed
//! down"): the CRI client keeps its call statistics, PLEG its relist statistics, the status
//! manager its pod start durations. A component holds its own `Arc` of one of these and bumps
//! it; the metrics module reads them at scrape time. Nothing here knows about Prometheus text.
//! Kubelet counterpart: the component-base metrics each kubelet package registers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram of durations (non-cumulative counts; made cumulative when read).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in nanoseconds (every histogram here observes durations).
    sum_ns: AtomicU64,
}

/// A consistent read of a [`Histogram`]: cumulative buckets, sum in seconds, count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramRead {
    /// (upper bound, cumulative count) per bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The current buckets, sum and count.
    pub fn read(&self) -> HistogramRead {
        let mut acc = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        // Read the count last and never below the buckets, so the series stays consistent.
        HistogramRead {
            buckets,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed).max(acc),
        }
    }
}

/// client_golang DefBuckets (kubelet_pleg_relist_duration_seconds, pod worker durations).
pub const DEF_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A family of histograms keyed by one label value (e.g. the CRI operation type).
#[derive(Debug)]
pub struct HistogramVec {
    bounds: &'static [f64],
    by_label: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
}

impl HistogramVec {
    /// An empty family with these bucket bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            by_label: Mutex::default(),
        }
    }

    /// Records one duration under `label`.
    pub fn observe(&self, label: &'static str, d: Duration) {
        let h = self
            .by_label
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label)
            .or_insert_with(|| std::sync::Arc::new(Histogram::new(self.bounds)))
            .clone();
        h.observe(d);
    }

    /// Every label's histogram, in label order.
    pub fn read(&self) -> Vec<(&'static str, HistogramRead)> {
        let all: Vec<_> = self
            .by_label
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        all.into_iter().map(|(k, h)| (k, h.read())).collect()
    }
}

/// Counters keyed by one label value.
#[derive(Debug, Default)]
pub struct CounterVec {
    by_label: Mutex<BTreeMap<String, u64>>,
}

impl CounterVec {
    /// Adds one under `label`.
    pub fn inc(&self, label: &str) {
        let mut m = self.by_label.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(label) {
            Some(n) => *n += 1,
            None => {
                m.insert(label.to_owned(), 1);
            }
        }
    }

    /// Every label's count, in label order.
    pub fn read(&self) -> Vec<(String, u64)> {
        self.by_label
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let r = h.read();
        assert_eq!(r.buckets, vec![(0.1, 1), (1.0, 2)]);
        assert_eq!(r.count, 3);
        assert!((r.sum - 5.55).abs() < 1e-9);
    }

    #[test]
    fn counter_vec_counts_per_label() {
        let c = CounterVec::default();
        c.inc("a");
        c.inc("a");
        c.inc("b");
        assert_eq!(c.read(), vec![("a".into(), 2), ("b".into(), 1)]);
    }
}
