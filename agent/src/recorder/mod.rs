//! The kubelet's event recorder (client-go's EventRecorder and broadcaster, as the kubelet
//! sets them up in cmd/kubelet and pkg/kubelet/events): Kubernetes Events about pods and the
//! Node, with the kubelet's reasons and messages, posted to the API server in cluster mode.
//!
//! Not to be confused with `events.rs`, the agent's internal bus. Components that emit
//! (kuberuntime, pod workers, node status) hold a [`Recorder`], a cheap clone of a bounded
//! sender: recording never waits, and an event that finds the queue full is dropped and counted
//! (client-go drops too, its queue holds 1000). One task ([`sink`]) owns the [`correlator`]
//! (aggregation, dedup by PATCH of `count`, the per-object spam filter) and every API write.
//! Standalone (no API client), events are only logged at debug level.

pub mod correlator;
pub mod reasons;
mod sink;

use crate::pod::PodRef;
use k8s_openapi::api::core::v1::PodSpec;
pub use reasons::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Events waiting for the writer (client-go's maxQueuedEvents).
pub const QUEUE: usize = 1000;
/// `source.component` and `reportingController` of every event.
pub const COMPONENT: &str = "kubelet";

/// Normal or Warning (v1.EventTypeNormal / EventTypeWarning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something may need attention.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Involved {
    /// A pod (a static pod by its static UID, as the kubelet); `field_path` names a container
    /// (`spec.containers{c}`) for container events.
    Pod {
        /// The pod.
        pod: PodRef,
        /// `spec.containers{name}` / `spec.initContainers{name}`, or none for the pod itself.
        field_path: Option<String>,
    },
    /// This node (the writer adds the Node's UID once it knows it, as nodeRefWithUID).
    Node,
}

/// One recorded event, before correlation.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The object.
    pub involved: Involved,
    /// Normal or Warning.
    pub type_: EventType,
    /// The kubelet's reason ([`reasons`]).
    pub reason: String,
    /// The message.
    pub message: String,
    /// When it happened (firstTimestamp/lastTimestamp, the event's name).
    pub at: SystemTime,
}

/// Counters of the recorder, for logs and metrics.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Events the spam filter kept from the API server.
    pub filtered: AtomicU64,
    /// Events created on the API server.
    pub created: AtomicU64,
    /// Repeats written as a count PATCH.
    pub patched: AtomicU64,
    /// Events given up after the server refused them or retries ran out.
    pub failed: AtomicU64,
}

/// Records events (cheap to clone; never blocks).
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Recorded>>,
    stats: Arc<RecorderStats>,
}

impl Recorder {
    /// A recorder that only logs (standalone mode, tests).
    pub fn logging_only() -> Self {
        Self {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Records an event about the pod itself.
    pub fn pod(&self, pod: &PodRef, m: Message) {
        let involved = Involved::Pod {
            pod: pod.clone(),
            field_path: None,
        };
        self.record(involved, m);
    }

    /// Records an event about one of the pod's containers (`field_path` from [`field_path`]).
    pub fn container(&self, pod: &PodRef, field_path: String, m: Message) {
        let involved = Involved::Pod {
            pod: pod.clone(),
            field_path: Some(field_path),
        };
        self.record(involved, m);
    }

    /// Records an event about this node.
    pub fn node(&self, m: Message) {
        self.record(Involved::Node, m);
    }

    fn record(&self, involved: Involved, m: Message) {
        let ev = Recorded {
            involved,
            type_: m.type_,
            reason: m.reason,
            message: m.message,
            at: SystemTime::now(),
        };
        let Some(tx) = &self.tx else {
            debug!(object = ?ev.involved, type_ = ev.type_.as_str(), reason = %ev.reason, message = %ev.message, "event");
            return;
        };
        if let Err(e) = tx.try_send(ev) {
            // A pod worker must never wait on the API server for an event; the writer reports
            // the drops.
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let mpsc::error::TrySendError::Full(ev) = e {
                debug!(reason = %ev.reason, "event queue full; event dropped");
            }
        }
    }
}

/// The container's field path as GenerateContainerRef writes it: `spec.initContainers{c}` for
/// an init container of `spec`, `spec.ephemeralContainers{c}` for an ephemeral one,
/// `spec.containers{c}` otherwise.
pub fn field_path(spec: Option<&PodSpec>, container: &str) -> String {
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|v| v.iter().any(|c| c.name == container));
    let ephemeral = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|v| v.iter().any(|c| c.name == container));
    if init {
        format!("spec.initContainers{{{container}}}")
    } else if ephemeral {
        format!("spec.ephemeralContainers{{{container}}}")
    } else {
        format!("spec.containers{{{container}}}")
    }
}

/// Starts the writer in cluster mode (`client` given) and returns the handle; without a
/// client the handle only logs.
pub fn start(
    client: Option<kube::Client>,
    node_name: String,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> Recorder {
    let Some(client) = client else {
        return Recorder::logging_only();
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let stats = Arc::new(RecorderStats::default());
    tasks.spawn(sink::run(client, node_name, rx, stats.clone(), cancel));
    Recorder {
        tx: Some(tx),
        stats,
    }
}

/// The node condition events of node status (the kubelet's setters record one when a
/// condition first appears or changes): remembers what was posted and says what to record.
#[derive(Debug, Default)]
pub struct NodeConditionEvents {
    last: std::collections::HashMap<String, String>,
}

impl NodeConditionEvents {
    /// Records the events for the conditions of `node` that changed since the last call:
    /// `Node <name> status is now: <reason>`, as recordNodeStatusEvent.
    pub fn observe(&mut self, recorder: &Recorder, node: &k8s_openapi::api::core::v1::Node) {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let conditions = node
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten());
        for c in conditions {
            if self.last.get(&c.type_) == Some(&c.status) {
                continue;
            }
            self.last.insert(c.type_.clone(), c.status.clone());
            if let Some(m) = reasons::node_condition(name, &c.type_, &c.status) {
                recorder.node(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, Node, NodeCondition, NodeStatus};

    #[test]
    fn field_paths_name_init_and_regular_containers() {
        let spec = PodSpec {
            init_containers: Some(vec![Container {
                name: "i".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(field_path(Some(&spec), "i"), "spec.initContainers{i}");
        assert_eq!(field_path(Some(&spec), "c"), "spec.containers{c}");
        assert_eq!(field_path(None, "c"), "spec.containers{c}");
        let spec = PodSpec {
            ephemeral_containers: Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
                name: "e".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(field_path(Some(&spec), "e"), "spec.ephemeralContainers{e}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let r = Recorder {
            tx: Some(tx),
            stats: Arc::default(),
        };
        for _ in 0..3 {
            r.node(reasons::starting());
        }
        assert_eq!(r.stats.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn node_conditions_record_once_per_change() {
        let (tx, mut rx) = mpsc::channel(16);
        let r = Recorder {
            tx: Some(tx),
            stats: Arc::default(),
        };
        let node = |ready: &str| Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seen = NodeConditionEvents::default();
        seen.observe(&r, &node("False"));
        seen.observe(&r, &node("False"));
        seen.observe(&r, &node("True"));
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push((e.reason, e.message));
        }
        assert_eq!(
            got,
            [
                (
                    "NodeHasSufficientMemory".to_owned(),
                    "Node n1 status is now: NodeHasSufficientMemory".to_owned()
                ),
                (
                    "NodeNotReady".to_owned(),
                    "Node n1 status is now: NodeNotReady".to_owned()
                ),
                (
                    "NodeReady".to_owned(),
                    "Node n1 status is now: NodeReady".to_owned()
                ),
            ]
        );
    }
}
