//! The agent's own Prometheus metrics with the kubelet's names, types and labels
//! (kubelet pkg/kubelet/metrics), plus the cAdvisor (`/metrics/cadvisor`) and resource
//! (`/metrics/resource`, pkg/kubelet/metrics/collectors/resource_metrics.go) views rendered from
//! a [`crate::server::stats::StatsSource`] snapshot.
//!
//! Observations come from one-line hooks in the CRI client and the PLEG relist, which hold the
//! same [`AgentMetrics`] handle main.rs hands to the server (atomics and short mutexes only);
//! everything derived from state (running pods, containers) is computed at scrape time from the
//! stores.

pub mod cadvisor;
pub mod expo;
pub mod resource;

use crate::status::{PodStatuses, StatusStore};
use expo::{Encoder, Format, Kind};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// kubelet runtime_operations_duration_seconds: ExponentialBuckets(.005, 2.5, 14).
fn runtime_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.005 * 2.5f64.powi(i)).collect()
}

/// client_golang DefBuckets (kubelet_pleg_relist_duration_seconds).
const DEF_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// kubelet_pod_start_duration_seconds buckets (pkg/kubelet/metrics).
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// A fixed-bucket histogram (non-cumulative counts, made cumulative when encoded).
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in nanoseconds (all our histograms observe durations).
    sum_ns: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
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
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn encode(&self, e: &mut Encoder, labels: &[(&str, &str)]) {
        let mut acc = 0;
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        // Read the count last and never below the buckets, so the series stays consistent.
        let count = self.count.load(Ordering::Relaxed).max(acc);
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        e.histogram(labels, &buckets, sum, count);
    }
}

/// The recorder the hooks write to.
#[derive(Debug)]
pub struct AgentMetrics {
    runtime_ops: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    runtime_errors: Mutex<BTreeMap<&'static str, u64>>,
    relist: Histogram,
    pod_start: Histogram,
    evictions: Mutex<BTreeMap<String, u64>>,
}

impl AgentMetrics {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            runtime_ops: Mutex::default(),
            runtime_errors: Mutex::default(),
            relist: Histogram::new(DEF_BUCKETS),
            pod_start: Histogram::new(POD_START_BUCKETS),
            evictions: Mutex::default(),
        }
    }

    /// Counts one eviction by signal (for the eviction manager, not written yet).
    #[allow(dead_code)]
    pub fn eviction(&self, signal: &str) {
        *self
            .evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(signal.to_string())
            .or_default() += 1;
    }

    /// Records one pod's start duration.
    pub fn pod_started(&self, d: Duration) {
        self.pod_start.observe(d);
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Hook for `Cri::run`: one CRI call took `elapsed`.
    pub fn runtime_op(&self, call: &'static str, elapsed: Duration, ok: bool) {
        let m = self;
        let op = operation_type(call);
        let h = m
            .runtime_ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_insert_with(|| std::sync::Arc::new(Histogram::new(&runtime_buckets())))
            .clone();
        h.observe(elapsed);
        if !ok {
            *m.runtime_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(op)
                .or_default() += 1;
        }
    }

    /// Hook for the PLEG relist: one relist took `elapsed`.
    pub fn relist(&self, elapsed: Duration) {
        self.relist.observe(elapsed);
    }
}

/// The kubelet's operation_type label for a CRI call (pkg/kubelet/kuberuntime instrumented_services.go).
fn operation_type(call: &'static str) -> &'static str {
    match call {
        "Version" => "version",
        "Status" => "status",
        "RunPodSandbox" => "run_podsandbox",
        "StopPodSandbox" => "stop_podsandbox",
        "RemovePodSandbox" => "remove_podsandbox",
        "PodSandboxStatus" => "podsandbox_status",
        "ListPodSandbox" => "list_podsandbox",
        "CreateContainer" => "create_container",
        "StartContainer" => "start_container",
        "StopContainer" => "stop_container",
        "RemoveContainer" => "remove_container",
        "ListContainers" => "list_containers",
        "ContainerStatus" => "container_status",
        "ExecSync" => "exec_sync",
        "Exec" => "exec",
        "Attach" => "attach",
        "PortForward" => "port_forward",
        "GetContainerEvents" => "get_container_events",
        "ImageStatus" => "image_status",
        "PullImage" => "pull_image",
        "ListImages" => "list_images",
        "RemoveImage" => "remove_image",
        "ContainerStats" => "container_stats",
        "ListContainerStats" => "list_container_stats",
        "PodSandboxStats" => "podsandbox_stats",
        "ListPodSandboxStats" => "list_podsandbox_stats",
        "ImageFsInfo" => "image_fs_info",
        other => other,
    }
}

/// Renders `/metrics`: the agent's own metrics from the recorder and the status store.
pub fn render_agent(
    m: &AgentMetrics,
    format: Format,
    node: &str,
    pods: &PodStatuses,
    telemetry: Option<crate::server::stats::TelemetryHealth>,
) -> String {
    let mut e = Encoder::new(format, 16 * 1024);
    e.family(
        "kubelet_node_name",
        "The node's name. The count is always 1.",
        Kind::Gauge,
    );
    e.sample(&[("node", node)], 1.0, None);

    let (running_pods, states) = count_running(pods);
    e.family(
        "kubelet_running_pods",
        "Number of pods that have a running pod sandbox",
        Kind::Gauge,
    );
    e.sample(&[], running_pods as f64, None);
    e.family(
        "kubelet_running_containers",
        "Number of containers currently running",
        Kind::Gauge,
    );
    for (state, n) in &states {
        e.sample(&[("container_state", state)], *n as f64, None);
    }

    e.family(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        Kind::Histogram,
    );
    m.pod_start.encode(&mut e, &[]);

    e.family(
        "kubelet_pleg_relist_duration_seconds",
        "Duration in seconds for relisting pods in PLEG.",
        Kind::Histogram,
    );
    m.relist.encode(&mut e, &[]);

    e.family(
        "kubelet_runtime_operations_duration_seconds",
        "Duration in seconds of runtime operations. Broken down by operation type.",
        Kind::Histogram,
    );
    let ops: Vec<_> = m
        .runtime_ops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    for (op, h) in &ops {
        h.encode(&mut e, &[("operation_type", op)]);
    }
    e.family(
        "kubelet_runtime_operations_errors_total",
        "Cumulative number of runtime operation errors by operation type.",
        Kind::Counter,
    );
    let errs = m
        .runtime_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (op, n) in &errs {
        e.sample(&[("operation_type", op)], *n as f64, None);
    }

    e.family(
        "kubelet_evictions",
        "Cumulative number of pod evictions by eviction signal",
        Kind::Counter,
    );
    let ev = m
        .evictions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (sig, n) in &ev {
        e.sample(&[("eviction_signal", sig)], *n as f64, None);
    }
    if let Some(t) = telemetry {
        render_telemetry(&mut e, &t);
    }
    e.finish()
}

/// nodelet's own telemetry families: which source feeds the stats, and the eBPF pipeline's
/// accounting (records read vs produced vs lost), the counterpart of aya's dropped counters.
fn render_telemetry(e: &mut Encoder, t: &crate::server::stats::TelemetryHealth) {
    e.family(
        "nodelet_telemetry_source",
        "Telemetry source in use (1 for the active one): ebpf, or the cgroupfs fallback.",
        Kind::Gauge,
    );
    for s in ["ebpf", "cgroupfs"] {
        e.sample(&[("source", s)], f64::from(u8::from(t.source == s)), None);
    }
    let c = &t.counters;
    for (name, help, v) in [
        (
            "nodelet_ebpf_records_total",
            "Ring-buffer records read by the agent.",
            c.records_read,
        ),
        (
            "nodelet_ebpf_records_produced_total",
            "Ring-buffer records the eBPF programs produced.",
            c.records_produced,
        ),
        (
            "nodelet_ebpf_lost_records_total",
            "Records the eBPF programs could not reserve (ring buffer full).",
            c.ring_full,
        ),
        (
            "nodelet_ebpf_malformed_records_total",
            "Records the agent could not parse.",
            c.malformed,
        ),
        (
            "nodelet_ebpf_map_full_total",
            "Updates refused because an eBPF map was full.",
            c.map_full,
        ),
        (
            "nodelet_telemetry_events_dropped_total",
            "Telemetry events dropped because the event channel was full.",
            c.events_dropped,
        ),
        (
            "nodelet_telemetry_sweeps_total",
            "Collector sweeps into the stats store.",
            c.sweeps,
        ),
        (
            "nodelet_telemetry_baseline_passes_total",
            "Passes that read every pod cgroup's files: the first sweep and each re-baseline.",
            c.baseline_passes,
        ),
    ] {
        e.family(name, help, Kind::Counter);
        e.sample(&[], v as f64, None);
    }
    e.family(
        "nodelet_telemetry_memory_drift_bytes",
        "Largest difference between traced memory usage and the cgroup file at the last re-baseline.",
        Kind::Gauge,
    );
    e.sample(&[], c.memory_drift_bytes as f64, None);
    e.family(
        "nodelet_telemetry_cpu_drift_seconds",
        "Largest difference between traced CPU usage and the cgroup file at the last re-baseline.",
        Kind::Gauge,
    );
    e.sample(&[], c.cpu_drift_ns as f64 / 1e9, None);
    e.family(
        "nodelet_telemetry_baseline_cpu_seconds_total",
        "CPU time the agent spent in passes that read every pod cgroup's files.",
        Kind::Counter,
    );
    e.sample(&[], c.baseline_cpu_ns as f64 / 1e9, None);
    e.family(
        "nodelet_telemetry_rebaseline_interval_seconds",
        "Time from the last re-baseline to the next; it doubles while drift stays small.",
        Kind::Gauge,
    );
    e.sample(&[], c.rebaseline_interval_s as f64, None);
    if t.programs.is_empty() {
        return;
    }
    e.family(
        "nodelet_ebpf_program_run_seconds_total",
        "Time the eBPF programs ran, as the kernel counts it while run-time statistics are on \
         (kernel.bpf_stats_enabled=1 or NODELET_BPF_STATS=1; 0 otherwise).",
        Kind::Counter,
    );
    for p in &t.programs {
        e.sample(&[("program", p.name)], p.run_ns as f64 / 1e9, None);
    }
    e.family(
        "nodelet_ebpf_program_runs_total",
        "Runs of the eBPF programs while run-time statistics are on.",
        Kind::Counter,
    );
    for p in &t.programs {
        e.sample(&[("program", p.name)], p.runs as f64, None);
    }
}

/// Running pods and containers by state, from pod status (the kubelet counts from its runtime
/// cache; our status is written from the same runtime state after every sync).
fn count_running(pods: &PodStatuses) -> (usize, BTreeMap<&'static str, usize>) {
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut running_pods = 0;
    for pod in pods.values() {
        let Some(st) = &pod.status else { continue };
        let cs = st.container_statuses.as_deref().unwrap_or_default();
        let mut any = false;
        for c in cs {
            let state = c.state.as_ref();
            let s = if state.is_some_and(|s| s.running.is_some()) {
                any = true;
                "running"
            } else if state.is_some_and(|s| s.terminated.is_some()) {
                "exited"
            } else if c.container_id.is_some() {
                "created"
            } else {
                continue;
            };
            *states.entry(s).or_default() += 1;
        }
        if any || st.phase.as_deref() == Some("Running") {
            running_pods += 1;
        }
    }
    (running_pods, states)
}

/// Observes kubelet_pod_start_duration_seconds: from the first time the status store shows a
/// pod to the first time all of its containers run (kubelet pod_startup_latency_tracker).
pub async fn track_pod_starts(
    metrics: std::sync::Arc<AgentMetrics>,
    mut store: StatusStore,
    cancel: CancellationToken,
) {
    let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
    let mut started: HashSet<String> = HashSet::new();
    loop {
        let pods = store.pods();
        for (uid, pod) in pods.iter() {
            if started.contains(uid) {
                continue;
            }
            let seen = *first_seen.entry(uid.clone()).or_insert_with(Instant::now);
            let cs = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default();
            let n_specs = pod.spec.as_ref().map_or(0, |s| s.containers.len());
            let running = cs
                .iter()
                .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                .count();
            if n_specs > 0 && running >= n_specs {
                metrics.pod_started(seen.elapsed());
                started.insert(uid.clone());
            }
        }
        first_seen.retain(|uid, _| pods.contains_key(uid));
        started.retain(|uid| pods.contains_key(uid));
        tokio::select! {
            _ = cancel.cancelled() => return,
            ok = store.changed() => if !ok { return },
        }
    }
}

/// Serving cost of the stats endpoints at 100 and 250 containers, printed as a table (issue 5
/// goal: < 10 ms at 250): time and heap allocations per request. Not a timing assert: run with
/// `cargo test --release -p agent -- --ignored --nocapture serving_cost`.
/// With NODELET_DUMP_METRICS=<dir>, the rendered expositions are written there (for promtool).
#[cfg(test)]
mod bench {
    use super::expo::Format;
    use crate::server::stats::{summary, tests::stub};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Instant;

    /// Counts the test binary's heap allocations (a relaxed add each: noise for other tests).
    struct Counting;

    static ALLOCS: AtomicU64 = AtomicU64::new(0);
    static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
            // SAFETY: same contract as ours.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Per request: (ms, allocations, bytes allocated).
    fn measure(iters: u32, mut f: impl FnMut()) -> (f64, f64, f64) {
        let (a0, b0) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(iters);
        let per = |now: u64, then: u64| (now - then) as f64 / f64::from(iters);
        (
            ms,
            per(ALLOCS.load(Relaxed), a0),
            per(ALLOC_BYTES.load(Relaxed), b0),
        )
    }

    #[test]
    #[ignore = "benchmark; run explicitly"]
    fn serving_cost() {
        println!(
            "| endpoint | containers | ms per request | allocations | KiB allocated | bytes out |"
        );
        println!("|---|---|---|---|---|---|");
        for n in [100, 250] {
            let s = stub(n);
            let mut bytes = 0;
            let row = |name: &str, (ms, allocs, alloc_bytes): (f64, f64, f64), bytes: usize| {
                println!(
                    "| {name} | {n} | {ms:.3} | {allocs:.0} | {:.0} | {bytes} |",
                    alloc_bytes / 1024.0
                );
            };
            let m = measure(50, || {
                let t = super::cadvisor::render(Format::Text, &s);
                bytes = t.len();
            });
            row("/metrics/cadvisor", m, bytes);
            let m = measure(50, || {
                let t = super::resource::render(Format::Text, &s);
                bytes = t.len();
            });
            row("/metrics/resource", m, bytes);
            let m = measure(50, || {
                let v = serde_json::to_vec(&summary("node", &s)).unwrap_or_default();
                bytes = v.len();
            });
            row("/stats/summary", m, bytes);
            if let Some(dir) = std::env::var_os("NODELET_DUMP_METRICS") {
                let dir = std::path::PathBuf::from(dir);
                for (name, f) in [
                    (
                        "cadvisor",
                        super::cadvisor::render as fn(Format, &_) -> String,
                    ),
                    ("resource", super::resource::render),
                ] {
                    for (fmt, ext) in [(Format::Text, "txt"), (Format::OpenMetrics, "om")] {
                        let _ = std::fs::write(dir.join(format!("{name}-{n}.{ext}")), f(fmt, &s));
                    }
                }
            }
        }
    }
}
