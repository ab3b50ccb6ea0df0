//! The kubelet's atomic writer (pkg/volume/util/atomic_writer.go): a volume's files live in a
//! timestamped directory `..<ts>.<n>`, the `..data` symlink points at the current one, and each
//! top-level user-visible name is a symlink through `..data`. An update writes a new timestamped
//! directory and renames a fresh `..data_tmp` link over `..data`, so a reader sees either the
//! old set of files or the new one, never a mix; keys that vanished lose their visible link.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

const DATA_DIR: &str = "..data";
const NEW_DATA_DIR: &str = "..data_tmp";
const MAX_FILE_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// One file of a volume's payload (volumeutil.FileProjection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A volume's files by relative path.
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a payload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A payload path is not a safe relative path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A filesystem call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// validatePath: relative, no `..` element, no element longer than 255 bytes, and not starting
/// with `..` (names the writer itself uses).
fn validate_path(p: &str) -> Result<(), WriteError> {
    let bad = |reason| {
        Err(WriteError::InvalidPath {
            path: p.to_owned(),
            reason,
        })
    };
    if p.is_empty() {
        return bad("must not be empty");
    }
    if p.starts_with('/') {
        return bad("must be relative path");
    }
    if p.len() > MAX_PATH {
        return bad("must be less than or equal to 4096 characters");
    }
    let items: Vec<&str> = p.split('/').collect();
    if items.contains(&"..") {
        return bad("must not contain '..'");
    }
    if items.iter().any(|i| i.len() > MAX_FILE_NAME) {
        return bad("filenames must be less than or equal to 255 characters");
    }
    if items[0].starts_with("..") {
        return bad("must not start with '..'");
    }
    Ok(())
}

/// filepath.Clean for relative paths already free of `..`: drops `.` and empty elements.
fn clean(p: &str) -> String {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Writes `payload` into `target` (which must exist) atomically; returns whether anything on
/// disk changed. `fs_group`, when set, makes the volume group-owned and group-readable as the
/// kubelet's SetVolumeOwnership does for a read-only volume ([`super::ownership`]).
pub fn write(target: &Path, payload: &Payload, fs_group: Option<u32>) -> Result<bool, WriteError> {
    let mut clean_payload = Payload::new();
    for (k, v) in payload {
        validate_path(k)?;
        clean_payload.insert(clean(k), v.clone());
    }
    let payload = clean_payload;
    let data_link = target.join(DATA_DIR);
    let old_ts = match std::fs::read_link(&data_link) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading link", &data_link)(e)),
    };
    let mut to_remove = BTreeSet::new();
    let mut old_dir_to_delete = None;
    let mut changed = true;
    if let Some(old) = old_ts.as_ref() {
        let old_path = target.join(old);
        to_remove = paths_to_remove(&payload, &old_path)?;
        if !should_write(&payload, &old_path)? && to_remove.is_empty() {
            changed = false;
        } else {
            old_dir_to_delete = Some(old_path);
        }
    }
    if changed {
        let ts = new_timestamp_dir(target)?;
        let ts_name = ts
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| ts.as_os_str().to_owned());
        if let Err(e) = write_payload(&payload, &ts) {
            let _ = std::fs::remove_dir_all(&ts);
            return Err(e);
        }
        // setPerms before the swap, on the whole volume as configmap.go does: the first
        // write also made files outside the timestamped directory.
        if let Some(gid) = fs_group {
            let g = super::ownership::FsGroup {
                gid,
                on_root_mismatch: false,
            };
            if let Err(e) = super::ownership::apply(target, g, true) {
                let _ = std::fs::remove_dir_all(&ts);
                return Err(io_err("applying fsGroup to", target)(e));
            }
        }
        let tmp_link = target.join(NEW_DATA_DIR);
        // A crash between symlink and rename leaves a stale ..data_tmp behind.
        let _ = std::fs::remove_file(&tmp_link);
        if let Err(e) = std::os::unix::fs::symlink(&ts_name, &tmp_link) {
            let _ = std::fs::remove_dir_all(&ts);
            return Err(io_err("creating symlink", &tmp_link)(e));
        }
        if let Err(e) = std::fs::rename(&tmp_link, &data_link) {
            let _ = std::fs::remove_file(&tmp_link);
            let _ = std::fs::remove_dir_all(&ts);
            return Err(io_err("renaming symlink over", &data_link)(e));
        }
    }
    create_user_visible(target, &payload)?;
    for p in &to_remove {
        // Nested paths disappear with the old timestamped directory; only top-level names
        // have links of their own.
        if p.contains('/') {
            continue;
        }
        let link = target.join(p);
        if let Err(e) = std::fs::remove_file(&link)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err("removing old visible path", &link)(e));
        }
    }
    if let Some(old) = old_dir_to_delete {
        std::fs::remove_dir_all(&old).map_err(io_err("removing old data directory", &old))?;
    }
    Ok(changed)
}

/// Every path under the old data directory that the new payload no longer has, including the
/// parents of nested files.
fn paths_to_remove(payload: &Payload, old: &Path) -> Result<BTreeSet<String>, WriteError> {
    let mut current = BTreeSet::new();
    walk(old, old, &mut current)?;
    let mut wanted = BTreeSet::new();
    for file in payload.keys() {
        let mut sub = file.as_str();
        loop {
            wanted.insert(sub.to_owned());
            match sub.rsplit_once('/') {
                Some((parent, _)) => sub = parent,
                None => break,
            }
        }
    }
    Ok(current.difference(&wanted).cloned().collect())
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<(), WriteError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err("listing", dir))?;
        let path = e.path();
        if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
        if e.file_type().map_err(io_err("stat", &path))?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// shouldWritePayload, stricter: a changed mode counts as a change too (the kubelet compares
/// only contents, so an edited defaultMode never reached running pods).
fn should_write(payload: &Payload, old: &Path) -> Result<bool, WriteError> {
    for (rel, f) in payload {
        let path = old.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        if meta.permissions().mode() & 0o7777 != f.mode & 0o7777 {
            return Ok(true);
        }
        let on_disk = std::fs::read(&path).map_err(io_err("reading", &path))?;
        if on_disk != f.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `..YYYY_MM_DD_HH_MM_SS.<n>`, mode 0755 (newTimestampDir).
fn new_timestamp_dir(target: &Path) -> Result<PathBuf, WriteError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = format_utc(now.as_secs());
    let mut n = u64::from(now.subsec_nanos());
    loop {
        let dir = target.join(format!("..{stamp}.{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io_err("creating directory", &dir)(e)),
        }
    }
}

/// `2006_01_02_15_04_05` for a Unix time, UTC.
fn format_utc(secs: u64) -> String {
    use k8s_openapi::jiff::Timestamp;
    i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y_%m_%d_%H_%M_%S")
        .to_string()
}

fn write_payload(payload: &Payload, dir: &Path) -> Result<(), WriteError> {
    for (rel, f) in payload {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating directory", parent))?;
        }
        std::fs::write(&path, &f.data).map_err(io_err("writing", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

/// A symlink `<name> -> ..data/<name>` for each top-level name not linked yet.
fn create_user_visible(target: &Path, payload: &Payload) -> Result<(), WriteError> {
    let tops: BTreeSet<&str> = payload
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k))
        .collect();
    for top in tops {
        let visible = target.join(top);
        if std::fs::symlink_metadata(&visible).is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(Path::new(DATA_DIR).join(top), &visible)
            .map_err(io_err("creating symlink", &visible))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "nodelet-aw-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).expect("scratch dir");
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(k, v, m)| {
                (
                    k.to_string(),
                    FileProjection {
                        data: v.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn entries(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn first_write_lays_out_timestamp_dir_data_link_and_visible_links() {
        let s = Scratch::new("layout");
        let changed = write(
            &s.0,
            &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)]),
            None,
        )
        .expect("write");
        assert!(changed);
        let names = entries(&s.0);
        let ts: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("..2") && n.len() > 22)
            .collect();
        assert_eq!(ts.len(), 1, "one timestamped dir in {names:?}");
        assert!(names.contains("..data") && names.contains("a") && names.contains("sub"));
        assert!(!names.contains("..data_tmp"));
        assert_eq!(
            std::fs::read_link(s.0.join("..data")).expect("link"),
            PathBuf::from(ts[0])
        );
        assert_eq!(
            std::fs::read_link(s.0.join("a")).expect("link"),
            PathBuf::from("..data/a")
        );
        assert_eq!(
            std::fs::read_to_string(s.0.join("sub/b")).expect("read"),
            "2"
        );
        let mode = |p: &str| {
            std::fs::metadata(s.0.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("sub/b"), 0o400);
        assert_eq!(mode(ts[0]), 0o755);
    }

    #[test]
    fn update_swaps_data_link_and_drops_removed_keys() {
        let s = Scratch::new("update");
        write(
            &s.0,
            &payload(&[("a", "1", 0o644), ("b", "2", 0o644)]),
            None,
        )
        .expect("write");
        let first = std::fs::read_link(s.0.join("..data")).expect("link");
        assert!(
            !write(
                &s.0,
                &payload(&[("a", "1", 0o644), ("b", "2", 0o644)]),
                None
            )
            .expect("rewrite"),
            "an identical payload is not rewritten"
        );
        assert_eq!(std::fs::read_link(s.0.join("..data")).expect("link"), first);

        write(
            &s.0,
            &payload(&[("a", "one", 0o644), ("c", "3", 0o644)]),
            None,
        )
        .expect("update");
        let second = std::fs::read_link(s.0.join("..data")).expect("link");
        assert_ne!(first, second, "..data points at a new timestamped dir");
        assert!(!s.0.join(&first).exists(), "the old dir is removed");
        assert_eq!(std::fs::read_to_string(s.0.join("a")).expect("a"), "one");
        assert_eq!(std::fs::read_to_string(s.0.join("c")).expect("c"), "3");
        assert!(
            std::fs::symlink_metadata(s.0.join("b")).is_err(),
            "a removed key's link is gone"
        );
        let names = entries(&s.0);
        assert_eq!(names.len(), 4, "..data, one ts dir, a, c: {names:?}");
    }

    #[test]
    fn a_mode_change_alone_is_written() {
        let s = Scratch::new("mode");
        write(&s.0, &payload(&[("a", "1", 0o644)]), None).expect("write");
        assert!(write(&s.0, &payload(&[("a", "1", 0o600)]), None).expect("rewrite"));
        let mode = std::fs::metadata(s.0.join("a"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let s = Scratch::new("paths");
        for bad in ["", "/abs", "x/../y", "..hidden", "../up"] {
            let r = write(&s.0, &payload(&[(bad, "x", 0o644)]), None);
            assert!(
                matches!(r, Err(WriteError::InvalidPath { .. })),
                "{bad:?}: {r:?}"
            );
        }
        assert!(entries(&s.0).is_empty(), "nothing was written");
        write(&s.0, &payload(&[("./x//y", "v", 0o644)]), None).expect("cleaned path");
        assert_eq!(std::fs::read_to_string(s.0.join("x/y")).expect("x/y"), "v");
    }

    #[test]
    fn timestamps_format_as_the_kubelet_does() {
        assert_eq!(format_utc(0), "1970_01_01_00_00_00");
        assert_eq!(format_utc(1_796_515_815), "2026_12_06_00_10_15");
        assert_eq!(format_utc(951_782_400), "2000_02_29_00_00_00");
    }
}
