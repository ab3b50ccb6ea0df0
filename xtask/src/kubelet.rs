//! A kubelet joined to a loopback [`Cluster`]: the Go kubelet of [`crate::k8s::RELEASE`] (the
//! reference) or nodelet, each on a private containerd ([`Env`]) and started from the same
//! KubeletConfiguration ([`render_config`]), so a comparison differs only in the agent.
//!
//! Both get the node's client certificate kubeconfig (CN=system:node:<node>), serve the
//! kubelet API on the host's address at a free port (where the API server calls them for logs
//! and exec) with the cluster CA as client CA and Webhook authorization, use the cgroupfs
//! driver under a cgroup root of their own, and keep pod dirs, pod logs and certificates in the
//! Env's temp dir. [`Kubelet::stop`] sends SIGTERM (SIGKILL after 20 s), then the Env removes
//! the pods, their cgroups and mounts, the bridge and the dir.
//!
//! Deviations from the kubelet's defaults, each for this machine:
//! - `failCgroupV1: false`: the host is cgroup v1 (hybrid); from 1.35 the Go kubelet refuses it
//!   otherwise.
//! - `failSwapOn: false`: a machine with swap would stop the Go kubelet at start.
//! - `evictionHard` at 1 % for disk: the shared disk sits near the default 10 %/15 % marks, and
//!   DiskPressure would taint the node and fail every test for reasons of the machine.
//! - Image GC off (`imageGCHighThresholdPercent: 100`): on the shared disk (over 85 % used
//!   while other sessions build) the Go kubelet's GC removed the sandbox image, which cannot
//!   be pulled here, and every later pod failed in RunPodSandbox.
//! - `healthzPort: 0`, `readOnlyPort: 0`, a free `port`: several kubelets run side by side.
//! - The CNI bridge is the host's gateway ([`EnvOpts::pod_gateway`]) so probes reach pods.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::Cluster;
use crate::containerd::{Env, EnvOpts};

/// Where the Go kubelet links container logs (`kubelet.ContainerLogsDir`).
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";
/// How long a kubelet may take to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(20);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Which kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Go kubelet (`cmd/kubelet` of the release).
    Go,
    /// nodelet.
    Nodelet,
}

impl Kind {
    /// `go` or `nodelet`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Go => "go",
            Kind::Nodelet => "nodelet",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Go => "Go kubelet",
            Kind::Nodelet => "nodelet",
        })
    }
}

/// How to start a [`Kubelet`].
#[derive(Debug, Clone)]
pub struct KubeletOpts {
    /// Which agent.
    pub kind: Kind,
    /// Its binary.
    pub bin: PathBuf,
    /// Registries (`host:port`) containerd reaches over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Where the agent's stdout and stderr go.
    pub log: PathBuf,
    /// Arguments after the harness's own (a repeated flag takes the last value).
    pub args: Vec<String>,
    /// KubeletConfiguration lines after the harness's (see [`ConfigParams::extra`]).
    pub config_extra: String,
}

/// A running kubelet and its containerd; [`Kubelet::stop`] (or drop) removes everything.
#[derive(Debug)]
pub struct Kubelet {
    kind: Kind,
    env: Option<Env>,
    child: Option<Child>,
    cgroup_root: String,
    port: u16,
    log: PathBuf,
}

/// What [`render_config`] needs.
#[derive(Debug, Clone)]
pub struct ConfigParams<'a> {
    /// Address to serve on (the node's InternalIP).
    pub address: &'a str,
    /// Kubelet API port.
    pub port: u16,
    /// Client CA for the API (the cluster CA: the API server's kubelet client chains to it).
    pub client_ca: &'a Path,
    /// `unix://…` of containerd.
    pub runtime_endpoint: &'a str,
    /// cgroupRoot (must exist in every hierarchy).
    pub cgroup_root: &'a str,
    /// podLogsDir.
    pub pod_logs_dir: &'a Path,
    /// Lines appended as they are; an `evictionHard:` block among them replaces the
    /// harness's (a YAML key may appear once).
    pub extra: &'a str,
}

/// The KubeletConfiguration both kubelets run with (see the module docs for each deviation
/// from the defaults). Paths are written as JSON strings, which YAML reads as quoted scalars.
pub fn render_config(p: &ConfigParams<'_>) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         address: {address}\n\
         port: {port}\n\
         readOnlyPort: 0\n\
         healthzPort: 0\n\
         authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  \
         x509:\n    clientCAFile: {ca}\n\
         authorization:\n  mode: Webhook\n\
         cgroupDriver: cgroupfs\n\
         cgroupRoot: {root}\n\
         failCgroupV1: false\n\
         failSwapOn: false\n\
         containerRuntimeEndpoint: {endpoint}\n\
         podLogsDir: {logs}\n\
         {eviction}\
         imageGCHighThresholdPercent: 100\n\
         imageGCLowThresholdPercent: 99\n{extra}",
        address = q(p.address),
        port = p.port,
        ca = q(&p.client_ca.to_string_lossy()),
        root = q(p.cgroup_root),
        endpoint = q(p.runtime_endpoint),
        logs = q(&p.pod_logs_dir.to_string_lossy()),
        eviction = if p.extra.lines().any(|l| l.starts_with("evictionHard:")) {
            String::new()
        } else {
            format!("evictionHard:\n  memory.available: 100Mi\n{DISK_EVICTION_HARD}")
        },
        extra = p.extra,
    )
}

/// The harness's disk eviction marks (see the module docs), for an `evictionHard` block that
/// replaces the harness's.
pub const DISK_EVICTION_HARD: &str =
    "  nodefs.available: 1%\n  imagefs.available: 1%\n  nodefs.inodesFree: 1%\n";

/// Creates cgroup `path` in every mounted hierarchy (the Go kubelet refuses a `cgroupRoot`
/// that does not exist), with cpuset's cpus and mems copied from the root (a new v1 cpuset
/// cgroup starts empty and admits no task).
pub fn make_cgroup(path: &str) -> Result<()> {
    let root = Path::new("/sys/fs/cgroup");
    let rel = path.trim_start_matches('/');
    let mut hierarchies: Vec<PathBuf> = fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    if root.join("cgroup.controllers").exists() {
        hierarchies = vec![root.to_owned()];
    }
    for h in hierarchies {
        let d = h.join(rel);
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = fs::read_to_string(h.join(f))
                && d.join(f).exists()
            {
                fs::write(d.join(f), v.trim())
                    .with_context(|| format!("cannot write {}", d.join(f).display()))?;
            }
        }
    }
    Ok(())
}

/// The Go kubelet links each container's log into `/var/log/containers` (a fixed path) and
/// unlinks it only when it removes the container itself; the Env removes containers over CRI,
/// so the links into `dir` are removed here.
pub fn remove_log_links(dir: &Path) {
    let Ok(entries) = fs::read_dir(CONTAINER_LOG_LINKS) else {
        return;
    };
    for e in entries.flatten() {
        if fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A free TCP port on all addresses (the kubelet serves on the host's).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).context("cannot bind 0.0.0.0:0")?;
    Ok(l.local_addr().context("no local address")?.port())
}

impl Kubelet {
    /// Starts containerd and the kubelet as node [`Cluster::node_name`] of `cluster`.
    pub fn start(cluster: &Cluster, opts: &KubeletOpts) -> Result<Kubelet> {
        let cgroup_root = format!(
            "/nodelet-conformance-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let env = Env::start(EnvOpts {
            base_dir: Some(PathBuf::from("/tmp")),
            cgroup_parent: Some(cgroup_root.clone()),
            insecure_registries: opts.insecure_registries.clone(),
            pod_gateway: true,
            ..EnvOpts::default()
        })?;
        let port = free_port()?;
        let mut k = Kubelet {
            kind: opts.kind,
            env: Some(env),
            child: None,
            cgroup_root,
            port,
            log: opts.log.clone(),
        };
        // On failure `k` drops here, which removes the Env.
        k.launch(cluster, opts)?;
        Ok(k)
    }

    fn launch(&mut self, cluster: &Cluster, opts: &KubeletOpts) -> Result<()> {
        let env = self.env.as_ref().context("no Env")?;
        let dir = env.dir().to_owned();
        let root_dir = dir.join("kubelet");
        let logs = dir.join("pod-logs");
        for d in [&root_dir, &logs] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        make_cgroup(&self.cgroup_root)?;
        let ip = crate::host_ip().context("a kubelet serves on the host's address")?;
        let address = ip.to_string();
        let config = dir.join("kubelet-config.yaml");
        let ca = cluster.ca_path();
        let endpoint = env.endpoint();
        fs::write(
            &config,
            render_config(&ConfigParams {
                address: &address,
                port: self.port,
                client_ca: &ca,
                runtime_endpoint: &endpoint,
                cgroup_root: &self.cgroup_root,
                pod_logs_dir: &logs,
                extra: &opts.config_extra,
            }),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let mut cmd = Command::new(&opts.bin);
        cmd.arg(format!("--config={}", config.display()))
            .arg(format!(
                "--kubeconfig={}",
                cluster.node_kubeconfig().display()
            ))
            .arg(format!("--hostname-override={}", cluster.node_name()))
            .arg(format!("--node-ip={address}"))
            .arg(format!("--root-dir={}", root_dir.display()));
        if opts.kind == Kind::Nodelet {
            // nodelet reads the runtime endpoint from the flag as from the file; the flag
            // makes the log line that names it the same for every start.
            cmd.arg(format!("--container-runtime-endpoint={endpoint}"));
        } else {
            cmd.arg(format!("--cert-dir={}", root_dir.join("pki").display()));
        }
        cmd.args(&opts.args).stdin(Stdio::null());
        let out = fs::File::options()
            .create(true)
            .append(true)
            .open(&opts.log)
            .with_context(|| format!("cannot open {}", opts.log.display()))?;
        let err = out.try_clone().context("cannot duplicate a file handle")?;
        cmd.stdout(out).stderr(err).process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = crate::process::describe(&cmd);
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("cannot start {shown}"))?,
        );
        Ok(())
    }

    /// Which agent this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The kubelet API port (on the host's address).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its cgroupRoot (the pods cgroup is `<root>/kubepods`).
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The agent's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The containerd environment.
    pub fn env(&self) -> Option<&Env> {
        self.env.as_ref()
    }

    /// `Some(how)` once the agent has exited.
    pub fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Waits until the Node is Ready in `cluster` (or fails naming the agent's log).
    pub fn wait_ready(&mut self, cluster: &Cluster, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let node = cluster.node_name().to_owned();
        loop {
            if let Some(exit) = self.exited() {
                bail!(
                    "the {} exited ({exit}) before its Node was Ready; {} ends with:\n{}",
                    self.kind,
                    self.log.display(),
                    crate::process::log_tail(&self.log, 30)
                );
            }
            let ready = cluster
                .kubectl(&[
                    "get",
                    "node",
                    &node,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_ok_and(|s| s.trim() == "True");
            if ready {
                eprintln!(
                    "xtask: {} node {node} Ready after {:.1} s",
                    self.kind,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() >= timeout {
                bail!(
                    "the {}'s Node {node} not Ready after {timeout:?}; {} ends with:\n{}",
                    self.kind,
                    self.log.display(),
                    crate::process::log_tail(&self.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self
            .child
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
        {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped, so
            // the pid is still ours.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGTERM, SIGKILL after [`GRACE`], then the Env's teardown (pods, cgroups, mounts,
    /// bridge, dir). Returns how the agent exited.
    pub fn stop(mut self) -> Result<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<String> {
        let mut exit = "not started".to_owned();
        if let Some(mut c) = self.child.take() {
            self.signal_child(&c, libc::SIGTERM);
            let deadline = Instant::now() + GRACE;
            exit = loop {
                if let Some(st) = c.try_wait().context("cannot wait for the kubelet")? {
                    break st.to_string();
                }
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let st = c.wait().context("cannot wait for the kubelet")?;
                    break format!("{st}, killed after {GRACE:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            };
        }
        if let Some(env) = self.env.take() {
            let dir = env.dir().to_owned();
            env.stop()?;
            remove_log_links(&dir);
        }
        let left = crate::containerd::remove_cgroup_subtree(&self.cgroup_root);
        if !left.is_empty() {
            bail!("after stopping the {}: {}", self.kind, left.join("; "));
        }
        Ok(exit)
    }

    fn signal_child(&self, c: &Child, sig: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: as in `signal`: the child is not reaped yet.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if self.child.is_none() && self.env.is_none() {
            return;
        }
        self.signal(libc::SIGKILL);
        if let Err(e) = self.teardown() {
            eprintln!("xtask: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kubelets_get_the_hosts_cgroup_settings() {
        let c = render_config(&ConfigParams {
            address: "192.0.2.2",
            port: 10333,
            client_ca: Path::new("/c/ca.crt"),
            runtime_endpoint: "unix:///tmp/e/containerd.sock",
            cgroup_root: "/nodelet-conformance-1-0",
            pod_logs_dir: Path::new("/tmp/e/pod-logs"),
            extra: "",
        });
        for line in [
            "\nfailCgroupV1: false\n",
            "\ncgroupDriver: cgroupfs\n",
            "\nport: 10333\n",
            "\ncgroupRoot: \"/nodelet-conformance-1-0\"\n",
            "\n    clientCAFile: \"/c/ca.crt\"\n",
            "\n  mode: Webhook\n",
            "\ncontainerRuntimeEndpoint: \"unix:///tmp/e/containerd.sock\"\n",
        ] {
            assert!(c.contains(line), "{line:?} missing in\n{c}");
        }
    }

    #[test]
    fn an_extra_eviction_block_replaces_the_harnesss() {
        let params = |extra| ConfigParams {
            address: "192.0.2.2",
            port: 10333,
            client_ca: Path::new("/c/ca.crt"),
            runtime_endpoint: "unix:///tmp/e/containerd.sock",
            cgroup_root: "/r",
            pod_logs_dir: Path::new("/tmp/e/pod-logs"),
            extra,
        };
        let plain = render_config(&params("maxPods: 10\n"));
        assert_eq!(plain.matches("evictionHard:").count(), 1, "{plain}");
        assert!(plain.ends_with("\nmaxPods: 10\n"), "{plain}");
        let own =
            format!("evictionHard:\n  allocatableMemory.available: 100Mi\n{DISK_EVICTION_HARD}");
        let c = render_config(&params(&own));
        assert_eq!(c.matches("evictionHard:").count(), 1, "{c}");
        assert!(
            c.contains("  allocatableMemory.available: 100Mi\n  nodefs.available: 1%\n"),
            "{c}"
        );
    }
}
