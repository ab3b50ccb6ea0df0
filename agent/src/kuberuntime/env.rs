//! A container's environment (kubelet kubelet_pods.go makeEnvironmentVariables and
//! podFieldSelectorRuntimeValue, third_party/forked/golang/expansion): envFrom, env with
//! `$(VAR)` expansion, downward API fields and resources, and ConfigMap and Secret references
//! resolved from the volume manager's cache, with the kubelet's CreateContainerConfigError texts;
//! the service variables (crate::services) under them.

use super::NodeContext;
use super::container::ConfigError;
use crate::pod::DesiredPod;
use crate::volumemanager::objects::{Kind, Object};
use crate::volumemanager::projection;
use k8s_openapi::api::core::v1::{Container, EnvVar};

/// The container's env (kubelet makeEnvironmentVariables): envFrom first, in order, then env,
/// whose entries replace earlier ones of the same name. Plain values are expanded against the
/// variables before them; values from a source are taken as they are.
pub(super) fn resolve_env(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    // Service variables are the base (getServiceEnvVarMap): env and envFrom replace them and
    // `$(VAR)` can name them. An API pod waits for the first list of Services; a static one not.
    let links = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let wait_sync = matches!(p.source, crate::pod::PodSource::Api);
    let mut out: Vec<(String, String)> = ctx
        .services
        .env_for(&p.pod_ref.namespace, links, wait_sync)
        .map_err(|e| ConfigError::Env {
            container: c.name.clone(),
            var: "services".into(),
            reason: e.to_string(),
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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

    fn standalone_ctx() -> NodeContext {
        super::super::test_support::node_context(
            &std::env::temp_dir().join("nodelet-env-test-unused"),
        )
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
            source: crate::pod::PodSource::File(PathBuf::from("/m/p.yaml")),
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
    fn service_variables_are_the_base_that_env_overrides_and_expands() {
        let web: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"clusterIP": "10.0.0.3", "ports": [{"port": 8080}]},
        }))
        .expect("service json");
        let ctx = NodeContext {
            services: crate::services::Services::fixed(vec![web]),
            ..standalone_ctx()
        };
        let (p, c) = pod_with_env(
            r#""env": [
                {"name": "URL", "value": "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)"},
                {"name": "WEB_SERVICE_PORT", "value": "1"}
            ]"#,
        );
        let env = resolve_env(&ctx, &p, &c, "10.88.0.2").expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("WEB_SERVICE_HOST"), Some("10.0.0.3"));
        assert_eq!(get("WEB_PORT_8080_TCP_ADDR"), Some("10.0.0.3"));
        assert_eq!(get("URL"), Some("http://10.0.0.3:8080"));
        assert_eq!(
            get("WEB_SERVICE_PORT"),
            Some("1"),
            "env replaces a service variable"
        );
        assert_eq!(
            env.iter().filter(|(k, _)| k == "WEB_SERVICE_PORT").count(),
            1
        );
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
