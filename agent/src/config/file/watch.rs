//! inotify for the static pod path: what each event means, and when the next read is due.

use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Least time between two reads that inotify events prompt. The first change after a quiet spell
/// is read at once (a renamed-in manifest is complete: waiting would only delay its pod); the
/// rest of a burst (a tool renaming many manifests in) waits for this gap, so a burst costs a
/// few reads rather than one per file.
const MIN_GAP: Duration = Duration::from_millis(10);

/// What one inotify event means for the pod set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
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

/// When the next read is due: `period` after the last one, or as soon as inotify reports a
/// change but no sooner than [`MIN_GAP`] after the last read; either way not while a manifest
/// is still open for writing, but at most `period` after its write began (a writer that holds a
/// file open longer, or a close event that never comes, cannot hold the source back for good).
#[derive(Debug)]
pub(super) struct ReadSchedule {
    period: Duration,
    next_full: Instant,
    last_read: Option<Instant>,
    changed_at: Option<Instant>,
    /// Manifests open for writing, with when their write began.
    writing: HashMap<PathBuf, Instant>,
}

impl ReadSchedule {
    pub(super) fn new(period: Duration, now: Instant) -> Self {
        Self {
            period,
            next_full: now + period,
            last_read: None,
            changed_at: None,
            writing: HashMap::new(),
        }
    }

    pub(super) fn apply(&mut self, change: Change, now: Instant) {
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

    pub(super) fn read_at(&self) -> Instant {
        let due = match self.changed_at {
            Some(t) => {
                let gap = self.last_read.map_or(t, |r| r + MIN_GAP);
                t.max(gap).min(self.next_full)
            }
            None => self.next_full,
        };
        let held = self
            .writing
            .values()
            .map(|began| *began + self.period)
            .max();
        held.map_or(due, |h| h.max(due))
    }

    pub(super) fn did_read(&mut self, now: Instant) {
        self.changed_at = None;
        self.last_read = Some(now);
        self.next_full = now + self.period;
        let period = self.period;
        self.writing.retain(|_, began| *began + period > now);
    }
}

/// Watches the directory (or a file's directory); `None` when it does not exist yet (the
/// periodic re-read retries). Classified events go to `tx`; when it is full, `lost` asks for a
/// rescan instead.
pub(super) fn start_watch(
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
        assert_eq!(s.read_at(), t0 + Duration::from_secs(6));
        s.did_read(t0 + Duration::from_secs(6));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(26));
        // A removed file is no longer being written; a rescan forgets every open file.
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(7));
        s.apply(
            Change::Changed(Some(f.clone())),
            t0 + Duration::from_secs(8),
        );
        assert_eq!(s.read_at(), t0 + Duration::from_secs(8));
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(9));
        s.apply(Change::Rescan, t0 + Duration::from_secs(10));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(10));
        // A write whose close never comes stops holding reads one period after it began.
        s.did_read(t0 + Duration::from_secs(10));
        s.apply(Change::Writing(f.clone()), t0 + Duration::from_secs(11));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(31));
        s.did_read(t0 + Duration::from_secs(31));
        assert!(s.writing.is_empty());
    }

    #[test]
    fn a_change_after_a_quiet_spell_is_read_at_once_and_a_burst_waits_the_gap() {
        let t0 = Instant::now();
        let mut s = ReadSchedule::new(Duration::from_secs(20), t0);
        let renamed = |s: &mut ReadSchedule, at| s.apply(Change::Changed(None), at);
        renamed(&mut s, t0 + Duration::from_secs(1));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(1));
        s.did_read(t0 + Duration::from_secs(1));
        // The rest of the burst, arriving while that read ran, waits for the gap.
        let next = t0 + Duration::from_secs(1) + Duration::from_millis(1);
        renamed(&mut s, next);
        assert_eq!(s.read_at(), t0 + Duration::from_secs(1) + MIN_GAP);
        s.did_read(s.read_at());
        renamed(&mut s, t0 + Duration::from_secs(5));
        assert_eq!(s.read_at(), t0 + Duration::from_secs(5));
    }
}
