//! The recorder's writer task: builds each core/v1 Event as client-go's recorder makes it,
//! correlates it and writes it with the node's client (recordToSink / recordEvent).
//!
//! Writes are sequential, as client-go's sink goroutine: a create for a first occurrence, a
//! strategic-merge PATCH of count, lastTimestamp and message for a repeat (a create again if
//! that event is gone). A transport error is retried up to 12 times, 10 s apart (the first wait
//! jittered); a refusal from the server (invalid, forbidden, already exists) is given up at once.
//! Meanwhile new events queue and, once the queue is full, are dropped and counted.

use super::correlator::{self, Correlated, Correlator};
use super::{COMPONENT, Involved, Recorded, RecorderStats};
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Attempts per event (maxTriesPerEvent).
const MAX_TRIES: u32 = 12;
/// Wait between attempts (defaultSleepDuration).
const RETRY_SLEEP: Duration = Duration::from_secs(10);

/// Runs until `cancel` or until every [`super::Recorder`] is gone.
pub(super) async fn run(
    client: kube::Client,
    node_name: String,
    mut rx: mpsc::Receiver<Recorded>,
    stats: Arc<RecorderStats>,
    cancel: CancellationToken,
) {
    let mut w = Writer {
        client,
        node_name,
        node_uid: None,
        correlator: Correlator::new(),
        stats,
    };
    let mut dropped_seen = 0;
    loop {
        let rec = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let dropped = w.stats.dropped.load(Ordering::Relaxed);
        if dropped > dropped_seen {
            warn!(
                dropped = dropped - dropped_seen,
                total = dropped,
                "event queue was full; events were dropped"
            );
            dropped_seen = dropped;
        }
        if rec.involved == Involved::Node && w.node_uid.is_none() {
            w.resolve_node_uid().await;
        }
        let event = w.make_event(&rec);
        match w.correlator.correlate(event, rec.at) {
            Correlated::Skip => {
                w.stats.filtered.fetch_add(1, Ordering::Relaxed);
                debug!(reason = %rec.reason, "event over the per-object budget; not sent");
            }
            Correlated::Create { event, key } => w.write(*event, None, key, &cancel).await,
            Correlated::Patch { event, patch, key } => {
                w.write(*event, Some(patch), key, &cancel).await
            }
        }
    }
}

struct Writer {
    client: kube::Client,
    node_name: String,
    /// The Node's UID once read: node events carry it, as the kubelet's nodeRefWithUID.
    node_uid: Option<String>,
    correlator: Correlator,
    stats: Arc<RecorderStats>,
}

/// How one write attempt ended.
enum Attempt {
    Done(Box<Event>),
    GiveUp(kube::Error),
    Retry(kube::Error),
}

impl Writer {
    /// Reads the Node's UID; until the Node exists, node events name it without one.
    async fn resolve_node_uid(&mut self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        if let Ok(n) = nodes.get(&self.node_name).await {
            self.node_uid = n.metadata.uid;
        }
    }

    /// makeEvent plus generateEvent's source and reporting fields.
    fn make_event(&self, r: &Recorded) -> Event {
        let involved = match &r.involved {
            Involved::Pod { pod, field_path } => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                field_path: field_path.clone(),
                ..Default::default()
            },
            Involved::Node => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node_name.clone()),
                uid: self.node_uid.clone(),
                ..Default::default()
            },
        };
        // Cluster-scoped objects' events live in "default", as client-go puts them.
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let at = correlator::time(r.at);
        Event {
            metadata: ObjectMeta {
                name: Some(correlator::event_name(
                    involved.name.as_deref().unwrap_or(""),
                    r.at,
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(r.reason.clone()),
            message: Some(r.message.clone()),
            first_timestamp: at.clone(),
            last_timestamp: at,
            count: Some(1),
            type_: Some(r.type_.as_str().into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: Some(self.node_name.clone()),
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.node_name.clone()),
            ..Default::default()
        }
    }

    /// Writes one correlated event, retrying transport errors.
    async fn write(
        &mut self,
        event: Event,
        patch: Option<serde_json::Value>,
        key: String,
        cancel: &CancellationToken,
    ) {
        let what = format!(
            "{} {}/{}",
            event.reason.as_deref().unwrap_or(""),
            event.metadata.namespace.as_deref().unwrap_or(""),
            event.metadata.name.as_deref().unwrap_or("")
        );
        for tries in 1..=MAX_TRIES {
            match self.attempt(&event, patch.as_ref()).await {
                Attempt::Done(written) => {
                    let counter = if patch.is_some() {
                        &self.stats.patched
                    } else {
                        &self.stats.created
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.correlator.update_state(key, &written);
                    return;
                }
                Attempt::GiveUp(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    let already = matches!(&e, kube::Error::Api(s) if s.is_already_exists());
                    if already {
                        debug!(event = %what, "event already exists; not retried");
                    } else {
                        warn!(event = %what, error = %crate::errors::error_chain(&e), "server rejected event (will not retry)");
                    }
                    return;
                }
                Attempt::Retry(e) => {
                    if tries == MAX_TRIES {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        warn!(event = %what, error = %crate::errors::error_chain(&e), "unable to write event (retry limit exceeded)");
                        return;
                    }
                    debug!(event = %what, tries, error = %crate::errors::error_chain(&e), "unable to write event (may retry after sleeping)");
                }
            }
            // The first retry is jittered so that nodes coming back together spread out.
            let delay = if tries == 1 {
                RETRY_SLEEP.mul_f64(unit_random())
            } else {
                RETRY_SLEEP
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn attempt(&self, event: &Event, patch: Option<&serde_json::Value>) -> Attempt {
        let ns = event.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        if let Some(p) = patch {
            let name = event.metadata.name.as_deref().unwrap_or("");
            match api
                .patch(name, &PatchParams::default(), &Patch::Strategic(p))
                .await
            {
                Ok(e) => return Attempt::Done(Box::new(e)),
                // The first occurrence is gone (expired, deleted): create it afresh below.
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return classify(e),
            }
        }
        let mut fresh = event.clone();
        fresh.metadata.resource_version = None;
        match api.create(&PostParams::default(), &fresh).await {
            Ok(e) => Attempt::Done(Box::new(e)),
            Err(e) => classify(e),
        }
    }
}

/// A status from the server is final; anything else (transport, timeouts) may pass.
fn classify(e: kube::Error) -> Attempt {
    match e {
        kube::Error::Api(_) | kube::Error::SerdeError(_) => Attempt::GiveUp(e),
        _ => Attempt::Retry(e),
    }
}

/// A number in [0, 1) from std's per-process random hash keys (no rand crate for one jitter).
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
