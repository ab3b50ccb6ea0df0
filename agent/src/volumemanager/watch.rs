//! One watch per referenced ConfigMap or Secret, as the kubelet's default
//! `configMapAndSecretChangeDetectionStrategy: Watch` (pkg/kubelet/util/manager/
//! watch_based_manager.go): a list-then-watch of the single object (`fieldSelector
//! metadata.name=<name>`, which the node authorizer allows for objects a pod bound to the node
//! references), started when the first pod references it and stopped when the last one goes.
//! Each change replaces the cache entry; nothing polls.

use super::objects::{Answer, Kind, ObjKey, Object};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;
use tokio_stream::StreamExt;
use tracing::debug;

/// Where a watch puts what it learns: the object's current answer.
pub type Store = Arc<dyn Fn(&ObjKey, Answer) + Send + Sync>;

/// Starts the watch of `key` on the current tokio runtime; `None` outside one (unit tests
/// that never reach an API server), where the cache falls back to its TTL.
pub fn start(client: kube::Client, key: ObjKey, store: Store) -> Option<tokio::task::AbortHandle> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let task = match key.kind {
        Kind::ConfigMap => rt.spawn(run(
            kube::Api::<ConfigMap>::namespaced(client, &key.namespace),
            key,
            store,
            |o| Object::ConfigMap(Arc::new(o)),
        )),
        Kind::Secret => rt.spawn(run(
            kube::Api::<Secret>::namespaced(client, &key.namespace),
            key,
            store,
            |o| Object::Secret(Arc::new(o)),
        )),
    };
    Some(task.abort_handle())
}

async fn run<K>(api: kube::Api<K>, key: ObjKey, store: Store, wrap: fn(K) -> Object)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    // The watcher relists on 410 Gone and backs off on errors by itself.
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut listed = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listed = false,
            Ok(Event::InitApply(o)) => {
                listed = true;
                store(&key, Ok(Some(wrap(o))));
            }
            // A list without the object: it does not exist (yet).
            Ok(Event::InitDone) if !listed => store(&key, Ok(None)),
            Ok(Event::InitDone) => {}
            Ok(Event::Apply(o)) => store(&key, Ok(Some(wrap(o)))),
            Ok(Event::Delete(_)) => store(&key, Ok(None)),
            // Kept out of the cache: the last good answer stays in use while the API server
            // is away, as the kubelet's reflector keeps its store.
            Err(e) => debug!(object = %key, error = %e, "watch failed; retrying with back-off"),
        }
    }
}
