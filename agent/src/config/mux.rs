//! Merges the config sources into one desired set (kubelet pkg/kubelet/config/config.go
//! PodConfig with its mux and SourcesReady).
//!
//! A source's pods are acted on as soon as that source reports, so static pods start while
//! the API server is still unreachable (the reason static pods exist); but the set says
//! `all_sources_seen` only once every configured source has delivered its first full set,
//! and until then nothing that runs is removed for being unwanted.

use super::{DesiredPods, PodSet, SourceSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The union of the sources that have reported; `None` until one has.
pub fn merge(sources: &[Option<SourceSet>]) -> Option<DesiredPods> {
    if sources.iter().all(Option::is_none) {
        return None;
    }
    let mut out = DesiredPods {
        pods: Default::default(),
        all_sources_seen: sources.iter().all(Option::is_some),
    };
    for set in sources.iter().flatten() {
        out.pods
            .extend(set.iter().map(|(uid, p)| (uid.clone(), p.clone())));
    }
    Some(out)
}

/// Publishes the merged set on `tx` on every change of a source until cancelled. With no
/// source at all, the empty set is published at once, complete.
pub async fn run(
    sources: Vec<watch::Receiver<Option<SourceSet>>>,
    tx: watch::Sender<Option<PodSet>>,
    cancel: CancellationToken,
) {
    let mut sources: Vec<Option<watch::Receiver<Option<SourceSet>>>> =
        sources.into_iter().map(Some).collect();
    // A source that stopped keeps its last set.
    let mut now: Vec<Option<SourceSet>> = vec![None; sources.len()];
    loop {
        for (slot, s) in now.iter_mut().zip(sources.iter_mut()) {
            if let Some(rx) = s.as_mut() {
                *slot = rx.borrow_and_update().clone();
            }
        }
        let merged = if now.is_empty() {
            Some(DesiredPods {
                all_sources_seen: true,
                ..Default::default()
            })
        } else {
            merge(&now)
        };
        if let Some(m) = merged {
            tx.send_if_modified(|cur| {
                if cur.as_deref() == Some(&m) {
                    return false;
                }
                debug!(
                    pods = m.len(),
                    all_sources_seen = m.all_sources_seen,
                    "desired pod set changed"
                );
                *cur = Some(Arc::new(m));
                true
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            i = any_changed(&mut sources) => {
                if let Some(i) = i { sources[i] = None; }
            }
        }
    }
}

/// Waits for a change of any source; `Some(i)` when source `i` closed instead.
async fn any_changed(sources: &mut [Option<watch::Receiver<Option<SourceSet>>>]) -> Option<usize> {
    let waits = sources.iter_mut().enumerate().filter_map(|(i, s)| {
        let rx = s.as_mut()?;
        Some(Box::pin(async move { rx.changed().await.err().map(|_| i) }))
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    poll_first(waits).await
}

/// The first of several futures to finish.
async fn poll_first<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> F::Output {
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{DesiredPod, PodRef, PodSource};
    use std::collections::BTreeMap;

    fn set(uids: &[&str]) -> SourceSet {
        let pods = uids
            .iter()
            .map(|u| {
                let p = DesiredPod {
                    pod_ref: PodRef {
                        namespace: "ns".into(),
                        name: format!("p-{u}"),
                        uid: (*u).into(),
                    },
                    pod: Default::default(),
                    source: PodSource::Api,
                };
                ((*u).to_string(), Arc::new(p))
            })
            .collect::<BTreeMap<_, _>>();
        Arc::new(pods)
    }

    #[test]
    fn a_source_acts_at_once_but_removal_waits_for_every_source() {
        assert_eq!(merge(&[None, None]), None);
        let first = merge(&[Some(set(&["a"])), None]).expect("one source spoke");
        assert!(first.contains_key("a"));
        assert!(!first.all_sources_seen);
        let both = merge(&[Some(set(&["a"])), Some(set(&["b", "c"]))]).expect("both");
        assert!(both.all_sources_seen);
        assert_eq!(both.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn changes_of_either_source_are_published_and_no_source_means_complete_and_empty() {
        let (tx, mut rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(vec![], tx, cancel.clone()));
        rx.changed().await.expect("published");
        assert!(
            rx.borrow()
                .as_ref()
                .is_some_and(|s| s.all_sources_seen && s.is_empty())
        );
        cancel.cancel();
        task.await.expect("stops");

        let (file_tx, file_rx) = watch::channel(None);
        let (api_tx, api_rx) = watch::channel(None);
        let (tx, mut rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(vec![file_rx, api_rx], tx, cancel.clone()));
        file_tx.send_replace(Some(set(&["s"])));
        rx.changed().await.expect("file set");
        assert!(
            rx.borrow()
                .as_ref()
                .is_some_and(|s| !s.all_sources_seen && s.len() == 1)
        );
        api_tx.send_replace(Some(set(&["x", "y"])));
        rx.changed().await.expect("api set");
        assert!(
            rx.borrow()
                .as_ref()
                .is_some_and(|s| s.all_sources_seen && s.len() == 3)
        );
        drop(api_tx);
        file_tx.send_replace(Some(set(&[])));
        rx.changed().await.expect("file emptied");
        assert!(
            rx.borrow()
                .as_ref()
                .is_some_and(|s| s.all_sources_seen && s.len() == 2)
        );
        cancel.cancel();
        task.await.expect("stops");
    }
}
