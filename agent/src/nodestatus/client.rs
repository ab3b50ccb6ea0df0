//! The API calls node status makes, each with a deadline and an error that names the call and
//! the object. One kube-rs client from `--kubeconfig` serves registration, status and the lease.

use super::NodeStatusError;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// The namespace of node leases (v1.NamespaceNodeLease).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Node and Lease calls for one node, with a per-call deadline.
#[derive(Clone)]
pub struct ApiClient {
    nodes: kube::Api<Node>,
    leases: kube::Api<Lease>,
    timeout: Duration,
}

impl ApiClient {
    /// A client from the kubeconfig at `path`; every call gives up after `timeout` (the
    /// kubelet's heartbeat client timeout: nodeStatusUpdateFrequency, at most the lease
    /// duration), so a hung API server cannot stall the heartbeats.
    pub async fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<Self, NodeStatusError> {
        let client = crate::config::apiserver::client(path, Some(timeout)).await?;
        Ok(ApiClient {
            nodes: kube::Api::all(client.clone()),
            leases: kube::Api::namespaced(client, LEASE_NAMESPACE),
            timeout,
        })
    }

    async fn call<T>(
        &self,
        call: &'static str,
        object: impl Fn() -> String,
        f: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, NodeStatusError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(NodeStatusError::Api {
                call,
                object: object(),
                source,
            }),
            Err(_) => Err(NodeStatusError::Timeout {
                call,
                object: object(),
                after: self.timeout,
            }),
        }
    }

    /// POST a Node.
    pub async fn create_node(&self, node: &Node) -> Result<Node, NodeStatusError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.call(
            "create",
            || format!("node {name}"),
            self.nodes.create(&PostParams::default(), node),
        )
        .await
    }

    /// GET a Node.
    pub async fn get_node(&self, name: &str) -> Result<Node, NodeStatusError> {
        self.call("get", || format!("node {name}"), self.nodes.get(name))
            .await
    }

    /// Strategic merge PATCH of a Node's status subresource.
    pub async fn patch_node_status(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Node, NodeStatusError> {
        self.call(
            "patch status of",
            || format!("node {name}"),
            self.nodes
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)),
        )
        .await
    }

    /// GET a Lease in [`LEASE_NAMESPACE`].
    pub async fn get_lease(&self, name: &str) -> Result<Lease, NodeStatusError> {
        self.call(
            "get",
            || format!("lease {LEASE_NAMESPACE}/{name}"),
            self.leases.get(name),
        )
        .await
    }

    /// POST a Lease.
    pub async fn create_lease(&self, lease: &Lease) -> Result<Lease, NodeStatusError> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.call(
            "create",
            || format!("lease {LEASE_NAMESPACE}/{name}"),
            self.leases.create(&PostParams::default(), lease),
        )
        .await
    }

    /// PUT a Lease (optimistic concurrency on its resourceVersion).
    pub async fn update_lease(&self, lease: &Lease) -> Result<Lease, NodeStatusError> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.call(
            "update",
            || format!("lease {LEASE_NAMESPACE}/{name}"),
            self.leases.replace(&name, &PostParams::default(), lease),
        )
        .await
    }
}
