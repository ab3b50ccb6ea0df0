//! PodSandboxConfig for a pod (kubelet kuberuntime_sandbox.go generatePodSandboxConfig,
//! pkg/kubelet/network/dns for DNS).

use super::{NodeContext, labels};
use crate::pod::{DesiredPod, PodRef, host_network, qos_class};
use proto::runtime::v1 as cri;
use std::path::PathBuf;

/// `<podLogsDir>/<namespace>_<name>_<uid>` (kuberuntime helpers.go BuildPodLogsDirectory).
pub fn pod_logs_dir(ctx: &NodeContext, p: &PodRef) -> PathBuf {
    ctx.pod_logs_dir
        .join(format!("{}_{}_{}", p.namespace, p.name, p.uid))
}

/// Builds the sandbox config for attempt `attempt`.
pub fn sandbox_config(ctx: &NodeContext, p: &DesiredPod, attempt: u32) -> cri::PodSandboxConfig {
    let spec = p.pod.spec.clone().unwrap_or_default();
    // A host-network pod keeps the node's hostname: the runtime cannot set one without a private
    // UTS namespace (kuberuntime_sandbox.go sets Hostname only when !hostNetwork). An FQDN
    // too long for the kernel falls back to the short name, with a warning.
    let hostname = super::etc_hosts::sandbox_hostname(ctx, p).unwrap_or_else(|e| {
        tracing::warn!(pod = %p.pod_ref, error = %e, "setHostnameAsFQDN");
        super::etc_hosts::hostname_and_domain(ctx, p).0
    });
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|port| cri::PortMapping {
            protocol: match port.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: port.container_port,
            host_port: port.host_port.unwrap_or(0),
            host_ip: port.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    let sysctls = pod_sc
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: p.pod_ref.name.clone(),
            uid: p.pod_ref.uid.clone(),
            namespace: p.pod_ref.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: pod_logs_dir(ctx, &p.pod_ref).to_string_lossy().into_owned(),
        dns_config: Some(dns_config(ctx, p)),
        port_mappings,
        labels: labels::sandbox_labels(p),
        annotations: labels::sandbox_annotations(p),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: ctx.cm.pod_cgroup_parent(&p.pod_ref.uid, qos_class(&p.pod)),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(p)),
                run_as_user: pod_sc.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: pod_sc.run_as_group.map(|value| cri::Int64Value { value }),
                // kuberuntime_sandbox.go: the fsGroup is a supplemental group of the sandbox.
                supplemental_groups: pod_sc
                    .supplemental_groups
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(pod_sc.fs_group)
                    .collect(),
                privileged,
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Namespace modes (kuberuntime util.go NamespacesForPod).
pub fn namespace_options(p: &DesiredPod) -> cri::NamespaceOption {
    let spec = p.pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let node_or_pod = |on: bool| {
        if on {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    let pid = if flag(|s| s.host_pid) {
        cri::NamespaceMode::Node
    } else if flag(|s| s.share_process_namespace) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: node_or_pod(flag(|s| s.host_network)),
        pid: pid as i32,
        ipc: node_or_pod(flag(|s| s.host_ipc)),
        ..Default::default()
    }
}

/// DNS for the sandbox (pkg/kubelet/network/dns): `Default`, and `ClusterFirst` without cluster
/// DNS (always the case in standalone mode) or on the host network, use the host's resolv.conf;
/// `ClusterFirst` with cluster DNS uses it with the cluster search path; `None` uses only
/// `dnsConfig`. `dnsConfig` is merged in every case.
pub fn dns_config(ctx: &NodeContext, p: &DesiredPod) -> cri::DnsConfig {
    let spec = p.pod.spec.as_ref();
    let host_net = host_network(&p.pod);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = !ctx.cluster_dns.is_empty()
        && (policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_net));
    let mut cfg = if policy == "None" {
        cri::DnsConfig::default()
    } else if cluster {
        let mut searches = Vec::new();
        if let Some(domain) = &ctx.cluster_domain {
            searches.push(format!("{}.svc.{domain}", p.pod_ref.namespace));
            searches.push(format!("svc.{domain}"));
            searches.push(domain.clone());
        }
        searches.extend(ctx.host_dns.searches.iter().cloned());
        cri::DnsConfig {
            servers: ctx.cluster_dns.clone(),
            searches,
            options: vec!["ndots:5".into()],
        }
    } else {
        ctx.host_dns.clone()
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        cfg.servers
            .extend(extra.nameservers.iter().flatten().cloned());
        cfg.searches
            .extend(extra.searches.iter().flatten().cloned());
        for o in extra.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            cfg.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            cfg.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    cfg.searches.dedup();
    cfg
}

/// Parses resolv.conf: nameservers, the last search line, options.
pub fn parse_resolv_conf(text: &str) -> cri::DnsConfig {
    let mut cfg = cri::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => cfg.servers.extend(words.next().map(String::from)),
            Some("search") | Some("domain") => cfg.searches = words.map(String::from).collect(),
            Some("options") => cfg.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_parsing() {
        let c = parse_resolv_conf(
            "# comment\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch a.example b.example\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.servers, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(c.searches, ["a.example", "b.example"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
    }
}
