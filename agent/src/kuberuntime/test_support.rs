//! Fixtures for unit tests: a node context for the container and sandbox builders, and
//! runtime records.

use super::NodeContext;
use super::state::{ContainerState, ContainerView};
use std::path::Path;

/// A standalone node `n1` (10.0.0.1, 1 GiB, 2 CPUs) rooted at `root`; nothing is created.
pub fn node_context(root: &Path) -> NodeContext {
    let opts = crate::options::Options::from_args(
        ["nodelet", "--hostname-override", "n1"]
            .into_iter()
            .map(String::from),
    )
    .expect("fixed flags resolve");
    NodeContext {
        node_name: "n1".into(),
        host_ip: "10.0.0.1".into(),
        pod_logs_dir: root.join("logs"),
        root_dir: root.to_path_buf(),
        cluster_dns: Vec::new(),
        cluster_domain: None,
        host_dns: Default::default(),
        cm: crate::cm::ContainerManager::new(&opts),
        memory_capacity: 1 << 30,
        cpu_capacity_milli: 2000,
        volumes: crate::volumemanager::VolumeManager::new(None, root.to_path_buf()),
        recorder: crate::recorder::Recorder::logging_only(),
        seccomp_default: false,
        services: Default::default(),
    }
}

/// A runtime record of container `name` (id `id`, in sandbox `sandbox_id`) in `state`; the rest
/// empty or zero, created at 1.
pub fn container_view(
    id: &str,
    name: &str,
    state: ContainerState,
    sandbox_id: &str,
) -> ContainerView {
    ContainerView {
        id: id.into(),
        name: name.into(),
        restart_count: 0,
        state,
        created_at: 1,
        exit_code: 0,
        started_at: None,
        finished_at: None,
        reason: String::new(),
        message: String::new(),
        image: String::new(),
        image_ref: String::new(),
        hash: None,
        grace: None,
        sandbox_id: sandbox_id.into(),
    }
}
