//! ContainerConfig for one container (kubelet kuberuntime_container.go generateContainerConfig,
//! kuberuntime_container_linux.go, pkg/kubelet/cm/helpers_linux.go, pkg/kubelet/qos/policy.go).

use super::{NodeContext, labels};
use crate::pod::{ContainerResources, DesiredPod, QosClass, qos_class};
use crate::volumemanager::objects::{Kind, Object};
use crate::volumemanager::projection;
use k8s_openapi::api::core::v1::{Container, EnvVar};
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
    /// Init container?
    pub init: bool,
    /// Restart count (CRI attempt).
    pub restart_count: u32,
    /// Image reference the runtime resolved.
    pub image_ref: String,
    /// The sandbox's IP, for `status.podIP`.
    pub pod_ip: String,
}

/// Builds the CRI container config, creating the host directories it mounts.
pub fn container_config(
    ctx: &NodeContext,
    p: &DesiredPod,
    input: &ContainerInputs<'_>,
) -> Result<cri::ContainerConfig, ConfigError> {
    let c = input.container;
    let envs = resolve_env(ctx, p, c, &input.pod_ip)?;
    let lookup: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|s| expand(s, &|name| lookup.get(name).map(|s| s.to_string())))
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
        mounts: mounts(ctx, p, c)?,
        labels: labels::container_labels(p, c),
        annotations: labels::container_annotations(p, c, input.restart_count, input.init),
        log_path: log_path(&c.name, input.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(ctx, p, c)),
            security_context: Some(security_context(p, c)),
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

fn security_context(p: &DesiredPod, c: &Container) -> cri::LinuxContainerSecurityContext {
    let pod_sc = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(super::sandbox::namespace_options(p)),
        run_as_user: sc
            .run_as_user
            .or(pod_sc.run_as_user)
            .map(|value| cri::Int64Value { value }),
        run_as_group: sc
            .run_as_group
            .or(pod_sc.run_as_group)
            .map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: pod_sc.supplemental_groups.unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    }
}

/// The container's env (kubelet makeEnvironmentVariables): envFrom first, in order, then env,
/// whose entries replace earlier ones of the same name. Plain values are expanded against the
/// variables before them; values from a source are taken as they are.
fn resolve_env(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        out.retain(|(name, _)| *name != k);
        out.push((k, v));
    };
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let err = |reason: String| ConfigError::Env {
            container: c.name.clone(),
            var: format!("envFrom[{i}]"),
            reason,
        };
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, optional) = match (from.config_map_ref.as_ref(), from.secret_ref.as_ref())
        {
            (Some(r), _) => (Kind::ConfigMap, &r.name, r.optional.unwrap_or(false)),
            (None, Some(r)) => (Kind::Secret, &r.name, r.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match env_object(ctx, p, kind, name).map_err(err)? {
            None if optional => {}
            None => return Err(err(not_found(kind, name))),
            Some(obj) => {
                for (k, v) in object_data(&obj) {
                    set(&mut out, format!("{prefix}{k}"), v);
                }
            }
        }
    }
    for var in c.env.iter().flatten() {
        let value = match var.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => {
                let lookup = |name: &str| {
                    out.iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                expand(v, &lookup)
            }
            None => match env_value(ctx, p, c, var, pod_ip)? {
                Some(v) => v,
                // An optional reference that resolves to nothing sets no variable.
                None => continue,
            },
        };
        set(&mut out, var.name.clone(), value);
    }
    Ok(out)
}

/// `configmap "x" not found`, as the kubelet's object managers say it.
fn not_found(kind: Kind, name: &str) -> String {
    format!("{} {name:?} not found", kind.resource())
}

/// The object from the volume manager's cache (filled by `prepare` for this pod).
fn env_object(
    ctx: &NodeContext,
    p: &DesiredPod,
    kind: Kind,
    name: &str,
) -> Result<Option<Object>, String> {
    ctx.volumes
        .env_object(kind, &p.pod_ref.namespace, name)
        .map_err(|e| e.to_string())
}

/// Env-visible data: a ConfigMap's `data` (not binaryData), a Secret's `data` as text.
fn object_data(o: &Object) -> Vec<(String, String)> {
    match o {
        Object::ConfigMap(cm) => cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Object::Secret(s) => s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    }
}

/// A `valueFrom` value; `None` for an optional reference that resolves to nothing.
fn env_value(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
    var: &EnvVar,
    pod_ip: &str,
) -> Result<Option<String>, ConfigError> {
    let err = |reason: String| ConfigError::Env {
        container: c.name.clone(),
        var: var.name.clone(),
        reason,
    };
    let Some(from) = var.value_from.as_ref() else {
        return Ok(Some(String::new()));
    };
    if let Some(f) = from.field_ref.as_ref() {
        let path = f.field_path.as_str();
        let ip_or_host = || {
            if pod_ip.is_empty() {
                ctx.host_ip.clone()
            } else {
                pod_ip.to_string()
            }
        };
        return match path {
            "spec.nodeName" => Ok(ctx.node_name.clone()),
            "spec.serviceAccountName" => Ok(p
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default()),
            "status.hostIP" | "status.hostIPs" => Ok(ctx.host_ip.clone()),
            "status.podIP" | "status.podIPs" => Ok(ip_or_host()),
            _ => {
                let mut pod = p.pod.clone();
                pod.metadata.name = Some(p.pod_ref.name.clone());
                pod.metadata.namespace = Some(p.pod_ref.namespace.clone());
                pod.metadata.uid = Some(p.pod_ref.uid.clone());
                projection::pod_field(&pod, path)
            }
        }
        .map(Some)
        .map_err(err);
    }
    if let Some(r) = from.resource_field_ref.as_ref() {
        let node = projection::NodeAllocatable {
            cpu_milli: ctx.cpu_capacity_milli,
            memory: ctx.memory_capacity,
        };
        return projection::resource_value(c, r, node)
            .map(Some)
            .map_err(err);
    }
    let (kind, name, key, optional) = match (
        from.config_map_key_ref.as_ref(),
        from.secret_key_ref.as_ref(),
    ) {
        (Some(r), _) => (
            Kind::ConfigMap,
            &r.name,
            &r.key,
            r.optional.unwrap_or(false),
        ),
        (None, Some(r)) => (Kind::Secret, &r.name, &r.key, r.optional.unwrap_or(false)),
        (None, None) => return Ok(Some(String::new())),
    };
    let obj = match env_object(ctx, p, kind, name).map_err(err)? {
        Some(o) => o,
        None if optional => return Ok(None),
        None => return Err(err(not_found(kind, name))),
    };
    match object_data(&obj).into_iter().find(|(k, _)| k == key) {
        Some((_, v)) => Ok(Some(v)),
        None if optional => Ok(None),
        None => Err(err(format!(
            "couldn't find key {key} in {} {}/{name}",
            match kind {
                Kind::ConfigMap => "ConfigMap",
                Kind::Secret => "Secret",
            },
            p.pod_ref.namespace
        ))),
    }
}

/// `$(VAR)` expansion with `$$` escaping (third_party/forked/golang/expansion): unknown
/// references stay as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Mounts: the termination-message file, then volumeMounts of emptyDir and hostPath volumes.
fn mounts(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
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
            Some(sub) => host.join(sub),
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
    Ok(out)
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
    fn expansion_matches_the_kubelet() {
        let env = |n: &str| match n {
            "A" => Some("1".to_string()),
            "B" => Some("two".to_string()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(B)", &env), "1-two");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("cost $5 é", &env), "cost $5 é");
    }

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

    fn standalone_ctx() -> NodeContext {
        let opts = crate::options::Options::from_args(
            ["nodelet", "--hostname-override", "n1"]
                .into_iter()
                .map(String::from),
        )
        .expect("fixed flags resolve");
        let root = std::env::temp_dir().join("nodelet-env-test-unused");
        NodeContext {
            node_name: "n1".into(),
            host_ip: "10.0.0.1".into(),
            pod_logs_dir: root.join("logs"),
            root_dir: root.clone(),
            cluster_dns: Vec::new(),
            cluster_domain: None,
            host_dns: Default::default(),
            cm: crate::cm::ContainerManager::new(&opts),
            memory_capacity: 1 << 30,
            cpu_capacity_milli: 2000,
            volumes: crate::volumemanager::VolumeManager::new(None, root),
        }
    }

    fn pod_with_env(env: &str) -> (DesiredPod, Container) {
        let c: Container =
            serde_json::from_str(&format!(r#"{{"name": "c", "image": "x", {env}}}"#))
                .expect("container json");
        let pod = k8s_openapi::api::core::v1::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some(
                    [
                        ("b".to_string(), "2".to_string()),
                        ("a".to_string(), "1".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![c.clone()],
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = DesiredPod {
            pod_ref: crate::pod::PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            pod,
            source: PathBuf::from("/m/p.yaml"),
        };
        (p, c)
    }

    #[test]
    fn env_fields_resources_and_expansion() {
        let ctx = standalone_ctx();
        let (p, c) = pod_with_env(
            r#""env": [
                {"name": "A", "value": "x"},
                {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "RAW", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['k']"}}},
                {"name": "B", "value": "$(A)-$(SA)"},
                {"name": "A", "value": "y"}
            ]"#,
        );
        let env = resolve_env(&ctx, &p, &c, "10.88.0.2").expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("L"), Some("a=\"1\"\nb=\"2\""));
        assert_eq!(get("SA"), Some("sa"));
        assert_eq!(get("IP"), Some("10.88.0.2"));
        assert_eq!(
            get("MEM"),
            Some("1024"),
            "limits default to node allocatable"
        );
        assert_eq!(get("RAW"), Some(""));
        assert_eq!(get("B"), Some("x-sa"));
        assert_eq!(get("A"), Some("y"), "a later entry replaces an earlier one");
        assert_eq!(env.last().map(|(k, _)| k.as_str()), Some("A"));
    }

    #[test]
    fn env_from_api_objects_without_a_client_fails_as_the_kubelet() {
        let ctx = standalone_ctx();
        for (env, want) in [
            (
                r#""env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]"#,
                "couldn't get configMap ns/cm, no kubeClient defined",
            ),
            (
                r#""envFrom": [{"secretRef": {"name": "s"}}]"#,
                "couldn't get secret ns/s, no kubeClient defined",
            ),
        ] {
            let (p, c) = pod_with_env(env);
            let err = resolve_env(&ctx, &p, &c, "").expect_err("no client");
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
