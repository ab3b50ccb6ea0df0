//! The Summary API's system containers (kubelet pkg/kubelet/cm SystemContainerKubelet,
//! SystemContainerRuntime, SystemContainerPods): which cgroups hold the agent, the container
//! runtime and the pods. The runtime is found as the peer of its CRI socket, since nodelet
//! has no `--runtime-cgroups` flag and containerd may be started by anything.

use super::cgroupfs::CgroupLayout;
use std::fs;

/// System containers of the Summary API, by the kubelet's names, with their cgroup paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemCgroups {
    /// The agent's own cgroup (`kubelet`).
    pub kubelet: Option<String>,
    /// The container runtime's cgroup (`runtime`).
    pub runtime: Option<String>,
    /// The pods' root cgroup (`pods`).
    pub pods: Option<String>,
}

/// The cgroup path of `controller` in a `/proc/<pid>/cgroup` text (`0::` for v2).
pub fn proc_cgroup_path<'a>(text: &'a str, controller: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then_some(path)
    })
}

/// The agent's own cgroup (memory hierarchy, else v2) as the `kubelet` system container;
/// `None` when it runs in the root cgroup (that is the node, not the agent).
pub fn own_cgroup(layout: &CgroupLayout) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = match layout.controller("memory") {
        Some(m) if !m.v2 => proc_cgroup_path(&text, "memory"),
        _ => proc_cgroup_path(&text, ""),
    }?;
    (path != "/").then(|| path.to_owned())
}

/// The cgroup of process `pid` as a system container (e.g. the runtime's).
pub fn pid_cgroup(layout: &CgroupLayout, pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = match layout.controller("memory") {
        Some(m) if !m.v2 => proc_cgroup_path(&text, "memory"),
        _ => proc_cgroup_path(&text, ""),
    }?;
    (path != "/").then(|| path.to_owned())
}

/// The pid of the process serving the Unix socket at `endpoint` (`unix:///run/x.sock` or a
/// path): the container runtime, whose cgroup is the `runtime` system container.
pub fn socket_peer_pid(endpoint: &str) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let sock = std::os::unix::net::UnixStream::connect(path).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a connected socket we own; `cred` and `len` are valid for writing and
    // `len` holds the size of `cred`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// The system containers of this agent: itself, the runtime serving `runtime_endpoint`
/// and the pods root (blocking: reads /proc and connects to the socket once).
pub fn system_cgroups(
    layout: &CgroupLayout,
    runtime_endpoint: &str,
    pods_root: Option<String>,
) -> SystemCgroups {
    SystemCgroups {
        kubelet: own_cgroup(layout),
        runtime: socket_peer_pid(runtime_endpoint).and_then(|pid| pid_cgroup(layout, pid)),
        pods: pods_root.filter(|p| p != "/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_finds_the_memory_and_v2_paths() {
        let t = "4:memory:/a/b\n3:cpu,cpuacct:/c\n0::/u\n";
        assert_eq!(proc_cgroup_path(t, "memory"), Some("/a/b"));
        assert_eq!(proc_cgroup_path(t, "cpuacct"), Some("/c"));
        assert_eq!(proc_cgroup_path(t, ""), Some("/u"));
        assert_eq!(proc_cgroup_path(t, "pids"), None);
    }
}
