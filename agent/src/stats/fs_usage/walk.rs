//! A bounded `du`: bytes on disk and inodes under a directory, as the kubelet's
//! pkg/volume/util/fs.DiskUsage counts them (lstat, 512-byte blocks, hard links once, no
//! descent into another filesystem, the top directory itself counted), with a cap on the
//! entries one walk may visit so a pod that fills a volume with millions of files cannot make
//! the timer task run for minutes.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Entries one walk visits at most (a pod's volume or log dir); past it the walk stops and
/// reports what it counted as a lower bound.
pub const MAX_ENTRIES: u64 = 200_000;

/// What a walk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Bytes allocated on disk (`st_blocks * 512`), as `du` reports.
    pub bytes: u64,
    /// Inodes: files, directories, symlinks (each hard-linked inode once).
    pub inodes: u64,
    /// The walk stopped at [`MAX_ENTRIES`]: the numbers are a lower bound.
    pub truncated: bool,
}

/// Walks `root` without following symlinks; entries that vanish mid-walk are skipped (a pod
/// deletes files while we count). An error on `root` itself is returned.
pub fn walk(root: &Path, max_entries: u64) -> io::Result<DirUsage> {
    let top = fs::symlink_metadata(root)?;
    let dev = top.dev();
    let mut seen_links: HashSet<u64> = HashSet::new();
    let mut out = DirUsage::default();
    let mut count = |m: &fs::Metadata, out: &mut DirUsage| {
        // A hard-linked inode counts once (fs.DiskUsage dedupes nlink > 1 by inode number).
        if m.nlink() > 1 && !m.is_dir() && !seen_links.insert(m.ino()) {
            return;
        }
        out.bytes += m.blocks() * 512;
        out.inodes += 1;
    };
    count(&top, &mut out);
    if !top.is_dir() {
        return Ok(out);
    }
    let mut visited: u64 = 1;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if dir == root => return Err(e),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            if visited >= max_entries {
                out.truncated = true;
                return Ok(out);
            }
            visited += 1;
            // symlink_metadata: a symlink is counted as itself and never followed, so a link
            // loop or a link out of the pod's tree costs one inode.
            let Ok(m) = entry.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            count(&m, &mut out);
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// The regular files directly in `dir` (not its sub-directories), as the kubelet counts a
/// pod's or a container's log directory (host_stats_provider.go fileMetricsByDir); `None` if
/// the directory does not exist.
pub fn files_in(dir: &Path) -> Option<DirUsage> {
    let entries = fs::read_dir(dir).ok()?;
    let mut out = DirUsage::default();
    for entry in entries.flatten() {
        let Ok(m) = entry.path().symlink_metadata() else {
            continue;
        };
        if m.is_dir() {
            continue;
        }
        out.bytes += m.blocks() * 512;
        out.inodes += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nodelet-walk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn write(path: &Path, bytes: usize) {
        let mut f = fs::File::create(path).expect("create");
        f.write_all(&vec![7u8; bytes]).expect("write");
        f.sync_all().expect("sync");
    }

    #[test]
    fn counts_bytes_on_disk_and_every_inode_including_the_top_directory() {
        let d = scratch("bytes");
        fs::create_dir(d.join("sub")).expect("mkdir");
        write(&d.join("a"), 1 << 20);
        write(&d.join("sub/b"), 4096);
        let u = walk(&d, MAX_ENTRIES).expect("walk");
        // top dir + sub + 2 files.
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= (1 << 20) + 4096, "{u:?}");
        assert!(
            u.bytes < (1 << 20) + 4096 + 64 * 1024,
            "only a few blocks of slack: {u:?}"
        );
        assert!(!u.truncated);
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn symlinks_are_counted_once_and_never_followed_even_in_a_loop() {
        let d = scratch("links");
        let outside = scratch("links-outside");
        write(&outside.join("big"), 2 << 20);
        std::os::unix::fs::symlink(&outside, d.join("out")).expect("symlink");
        std::os::unix::fs::symlink(&d, d.join("loop")).expect("symlink");
        std::os::unix::fs::symlink("loop", d.join("loop2")).expect("symlink");
        let u = walk(&d, MAX_ENTRIES).expect("walk");
        assert_eq!(u.inodes, 4, "the dir and three links: {u:?}");
        assert!(
            u.bytes < 1 << 20,
            "the 2 MiB behind the link is not ours: {u:?}"
        );
        fs::remove_dir_all(&d).expect("cleanup");
        fs::remove_dir_all(&outside).expect("cleanup");
    }

    #[test]
    fn hard_links_count_once_and_the_walk_stops_at_its_budget() {
        let d = scratch("hard");
        write(&d.join("a"), 64 * 1024);
        fs::hard_link(d.join("a"), d.join("b")).expect("link");
        let u = walk(&d, MAX_ENTRIES).expect("walk");
        assert_eq!(u.inodes, 2);
        assert!(u.bytes < 128 * 1024, "{u:?}");
        for i in 0..20 {
            write(&d.join(format!("f{i}")), 10);
        }
        let cut = walk(&d, 5).expect("walk");
        assert!(cut.truncated);
        assert!(cut.inodes <= 5, "{cut:?}");
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn log_dirs_count_only_their_files_and_a_missing_dir_is_none() {
        let d = scratch("logs");
        fs::create_dir(d.join("c")).expect("mkdir");
        write(&d.join("c/0.log"), 8192);
        write(&d.join("top.log"), 8192);
        let u = files_in(&d).expect("exists");
        assert_eq!(u.inodes, 1);
        assert!(u.bytes >= 8192);
        assert_eq!(files_in(&d.join("nope")), None);
        assert!(matches!(walk(&d.join("nope"), 10), Err(e) if e.kind() == io::ErrorKind::NotFound));
        fs::remove_dir_all(&d).expect("cleanup");
    }
}
