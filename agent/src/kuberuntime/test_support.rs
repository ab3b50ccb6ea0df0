//! A node context for unit tests of the container and sandbox builders.

use super::NodeContext;
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
