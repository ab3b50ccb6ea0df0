//! Node status (kubelet pkg/kubelet/nodestatus, kubelet_node_status.go and the node lease
//! controller): in cluster mode, registers this node's Node object, keeps its status current and
//! renews its Lease in `kube-node-lease`.
//!
//! - Registration (registerWithAPIServer): create the Node with the kubelet's labels,
//!   `--node-labels`, taints, addresses, capacity and node info; on AlreadyExists read it and
//!   reconcile what the kubelet reconciles (default labels, huge pages), never a second Node.
//!   Retried with the kubelet's back-off (100 ms doubling to 7 s) while the API server is away.
//! - Status (syncNodeStatus): every `nodeStatusUpdateFrequency` (jittered 4 %) the status is
//!   recomputed from the last Node the API server returned; it is patched (strategic merge,
//!   status subresource) when it changed, ignoring heartbeat times, or when
//!   `nodeStatusReportFrequency` has passed. A flip of Ready or of a pressure input is posted
//!   at once (the kubelet's fastStatusUpdateOnce does this at start-up).
//! - Lease (component-helpers lease controller): renewed every quarter of
//!   `nodeLeaseDurationSeconds`, holder = the node, owned by the Node; recreated if deleted.
//!
//! Inputs are `watch` receivers only: runtime health (`kuberuntime::health`), PLEG's last
//! relist (`pleg`), and [`NodeConditionsInput`] (the eviction manager's pressure flags, later).
//! Nothing here stops the agent: an unreachable API server or a bad kubeconfig is logged and
//! retried.

mod client;
mod lease;
pub mod machine;
mod manager;
pub mod setters;

use crate::kuberuntime::Cri;
use crate::kuberuntime::health::RuntimeHealth;
use crate::options::{NodeStatusOptions, Options};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Pressure flags the eviction manager will set; until it exists they stay "no pressure".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeConditionsInput {
    /// MemoryPressure is True.
    pub memory_pressure: bool,
    /// DiskPressure is True.
    pub disk_pressure: bool,
    /// PIDPressure is True.
    pub pid_pressure: bool,
}

/// A channel for [`NodeConditionsInput`], starting with no pressure. The sender goes to the
/// eviction manager; dropping it freezes the last value.
pub fn pressure_channel() -> (
    watch::Sender<NodeConditionsInput>,
    watch::Receiver<NodeConditionsInput>,
) {
    watch::channel(NodeConditionsInput::default())
}

/// What node status needs from the options.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name.
    pub node_name: String,
    /// `--kubeconfig`.
    pub kubeconfig: PathBuf,
    /// `--register-node`: create the Node if missing. Without it the Node must exist; status and
    /// lease are kept all the same, as by the kubelet.
    pub register_node: bool,
    /// `--node-ip`.
    pub node_ips: Vec<IpAddr>,
    /// `--root-dir`: its filesystem is the ephemeral-storage capacity.
    pub root_dir: PathBuf,
    /// The secure port, published as daemonEndpoints.kubeletEndpoint.Port.
    pub kubelet_port: u16,
    /// Frequencies, lease duration, maxPods, labels and taints.
    pub node: NodeStatusOptions,
    /// kubeReserved, systemReserved and the hard eviction thresholds: allocatable lacks them.
    pub reservations: crate::options::eviction::EvictionOptions,
}

impl Settings {
    /// The settings in cluster mode; `None` when there is no `--kubeconfig` (standalone).
    pub fn from_options(o: &Options) -> Option<Settings> {
        Some(Settings {
            node_name: o.node_name.clone(),
            kubeconfig: o.kubeconfig.clone()?,
            register_node: o.register_node,
            node_ips: o.node_ips.clone(),
            root_dir: o.root_dir.clone(),
            kubelet_port: o.server.port,
            node: o.node_status.clone(),
            reservations: o.eviction.clone(),
        })
    }

    /// Deadline of every API call: nodeStatusUpdateFrequency capped at the lease duration (the
    /// kubelet's heartbeat client timeout), and at least 5 s so that short periods still give
    /// a loaded API server a chance.
    pub fn call_timeout(&self) -> Duration {
        let lease = Duration::from_secs(u64::from(self.node.lease_duration_seconds));
        self.node
            .update_frequency
            .min(lease)
            .max(Duration::from_secs(5))
    }
}

/// The latest values node status reads.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The runtime connection (CRI Version for containerRuntimeVersion).
    pub cri: Cri,
    /// Runtime health (RuntimeReady, NetworkReady).
    pub runtime_health: watch::Receiver<Option<RuntimeHealth>>,
    /// PLEG's last successful relist.
    pub pleg_health: watch::Receiver<Option<Instant>>,
    /// Pressure flags.
    pub pressure: watch::Receiver<NodeConditionsInput>,
    /// Node events (NodeReady, NodeHasSufficientMemory...).
    pub recorder: crate::recorder::Recorder,
}

/// Errors of node status calls; each names the call and the object, or the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum NodeStatusError {
    /// No client from the kubeconfig.
    #[error(transparent)]
    Client(#[from] crate::config::apiserver::ClientError),
    /// The API server refused or failed a call.
    #[error("{call} {object}")]
    Api {
        /// What was attempted ("create", "patch status of", ...).
        call: &'static str,
        /// The object, e.g. `node n1` or `lease kube-node-lease/n1`.
        object: String,
        /// The cause (an API status or a transport error).
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("{call} {object}: no answer within {after:?}")]
    Timeout {
        /// What was attempted.
        call: &'static str,
        /// The object.
        object: String,
        /// The deadline.
        after: Duration,
    },
}

impl NodeStatusError {
    fn api_status(&self) -> Option<&kube::core::Status> {
        match self {
            NodeStatusError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s),
            _ => None,
        }
    }

    /// 404 NotFound.
    pub fn is_not_found(&self) -> bool {
        self.api_status().is_some_and(|s| s.is_not_found())
    }

    /// 409 AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        self.api_status().is_some_and(|s| s.is_already_exists())
    }

    /// 409 Conflict (a stale resourceVersion).
    pub fn is_conflict(&self) -> bool {
        self.api_status().is_some_and(|s| s.is_conflict())
    }

    /// 403 Forbidden.
    pub fn is_forbidden(&self) -> bool {
        self.api_status().is_some_and(|s| s.is_forbidden())
    }
}

/// The error with its causes, `a: b: c`, for one log line. An API status is shown as
/// code, reason and message (kube-rs would append its whole Debug form); repeated causes (the
/// client's transport errors print their own source too) are shown once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        if let Some(kube::Error::Api(st)) = c.downcast_ref::<kube::Error>() {
            parts.push(format!("{} {}: {}", st.code, st.reason, st.message));
            break;
        }
        let text = c.to_string();
        if !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Logs a failing call once per distinct error (debug while it repeats), and its recovery.
#[derive(Debug, Default)]
struct Failing {
    last: Option<String>,
    count: u64,
}

impl Failing {
    fn failed(&mut self, what: &str, e: &NodeStatusError) {
        let msg = chain(e);
        self.count += 1;
        if self.last.as_deref() == Some(msg.as_str()) {
            tracing::debug!(error = %msg, failures = self.count, "{what} failed again");
        } else {
            tracing::warn!(error = %msg, failures = self.count, "{what} failed; will retry");
            self.last = Some(msg);
        }
    }

    fn succeeded(&mut self, what: &str) {
        if self.last.take().is_some() {
            tracing::info!(failures = self.count, "{what} works again");
        }
        self.count = 0;
    }
}

/// Starts registration, status updates and the lease in one task.
pub fn start(
    settings: Settings,
    inputs: Inputs,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) {
    tasks.spawn(manager::run(settings, inputs, cancel));
}

/// The kubelet's retry delay: doubles from 100 ms up to 7 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(7);

    fn new() -> Self {
        Backoff(Self::FIRST)
    }

    /// The delay to wait now; the next one is twice as long, up to 7 s.
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_seven_seconds() {
        let mut b = Backoff::new();
        let seen: Vec<u64> = (0..9).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(seen, [100, 200, 400, 800, 1600, 3200, 6400, 7000, 7000]);
    }

    #[test]
    fn call_timeout_is_the_update_period_within_bounds() {
        let o = Options::from_args(["nodelet".to_owned(), "--kubeconfig=/k".to_owned()])
            .expect("options");
        let mut s = Settings::from_options(&o).expect("cluster mode");
        assert_eq!(s.call_timeout(), Duration::from_secs(10));
        s.node.update_frequency = Duration::from_secs(1);
        assert_eq!(s.call_timeout(), Duration::from_secs(5));
        s.node.update_frequency = Duration::from_secs(60);
        assert_eq!(s.call_timeout(), Duration::from_secs(40));
        let standalone = Options::from_args(["nodelet".to_owned()]).expect("options");
        assert!(Settings::from_options(&standalone).is_none());
    }

    #[test]
    fn api_errors_are_classified_by_status() {
        let e = |code: u16, reason: &str| NodeStatusError::Api {
            call: "create",
            object: "node n".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                ..kube::core::Status::failure("x", reason)
            })),
        };
        assert!(e(409, "AlreadyExists").is_already_exists());
        assert!(!e(409, "AlreadyExists").is_conflict());
        assert!(e(409, "Conflict").is_conflict());
        assert!(e(404, "NotFound").is_not_found());
        assert!(e(403, "Forbidden").is_forbidden());
        let t = NodeStatusError::Timeout {
            call: "get",
            object: "node n".into(),
            after: Duration::from_secs(1),
        };
        assert!(!t.is_not_found());
        assert_eq!(
            chain(&e(404, "NotFound")).split(": ").next(),
            Some("create node n")
        );
    }
}
