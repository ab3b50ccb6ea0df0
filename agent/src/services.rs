//! Service environment variables (kubelet kubelet_pods.go getServiceEnvVarMap and
//! pkg/kubelet/envvars FromServices): a cache of every Service, watched in cluster mode, and
//! the `FOO_SERVICE_HOST`... variables a container starts with. Standalone there is no
//! cache and, as the kubelet without a master, no variables.

use k8s_openapi::api::core::v1::Service;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// (namespace, name) -> Service.
type Map = BTreeMap<(String, String), Service>;

#[derive(Debug, Default)]
struct Inner {
    services: Map,
    /// The first list completed (the kubelet's serviceHasSynced).
    synced: bool,
}

/// The Services cache; `Default` is the standalone one (no master, no variables).
#[derive(Debug, Clone, Default)]
pub struct Services {
    inner: Option<Arc<RwLock<Inner>>>,
}

/// Why the variables cannot be built yet.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The first list of Services has not completed (the kubelet's text).
    #[error("services have not yet been read at least once, cannot construct envvars")]
    NotSynced,
}

impl Services {
    /// The cluster-mode cache, filled by a watch of Services in all namespaces until `cancel`.
    pub fn start(
        client: kube::Client,
        tasks: &mut tokio::task::JoinSet<()>,
        cancel: CancellationToken,
    ) -> Self {
        let inner = Arc::new(RwLock::new(Inner::default()));
        tasks.spawn(run(client, inner.clone(), cancel));
        Self { inner: Some(inner) }
    }

    /// A cluster-mode cache holding `services`, already synced (tests).
    #[cfg(test)]
    pub fn fixed(services: Vec<Service>) -> Self {
        let mut map = Map::new();
        for s in services {
            map.insert(key(&s), s);
        }
        Self {
            inner: Some(Arc::new(RwLock::new(Inner {
                services: map,
                synced: true,
            }))),
        }
    }

    /// The service variables of a pod in `namespace` (getServiceEnvVarMap), sorted by name.
    /// `wait_sync`: an API pod needs the first list done; a static pod does not.
    pub fn env_for(
        &self,
        namespace: &str,
        enable_service_links: bool,
        wait_sync: bool,
    ) -> Result<Vec<(String, String)>, ServicesError> {
        let Some(inner) = &self.inner else {
            return Ok(Vec::new());
        };
        let guard = inner.read().unwrap_or_else(|e| e.into_inner());
        if wait_sync && !guard.synced {
            return Err(ServicesError::NotSynced);
        }
        // The namespace's own when links are on, and the master service of `default` always
        // unless the namespace has a same-named one (the Go map keeps the namespace's).
        let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
        for ((ns, name), s) in &guard.services {
            let master = ns == "default" && name == "kubernetes";
            if ip_set(s) && !master && ns == namespace && enable_service_links {
                chosen.insert(name, s);
            }
        }
        if let Some(s) = guard
            .services
            .get(&("default".to_string(), "kubernetes".to_string()))
            .filter(|s| ip_set(s))
        {
            chosen.entry("kubernetes").or_insert(s);
        }
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for s in chosen.values() {
            vars.extend(from_service(s));
        }
        Ok(vars.into_iter().collect())
    }
}

fn key(s: &Service) -> (String, String) {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

/// v1helper.IsServiceIPSet: a ClusterIP that is neither empty nor "None".
fn ip_set(s: &Service) -> bool {
    let ip = s
        .spec
        .as_ref()
        .and_then(|sp| sp.cluster_ip.as_deref())
        .unwrap_or_default();
    !ip.is_empty() && ip != "None"
}

/// makeEnvVariableName: upper case, '-' -> '_'.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// One service's variables (FromServices and makeLinkVariables), in the Go function's order.
pub fn from_service(s: &Service) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(spec) = s.spec.as_ref() else {
        return out;
    };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or_default();
    if !ip_set(s) || ports.is_empty() {
        // Validation gives every ClusterIP service a port; without one there is nothing to say.
        return out;
    }
    let prefix = env_name(s.metadata.name.as_deref().unwrap_or_default());
    out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.push((port_var.clone(), ports[0].port.to_string()));
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{port_var}_{}", env_name(n)), p.port.to_string()));
        }
    }
    // net.JoinHostPort: brackets around an IPv6 address.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p
            .protocol
            .as_deref()
            .filter(|x| !x.is_empty())
            .unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{host}:{}", p.port);
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.clone()));
    }
    out
}

async fn run(client: kube::Client, inner: Arc<RwLock<Inner>>, cancel: CancellationToken) {
    let api = kube::Api::<Service>::all(client);
    // The watcher relists on 410 Gone and backs off on errors by itself.
    let mut stream =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    // A (re)list is gathered aside and replaces the cache when complete.
    let mut listing = Map::new();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        let mut g = inner.write().unwrap_or_else(|e| e.into_inner());
        match ev {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(s)) => {
                listing.insert(key(&s), s);
            }
            Ok(Event::InitDone) => {
                g.services = std::mem::take(&mut listing);
                g.synced = true;
            }
            Ok(Event::Apply(s)) => {
                g.services.insert(key(&s), s);
            }
            Ok(Event::Delete(s)) => {
                g.services.remove(&key(&s));
            }
            // The last good list stays in use while the API server is away.
            Err(e) => debug!(error = %e, "service watch failed; retrying with back-off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": serde_json::from_str::<serde_json::Value>(ports).expect("ports json")},
        }))
        .expect("service json")
    }

    fn map(v: Vec<(String, String)>) -> BTreeMap<String, String> {
        v.into_iter().collect()
    }

    fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// envvars_test.go TestFromServices, the services it lists and the variables it expects.
    #[test]
    fn from_services_matches_the_go_test() {
        let foo = svc(
            "",
            "foo-bar",
            "1.2.3.4",
            r#"[{"port":8080,"protocol":"TCP"}]"#,
        );
        assert_eq!(
            from_service(&foo),
            [
                ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
                ("FOO_BAR_SERVICE_PORT", "8080"),
                ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
                ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
                ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
                ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
                ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let abc = svc(
            "",
            "abc-123",
            "5.6.7.8",
            r#"[{"name":"u-d-p","port":8081,"protocol":"UDP"},{"name":"t-c-p","port":8081,"protocol":"TCP"}]"#,
        );
        assert_eq!(
            map(from_service(&abc)),
            want(&[
                ("ABC_123_SERVICE_HOST", "5.6.7.8"),
                ("ABC_123_SERVICE_PORT", "8081"),
                ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
                ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
                ("ABC_123_PORT", "udp://5.6.7.8:8081"),
                ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
                ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
                ("ABC_123_PORT_8081_UDP_PORT", "8081"),
                ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
                ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
                ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
                ("ABC_123_PORT_8081_TCP_PORT", "8081"),
                ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
            ])
        );
        let v6 = svc(
            "",
            "super-ipv6",
            "2001:DB8::",
            r#"[{"name":"u-d-p","port":8084,"protocol":"UDP"},{"name":"t-c-p","port":8084,"protocol":"TCP"}]"#,
        );
        let v6 = map(from_service(&v6));
        assert_eq!(v6["SUPER_IPV6_PORT"], "udp://[2001:DB8::]:8084");
        assert_eq!(v6["SUPER_IPV6_PORT_8084_TCP"], "tcp://[2001:DB8::]:8084");
        assert_eq!(v6["SUPER_IPV6_PORT_8084_TCP_ADDR"], "2001:DB8::");
        assert_eq!(v6["SUPER_IPV6_SERVICE_HOST"], "2001:DB8::");
        // No ClusterIP ("None" or empty): no variables.
        assert!(from_service(&svc("", "headless", "None", r#"[{"port":1}]"#)).is_empty());
        assert!(from_service(&svc("", "noip", "", r#"[{"port":1}]"#)).is_empty());
    }

    /// getServiceEnvVarMap's projection: the namespace's services when links are on, the
    /// master service of `default` always; nothing standalone.
    #[test]
    fn env_for_projects_the_namespace_onto_the_master_service() {
        let cache = Services::fixed(vec![
            svc(
                "default",
                "kubernetes",
                "10.0.0.1",
                r#"[{"name":"https","port":443}]"#,
            ),
            svc("default", "other", "10.0.0.2", r#"[{"port":80}]"#),
            svc("ns", "kubernetes", "10.0.0.9", r#"[{"port":9}]"#),
            svc("ns", "web", "10.0.0.3", r#"[{"port":8080}]"#),
            svc("ns", "headless", "None", r#"[{"port":81}]"#),
        ]);
        let ns = map(cache.env_for("ns", true, true).expect("env"));
        // The namespace's own `kubernetes` replaces the master one, as the Go map does.
        assert_eq!(ns["KUBERNETES_SERVICE_HOST"], "10.0.0.9");
        let other = map(cache.env_for("elsewhere", true, true).expect("env"));
        assert_eq!(other["KUBERNETES_SERVICE_HOST"], "10.0.0.1");
        assert_eq!(other["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(ns["WEB_SERVICE_HOST"], "10.0.0.3");
        assert!(!ns.contains_key("OTHER_SERVICE_HOST"));
        assert!(!ns.contains_key("HEADLESS_SERVICE_HOST"));
        let off = map(cache.env_for("ns", false, true).expect("env"));
        assert_eq!(off["KUBERNETES_SERVICE_HOST"], "10.0.0.1");
        assert!(!off.contains_key("WEB_SERVICE_HOST"));
        let def = map(cache.env_for("default", true, true).expect("env"));
        assert_eq!(def["OTHER_SERVICE_PORT"], "80");
        assert!(
            Services::default()
                .env_for("ns", true, true)
                .expect("env")
                .is_empty()
        );
        let unsynced = Services {
            inner: Some(Arc::new(RwLock::new(Inner::default()))),
        };
        assert!(unsynced.env_for("ns", true, true).is_err());
        assert!(unsynced.env_for("ns", true, false).expect("env").is_empty());
    }
}
