//! End-to-end test kit: a [`Node`] is a private containerd (from the xtask kit), a static pod
//! directory, and the real `nodelet` binary running against them. Tests judge only what a user
//! sees: CRI state, log files, cgroup directories and the agent's own log.
//!
//! Prerequisites missing (not root, no containerd, binary not built): the test prints why and
//! passes, unless `NODELET_REQUIRE_ALL=1`, where it fails.

pub mod bench;

use anyhow::{Context, Result, bail};
use proto::runtime::v1 as cri;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xtask::containerd::{Env, EnvOpts};

pub use xtask::testing::skip;

pub mod cluster;
pub mod pki;
pub mod prometheus;

/// Node name every test agent uses (`--hostname-override`).
pub const NODE: &str = "e2e-node";
/// Label carrying the container name.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Label carrying the pod name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label carrying the pod UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Extra settings for a [`Node`].
#[derive(Debug, Default, Clone)]
pub struct NodeOpts {
    /// Registries (`host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Extra KubeletConfiguration lines.
    pub extra_config: String,
    /// Extra environment variables for the agent process.
    pub env: Vec<(String, String)>,
    /// Where containerd's and the agent's directories go (default: the system temp dir),
    /// e.g. a small filesystem a disk-pressure test fills.
    pub base_dir: Option<PathBuf>,
}

/// One agent, its containerd and its directories. Dropping it stops both and removes all.
pub struct Node {
    /// The containerd environment.
    pub env: Env,
    /// Static pod manifests directory.
    pub manifests: PathBuf,
    /// podLogsDir.
    pub logs: PathBuf,
    /// The agent's --root-dir.
    pub root: PathBuf,
    /// The KubeletConfiguration file.
    pub config: PathBuf,
    /// The agent's stderr.
    pub agent_log: PathBuf,
    /// cgroupRoot the agent puts pods under (unique per node).
    pub cgroup_root: String,
    agent_env: Vec<(String, String)>,
    bin: PathBuf,
    agent: Option<Child>,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: proto::Client,
}

impl Node {
    /// Starts containerd; `Ok(None)` when the machine cannot (after printing why).
    /// Starts a node that also serves the read-only port (returned with it); the secure port
    /// gets another free port and healthz is off. `opts.extra_config` follows.
    pub fn start_with_read_only_port(mut opts: NodeOpts) -> Result<Option<(Node, u16)>> {
        let ro = free_port()?;
        opts.extra_config = format!(
            "readOnlyPort: {ro}\nport: {}\nhealthzPort: 0\naddress: 127.0.0.1\n{}",
            free_port()?,
            opts.extra_config
        );
        Ok(Node::start(opts)?.map(|n| (n, ro)))
    }

    pub fn start(opts: NodeOpts) -> Result<Option<Node>> {
        let Some(bin) = xtask::testing::nodelet_bin_or_skip()? else {
            return Ok(None);
        };
        let cgroup_root = format!(
            "/nodelet-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let Some(env) = xtask::testing::start_env_or_skip(EnvOpts {
            cgroup_parent: Some(cgroup_root.clone()),
            insecure_registries: opts.insecure_registries.clone(),
            base_dir: opts.base_dir.clone(),
            ..Default::default()
        })?
        else {
            return Ok(None);
        };
        let dir = match &opts.base_dir {
            Some(b) => tempfile::Builder::new()
                .prefix("nodelet-e2e-")
                .tempdir_in(b)?,
            None => tempfile::Builder::new().prefix("nodelet-e2e-").tempdir()?,
        };
        let manifests = dir.path().join("manifests");
        let logs = dir.path().join("pod-logs");
        let root = dir.path().join("root");
        for d in [&manifests, &logs, &root] {
            std::fs::create_dir_all(d)?;
        }
        let config = dir.path().join("kubelet-config.yaml");
        // Disk thresholds off unless a test sets its own: the kubelet's defaults
        // (nodefs.available 10%, imagefs.available 15%) would evict test pods whenever a
        // shared build machine's disk runs low, which says nothing about the agent.
        let eviction = if opts.extra_config.contains("evictionHard") {
            ""
        } else {
            "evictionHard:\n  memory.available: 100Mi\n"
        };
        // Periodic image GC off for the same reason (it starts at 85% disk use, and the
        // harness's images cannot be pulled back once removed).
        let image_gc = if opts.extra_config.contains("imageGCHighThresholdPercent") {
            ""
        } else {
            "imageGCHighThresholdPercent: 100\n"
        };
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 staticPodPath: {}\npodLogsDir: {}\ncgroupRoot: {cgroup_root}\n\
                 fileCheckFrequency: 5s\n{eviction}{image_gc}{}",
                manifests.display(),
                logs.display(),
                opts.extra_config
            ),
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = {
            let _g = rt.enter();
            proto::Client::connect_lazy(env.socket())
        };
        let agent_log = dir.path().join("agent.log");
        let mut node = Node {
            env,
            manifests,
            logs,
            root,
            config,
            agent_log,
            cgroup_root,
            agent_env: opts.env.clone(),
            bin,
            agent: None,
            _dir: dir,
            rt,
            client,
        };
        node.start_agent(&[])?;
        Ok(Some(node))
    }

    /// Starts the agent with the node's config plus `extra` flags (appending to its log).
    pub fn start_agent(&mut self, extra: &[&str]) -> Result<()> {
        self.start_agent_env(extra, &[])
    }

    /// [`Node::start_agent`] with `env` added to the node's agent environment for this run.
    pub fn start_agent_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.agent_log)?;
        let child = Command::new(&self.bin)
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--root-dir={}", self.root.display()))
            .arg(format!(
                "--container-runtime-endpoint={}",
                self.env.endpoint()
            ))
            .arg(format!("--hostname-override={NODE}"))
            .arg("--v=4")
            .args(extra)
            .envs(self.agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.agent = Some(child);
        Ok(())
    }

    /// Stops the agent with `signal` (SIGTERM: graceful; SIGKILL: a crash) and waits for it.
    pub fn stop_agent(&mut self, signal: i32) -> Result<()> {
        if let Some(mut c) = self.agent.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
            c.wait()?;
        }
        Ok(())
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    /// Writes a manifest file into the static pod directory (atomically, as editors do).
    pub fn write_manifest(&self, file: &str, text: &str) -> Result<()> {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.manifests.join(file))?;
        Ok(())
    }

    /// Removes a manifest file.
    pub fn remove_manifest(&self, file: &str) -> Result<()> {
        Ok(std::fs::remove_file(self.manifests.join(file))?)
    }

    /// Runs a future on the node's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// All containers the runtime has, any state.
    pub fn containers(&self) -> Result<Vec<cri::Container>> {
        let mut c = self.client.runtime();
        Ok(self
            .block_on(c.list_containers(cri::ListContainersRequest::default()))?
            .into_inner()
            .containers)
    }

    /// All sandboxes the runtime has, any state.
    pub fn sandboxes(&self) -> Result<Vec<cri::PodSandbox>> {
        let mut c = self.client.runtime();
        Ok(self
            .block_on(c.list_pod_sandbox(cri::ListPodSandboxRequest::default()))?
            .into_inner()
            .items)
    }

    /// Containers of the static pod `name` (the agent names it `<name>-<node>`).
    pub fn pod_containers(&self, name: &str) -> Result<Vec<cri::Container>> {
        let full = format!("{name}-{NODE}");
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| c.labels.get(POD_NAME_LABEL) == Some(&full))
            .collect())
    }

    /// Sandboxes of the static pod `name`.
    pub fn pod_sandboxes(&self, name: &str) -> Result<Vec<cri::PodSandbox>> {
        let full = format!("{name}-{NODE}");
        Ok(self
            .sandboxes()?
            .into_iter()
            .filter(|s| s.labels.get(POD_NAME_LABEL) == Some(&full))
            .collect())
    }

    /// `ContainerStatus` of one container.
    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let mut c = self.client.runtime();
        self.block_on(c.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))?
        .into_inner()
        .status
        .context("no status")
    }

    /// The log file of `container` in static pod `name`, attempt `restart`, if it exists.
    pub fn container_log(
        &self,
        ns: &str,
        name: &str,
        container: &str,
        restart: u32,
    ) -> Option<String> {
        let prefix = format!("{ns}_{name}-{NODE}_");
        let dir = std::fs::read_dir(&self.logs)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
        std::fs::read_to_string(dir.path().join(container).join(format!("{restart}.log"))).ok()
    }

    /// [`wait_for`], with the tail of the agent's log added to a timeout error.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        wait_for(what, timeout, f).map_err(|e| {
            let log = self.agent_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!("agent log tail:\n{}", tail.join("\n")))
        })
    }

    /// Directories of the pod cgroups under this node's cgroup root in `hierarchy`.
    pub fn pod_cgroups(&self, hierarchy: &str) -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(self.cgroup_root.trim_start_matches('/'));
        let mut out = Vec::new();
        let mut stack = vec![base];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let p = e.path();
                    if p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("pod"))
                    {
                        out.push(p.clone());
                    }
                    stack.push(p);
                }
            }
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop_agent(libc::SIGKILL);
        // A test may end with API or static pods still running; their tmpfs volumes (secret,
        // downwardAPI, projected token, emptyDir Memory) stay mounted under the root dir and the
        // temp dir could not be removed without this.
        if let Err(e) = xtask::process::unmount_under(&self.root) {
            eprintln!(
                "cannot unmount the volumes under {}: {e:#}",
                self.root.display()
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "--- agent log ({}) ---\n{}",
                self.agent_log.display(),
                self.agent_log()
            );
        }
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or fails after `timeout` with `what`.
/// Timeouts here are generous ceilings for "it happened", never measurements.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A hostNetwork busybox pod running `script` in container `c`.
pub fn host_pod(name: &str, restart_policy: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: {restart_policy}\n  terminationGracePeriodSeconds: 2\n  containers:\n  \
         - name: c\n    image: busybox:1.35\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// CRI state value for a running container.
pub fn running() -> i32 {
    cri::ContainerState::ContainerRunning as i32
}

/// CRI state value for an exited container.
pub fn exited() -> i32 {
    cri::ContainerState::ContainerExited as i32
}

/// Restart count annotation of a container.
pub fn restart_count(c: &cri::Container) -> u32 {
    c.annotations
        .get("io.kubernetes.container.restartCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP port that was free a moment ago on 127.0.0.1 (the agent binds it soon after).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// promtool lint findings allowed because the kubelet or cAdvisor expose these names so
/// (metric name, problem), for [`promtool_check`].
pub const LINT_ALLOWED: &[(&str, &str)] = &[
    // kubelet pkg/kubelet/metrics: a counter named without _total since 1.2x; kept for dashboards.
    (
        "kubelet_evictions",
        "counter metrics should have \"_total\" suffix",
    ),
    // pkg/kubelet/metrics PLEGDiscardEvents: the same, "kubelet_pleg_discard_events".
    (
        "kubelet_pleg_discard_events",
        "counter metrics should have \"_total\" suffix",
    ),
    // cadvisor metrics/prometheus.go: container_memory_failcnt is a counter without _total.
    (
        "container_memory_failcnt",
        "counter metrics should have \"_total\" suffix",
    ),
    // cadvisor metrics/prometheus.go: container_fs_inodes_total is a gauge named with _total.
    (
        "container_fs_inodes_total",
        "non-counter metrics should not have \"_total\" suffix",
    ),
];

/// Runs `promtool check metrics` on an exposition: a parse error fails, and so does any lint
/// finding not in `allowed` (metric name, problem), for names the kubelet or cAdvisor expose
/// that way themselves.
pub fn promtool_check(what: &str, text: &str, allowed: &[(&str, &str)]) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("promtool stdin")?;
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        if line.contains("error") {
            bail!("promtool could not parse {what}: {line}\n{text}");
        }
        let ok = allowed
            .iter()
            .any(|(name, problem)| line.starts_with(name) && line.contains(problem));
        if !ok {
            bail!("promtool lint finding on {what}: {line}");
        }
    }
    Ok(())
}

/// GET over plain HTTP (the agent's read-only port); the body of a 200, else an error.
pub fn read_only_get(port: u16, path: &str) -> Result<String> {
    xtask::testing::http_get(port, path)
}

/// The static pod `name` (its mirror name `name-NODE`) in the read-only port's /pods, if listed.
pub fn listed_pod(port: u16, name: &str) -> Result<Option<serde_json::Value>> {
    xtask::testing::listed_static_pod(port, name, NODE)
}
