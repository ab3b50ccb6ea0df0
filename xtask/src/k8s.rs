//! Kubernetes, etcd and metrics-server binaries built from the Go module proxy, cached per
//! version.
//!
//! `go install k8s.io/kubernetes/cmd/…@vX` cannot work: the release's go.mod requires its
//! staging modules (`k8s.io/api`, `k8s.io/client-go`, …) at `v0.0.0` and replaces them with
//! `./staging/…`, which Go ignores outside the main module. So each release gets a *wrapper
//! module* that requires `k8s.io/kubernetes vX.Y.Z` and replaces every staging module with its
//! published `v0.Y.Z`; the list is generated from the release's own go.mod, whose `go` and
//! `godebug` lines are copied too. etcd (`go.etcd.io/etcd/server/v3`, `main` at the module
//! root) gets a wrapper of its own; its go.mod's replace lines point at sibling directories of
//! etcd's repo and are ignored in a dependency, its requirements name published versions.
//! metrics-server (`sigs.k8s.io/metrics-server`, no replace lines) gets one too, in
//! `metrics-server-<version>/` (cold build: 284 s on two busy cores, 213 s of CPU).
//!
//! Binaries are built the way upstream builds them (`CGO_ENABLED=0`, `-trimpath`, `-s -w`, the
//! version stamped with `-X`, see `hack/lib/version.sh`) into
//! `${NODELET_K8S_CACHE:-/var/cache/nodelet/k8s}/<version>/bin/<name>`, next to the wrapper
//! module in `<version>/src` (with each build's Go output, `build-<name>.log`). A build writes
//! to a temp name and renames, under an `flock` on `<version>/.lock`, so concurrent callers
//! wait for one build instead of racing it. Only the first build on a machine pays: later calls
//! find the binary and return at once.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{self, run};

/// Env var: root of the binary cache (default [`DEFAULT_CACHE`]).
pub const CACHE_VAR: &str = "NODELET_K8S_CACHE";
/// Default root of the binary cache: outside `target/`, so `cargo clean` keeps it.
pub const DEFAULT_CACHE: &str = "/var/cache/nodelet/k8s";

/// The pinned Kubernetes release. v1.37.2 is the newest served release (see
/// ../shared/NOTES.md); its go.mod says `go 1.26.0`, so the machine's Go 1.26.8 builds it
/// without fetching a toolchain.
pub const RELEASE: &str = "v1.37.2";
/// The etcd paired with [`RELEASE`]: the version its `build/dependencies.yaml` pins (kubeadm's
/// `DefaultEtcdVersion` is 3.7.0-0), and the one its etcd client libraries are at.
pub const ETCD_VERSION: &str = "v3.7.0";
/// The metrics-server `kubectl top` goes through: the newest release the proxy serves that
/// builds with the machine's Go 1.26.8 (v0.9.1 needs Go 1.26.10; v0.9.0 says `go 1.26.4` and is
/// built on the 0.36 Kubernetes libraries, one minor behind [`RELEASE`], inside its skew).
pub const METRICS_SERVER_VERSION: &str = "v0.9.0";
/// The control plane's packages in `k8s.io/kubernetes`.
pub const CONTROL_PLANE: &[&str] = &[
    "cmd/kube-apiserver",
    "cmd/kube-controller-manager",
    "cmd/kube-scheduler",
    "cmd/kubectl",
];

const KUBERNETES: &str = "k8s.io/kubernetes";
const ETCD_SERVER: &str = "go.etcd.io/etcd/server/v3";
const METRICS_SERVER: &str = "sigs.k8s.io/metrics-server";

/// Root of the binary cache: `$NODELET_K8S_CACHE` or [`DEFAULT_CACHE`].
pub fn cache_root() -> PathBuf {
    std::env::var_os(CACHE_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The `go` command: `go` on `PATH`, else `/usr/local/go/bin/go` (where our machines have it).
pub fn go_bin() -> Option<PathBuf> {
    if process::have_program("go") {
        return Some(PathBuf::from("go"));
    }
    let p = Path::new("/usr/local/go/bin/go");
    process::have_program(&p.to_string_lossy()).then(|| p.to_owned())
}

/// Why binaries cannot be built here, if they cannot (no Go).
pub fn go_unavailable() -> Option<String> {
    match go_bin() {
        Some(_) => None,
        None => Some("no `go` on PATH nor /usr/local/go/bin/go".to_owned()),
    }
}

/// The binaries of a control plane, all built from one release.
#[derive(Debug, Clone)]
pub struct ControlPlaneBins {
    /// etcd ([`ETCD_VERSION`]).
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// kube-scheduler.
    pub scheduler: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
}

/// Builds (or finds cached) the control plane of `release` and etcd `etcd_version`.
pub fn control_plane(release: &str, etcd_version: &str) -> Result<ControlPlaneBins> {
    let etcd = build_etcd(etcd_version)?;
    let bins = build(release, CONTROL_PLANE)?;
    let [apiserver, controller_manager, scheduler, kubectl] =
        <[PathBuf; 4]>::try_from(bins).expect("build returns one path per package");
    Ok(ControlPlaneBins {
        etcd,
        apiserver,
        controller_manager,
        scheduler,
        kubectl,
    })
}

/// One binary to build in a wrapper module.
#[derive(Debug, Clone)]
struct Target {
    /// Full import path.
    package: String,
    /// File name under `bin/`.
    name: String,
}

/// The cached binary of `package` (a path in `k8s.io/kubernetes`, e.g. `cmd/kubectl`) for
/// `release`, if built: `bin/<last element>` for a command, `bin/<last element>.test` for a
/// test package.
pub fn cached(release: &str, package: &str) -> Option<PathBuf> {
    let bin = cache_root().join(release).join("bin");
    let last = last_element(package);
    [last.to_owned(), format!("{last}.test")]
        .into_iter()
        .map(|n| bin.join(n))
        .find(|p| p.is_file())
}

fn last_element(package: &str) -> &str {
    package
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(package)
}

/// Builds `packages` (paths in `k8s.io/kubernetes`: `cmd/kube-apiserver`, `cmd/kubelet`,
/// `test/e2e`, …) of `release` (`vX.Y.Z`) unless cached, and returns their paths in order.
///
/// A `main` package becomes `bin/<last element>` (`go build`); any other package is built as
/// its test binary `bin/<last element>.test` (`go test -c`, as upstream's `e2e.test`).
pub fn build(release: &str, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let (major, minor) = parse_release(release)?;
    let dir = cache_root().join(release);
    let _lock = lock(&dir)?;
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| cached(release, p).is_none())
        .collect();
    if !missing.is_empty() {
        let w = Wrapper::new(&dir);
        let info = download(KUBERNETES, release)?;
        if !w.go_mod().is_file() {
            let upstream = read(&info.go_mod)?;
            let staging = format!("v0.{minor}.{}", patch_of(release));
            let replaces: Vec<(String, String)> = staging_modules(&upstream)
                .into_iter()
                .map(|m| (m, staging.clone()))
                .collect();
            w.write_go_mod(&render_go_mod(
                "nodelet.local/kubernetes",
                &upstream,
                &[(KUBERNETES, release)],
                &replaces,
            ))?;
        }
        let ldflags = kube_ldflags(release, &major, &minor, &info);
        let full: Vec<String> = missing
            .iter()
            .map(|p| format!("{KUBERNETES}/{}", p.trim_matches('/')))
            .collect();
        w.get(&full, release, false)?;
        let mut targets = Vec::new();
        for package in full {
            let name = if w.is_main(&package)? {
                last_element(&package).to_owned()
            } else {
                // A test binary also needs what its _test.go files import.
                w.get(std::slice::from_ref(&package), release, true)?;
                format!("{}.test", last_element(&package))
            };
            targets.push(Target { package, name });
        }
        w.build_all(&targets, &ldflags, release)?;
    }
    packages
        .iter()
        .map(|p| {
            cached(release, p).with_context(|| {
                format!(
                    "{p} of {release} missing in {} after the build",
                    dir.display()
                )
            })
        })
        .collect()
}

/// The ginkgo CLI (for parallel e2e runs) at the version `release`'s e2e tests require,
/// built in the release's wrapper module after `test/e2e`: `<release>/bin/ginkgo`.
pub fn build_ginkgo(release: &str) -> Result<PathBuf> {
    const GINKGO: &str = "github.com/onsi/ginkgo/v2/ginkgo";
    build(release, &["test/e2e"])?;
    let dir = cache_root().join(release);
    let bin = dir.join("bin/ginkgo");
    if bin.is_file() {
        return Ok(bin);
    }
    let _lock = lock(&dir)?;
    if bin.is_file() {
        return Ok(bin);
    }
    let w = Wrapper::new(&dir);
    w.build_all(
        &[Target {
            package: GINKGO.to_owned(),
            name: "ginkgo".to_owned(),
        }],
        "-s -w",
        release,
    )?;
    Ok(bin)
}

/// Builds etcd `version` (`v3.x.y`) unless cached; returns `<cache>/etcd-<version>/bin/etcd`.
pub fn build_etcd(version: &str) -> Result<PathBuf> {
    build_module(&Module {
        dir: format!("etcd-{version}"),
        wrapper: "nodelet.local/etcd",
        module: ETCD_SERVER,
        package: ETCD_SERVER,
        name: "etcd",
        version,
        ldflags: &|info| {
            let mut ldflags = "-s -w".to_owned();
            if let Some(hash) = &info.commit {
                // etcd's own build stamps the commit the same way (scripts/build_lib.sh).
                let _ = write!(ldflags, " -X go.etcd.io/etcd/api/v3/version.GitSHA={hash}");
            }
            ldflags
        },
    })
}

/// The cached metrics-server binary of `version`, if built.
pub fn metrics_server_cached(version: &str) -> Option<PathBuf> {
    let bin = cache_root().join(format!("metrics-server-{version}/bin/metrics-server"));
    bin.is_file().then_some(bin)
}

/// Builds metrics-server `version` (`v0.x.y`) unless cached; returns
/// `<cache>/metrics-server-<version>/bin/metrics-server`. Its go.mod has no replace lines, so
/// the wrapper only requires it; the version is stamped as its Makefile does (client-go's
/// version package), with `-s` added as for the control plane.
pub fn build_metrics_server(version: &str) -> Result<PathBuf> {
    build_module(&Module {
        dir: format!("metrics-server-{version}"),
        wrapper: "nodelet.local/metrics-server",
        module: METRICS_SERVER,
        package: &format!("{METRICS_SERVER}/cmd/metrics-server"),
        name: "metrics-server",
        version,
        ldflags: &|info| {
            let mut s = "-s -w".to_owned();
            let pkg = "k8s.io/client-go/pkg/version";
            let _ = write!(s, " -X {pkg}.gitVersion={version}");
            if let Some(t) = &info.time {
                let _ = write!(s, " -X {pkg}.buildDate={t}");
            }
            if let Some(c) = &info.commit {
                let _ = write!(s, " -X {pkg}.gitCommit={c}");
            }
            s
        },
    })
}

/// One command of a module that builds without replaces (etcd, metrics-server).
struct Module<'a> {
    /// Directory under the cache root.
    dir: String,
    /// Module path of the wrapper.
    wrapper: &'a str,
    /// The module required at `version`.
    module: &'a str,
    /// The `main` package to build.
    package: &'a str,
    /// File name under `bin/`.
    name: &'a str,
    version: &'a str,
    ldflags: &'a dyn Fn(&Downloaded) -> String,
}

/// Builds `m` into `<cache>/<m.dir>/bin/<m.name>` unless it is there.
fn build_module(m: &Module<'_>) -> Result<PathBuf> {
    let dir = cache_root().join(&m.dir);
    let bin = dir.join("bin").join(m.name);
    if bin.is_file() {
        return Ok(bin);
    }
    let _lock = lock(&dir)?;
    if bin.is_file() {
        return Ok(bin);
    }
    let w = Wrapper::new(&dir);
    let info = download(m.module, m.version)?;
    if !w.go_mod().is_file() {
        let upstream = read(&info.go_mod)?;
        w.write_go_mod(&render_go_mod(
            m.wrapper,
            &upstream,
            &[(m.module, m.version)],
            &[],
        ))?;
    }
    w.get(&[m.package.to_owned()], m.version, false)?;
    w.build_all(
        &[Target {
            package: m.package.to_owned(),
            name: m.name.to_owned(),
        }],
        &(m.ldflags)(&info),
        &format!("{} {}", m.name, m.version),
    )?;
    Ok(bin)
}

/// Holds `<dir>/.lock` exclusively (blocking) while alive.
fn lock(dir: &Path) -> Result<File> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(".lock");
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if f.try_lock().is_err() {
        eprintln!(
            "xtask: waiting for another build holding {}",
            path.display()
        );
        f.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
    }
    Ok(f)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `vX.Y.Z` -> (`X`, `Y`).
fn parse_release(release: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = release.strip_prefix('v').unwrap_or("").split('.').collect();
    match parts.as_slice() {
        [major, minor, patch]
            if [major, minor, patch]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Ok(((*major).to_owned(), (*minor).to_owned()))
        }
        _ => bail!("bad Kubernetes release {release:?}: expected vX.Y.Z"),
    }
}

fn patch_of(release: &str) -> &str {
    release.rsplit('.').next().unwrap_or("0")
}

/// The staging modules of a k8s.io/kubernetes go.mod: every `k8s.io/x => ./staging/…` replace.
fn staging_modules(go_mod: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in go_mod.lines() {
        let line = line.trim().trim_start_matches("replace").trim();
        if let Some((module, target)) = line.split_once("=>")
            && target.trim().starts_with("./staging/")
        {
            out.push(module.trim().to_owned());
        }
    }
    out
}

/// The first line of `go_mod` starting with `directive ` (e.g. `go 1.26.0`).
fn directive<'a>(go_mod: &'a str, directive: &str) -> Option<&'a str> {
    go_mod.lines().map(str::trim).find(|l| {
        l.strip_prefix(directive)
            .is_some_and(|r| r.starts_with(' '))
    })
}

/// A wrapper go.mod: `module`, the `go`, `toolchain`-free and `godebug` lines of the wrapped
/// module's go.mod (`upstream`), its requirement, one replace per `(module, version)`.
fn render_go_mod(
    module: &str,
    upstream: &str,
    require: &[(&str, &str)],
    replaces: &[(String, String)],
) -> String {
    let mut s = format!(
        "// Generated by `cargo xtask` (xtask/src/k8s.rs); do not edit.\nmodule {module}\n\n"
    );
    if let Some(go) = directive(upstream, "go") {
        let _ = writeln!(s, "{go}\n");
    }
    if let Some(godebug) = directive(upstream, "godebug") {
        let _ = writeln!(s, "{godebug}\n");
    }
    for (m, v) in require {
        let _ = writeln!(s, "require {m} {v}");
    }
    if !replaces.is_empty() {
        s.push_str("\nreplace (\n");
        for (m, v) in replaces {
            let _ = writeln!(s, "\t{m} => {m} {v}");
        }
        s.push_str(")\n");
    }
    s
}

/// What `go mod download -json` says about a module version.
#[derive(Debug)]
struct Downloaded {
    go_mod: PathBuf,
    /// Publication time (RFC 3339), used as the build date: the same for every build.
    time: Option<String>,
    /// VCS commit, when the proxy recorded one.
    commit: Option<String>,
    /// The extracted module in the module cache.
    dir: Option<PathBuf>,
}

/// `go mod download -json module@version`: fetches it into the module cache.
fn download(module: &str, version: &str) -> Result<Downloaded> {
    let started = Instant::now();
    let out = run(go_cmd(None)?
        .args(["mod", "download", "-json"])
        .arg(format!("{module}@{version}")))
    .with_context(|| format!("cannot download {module}@{version} from the Go module proxy"))?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("go mod download -json printed no JSON: {out}"))?;
    if let Some(e) = v["Error"].as_str() {
        bail!("cannot download {module}@{version}: {e}");
    }
    let go_mod = v["GoMod"]
        .as_str()
        .with_context(|| format!("go mod download named no GoMod for {module}@{version}"))?;
    let secs = started.elapsed().as_secs();
    if secs > 2 {
        eprintln!("xtask: downloaded {module}@{version} ({secs} s)");
    }
    Ok(Downloaded {
        go_mod: PathBuf::from(go_mod),
        time: v["Time"].as_str().map(str::to_owned),
        commit: v["Origin"]["Hash"].as_str().map(str::to_owned),
        dir: v["Dir"].as_str().map(PathBuf::from),
    })
}

/// The source of `k8s.io/kubernetes` at `release` in the Go module cache (downloaded if
/// missing), for files a build needs beside the binaries (test images' certificates, …).
pub fn module_source(release: &str) -> Result<PathBuf> {
    download(KUBERNETES, release)?
        .dir
        .with_context(|| format!("go mod download named no Dir for {KUBERNETES}@{release}"))
}

/// Upstream's version stamps (hack/lib/version.sh), for component-base and client-go alike.
fn kube_ldflags(release: &str, major: &str, minor: &str, info: &Downloaded) -> String {
    let mut vars = vec![
        ("gitVersion", release.to_owned()),
        ("gitMajor", major.to_owned()),
        ("gitMinor", minor.to_owned()),
        ("gitTreeState", "clean".to_owned()),
    ];
    if let Some(t) = &info.time {
        vars.push(("buildDate", t.clone()));
    }
    if let Some(c) = &info.commit {
        vars.push(("gitCommit", c.clone()));
    }
    let mut s = "-s -w".to_owned();
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (k, v) in &vars {
            let _ = write!(s, " -X {pkg}.{k}={v}");
        }
    }
    s
}

/// A `go` command with the build environment upstream uses; `dir` is its working directory.
fn go_cmd(dir: Option<&Path>) -> Result<Command> {
    let go = go_bin()
        .context("cannot build Kubernetes binaries: no `go` on PATH nor /usr/local/go/bin/go")?;
    let mut c = Command::new(go);
    c.env("CGO_ENABLED", "0").env("GOFLAGS", "-buildvcs=false");
    // Inside the wrapper, GOWORK from the caller's environment would pull in other modules.
    c.env("GOWORK", "off");
    match dir {
        Some(d) => c.current_dir(d),
        // Outside any module: `go mod download` needs none.
        None => c.current_dir("/"),
    };
    Ok(c)
}

/// A wrapper module dir: `<dir>/src` (go.mod, go.sum) and `<dir>/bin`.
struct Wrapper {
    src: PathBuf,
    bin: PathBuf,
}

impl Wrapper {
    fn new(dir: &Path) -> Wrapper {
        Wrapper {
            src: dir.join("src"),
            bin: dir.join("bin"),
        }
    }

    fn go_mod(&self) -> PathBuf {
        self.src.join("go.mod")
    }

    fn write_go_mod(&self, text: &str) -> Result<()> {
        fs::create_dir_all(&self.src)
            .with_context(|| format!("cannot create {}", self.src.display()))?;
        let tmp = self.src.join(".go.mod.new");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, self.go_mod()))
            .with_context(|| format!("cannot write {}", self.go_mod().display()))
    }

    /// `go get [-t] pkg@version…`: resolves every module the packages (and with `tests`, their
    /// tests) import, filling go.mod and go.sum.
    fn get(&self, packages: &[String], version: &str, tests: bool) -> Result<()> {
        let started = Instant::now();
        eprintln!(
            "xtask: resolving modules for {} (go get; downloads on the first run)",
            packages.join(" ")
        );
        let mut c = go_cmd(Some(&self.src))?;
        c.arg("get");
        if tests {
            c.arg("-t");
        }
        for p in packages {
            c.arg(format!("{p}@{version}"));
        }
        run(&mut c).with_context(|| format!("resolving modules in {}", self.src.display()))?;
        eprintln!(
            "xtask: modules resolved in {} s",
            started.elapsed().as_secs()
        );
        Ok(())
    }

    /// Whether `package` is a command (`package main`).
    fn is_main(&self, package: &str) -> Result<bool> {
        let out = run(go_cmd(Some(&self.src))?
            .args(["list", "-f", "{{.Name}}"])
            .arg(package))?;
        Ok(out.trim() == "main")
    }

    /// Builds each target to a temp name in `bin/` and renames it into place.
    fn build_all(&self, targets: &[Target], ldflags: &str, what: &str) -> Result<()> {
        fs::create_dir_all(&self.bin)
            .with_context(|| format!("cannot create {}", self.bin.display()))?;
        let total = Instant::now();
        for t in targets {
            let started = Instant::now();
            eprintln!("xtask: {what}: building {} ({}) …", t.name, t.package);
            let tmp = self
                .bin
                .join(format!(".{}.tmp-{}", t.name, std::process::id()));
            let mut c = go_cmd(Some(&self.src))?;
            if t.name.ends_with(".test") {
                c.args(["test", "-c"]);
            } else {
                c.arg("build");
            }
            c.args(["-trimpath", "-ldflags", ldflags, "-o"])
                .arg(&tmp)
                .arg(&t.package);
            let log = self.src.join(format!("build-{}.log", t.name));
            let built = run_with_heartbeat(
                &mut c,
                &log,
                &format!("{what}: {}", t.name),
                Duration::from_secs(60),
            );
            if let Err(e) = built {
                let _ = fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("building {} for {what}", t.name));
            }
            let dest = self.bin.join(&t.name);
            fs::rename(&tmp, &dest)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))?;
            eprintln!(
                "xtask: {what}: built {} in {} s",
                dest.display(),
                started.elapsed().as_secs()
            );
        }
        if targets.len() > 1 {
            eprintln!(
                "xtask: {what}: {} binaries in {} s",
                targets.len(),
                total.elapsed().as_secs()
            );
        }
        Ok(())
    }
}

/// Runs `cmd` with its output in `log`, printing a line every `every` while it runs: a cold
/// kube-apiserver build takes a quarter of an hour on two cores, silence looks like a hang.
fn run_with_heartbeat(cmd: &mut Command, log: &Path, what: &str, every: Duration) -> Result<()> {
    let shown = process::describe(cmd);
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out
        .try_clone()
        .context("cannot duplicate log file handle")?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let started = Instant::now();
    let mut next = every;
    let mut beats = 0u32;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("cannot wait for {shown}"))?
        {
            break st;
        }
        if started.elapsed() >= next {
            beats += 1;
            eprintln!("xtask: {what}: still building ({} s)", next.as_secs());
            next += every;
        }
        std::thread::sleep(every.min(Duration::from_millis(200)));
    };
    if !status.success() {
        bail!(
            "{shown} failed ({status}) after {beats} heartbeat(s); {} ends with:\n{}",
            log.display(),
            process::log_tail(log, 40)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "module k8s.io/kubernetes\n\ngo 1.26.0\n\ngodebug default=go1.26\n\n\
        require (\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n\
        \tk8s.io/api => ./staging/src/k8s.io/api\n\
        \tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\
        \tgithub.com/x/y => github.com/x/y v1.0.0\n)\n\
        replace k8s.io/streaming => ./staging/src/k8s.io/streaming\n";

    #[test]
    fn staging_modules_come_from_local_replaces_only() {
        assert_eq!(
            staging_modules(UPSTREAM),
            ["k8s.io/api", "k8s.io/client-go", "k8s.io/streaming"]
        );
    }

    #[test]
    fn wrapper_go_mod_pins_staging_to_the_release() {
        let replaces: Vec<(String, String)> = staging_modules(UPSTREAM)
            .into_iter()
            .map(|m| (m, "v0.37.2".to_owned()))
            .collect();
        let m = render_go_mod("w", UPSTREAM, &[(KUBERNETES, "v1.37.2")], &replaces);
        assert!(m.contains("\nmodule w\n"), "{m}");
        assert!(m.contains("\ngo 1.26.0\n"), "{m}");
        assert!(m.contains("\ngodebug default=go1.26\n"), "{m}");
        assert!(m.contains("\nrequire k8s.io/kubernetes v1.37.2\n"), "{m}");
        assert!(m.contains("\tk8s.io/api => k8s.io/api v0.37.2\n"), "{m}");
        assert!(
            m.contains("\tk8s.io/streaming => k8s.io/streaming v0.37.2\n"),
            "{m}"
        );
        assert!(!m.contains("github.com/x/y"), "{m}");
        assert!(!m.contains("toolchain"), "{m}");
    }

    #[test]
    fn releases_parse_as_vx_y_z() -> Result<()> {
        assert_eq!(parse_release("v1.37.2")?, ("1".to_owned(), "37".to_owned()));
        assert!(parse_release("1.37.2").is_err());
        assert!(parse_release("v1.37").is_err());
        assert!(parse_release("v1.37.2-rc.0").is_err());
        Ok(())
    }

    #[test]
    fn ldflags_stamp_both_version_packages() {
        let info = Downloaded {
            go_mod: PathBuf::new(),
            time: Some("2026-10-27T12:01:04Z".to_owned()),
            commit: None,
            dir: None,
        };
        let f = kube_ldflags("v1.37.2", "1", "37", &info);
        assert!(f.starts_with("-s -w "), "{f}");
        assert!(
            f.contains("-X k8s.io/component-base/version.gitVersion=v1.37.2"),
            "{f}"
        );
        assert!(
            f.contains("-X k8s.io/client-go/pkg/version.gitVersion=v1.37.2"),
            "{f}"
        );
        assert!(
            f.contains("-X k8s.io/component-base/version.gitMinor=37"),
            "{f}"
        );
        assert!(f.contains("version.buildDate=2026-10-27T12:01:04Z"), "{f}");
        assert!(!f.contains("gitCommit"), "{f}");
    }

    #[test]
    fn long_steps_report_progress_and_failures_carry_the_log() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("build.log");
        let every = Duration::from_millis(20);
        run_with_heartbeat(
            Command::new("sh").args(["-c", "sleep 0.1"]),
            &log,
            "t",
            every,
        )?;
        let err = run_with_heartbeat(
            Command::new("sh").args(["-c", "sleep 0.1; echo compile error >&2; exit 2"]),
            &log,
            "t",
            every,
        )
        .expect_err("exit 2 must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("compile error"), "{msg}");
        assert!(!msg.contains("after 0 heartbeat"), "{msg}");
        Ok(())
    }

    #[test]
    fn binary_names_follow_upstream() {
        assert_eq!(last_element("cmd/kube-apiserver"), "kube-apiserver");
        assert_eq!(last_element("test/e2e/"), "e2e");
    }
}
