//! The node status task: connect, register, then keep the status current (syncNodeStatus),
//! with the lease loop running beside it in the same task.

use super::client::ApiClient;
use super::machine::{self, MachineInfo};
use super::setters::{self, Facts};
use super::{Backoff, Failing, Inputs, NodeConditionsInput, NodeStatusError, Settings, chain};
use crate::options::eviction::EvictionOptions;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use k8s_openapi::jiff::Timestamp;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long a DNS lookup of the node name may take (NodeAddress setter, step 3).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `cancel`.
pub(super) async fn run(s: Settings, inputs: Inputs, cancel: CancellationToken) {
    let machine = match tokio::task::spawn_blocking(MachineInfo::read).await {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "reading machine info failed; node capacity is reported as unknown");
            MachineInfo::default()
        }
    };
    info!(
        cpus = machine.cpus,
        memory_bytes = machine.memory_bytes,
        machine_id = %machine.machine_id,
        boot_id = %machine.boot_id,
        kernel = %machine.kernel_version,
        os_image = %machine.os_image,
        "machine info for node status"
    );
    let Some(api) = connect(&s, &cancel).await else {
        return;
    };
    let lease = super::lease::run(
        api.clone(),
        s.node_name.clone(),
        s.node.lease_duration_seconds,
        cancel.clone(),
    );
    let mut m = Manager {
        s,
        api,
        machine,
        cri: inputs.cri.clone(),
        runtime_health: inputs.runtime_health.clone(),
        pleg_health: inputs.pleg_health.clone(),
        pressure: inputs.pressure.clone(),
        cached: None,
        registered: false,
        next_report: None,
        runtime_name: None,
        last_ready: None,
        failing: Failing::default(),
        recorder: inputs.recorder.clone(),
        condition_events: Default::default(),
    };
    tokio::join!(m.status_loop(inputs, cancel), lease);
}

/// Builds the client, retrying while the kubeconfig is missing or unusable (it may be
/// written later, e.g. by TLS bootstrapping); `None` once cancelled.
async fn connect(s: &Settings, cancel: &CancellationToken) -> Option<ApiClient> {
    let mut backoff = Backoff::new();
    let mut last = String::new();
    loop {
        match ApiClient::from_kubeconfig(&s.kubeconfig, s.call_timeout()).await {
            Ok(c) => {
                info!(kubeconfig = %s.kubeconfig.display(), node = %s.node_name, register = s.register_node, "cluster mode: node status, lease and registration start");
                return Some(c);
            }
            Err(e) => {
                let msg = chain(&e);
                if msg != last {
                    error!(error = %msg, "cannot build the API client; node registration and status wait for a usable kubeconfig");
                    last = msg;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

struct Manager {
    s: Settings,
    api: ApiClient,
    machine: MachineInfo,
    cri: crate::kuberuntime::Cri,
    runtime_health: watch::Receiver<Option<crate::kuberuntime::health::RuntimeHealth>>,
    pleg_health: watch::Receiver<Option<Instant>>,
    pressure: watch::Receiver<NodeConditionsInput>,
    /// The Node as the API server last returned it (the kubelet reads its lister; we keep the
    /// answer of our own last write). `None`: read it afresh.
    cached: Option<Node>,
    registered: bool,
    /// When an unchanged status is posted anyway (nodeStatusReportFrequency, jittered).
    next_report: Option<Instant>,
    /// CRI runtime name from the last Version answer.
    runtime_name: Option<String>,
    /// Ready (status, message) last posted, for the log.
    last_ready: Option<(String, String)>,
    failing: Failing,
    recorder: crate::recorder::Recorder,
    /// Conditions last posted, for the kubelet's node condition events.
    condition_events: crate::recorder::NodeConditionEvents,
}

/// Resolves when `rx` changes; never once its sender is gone (the last value stays).
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Manager {
    async fn status_loop(&mut self, inputs: Inputs, cancel: CancellationToken) {
        let (mut rt, mut pleg, mut pressure) =
            (inputs.runtime_health, inputs.pleg_health, inputs.pressure);
        loop {
            if self.s.register_node && !self.registered && !self.register(&cancel).await {
                return;
            }
            self.sync().await;
            let posted = self.summary();
            let period =
                tokio::time::sleep(crate::wait::jitter(self.s.node.update_frequency, 0.04));
            tokio::pin!(period);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut period => break,
                    _ = changed(&mut rt) => {}
                    _ = changed(&mut pleg) => {}
                    _ = changed(&mut pressure) => {}
                }
                // A flip of Ready or a pressure flag is posted now, not at the next period.
                if self.summary() != posted {
                    debug!("node readiness inputs changed; updating node status now");
                    break;
                }
            }
        }
    }

    /// What decides the Ready and pressure conditions' status.
    fn summary(&self) -> (bool, NodeConditionsInput) {
        let ready = setters::ready_errors(
            self.runtime_health.borrow().as_ref(),
            *self.pleg_health.borrow(),
            Instant::now(),
        )
        .is_empty();
        (ready, *self.pressure.borrow())
    }

    /// registerWithAPIServer: tries until registered; false if cancelled first.
    async fn register(&mut self, cancel: &CancellationToken) -> bool {
        let mut backoff = Backoff::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
            let facts = self.gather().await;
            let initial = setters::initial_node(
                &self.s.node_name,
                &self.s.node.labels,
                &self.s.node.taints,
                &facts.view(&self.machine, &self.s.reservations),
            );
            info!(node = %self.s.node_name, "attempting to register node");
            match self.try_register(&initial).await {
                Ok((node, created)) => {
                    self.failing.succeeded("node registration");
                    if created {
                        // The create carried a full status: the next post is a report away.
                        self.schedule_report(true);
                    }
                    self.note_ready(&node);
                    self.cached = Some(node);
                    self.registered = true;
                    return true;
                }
                Err(e) => self.failing.failed("registering the node", &e),
            }
        }
    }

    /// tryRegisterWithAPIServer: create; on AlreadyExists (or Forbidden, where the node may
    /// still exist) read the existing Node and reconcile it.
    /// The Node and whether it was created now.
    async fn try_register(&self, initial: &Node) -> Result<(Node, bool), NodeStatusError> {
        let name = &self.s.node_name;
        match self.api.create_node(initial).await {
            Ok(n) => {
                info!(node = %name, uid = n.metadata.uid.as_deref().unwrap_or(""), "registered node");
                return Ok((n, true));
            }
            Err(e) if e.is_already_exists() || e.is_forbidden() => {
                debug!(node = %name, error = %chain(&e), "node not created; reading the existing one");
            }
            Err(e) => return Err(e),
        }
        let existing = self.api.get_node(name).await?;
        let mut reconciled = existing.clone();
        let uid = existing.metadata.uid.clone().unwrap_or_default();
        if !setters::reconcile_existing(initial, &mut reconciled) {
            info!(node = %name, %uid, "node was previously registered");
            return Ok((existing, false));
        }
        let patch = setters::status_patch(&existing, &reconciled);
        let n = self.api.patch_node_status(name, &patch).await?;
        info!(node = %name, %uid, "node was previously registered; reconciled its default labels and resources");
        Ok((n, false))
    }

    /// One tryUpdateNodeStatus round: from the cached Node, then (after a failure) from a
    /// fresh read; patched if changed or due.
    async fn sync(&mut self) {
        let facts = self.gather().await;
        for attempt in 0..2 {
            let base = match self.cached.take().filter(|_| attempt == 0) {
                Some(n) => n,
                None => match self.api.get_node(&self.s.node_name).await {
                    Ok(n) => n,
                    Err(e) => {
                        self.on_error(&e);
                        return;
                    }
                },
            };
            let mut node = base.clone();
            let labels_fixed = setters::ensure_os_arch_labels(&mut node);
            setters::set_node_status(&mut node, &facts.view(&self.machine, &self.s.reservations));
            let changed =
                labels_fixed || setters::status_changed(base.status.as_ref(), node.status.as_ref());
            let due = self.next_report.is_none_or(|t| Instant::now() >= t);
            if !changed && !due {
                self.cached = Some(base);
                return;
            }
            let patch = setters::status_patch(&base, &node);
            match self.api.patch_node_status(&self.s.node_name, &patch).await {
                Ok(updated) => {
                    self.failing.succeeded("node status update");
                    self.schedule_report(changed);
                    self.note_ready(&updated);
                    debug!(changed, "node status posted");
                    self.cached = Some(updated);
                    return;
                }
                Err(e) => {
                    if e.is_not_found() {
                        self.on_error(&e);
                        return;
                    }
                    self.failing.failed("updating node status", &e);
                }
            }
        }
    }

    fn on_error(&mut self, e: &NodeStatusError) {
        if e.is_not_found() {
            if self.s.register_node {
                warn!(node = %self.s.node_name, "node object is gone from the API server; registering it again");
                self.registered = false;
            } else {
                self.failing.failed(
                    "updating node status (the node is not registered and --register-node=false)",
                    e,
                );
            }
            return;
        }
        self.failing.failed("reading the node", e);
    }

    /// After a post: the next unchanged-status report is due one report period later, moved by
    /// a random ±50 % after a change or the first post so that nodes spread out
    /// (calculateDelay).
    fn schedule_report(&mut self, changed: bool) {
        let period = self.s.node.report_frequency;
        let at = if changed || self.next_report.is_none() {
            period.mul_f64(0.5 + crate::wait::unit_random())
        } else {
            period
        };
        self.next_report = Some(Instant::now() + at);
    }

    fn note_ready(&mut self, node: &Node) {
        self.condition_events.observe(&self.recorder, node);
        let Some((status, _, message)) = setters::ready_of(node) else {
            return;
        };
        let now = (status.to_owned(), message.to_owned());
        if self.last_ready.as_ref() == Some(&now) {
            return;
        }
        if status == "True" {
            info!(node = %self.s.node_name, "node is Ready");
        } else {
            warn!(node = %self.s.node_name, status, reason = %message, "node is not ready");
        }
        self.last_ready = Some(now);
    }

    /// Reads what a status needs: filesystem, addresses, runtime version, health.
    async fn gather(&mut self) -> Gathered {
        let root = self.s.root_dir.clone();
        let ephemeral_storage = match tokio::task::spawn_blocking(move || {
            machine::filesystem_capacity(&root)
        })
        .await
        {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                warn!(dir = %self.s.root_dir.display(), error = %e, "cannot stat the root dir's filesystem; ephemeral-storage capacity is missing");
                None
            }
            Err(e) => {
                warn!(error = %e, "statvfs task failed");
                None
            }
        };
        let addresses = match node_addresses(&self.s.node_ips, &self.s.node_name).await {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(node = %self.s.node_name, error = %e, "cannot determine the node's addresses; keeping the ones it has");
                None
            }
        };
        let container_runtime_version = match self.cri.version().await {
            Ok(v) => {
                self.runtime_name = Some(v.runtime_name.clone());
                format!("{}://{}", v.runtime_name, v.runtime_version)
            }
            Err(e) => {
                debug!(error = %e, "CRI Version failed; runtime version is Unknown");
                format!(
                    "{}://Unknown",
                    self.runtime_name.as_deref().unwrap_or("unknown")
                )
            }
        };
        Gathered {
            ephemeral_storage,
            addresses,
            container_runtime_version,
            ready_errors: setters::ready_errors(
                self.runtime_health.borrow().as_ref(),
                *self.pleg_health.borrow(),
                Instant::now(),
            ),
            pressure: *self.pressure.borrow(),
            kubelet_port: self.s.kubelet_port,
            max_pods: self.s.node.max_pods,
        }
    }
}

/// [`Facts`] without the borrowed machine info.
struct Gathered {
    ephemeral_storage: Option<u64>,
    addresses: Option<Vec<NodeAddress>>,
    container_runtime_version: String,
    ready_errors: Vec<String>,
    pressure: NodeConditionsInput,
    kubelet_port: u16,
    max_pods: u32,
}

impl Gathered {
    fn view<'a>(&self, machine: &'a MachineInfo, reservations: &'a EvictionOptions) -> Facts<'a> {
        Facts {
            reservations,
            now: Timestamp::now(),
            machine,
            ephemeral_storage: self.ephemeral_storage,
            addresses: self.addresses.clone(),
            container_runtime_version: self.container_runtime_version.clone(),
            kubelet_port: self.kubelet_port,
            max_pods: self.max_pods,
            ready_errors: self.ready_errors.clone(),
            pressure: self.pressure,
        }
    }
}

fn address(type_: &str, a: impl ToString) -> NodeAddress {
    NodeAddress {
        type_: type_.to_owned(),
        address: a.to_string(),
    }
}

/// The NodeAddress setter without a cloud provider: `--node-ip` (one or two, validated), else
/// the node name if it is an IP, else its DNS answers that could be a node IP, else the address
/// towards the default route; plus the Hostname address.
async fn node_addresses(node_ips: &[IpAddr], node_name: &str) -> Result<Vec<NodeAddress>, String> {
    let first = node_ips.first().copied();
    let primary = first.filter(|ip| !ip.is_unspecified());
    let secondary = node_ips.get(1).copied().filter(|ip| !ip.is_unspecified());
    if let Some(ip) = primary {
        machine::validate_node_ip(ip).map_err(|e| format!("failed to validate nodeIP: {e}"))?;
    }
    if let Some(ip) = secondary {
        machine::validate_node_ip(ip)
            .map_err(|e| format!("failed to validate secondaryNodeIP: {e}"))?;
    }
    if let (Some(p), Some(s)) = (primary, secondary) {
        return Ok(vec![
            address("InternalIP", p),
            address("InternalIP", s),
            address("Hostname", node_name),
        ]);
    }
    let prefer_v6 = first.is_some_and(|ip| ip.is_ipv6());
    let ip = match primary.or_else(|| node_name.parse().ok()) {
        Some(ip) => Some(ip),
        None => {
            let looked_up =
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((node_name, 0))).await;
            let candidates: Vec<IpAddr> = match looked_up {
                Ok(Ok(addrs)) => addrs
                    .map(|a| a.ip())
                    .filter(|ip| machine::validate_node_ip(*ip).is_ok())
                    .collect(),
                _ => Vec::new(),
            };
            candidates
                .iter()
                .find(|ip| ip.is_ipv6() == prefer_v6)
                .or(candidates.first())
                .copied()
                .or_else(|| machine::default_route_ip(prefer_v6))
        }
    };
    let ip = ip.ok_or_else(|| format!("can't get ip address of node {node_name}"))?;
    Ok(vec![
        address("InternalIP", ip),
        address("Hostname", node_name),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn node_ip_flags_give_the_addresses() {
        let a = node_addresses(&["203.0.113.9".parse().expect("ip")], "n1")
            .await
            .expect_err("not on this host");
        assert!(a.starts_with("failed to validate nodeIP"), "{a}");
        let a = node_addresses(&["127.0.0.1".parse().expect("ip")], "n1")
            .await
            .expect_err("loopback");
        assert!(a.contains("loopback"), "{a}");
        // A node name that is an IP is used as is (the kubelet does not validate it).
        let a = node_addresses(&[], "10.1.2.3").await.expect("addresses");
        assert_eq!(a[0].address, "10.1.2.3");
        assert_eq!(
            (a[1].type_.as_str(), a[1].address.as_str()),
            ("Hostname", "10.1.2.3")
        );
    }

    #[tokio::test]
    async fn an_unresolvable_name_falls_back_to_the_default_route_address() {
        let Some(expected) = machine::default_route_ip(false) else {
            eprintln!("no default route on this machine; nothing to check");
            return;
        };
        let a = node_addresses(&[], "nodelet-no-such-host.invalid")
            .await
            .expect("addresses");
        assert_eq!(a[0].type_, "InternalIP");
        assert_eq!(a[0].address, expected.to_string());
        // --node-ip=0.0.0.0 means "detect".
        let a = node_addresses(
            &["0.0.0.0".parse().expect("ip")],
            "nodelet-no-such-host.invalid",
        )
        .await
        .expect("addresses");
        assert_eq!(a[0].address, expected.to_string());
    }
}
