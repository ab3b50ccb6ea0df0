//! metrics-server (built from the Go module proxy by [`crate::k8s`]) as a host process beside a
//! loopback [`Cluster`], registered with the aggregation layer so that `kubectl top` works.
//!
//! It runs as upstream's manifests run it, minus the Deployment: its own identity
//! (`system:metrics-server`, a client certificate of the cluster CA) with upstream's RBAC
//! (`components.yaml`: read nodes and pods, get `nodes/metrics`, delegated authn/authz, the
//! request-header CA from `kube-system/extension-apiserver-authentication`), scraping each node's
//! `/metrics/resource` at its InternalIP and the port the Node reports. Kubelet serving
//! certificates are not verified (`--kubelet-insecure-tls`): nodelet's is self-signed, as a
//! kubelet's is unless it asks for a serving certificate by CSR.
//!
//! The APIService must name a Service, and on loopback only one kind works. With the apiserver's
//! default `--enable-aggregator-routing=false` a ClusterIP Service resolves to its cluster IP,
//! which nothing routes without kube-proxy; endpoint routing needs an EndpointSlice, whose
//! validation (like Endpoints') refuses loopback addresses. An `ExternalName` Service resolves
//! to `<externalName>:<APIService port>` as it stands (apiserver `pkg/util/proxy`
//! `ResolveCluster`), so `externalName: localhost` reaches metrics-server on 127.0.0.1. Its
//! serving certificate is self-signed in the cert dir, hence `insecureSkipTLSVerify` on the
//! APIService; requests come from the apiserver's front-proxy client certificate.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::k8s;
use crate::process::{self, Daemon};

/// The user metrics-server authenticates as (upstream's service account is named the same).
pub const USER: &str = "system:metrics-server";
/// The APIService `kubectl top` reads.
pub const API_SERVICE: &str = "v1beta1.metrics.k8s.io";
/// How often it scrapes: what upstream's manifests set (it must exceed the 10 s kubelet request
/// timeout).
const RESOLUTION: &str = "15s";

/// A running metrics-server; stopped on drop.
#[derive(Debug)]
pub struct MetricsServer {
    daemon: Daemon,
    port: u16,
    log: PathBuf,
}

impl MetricsServer {
    /// Builds metrics-server [`k8s::METRICS_SERVER_VERSION`] if needed, applies its RBAC,
    /// Service and APIService to `cluster`, and starts it on a free loopback port with its
    /// state under `<cluster dir>/metrics-server`. Returns once it runs; use
    /// [`MetricsServer::wait_available`] to wait for the aggregator to reach it.
    pub fn start(cluster: &Cluster) -> Result<MetricsServer> {
        let bin = k8s::build_metrics_server(k8s::METRICS_SERVER_VERSION)?;
        let dir = cluster.dir().join("metrics-server");
        let certs = dir.join("certs");
        fs::create_dir_all(&certs).with_context(|| format!("cannot create {}", certs.display()))?;
        let kubeconfig = cluster.user_kubeconfig(USER, None)?;
        let port = free_port()?;
        let objects =
            serde_json::to_string(&objects(port)).expect("a JSON literal always serialises");
        cluster
            .kubectl_in(
                &cluster.admin_kubeconfig(),
                &["apply", "-f", "-"],
                Some(&objects),
            )
            .context("applying metrics-server's RBAC, Service and APIService")?;
        let mut cmd = Command::new(&bin);
        let kc = kubeconfig.display();
        cmd.arg(format!("--kubeconfig={kc}"))
            .arg(format!("--authentication-kubeconfig={kc}"))
            .arg(format!("--authorization-kubeconfig={kc}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", certs.display()))
            .arg("--kubelet-insecure-tls")
            .arg("--kubelet-preferred-address-types=InternalIP")
            // Test nodes serve on a free port, which the Node's daemonEndpoints name.
            .arg("--kubelet-use-node-status-port")
            .arg(format!("--metric-resolution={RESOLUTION}"));
        let log = dir.join("metrics-server.log");
        let daemon = Daemon::spawn("metrics-server", cmd, &log)?;
        eprintln!(
            "xtask: started metrics-server {} (pid {}) on 127.0.0.1:{port}, log {}",
            k8s::METRICS_SERVER_VERSION,
            daemon.pid(),
            log.display()
        );
        Ok(MetricsServer { daemon, port, log })
    }

    /// Its secure port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits until the APIService is `Available` (the aggregator reached metrics-server, which
    /// is ready once it has scraped). Fails early if metrics-server exits.
    pub fn wait_available(&self, cluster: &Cluster, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.daemon.exited() {
                bail!(
                    "metrics-server exited ({exit}); {} ends with:\n{}",
                    self.log.display(),
                    process::log_tail(&self.log, 30)
                );
            }
            let last = match cluster.kubectl(&["get", "apiservice", API_SERVICE, "-o", "json"]) {
                Ok(out) => {
                    let v: Value = serde_json::from_str(&out).unwrap_or_default();
                    let available = v["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"));
                    if available.is_some_and(|c| c["status"] == "True") {
                        eprintln!(
                            "xtask: APIService {API_SERVICE} available after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                        return Ok(());
                    }
                    available.map_or_else(
                        || "no condition yet".to_owned(),
                        |c| format!("{}: {}", c["reason"], c["message"]),
                    )
                }
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() >= timeout {
                bail!(
                    "APIService {API_SERVICE} not available after {timeout:?} ({last}); {} ends \
                     with:\n{}",
                    self.log.display(),
                    process::log_tail(&self.log, 30)
                );
            }
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// Stops it (SIGTERM, then SIGKILL).
    pub fn stop(self) -> Result<()> {
        self.daemon.stop(Duration::from_secs(10))
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr().context("no local address")?.port())
}

/// Upstream's RBAC for metrics-server (bound to [`USER`] instead of its service account), the
/// `ExternalName` Service and the APIService pointing at `port`.
fn objects(port: u16) -> Value {
    let rbac = "rbac.authorization.k8s.io";
    let user = json!([{ "apiGroup": rbac, "kind": "User", "name": USER }]);
    let role_ref = |kind: &str, name: &str| json!({ "apiGroup": rbac, "kind": kind, "name": name });
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": { "name": "system:metrics-server" },
                "rules": [
                    { "apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"] },
                    { "apiGroups": [""], "resources": ["pods", "nodes"],
                      "verbs": ["get", "list", "watch"] },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": { "name": "system:metrics-server" },
                "roleRef": role_ref("ClusterRole", "system:metrics-server"),
                "subjects": user,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": { "name": "metrics-server:system:auth-delegator" },
                "roleRef": role_ref("ClusterRole", "system:auth-delegator"),
                "subjects": user,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": { "name": "metrics-server-auth-reader", "namespace": "kube-system" },
                "roleRef": role_ref("Role", "extension-apiserver-authentication-reader"),
                "subjects": user,
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": "metrics-server", "namespace": "kube-system" },
                "spec": { "type": "ExternalName", "externalName": "localhost" },
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": { "name": API_SERVICE },
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    "insecureSkipTLSVerify": true,
                    "service": { "name": "metrics-server", "namespace": "kube-system", "port": port },
                },
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_service_points_at_an_external_name_on_loopback() {
        let v = objects(4443);
        let items = v["items"].as_array().expect("items");
        let svc = items
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("a Service");
        assert_eq!(svc["spec"]["type"], "ExternalName");
        assert_eq!(svc["spec"]["externalName"], "localhost");
        let api = items
            .iter()
            .find(|o| o["kind"] == "APIService")
            .expect("an APIService");
        assert_eq!(api["metadata"]["name"], API_SERVICE);
        assert_eq!(api["spec"]["service"]["port"], 4443);
        assert_eq!(api["spec"]["service"]["name"], svc["metadata"]["name"]);
        let metrics_rule = items[0]["rules"][0].clone();
        assert_eq!(metrics_rule["resources"][0], "nodes/metrics");
        for o in &items[1..4] {
            assert_eq!(o["subjects"][0]["name"], USER, "{o}");
        }
    }
}
