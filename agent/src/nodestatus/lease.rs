//! The node Lease heartbeat (k8s.io/component-helpers/apimachinery/lease controller.go, as the
//! kubelet runs it): `kube-node-lease/<node>`, holder the node, renewed every quarter of its
//! duration with 4 % jitter; an update from the last Lease written, and when that fails a
//! read-or-create with the kubelet's back-off. The owner reference to the Node
//! (SetNodeOwnerFunc) is filled in as soon as the Node can be read, so the lease goes when the
//! Node is deleted; a Lease is not created before the Node exists.

use super::client::{ApiClient, LEASE_NAMESPACE};
use super::{Backoff, Failing, NodeStatusError};
use crate::wait::jitter;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// The renew interval as a fraction of the lease duration (nodeLeaseRenewIntervalFraction).
const RENEW_FRACTION: f64 = 0.25;

struct LeaseLoop {
    api: ApiClient,
    node: String,
    duration_seconds: i32,
    latest: Option<Lease>,
    failing: Failing,
}

/// Renews the lease until `cancel`. The lease is left in place on exit, as by the kubelet: a
/// restarted agent renews it, a dead one lets it expire.
pub(super) async fn run(
    api: ApiClient,
    node: String,
    duration_seconds: u32,
    cancel: CancellationToken,
) {
    let renew = Duration::from_secs(u64::from(duration_seconds)).mul_f64(RENEW_FRACTION);
    let mut l = LeaseLoop {
        api,
        node,
        duration_seconds: i32::try_from(duration_seconds).unwrap_or(i32::MAX),
        latest: None,
        failing: Failing::default(),
    };
    info!(node = %l.node, namespace = LEASE_NAMESPACE, ?renew, duration_seconds, "node lease heartbeat starts");
    loop {
        if !l.sync(&cancel).await {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(jitter(renew, 0.04)) => {}
        }
    }
}

impl LeaseLoop {
    /// One renewal; false if cancelled meanwhile.
    async fn sync(&mut self, cancel: &CancellationToken) -> bool {
        if let Some(base) = self.latest.take() {
            match self.update(base).await {
                Ok(()) => return true,
                Err(e) => {
                    debug!(error = %super::chain(&e), "renewing from the last lease failed; reading it again")
                }
            }
        }
        let mut backoff = Backoff::new();
        loop {
            match self.ensure().await {
                Ok((lease, true)) => {
                    self.failing.succeeded("node lease renewal");
                    info!(node = %self.node, "created node lease");
                    self.latest = Some(lease);
                    return true;
                }
                Ok((lease, false)) => match self.update(lease).await {
                    Ok(()) => return true,
                    Err(e) => self.failing.failed("renewing the node lease", &e),
                },
                // Only the Node can be missing here (a missing lease is created): it is being
                // registered, which is no failure worth a warning.
                Err(e) if e.is_not_found() => {
                    debug!(node = %self.node, "the Node is not registered yet; the lease waits for it");
                }
                Err(e) => self
                    .failing
                    .failed("reading or creating the node lease", &e),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// The lease as it is, or a new one (true) if there was none.
    async fn ensure(&self) -> Result<(Lease, bool), NodeStatusError> {
        match self.api.get_lease(&self.node).await {
            Ok(l) => Ok((l, false)),
            Err(e) if e.is_not_found() => {
                let lease = self.renewed(None).await?;
                Ok((self.api.create_lease(&lease).await?, true))
            }
            Err(e) => Err(e),
        }
    }

    /// PUTs a renewed copy of `base`; on a conflict once more from a fresh read.
    async fn update(&mut self, base: Lease) -> Result<(), NodeStatusError> {
        let lease = self.renewed(Some(base)).await?;
        let written = match self.api.update_lease(&lease).await {
            Err(e) if e.is_conflict() => {
                let fresh = self.api.get_lease(&self.node).await?;
                let lease = self.renewed(Some(fresh)).await?;
                self.api.update_lease(&lease).await?
            }
            r => r?,
        };
        self.failing.succeeded("node lease renewal");
        debug!(node = %self.node, "renewed node lease");
        self.latest = Some(written);
        Ok(())
    }

    /// `base` (or a new lease) with renewTime now, the duration, and the owner reference.
    async fn renewed(&self, base: Option<Lease>) -> Result<Lease, NodeStatusError> {
        let mut lease = base.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.node.clone()),
                namespace: Some(LEASE_NAMESPACE.to_owned()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.node.clone()),
                ..Default::default()
            }),
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.lease_duration_seconds = Some(self.duration_seconds);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if lease
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
        {
            // Without the Node (not registered yet) there is no lease: the error stops this
            // round, as the kubelet's post-process function does.
            let node = self.api.get_node(&self.node).await?;
            lease.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.node.clone(),
                uid: node.metadata.uid.unwrap_or_default(),
                ..Default::default()
            }]);
        }
        Ok(lease)
    }
}
