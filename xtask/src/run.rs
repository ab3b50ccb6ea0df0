//! `cargo xtask run` as a library, so that a test drives exactly what a user runs: a
//! [`Session`] starts a private containerd ([`Env`]) and the agent on a static pod directory;
//! [`Session::stop`] ends it the way Ctrl-C does.
//!
//! Nothing outlives a session. The agent, like the kubelet, leaves its pods running when it is
//! stopped (SIGINT, SIGTERM); the session then removes them. Everything the pods and the agent
//! create lives where the Env's teardown removes it: `--root-dir` (pod dirs, volumes, the
//! self-signed serving certificate) and `podLogsDir` under the Env's temp dir; pod cgroups, with
//! the `kubepods` QoS cgroups above them, under a `--cgroup-root` that is the Env's cgroup
//! parent; CNI state in the Env's network slot. A caller's own `--config` may put podLogsDir
//! elsewhere: the log dirs of the pods that ran are then removed there, as CRI names them.
//!
//! Unless the caller passes `--config`, the agent reads [`EXAMPLE_CONFIG`]
//! (examples/kubelet-config.yaml): loopback only, read-only port off, anonymous requests
//! refused. The session makes a client CA and one client certificate, so the API stays usable.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use proto::runtime::v1 as cri;

use crate::containerd::{Env, EnvOpts};
use crate::process;

/// The KubeletConfiguration a session gives the agent unless the caller passes `--config`.
pub const EXAMPLE_CONFIG: &str = include_str!("../../examples/kubelet-config.yaml");

/// Flags a session sets itself: pointing them elsewhere would put pod state where stopping the
/// session cannot find it.
const OWN_FLAGS: &[&str] = &["--root-dir", "--cgroup-root"];

/// How long the agent may take to exit after SIGINT (it drains its tasks for up to 10 s).
const AGENT_GRACE: Duration = Duration::from_secs(20);

/// Sessions started by this process, to name their cgroups apart.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// How to start a [`Session`].
#[derive(Debug, Clone)]
pub struct SessionOpts {
    /// The agent binary.
    pub bin: PathBuf,
    /// The static pod directory (`--pod-manifest-path`).
    pub manifests: PathBuf,
    /// The node name (`--hostname-override`).
    pub node_name: String,
    /// Agent arguments, after the session's own (a repeated flag takes its last value).
    pub args: Vec<String>,
    /// Where the agent's stdout and stderr go; `None`: ours.
    pub agent_log: Option<PathBuf>,
    /// The Env to start; its `cgroup_parent` is the session's cgroup root.
    pub env: EnvOpts,
    /// Join this loopback control plane (`cargo xtask run --cluster`); `None`: standalone.
    pub cluster: Option<ClusterJoin>,
}

/// What the agent needs to join a [`crate::cluster::Cluster`] from a session.
#[derive(Debug, Clone)]
pub struct ClusterJoin {
    /// The node's kubeconfig (client certificate CN=system:node:<node>).
    pub kubeconfig: PathBuf,
    /// The cluster CA: the API server's kubelet client certificate chains to it, so with the
    /// session's own CA it makes the agent's client CA bundle (`kubectl logs/exec` go
    /// apiserver -> agent).
    pub ca: PathBuf,
}

impl ClusterJoin {
    /// The join for `c`'s node.
    pub fn of(c: &crate::cluster::Cluster) -> ClusterJoin {
        ClusterJoin {
            kubeconfig: c.node_kubeconfig(),
            ca: c.ca_path(),
        }
    }
}

/// The client certificate a session makes for its user, and the CA the agent checks it against.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The CA (`--client-ca-file`).
    pub ca: PathBuf,
    /// The client certificate (CN=xtask-run).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A pod sandbox the runtime had when the session stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPod {
    /// Namespace.
    pub namespace: String,
    /// Name (`<static pod>-<node>`).
    pub name: String,
    /// UID.
    pub uid: String,
    /// Its log directory, as the agent gave it to the runtime.
    pub log_directory: PathBuf,
    /// Its cgroup parent (`<cgroup root>/kubepods/<qos>/pod<uid>`).
    pub cgroup_parent: String,
}

/// What stopping a session removed.
#[derive(Debug)]
pub struct Removed {
    /// How the agent exited.
    pub agent_exit: String,
    /// The pods that were still there.
    pub pods: Vec<RunPod>,
    /// The Env's temp dir (root dir, pod logs, containerd's state), removed unless kept.
    pub dir: PathBuf,
    /// Whether `dir` was kept (`NODELET_KEEP_ENV`).
    pub kept_dir: bool,
    /// The cgroup root, removed in every hierarchy.
    pub cgroup_root: String,
    /// The CNI bridge, deleted with its address leases.
    pub bridge: String,
    /// Pod log dirs outside `dir` (a caller's podLogsDir) that were removed, and that
    /// podLogsDir itself when the run created it.
    pub other_log_dirs: Vec<PathBuf>,
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let pods = match names.len() {
            0 => "no pods were left".to_owned(),
            1 => format!("removed 1 pod ({}) with its containers", names.join(", ")),
            n => format!(
                "removed {n} pods ({}) with their containers",
                names.join(", ")
            ),
        };
        write!(
            f,
            "{pods}; cgroups under {} (kubepods QoS cgroups included) in every hierarchy; \
             CNI bridge {} and its address leases",
            self.cgroup_root, self.bridge
        )?;
        if self.kept_dir {
            write!(f, "; kept {} (NODELET_KEEP_ENV)", self.dir.display())?;
        } else {
            write!(
                f,
                "; {} with containerd's state, pod dirs and pod logs",
                self.dir.display()
            )?;
        }
        for d in &self.other_log_dirs {
            write!(f, "; {}", d.display())?;
        }
        Ok(())
    }
}

/// A running containerd and agent; see the module docs. Dropping it without [`Session::stop`]
/// kills the agent and tears down the same way.
#[derive(Debug)]
pub struct Session {
    env: Option<Env>,
    agent: Option<Child>,
    root_dir: PathBuf,
    logs_dir: PathBuf,
    cgroup_root: String,
    config: Option<PathBuf>,
    client: Option<ClientCert>,
    keep_dir: bool,
    started: SystemTime,
}

/// Whether `args` set `flag` (`--flag value` or `--flag=value`).
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

/// [`EXAMPLE_CONFIG`] with the session's podLogsDir.
fn render_config(logs_dir: &Path) -> Result<String> {
    if EXAMPLE_CONFIG.lines().any(|l| l.starts_with("podLogsDir:")) {
        bail!("examples/kubelet-config.yaml sets podLogsDir; `cargo xtask run` sets it itself");
    }
    // A JSON string is a YAML double-quoted scalar.
    let dir = serde_json::to_string(&logs_dir.to_string_lossy())
        .context("cannot quote the pod logs dir")?;
    let mut out = EXAMPLE_CONFIG.trim_end().to_owned();
    out.push_str("\n# Added by cargo xtask run: pod logs go with the run's temp dir.\n");
    out.push_str(&format!("podLogsDir: {dir}\n"));
    Ok(out)
}

/// Concatenates the PEM files `cas` into `out`.
fn ca_bundle(cas: &[&Path], out: &Path) -> Result<PathBuf> {
    let mut pem = String::new();
    for ca in cas {
        let text =
            fs::read_to_string(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        pem.push_str(text.trim_end());
        pem.push('\n');
    }
    fs::write(out, pem).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out.to_owned())
}

/// A client CA and one client certificate (CN=xtask-run, clientAuth) in `dir`, by openssl.
fn make_client_cert(dir: &Path) -> Result<ClientCert> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let c = ClientCert {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    };
    let ca_key = dir.join("ca.key");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    process::run(
        Command::new("openssl")
            .args(["req", "-x509", "-days", "7"])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&c.ca)
            .args(["-subj", "/CN=nodelet-xtask-run-client-ca"]),
    )?;
    process::run(
        Command::new("openssl")
            .args(["req", "-x509", "-days", "7"])
            .args(ec)
            .arg("-keyout")
            .arg(&c.key)
            .arg("-out")
            .arg(&c.cert)
            .args(["-subj", "/CN=xtask-run"])
            .arg("-CA")
            .arg(&c.ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "keyUsage=critical,digitalSignature"])
            .args(["-addext", "extendedKeyUsage=clientAuth"]),
    )?;
    // Nothing else is signed with it.
    fs::remove_file(&ca_key).with_context(|| format!("cannot remove {}", ca_key.display()))?;
    Ok(c)
}

impl Session {
    /// Starts containerd, then the agent on `opts.manifests` (see the module docs).
    pub fn start(opts: SessionOpts) -> Result<Session> {
        for flag in OWN_FLAGS {
            if has_flag(&opts.args, flag) {
                bail!(
                    "`cargo xtask run` sets {flag} itself, so that stopping it removes \
                     everything the pods left; for another set-up run nodelet yourself against \
                     `cargo xtask containerd`"
                );
            }
        }
        let cgroup_root = format!(
            "/nodelet-xtask-run-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let keep_dir = opts.env.keep_dir;
        // A second of slack: some filesystems keep coarse birth times.
        let started = SystemTime::now() - Duration::from_secs(1);
        let env = Env::start(EnvOpts {
            cgroup_parent: Some(cgroup_root.clone()),
            ..opts.env.clone()
        })?;
        // From here on, dropping the session (or the Env, before the session exists) tears down.
        let mut session = Session {
            root_dir: env.dir().join("kubelet"),
            logs_dir: env.dir().join("pod-logs"),
            env: Some(env),
            agent: None,
            cgroup_root,
            config: None,
            client: None,
            keep_dir,
            started,
        };
        session.launch(&opts)?;
        Ok(session)
    }

    fn launch(&mut self, opts: &SessionOpts) -> Result<()> {
        let env = self.env();
        for d in [&self.root_dir, &self.logs_dir] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let mut cmd = Command::new(&opts.bin);
        cmd.arg(format!("--container-runtime-endpoint={}", env.endpoint()))
            .arg(format!("--pod-manifest-path={}", opts.manifests.display()))
            .arg(format!("--hostname-override={}", opts.node_name))
            .arg(format!("--root-dir={}", self.root_dir.display()))
            .arg(format!("--cgroup-root={}", self.cgroup_root));
        let mut config = None;
        let mut client = None;
        if !has_flag(&opts.args, "--config") {
            let path = env.dir().join("kubelet-config.yaml");
            fs::write(&path, render_config(&self.logs_dir)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let c = make_client_cert(&env.dir().join("client-pki"))?;
            let ca_file = match &opts.cluster {
                Some(join) => {
                    ca_bundle(&[&c.ca, &join.ca], &env.dir().join("client-ca-bundle.crt"))?
                }
                None => c.ca.clone(),
            };
            cmd.arg(format!("--config={}", path.display()))
                .arg(format!("--client-ca-file={}", ca_file.display()));
            config = Some(path);
            client = Some(c);
        }
        if let Some(join) = &opts.cluster {
            // The API server calls the agent (kubectl logs/exec) at the node's InternalIP, and
            // the kubelet refuses a loopback one: serve there instead of on loopback. Clients
            // still need a certificate of the session's CA or the cluster's.
            let ip = crate::host_ip().context("--cluster needs the host's address")?;
            cmd.arg(format!("--kubeconfig={}", join.kubeconfig.display()))
                .arg(format!("--node-ip={ip}"))
                .arg(format!("--address={ip}"));
        }
        cmd.args(&opts.args).stdin(Stdio::null());
        if let Some(log) = &opts.agent_log {
            let out = fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot open {}", log.display()))?;
            let err = out.try_clone().context("cannot duplicate a file handle")?;
            cmd.stdout(out).stderr(err);
        }
        // Its own process group: a Ctrl-C at the terminal reaches only us, and we stop the
        // agent first, then the pods. If we die without stopping it, it dies too (the signal
        // follows the thread that spawned it: keep the session on a thread that outlives it).
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = process::describe(&cmd);
        self.agent = Some(
            cmd.spawn()
                .with_context(|| format!("cannot start {shown}"))?,
        );
        self.config = config;
        self.client = client;
        Ok(())
    }

    /// The containerd environment.
    pub fn env(&self) -> &Env {
        self.env
            .as_ref()
            .expect("the Env lives until the session is stopped, which consumes it")
    }

    /// The agent's `--root-dir` (under the Env's dir).
    pub fn root_dir(&self) -> &Path {
        &self.root_dir
    }

    /// The podLogsDir of the session's own config (under the Env's dir); a caller's `--config`
    /// decides its own.
    pub fn logs_dir(&self) -> &Path {
        &self.logs_dir
    }

    /// The agent's `--cgroup-root`, also the Env's cgroup parent.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The KubeletConfiguration the session wrote; `None` when the caller passed `--config`.
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The client certificate for the API; `None` when the caller passed `--config`.
    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.client.as_ref()
    }

    /// The agent's pid while it has not been reaped.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Sends `sig` to the agent (a no-op once it has been reaped).
    pub fn signal_agent(&self, sig: libc::c_int) {
        if let Some(pid) = self
            .agent
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
        {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet,
            // so the pid is still ours.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// The agent's exit status once it has exited; never blocks.
    pub fn try_wait_agent(&mut self) -> Result<Option<ExitStatus>> {
        match self.agent.as_mut() {
            Some(c) => c.try_wait().context("cannot wait for the agent"),
            None => Ok(None),
        }
    }

    /// Waits up to `grace` for the agent to exit, then kills it; returns how it exited.
    fn reap_agent(&mut self, grace: Duration) -> Result<String> {
        let Some(mut child) = self.agent.take() else {
            return Ok("not running".to_owned());
        };
        let deadline = Instant::now() + grace;
        loop {
            if let Some(st) = child.try_wait().context("cannot wait for the agent")? {
                return Ok(st.to_string());
            }
            if Instant::now() >= deadline {
                child.kill().context("cannot kill the agent")?;
                let st = child.wait().context("cannot wait for the agent")?;
                return Ok(format!("{st}, killed after {grace:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the session as Ctrl-C on `cargo xtask run` does: SIGINT to the agent (which leaves
    /// its pods running, as the kubelet does), SIGKILL if it has not exited within 20 s, then
    /// [`Session::remove_all`].
    pub fn stop(mut self) -> Result<Removed> {
        self.signal_agent(libc::SIGINT);
        let exit = self.reap_agent(AGENT_GRACE)?;
        self.remove_all(exit)
    }

    /// Once the agent has exited (or was signalled): waits for it, then removes the pods,
    /// their cgroups, dirs and logs, the network and containerd. Every step is tried; the error
    /// names each one that failed and anything still left afterwards.
    pub fn finish(mut self) -> Result<Removed> {
        let exit = self.reap_agent(AGENT_GRACE)?;
        self.remove_all(exit)
    }

    fn remove_all(&mut self, agent_exit: String) -> Result<Removed> {
        let Some(env) = self.env.take() else {
            bail!("session already stopped");
        };
        let mut errors = Vec::new();
        let pods = match pods(env.socket()) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("listing the pods: {e:#}"));
                Vec::new()
            }
        };
        let dir = env.dir().to_owned();
        let bridge = env.bridge();
        if let Err(e) = env.stop() {
            errors.push(format!("{e:#}"));
        }
        let mut other_log_dirs = Vec::new();
        let mut removed_parents = Vec::new();
        for p in &pods {
            let d = &p.log_directory;
            // Only a dir named as the kubelet names pod log dirs, outside the Env's dir.
            let expected = format!("{}_{}_{}", p.namespace, p.name, p.uid);
            if d.starts_with(&dir)
                || d.file_name().is_none_or(|n| n != expected.as_str())
                || !d.exists()
            {
                continue;
            }
            match fs::remove_dir_all(d) {
                Ok(()) => other_log_dirs.push(d.clone()),
                Err(e) => errors.push(format!("cannot remove {}: {e}", d.display())),
            }
        }
        // Their parent (the podLogsDir), when this run created it and left it empty.
        let parents: BTreeSet<&Path> = other_log_dirs.iter().filter_map(|d| d.parent()).collect();
        for parent in parents {
            let made_by_us = fs::metadata(parent)
                .and_then(|m| m.created())
                .is_ok_and(|t| t >= self.started);
            let empty = fs::read_dir(parent).is_ok_and(|mut d| d.next().is_none());
            if made_by_us && empty {
                match fs::remove_dir(parent) {
                    Ok(()) => removed_parents.push(parent.to_owned()),
                    Err(e) => errors.push(format!("cannot remove {}: {e}", parent.display())),
                }
            }
        }
        other_log_dirs.extend(removed_parents);
        let removed = Removed {
            agent_exit,
            pods,
            dir,
            kept_dir: self.keep_dir,
            cgroup_root: self.cgroup_root.clone(),
            bridge,
            other_log_dirs,
        };
        errors.extend(leftovers(&removed));
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(anyhow!("stopping the run: {}", errors.join("; ")))
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.env.is_none() {
            return;
        }
        self.signal_agent(libc::SIGKILL);
        let exit = self
            .reap_agent(Duration::from_secs(5))
            .unwrap_or_else(|e| format!("{e:#}"));
        if let Err(e) = self.remove_all(exit) {
            eprintln!("xtask: {e:#}");
        }
    }
}

/// What is still there after a stop: pod log dirs, the Env's dir (unless kept), the cgroup
/// root or a pod cgroup in any hierarchy.
pub fn leftovers(r: &Removed) -> Vec<String> {
    let mut out = Vec::new();
    if !r.kept_dir && r.dir.exists() {
        out.push(format!("{} still exists", r.dir.display()));
    }
    for p in &r.pods {
        if !r.kept_dir && p.log_directory.exists() {
            out.push(format!("{} still exists", p.log_directory.display()));
        }
    }
    let cgroups = std::iter::once(r.cgroup_root.as_str())
        .chain(r.pods.iter().map(|p| p.cgroup_parent.as_str()))
        .filter(|c| !c.trim_matches('/').is_empty());
    for c in cgroups {
        for h in cgroup_hierarchies() {
            let d = h.join(c.trim_start_matches('/'));
            if d.exists() {
                out.push(format!("cgroup {} still exists", d.display()));
            }
        }
    }
    out
}

/// /sys/fs/cgroup/<hierarchy> dirs (v1 controllers, `unified` or the v2 root itself).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    // cgroup v2 only: pod cgroups sit right under the root.
    if root.join("cgroup.controllers").exists() {
        out.push(root.to_owned());
    }
    out
}

/// Every pod sandbox the runtime has, with the log dir and cgroup parent from its config
/// (containerd's verbose PodSandboxStatus: `info["info"]` is JSON with it under `config`).
pub fn pods(socket: &Path) -> Result<Vec<RunPod>> {
    crate::cri::block_on(|| async {
        let client = proto::Client::connect(socket)
            .await
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        let mut rt = client.runtime();
        let list = crate::cri::timed(
            "ListPodSandbox",
            rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        )
        .await?;
        let mut out = Vec::new();
        for sb in list.items {
            // A sandbox that went away meanwhile still counts; it just has no config to read.
            let st = crate::cri::timed(
                "PodSandboxStatus",
                rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: sb.id.clone(),
                    verbose: true,
                }),
            )
            .await
            .ok();
            let info: serde_json::Value = st
                .as_ref()
                .and_then(|st| st.info.get("info"))
                .and_then(|i| serde_json::from_str(i).ok())
                .unwrap_or_default();
            let text = |ptr: &str| {
                info.pointer(ptr)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let meta = sb.metadata.unwrap_or_default();
            out.push(RunPod {
                namespace: meta.namespace,
                name: meta.name,
                uid: meta.uid,
                log_directory: PathBuf::from(text("/config/log_directory")),
                cgroup_parent: text("/config/linux/cgroup_parent"),
            });
        }
        Ok(out)
    })
}

/// Creates in `c` the namespaces the static pods in `manifests` name (`namespace:` keys), so
/// that their mirror pods and events have somewhere to go: a kubeadm cluster's admin creates
/// them; here the run does. Returns the namespaces created or already there.
pub fn ensure_namespaces(c: &crate::cluster::Cluster, manifests: &Path) -> Result<Vec<String>> {
    let mut names = BTreeSet::new();
    let entries =
        fs::read_dir(manifests).with_context(|| format!("cannot read {}", manifests.display()))?;
    for e in entries.flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(ns) = line.trim_start().strip_prefix("namespace:") {
                let ns = ns.trim().trim_matches(['"', '\'']);
                if !ns.is_empty() && ns != "default" {
                    names.insert(ns.to_owned());
                }
            }
        }
    }
    for ns in &names {
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
        c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(&yaml))?;
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_safe() {
        let c = EXAMPLE_CONFIG;
        assert!(c.contains("\nreadOnlyPort: 0\n"), "{c}");
        assert!(c.contains("\naddress: 127.0.0.1\n"), "{c}");
        assert!(
            c.contains("  anonymous:\n    enabled: false\n"),
            "anonymous requests must be refused:\n{c}"
        );
    }

    #[test]
    fn config_gets_the_sessions_pod_logs_dir() -> Result<()> {
        let c = render_config(Path::new("/tmp/nodelet-env-x/pod-logs"))?;
        assert!(c.starts_with(EXAMPLE_CONFIG.trim_end()));
        assert!(
            c.ends_with("\npodLogsDir: \"/tmp/nodelet-env-x/pod-logs\"\n"),
            "{c}"
        );
        Ok(())
    }

    #[test]
    fn flags_are_found_in_both_spellings() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(has_flag(&args("--v=4 --config my.yaml"), "--config"));
        assert!(has_flag(&args("--config=my.yaml"), "--config"));
        assert!(!has_flag(&args("--configx=1 --v=4"), "--config"));
        assert!(has_flag(&args("--root-dir=/x"), "--root-dir"));
    }

    #[test]
    fn the_summary_names_what_was_removed() {
        let r = Removed {
            agent_exit: "exit status: 0".into(),
            pods: vec![RunPod {
                namespace: "default".into(),
                name: "hello-n".into(),
                uid: "u1".into(),
                log_directory: "/tmp/nodelet-env-x/pod-logs/default_hello-n_u1".into(),
                cgroup_parent: "/nodelet-xtask-run-1-0/kubepods/burstable/podu1".into(),
            }],
            dir: "/tmp/nodelet-env-x".into(),
            kept_dir: false,
            cgroup_root: "/nodelet-xtask-run-1-0".into(),
            bridge: "nodelet-br1".into(),
            other_log_dirs: vec![],
        };
        let s = r.to_string();
        for part in [
            "removed 1 pod (default/hello-n)",
            "/nodelet-xtask-run-1-0",
            "nodelet-br1",
            "/tmp/nodelet-env-x",
        ] {
            assert!(s.contains(part), "{s}");
        }
    }
}
