//! The kubelet's event reasons (pkg/kubelet/events/event.go, v1.37) by the kubelet's names,
//! and the kubelet's messages for them, so that call sites stay one line and the wording lives
//! in one place. Admission refusals and evictions use the verdict's own reason (`OutOfcpu`,
//! `Evicted`...), see [`verdict`].

use super::EventType::{self, Normal, Warning};
use crate::pod::PodRef;
use std::fmt::Display;
use std::time::Duration;

/// A container was created.
pub const CREATED_CONTAINER: &str = "Created";
/// A container was started.
pub const STARTED_CONTAINER: &str = "Started";
/// Creating or starting a container, or pulling its image, failed.
pub const FAILED: &str = "Failed";
/// A container is being stopped.
pub const KILLING_CONTAINER: &str = "Killing";
/// A crash-looping container or a failing image pull waits on its back-off.
pub const BACK_OFF: &str = "BackOff";
/// Stopping the pod failed.
pub const FAILED_KILL_POD: &str = "FailedKillPod";
/// An image pull starts.
pub const PULLING_IMAGE: &str = "Pulling";
/// An image was pulled, or is already present.
pub const PULLED_IMAGE: &str = "Pulled";
/// The image is absent and the pull policy is Never.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// The node became Ready.
pub const NODE_READY: &str = "NodeReady";
/// The node is no longer Ready.
pub const NODE_NOT_READY: &str = "NodeNotReady";
/// The agent started (BirthCry).
pub const STARTING: &str = "Starting";
/// Volumes could not be set up.
pub const FAILED_MOUNT: &str = "FailedMount";
/// The pod's sandbox died and is replaced.
pub const SANDBOX_CHANGED: &str = "SandboxChanged";
/// RunPodSandbox failed.
pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
/// A probe failed or could not be run.
pub const CONTAINER_UNHEALTHY: &str = "Unhealthy";
/// A probe passed with a warning (a redirect to another host).
pub const CONTAINER_PROBE_WARNING: &str = "ProbeWarning";
/// A postStart hook failed; the container is killed.
pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
/// The pod ran past its activeDeadlineSeconds.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// The message of [`DEADLINE_EXCEEDED`] (active_deadline.go).
pub const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";
/// A preStop hook failed; the container is stopped anyway.
pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";

/// An event's type, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

fn m(type_: EventType, reason: &str, message: String) -> Message {
    Message {
        type_,
        reason: reason.to_owned(),
        message,
    }
}

/// BirthCry: `Starting kubelet.`
pub fn starting() -> Message {
    m(Normal, STARTING, "Starting kubelet.".into())
}

/// An image pull starts.
pub fn pulling(image: &str) -> Message {
    m(Normal, PULLING_IMAGE, format!("Pulling image {image:?}"))
}

/// An image was pulled (the kubelet adds the image size, which PullImage does not return).
pub fn pulled(image: &str, took: Duration) -> Message {
    let message =
        format!("Successfully pulled image {image:?} in {took:.3?} ({took:.3?} including waiting)");
    m(Normal, PULLED_IMAGE, message)
}

/// The image is present and the policy does not ask for a pull.
pub fn already_present(image: &str) -> Message {
    let message = format!("Container image {image:?} already present on machine");
    m(Normal, PULLED_IMAGE, message)
}

/// A pull failed.
pub fn pull_failed(image: &str, error: impl Display) -> Message {
    let message = format!("Failed to pull image {image:?}: {error}");
    m(Warning, FAILED, message)
}

/// The image is absent and the pull policy is Never.
pub fn never_pull(image: &str) -> Message {
    let message = format!("Container image {image:?} is not present with pull policy of Never");
    m(Warning, ERR_IMAGE_NEVER_PULL, message)
}

/// The next pull waits on the image back-off.
pub fn pull_back_off(image: &str) -> Message {
    m(
        Normal,
        BACK_OFF,
        format!("Back-off pulling image {image:?}"),
    )
}

/// A container could not be started: `Error: <why>` (ErrImagePull, ImagePullBackOff, the
/// runtime's error...).
pub fn error(why: impl Display) -> Message {
    m(Warning, FAILED, format!("Error: {why}"))
}

/// A container was created.
pub fn created() -> Message {
    m(Normal, CREATED_CONTAINER, "Container created".into())
}

/// A container was started.
pub fn started() -> Message {
    m(Normal, STARTED_CONTAINER, "Container started".into())
}

/// A container is stopped.
pub fn killing(container: &str) -> Message {
    let message = format!("Stopping container {container}");
    m(Normal, KILLING_CONTAINER, message)
}

/// A container is stopped for a reason of the agent's (a failed liveness or startup probe):
/// the kubelet's killContainer message, e.g. "Container c failed liveness probe, will be restarted".
pub fn killing_because(message: &str) -> Message {
    m(Normal, KILLING_CONTAINER, message.to_owned())
}

/// A probe failed (prober.go): "Liveness probe failed: <output>".
pub fn unhealthy(probe_type: &str, output: &str) -> Message {
    m(
        Warning,
        CONTAINER_UNHEALTHY,
        format!("{probe_type} probe failed: {output}"),
    )
}

/// A probe could not be run (prober.go); the previous result stands.
pub fn probe_errored(probe_type: &str, error: &str) -> Message {
    let message = format!("{probe_type} probe errored and resulted in unknown state: {error}");
    m(Warning, CONTAINER_UNHEALTHY, message)
}

/// A probe passed with a warning (prober.go): "Readiness probe warning: <output>".
pub fn probe_warning(probe_type: &str, output: &str) -> Message {
    m(
        Warning,
        CONTAINER_PROBE_WARNING,
        format!("{probe_type} probe warning: {output}"),
    )
}

/// A postStart hook failed. The kubelet keeps the hook's output out of the event, so that
/// secrets do not leak to the API server.
pub fn failed_post_start_hook() -> Message {
    m(
        Warning,
        FAILED_POST_START_HOOK,
        "PostStartHook failed".into(),
    )
}

/// A preStop hook failed (its output kept out of the event, as for postStart).
pub fn failed_pre_stop_hook() -> Message {
    m(Warning, FAILED_PRE_STOP_HOOK, "PreStopHook failed".into())
}

/// A crashed container waits on its back-off (the pod named as format.Pod does).
pub fn crash_back_off(container: &str, pod: &PodRef) -> Message {
    let (name, ns, uid) = (&pod.name, &pod.namespace, &pod.uid);
    let message =
        format!("Back-off restarting failed container {container} in pod {name}_{ns}({uid})");
    m(Warning, BACK_OFF, message)
}

/// The pod's sandbox is replaced.
pub fn sandbox_changed() -> Message {
    let message = "Pod sandbox changed, it will be killed and re-created.".into();
    m(Normal, SANDBOX_CHANGED, message)
}

/// RunPodSandbox failed.
pub fn failed_create_sandbox(error: impl Display) -> Message {
    let message = format!("Failed to create pod sandbox: {error}");
    m(Warning, FAILED_CREATE_POD_SANDBOX, message)
}

/// The pod's volumes could not be set up.
pub fn failed_mount(error: impl Display) -> Message {
    let message = format!("Unable to attach or mount volumes: {error}");
    m(Warning, FAILED_MOUNT, message)
}

/// Stopping the pod failed.
pub fn failed_kill_pod(error: impl Display) -> Message {
    m(
        Warning,
        FAILED_KILL_POD,
        format!("error killing pod: {error}"),
    )
}

/// A node-side verdict (admission refusal, eviction): Warning with the verdict's reason; the
/// active deadline's is Normal, as the kubelet's activeDeadlineHandler records it.
pub fn verdict(reason: &str, message: &str) -> Message {
    let type_ = if reason == DEADLINE_EXCEEDED {
        Normal
    } else {
        Warning
    };
    m(type_, reason, message.to_owned())
}

/// The event node status records when a condition takes `status` (the kubelet's setters; all
/// Normal): `Node <name> status is now: <reason>`.
pub fn node_condition(node: &str, type_: &str, status: &str) -> Option<Message> {
    let reason = match (type_, status == "True") {
        ("Ready", true) => NODE_READY,
        ("Ready", false) => NODE_NOT_READY,
        ("MemoryPressure", true) => "NodeHasInsufficientMemory",
        ("MemoryPressure", false) => "NodeHasSufficientMemory",
        ("DiskPressure", true) => "NodeHasDiskPressure",
        ("DiskPressure", false) => "NodeHasNoDiskPressure",
        ("PIDPressure", true) => "NodeHasInsufficientPID",
        ("PIDPressure", false) => "NodeHasSufficientPID",
        _ => return None,
    };
    Some(m(
        Normal,
        reason,
        format!("Node {node} status is now: {reason}"),
    ))
}

/// The kernel OOM-killed a process (node-problem-detector's reason, which operators' alerts
/// already match; the kubelet itself records only `SystemOOM`, for kills outside any pod).
pub const OOM_KILLING: &str = "OOMKilling";

/// A container's process was OOM-killed: a Warning on the node, as node-problem-detector
/// raises it, naming the process and where it ran.
pub fn oom_killing(process: &str, pid: Option<u32>, whereabouts: &str) -> Message {
    let pid = pid.map_or_else(|| "?".to_string(), |p| p.to_string());
    m(
        Warning,
        OOM_KILLING,
        format!("Memory cgroup out of memory: Killed process {pid} ({process}) in {whereabouts}"),
    )
}

/// Reason of the event naming pod fields nodelet ignores (nodelet's own; the kubelet has none).
pub const UNSUPPORTED_FIELDS: &str = "UnsupportedFields";

/// A pod sets fields nodelet does not implement yet.
pub fn unsupported_fields(fields: &[String]) -> Message {
    m(
        Warning,
        UNSUPPORTED_FIELDS,
        format!(
            "nodelet does not implement {}: the pod runs as if they were not set",
            fields.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_kubelets() {
        let pod = PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        assert_eq!(
            crash_back_off("c", &pod).message,
            "Back-off restarting failed container c in pod web_default(u1)"
        );
        assert_eq!(
            pulling("busybox:1.35").message,
            "Pulling image \"busybox:1.35\""
        );
        assert_eq!(error("ErrImagePull").message, "Error: ErrImagePull");
        assert_eq!(error("ErrImagePull").type_, Warning);
        let ready = node_condition("n1", "Ready", "True");
        assert_eq!(ready.map(|r| r.reason), Some(NODE_READY.to_owned()));
        assert_eq!(node_condition("n1", "NetworkUnavailable", "True"), None);
    }
}
