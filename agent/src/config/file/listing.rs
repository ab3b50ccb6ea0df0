//! One read of the static pod path: which files count, their decoded pods, and the cache that
//! lets the periodic re-read skip files whose `stat` did not change.

use super::super::manifest;
use crate::pod::PodHandle;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::debug;

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

#[cfg(test)]
mod tests {
    use super::super::test_support::{POD, tmpdir};
    use super::*;

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
}
