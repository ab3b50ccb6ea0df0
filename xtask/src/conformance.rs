//! `cargo xtask conformance`: the upstream `[NodeConformance]` e2e tests of
//! [`crate::k8s::RELEASE`] against the Go kubelet of that release and against nodelet, on this
//! machine, and a table of both results.
//!
//! Per kubelet: a fresh loopback control plane ([`Cluster`], state in
//! `<out>/<kubelet>/cluster`), a private containerd with the local registry allowed, the
//! kubelet joined ([`crate::kubelet`]), then `e2e.test` (built by [`crate::k8s`]) with the
//! label filter `NodeConformance`, the caller's focus, [`SKIPS`] and a JUnit report in
//! `<out>/<kubelet>/report`. The images come from [`crate::e2e_images`] through one registry
//! for both runs. Nothing is left running: each run stops its kubelet, containerd and control
//! plane before the next starts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cluster::{Cluster, ClusterOpts};
use crate::k8s;
use crate::kubelet::{Kind, Kubelet, KubeletOpts};
use crate::registry::Registry;

/// What the suite skips here, each with why: `(regex, reason)`.
pub const SKIPS: &[(&str, &str)] = &[
    (
        r"\[Serial\]|\[Disruptive\]",
        "must run alone or disturbs the node; not in a single-node parallel-safe baseline",
    ),
    (
        r"\[Slow\]",
        "over five minutes each on 2 cores; outside the time budget",
    ),
    (
        r"\[Feature:[^\]]+\]|\[Alpha\]|\[Flaky\]",
        "needs a feature gate that is off by default, or is known flaky upstream",
    ),
    (
        r"\[NodeFeature:RuntimeHandler\]",
        "needs a runtime handler besides runc configured in containerd",
    ),
    (
        r"private registry|Image credential provider|\[NodeFeature:ImageVolume\]",
        "needs registry credentials or a credential provider plugin",
    ),
    (
        r"[Ss]ervice(s)? (proxy|endpoints)|kube-proxy|NodePort|should function for (node|pod)-Service",
        "needs kube-proxy (Service virtual IPs); none runs here",
    ),
    (
        r"AppArmor|apparmor",
        "AppArmor profiles are not loaded on this machine",
    ),
];

/// One run's options.
#[derive(Debug, Clone)]
pub struct ConformanceOpts {
    /// Which kubelets, in order.
    pub kubelets: Vec<Kind>,
    /// Extra focus regex (ANDed with the NodeConformance label).
    pub focus: Option<String>,
    /// Extra skip regex (ORed with [`SKIPS`]).
    pub skip: Option<String>,
    /// Output dir (reports, logs, cluster state).
    pub out: PathBuf,
    /// The nodelet binary.
    pub nodelet: PathBuf,
    /// Images dir (the e2e images go to `<images>/e2e`).
    pub images_dir: PathBuf,
    /// Whole-suite timeout (ginkgo's `--timeout`).
    pub timeout: Duration,
    /// Parallel ginkgo processes (1: e2e.test alone, without the ginkgo CLI).
    pub parallel: usize,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Failed, with the first line of why.
    Failed(String),
    /// Skipped at run time (a `e2eskipper` call), with why.
    Skipped(String),
}

impl Outcome {
    fn cell(&self) -> &'static str {
        match self {
            Outcome::Passed => "pass",
            Outcome::Failed(_) => "FAIL",
            Outcome::Skipped(_) => "skip",
        }
    }
}

/// The results of one kubelet's run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Which kubelet.
    pub kind: Kind,
    /// Test name -> outcome (tests filtered out before running are absent).
    pub tests: BTreeMap<String, Outcome>,
    /// Wall time of the e2e.test run.
    pub elapsed: Duration,
    /// e2e.test's exit status.
    pub exit: String,
}

impl RunResult {
    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for o in self.tests.values() {
            match o {
                Outcome::Passed => c.0 += 1,
                Outcome::Failed(_) => c.1 += 1,
                Outcome::Skipped(_) => c.2 += 1,
            }
        }
        c
    }
}

/// The skip regex: [`SKIPS`] and `extra`, ORed.
pub fn skip_regex(extra: Option<&str>) -> String {
    let mut parts: Vec<&str> = SKIPS.iter().map(|(re, _)| *re).collect();
    if let Some(e) = extra {
        parts.push(e);
    }
    parts.join("|")
}

/// Why the suite cannot run here, if it cannot: `e2e.test` or the test images' binaries not
/// built and no Go to build them.
pub fn unavailable(release: &str) -> Option<String> {
    let built = ["test/e2e", "test/images/agnhost", "test/images/nonewprivs"]
        .iter()
        .all(|p| k8s::cached(release, p).is_some());
    if built {
        return None;
    }
    k8s::go_unavailable()
        .map(|why| format!("e2e.test and agnhost of {release} are not built and cannot be: {why}"))
}

/// Runs the suite against every kubelet of `opts` and returns their results.
pub fn run(opts: &ConformanceOpts) -> Result<Vec<RunResult>> {
    let release = k8s::RELEASE;
    let e2e = k8s::build(release, &["test/e2e"])?.remove(0);
    let go_kubelet = if opts.kubelets.contains(&Kind::Go) {
        k8s::build(release, &["cmd/kubelet"])?.remove(0)
    } else {
        PathBuf::new()
    };
    let ginkgo = if opts.parallel > 1 {
        Some(k8s::build_ginkgo(release)?)
    } else {
        None
    };
    k8s::control_plane(release, k8s::ETCD_VERSION)?;
    let images = crate::e2e_images::build(&opts.images_dir.join("e2e"), release)?;
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let out = std::path::absolute(&opts.out)
        .with_context(|| format!("bad dir {}", opts.out.display()))?;
    let registry = Registry::start()?;
    crate::e2e_images::push(&registry, &images)?;
    let repo_list = out.join("repo-list.yaml");
    fs::write(&repo_list, crate::e2e_images::repo_list(&registry.host()))
        .with_context(|| format!("cannot write {}", repo_list.display()))?;
    eprintln!(
        "xtask: {} e2e images in {} (KUBE_TEST_REPO_LIST {})",
        images.len(),
        registry.host(),
        repo_list.display()
    );
    let mut results = Vec::new();
    for &kind in &opts.kubelets {
        let bin = match kind {
            Kind::Go => go_kubelet.clone(),
            // A copy, so that rebuilding nodelet during a (long) run does not swap the binary
            // under the running node.
            Kind::Nodelet => {
                fs::create_dir_all(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                let copy = out.join("nodelet.bin");
                fs::copy(&opts.nodelet, &copy).with_context(|| {
                    format!(
                        "cannot copy {} to {}",
                        opts.nodelet.display(),
                        copy.display()
                    )
                })?;
                copy
            }
        };
        let dir = out.join(kind.name());
        let r = run_one(&RunSpec {
            kind,
            bin,
            dir: &dir,
            e2e: &e2e,
            ginkgo: ginkgo.as_deref(),
            registry: &registry,
            repo_list: &repo_list,
            opts,
        })
        .with_context(|| format!("conformance run against the {kind}"))?;
        let (p, f, s) = r.counts();
        eprintln!(
            "xtask: {kind}: {p} passed, {f} failed, {s} skipped in {:.0} s ({})",
            r.elapsed.as_secs_f64(),
            r.exit
        );
        results.push(r);
    }
    registry.stop()?;
    Ok(results)
}

struct RunSpec<'a> {
    kind: Kind,
    bin: PathBuf,
    dir: &'a Path,
    e2e: &'a Path,
    ginkgo: Option<&'a Path>,
    registry: &'a Registry,
    repo_list: &'a Path,
    opts: &'a ConformanceOpts,
}

fn run_one(s: &RunSpec<'_>) -> Result<RunResult> {
    if s.dir.exists() {
        // A previous run's cluster state (Nodes, namespaces) would leak into this one.
        fs::remove_dir_all(s.dir).with_context(|| format!("cannot remove {}", s.dir.display()))?;
    }
    let report = s.dir.join("report");
    fs::create_dir_all(&report).with_context(|| format!("cannot create {}", report.display()))?;
    let cluster = Cluster::start(ClusterOpts {
        node_name: crate::cluster::default_node_name(),
        ..ClusterOpts::new(s.dir.join("cluster"))
    })?;
    let log = s.dir.join(format!("{}.log", s.kind.name()));
    let mut kubelet = Kubelet::start(
        &cluster,
        &KubeletOpts {
            kind: s.kind,
            bin: s.bin.clone(),
            insecure_registries: vec![s.registry.host()],
            log: log.clone(),
            args: vec!["--v=2".to_owned()],
            config_extra: String::new(),
        },
    )?;
    eprintln!(
        "xtask: {} joined as {} (log {})",
        s.kind,
        cluster.node_name(),
        log.display()
    );
    kubelet.wait_ready(&cluster, Duration::from_secs(120))?;
    let e2e_log = s.dir.join("e2e.log");
    let started = Instant::now();
    let exit = run_e2e(s, &cluster, &report, &e2e_log)?;
    let elapsed = started.elapsed();
    let stopped = kubelet.stop();
    let cluster_stopped = cluster.stop();
    // The suite's verdicts are in the report by now: a teardown that fails (a pod the stopped
    // kubelet left in containerd's way, seen once in 242 tests) is reported, not fatal.
    match (stopped, cluster_stopped) {
        (Ok(how), Ok(())) => eprintln!("xtask: {} stopped ({how})", s.kind),
        (k, c) => eprintln!(
            "xtask: warning: tearing down after the {} run: {}",
            s.kind,
            [k.err(), c.err()]
                .into_iter()
                .flatten()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
    let junit = find_junit(&report)?;
    let text =
        fs::read_to_string(&junit).with_context(|| format!("cannot read {}", junit.display()))?;
    Ok(RunResult {
        kind: s.kind,
        tests: parse_junit(&text),
        elapsed,
        exit,
    })
}

fn run_e2e(s: &RunSpec<'_>, cluster: &Cluster, report: &Path, log: &Path) -> Result<String> {
    let o = s.opts;
    let mut args: Vec<String> = vec![
        format!("--kubeconfig={}", cluster.admin_kubeconfig().display()),
        "--provider=skeleton".to_owned(),
        format!("--kubectl-path={}", cluster.kubectl_path().display()),
        format!("--report-dir={}", report.display()),
        "--ginkgo.label-filter=NodeConformance".to_owned(),
        format!("--ginkgo.skip={}", skip_regex(o.skip.as_deref())),
        format!("--ginkgo.timeout={}s", o.timeout.as_secs()),
        "--ginkgo.no-color".to_owned(),
        // One node, nothing else to wait for: the framework's start-up checks (all nodes
        // schedulable, kube-system pods running) pass at once.
        "--allowed-not-ready-nodes=0".to_owned(),
        "--node-os-distro=debian".to_owned(),
        "--dump-logs-on-failure=false".to_owned(),
    ];
    if let Some(f) = &o.focus {
        args.push(format!("--ginkgo.focus={f}"));
    }
    let mut cmd = match s.ginkgo {
        Some(g) => {
            let mut c = Command::new(g);
            c.arg(format!("--procs={}", o.parallel))
                .arg("--no-color")
                .arg(format!("--timeout={}s", o.timeout.as_secs()))
                .arg(s.e2e)
                .arg("--");
            // ginkgo's own flags go before the binary; e2e.test's after `--`.
            c.args(&args);
            c
        }
        None => {
            let mut c = Command::new(s.e2e);
            c.args(&args);
            c
        }
    };
    cmd.current_dir(report)
        .env("KUBE_TEST_REPO_LIST", s.repo_list)
        .stdin(Stdio::null());
    let out = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone().context("cannot duplicate a file handle")?;
    cmd.stdout(out).stderr(err);
    eprintln!(
        "xtask: {}: running {} (log {})",
        s.kind,
        crate::process::describe(&cmd),
        log.display()
    );
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {}", s.e2e.display()))?;
    Ok(st.to_string())
}

/// The JUnit file e2e.test wrote in `dir` (`junit_01.xml`, or the first `junit*.xml`).
fn find_junit(dir: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("junit") && n.ends_with(".xml"))
        })
        .collect();
    found.sort();
    match found.into_iter().next() {
        Some(p) => Ok(p),
        None => bail!(
            "no junit*.xml in {}: e2e.test ended before writing its report",
            dir.display()
        ),
    }
}

/// XML entities of attribute values.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&#34;", "\"")
        .replace("&#xA;", "\n")
        .replace("&#10;", "\n")
        .replace("&#x9;", "\t")
        .replace("&#9;", "\t")
        .replace("&amp;", "&")
}

/// Attribute `name` of a start tag's text (`<x a="1" b="2">`).
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The first non-empty line of `s`, at most 160 characters.
fn first_line(s: &str) -> String {
    let l = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    l.chars().take(160).collect()
}

/// Test name -> outcome from ginkgo's JUnit XML; specs that never ran (filtered out by label,
/// focus or skip) are left out.
pub fn parse_junit(xml: &str) -> BTreeMap<String, Outcome> {
    let mut out = BTreeMap::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<testcase ") {
        rest = &rest[i..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        let self_closing = tag.ends_with('/');
        let body_end = if self_closing {
            end + 1
        } else {
            rest.find("</testcase>").map_or(rest.len(), |e| e + 11)
        };
        let body = &rest[end + 1..body_end.max(end + 1)];
        let name = attr(tag, "name").unwrap_or_default();
        let status = attr(tag, "status").unwrap_or_default();
        rest = &rest[body_end..];
        // Suite set-up and tear-down nodes are not tests.
        let name = name.trim_start_matches("[It] ").to_owned();
        if name.starts_with("[SynchronizedBeforeSuite]")
            || name.starts_with("[SynchronizedAfterSuite]")
            || name.starts_with("[BeforeSuite]")
            || name.starts_with("[AfterSuite]")
            || name.starts_with("[ReportAfterSuite]")
            || name.starts_with("[ReportBeforeSuite]")
        {
            if status == "failed" {
                let why = body_message(body, "<failure").unwrap_or_default();
                out.insert(name, Outcome::Failed(first_line(&why)));
            }
            continue;
        }
        let o = match status.as_str() {
            "passed" => Outcome::Passed,
            "failed" | "panicked" | "interrupted" | "timedout" | "aborted" => {
                Outcome::Failed(first_line(
                    &body_message(body, "<failure")
                        .or_else(|| body_message(body, "<error"))
                        .unwrap_or_else(|| status.clone()),
                ))
            }
            "skipped" => {
                let why = body_message(body, "<skipped").unwrap_or_default();
                // Filtered out before running: not part of this run.
                if why.is_empty() || why == "skipped" {
                    continue;
                }
                Outcome::Skipped(first_line(&why))
            }
            _ => continue,
        };
        out.insert(name, o);
    }
    out
}

/// The `message` attribute of the first `open` element in `body`, or its text when the
/// attribute is empty (e2e.test puts the failure in the text).
fn body_message(body: &str, open: &str) -> Option<String> {
    let i = body.find(open)?;
    let end = body[i..].find('>')? + i;
    let msg = attr(&body[i..end], "message").unwrap_or_default();
    if !msg.is_empty() || body[..end].ends_with('/') {
        return Some(msg);
    }
    let text = &body[end + 1..];
    let stop = text.find('<').unwrap_or(text.len());
    Some(unescape(&text[..stop]))
}

/// The results of an earlier run in `out` (`<out>/<kubelet>/report`), without running again.
pub fn load(out: &Path, kind: Kind) -> Result<RunResult> {
    let junit = find_junit(&out.join(kind.name()).join("report"))?;
    let text =
        fs::read_to_string(&junit).with_context(|| format!("cannot read {}", junit.display()))?;
    Ok(RunResult {
        kind,
        tests: parse_junit(&text),
        elapsed: Duration::ZERO,
        exit: format!("from {}", junit.display()),
    })
}

/// The table: one row per test that ran against any kubelet, one column per kubelet, then the
/// first line of each failure; counts at the end.
pub fn table(results: &[RunResult]) -> String {
    let mut names: Vec<&String> = results.iter().flat_map(|r| r.tests.keys()).collect();
    names.sort();
    names.dedup();
    let mut s = String::new();
    let head: Vec<String> = results
        .iter()
        .map(|r| format!("{:<8}", r.kind.name()))
        .collect();
    let _ = writeln!(s, "{} test", head.join(" "));
    for n in &names {
        let cells: Vec<String> = results
            .iter()
            .map(|r| format!("{:<8}", r.tests.get(*n).map_or("-", Outcome::cell)))
            .collect();
        let _ = writeln!(s, "{} {n}", cells.join(" "));
        for r in results {
            match r.tests.get(*n) {
                Some(Outcome::Failed(why)) => {
                    let _ = writeln!(s, "{:>10}  {}: {why}", "", r.kind.name());
                }
                Some(Outcome::Skipped(why)) => {
                    let _ = writeln!(s, "{:>10}  {} skipped: {why}", "", r.kind.name());
                }
                _ => {}
            }
        }
    }
    for r in results {
        let (p, f, sk) = r.counts();
        let _ = writeln!(
            s,
            "{}: {p} passed, {f} failed, {sk} skipped at run time, {:.0} s ({})",
            r.kind,
            r.elapsed.as_secs_f64(),
            r.exit
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3"><testsuite name="Kubernetes e2e suite">
<testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
<testcase name="[It] [sig-node] Pods should get a host IP [NodeConformance] [Conformance]" classname="Kubernetes e2e suite" status="passed" time="5"></testcase>
<testcase name="[It] [sig-node] Probing container should be restarted [NodeConformance]" classname="Kubernetes e2e suite" status="failed" time="9"><failure message="" type="failed">[FAILED] pod never restarted&#xA;Expected &lt;int&gt;: 0</failure><system-err>x</system-err></testcase>
<testcase name="[It] [sig-apps] Job should run [Slow]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
<testcase name="[It] [sig-node] Sysctls should work [NodeConformance]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped - Only supported for node OS distro [gci ubuntu]"></skipped></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn junit_gives_results_with_the_first_line_of_each_failure() {
        let t = parse_junit(JUNIT);
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(
            t["[sig-node] Pods should get a host IP [NodeConformance] [Conformance]"],
            Outcome::Passed
        );
        assert_eq!(
            t["[sig-node] Probing container should be restarted [NodeConformance]"],
            Outcome::Failed("[FAILED] pod never restarted".to_owned())
        );
        assert!(matches!(
            &t["[sig-node] Sysctls should work [NodeConformance]"],
            Outcome::Skipped(w) if w.contains("node OS distro")
        ));
    }

    #[test]
    fn every_skip_has_a_reason_and_joins_into_one_regex() {
        for (re, why) in SKIPS {
            assert!(!re.is_empty() && !why.is_empty());
        }
        let r = skip_regex(Some("Foo"));
        assert!(r.starts_with(r"\[Serial\]"), "{r}");
        assert!(r.ends_with("|Foo"), "{r}");
    }

    #[test]
    fn the_table_has_a_column_per_kubelet() {
        let mut a = BTreeMap::new();
        a.insert("t1".to_owned(), Outcome::Passed);
        let mut b = BTreeMap::new();
        b.insert("t1".to_owned(), Outcome::Failed("why".to_owned()));
        let rs = [
            RunResult {
                kind: Kind::Go,
                tests: a,
                elapsed: Duration::from_secs(1),
                exit: "exit status: 0".to_owned(),
            },
            RunResult {
                kind: Kind::Nodelet,
                tests: b,
                elapsed: Duration::from_secs(1),
                exit: "exit status: 1".to_owned(),
            },
        ];
        let t = table(&rs);
        assert!(t.contains("pass     FAIL     t1"), "{t}");
        assert!(t.contains("nodelet: why"), "{t}");
        assert!(t.contains("Go kubelet: 1 passed, 0 failed"), "{t}");
    }
}
