//! Cgroup path -> (pod UID, container id), from the names the agent and runc give cgroups.
//!
//! cgroupfs driver: `<cgroupRoot>/kubepods[/burstable|/besteffort]/pod<uid>/<container id>`
//! (`cm::ContainerManager::pod_cgroup_parent`, runc's `<parent>/<id>`). systemd driver:
//! `.../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`.

/// What a cgroup path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupKind<'a> {
    /// A pod's cgroup: `pod<uid>`.
    Pod {
        /// Pod UID as the agent wrote it.
        uid: String,
    },
    /// A container's (or the sandbox's) cgroup directly under a pod cgroup.
    Container {
        /// Pod UID.
        uid: String,
        /// Container (or sandbox) id.
        id: &'a str,
    },
}

/// The pod UID in one path component, if it names a pod cgroup.
fn pod_uid(component: &str) -> Option<String> {
    if let Some(slice) = component.strip_suffix(".slice") {
        // systemd: kubepods-besteffort-pod<uid with '-' written as '_'>.slice
        let i = slice.rfind("pod")?;
        let uid = &slice[i + 3..];
        let before = &slice[..i];
        (!uid.is_empty() && (before.is_empty() || before.ends_with('-')))
            .then(|| uid.replace('_', "-"))
    } else {
        let uid = component.strip_prefix("pod")?;
        (!uid.is_empty()).then(|| uid.to_owned())
    }
}

/// The container id in a path component under a pod cgroup.
fn container_id(component: &str) -> Option<&str> {
    let id = match component.strip_suffix(".scope") {
        Some(scope) => scope.rsplit_once('-').map_or(scope, |(_, id)| id),
        None => component,
    };
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

/// Classifies `path` (relative to the hierarchy root, e.g. `/kubepods/pod<uid>/<id>`).
pub fn classify(path: &str) -> Option<CgroupKind<'_>> {
    let path = path.trim_end_matches('/');
    let (parent, last) = path.rsplit_once('/')?;
    if let Some(uid) = pod_uid(last) {
        return Some(CgroupKind::Pod { uid });
    }
    let pod_component = parent.rsplit('/').next()?;
    let uid = pod_uid(pod_component)?;
    Some(CgroupKind::Container {
        uid,
        id: container_id(last)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_pod_and_container_paths_are_recognised() {
        assert_eq!(
            classify("/r/kubepods/besteffort/podab-12"),
            Some(CgroupKind::Pod {
                uid: "ab-12".into()
            })
        );
        assert_eq!(
            classify("/r/kubepods/podab-12/0123abcdef"),
            Some(CgroupKind::Container {
                uid: "ab-12".into(),
                id: "0123abcdef"
            })
        );
        assert_eq!(classify("/r/kubepods/besteffort"), None);
        assert_eq!(classify("/r/kubepods"), None);
        assert_eq!(classify("/"), None);
        // A nested cgroup inside a container is not the container.
        assert_eq!(classify("/kubepods/poda/c1/inner"), None);
    }

    #[test]
    fn systemd_slice_and_scope_names_are_recognised() {
        assert_eq!(
            classify("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice"),
            Some(CgroupKind::Pod { uid: "a-b".into() })
        );
        assert_eq!(
            classify("/kubepods.slice/kubepods-poda_b.slice/cri-containerd-abc123.scope"),
            Some(CgroupKind::Container {
                uid: "a-b".into(),
                id: "abc123"
            })
        );
    }
}
