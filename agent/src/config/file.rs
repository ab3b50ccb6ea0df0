//! The static pod file source (kubelet pkg/kubelet/config/file.go, file_linux.go).
//!
//! Which files count is the kubelet's rule: every entry of the directory whose name does not
//! start with "." (`filepath.Glob(dir + "/[^.]*")`), in lexical order; subdirectories are not
//! descended into; anything that is not a regular file (after following links) is reported and
//! skipped. A path that is a file is read as one manifest. A path that does not exist yields an
//! empty set, as the kubelet's listConfig sends an empty SET for it.
//!
//! Changes arrive from inotify and from a full re-read every `fileCheckFrequency`. An inotify
//! change re-reads the whole path, debounced, so an editor's write-rename sequence is one
//! update; a manifest opened for writing is not read until it is closed (IN_CLOSE_WRITE), so a
//! file written in pieces is never reported as empty or half a pod (the kubelet re-reads on
//! every write). While a manifest is open for writing, reads wait, at most `fileCheckFrequency`
//! after its write began. Each read publishes the complete set; consumers reconcile against it.

use super::{SourceSet, manifest};
use crate::pod::PodHandle;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Quiet time after the last inotify event before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Classified inotify events waiting for the source task; a burst beyond this (a tool writing
/// many files at once) turns into one rescan.
const EVENT_CAPACITY: usize = 256;

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
#[cfg(test)]
pub fn list(path: &Path, node_name: &str) -> Listing {
    list_cached(path, node_name, &mut DecodedCache::default())
}

/// A file's identity and version as `stat` gives them: same key, same bytes (an editor's
/// rename changes the inode; a write in place changes the size or the nanosecond mtime/ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One file's decoded pod and warnings, or why it was skipped.
type DecodedFile = Result<(PodHandle, Vec<String>), String>;

/// Manifests decoded by earlier reads, by file: the periodic re-read decodes only files whose
/// `stat` changed. At 250 pods decoding every file each `fileCheckFrequency` was a tenth of the
/// idle agent's CPU; unchanged files give the same pod, so the set compares equal at once.
#[derive(Debug, Default)]
pub struct DecodedCache {
    files: HashMap<PathBuf, (FileKey, DecodedFile)>,
}

impl DecodedCache {
    /// The decoded file: taken from `earlier` (the previous read's entries) if its key is
    /// unchanged, decoded otherwise; kept for the next read either way.
    fn load(
        &mut self,
        earlier: &mut HashMap<PathBuf, (FileKey, DecodedFile)>,
        file: &Path,
        key: FileKey,
        node_name: &str,
    ) -> DecodedFile {
        let d = match earlier.remove(file) {
            Some((k, d)) if k == key => d,
            _ => manifest::load(file, node_name)
                .map(|manifest::Decoded { pod, warnings }| (Arc::new(pod), warnings))
                .map_err(|e| e.to_string()),
        };
        self.files.insert(file.to_owned(), (key, d.clone()));
        d
    }
}

/// [`list`] with the decoded files of earlier reads; entries for files gone are dropped.
pub fn list_cached(path: &Path, node_name: &str, cache: &mut DecodedCache) -> Listing {
    let mut out = Listing::default();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            cache.files.clear();
            return out;
        }
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
        vec![(path.to_owned(), meta)]
    };
    // Entries move from the last read's map as files are read, so files gone drop out.
    let mut earlier = std::mem::take(&mut cache.files);
    // Full name -> file that claimed it first: a second pod with the same name and namespace is
    // refused (kubelet config.go filterInvalidPods: "duplicate pod name").
    let mut claimed: HashMap<String, PathBuf> = HashMap::new();
    for (file, meta) in files {
        match cache.load(&mut earlier, &file, FileKey::of(&meta), node_name) {
            Ok((pod, warnings)) => {
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
                out.pods.insert(pod.pod_ref.uid.clone(), pod);
            }
            Err(e) => {
                out.errors.insert(file, e);
            }
        }
    }
    out
}

/// Files to read (with their `stat`), and entries skipped with the reason.
type DirListing = (Vec<(PathBuf, std::fs::Metadata)>, Vec<(PathBuf, String)>);

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
            Ok(m) if m.is_file() => files.push((p, m)),
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
    tx: watch::Sender<Option<SourceSet>>,
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
                _ = tokio::time::sleep_until(at) => break,
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

/// What one inotify event means for the pod set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Nothing a read could see: opens, reads, closes without writing, and writes to files the
    /// kubelet does not read (hidden ones: an editor's swap file stays open all session).
    Nothing,
    /// The manifest is being written: reading it now would see part of it.
    Writing(PathBuf),
    /// The manifest was closed after writing (IN_CLOSE_WRITE): its content is final.
    Written(PathBuf),
    /// Anything else that can change the set (rename, removal, chmod, a link or directory
    /// appearing): re-read soon. A removed or renamed-away file is no longer being written.
    Changed(Option<PathBuf>),
    /// Events were lost or the watch restarted: forget which files are open, re-read.
    Rescan,
}

/// Which entries of the watched directory the kubelet reads: in a directory, those not starting
/// with "." (file_linux.go ignores their events too); for a single-file path, that file.
#[derive(Debug, Clone)]
struct Watched {
    path: PathBuf,
    is_dir: bool,
}

impl Watched {
    fn reads(&self, file: &Path) -> bool {
        if self.is_dir {
            file.parent() == Some(self.path.as_path())
                && file
                    .file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        } else {
            file == self.path
        }
    }
}

/// Classifies an inotify event (notify's inotify backend: IN_MODIFY is `Modify(Data)`,
/// IN_CLOSE_WRITE `Access(Close(Write))`, IN_ATTRIB `Modify(Metadata)`, moves `Modify(Name)`).
/// `fresh_file` says whether a created entry is a new regular file with one link, i.e. made by
/// open(O_CREAT), whose close is still to come; links, symlinks and fifos are complete at once.
///
/// The kubelet re-reads on every write (file_linux.go produceWatchEvent), so a manifest written
/// in pieces is first reported as empty or malformed; waiting for the close avoids that.
fn classify(ev: &notify::Event, watched: &Watched, fresh_file: impl Fn(&Path) -> bool) -> Change {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
    if ev.need_rescan() {
        return Change::Rescan;
    }
    let path = ev.paths.first();
    let read_file = path.filter(|p| watched.reads(p));
    match &ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => match read_file {
            Some(p) => Change::Written(p.clone()),
            None => Change::Nothing,
        },
        EventKind::Access(_) => Change::Nothing,
        EventKind::Modify(ModifyKind::Data(_)) => match read_file {
            Some(p) => Change::Writing(p.clone()),
            None => Change::Nothing,
        },
        EventKind::Create(CreateKind::File) => match read_file {
            Some(p) if fresh_file(p) => Change::Writing(p.clone()),
            _ => Change::Changed(None),
        },
        EventKind::Remove(RemoveKind::File | RemoveKind::Any | RemoveKind::Other)
        | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Change::Changed(path.cloned()),
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => Change::Changed(None),
    }
}

/// Whether `p` is a regular file with a single link (see [`classify`]).
fn is_fresh_file(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.nlink() == 1)
}

/// When the next read is due: `period` after the last one, or [`DEBOUNCE`] after the last
/// change inotify reported; either way not while a manifest is still open for writing, but at
/// most `period` after its write began (a writer that holds a file open longer, or a close
/// event that never comes, cannot hold the source back for good).
#[derive(Debug)]
struct ReadSchedule {
    period: Duration,
    next_full: Instant,
    changed_at: Option<Instant>,
    /// Manifests open for writing, with when their write began.
    writing: HashMap<PathBuf, Instant>,
}

impl ReadSchedule {
    fn new(period: Duration, now: Instant) -> Self {
        Self {
            period,
            next_full: now + period,
            changed_at: None,
            writing: HashMap::new(),
        }
    }

    fn apply(&mut self, change: Change, now: Instant) {
        match change {
            Change::Nothing => {}
            Change::Writing(p) => {
                self.writing.entry(p).or_insert(now);
            }
            Change::Written(p) => {
                self.writing.remove(&p);
                self.changed_at = Some(now);
            }
            Change::Changed(gone) => {
                if let Some(p) = gone {
                    self.writing.remove(&p);
                }
                self.changed_at = Some(now);
            }
            Change::Rescan => {
                self.writing.clear();
                self.changed_at = Some(now);
            }
        }
    }

    fn read_at(&self) -> Instant {
        let due = match self.changed_at {
            Some(t) => (t + DEBOUNCE).min(self.next_full),
            None => self.next_full,
        };
        let held = self
            .writing
            .values()
            .map(|began| *began + self.period)
            .max();
        held.map_or(due, |h| h.max(due))
    }

    fn did_read(&mut self, now: Instant) {
        self.changed_at = None;
        self.next_full = now + self.period;
        let period = self.period;
        self.writing.retain(|_, began| *began + period > now);
    }
}

/// Watches the directory (or a file's directory); `None` when it does not exist yet (the
/// periodic re-read retries). Classified events go to `tx`; when it is full, `lost` asks for a
/// rescan instead.
fn start_watch(
    path: &Path,
    tx: mpsc::Sender<Change>,
    lost: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let is_dir = path.is_dir();
    let dir = if is_dir {
        path.to_owned()
    } else {
        path.parent()?.to_owned()
    };
    let watched = Watched {
        path: path.to_owned(),
        is_dir,
    };
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let change = match res {
            Ok(ev) => classify(&ev, &watched, is_fresh_file),
            Err(_) => Change::Rescan,
        };
        if change != Change::Nothing && tx.try_send(change).is_err() {
            // Full (or closed): a dropped Written would leave a file "open"; rescan instead.
            let _ = lost.try_send(());
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

    /// Unchanged files are not decoded again; a rewrite of the same size is, and a removed
    /// file leaves the cache.
    #[test]
    fn rereads_decode_only_changed_files() {
        let d = tmpdir("cache");
        let (a, b) = (d.join("a.yaml"), d.join("b.yaml"));
        std::fs::write(&a, POD.replace("NAME", "a")).expect("write");
        std::fs::write(&b, POD.replace("NAME", "b")).expect("write");
        let mut cache = DecodedCache::default();
        let first = list_cached(&d, "n1", &mut cache);
        let again = list_cached(&d, "n1", &mut cache);
        assert_eq!(first.pods.len(), 2);
        for (uid, pod) in &first.pods {
            assert!(Arc::ptr_eq(pod, &again.pods[uid]), "{uid} decoded again");
        }
        // Same length, new content: a new mtime/ctime, so decoded again.
        std::fs::write(&b, POD.replace("NAME", "c")).expect("write");
        let changed = list_cached(&d, "n1", &mut cache);
        let mut names: Vec<_> = changed
            .pods
            .values()
            .map(|p| p.pod_ref.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["a-n1", "c-n1"]);
        std::fs::remove_file(&a).expect("remove");
        let _ = list_cached(&d, "n1", &mut cache);
        assert_eq!(cache.files.len(), 1);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn missing_path_is_an_empty_set() {
        let l = list(Path::new("/nonexistent/nodelet/manifests"), "n");
        assert!(l.pods.is_empty() && l.errors.is_empty());
    }

    fn event(kind: notify::EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_owned())
    }

    #[test]
    fn writes_wait_for_the_close_and_reads_are_not_changes() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
            RenameMode,
        };
        let dir = Path::new("/m");
        let w = Watched {
            path: dir.to_owned(),
            is_dir: true,
        };
        let f = dir.join("p.yaml");
        let c = |kind, path: &Path| classify(&event(kind, path), &w, |_| true);
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            c(EventKind::Access(AccessKind::Open(AccessMode::Any)), &f),
            Change::Nothing
        );
        assert_eq!(
            c(EventKind::Access(AccessKind::Close(AccessMode::Read)), &f),
            Change::Nothing
        );
        assert_eq!(
            c(EventKind::Create(CreateKind::File), &f),
            Change::Writing(f.clone())
        );
        assert_eq!(c(data, &f), Change::Writing(f.clone()));
        assert_eq!(c(close_write, &f), Change::Written(f.clone()));
        assert_eq!(
            c(EventKind::Remove(RemoveKind::File), &f),
            Change::Changed(Some(f.clone()))
        );
        assert_eq!(
            c(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &f),
            Change::Changed(Some(f.clone()))
        );
        assert_eq!(
            c(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &f),
            Change::Changed(None)
        );
        assert_eq!(
            c(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                &f
            ),
            Change::Changed(None)
        );
        // Backends without close events report content changes as Modify(Any): read at once.
        assert_eq!(
            c(EventKind::Modify(ModifyKind::Any), &f),
            Change::Changed(None)
        );
        // A link or symlink appears complete; there is no close to wait for.
        let linked = classify(&event(EventKind::Create(CreateKind::File), &f), &w, |_| {
            false
        });
        assert_eq!(linked, Change::Changed(None));
        // Hidden files (editor swap files, `.x.tmp` before a rename) are never waited for.
        let swap = dir.join(".p.yaml.swp");
        assert_eq!(c(data, &swap), Change::Nothing);
        assert_eq!(c(close_write, &swap), Change::Nothing);
        assert_eq!(
            c(EventKind::Create(CreateKind::File), &swap),
            Change::Changed(None)
        );
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(classify(&overflow, &w, |_| true), Change::Rescan);
    }

    #[test]
    fn single_file_path_waits_only_for_that_file() {
        use notify::EventKind;
        use notify::event::{DataChange, ModifyKind};
        let w = Watched {
            path: PathBuf::from("/etc/.pod.yaml"),
            is_dir: false,
        };
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let c = |path: &str| classify(&event(data, Path::new(path)), &w, |_| true);
        assert_eq!(
            c("/etc/.pod.yaml"),
            Change::Writing(PathBuf::from("/etc/.pod.yaml"))
        );
        assert_eq!(c("/etc/other.yaml"), Change::Nothing);
    }

    #[test]
    fn reads_wait_while_a_manifest_is_open_for_writing_at_most_one_period() {
        let period = Duration::from_secs(20);
        let t0 = Instant::now();
        let mut s = ReadSchedule::new(period, t0);
        assert_eq!(s.read_at(), t0 + period);
        let f = PathBuf::from("/m/p.yaml");
        s.apply(Change::Writing(f.clone()), t0);
        // A second write does not restart the wait.
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(5));
        // Another file's change is held back too: a read now would parse p.yaml half written.
        s.apply(Change::Changed(None), t0 + Duration::from_secs(1));
        assert_eq!(s.read_at(), t0 + period);
        s.apply(Change::Written(f.clone()), t0 + Duration::from_secs(6));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(6) + DEBOUNCE);
        s.did_read(t0 + Duration::from_secs(6));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(26));
        // A removed file is no longer being written; a rescan forgets every open file.
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(7));
        s.apply(
            Change::Changed(Some(f.clone())),
            t0 + Duration::from_secs(8),
        );
        assert_eq!(s.read_at(), t0 + Duration::from_secs(8) + DEBOUNCE);
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(9));
        s.apply(Change::Rescan, t0 + Duration::from_secs(10));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(10) + DEBOUNCE);
        // A write whose close never comes stops holding reads one period after it began.
        s.did_read(t0 + Duration::from_secs(10));
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(11));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(31));
        s.did_read(t0 + Duration::from_secs(31));
        assert!(s.writing.is_empty());
    }

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
        let d = tmpdir("pieces");
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
        cancel.cancel();
        let _ = task.await;
        let _ = std::fs::remove_dir_all(d);
        let text = log.text();
        assert!(
            !text.contains("p.yaml"),
            "the partial manifest was read and reported:\n{text}"
        );
    }

    #[tokio::test]
    async fn an_open_swap_file_does_not_hold_back_other_manifests() {
        use std::io::Write;
        let d = tmpdir("swap");
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
        rx.borrow_and_update();
        let mut swap = std::fs::File::create(d.join(".p.yaml.swp")).expect("create");
        swap.write_all(b"b0VIM").expect("write");
        std::fs::write(d.join("p.yaml"), POD.replace("NAME", "p")).expect("write");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("update while the swap file is open")
            .expect("open");
        assert_eq!(rx.borrow().as_ref().map(|s| s.len()), Some(1));
        drop(swap);
        cancel.cancel();
        let _ = task.await;
        let _ = std::fs::remove_dir_all(d);
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
