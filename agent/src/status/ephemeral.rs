//! `status.ephemeralContainerStatuses` (generateAPIPodStatus: convertToAPIContainerStatuses
//! over the ephemeral containers' common fields). An ephemeral container is never ready and
//! has no probes, so no `started`; a never-started one waits as the pod's containers do.

use super::generate::{Waiting, container_status};
use crate::kuberuntime::ephemeral;
use crate::kuberuntime::state::PodRuntimeState;
use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec};

/// The statuses of `spec`'s ephemeral containers, in spec order; `None` when it has none.
pub fn statuses(
    spec: &PodSpec,
    rt: &PodRuntimeState,
    waiting: &Waiting,
) -> Option<Vec<ContainerStatus>> {
    let has_inits = spec.init_containers.as_ref().is_some_and(|v| !v.is_empty());
    let out: Vec<ContainerStatus> = ephemeral::containers(spec)
        .iter()
        .map(|c| ContainerStatus {
            ready: false,
            started: None,
            ..container_status(c, rt, waiting, false, has_inits)
        })
        .collect();
    (!out.is_empty()).then_some(out)
}
