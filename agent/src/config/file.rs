//! The static pod file source (kubelet pkg/kubelet/config/file.go, file_linux.go).
//!
//! Which files count is the kubelet's rule: every entry of the directory whose name does not
//! start with "." (`filepath.Glob(dir + "/[^.]*")`), in lexical order; subdirectories are not
//! descended into; anything that is not a regular file (after following links) is reported and
//! skipped. A path that is a file is read as one manifest. A path that does not exist yields an
//! empty set, as the kubelet's listConfig sends an empty SET for it.
//!
//! Changes arrive from inotify (any event re-reads the whole path, debounced, so an editor's
//! write-rename sequence is one update) and from a full re-read every `fileCheckFrequency`.
//! Each read publishes the complete set; consumers reconcile against it.

use super::manifest;
use crate::pod::PodHandle;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// All pods from the source, keyed by UID.
pub type PodSet = Arc<BTreeMap<String, PodHandle>>;

/// Quiet time after the last inotify event before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Result of one read: the pods, and a message per file that was skipped.
#[derive(Debug, Default)]
pub struct Listing {
    /// Accepted pods by UID.
    pub pods: BTreeMap<String, PodHandle>,
    /// Skipped files and why.
    pub errors: BTreeMap<PathBuf, String>,
    /// Accepted files with something to say (ignored extra documents).
    pub warnings: BTreeMap<PathBuf, String>,
}

/// Reads the static pod path once.
pub fn list(path: &Path, node_name: &str) -> Listing {
    let mut out = Listing::default();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.errors
                .insert(path.to_owned(), format!("cannot stat static pod path: {e}"));
            return out;
        }
    };
    let files = if meta.is_dir() {
        match manifest_files(path) {
            Ok((files, skipped)) => {
                out.errors.extend(skipped);
                files
            }
            Err(e) => {
                out.errors
                    .insert(path.to_owned(), format!("cannot list static pod path: {e}"));
                return out;
            }
        }
    } else {
        vec![path.to_owned()]
    };
    // Full name -> file that claimed it first: a second pod with the same name and namespace is
    // refused (kubelet config.go filterInvalidPods: "duplicate pod name").
    let mut claimed: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        match manifest::load(&file, node_name) {
            Ok(manifest::Decoded { pod, warnings }) => {
                if !warnings.is_empty() {
                    out.warnings.insert(file.clone(), warnings.join("; "));
                }
                let full = pod.pod_ref.full_name();
                if let Some(first) = claimed.get(&full) {
                    out.errors.insert(
                        file.clone(),
                        format!(
                            "static pod manifest {}: duplicate pod {}/{}: already defined by {}",
                            file.display(),
                            pod.pod_ref.namespace,
                            pod.pod_ref.name,
                            first.display()
                        ),
                    );
                    continue;
                }
                claimed.insert(full, file);
                out.pods.insert(pod.pod_ref.uid.clone(), Arc::new(pod));
            }
            Err(e) => {
                out.errors.insert(file, e.to_string());
            }
        }
    }
    out
}

/// Files to read, and entries skipped with the reason.
type DirListing = (Vec<PathBuf>, Vec<(PathBuf, String)>);

/// Directory entries the kubelet would read, and the ones it reports and skips.
fn manifest_files(dir: &Path) -> std::io::Result<DirListing> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    names.sort();
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let p = dir.join(name);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => files.push(p),
            Ok(m) if m.is_dir() => debug!(path = %p.display(), "not recursing into manifest path"),
            Ok(_) => skipped.push((
                p.clone(),
                format!("static pod manifest {}: not a regular file", p.display()),
            )),
            Err(e) => skipped.push((
                p.clone(),
                format!("static pod manifest {}: {e}", p.display()),
            )),
        }
    }
    Ok((files, skipped))
}

/// Runs the source until cancelled, publishing each changed set on `tx`.
/// The first read is always published, so consumers can tell "seen this source".
pub async fn run(
    path: PathBuf,
    node_name: String,
    period: Duration,
    tx: watch::Sender<Option<PodSet>>,
    cancel: CancellationToken,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<()>(1);
    let mut watcher: Option<notify::RecommendedWatcher> = None;
    let mut reported_errors: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut reported_warnings: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut last: Option<PodSet> = None;
    info!(path = %path.display(), every = ?period, "watching static pod path");
    loop {
        if watcher.is_none() {
            watcher = start_watch(&path, ev_tx.clone());
        }
        let (p, n) = (path.clone(), node_name.clone());
        let listing = match tokio::task::spawn_blocking(move || list(&p, &n)).await {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "static pod path reader failed");
                Listing::default()
            }
        };
        report(&listing.errors, &mut reported_errors, true);
        report(&listing.warnings, &mut reported_warnings, false);
        let set: PodSet = Arc::new(listing.pods);
        if last.as_ref() != Some(&set) {
            debug!(pods = set.len(), "static pod set changed");
            last = Some(set.clone());
            tx.send_replace(Some(set));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            got = ev_rx.recv() => {
                if got.is_none() { watcher = None; }
                // Let a burst of events (editor write + rename) settle into one re-read.
                tokio::time::sleep(DEBOUNCE).await;
                while ev_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Logs each file's error (or warning) once, until it changes or goes away.
fn report(now: &BTreeMap<PathBuf, String>, reported: &mut BTreeMap<PathBuf, String>, errors: bool) {
    for (file, msg) in now {
        if reported.get(file) != Some(msg) {
            if errors {
                error!(file = %file.display(), "{msg}; skipping this file, other pods are unaffected");
            } else {
                warn!(file = %file.display(), "{msg}");
            }
        }
    }
    if errors {
        for file in reported.keys() {
            if !now.contains_key(file) {
                info!(file = %file.display(), "static pod manifest problem resolved");
            }
        }
    }
    *reported = now.clone();
}

/// Whether an inotify event can change the pod set: create, write, chmod, remove, rename
/// (file_linux.go produceWatchEvent). Opens, reads and closes cannot, and reacting to them would
/// loop: every re-read opens every manifest.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    )
}

/// Watches the directory (or a file's directory); `None` when it does not exist yet (the
/// periodic re-read retries).
fn start_watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent()?.to_owned()
    };
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| is_change(&ev.kind)) {
            // Full channel = a re-read is already pending; that one will see this change too.
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| warn!(error = %e, "inotify unavailable; relying on periodic re-reads"))
    .ok()?;
    match w.watch(&dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(w),
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "cannot watch static pod path yet");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nodelet-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    const POD: &str =
        "metadata: {name: NAME}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35}\n";

    #[test]
    fn reads_like_the_kubelet() {
        let d = tmpdir("list");
        std::fs::write(d.join("a.yaml"), POD.replace("NAME", "a")).expect("write");
        std::fs::write(
            d.join("b.json"),
            r#"{"metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"x"}]}}"#,
        )
        .expect("write");
        std::fs::write(d.join(".hidden.yaml"), POD.replace("NAME", "h")).expect("write");
        std::fs::write(d.join("bad.yaml"), "spec: [").expect("write");
        std::fs::write(d.join("dup.yaml"), POD.replace("NAME", "a")).expect("write");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/c.yaml"), POD.replace("NAME", "c")).expect("write");
        let l = list(&d, "n1");
        let mut names: Vec<_> = l.pods.values().map(|p| p.pod_ref.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["a-n1", "b-n1"]);
        let errs: Vec<_> = l
            .errors
            .keys()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(errs, ["bad.yaml", "dup.yaml"]);
        assert!(l.errors[&d.join("dup.yaml")].contains("a.yaml"));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn missing_path_is_an_empty_set() {
        let l = list(Path::new("/nonexistent/nodelet/manifests"), "n");
        assert!(l.pods.is_empty() && l.errors.is_empty());
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
    }

    #[tokio::test]
    async fn publishes_changes_from_inotify() {
        let d = tmpdir("watch");
        let (tx, mut rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            d.clone(),
            "n".into(),
            Duration::from_secs(3600),
            tx,
            cancel.clone(),
        ));
        rx.changed().await.expect("first set");
        assert_eq!(rx.borrow_and_update().as_ref().map(|s| s.len()), Some(0));
        std::fs::write(d.join("p.yaml"), POD.replace("NAME", "p")).expect("write");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("inotify update")
            .expect("open");
        assert_eq!(rx.borrow_and_update().as_ref().map(|s| s.len()), Some(1));
        std::fs::remove_file(d.join("p.yaml")).expect("rm");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("inotify update")
            .expect("open");
        assert_eq!(rx.borrow().as_ref().map(|s| s.len()), Some(0));
        cancel.cancel();
        let _ = task.await;
        let _ = std::fs::remove_dir_all(d);
    }
}
