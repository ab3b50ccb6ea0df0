//! ContainerConfig for one container (kubelet kuberuntime_container.go generateContainerConfig,
//! kuberuntime_container_linux.go, pkg/kubelet/cm/helpers_linux.go, pkg/kubelet/qos/policy.go).

use super::{NodeContext, labels};
use crate::pod::{ContainerResources, DesiredPod, QosClass, qos_class};
use k8s_openapi::api::core::v1::Container;
use proto::runtime::v1 as cri;
use std::collections::HashMap;
use std::path::PathBuf;

/// Why a container config could not be built (the kubelet's CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An env var's source cannot be resolved on this node.
    #[error("container {container}: env {var}: {reason}")]
    Env {
        /// Container name.
        container: String,
        /// Variable name.
        var: String,
        /// Why.
        reason: String,
    },
    /// A volume cannot be provided.
    #[error("container {container}: volume {volume}: {reason}")]
    Volume {
        /// Container name.
        container: String,
        /// Volume name.
        volume: String,
        /// Why.
        reason: String,
    },
    /// The security context refuses the container (runAsNonRoot, profiles), with the
    /// kubelet's message.
    #[error("{message}")]
    Security {
        /// The kubelet's text.
        message: String,
    },
    /// A host directory for the container could not be created.
    #[error("container {container}: creating {path}: {source}")]
    Io {
        /// Container name.
        container: String,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// `<container>/<restartCount>.log`, relative to the sandbox log directory
/// (kuberuntime helpers.go buildContainerLogsPath).
pub fn log_path(name: &str, restart_count: u32) -> String {
    format!("{name}/{restart_count}.log")
}

/// Everything generateContainerConfig needs beyond the pod.
pub struct ContainerInputs<'a> {
    /// The container spec.
    pub container: &'a Container,
    /// Which list of the spec it comes from.
    pub kind: super::ephemeral::ContainerKind,
    /// Restart count (CRI attempt).
    pub restart_count: u32,
    /// Image reference the runtime resolved.
    pub image_ref: String,
    /// The sandbox's IP, for `status.podIP`.
    pub pod_ip: String,
    /// The image's user, when the runAsNonRoot check needs it.
    pub image_user: Option<super::security::ImageUser>,
}

/// Builds the CRI container config, creating the host directories it mounts.
pub fn container_config(
    ctx: &NodeContext,
    p: &DesiredPod,
    input: &ContainerInputs<'_>,
) -> Result<cri::ContainerConfig, ConfigError> {
    let c = input.container;
    super::security::verify_run_as_non_root(p, c, input.image_user.as_ref())?;
    let envs = super::env::resolve_env(ctx, p, c, &input.pod_ip)?;
    let lookup: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|s| super::env::expand(s, &|name| lookup.get(name).map(|s| s.to_string())))
            .collect::<Vec<_>>()
    };
    let log_dir = super::sandbox::pod_logs_dir(ctx, &p.pod_ref).join(&c.name);
    std::fs::create_dir_all(&log_dir).map_err(|source| ConfigError::Io {
        container: c.name.clone(),
        path: log_dir.clone(),
        source,
    })?;
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: input.restart_count,
        }),
        image: Some(cri::ImageSpec {
            image: input.image_ref.clone(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts: mounts(ctx, p, c, &input.pod_ip)?,
        labels: labels::container_labels(p, c),
        annotations: labels::container_annotations(p, c, input.restart_count, input.kind),
        log_path: log_path(&c.name, input.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(ctx, p, c)),
            security_context: Some(super::security::security_context(ctx, p, c)?),
        }),
        ..Default::default()
    })
}

/// CPU shares from millicores: 1024 per core, clamped to [2, 262144] (cm MilliCPUToShares).
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli == 0 {
        return 2;
    }
    (milli * 1024 / 1000).clamp(2, 262_144)
}

/// CFS quota from a millicore limit and period (µs), at least 1000 (cm milliCPUToQuota).
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli * period / 1000).max(1000)
}

const CFS_PERIOD_US: i64 = 100_000;

fn linux_resources(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
) -> cri::LinuxContainerResources {
    let r = ContainerResources::of(c);
    cri::LinuxContainerResources {
        cpu_period: CFS_PERIOD_US,
        cpu_quota: milli_cpu_to_quota(r.cpu_limit.unwrap_or(0), CFS_PERIOD_US),
        cpu_shares: milli_cpu_to_shares(r.cpu_request.unwrap_or(0)),
        memory_limit_in_bytes: r.memory_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj(qos_class(&p.pod), r.memory_request, ctx.memory_capacity),
        ..Default::default()
    }
}

/// OOM score adjustment by QoS (pkg/kubelet/qos/policy.go GetContainerOOMScoreAdjust).
pub fn oom_score_adj(qos: QosClass, memory_request: Option<i64>, capacity: i64) -> i64 {
    match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let req = memory_request.unwrap_or(0);
            let adj = if capacity > 0 {
                1000 - (1000 * req) / capacity
            } else {
                1000
            };
            // Burstable stays strictly between Guaranteed and BestEffort.
            adj.clamp(3, 999)
        }
    }
}

/// Mounts: the termination-message file, then volumeMounts of emptyDir and hostPath volumes and
/// of the volume manager's configMap, secret, projected and downwardAPI volumes, then the
/// managed `/etc/hosts` ([`super::etc_hosts`]).
fn mounts(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
    pod_ip: &str,
) -> Result<Vec<cri::Mount>, ConfigError> {
    let io = |path: PathBuf| {
        let container = c.name.clone();
        move |source| ConfigError::Io {
            container,
            path,
            source,
        }
    };
    let pod_dir = ctx.root_dir.join("pods").join(&p.pod_ref.uid);
    let mut out = Vec::new();
    let msg_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if !msg_path.is_empty() {
        let dir = pod_dir.join("containers").join(&c.name);
        std::fs::create_dir_all(&dir).map_err(io(dir.clone()))?;
        let file = dir.join(format!("{:08x}", rand_u32()));
        std::fs::write(&file, b"").map_err(io(file.clone()))?;
        // 0666 whatever the umask, so that a non-root container can write its message.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
            .map_err(io(file.clone()))?;
        out.push(cri::Mount {
            container_path: msg_path,
            host_path: file.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    let volumes = p.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for vm in c.volume_mounts.iter().flatten() {
        let vol_err = |reason: &str| ConfigError::Volume {
            container: c.name.clone(),
            volume: vm.name.clone(),
            reason: reason.into(),
        };
        let v = volumes
            .and_then(|vs| vs.iter().find(|v| v.name == vm.name))
            .ok_or_else(|| vol_err("not declared in spec.volumes"))?;
        let mut api_backed = false;
        let host = if let Some(hp) = v.host_path.as_ref() {
            let path = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io(path.clone()))?,
                "FileOrCreate" if !path.exists() => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(io(parent.to_owned()))?;
                    }
                    std::fs::write(&path, b"").map_err(io(path.clone()))?;
                }
                "Directory" if !path.is_dir() => {
                    return Err(vol_err("hostPath is not a directory"));
                }
                "File" if !path.is_file() => return Err(vol_err("hostPath is not a file")),
                _ => {}
            }
            path
        } else if v.empty_dir.is_some() {
            let path = pod_dir
                .join("volumes/kubernetes.io~empty-dir")
                .join(&v.name);
            // The volume manager set it up (and timed it); this only covers a race with its
            // removal.
            std::fs::create_dir_all(&path).map_err(io(path.clone()))?;
            path
        } else if let Some(path) = ctx.volumes.host_path(&p.pod_ref.uid, v) {
            // Written by the volume manager before the sandbox; read-only like the kubelet's
            // configMap, secret, projected and downwardAPI mounters.
            api_backed = true;
            path
        } else {
            return Err(vol_err(
                "only emptyDir, hostPath, configMap, secret, projected and downwardAPI volumes are supported",
            ));
        };
        let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if sub.split('/').any(|part| part == "..") => {
                return Err(vol_err("subPath must not contain '..'"));
            }
            Some(sub) => make_sub_path(&host, sub).map_err(io(host.join(sub)))?,
            None => host,
        };
        out.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: vm.read_only.unwrap_or(false) || api_backed,
            propagation: match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer as i32,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
                _ => cri::MountPropagation::PropagationPrivate as i32,
            },
            ..Default::default()
        });
    }
    // The managed /etc/hosts last, unless the container mounts something there itself.
    let own_hosts = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|vm| vm.mount_path == "/etc/hosts");
    if !own_hosts && super::etc_hosts::should_mount(p, pod_ip) {
        let file = super::etc_hosts::ensure(ctx, p, &pod_dir, pod_ip)
            .map_err(io(pod_dir.join("etc-hosts")))?;
        out.push(cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: file.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The subPath of a volume, created if missing with the volume directory's mode (setgid and
/// sticky included), as the kubelet's makeMounts does with SafeMakeDir: a directory the runtime
/// created later would get 0755 and lose the fsGroup's write access.
fn make_sub_path(volume: &std::path::Path, sub: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Only plain names: an absolute subPath must not escape the volume (validation refuses it).
    let parts: Vec<_> = std::path::Path::new(sub)
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    let path: PathBuf = parts.iter().fold(volume.to_path_buf(), |p, c| p.join(c));
    if std::fs::symlink_metadata(&path).is_ok() || !volume.is_dir() {
        return Ok(path);
    }
    let perm = std::fs::metadata(volume)?.mode() & 0o7777;
    let mut at = volume.to_path_buf();
    for part in parts {
        at.push(part);
        match std::fs::create_dir(&at) {
            Ok(()) => std::fs::set_permissions(&at, std::fs::Permissions::from_mode(perm))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// A random-enough name suffix for termination-message files (kubelet uses rand.Uint32).
fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_conversions() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_quota(0, 100_000), 0);
        assert_eq!(milli_cpu_to_quota(500, 100_000), 50_000);
        assert_eq!(milli_cpu_to_quota(1, 100_000), 1000);
    }

    #[test]
    fn oom_scores_by_qos() {
        assert_eq!(oom_score_adj(QosClass::Guaranteed, None, 1 << 30), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, None, 1 << 30), 1000);
        assert_eq!(
            oom_score_adj(QosClass::Burstable, Some(1 << 29), 1 << 30),
            500
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, Some(1 << 30), 1 << 30),
            3
        );
        assert_eq!(oom_score_adj(QosClass::Burstable, None, 1 << 30), 999);
    }
}
