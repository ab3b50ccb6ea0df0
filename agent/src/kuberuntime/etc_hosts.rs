//! The pod's hostname, domain and managed `/etc/hosts` (kubelet kubelet_pods.go
//! GeneratePodHostNameAndDomain, ensureHostsFile, makeHostsMount; util.GetNodenameForKernel):
//! `<root>/pods/<uid>/etc-hosts`, mounted read-write at `/etc/hosts` in every container that
//! does not mount something there itself, once the pod has an IP or uses the host network. On
//! the pod network it lists localhost, the pod's IP with its hostname (and FQDN with a
//! subdomain) and `hostAliases`; on the host network, the node's `/etc/hosts` and the aliases.

use super::NodeContext;
use crate::pod::{DesiredPod, host_network};
use std::path::{Path, PathBuf};

const HEADER: &str = "# Kubernetes-managed hosts file.\n";
const HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";
/// The node's hosts file a host-network pod starts from.
const NODE_HOSTS: &str = "/etc/hosts";

/// Hostname (`spec.hostnameOverride`, else `spec.hostname` or the pod name, cut to 63
/// characters without a trailing `-` or `.`) and domain (none with an override, else
/// `<subdomain>.<namespace>.svc.<clusterDomain>` with a subdomain, else empty).
pub fn hostname_and_domain(ctx: &NodeContext, p: &DesiredPod) -> (String, String) {
    let spec = p.pod.spec.as_ref();
    let overridden = spec
        .and_then(|s| s.hostname_override.clone())
        .filter(|h| !h.is_empty());
    let name = overridden
        .clone()
        .or_else(|| {
            spec.and_then(|s| s.hostname.clone())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| p.pod_ref.name.clone());
    let hostname = if name.len() > 63 {
        name.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string()
    } else {
        name
    };
    if overridden.is_some() {
        // The override is the whole hostname: a subdomain adds no domain (the kubelet's
        // GeneratePodHostNameAndDomain).
        return (hostname, String::new());
    }
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|sub| {
            format!(
                "{sub}.{}.svc.{}",
                p.pod_ref.namespace,
                ctx.cluster_domain.as_deref().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    (hostname, domain)
}

/// The sandbox's hostname: empty on the host network (the runtime cannot set one there), the
/// FQDN with `setHostnameAsFQDN` and a domain (GetNodenameForKernel; an FQDN over 64
/// characters is an error the kubelet reports), else the hostname.
pub fn sandbox_hostname(ctx: &NodeContext, p: &DesiredPod) -> Result<String, String> {
    if host_network(&p.pod) {
        return Ok(String::new());
    }
    let (hostname, domain) = hostname_and_domain(ctx, p);
    let fqdn = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    if fqdn && !domain.is_empty() {
        let full = format!("{hostname}.{domain}");
        if full.len() > 64 {
            return Err(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {full} is too long (64 characters is the max, {} characters requested)",
                full.len()
            ));
        }
        return Ok(full);
    }
    Ok(hostname)
}

/// Whether containers of the pod get the managed hosts file now (shouldMountHostsFile).
pub fn should_mount(p: &DesiredPod, pod_ip: &str) -> bool {
    !pod_ip.is_empty() || host_network(&p.pod)
}

/// The managed file's contents.
pub fn content(ctx: &NodeContext, p: &DesiredPod, pod_ip: &str, node_hosts: &str) -> String {
    let aliases = aliases(p);
    if host_network(&p.pod) {
        return format!("{HEADER_HOST_NETWORK}{node_hosts}{aliases}");
    }
    let (hostname, domain) = hostname_and_domain(ctx, p);
    let mut s = String::from(HEADER);
    s += "127.0.0.1\tlocalhost\n";
    s += "::1\tlocalhost ip6-localhost ip6-loopback\n";
    s += "fe00::0\tip6-localnet\n";
    s += "fe00::0\tip6-mcastprefix\n";
    s += "fe00::1\tip6-allnodes\n";
    s += "fe00::2\tip6-allrouters\n";
    if domain.is_empty() {
        s += &format!("{pod_ip}\t{hostname}\n");
    } else {
        s += &format!("{pod_ip}\t{hostname}.{domain}\t{hostname}\n");
    }
    s + &aliases
}

fn aliases(p: &DesiredPod) -> String {
    let list = p.pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref());
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return String::new();
    };
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in list {
        s += &format!(
            "{}\t{}\n",
            a.ip,
            a.hostnames.clone().unwrap_or_default().join("\t")
        );
    }
    s
}

/// Writes the pod's hosts file (mode 0644) and returns its path.
pub fn ensure(
    ctx: &NodeContext,
    p: &DesiredPod,
    pod_dir: &Path,
    pod_ip: &str,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let node_hosts = if host_network(&p.pod) {
        std::fs::read_to_string(NODE_HOSTS)?
    } else {
        String::new()
    };
    std::fs::create_dir_all(pod_dir)?;
    let path = pod_dir.join("etc-hosts");
    std::fs::write(&path, content(ctx, p, pod_ip, &node_hosts))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{PodRef, PodSource};
    use k8s_openapi::api::core::v1::{HostAlias, Pod, PodSpec};

    fn ctx() -> NodeContext {
        NodeContext {
            cluster_domain: Some("cluster.local".into()),
            ..super::super::test_support::node_context(
                &std::env::temp_dir().join("nodelet-etc-hosts-test-unused"),
            )
        }
    }

    fn pod(spec: PodSpec) -> DesiredPod {
        DesiredPod {
            pod_ref: PodRef {
                namespace: "ns".into(),
                name: "web-0".into(),
                uid: "u".into(),
            },
            pod: Pod {
                spec: Some(spec),
                ..Default::default()
            },
            source: PodSource::Api,
        }
    }

    #[test]
    fn pod_network_file_names_the_pod_and_its_aliases() {
        let p = pod(PodSpec {
            hostname: Some("h".into()),
            subdomain: Some("svc".into()),
            host_aliases: Some(vec![HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo".into(), "bar".into()]),
            }]),
            ..Default::default()
        });
        let c = content(&ctx(), &p, "10.88.0.5", "");
        assert!(c.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            c.contains("10.88.0.5\th.svc.ns.svc.cluster.local\th\n"),
            "{c}"
        );
        assert!(c.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo\tbar\n"));
        assert_eq!(sandbox_hostname(&ctx(), &p).as_deref(), Ok("h"));
        let fqdn = pod(PodSpec {
            set_hostname_as_fqdn: Some(true),
            ..p.pod.spec.clone().unwrap_or_default()
        });
        assert_eq!(
            sandbox_hostname(&ctx(), &fqdn).as_deref(),
            Ok("h.svc.ns.svc.cluster.local")
        );
    }

    #[test]
    fn hostname_override_is_the_whole_hostname() {
        let p = pod(PodSpec {
            hostname: Some("h".into()),
            subdomain: Some("svc".into()),
            hostname_override: Some("override.example.host".into()),
            ..Default::default()
        });
        let c = content(&ctx(), &p, "10.88.0.5", "");
        assert!(c.contains("10.88.0.5\toverride.example.host\n"), "{c}");
        assert_eq!(
            sandbox_hostname(&ctx(), &p).as_deref(),
            Ok("override.example.host")
        );
    }

    #[test]
    fn host_network_file_is_the_nodes_plus_aliases() {
        let p = pod(PodSpec {
            host_network: Some(true),
            host_aliases: Some(vec![HostAlias {
                ip: "1.2.3.4".into(),
                hostnames: Some(vec!["x".into()]),
            }]),
            ..Default::default()
        });
        assert_eq!(
            content(&ctx(), &p, "", "127.0.0.1 localhost\n"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# Entries added by HostAliases.\n1.2.3.4\tx\n"
        );
        assert!(should_mount(&p, ""));
        assert_eq!(sandbox_hostname(&ctx(), &p).as_deref(), Ok(""));
    }
}
