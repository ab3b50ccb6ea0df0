//! fsGroup applied to a volume (kubelet pkg/volume/volume_linux.go SetVolumeOwnership): every
//! file and directory under the volume, depth first and without following symlinks, is
//! group-owned by the fsGroup and gains group read/write (read only for a read-only volume),
//! directories also group execute and the setgid bit, so files the pod creates later inherit
//! the group. `fsGroupChangePolicy: OnRootMismatch` skips the walk when the root already has
//! the group and the bits.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use tracing::warn;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The pod's `securityContext.fsGroup` and `fsGroupChangePolicy`, read once per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsGroup {
    /// The group id.
    pub gid: u32,
    /// `fsGroupChangePolicy: OnRootMismatch`.
    pub on_root_mismatch: bool,
}

impl FsGroup {
    /// The pod's fsGroup, if it has one.
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Self> {
        let sc = pod.spec.as_ref()?.security_context.as_ref()?;
        Some(Self {
            gid: u32::try_from(sc.fs_group?).ok()?,
            on_root_mismatch: sc.fs_group_change_policy.as_deref() == Some("OnRootMismatch"),
        })
    }
}

/// ChangePermissions: applies `g` to everything under `dir`. Per-file failures are logged and
/// skipped, as the kubelet's changeFilePermission does; only a failed directory listing fails.
pub fn apply(dir: &Path, g: FsGroup, readonly: bool) -> io::Result<()> {
    if g.on_root_mismatch && !requires_change(dir, g.gid, readonly) {
        return Ok(());
    }
    walk(dir, g.gid, readonly)
}

/// requiresPermissionChange: the root lacks the group, the bits or the setgid bit.
fn requires_change(root: &Path, gid: u32, readonly: bool) -> bool {
    let Ok(m) = std::fs::metadata(root) else {
        return true;
    };
    if m.gid() != gid || !m.is_dir() {
        return true;
    }
    let want = if readonly { RO_MASK } else { RW_MASK } | EXEC_MASK;
    m.mode() & want != want || m.mode() & SETGID == 0
}

/// walkDeep: children first, then the directory itself.
fn walk(path: &Path, gid: u32, readonly: bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), gid, readonly)?;
        }
    }
    change(path, &meta, gid, readonly);
    Ok(())
}

/// changeFilePermission: lchown to the group, then add the mask (never on a symlink: chmod
/// would reach its target and override the mode the volume plugin chose).
fn change(path: &Path, meta: &std::fs::Metadata, gid: u32, readonly: bool) {
    if let Err(e) = std::os::unix::fs::lchown(path, None, Some(gid)) {
        warn!(path = %path.display(), error = %e, "lchown for fsGroup failed");
    }
    if meta.file_type().is_symlink() {
        return;
    }
    let mut mask = if readonly { RO_MASK } else { RW_MASK };
    if meta.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    let mode = (meta.mode() & 0o7777) | mask;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        warn!(path = %path.display(), error = %e, "chmod for fsGroup failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn group_bits_setgid_on_dirs_and_symlinks_left_alone() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::write(root.join("sub/f"), b"x").expect("write");
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
        std::os::unix::fs::symlink("sub/f", root.join("link")).expect("symlink");
        // Our own group, so the test needs no privilege.
        let gid = std::fs::metadata(t.path()).expect("stat").gid();
        let g = FsGroup {
            gid,
            on_root_mismatch: false,
        };
        apply(&root, g, false).expect("apply");
        assert_eq!(mode(&root), 0o2777);
        assert_eq!(mode(&root.join("sub")) & 0o2770, 0o2770);
        assert_eq!(mode(&root.join("sub/f")), 0o660 | 0o400);
        apply(&root, g, true).expect("apply read-only");
        assert_eq!(
            mode(&root.join("sub/f")),
            0o660 | 0o400,
            "bits are only added"
        );
        assert!(!requires_change(&root, gid, false));
        // OnRootMismatch leaves the tree alone once the root is right.
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
        apply(
            &root,
            FsGroup {
                gid,
                on_root_mismatch: true,
            },
            false,
        )
        .expect("apply");
        assert_eq!(mode(&root.join("sub/f")), 0o400);
    }
}
