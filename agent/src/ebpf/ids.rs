//! Cgroup id -> path, per hierarchy. A cgroup's kernfs id is its directory's inode number, so
//! a walk of the hierarchy with `stat` finds every id; mkdir/rmdir records keep the index
//! current between walks. On v1 each hierarchy numbers its own cgroups: the same path has a
//! different id under `cpu` and `memory`.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::stats::cgroupfs::{cgroup_dir, walk};

/// Index of one hierarchy.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
}

/// id -> relative path, for the hierarchies the agent keys by.
#[derive(Debug, Default)]
pub struct CgroupIds {
    hierarchies: HashMap<u32, Hierarchy>,
    /// Minimum time between two walks of one hierarchy on unknown ids.
    pub min_walk_interval: Duration,
    /// Walks done (metric).
    pub walks: u64,
    /// Bumped whenever an id is added, so users can tell when to look for new ones.
    pub generation: u64,
}

impl CgroupIds {
    /// An empty index; `track` adds hierarchies.
    pub fn new(min_walk_interval: Duration) -> Self {
        Self {
            hierarchies: HashMap::new(),
            min_walk_interval,
            walks: 0,
            generation: 0,
        }
    }

    /// Indexes `hierarchy_id`, mounted at `mount` (idempotent).
    pub fn track(&mut self, hierarchy_id: u32, mount: &Path) {
        self.hierarchies
            .entry(hierarchy_id)
            .or_insert_with(|| Hierarchy {
                mount: mount.to_owned(),
                by_id: HashMap::new(),
                last_walk: None,
            });
    }

    /// Path of `id` in `hierarchy_id`, if known.
    pub fn path(&self, hierarchy_id: u32, id: u64) -> Option<&str> {
        self.hierarchies
            .get(&hierarchy_id)?
            .by_id
            .get(&id)
            .map(String::as_str)
    }

    /// Every known path of `hierarchy_id`.
    pub fn paths(&self, hierarchy_id: u32) -> impl Iterator<Item = &str> {
        self.hierarchies
            .get(&hierarchy_id)
            .into_iter()
            .flat_map(|h| h.by_id.values().map(String::as_str))
    }

    /// Every known (id, path) of `hierarchy_id`.
    pub fn entries(&self, hierarchy_id: u32) -> impl Iterator<Item = (u64, &str)> {
        self.hierarchies
            .get(&hierarchy_id)
            .into_iter()
            .flat_map(|h| h.by_id.iter().map(|(id, p)| (*id, p.as_str())))
    }

    /// Records a cgroup seen in a mkdir record.
    pub fn insert(&mut self, hierarchy_id: u32, id: u64, path: String) {
        if let Some(h) = self.hierarchies.get_mut(&hierarchy_id) {
            h.by_id.insert(id, path);
            self.generation += 1;
        }
    }

    /// Forgets a removed cgroup.
    pub fn remove(&mut self, hierarchy_id: u32, id: u64) -> Option<String> {
        self.hierarchies.get_mut(&hierarchy_id)?.by_id.remove(&id)
    }

    /// Walks the hierarchy again unless it was walked less than `min_walk_interval` ago.
    /// Returns whether it walked. Blocking: call from a context that may block.
    pub fn walk_if_due(&mut self, hierarchy_id: u32) -> io::Result<bool> {
        let min = self.min_walk_interval;
        let Some(h) = self.hierarchies.get_mut(&hierarchy_id) else {
            return Ok(false);
        };
        if h.last_walk.is_some_and(|t| t.elapsed() < min) {
            return Ok(false);
        }
        h.last_walk = Some(Instant::now());
        let mut by_id = HashMap::new();
        for rel in walk(&h.mount, "/")? {
            // A cgroup removed during the walk is skipped.
            if let Ok(meta) = std::fs::metadata(cgroup_dir(&h.mount, &rel)) {
                by_id.insert(meta.ino(), rel);
            }
        }
        h.by_id = by_id;
        self.walks += 1;
        self.generation += 1;
        Ok(true)
    }

    /// Id of a path (its directory inode), straight from the filesystem.
    pub fn id_of(&self, hierarchy_id: u32, cgroup: &str) -> io::Result<u64> {
        let h = self.hierarchies.get(&hierarchy_id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("hierarchy {hierarchy_id} not tracked"),
            )
        })?;
        Ok(std::fs::metadata(cgroup_dir(&h.mount, cgroup))?.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_update_the_index_of_tracked_hierarchies_only() {
        let mut ids = CgroupIds::new(Duration::from_secs(1));
        ids.track(4, Path::new("/sys/fs/cgroup/memory"));
        ids.insert(4, 77, "/a/b".into());
        ids.insert(9, 78, "/ignored".into());
        assert_eq!(ids.path(4, 77), Some("/a/b"));
        assert_eq!(ids.path(9, 78), None);
        assert_eq!(ids.remove(4, 77).as_deref(), Some("/a/b"));
        assert_eq!(ids.path(4, 77), None);
    }

    #[test]
    fn walking_a_directory_tree_maps_inodes_to_relative_paths() {
        let dir = std::env::temp_dir().join(format!("nodelet-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("x/y")).expect("mkdir");
        let mut ids = CgroupIds::new(Duration::from_secs(60));
        ids.track(1, &dir);
        assert!(ids.walk_if_due(1).expect("walk"));
        assert!(!ids.walk_if_due(1).expect("walk"), "rate-limited");
        let y = ids.id_of(1, "/x/y").expect("stat");
        assert_eq!(ids.path(1, y), Some("/x/y"));
        let root = ids.id_of(1, "/").expect("stat");
        assert_eq!(ids.path(1, root), Some("/"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
