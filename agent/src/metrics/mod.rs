//! The agent's own Prometheus metrics with the kubelet's names, types and labels
//! (kubelet pkg/kubelet/metrics), plus the cAdvisor (`/metrics/cadvisor`) and resource
//! (`/metrics/resource`, pkg/kubelet/metrics/collectors/resource_metrics.go) views rendered from
//! a [`crate::stats::summary::StatsSource`] snapshot.
//!
//! Pulled, not pushed: each component owns its statistics ([`AgentSources`]: the CRI client's
//! call counts, PLEG's relists, the status manager's pod starts, the bus's lags) and this
//! module only reads them at scrape time; state-derived families (running pods, containers)
//! are computed from the status store.

pub mod cadvisor;
pub mod expo;
pub mod probes;
pub mod process;
pub mod resource;

use crate::events::Bus;
use crate::instrument::HistogramRead;
use crate::kuberuntime::client::RuntimeOpStats;
use crate::pleg::PlegStats;
use crate::pod_workers::PodWorkerStats;
use crate::stats::summary::TelemetryHealth;
use crate::status::{PodStatuses, StatusStats};
use expo::{Encoder, Format, Kind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Every component statistic `/metrics` shows, each owned by its component.
#[derive(Debug, Clone)]
pub struct AgentSources {
    /// The CRI client's call statistics (all its clones share them).
    pub runtime_ops: Arc<RuntimeOpStats>,
    /// PLEG's relist statistics.
    pub pleg: Arc<PlegStats>,
    /// The status manager's pod start durations.
    pub status: Arc<StatusStats>,
    /// The pod workers' sync durations.
    pub pod_workers: Arc<PodWorkerStats>,
    /// The event bus (lags per subscriber).
    pub bus: Bus,
    /// The eviction manager's counts (`None` when it does not run).
    pub eviction: Option<Arc<crate::eviction::EvictionStats>>,
    /// The probe workers' counts and durations (`/metrics/probes`).
    pub probes: Arc<crate::prober::ProberStats>,
    /// The container manager's cgroup operation durations, by operation type.
    pub cgroup_manager: Arc<crate::instrument::HistogramVec>,
    /// The volume manager's operation durations and world sizes.
    pub volumes: Arc<crate::volumemanager::metrics::VolumeMetrics>,
}

fn encode_histogram(e: &mut Encoder, labels: &[(&str, &str)], h: &HistogramRead) {
    e.histogram(labels, &h.buckets, h.sum, h.count);
}

/// `kubernetes_build_info` as component-base writes it (KubeVersionMismatch reads it): the
/// release whose kubelet this agent stands in for; Go-only fields name the Rust build.
fn build_info(e: &mut Encoder) {
    let v = crate::nodestatus::setters::KUBELET_VERSION;
    let (major, minor) = v
        .trim_start_matches('v')
        .split_once('.')
        .map(|(ma, rest)| (ma, rest.split('.').next().unwrap_or("")))
        .unwrap_or(("", ""));
    // GOOS/GOARCH spelling, as the kubelet reports it.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let platform = format!("{}/{arch}", std::env::consts::OS);
    e.family(
        "kubernetes_build_info",
        "A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.",
        Kind::Gauge,
    );
    e.sample(
        &[
            ("build_date", ""),
            ("compiler", "rustc"),
            ("git_commit", ""),
            ("git_tree_state", ""),
            ("git_version", v),
            ("go_version", ""),
            ("major", major),
            ("minor", minor),
            ("platform", &platform),
        ],
        1.0,
        None,
    );
}

/// Renders `/metrics`: the agent's own metrics from the recorder and the status store.
pub fn render_agent(
    m: &AgentSources,
    format: Format,
    node: &str,
    pods: &PodStatuses,
    telemetry: Option<TelemetryHealth>,
) -> String {
    let mut e = Encoder::new(format, 16 * 1024);
    build_info(&mut e);
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
    encode_histogram(&mut e, &[], &m.status.pod_start.read());

    e.family(
        "kubelet_pod_worker_duration_seconds",
        "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
        Kind::Histogram,
    );
    for (op, h) in m.pod_workers.duration.read() {
        encode_histogram(&mut e, &[("operation_type", op)], &h);
    }

    e.family(
        "kubelet_pleg_relist_duration_seconds",
        "Duration in seconds for relisting pods in PLEG.",
        Kind::Histogram,
    );
    encode_histogram(&mut e, &[], &m.pleg.relist_duration.read());
    e.family(
        "kubelet_pleg_relist_interval_seconds",
        "Interval in seconds between relisting in PLEG.",
        Kind::Histogram,
    );
    encode_histogram(&mut e, &[], &m.pleg.relist_interval.read());
    let last_seen = m.pleg.last_seen_unix_ns.load(Ordering::Relaxed);
    if last_seen > 0 {
        e.family(
            "kubelet_pleg_last_seen_seconds",
            "Timestamp in seconds when PLEG was last seen active.",
            Kind::Gauge,
        );
        e.sample(&[], last_seen as f64 / 1e9, None);
    }
    e.family(
        "nodelet_pleg_oom_relists_total",
        "OOM kills that made PLEG relist at once, so status and restarts follow within milliseconds.",
        Kind::Counter,
    );
    e.sample(&[], m.pleg.oom_relists.load(Ordering::Relaxed) as f64, None);
    e.family(
        "nodelet_pleg_hinted_relists_total",
        "Relists right after the agent started a container, so a started pod's status need not wait for the next period.",
        Kind::Counter,
    );
    e.sample(
        &[],
        m.pleg.hinted_relists.load(Ordering::Relaxed) as f64,
        None,
    );
    let lagged = m.bus.lagged();
    e.family(
        "kubelet_pleg_discard_events",
        "The number of discard events in PLEG.",
        Kind::Counter,
    );
    let discarded = lagged
        .iter()
        .find(|(name, _)| *name == crate::pod_workers::SUBSCRIBER)
        .map_or(0, |(_, n)| *n);
    e.sample(&[], discarded as f64, None);
    e.family(
        "nodelet_event_bus_lagged_events_total",
        "Events a subscriber of the event bus missed because it fell behind (it resynced from the stores).",
        Kind::Counter,
    );
    for (sub, n) in &lagged {
        e.sample(&[("subscriber", sub)], *n as f64, None);
    }

    e.family(
        "kubelet_runtime_operations_total",
        "Cumulative number of runtime operations by operation type.",
        Kind::Counter,
    );
    for (op, n) in m.runtime_ops.calls.read() {
        e.sample(&[("operation_type", &op)], n as f64, None);
    }
    e.family(
        "kubelet_runtime_operations_duration_seconds",
        "Duration in seconds of runtime operations. Broken down by operation type.",
        Kind::Histogram,
    );
    for (op, h) in m.runtime_ops.durations.read() {
        encode_histogram(&mut e, &[("operation_type", op)], &h);
    }
    e.family(
        "kubelet_runtime_operations_errors_total",
        "Cumulative number of runtime operation errors by operation type.",
        Kind::Counter,
    );
    for (op, n) in m.runtime_ops.errors.read() {
        e.sample(&[("operation_type", &op)], n as f64, None);
    }

    e.family(
        "kubelet_cgroup_manager_duration_seconds",
        "Duration in seconds for cgroup manager operations. Broken down by method.",
        Kind::Histogram,
    );
    for (op, h) in m.cgroup_manager.read() {
        encode_histogram(&mut e, &[("operation_type", op)], &h);
    }

    render_eviction(&mut e, m.eviction.as_deref());
    render_volume_manager(&mut e, &m.volumes);
    render_volume_stats(&mut e);
    if let Some(t) = telemetry {
        render_telemetry(&mut e, &t);
    }
    // The agent's own process, read once per scrape as client_golang's collector does.
    if let Some(p) = process::read_self() {
        process::render(&mut e, &p);
    }
    e.finish()
}

/// The volume manager's families: set-up durations (pkg/volume/util/metrics.go; nodelet mounts
/// no CSI or migrated volume, so `migrated` is always "false") and the desired and actual
/// worlds' sizes (pkg/kubelet/volumemanager/metrics).
fn render_volume_manager(e: &mut Encoder, v: &crate::volumemanager::metrics::VolumeMetrics) {
    e.family(
        "storage_operation_duration_seconds",
        "Storage operation duration",
        Kind::Histogram,
    );
    for ((plugin, op, status), h) in v.operations() {
        let labels = [
            ("migrated", "false"),
            ("operation_name", op),
            ("status", status),
            ("volume_plugin", plugin),
        ];
        encode_histogram(e, &labels, &h);
    }
    e.family(
        "volume_manager_total_volumes",
        "Number of volumes in Volume Manager",
        Kind::Gauge,
    );
    for ((state, plugin), n) in v.totals() {
        e.sample(&[("plugin_name", plugin), ("state", state)], n as f64, None);
    }
}

/// The kubelet's volume stats families (pkg/kubelet/metrics/collectors/volume_stats.go,
/// labels namespace and persistentvolumeclaim). The kubelet fills them only for volumes backed
/// by a PersistentVolumeClaim; nodelet mounts none (emptyDir, hostPath and API-backed volumes
/// only), so each family is announced with HELP and TYPE and has no sample. The use of the
/// volumes nodelet does have is in the Summary API's pod `volume` list.
fn render_volume_stats(e: &mut Encoder) {
    for (name, help) in [
        (
            "kubelet_volume_stats_available_bytes",
            "Number of available bytes in the volume",
        ),
        (
            "kubelet_volume_stats_capacity_bytes",
            "Capacity in bytes of the volume",
        ),
        (
            "kubelet_volume_stats_inodes",
            "Maximum number of inodes in the volume",
        ),
        (
            "kubelet_volume_stats_inodes_free",
            "Number of free inodes in the volume",
        ),
        (
            "kubelet_volume_stats_inodes_used",
            "Number of used inodes in the volume",
        ),
        (
            "kubelet_volume_stats_used_bytes",
            "Number of used bytes in the volume",
        ),
    ] {
        e.family(name, help, Kind::Gauge);
    }
}

/// The eviction manager's families (pkg/kubelet/metrics Evictions, EvictionStatsAge).
fn render_eviction(e: &mut Encoder, s: Option<&crate::eviction::EvictionStats>) {
    e.family(
        "kubelet_evictions",
        "Cumulative number of pod evictions by eviction signal",
        Kind::Counter,
    );
    let Some(s) = s else { return };
    for (signal, n) in s.evictions.read() {
        e.sample(&[("eviction_signal", &signal)], n as f64, None);
    }
    e.family(
        "kubelet_eviction_stats_age_seconds",
        "Time between when stats are collected, and when pod is evicted based on those stats by eviction signal",
        Kind::Histogram,
    );
    for (signal, h) in s.stats_age.read() {
        encode_histogram(e, &[("eviction_signal", signal)], &h);
    }
    e.family(
        "nodelet_eviction_mark_to_decision_seconds",
        "Time from the kernel's memory-mark crossing to the eviction decision it led to, by eviction signal.",
        Kind::Histogram,
    );
    for (signal, h) in s.mark_to_decision.read() {
        encode_histogram(e, &[("eviction_signal", signal)], &h);
    }
    e.family(
        "kubelet_image_garbage_collected_total",
        "Total number of images garbage collected by the kubelet, whether through disk usage or image age.",
        Kind::Counter,
    );
    for (reason, n) in s.gc.images_collected.read() {
        e.sample(&[("reason", &reason)], n as f64, None);
    }
}

/// nodelet's own telemetry families: which source feeds the stats, and the eBPF pipeline's
/// accounting (records read vs produced vs lost), the counterpart of aya's dropped counters.
fn render_telemetry(e: &mut Encoder, t: &TelemetryHealth) {
    e.family(
        "nodelet_telemetry_source",
        "Telemetry source in use (1 for the active one): loading (not decided yet), ebpf, the cgroupfs fallback, or none.",
        Kind::Gauge,
    );
    for s in ["loading", "ebpf", "cgroupfs", "none"] {
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
    if let Some((sweeps, took, cgroups)) = t.details {
        e.family(
            "nodelet_cgroup_details_sweeps_total",
            "Sweeps reading the cgroup figures cAdvisor reports beside usage (spec, CFS, swap, tasks, network).",
            Kind::Counter,
        );
        e.sample(&[], sweeps as f64, None);
        e.family(
            "nodelet_cgroup_details_sweep_seconds",
            "Duration of the last cgroup details sweep.",
            Kind::Gauge,
        );
        e.sample(&[], took.as_secs_f64(), None);
        e.family(
            "nodelet_cgroup_details_cgroups",
            "Cgroups the last details sweep read.",
            Kind::Gauge,
        );
        e.sample(&[], cgroups as f64, None);
    }
    let programs = crate::ebpf::program_runs(&t.program_ids);
    if programs.is_empty() {
        return;
    }
    e.family(
        "nodelet_ebpf_program_run_seconds_total",
        "Time the eBPF programs ran, as the kernel counts it while run-time statistics are on \
         (kernel.bpf_stats_enabled=1 or NODELET_BPF_STATS=1; 0 otherwise).",
        Kind::Counter,
    );
    for p in &programs {
        e.sample(&[("program", p.name)], p.run_ns as f64 / 1e9, None);
    }
    e.family(
        "nodelet_ebpf_program_runs_total",
        "Runs of the eBPF programs while run-time statistics are on.",
        Kind::Counter,
    );
    for p in &programs {
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
