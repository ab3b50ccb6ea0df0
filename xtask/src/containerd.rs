//! A private containerd for one test or one `cargo xtask run`: [`Env`].
//!
//! Each `Env` owns a temp dir holding containerd's config, root, state, socket and log, a CNI
//! config, and a `certs.d` registry dir; the two local images are imported before anything can
//! ask for the sandbox image. Several Envs run at once (threads of one test binary, parallel
//! processes), so each takes a *network slot* N in 1..=254 by holding an `flock` on
//! `/run/nodelet-xtask/net-N.lock`: bridge `nodelet-brN`, CNI network `nodelet-xtask-N`, subnet
//! `10.89.N.0/24`. The kernel drops the lock when a process dies; the next owner of the slot
//! reads the dead owner's dir from the lock file and cleans what it left (shims, mounts, the
//! dir, cgroups, the bridge).
//!
//! Teardown order matters: runc shims outlive containerd, so pods are removed over CRI first,
//! then containerd is stopped, then stragglers (shims and their container processes) are
//! killed, the bridge and pod cgroups removed, mounts detached and the dir deleted.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use crate::cri;
use crate::images::{self, Images};
use crate::process::{self, Daemon, run};

/// containerd namespace the CRI plugin uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// Where the per-slot lock files live (tmpfs: cleared on reboot, like the bridges).
const LOCK_DIR: &str = "/run/nodelet-xtask";
/// A file in every Env dir; stale-dir cleanup deletes only dirs that carry it.
const MARKER: &str = ".nodelet-xtask-env";
const CGROUP_FS: &str = "/sys/fs/cgroup";
/// Longest unix socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How to start an [`Env`].
#[derive(Debug, Clone)]
pub struct EnvOpts {
    /// Directory in which the Env's temp dir is created; default: the system temp dir.
    pub base_dir: Option<PathBuf>,
    /// Where the images are built/cached; default: [`crate::images_dir`].
    pub images_dir: Option<PathBuf>,
    /// Cgroup parent (e.g. `/nodelet-e2e-7`) that this Env's pods use; on stop, the subtree
    /// `/sys/fs/cgroup/<hierarchy>/<parent>` is removed in every hierarchy, parent included.
    /// Pick a name no other Env uses.
    pub cgroup_parent: Option<String>,
    /// Registries (`host:port`) containerd should reach over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Give the host the bridge's first address (CNI `isGateway`), so that a kubelet on the
    /// host reaches pod IPs (httpGet/tcpSocket probes, the conformance suite); default: pods
    /// are reachable from each other only.
    pub pod_gateway: bool,
    /// Keep the temp dir after stop (for debugging); default: env `NODELET_KEEP_ENV` is set.
    pub keep_dir: bool,
    /// How long containerd may take to answer CRI Version.
    pub startup_timeout: Duration,
}

impl Default for EnvOpts {
    fn default() -> Self {
        EnvOpts {
            base_dir: None,
            images_dir: None,
            cgroup_parent: None,
            insecure_registries: Vec::new(),
            pod_gateway: false,
            keep_dir: std::env::var_os("NODELET_KEEP_ENV").is_some(),
            startup_timeout: Duration::from_secs(20),
        }
    }
}

/// Files and dirs inside an Env dir.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    root: PathBuf,
    state: PathBuf,
    opt: PathBuf,
    cni_conf_dir: PathBuf,
    certs_d: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_owned(),
            config: dir.join("containerd.toml"),
            socket: dir.join("containerd.sock"),
            log: dir.join("containerd.log"),
            root: dir.join("root"),
            state: dir.join("state"),
            opt: dir.join("opt"),
            cni_conf_dir: dir.join("cni"),
            certs_d: dir.join("certs.d"),
        }
    }
}

/// Bridge interface of network slot `index` (at most 15 characters).
pub fn bridge_name(index: u8) -> String {
    format!("nodelet-br{index}")
}

/// CNI network name of slot `index`; host-local keeps its leases under
/// `/var/lib/cni/networks/<name>`.
pub fn network_name(index: u8) -> String {
    format!("nodelet-xtask-{index}")
}

/// Pod subnet of slot `index`.
pub fn subnet(index: u8) -> String {
    format!("10.89.{index}.0/24")
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

/// containerd config (version 2) for an Env.
fn render_config(l: &Layout) -> String {
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"version = 2
root = {root}
state = {state}
oom_score = 0

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = {sandbox}
  # REQUIRED here: without CAP_SYS_RESOURCE every RunPodSandbox fails otherwise.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = {cni}

[{cri}.registry]
  config_path = {certs}
"#,
        root = toml_path(&l.root),
        state = toml_path(&l.state),
        socket = toml_path(&l.socket),
        ttrpc = toml_str(&format!("{}.ttrpc", l.socket.display())),
        opt = toml_path(&l.opt),
        sandbox = toml_str(images::PAUSE_IMAGE),
        cni = toml_path(&l.cni_conf_dir),
        certs = toml_path(&l.certs_d),
    )
}

/// CNI conflist for slot `index`: a bridge nothing routes out of (no masquerade; the host on
/// it only with `gateway`), host-local addresses, and loopback.
fn render_cni(index: u8, gateway: bool) -> String {
    let v = json!({
        "cniVersion": "1.0.0",
        "name": network_name(index),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name(index),
                "isGateway": gateway,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet(index) }]],
                    "routes": [],
                },
            },
            { "type": "loopback" },
        ],
    });
    serde_json::to_string_pretty(&v).expect("a JSON literal always serialises")
}

/// certs.d `hosts.toml` that makes `host` (`127.0.0.1:PORT`) a plain-HTTP registry.
fn render_hosts(host: &str) -> String {
    let url = toml_str(&format!("http://{host}"));
    format!("server = {url}\n\n[host.{url}]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

/// Whether the programs an Env needs are installed; `Err` says what is missing.
pub fn check_tools() -> Result<(), String> {
    let mut missing: Vec<&str> = [
        "containerd",
        "ctr",
        "runc",
        "containerd-shim-runc-v2",
        "gcc",
    ]
    .into_iter()
    .filter(|p| !process::have_program(p))
    .collect();
    for p in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
        "/bin/busybox",
    ] {
        if !Path::new(p).exists() {
            missing.push(p);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing {} (run `cargo xtask setup`)",
            missing.join(", ")
        ))
    }
}

/// A network slot held by this process (see the module docs).
#[derive(Debug)]
struct Slot {
    index: u8,
    lock: File,
}

impl Slot {
    /// Takes the first free slot; records `owner` (the Env dir) and `cgroup_parent` in its
    /// lock file after cleaning what a dead previous owner left behind.
    fn acquire(owner: &Path, cgroup_parent: Option<&str>) -> Result<Slot> {
        fs::create_dir_all(LOCK_DIR).with_context(|| format!("cannot create {LOCK_DIR}"))?;
        for index in 1..=254u8 {
            let path = Path::new(LOCK_DIR).join(format!("net-{index}.lock"));
            let mut lock = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            let mut prev = String::new();
            lock.read_to_string(&mut prev)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut lines = prev.lines();
            let prev_dir = lines.next().unwrap_or("").trim();
            let prev_cgroup = lines.next().unwrap_or("").trim();
            if !prev_dir.is_empty() && Path::new(prev_dir) != owner {
                clean_stale(Path::new(prev_dir), prev_cgroup);
            }
            for e in clean_network(index) {
                eprintln!("xtask: slot {index}: {e}");
            }
            lock.set_len(0)
                .and_then(|()| lock.seek(SeekFrom::Start(0)).map(drop))
                .and_then(|()| {
                    writeln!(lock, "{}\n{}", owner.display(), cgroup_parent.unwrap_or(""))
                })
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(Slot { index, lock });
        }
        bail!("all 254 network slots under {LOCK_DIR} are in use")
    }

    /// Marks the slot clean so the next owner has nothing to sweep; the lock itself goes with
    /// the file handle.
    fn release(&mut self) {
        let _ = self.lock.set_len(0);
    }
}

/// Cleans every slot whose owner died without tearing down (processes, mounts, dir, cgroups,
/// bridge) and returns how many there were. Slots in use are skipped.
pub fn reclaim_stale() -> Result<usize> {
    let Ok(entries) = fs::read_dir(LOCK_DIR) else {
        return Ok(0);
    };
    let mut cleaned = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(index) = name.to_str().and_then(|n| {
            n.strip_prefix("net-")?
                .strip_suffix(".lock")?
                .parse::<u8>()
                .ok()
        }) else {
            continue;
        };
        let path = e.path();
        let mut lock = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if lock.try_lock().is_err() {
            continue;
        }
        let mut prev = String::new();
        lock.read_to_string(&mut prev)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut lines = prev.lines();
        let prev_dir = lines.next().unwrap_or("").trim();
        if prev_dir.is_empty() {
            continue;
        }
        clean_stale(Path::new(prev_dir), lines.next().unwrap_or("").trim());
        for e in clean_network(index) {
            eprintln!("xtask: slot {index}: {e}");
        }
        lock.set_len(0)
            .with_context(|| format!("cannot truncate {}", path.display()))?;
        cleaned += 1;
    }
    Ok(cleaned)
}

/// Cleans up after an Env whose process died without tearing down.
fn clean_stale(dir: &Path, cgroup_parent: &str) {
    let dir_s = dir.to_string_lossy();
    let killed = process::kill_trees(&["containerd"], &format!("{dir_s}/"));
    if killed > 0 {
        eprintln!("xtask: killed {killed} processes left by a dead env in {dir_s}");
    }
    if !cgroup_parent.is_empty() {
        for e in remove_cgroup_subtree(cgroup_parent) {
            eprintln!("xtask: stale env {dir_s}: {e}");
        }
    }
    if dir.join(MARKER).is_file() {
        if let Err(e) = process::unmount_under(dir) {
            eprintln!("xtask: stale env {dir_s}: {e:#}");
        }
        if let Err(e) = fs::remove_dir_all(dir) {
            eprintln!("xtask: cannot remove stale env dir {dir_s}: {e}");
        }
    }
}

/// Deletes slot `index`'s bridge, host-local leases and CNI result cache. Returns errors.
fn clean_network(index: u8) -> Vec<String> {
    let mut errors = Vec::new();
    let bridge = bridge_name(index);
    if Path::new("/sys/class/net").join(&bridge).exists()
        && let Err(e) = run(Command::new("ip").args(["link", "del", &bridge]))
    {
        errors.push(format!("{e:#}"));
    }
    let net = network_name(index);
    let leases = Path::new("/var/lib/cni/networks").join(&net);
    if leases.exists()
        && let Err(e) = fs::remove_dir_all(&leases)
    {
        errors.push(format!("cannot remove {}: {e}", leases.display()));
    }
    if let Ok(dir) = fs::read_dir("/var/lib/cni/results") {
        let prefix = format!("{net}-");
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    errors
}

/// Whether `cgroup_parent` names a pod-level cgroup (`…/pod<uid>`), safe to remove with its pod.
fn is_pod_cgroup(cgroup_parent: &str) -> bool {
    cgroup_parent
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .is_some_and(|last| last.starts_with("pod") && last.len() > 3)
}

/// Removes `/sys/fs/cgroup/<hierarchy>/<parent>` with everything under it in every hierarchy,
/// killing processes still inside. Returns errors.
pub fn remove_cgroup_subtree(parent: &str) -> Vec<String> {
    let rel = parent.trim_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return vec![format!("refusing to remove cgroup parent {parent:?}")];
    }
    let Ok(hierarchies) = fs::read_dir(CGROUP_FS) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for h in hierarchies.flatten() {
        // cpu -> cpu,cpuacct and friends are symlinks to hierarchies listed anyway.
        if h.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
            continue;
        }
        let top = h.path().join(rel);
        if top.is_dir()
            && let Err(e) = remove_cgroup_dir(&top)
        {
            errors.push(format!("{e:#}"));
        }
    }
    errors
}

fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    let children = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for c in children.flatten() {
        if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_dir(&c.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                // Processes the runtime failed to kill; they belong to this Env.
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs
                    .lines()
                    .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
                {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove cgroup {}", dir.display()));
            }
        }
    }
}

/// A running private containerd with both local images imported. Stops on drop.
#[derive(Debug)]
pub struct Env {
    layout: Layout,
    slot: Slot,
    images: Images,
    daemon: Option<Daemon>,
    cgroup_parent: Option<String>,
    keep_dir: bool,
    done: bool,
}

impl Env {
    /// Builds/reuses the images, starts containerd, waits until CRI answers and imports the
    /// images into namespace `k8s.io`.
    pub fn start(opts: EnvOpts) -> Result<Env> {
        check_tools().map_err(|why| anyhow!("cannot start containerd: {why}"))?;
        let images_dir = opts.images_dir.clone().unwrap_or_else(crate::images_dir);
        let images = images::build(&images_dir)
            .with_context(|| format!("cannot build images in {}", images_dir.display()))?;
        let base = match &opts.base_dir {
            Some(b) => {
                std::path::absolute(b).with_context(|| format!("bad base dir {}", b.display()))?
            }
            None => std::env::temp_dir(),
        };
        fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("nodelet-env-")
            .tempdir_in(&base)
            .with_context(|| format!("cannot create a temp dir in {}", base.display()))?
            .keep();
        let layout = Layout::new(&dir);
        if let Err(e) = fs::write(dir.join(MARKER), b"") {
            let _ = fs::remove_dir_all(&dir);
            return Err(e).with_context(|| format!("cannot write into {}", dir.display()));
        }
        let slot = match Slot::acquire(&dir, opts.cgroup_parent.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on Drop tears down whatever was set up.
        let mut env = Env {
            layout,
            slot,
            images,
            daemon: None,
            cgroup_parent: opts.cgroup_parent.clone(),
            keep_dir: opts.keep_dir,
            done: false,
        };
        env.prepare(&opts)?;
        env.launch(opts.startup_timeout)?;
        Ok(env)
    }

    fn prepare(&self, opts: &EnvOpts) -> Result<()> {
        let l = &self.layout;
        let ttrpc_len = l.socket.as_os_str().len() + ".ttrpc".len();
        if ttrpc_len > MAX_SOCKET_PATH {
            bail!(
                "socket path {}.ttrpc is {ttrpc_len} bytes, over the unix limit of \
                 {MAX_SOCKET_PATH}: use a shorter base dir",
                l.socket.display()
            );
        }
        for d in [&l.root, &l.state, &l.opt, &l.cni_conf_dir, &l.certs_d] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let cni = l.cni_conf_dir.join("10-nodelet.conflist");
        fs::write(&cni, render_cni(self.slot.index, opts.pod_gateway))
            .with_context(|| format!("cannot write {}", cni.display()))?;
        for host in &opts.insecure_registries {
            self.allow_insecure_registry(host)?;
        }
        fs::write(&l.config, render_config(l))
            .with_context(|| format!("cannot write {}", l.config.display()))
    }

    fn launch(&mut self, timeout: Duration) -> Result<()> {
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&self.layout.config);
        let daemon = Daemon::spawn("containerd", cmd, &self.layout.log)?;
        let daemon = self.daemon.insert(daemon);
        let deadline = Instant::now() + timeout;
        let mut last_err = None;
        loop {
            if let Some(exit) = daemon.exited() {
                bail!(
                    "containerd exited ({exit}) before it was ready; {} ends with:\n{}",
                    self.layout.log.display(),
                    process::log_tail(&self.layout.log, 30)
                );
            }
            if UnixStream::connect(&self.layout.socket).is_ok() {
                match cri::version(&self.layout.socket) {
                    Ok(_) => break,
                    Err(e) => last_err = Some(e),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer CRI Version within {timeout:?} (last error: {}); \
                     {} ends with:\n{}",
                    last_err.map_or("socket not connectable".to_owned(), |e| format!("{e:#}")),
                    self.layout.log.display(),
                    process::log_tail(&self.layout.log, 30)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
        // The sandbox image first: CRI would otherwise try to pull it from the internet.
        for image in [&self.images.pause, &self.images.busybox] {
            self.import(&image.archive).with_context(|| {
                format!(
                    "cannot import {}; {} ends with:\n{}",
                    image.name,
                    self.layout.log.display(),
                    process::log_tail(&self.layout.log, 20)
                )
            })?;
        }
        Ok(())
    }

    /// `ctr images import` of an OCI archive into namespace `k8s.io` (overlayfs snapshots, so
    /// the first container create does not unpack lazily).
    pub fn import(&self, archive: &Path) -> Result<()> {
        run(self
            .ctr()
            .args(["images", "import", "--snapshotter", "overlayfs"])
            .arg(archive))
        .map(drop)
    }

    /// A `ctr` command bound to this Env's socket and namespace `k8s.io`.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.layout.socket)
            .args(["-n", K8S_NAMESPACE]);
        c
    }

    /// Lets containerd pull from `host` (`127.0.0.1:PORT`) over plain HTTP. Takes effect on the
    /// next pull: containerd reads `certs.d` per pull.
    pub fn allow_insecure_registry(&self, host: &str) -> Result<()> {
        if host.is_empty() || host.contains('/') || host.contains("..") {
            bail!("bad registry host {host:?}: expected host:port");
        }
        let dir = self.layout.certs_d.join(host);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join("hosts.toml");
        fs::write(&file, render_hosts(host))
            .with_context(|| format!("cannot write {}", file.display()))
    }

    /// containerd's socket.
    pub fn socket(&self) -> &Path {
        &self.layout.socket
    }

    /// The CRI endpoint for `--container-runtime-endpoint`: `unix:///…/containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.layout.socket.display())
    }

    /// The Env's temp dir; free for the caller's files too (pod logs, agent config, …).
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// containerd's stdout+stderr.
    pub fn log_path(&self) -> &Path {
        &self.layout.log
    }

    /// containerd's config file.
    pub fn config_path(&self) -> &Path {
        &self.layout.config
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.layout.log, lines)
    }

    /// Network slot (1..=254).
    pub fn index(&self) -> u8 {
        self.slot.index
    }

    /// The CNI bridge of this Env.
    pub fn bridge(&self) -> String {
        bridge_name(self.slot.index)
    }

    /// The CNI network name of this Env.
    pub fn network_name(&self) -> String {
        network_name(self.slot.index)
    }

    /// The pod subnet of this Env (`10.89.N.0/24`).
    pub fn subnet(&self) -> String {
        subnet(self.slot.index)
    }

    /// The images imported into this Env.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// The cgroup parent given in [`EnvOpts`], removed on stop.
    pub fn cgroup_parent(&self) -> Option<&str> {
        self.cgroup_parent.as_deref()
    }

    /// containerd's pid while it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        let d = self.daemon.as_ref()?;
        d.exited().is_none().then(|| d.pid())
    }

    /// CRI Version as `"containerd <version>"`.
    pub fn cri_version(&self) -> Result<String> {
        cri::version(&self.layout.socket)
    }

    /// Stops and removes every pod sandbox, then the pod-level cgroups they ran in (a
    /// sandbox's `cgroup_parent` whose last component starts with `pod`, as the kubelet names
    /// them); returns how many sandboxes there were.
    pub fn remove_all_sandboxes(&self) -> Result<usize> {
        let removed = cri::remove_all_sandboxes(&self.layout.socket)?;
        let errors: Vec<String> = removed
            .cgroup_parents
            .iter()
            .filter(|p| is_pod_cgroup(p))
            .flat_map(|p| remove_cgroup_subtree(p))
            .collect();
        if errors.is_empty() {
            Ok(removed.sandboxes)
        } else {
            bail!("removing pod cgroups: {}", errors.join("; "))
        }
    }

    /// Stops containerd (SIGTERM) and starts it again on the same config, root and socket:
    /// what a runtime upgrade or crash looks like to a node agent. Pods' shims survive it.
    pub fn restart_containerd(&mut self, down_for: Duration) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop(Duration::from_secs(10))?;
        }
        thread::sleep(down_for);
        self.launch(Duration::from_secs(20))
    }

    /// Tears everything down (see the module docs); the error lists every step that failed,
    /// after all steps were tried.
    pub fn stop(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut errors: Vec<String> = Vec::new();
        let dir_s = self.layout.dir.to_string_lossy().into_owned();
        if let Some(d) = self.daemon.as_ref()
            && d.exited().is_none()
            && let Err(e) = self.remove_all_sandboxes()
        {
            errors.push(format!("removing pod sandboxes: {e:#}"));
            if let Err(e) = self.ctr_sweep() {
                errors.push(format!("ctr sweep: {e:#}"));
            }
        }
        if let Some(d) = self.daemon.take()
            && let Err(e) = d.stop(Duration::from_secs(10))
        {
            errors.push(format!("{e:#}"));
        }
        // Shims still alive here (say, the pod removal failed) carry `-address <socket>`.
        let killed = process::kill_trees(&["containerd"], &format!("{dir_s}/"));
        if killed > 0 {
            eprintln!("xtask: killed {killed} leftover shim/container processes of {dir_s}");
        }
        errors.extend(clean_network(self.slot.index));
        if let Some(parent) = &self.cgroup_parent {
            errors.extend(remove_cgroup_subtree(parent));
        }
        if let Err(e) = process::unmount_under(&self.layout.dir) {
            errors.push(format!("{e:#}"));
        }
        if self.keep_dir {
            eprintln!("xtask: keeping {dir_s}");
        } else if let Err(e) = fs::remove_dir_all(&self.layout.dir) {
            errors.push(format!("cannot remove {dir_s}: {e}"));
        }
        if errors.is_empty() {
            self.slot.release();
            Ok(())
        } else {
            Err(anyhow!(
                "tearing down containerd env {dir_s}: {}",
                errors.join("; ")
            ))
        }
    }

    /// Fallback when CRI cannot remove the pods: kill and delete every task and container in
    /// every namespace with `ctr`.
    fn ctr_sweep(&self) -> Result<()> {
        let ns_out = run(Command::new("ctr")
            .arg("-a")
            .arg(&self.layout.socket)
            .args(["namespaces", "ls", "-q"]))?;
        for ns in ns_out.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let ctr = |args: &[&str]| {
                let mut c = Command::new("ctr");
                c.arg("-a")
                    .arg(&self.layout.socket)
                    .args(["-n", ns])
                    .args(args);
                c
            };
            let tasks = run(&mut ctr(&["tasks", "ls", "-q"]))?;
            for t in tasks.lines().map(str::trim).filter(|t| !t.is_empty()) {
                let _ = run(&mut ctr(&["tasks", "kill", "-a", "-s", "SIGKILL", t]));
                let _ = run(&mut ctr(&["tasks", "delete", "-f", t]));
            }
            let containers = run(&mut ctr(&["containers", "ls", "-q"]))?;
            for c in containers.lines().map(str::trim).filter(|c| !c.is_empty()) {
                let _ = run(&mut ctr(&["containers", "delete", c]));
            }
        }
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("xtask: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Path::new("/tmp/nodelet-env-x"))
    }

    #[test]
    fn config_has_required_cri_settings() {
        let c = render_config(&layout());
        assert!(c.starts_with("version = 2\n"));
        assert!(c.contains("restrict_oom_score_adj = true"));
        assert!(c.contains(r#"sandbox_image = "registry.k8s.io/pause:3.10""#));
        assert!(c.contains(r#"snapshotter = "overlayfs""#));
        assert!(c.contains("SystemdCgroup = false"));
        assert!(c.contains(r#"address = "/tmp/nodelet-env-x/containerd.sock""#));
        assert!(c.contains(r#"root = "/tmp/nodelet-env-x/root""#));
        assert!(c.contains(r#"conf_dir = "/tmp/nodelet-env-x/cni""#));
        assert!(c.contains(r#"config_path = "/tmp/nodelet-env-x/certs.d""#));
        assert!(c.contains(r#"bin_dir = "/usr/lib/cni""#));
    }

    #[test]
    fn config_paths_are_toml_escaped() {
        let c = render_config(&Layout::new(Path::new(r#"/tmp/a"b\c"#)));
        assert!(c.contains(r#"root = "/tmp/a\"b\\c/root""#), "{c}");
    }

    #[test]
    fn cni_config_keeps_traffic_on_the_bridge() -> Result<()> {
        let v: serde_json::Value = serde_json::from_str(&render_cni(7, false))?;
        assert_eq!(v["name"], "nodelet-xtask-7");
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "nodelet-br7");
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.89.7.0/24");
        assert_eq!(v["plugins"][1]["type"], "loopback");
        Ok(())
    }

    #[test]
    fn slot_names_fit_kernel_limits() {
        assert!(bridge_name(254).len() <= 15);
    }

    #[test]
    fn hosts_toml_makes_registry_plain_http() {
        let h = render_hosts("127.0.0.1:5001");
        assert!(h.contains(r#"server = "http://127.0.0.1:5001""#));
        assert!(h.contains(r#"[host."http://127.0.0.1:5001"]"#));
    }

    #[test]
    fn only_pod_level_cgroups_are_removed_with_their_pods() {
        assert!(is_pod_cgroup("/kubepods/besteffort/pod1234-ab"));
        assert!(is_pod_cgroup("/nodelet-test/podx/"));
        assert!(!is_pod_cgroup("/kubepods/besteffort"));
        assert!(!is_pod_cgroup("/kubepods/pod"));
        assert!(!is_pod_cgroup("/"));
    }

    #[test]
    fn cgroup_parent_must_be_a_plain_path() {
        assert!(!remove_cgroup_subtree("/").is_empty());
        assert!(!remove_cgroup_subtree("/a/../b").is_empty());
    }
}
