//! Memory-backed volume directories: secret, projected and downwardAPI volumes sit on a tmpfs
//! of their own, as the kubelet wraps them in an emptyDir with medium Memory
//! (pkg/volume/emptydir setupTmpfs), so secrets and tokens never reach the node's disk; and
//! emptyDir volumes with `medium: Memory`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether `dir` is a mount point (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let here = std::fs::metadata(dir)?;
    let parent = std::fs::metadata(dir.join(".."))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}

/// Mounts a tmpfs on `dir` unless one is there; returns whether it mounted.
pub fn ensure_mounted(dir: &Path) -> io::Result<bool> {
    if is_mount_point(dir)? {
        return Ok(false);
    }
    mount(dir, "mode=0755", libc::MS_NOSUID | libc::MS_NODEV)?;
    Ok(true)
}

/// Mounts a tmpfs on `dir` with the mount `options` (`size=N`; empty for the defaults) and
/// `flags` (MS_*).
pub fn mount(dir: &Path, options: &str, flags: libc::c_ulong) -> io::Result<()> {
    let target = c_path(dir)?;
    let data = CString::new(options)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "options contain NUL"))?;
    let fstype = c"tmpfs";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; mount(2) only
    // reads them.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches a tmpfs from `dir` if one is mounted there.
pub fn unmount(dir: &Path) -> io::Result<()> {
    match is_mount_point(dir) {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let target = c_path(dir)?;
    // SAFETY: `target` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}
