//! nodelet: a Kubernetes node agent with kubelet-compatible flags and configuration.
//!
//! Wiring only: resolve options, start logging, connect to the CRI runtime, then start each
//! manager once under one root cancellation token: the static pod source (config), the pod
//! lifecycle event generator (pleg) and the pod workers. SIGTERM/SIGINT stop the agent and leave
//! pods running, as the kubelet does; the next start adopts them.

mod admission;
mod certificate;
mod cm;
mod config;
mod ebpf;
mod errors;
mod events;
mod eviction;
mod heap_trim;
mod httpget;
mod instrument;
mod kuberuntime;
mod metrics;
mod mirror;
mod nodestatus;
mod options;
mod pleg;
mod pod;
mod pod_workers;
mod prober;
#[cfg(test)]
mod proptest_kit;
mod recorder;
mod server;
mod services;
mod stats;
mod status;
mod volumemanager;
mod wait;

use anyhow::Context;
use kuberuntime::{Cri, NodeContext, RuntimeManager};
use options::Options;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

fn main() -> std::process::ExitCode {
    heap_trim::configure_malloc();
    let opts = match Options::from_args(std::env::args()) {
        Ok(o) => o,
        Err(options::OptionsResolveError::Clap(e)) => {
            // clap prints usage errors, --help and --version itself, with the right exit code.
            e.exit();
        }
        Err(e) => {
            eprintln!("nodelet: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    init_logging(opts.verbosity);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nodelet")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// klog verbosity to tracing levels: 0-2 info (the kubelet's usual --v=2 is not debug output),
/// 3-4 debug, 5 and up trace. RUST_LOG, when set, wins.
fn init_logging(v: u8) {
    let level = match v {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,nodelet={level}")));
    // stderr, so journald keeps it under the unit (journalctl -u nodelet).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn run(opts: Options) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), node = %opts.node_name, "starting nodelet");
    for n in &opts.notices {
        warn!("{n}");
    }
    // One CRI connection (a tonic channel, cloned by every user): PLEG, the pod workers,
    // the runtime checker, telemetry and the server share it and its call statistics.
    let cri = Cri::connect(
        &opts.container_runtime_endpoint,
        &opts.image_service_endpoint,
        opts.runtime_request_timeout,
    )
    .context("container runtime endpoint")?;
    match cri.version().await {
        Ok(v) => {
            info!(runtime = %v.runtime_name, version = %v.runtime_version, api = %v.runtime_api_version, endpoint = %opts.container_runtime_endpoint, "connected to container runtime")
        }
        Err(e) => {
            error!(error = %e, endpoint = %opts.container_runtime_endpoint, "container runtime unreachable; will keep retrying")
        }
    }

    // TLS bootstrapping first, so that every API client below starts with a valid certificate.
    let certs = opts.kubeconfig.clone().map(|k| {
        let c = &opts.certificates;
        certificate::Settings::new(
            opts.node_name.clone(),
            k,
            c.bootstrap_kubeconfig.clone(),
            c.cert_dir.clone(),
            c.rotate,
        )
    });
    if let Some(c) = &certs
        && let Err(e) = certificate::bootstrap(c).await
    {
        error!(error = %errors::error_chain(&e), "TLS bootstrapping failed: the node does not join the cluster");
    }
    // Cluster mode: one API client (kube's default timeouts, fit for long watches; held to
    // kubeAPIQPS/kubeAPIBurst) for the pod source, the volume manager and the status
    // manager's writes. A kubeconfig that cannot
    // be used is an error the agent keeps naming while it serves everything else (static pods,
    // its API, which then refuses what needs the API server), as an unreachable API server is.
    let api_client = match &opts.kubeconfig {
        Some(path) => match config::apiserver::client(path, None).await {
            Ok(c) => Some(config::throttle::throttled(c, opts.api_rate)),
            Err(e) => {
                error!(
                    error = %errors::error_chain(&e),
                    "--kubeconfig cannot be used: pods from the API server are not run and their status is not written"
                );
                None
            }
        },
        None => None,
    };
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Kubernetes Events (cluster mode; logged only when standalone), the kubelet's BirthCry first.
    let recorder = recorder::start(
        api_client.clone(),
        opts.node_name.clone(),
        &mut tasks,
        cancel.child_token(),
    );
    recorder.node(recorder::reasons::starting());
    // Service environment variables: every Service, watched (cluster mode only).
    let services = match api_client.clone() {
        Some(client) => services::Services::start(client, &mut tasks, cancel.child_token()),
        None => services::Services::default(),
    };
    let ctx = node_context(&opts, api_client.clone(), recorder.clone(), services);
    let host_ip = ctx.host_ip.clone();
    let memory_capacity = u64::try_from(ctx.memory_capacity).unwrap_or(0);
    let cpu_capacity_milli = ctx.cpu_capacity_milli;
    // Node allocatable (issue 12): reservations checked against capacity, kubepods and its QoS
    // children created and limited before any pod starts.
    let capacity = cm::node::Amounts {
        cpu_milli: cpu_capacity_milli,
        memory: i64::try_from(memory_capacity).unwrap_or(i64::MAX),
        ephemeral_storage: nodestatus::machine::filesystem_capacity(&opts.root_dir)
            .ok()
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(0),
        pid: cm::node::pid_capacity(),
    };
    let allocatable = cm::node::allocatable(&opts.eviction, capacity)
        .context("kubeReserved / systemReserved / evictionHard")?;
    let pods_limits = cm::node::pods_cgroup_limits(&opts.eviction, capacity);
    if let Err(e) = ctx.cm.enforce_node_allocatable(pods_limits) {
        // A limit below what adopted pods use now (EBUSY on v1) is the usual cause; pods keep
        // running, and the limit is retried every minute as the kubelet does.
        error!(error = %errors::error_chain(&e), "node allocatable is not enforced; retrying every minute");
        let cm = ctx.cm.clone();
        let cancel = cancel.child_token();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                let cm = cm.clone();
                match tokio::task::spawn_blocking(move || cm.enforce_node_allocatable(pods_limits))
                    .await
                {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => warn!(error = %errors::error_chain(&e), "node allocatable is still not enforced"),
                    Err(e) => warn!(error = %e, "node allocatable task failed"),
                }
            }
        });
    }
    let qos_cm = ctx.cm.clone();
    // The managers' own statistics, read by /metrics.
    let (cgroup_ops, volume_metrics) = (ctx.cm.op_stats(), ctx.volumes.metrics());
    let runtime = RuntimeManager::new(cri.clone(), ctx);
    let bus = events::Bus::new();
    // Subscribers exist before the first producer runs, so none misses the first relist.
    let workers_events = bus.subscribe(pod_workers::SUBSCRIBER);
    let eviction_events = bus.subscribe(eviction::SUBSCRIBER);

    let mut sources = Vec::new();
    match opts.static_pod_path.clone() {
        Some(path) => {
            let (tx, rx) = watch::channel(None);
            tasks.spawn(config::file::run(
                path,
                opts.node_name.clone(),
                opts.file_check_frequency,
                tx,
                cancel.child_token(),
            ));
            sources.push(rx);
        }
        None => info!("no static pod path (--pod-manifest-path / staticPodPath)"),
    }
    // The API source's watch also sees this node's mirror pods: the mirror pod manager and
    // the status writer read them from here.
    let (mirrors_tx, mirrors_rx) = watch::channel(None);
    let (removals_tx, removals_rx) = mpsc::unbounded_channel();
    if let Some(client) = api_client.clone() {
        let (tx, rx) = watch::channel(None);
        tasks.spawn(config::apiserver::run(
            client,
            opts.node_name.clone(),
            tx,
            mirrors_tx,
            removals_tx,
            cancel.child_token(),
        ));
        sources.push(rx);
    }
    let (config_tx, config_rx) = watch::channel(None);
    tasks.spawn(update_qos_cgroups(
        qos_cm,
        config_rx.clone(),
        cancel.child_token(),
    ));
    tasks.spawn(config::mux::run(sources, config_tx, cancel.child_token()));

    let (cache_writer, cache) = pleg::cache::cache();
    // Node-side verdicts (eviction, admission) reach the pod workers through the killer.
    let (killer, kills) = pod_workers::PodKiller::new();
    let pod_worker_stats = Arc::new(pod_workers::PodWorkerStats::default());
    // Probe results: written by the probe workers, read by the status manager and pod workers.
    let probe_results = prober::results::ProbeResults::new();
    let (status, status_store, status_stats) = status::start(
        host_ip.clone(),
        config_rx.clone(),
        cache.clone(),
        probe_results.clone(),
        &mut tasks,
        cancel.child_token(),
    );
    if let Some(client) = api_client.clone() {
        mirror::start(
            client.clone(),
            opts.node_name.clone(),
            config_rx.clone(),
            mirrors_rx.clone(),
            &mut tasks,
            cancel.child_token(),
        );
        status::sync::start(
            client,
            config_rx.clone(),
            mirrors_rx.clone(),
            status_store.clone(),
            cache.clone(),
            &mut tasks,
            cancel.child_token(),
        );
    }
    let (health_tx, health_rx) = watch::channel(None);
    let pleg_stats = Arc::new(pleg::PlegStats::default());
    tasks.spawn(pleg_watchdog(health_rx.clone(), cancel.child_token()));
    tasks.spawn(heap_trim::run(cancel.child_token()));
    tasks.spawn(pleg::run(
        cri.clone(),
        cache_writer,
        bus.clone(),
        health_tx,
        pleg_stats.clone(),
        runtime.changes(),
        cancel.child_token(),
    ));
    let runtime_health = kuberuntime::health::start(cri.clone(), &mut tasks, cancel.child_token());

    // --- node status (issue 11): registration, node status and lease in cluster mode ---
    // The eviction manager's pressure flags, forwarded below once it runs.
    let (pressure_tx, pressure_rx) = nodestatus::pressure_channel();
    if let Some(settings) = nodestatus::Settings::from_options(&opts) {
        nodestatus::start(
            settings,
            nodestatus::Inputs {
                cri: cri.clone(),
                runtime_health: runtime_health.clone(),
                pleg_health: health_rx.clone(),
                pressure: pressure_rx,
                recorder: recorder.clone(),
            },
            &mut tasks,
            cancel.child_token(),
        );
    }
    // --- end node status ---
    // Client certificate rotation (rotateCertificates); the API clients follow the new file.
    if let Some(c) = certs {
        certificate::start_rotation(c, &mut tasks, cancel.child_token());
    }

    // Telemetry: eBPF (or the cgroupfs fallback) writes the stats store; the stats mapper
    // resolves cgroups to pods from the runtime cache and kernel records to bus events.
    let telemetry = ebpf::settings::Settings::from_options(&opts);
    let (stats_writer, stats_store) = stats::store();
    let pod_stats = stats::pods::PodStatsView::new(stats_store);
    let (records_tx, records_rx) = mpsc::channel(ebpf::settings::RECORDS_CAPACITY);
    let marks = ebpf::start_telemetry(
        &telemetry,
        stats_writer,
        records_tx,
        &mut tasks,
        cancel.child_token(),
    );
    // Filesystem use (rootfs, logs, volumes) and block I/O per cgroup for the Summary API and
    // /metrics/cadvisor, on a slow timer while they are read (eviction measures its own).
    let fs_usage = stats::fs_usage::start(
        Some(cri.clone()),
        (telemetry.mode != ebpf::settings::Mode::Off).then(|| pod_stats.clone()),
        stats::cgroupfs::CgroupLayout::detect().ok(),
        stats::fs_usage::Settings {
            root_dir: opts.root_dir.clone(),
            pod_logs_dir: opts.pod_logs_dir.clone(),
        },
        &mut tasks,
        cancel.child_token(),
    );
    // --- eviction (issue 12): signals, node pressure, evictions through the pod workers ---
    let pods_root = cm::ContainerManager::new(&opts).pods_root();
    let capacity = i64::try_from(memory_capacity).unwrap_or(i64::MAX);
    let eviction = eviction::Settings::from_options(&opts, capacity, pods_root).map(|settings| {
        let inputs = eviction::Inputs {
            config: config_rx.clone(),
            status: status_store.clone(),
            view: pod_stats.clone(),
            bus: eviction_events,
            kill: kill_func(killer.clone()),
            marks: marks.clone(),
            cri: cri.clone(),
        };
        eviction::start(settings, inputs, &mut tasks, cancel.child_token())
    });
    if let Some(h) = &eviction {
        tasks.spawn(forward_pressure(
            h.pressure.clone(),
            pressure_tx,
            cancel.child_token(),
        ));
    }
    // --- end eviction ---
    stats::pods::mapper::start(
        pod_stats.clone(),
        cache.clone(),
        bus.clone(),
        records_rx,
        stats::pods::mapper::MapperSettings {
            dump: telemetry.dump.clone(),
            mark_bytes: telemetry.mark_bytes,
            marks,
            recorder: recorder.clone(),
        },
        &mut tasks,
        cancel.child_token(),
    );
    // cAdvisor's slower figures (spec, CFS, swap, tasks), the system containers and the
    // runtime's filesystems, each read by its own task on a slow timer.
    let mut feeds = stats::pods::provider::Feeds::default();
    if telemetry.mode != ebpf::settings::Mode::Off
        && let Ok(layout) = stats::cgroupfs::CgroupLayout::detect()
    {
        feeds.details = Some(stats::details::start(
            layout,
            pod_stats.clone(),
            opts.container_runtime_endpoint.clone(),
            telemetry.roots.first().cloned(),
            &mut tasks,
            cancel.child_token(),
        ));
    }
    feeds.runtime_fs = Some(stats::runtime_fs::start(
        cri.clone(),
        &mut tasks,
        cancel.child_token(),
    ));
    feeds.fs = Some(fs_usage);
    let machine = nodestatus::machine::MachineInfo::read();
    let stats = stats::pods::provider::ServerStats::new(
        Some(pod_stats),
        stats::summary::NodeStats {
            start_time: Some(std::time::SystemTime::now()),
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as u32,
            memory_capacity_bytes: memory_capacity,
            boot_id: machine.boot_id,
            machine_id: machine.machine_id,
            system_uuid: machine.system_uuid,
            ..Default::default()
        },
        opts.root_dir.clone(),
        feeds,
    );
    let prober_stats = prober::start(
        prober::Inputs {
            config: config_rx.clone(),
            statuses: status_store.receiver(),
            runtime: runtime.clone(),
            results: probe_results.clone(),
            recorder: recorder.clone(),
        },
        &mut tasks,
        cancel.child_token(),
    );
    let view = server::NodeView::new(
        &opts,
        status_store,
        cri.clone(),
        stats,
        metrics::AgentSources {
            runtime_ops: cri.op_stats(),
            pleg: pleg_stats,
            status: status_stats,
            pod_workers: pod_worker_stats.clone(),
            bus: bus.clone(),
            eviction: eviction.as_ref().map(|h| h.stats.clone()),
            probes: prober_stats,
            cgroup_manager: cgroup_ops,
            volumes: volume_metrics,
        },
        health_rx.clone(),
        runtime_health,
    );
    server::start(&opts, view, &mut tasks, cancel.child_token())
        .context("HTTP server (port, TLS and authentication settings)")?;

    tasks.spawn(pod_workers::run(
        runtime,
        pod_workers::WorkerSettings {
            sync_frequency: opts.sync_frequency,
            max_restart_backoff: opts.max_container_restart_period,
            status,
            cache,
            stats: pod_worker_stats,
            admission: admission_facts(
                &opts,
                allocatable.cpu_milli,
                u64::try_from(allocatable.memory).unwrap_or(0),
                eviction.as_ref(),
            ),
            probes: probe_results,
        },
        config_rx,
        workers_events,
        kills,
        removals_rx,
        cancel.child_token(),
    ));

    shutdown_signal().await;
    info!("shutting down; pods keep running and are adopted on the next start");
    cancel.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        warn!("some tasks did not stop within 10s");
    }
    Ok(())
}

/// Keeps the burstable cgroup's cpu shares at the sum of the burstable pods' CPU requests, on
/// every change of the desired pods and every minute (the kubelet's UpdateQOSCgroups).
async fn update_qos_cgroups(
    cm: cm::ContainerManager,
    mut pods: watch::Receiver<Option<config::PodSet>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut last = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = pods.changed() => if r.is_err() { return },
            _ = tick.tick() => last = None,
        }
        let milli: i64 = pods
            .borrow()
            .as_ref()
            .map(|set| {
                set.values()
                    .filter(|p| pod::qos_class(&p.pod) == pod::QosClass::Burstable)
                    .map(|p| admission::pod_requests(&p.pod).0)
                    .sum()
            })
            .unwrap_or(0);
        if last == Some(milli) {
            continue;
        }
        let cm = cm.clone();
        match tokio::task::spawn_blocking(move || cm.update_burstable_shares(milli)).await {
            Ok(Ok(())) => last = Some(milli),
            Ok(Err(e)) => {
                warn!(error = %errors::error_chain(&e), "cannot update the burstable cgroup")
            }
            Err(e) => warn!(error = %e, "burstable cgroup update task failed"),
        }
    }
}

/// What node admission checks a new pod against: the node's labels and registered taints,
/// its CPU and memory allocatable (capacity less reservations and hard eviction thresholds),
/// maxPods, and the eviction manager's pressure.
fn admission_facts(
    opts: &Options,
    cpu_milli: i64,
    memory_bytes: u64,
    eviction: Option<&eviction::Handle>,
) -> admission::NodeFacts {
    let mut labels = nodestatus::setters::default_labels(&opts.node_name);
    labels.extend(opts.node_status.labels.clone());
    let pressure = eviction.map(|h| {
        let rx = h.pressure.clone();
        let check: admission::PressureCheck = Arc::new(move |pod| {
            let now = *rx.borrow();
            eviction::admit(pod, &now)
                .err()
                .map(|r| (r.reason.to_owned(), r.message))
        });
        check
    });
    admission::NodeFacts {
        labels,
        taints: opts
            .node_status
            .taints
            .iter()
            .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
            .collect(),
        cpu_milli,
        memory_bytes: i64::try_from(memory_bytes).unwrap_or(i64::MAX),
        max_pods: opts.node_status.max_pods as usize,
        pressure,
        allowed_unsafe_sysctls: opts.allowed_unsafe_sysctls.clone(),
    }
}

/// Logs when PLEG stops relisting, as the kubelet's "PLEG is not healthy" (the /healthz
/// endpoint will report the same state).
async fn pleg_watchdog(rx: watch::Receiver<Option<std::time::Instant>>, cancel: CancellationToken) {
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let now = pleg::is_healthy(*rx.borrow());
        if now != healthy {
            if now {
                info!("PLEG is healthy again");
            } else {
                error!(threshold = ?pleg::RELIST_THRESHOLD, "PLEG is not healthy: no successful relist within the threshold");
            }
            healthy = now;
        }
    }
}

/// The eviction manager's kill function: a verdict for the pod workers (killPodNow).
fn kill_func(killer: pod_workers::PodKiller) -> eviction::KillPodFunc {
    Arc::new(move |req| {
        let k = killer.clone();
        Box::pin(async move { k.kill(req).await })
    })
}

/// Copies the eviction manager's pressure into node status's conditions input.
async fn forward_pressure(
    mut rx: watch::Receiver<eviction::NodePressure>,
    tx: watch::Sender<nodestatus::NodeConditionsInput>,
    cancel: CancellationToken,
) {
    loop {
        let p = *rx.borrow_and_update();
        tx.send_replace(nodestatus::NodeConditionsInput {
            memory_pressure: p.memory,
            disk_pressure: p.disk,
            pid_pressure: p.pid,
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn node_context(
    o: &Options,
    api_client: Option<kube::Client>,
    recorder: recorder::Recorder,
    services: services::Services,
) -> NodeContext {
    let host_dns = std::fs::read_to_string(&o.resolv_conf)
        .map(|t| kuberuntime::sandbox::parse_resolv_conf(&t))
        .unwrap_or_else(|e| {
            warn!(file = %o.resolv_conf.display(), error = %e, "cannot read resolv.conf; pods get no DNS servers");
            Default::default()
        });
    let memory_capacity = match std::fs::read_to_string("/proc/meminfo").map(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<i64>().ok())
    }) {
        Ok(Some(kb)) => kb * 1024,
        Ok(None) => {
            warn!(
                file = "/proc/meminfo",
                "no MemTotal line; node memory capacity is reported as 0 and memory-based decisions are off"
            );
            0
        }
        Err(e) => {
            warn!(file = "/proc/meminfo", error = %e, "cannot read memory capacity; it is reported as 0 and memory-based decisions are off");
            0
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let host_ip = o
        .node_ips
        .first()
        .map(|ip| ip.to_string())
        .or_else(|| {
            use std::net::ToSocketAddrs;
            (o.node_name.as_str(), 0)
                .to_socket_addrs()
                .ok()?
                .map(|a| a.ip())
                .find(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
        })
        // The address node status reports as InternalIP when the name does not resolve.
        .or_else(|| nodestatus::machine::default_route_ip(false).map(|ip| ip.to_string()))
        .unwrap_or_else(|| {
            warn!(node = %o.node_name, "no --node-ip, the node name resolves to no non-loopback address and there is no default route; using 127.0.0.1 as the node IP (status.hostIP, host-network pod IPs)");
            "127.0.0.1".into()
        });
    NodeContext {
        node_name: o.node_name.clone(),
        host_ip,
        pod_logs_dir: o.pod_logs_dir.clone(),
        root_dir: o.root_dir.clone(),
        cluster_dns: o.cluster_dns.clone(),
        cluster_domain: o.cluster_domain.clone(),
        seccomp_default: o.seccomp_default,
        host_dns,
        cm: cm::ContainerManager::new(o),
        memory_capacity,
        cpu_capacity_milli: cpus * 1000,
        // ConfigMaps, Secrets and tokens through the node authorizer, with the node's client.
        volumes: volumemanager::VolumeManager::new(api_client, o.root_dir.clone())
            .with_node_allocatable(cpus * 1000, memory_capacity),
        recorder,
        services,
    }
}
