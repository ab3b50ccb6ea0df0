//! `cargo xtask`: set up a machine, run the agent against a private containerd, run the tests,
//! install. Everything reusable lives in the `xtask` library, which the e2e tests share.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};

use xtask::containerd::{Env, EnvOpts};
use xtask::run::{Session, SessionOpts};

mod bench;
mod bench_eviction;
mod bench_peer;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "nodelet developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install missing Debian packages, mount bpffs/tracefs, build the local images.
    Setup,
    /// Run a private containerd under /tmp in the foreground until Ctrl-C.
    Containerd {
        /// Keep its temp dir afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Build the agent and run it against a private containerd with examples/static-pods and
    /// examples/kubelet-config.yaml; Ctrl-C stops it and removes the pods and all they left.
    Run {
        /// Static pod manifests; default: examples/static-pods of the workspace.
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Also start the loopback control plane (as `cluster up`, state in
        /// $NODELET_CLUSTER_DIR or target/nodelet-cluster) and join nodelet to it.
        #[arg(long)]
        cluster: bool,
        /// Build and run the release agent (what `install` installs and the benchmarks
        /// measure) instead of the debug build.
        #[arg(long)]
        release: bool,
        /// Extra agent arguments (after `--`), e.g. `-- --config my.yaml --v=4`; they come
        /// after xtask's own, so a repeated flag takes their value.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build the agent, then `cargo test --workspace` with NODELET_BIN and
    /// NODELET_IMAGES_DIR set.
    Test {
        /// Extra `cargo test` arguments (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks (not tests): `bench telemetry` prints eBPF vs cgroupfs polling costs;
    /// `bench pods` pod start (static and API pods) against the CRI floor, and agent cost;
    /// `bench eviction` OOM/threshold latencies and the eviction race against baselines;
    /// `bench peer` nodelet beside the Go kubelet.
    Bench {
        /// What to measure: `telemetry`, `pods`, `eviction` or `peer`.
        what: String,
        /// Container counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "50,100,250")]
        n: Vec<usize>,
        /// Measurement window per cell, seconds (default: telemetry 10, peer 60).
        #[arg(long)]
        window: Option<u64>,
        /// peer: settle time before the idle windows, seconds.
        #[arg(long, default_value_t = 30)]
        settle: u64,
        /// peer: running pod counts of the idle rows, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "0,50,100,250")]
        pods: Vec<usize>,
        /// peer: pod start batch sizes, comma separated (a batch of 1 is repeated 10 times).
        #[arg(long, value_delimiter = ',', default_value = "1,30,100")]
        starts: Vec<usize>,
        /// peer: API pod start batch sizes, each agent joined to a loopback control plane in
        /// turn (0: skip).
        #[arg(long, value_delimiter = ',', default_value = "1,30,100")]
        api_starts: Vec<usize>,
        /// OOM kills to time (0: skip).
        #[arg(long, default_value_t = 20)]
        ooms: usize,
        /// Rounds over the telemetry modes per row (default 2); peer: idle windows per pod
        /// count (default 3).
        #[arg(long)]
        rounds: Option<usize>,
        /// peer: load pods of the accuracy row (stats vs cgroup files; 0: skip).
        #[arg(long, default_value_t = 3)]
        accuracy_pods: usize,
        /// peer: the accuracy row's window, seconds.
        #[arg(long, default_value_t = 60)]
        accuracy_window: u64,
        /// peer: ramp rates of the memory-ramp race, MiB/s, comma separated (joined to a
        /// control plane, API pods).
        #[arg(long, value_delimiter = ',', default_value = "100,400")]
        ramp_rates: Vec<i64>,
        /// peer: races per ramp rate (0: skip).
        #[arg(long, default_value_t = 5)]
        ramp_runs: usize,
        /// Memory mark crossings to time per source (0: skip).
        #[arg(long, default_value_t = 10)]
        marks: usize,
        /// eviction: races per ramp rate and set-up.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// eviction: threshold crossings to time on eBPF (at least).
        #[arg(long, default_value_t = 20)]
        crossings: usize,
        /// eviction: ramp rates, MiB/s, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "50,100,200,400")]
        rates: Vec<i64>,
        /// eviction: set-ups to run (`ebpf`, `cgroupfs`, `kubelet`), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "ebpf,cgroupfs,kubelet")]
        setups: Vec<String>,
    },
    /// A loopback Kubernetes control plane built from the Go module proxy: `build` (binaries
    /// only), `up`, `down`, `status`.
    Cluster {
        /// `build`, `up`, `down` or `status`.
        action: String,
        /// State dir (PKI, etcd data, kubeconfigs, logs, pidfiles); default:
        /// $NODELET_CLUSTER_DIR or <target>/nodelet-cluster.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Node name of the node client certificate; default: the hostname, lowercased.
        #[arg(long)]
        node_name: Option<String>,
        /// With `build`: more k8s.io/kubernetes packages of the same release (after `--`),
        /// e.g. `cmd/kubelet test/e2e`.
        #[arg(last = true)]
        packages: Vec<String>,
    },
    /// The upstream [NodeConformance] e2e tests of the pinned release against the Go kubelet
    /// and/or nodelet on a loopback control plane; prints a table of both.
    Conformance {
        /// `go`, `nodelet` or `both` (Go kubelet first).
        #[arg(long, default_value = "both")]
        kubelet: String,
        /// Extra ginkgo focus regex (ANDed with the NodeConformance label).
        #[arg(long)]
        focus: Option<String>,
        /// Extra ginkgo skip regex (ORed with the harness's own skips).
        #[arg(long)]
        skip: Option<String>,
        /// Parallel ginkgo processes (1: e2e.test alone).
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Suite timeout per kubelet, minutes.
        #[arg(long, default_value_t = 180)]
        timeout_min: u64,
        /// Output dir: reports, logs, cluster state; default <target>/nodelet-conformance.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the table of the reports already in the output dir; run nothing.
        #[arg(long)]
        from_reports: bool,
    },
    /// Build the release agent, install it and its systemd unit.
    Install {
        /// Installation prefix; the binary goes to PREFIX/bin/nodelet.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Setup => setup().map(|_| ExitCode::SUCCESS),
        Cmd::Containerd { keep } => containerd(keep),
        Cmd::Run {
            manifests,
            cluster,
            release,
            args,
        } => run_agent(manifests, cluster, release, &args),
        Cmd::Test { args } => test(&args),
        Cmd::Install { prefix } => install(&prefix),
        Cmd::Conformance {
            kubelet,
            focus,
            skip,
            parallel,
            timeout_min,
            out,
            from_reports,
        } => {
            if from_reports {
                return conformance_reports(&kubelet, out);
            }
            conformance(&kubelet, focus, skip, parallel, timeout_min, out)
        }
        Cmd::Cluster {
            action,
            dir,
            node_name,
            packages,
        } => cluster(&action, dir, node_name, &packages),
        Cmd::Bench {
            what,
            n,
            window,
            ooms,
            rounds,
            marks,
            runs,
            crossings,
            rates,
            setups,
            settle,
            pods,
            starts,
            api_starts,
            accuracy_pods,
            accuracy_window,
            ramp_rates,
            ramp_runs,
        } => {
            if what == "pods" {
                return bench_pods();
            }
            if what == "eviction" {
                setup()?;
                // $NODELET_BIN if set (e.g. a debug build on a busy machine), else release.
                let bin = match std::env::var_os(xtask::BIN_VAR) {
                    Some(b) => PathBuf::from(b),
                    None => build_agent(true)?,
                };
                return bench_eviction::eviction(&bench_eviction::EvictionBench {
                    runs,
                    ooms,
                    crossings,
                    rates,
                    bin,
                    setups,
                })
                .map(|_| ExitCode::SUCCESS);
            }
            if what == "peer" {
                setup()?;
                let kubelet = xtask::k8s::build(xtask::k8s::RELEASE, &["cmd/kubelet"])?.remove(0);
                if api_starts.iter().any(|&s| s > 0) || (ramp_runs > 0 && !ramp_rates.is_empty()) {
                    xtask::k8s::control_plane(xtask::k8s::RELEASE, xtask::k8s::ETCD_VERSION)?;
                }
                return bench_peer::peer(&bench_peer::PeerBench {
                    pods,
                    window: Duration::from_secs(window.unwrap_or(60)),
                    settle: Duration::from_secs(settle),
                    rounds: rounds.unwrap_or(3),
                    ooms,
                    starts,
                    api_starts,
                    nodelet: build_agent(true)?,
                    kubelet,
                    accuracy_pods,
                    accuracy_window: Duration::from_secs(accuracy_window),
                    ramp_rates,
                    ramp_runs,
                })
                .map(|_| ExitCode::SUCCESS);
            }
            if what != "telemetry" {
                bail!("unknown benchmark {what:?} (known: telemetry, pods, eviction, peer)");
            }
            setup()?;
            bench::telemetry(&bench::TelemetryBench {
                ns: n,
                window: Duration::from_secs(window.unwrap_or(10)),
                settle: Duration::from_secs(12),
                switches: 40_000,
                ooms,
                rounds: rounds.unwrap_or(2),
                marks,
                bin: build_agent(true)?,
            })
            .map(|_| ExitCode::SUCCESS)
        }
    }
}

/// `cargo xtask bench pods`: the release agent through the pod start benchmarks of the test
/// crate (static pods, then API pods on the loopback control plane).
fn bench_pods() -> Result<ExitCode> {
    let images = setup()?;
    let bin = build_agent(true)?;
    xtask::k8s::control_plane(xtask::k8s::RELEASE, xtask::k8s::ETCD_VERSION)?;
    let mut c = cargo();
    c.args([
        "bench",
        "-p",
        "nodelet-tests",
        "--bench",
        "pod_start",
        "--bench",
        "api_pod_start",
    ])
    .env(xtask::BIN_VAR, &bin)
    .env(xtask::IMAGES_DIR_VAR, &images.dir);
    let st = status_of(&mut c)?;
    Ok(exit_code(st))
}

fn setup() -> Result<xtask::Images> {
    xtask::packages::ensure()?;
    let stale = xtask::containerd::reclaim_stale()?;
    if stale > 0 {
        eprintln!("xtask: cleaned {stale} containerd env(s) left by dead processes");
    }
    let dir = xtask::images_dir();
    let images = xtask::images::build(&dir)?;
    eprintln!(
        "xtask: images in {}: {}, {}",
        dir.display(),
        images.busybox.name,
        images.pause.name
    );
    Ok(images)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(xtask::workspace_root());
    // `cargo run` gave xtask its own package's variables; build scripts that watch them (ring's
    // does) would rerun and rebuild half the tree, so a `cargo build` by hand and one by xtask
    // would keep undoing each other.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(&*k);
        }
    }
    c
}

fn status_of(cmd: &mut Command) -> Result<std::process::ExitStatus> {
    let shown = xtask::process::describe(cmd);
    cmd.status().with_context(|| format!("cannot run {shown}"))
}

fn build_agent(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "agent"]);
    if release {
        c.arg("--release");
    }
    let st = status_of(&mut c)?;
    if !st.success() {
        bail!("cargo build -p agent failed ({st})");
    }
    let bin = xtask::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("nodelet");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// SIGINT and SIGTERM streams. Registering them replaces the default "die" disposition, so a
/// Ctrl-C during start-up still leads to an orderly teardown.
struct Signals {
    rt: tokio::runtime::Runtime,
    int: Signal,
    term: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a tokio runtime")?;
        let (int, term) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            })
            .context("cannot install signal handlers")?;
        Ok(Signals { rt, int, term })
    }

    /// The next signal within `timeout`, if one comes.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<(libc::c_int, &'static str)> {
        let (int, term) = (&mut self.int, &mut self.term);
        self.rt.block_on(async {
            tokio::select! {
                _ = int.recv() => Some((libc::SIGINT, "SIGINT")),
                _ = term.recv() => Some((libc::SIGTERM, "SIGTERM")),
                _ = tokio::time::sleep(timeout) => None,
            }
        })
    }

    fn wait(&mut self) -> &'static str {
        let (int, term) = (&mut self.int, &mut self.term);
        self.rt.block_on(async {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        })
    }
}

fn containerd(keep: bool) -> Result<ExitCode> {
    let mut signals = Signals::install()?;
    setup()?;
    let env = Env::start(EnvOpts {
        base_dir: Some(PathBuf::from("/tmp")),
        keep_dir: keep,
        ..EnvOpts::default()
    })?;
    println!("{}", env.endpoint());
    eprintln!(
        "xtask: containerd ready ({}), log {}; Ctrl-C stops it",
        env.cri_version()?,
        env.log_path().display()
    );
    let sig = signals.wait();
    eprintln!("xtask: {sig}: tearing down");
    env.stop()?;
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> Result<String> {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").context("cannot read hostname")?;
    Ok(h.trim().to_lowercase())
}

fn run_agent(
    manifests: Option<PathBuf>,
    cluster: bool,
    release: bool,
    extra: &[String],
) -> Result<ExitCode> {
    let mut signals = Signals::install()?;
    let manifests = match manifests {
        Some(m) => {
            std::path::absolute(&m).with_context(|| format!("bad manifest path {}", m.display()))?
        }
        None => xtask::workspace_root().join("examples/static-pods"),
    };
    if !manifests.exists() {
        eprintln!("xtask: warning: {} does not exist", manifests.display());
    }
    setup()?;
    let bin = build_agent(release)?;
    let node_name = hostname()?;
    // Started before the session and stopped after it (dropped last), so the agent never
    // runs against a control plane that is not there yet.
    let control_plane = if cluster {
        let c = start_run_cluster(&node_name)?;
        if manifests.is_dir() {
            xtask::run::ensure_namespaces(&c, &manifests)?;
        }
        Some(c)
    } else {
        None
    };
    let mut session = Session::start(SessionOpts {
        bin,
        manifests: manifests.clone(),
        node_name,
        args: extra.to_vec(),
        agent_log: None,
        env: EnvOpts {
            base_dir: Some(PathBuf::from("/tmp")),
            ..EnvOpts::default()
        },
        cluster: control_plane.as_ref().map(xtask::run::ClusterJoin::of),
    })?;
    print_run(&session, &manifests);
    if let Some(c) = &control_plane {
        eprintln!(
            "xtask: nodelet joins Kubernetes {} at {} as node {} (state and logs in {}); its \
             API listens on {}:10250, where the API server calls it for kubectl logs/exec; \
             Ctrl-C also stops the control plane, whose state stays for the next run",
            c.release(),
            c.server(),
            c.node_name(),
            c.dir().display(),
            xtask::host_ip().map_or_else(|e| format!("({e})"), |ip| ip.to_string())
        );
        println!(
            "{} --kubeconfig {} get nodes,pods -A -o wide",
            c.kubectl_path().display(),
            c.admin_kubeconfig().display()
        );
    }
    let mut forwarded = 0;
    let status = loop {
        if let Some(st) = session.try_wait_agent()? {
            break st;
        }
        let Some((sig, name)) = signals.wait_timeout(Duration::from_millis(100)) else {
            continue;
        };
        forwarded += 1;
        if forwarded == 1 {
            eprintln!(
                "xtask: {name}: stopping nodelet (which, like the kubelet, leaves its pods \
                 running), then removing the pods it ran; {name} again kills it"
            );
            session.signal_agent(sig);
        } else {
            session.signal_agent(libc::SIGKILL);
        }
    };
    eprintln!("xtask: nodelet exited ({status}); removing its pods");
    let removed = session.finish()?;
    eprintln!("xtask: {removed}; containerd stopped");
    if let Some(c) = control_plane {
        c.stop()?;
        eprintln!("xtask: control plane stopped");
    }
    Ok(exit_code(status))
}

/// The control plane for `cargo xtask run --cluster`: built (cached by version) and started
/// in the default cluster dir, owned by this process.
fn start_run_cluster(node_name: &str) -> Result<xtask::cluster::Cluster> {
    use xtask::{cluster, k8s};
    if let Some(why) = k8s::go_unavailable()
        && cluster::unavailable(k8s::RELEASE, k8s::ETCD_VERSION).is_some()
    {
        bail!("--cluster needs the control plane, which cannot be built here: {why}");
    }
    k8s::control_plane(k8s::RELEASE, k8s::ETCD_VERSION)?;
    cluster::Cluster::start(cluster::ClusterOpts {
        node_name: node_name.to_owned(),
        ..cluster::ClusterOpts::new(cluster::default_dir())
    })
}

/// Where things are in a `cargo xtask run`, for its user.
fn print_run(session: &Session, manifests: &Path) {
    let env = session.env();
    eprintln!(
        "xtask: nodelet (pid {}) runs the pods in {} on containerd in {} (log {}); \
         pod cgroups under {}",
        session.agent_pid().unwrap_or(0),
        manifests.display(),
        env.dir().display(),
        env.log_path().display(),
        session.cgroup_root()
    );
    match (session.config(), session.client_cert()) {
        (Some(config), Some(client)) => {
            eprintln!(
                "xtask: config {} (examples/kubelet-config.yaml); pod logs in \
                 {}/<namespace>_<pod>_<uid>/<container>/<restart>.log",
                config.display(),
                session.logs_dir().display()
            );
            eprintln!(
                "xtask: API on loopback, client certificate only: curl --cacert {} --cert {} \
                 --key {} https://127.0.0.1:10250/pods",
                session.root_dir().join("pki/kubelet.crt").display(),
                client.cert.display(),
                client.key.display()
            );
        }
        _ => eprintln!(
            "xtask: your --config decides the API's settings and podLogsDir (default \
             /var/log/pods); the pods' log dirs there are removed too"
        ),
    }
    eprintln!("xtask: Ctrl-C stops nodelet and removes the pods it ran and all they left");
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

fn test(extra: &[String]) -> Result<ExitCode> {
    let images = setup()?;
    let bin = build_agent(false)?;
    // The control plane builds before the tests, not inside one of them: a cold build takes
    // 10-30 min of both cores and would starve the tests running beside it.
    match xtask::k8s::go_unavailable() {
        None => {
            let cp = xtask::k8s::control_plane(xtask::k8s::RELEASE, xtask::k8s::ETCD_VERSION)?;
            eprintln!(
                "xtask: control plane {} ready ({})",
                xtask::k8s::RELEASE,
                cp.apiserver.display()
            );
            let ms = xtask::k8s::build_metrics_server(xtask::k8s::METRICS_SERVER_VERSION)?;
            eprintln!("xtask: metrics-server ready ({})", ms.display());
            // tests/tests/conformance_subset.rs: e2e.test (cold: about 3 min of the two cores)
            // and the test images' binaries.
            let e2e = xtask::k8s::build(
                xtask::k8s::RELEASE,
                &["test/e2e", "test/images/agnhost", "test/images/nonewprivs"],
            )?;
            eprintln!("xtask: e2e.test ready ({})", e2e[0].display());
        }
        Some(why) if xtask::require_all() => {
            bail!(
                "{}=1 but the control plane cannot be built: {why}",
                xtask::REQUIRE_ALL_VAR
            )
        }
        Some(why) => eprintln!("xtask: no control plane ({why}); cluster tests will skip"),
    }
    let mut c = cargo();
    // Every test binary runs even after one fails: one CI run shows every failure.
    c.args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .env(xtask::BIN_VAR, &bin)
        .env(xtask::IMAGES_DIR_VAR, &images.dir);
    // NODELET_REQUIRE_ALL is inherited as it is.
    let st = status_of(&mut c)?;
    Ok(exit_code(st))
}

fn kubelet_kinds(kubelet: &str) -> Result<Vec<xtask::kubelet::Kind>> {
    use xtask::kubelet::Kind;
    Ok(match kubelet {
        "go" => vec![Kind::Go],
        "nodelet" => vec![Kind::Nodelet],
        "both" => vec![Kind::Go, Kind::Nodelet],
        other => bail!("unknown --kubelet {other:?} (known: go, nodelet, both)"),
    })
}

fn conformance_reports(kubelet: &str, out: Option<PathBuf>) -> Result<ExitCode> {
    let out = out.unwrap_or_else(|| xtask::target_dir().join("nodelet-conformance"));
    let results = kubelet_kinds(kubelet)?
        .into_iter()
        .map(|k| xtask::conformance::load(&out, k))
        .collect::<Result<Vec<_>>>()?;
    print!("{}", xtask::conformance::table(&results));
    Ok(ExitCode::SUCCESS)
}

fn conformance(
    kubelet: &str,
    focus: Option<String>,
    skip: Option<String>,
    parallel: usize,
    timeout_min: u64,
    out: Option<PathBuf>,
) -> Result<ExitCode> {
    use xtask::conformance::{self, ConformanceOpts};
    use xtask::kubelet::Kind;
    let kubelets = kubelet_kinds(kubelet)?;
    let images = setup()?;
    let nodelet = if kubelets.contains(&Kind::Nodelet) {
        build_agent(false)?
    } else {
        xtask::nodelet_bin()
    };
    let results = conformance::run(&ConformanceOpts {
        kubelets,
        focus,
        skip,
        out: out.unwrap_or_else(|| xtask::target_dir().join("nodelet-conformance")),
        nodelet,
        images_dir: images.dir,
        timeout: Duration::from_secs(timeout_min * 60),
        parallel: parallel.max(1),
    })?;
    print!("{}", conformance::table(&results));
    Ok(ExitCode::SUCCESS)
}

fn install(prefix: &Path) -> Result<ExitCode> {
    let unit_src = xtask::workspace_root().join("agent/dist/nodelet.service");
    let unit = fs::read_to_string(&unit_src)
        .with_context(|| format!("cannot read {}", unit_src.display()))?;
    let built = build_agent(true)?;
    let prefix =
        std::path::absolute(prefix).with_context(|| format!("bad prefix {}", prefix.display()))?;
    let bin_dir = prefix.join("bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("cannot create {}", bin_dir.display()))?;
    let dest = bin_dir.join("nodelet");
    // Copy then rename: replacing a running binary in place fails with ETXTBSY.
    let tmp = bin_dir.join(".nodelet.new");
    fs::copy(&built, &tmp)
        .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
        .and_then(|()| fs::rename(&tmp, &dest))
        .with_context(|| format!("cannot install {}", dest.display()))?;
    eprintln!("xtask: installed {}", dest.display());

    let unit = unit.replace("/usr/local/bin/nodelet", &dest.to_string_lossy());
    let unit_dir = Path::new("/etc/systemd/system");
    fs::create_dir_all(unit_dir)
        .with_context(|| format!("cannot create {}", unit_dir.display()))?;
    let unit_dest = unit_dir.join("nodelet.service");
    fs::write(&unit_dest, unit).with_context(|| format!("cannot write {}", unit_dest.display()))?;
    eprintln!("xtask: installed {}", unit_dest.display());
    // sd_booted(3): systemd is PID 1 exactly when this directory exists.
    if Path::new("/run/systemd/system").is_dir() {
        xtask::process::run(Command::new("systemctl").arg("daemon-reload"))?;
    } else {
        eprintln!("xtask: systemd is not running; skipped daemon-reload");
    }
    Ok(ExitCode::SUCCESS)
}

fn cluster(
    action: &str,
    dir: Option<PathBuf>,
    node_name: Option<String>,
    packages: &[String],
) -> Result<ExitCode> {
    use xtask::cluster::{self, Cluster, ClusterOpts};
    use xtask::k8s;
    if action != "build" && !packages.is_empty() {
        bail!("packages after `--` are for `cluster build` only");
    }
    let dir = dir.unwrap_or_else(cluster::default_dir);
    match action {
        "build" => {
            let b = k8s::control_plane(k8s::RELEASE, k8s::ETCD_VERSION)?;
            let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
            let extra = k8s::build(k8s::RELEASE, &packages)?;
            let ms = k8s::build_metrics_server(k8s::METRICS_SERVER_VERSION)?;
            for p in [
                &b.etcd,
                &b.apiserver,
                &b.controller_manager,
                &b.scheduler,
                &b.kubectl,
            ]
            .into_iter()
            .chain(&extra)
            .chain([&ms])
            {
                println!("{}", p.display());
            }
        }
        "up" => {
            let mut opts = ClusterOpts::new(dir);
            opts.detach = true;
            if let Some(n) = node_name {
                opts.node_name = n;
            }
            let c = Cluster::start(opts)?;
            eprintln!(
                "xtask: Kubernetes {} up at {} (node {}); logs and state in {}",
                c.release(),
                c.server(),
                c.node_name(),
                c.dir().display()
            );
            eprintln!(
                "xtask: node kubeconfig {}, bootstrap kubeconfig {}",
                c.node_kubeconfig().display(),
                c.bootstrap_kubeconfig().display()
            );
            println!(
                "{} --kubeconfig {} get --raw /readyz",
                c.kubectl_path().display(),
                c.admin_kubeconfig().display()
            );
            c.leave_running();
        }
        "down" => {
            cluster::down(&dir)?;
            eprintln!("xtask: cluster in {} stopped", dir.display());
        }
        "status" => {
            let mut healthy = true;
            for s in cluster::status(&dir)? {
                let pid = s.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
                let ready = match &s.ready {
                    Ok(port) => format!("ready (127.0.0.1:{port})"),
                    Err(e) => {
                        healthy = false;
                        format!("not ready: {e}")
                    }
                };
                healthy &= s.pid.is_some();
                println!("{:<24} pid {pid:<8} {ready}", s.component.name());
            }
            return Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        other => bail!("unknown cluster action {other:?} (known: build, up, down, status)"),
    }
    Ok(ExitCode::SUCCESS)
}
