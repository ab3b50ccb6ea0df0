//! The static pod file source (kubelet pkg/kubelet/config/file.go, file_linux.go).
//!
//! Which files count is the kubelet's rule: every entry of the directory whose name does not
//! start with "." (`filepath.Glob(dir + "/[^.]*")`), in lexical order; subdirectories are not
//! descended into; anything that is not a regular file (after following links) is reported and
//! skipped. A path that is a file is read as one manifest. A path that does not exist yields an
//! empty set, as the kubelet's listConfig sends an empty SET for it.
//!
//! Changes arrive from inotify and from a full re-read every `fileCheckFrequency`. An inotify
//! change re-reads the whole path at once when none was read in the last 10 ms, else 10 ms
//! after the last read, so a burst of renames costs a few reads; a manifest opened for writing
//! is not read until it is closed (IN_CLOSE_WRITE), so a file written in pieces is never reported as empty or half a pod (the kubelet re-reads on
//! every write). While a manifest is open for writing, reads wait, at most `fileCheckFrequency`
//! after its write began. Each read publishes the complete set; consumers reconcile against it.

mod listing;
mod watch;

use super::SourceSet;
use listing::{DecodedCache, Listing, list_cached};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch as channel};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use watch::{Change, ReadSchedule, start_watch};

/// Classified inotify events waiting for the source task; a burst beyond this (a tool writing
/// many files at once) turns into one rescan.
const EVENT_CAPACITY: usize = 256;

/// Runs the source until cancelled, publishing each changed set on `tx`.
/// The first read is always published, so consumers can tell "seen this source".
pub async fn run(
    path: PathBuf,
    node_name: String,
    period: Duration,
    tx: channel::Sender<Option<SourceSet>>,
    cancel: CancellationToken,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<Change>(EVENT_CAPACITY);
    // Capacity 1: a full channel means a rescan is already pending.
    let (lost_tx, mut lost_rx) = mpsc::channel::<()>(1);
    let mut watcher: Option<notify::RecommendedWatcher> = None;
    let mut schedule = ReadSchedule::new(period, Instant::now());
    let mut reported_errors: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut reported_warnings: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut last: Option<SourceSet> = None;
    let mut decoded = DecodedCache::default();
    info!(path = %path.display(), every = ?period, "watching static pod path");
    loop {
        if watcher.is_none() {
            watcher = start_watch(&path, ev_tx.clone(), lost_tx.clone());
            // Whatever was open for writing before the watch (re)started is unknown now.
            schedule.apply(Change::Rescan, Instant::now());
        }
        let (p, n) = (path.clone(), node_name.clone());
        let mut c = std::mem::take(&mut decoded);
        let read = tokio::task::spawn_blocking(move || {
            let l = list_cached(&p, &n, &mut c);
            (l, c)
        });
        let listing = match read.await {
            Ok((l, c)) => {
                decoded = c;
                l
            }
            Err(e) => {
                error!(error = %e, "static pod path reader failed");
                Listing::default()
            }
        };
        schedule.did_read(Instant::now());
        report(&listing.errors, &mut reported_errors, true);
        report(&listing.warnings, &mut reported_warnings, false);
        let set: SourceSet = Arc::new(listing.pods);
        if last.as_ref() != Some(&set) {
            debug!(pods = set.len(), "static pod set changed");
            last = Some(set.clone());
            tx.send_replace(Some(set));
        }
        // Wait until the next read is due, applying inotify events meanwhile.
        loop {
            // Events already queued belong to the next read: a file still open for writing
            // must hold it back, and the rest of a burst comes along.
            while let Ok(change) = ev_rx.try_recv() {
                schedule.apply(change, Instant::now());
            }
            if schedule.read_at() <= Instant::now() {
                break;
            }
            let at = tokio::time::Instant::from_std(schedule.read_at());
            tokio::select! {
                _ = cancel.cancelled() => return,
                got = ev_rx.recv() => match got {
                    Some(change) => schedule.apply(change, Instant::now()),
                    None => { watcher = None; break; }
                },
                _ = lost_rx.recv() => {
                    warn!(path = %path.display(), "inotify events were lost; re-reading the static pod path");
                    schedule.apply(Change::Rescan, Instant::now());
                }
                _ = tokio::time::sleep_until(at) => {}
            }
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

#[cfg(test)]
mod test_support {
    use std::path::PathBuf;

    /// A fresh scratch directory for one test.
    pub fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nodelet-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    /// A one-container pod manifest; `NAME` is replaced by the pod's name.
    pub const POD: &str =
        "metadata: {name: NAME}\nspec:\n  containers:\n  - {name: c, image: busybox:1.35}\n";
}

#[cfg(test)]
mod tests {
    use super::test_support::{POD, tmpdir};
    use super::*;

    /// Captures the source's log lines, to check what it reported.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
        }
    }

    /// The source running on a fresh directory, its first (empty) set already seen.
    struct Source {
        d: PathBuf,
        rx: channel::Receiver<Option<SourceSet>>,
        stop: Stop,
    }

    /// Stops the source and removes its directory.
    struct Stop {
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Source {
        async fn start(tag: &str) -> Source {
            let d = tmpdir(tag);
            let (tx, mut rx) = channel::channel(None);
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
            Source {
                d,
                rx,
                stop: Stop { cancel, task },
            }
        }
    }

    impl Stop {
        async fn stop(self, d: PathBuf) {
            self.cancel.cancel();
            let _ = self.task.await;
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[tokio::test]
    async fn a_manifest_written_in_pieces_is_read_once_closed() {
        use std::io::Write;
        let log = Captured::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        // The test runtime is current-thread: the source task logs on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);
        let Source { d, mut rx, stop } = Source::start("pieces").await;
        let text = POD.replace("NAME", "p");
        let (head, tail) = text.split_at(text.find("spec:").expect("spec"));
        let mut file = std::fs::File::create(d.join("p.yaml")).expect("create");
        tokio::time::sleep(Duration::from_millis(300)).await;
        file.write_all(head.as_bytes()).expect("write");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !rx.has_changed().expect("open"),
            "published while the manifest was open"
        );
        file.write_all(tail.as_bytes()).expect("write");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!rx.has_changed().expect("open"));
        drop(file);
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("update once closed")
            .expect("open");
        let names: Vec<_> = rx
            .borrow()
            .as_ref()
            .map(|s| s.values().map(|p| p.pod_ref.name.clone()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["p-n"]);
        stop.stop(d).await;
        let text = log.text();
        assert!(
            !text.contains("p.yaml"),
            "the partial manifest was read and reported:\n{text}"
        );
    }

    #[tokio::test]
    async fn an_open_swap_file_does_not_hold_back_other_manifests() {
        use std::io::Write;
        let Source { d, mut rx, stop } = Source::start("swap").await;
        let mut swap = std::fs::File::create(d.join(".p.yaml.swp")).expect("create");
        swap.write_all(b"b0VIM").expect("write");
        std::fs::write(d.join("p.yaml"), POD.replace("NAME", "p")).expect("write");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("update while the swap file is open")
            .expect("open");
        assert_eq!(rx.borrow().as_ref().map(|s| s.len()), Some(1));
        drop(swap);
        stop.stop(d).await;
    }

    #[tokio::test]
    async fn publishes_changes_from_inotify() {
        let Source { d, mut rx, stop } = Source::start("watch").await;
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
        stop.stop(d).await;
    }
}
