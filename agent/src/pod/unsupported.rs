//! Pod fields nodelet does not act on yet. The kubelet implements them, so a pod that sets
//! one would silently run differently here: each is reported once per pod (a log line and a
//! Warning event naming the fields), never ignored in silence. Fields the API server defaults
//! on every pod (terminationMessagePath, resizePolicy...) are left out: naming them would be
//! noise on every pod.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The set fields of `pod` nodelet ignores, as field paths (`spec.runtimeClassName`,
/// `spec.containers[0].volumeDevices`).
pub fn unsupported_fields(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut pod_field = |set: bool, name: &str| {
        if set {
            out.push(format!("spec.{name}"));
        }
    };
    let non_empty = |v: Option<usize>| v.is_some_and(|n| n > 0);
    pod_field(spec.host_users == Some(false), "hostUsers");
    pod_field(
        non_empty(spec.resource_claims.as_ref().map(Vec::len)),
        "resourceClaims",
    );
    pod_field(
        spec.runtime_class_name
            .as_deref()
            .is_some_and(|s| !s.is_empty()),
        "runtimeClassName",
    );
    pod_field(spec.overhead.is_some(), "overhead");
    pod_field(spec.resources.is_some(), "resources");
    let lists: [(&str, &[Container]); 2] = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", &spec.containers),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let mut field = |set: bool, name: &str| {
                if set {
                    out.push(format!("spec.{list}[{i}].{name}"));
                }
            };
            field(
                non_empty(c.volume_devices.as_ref().map(Vec::len)),
                "volumeDevices",
            );
            field(
                c.resources
                    .as_ref()
                    .and_then(|r| r.claims.as_ref())
                    .is_some_and(|v| !v.is_empty()),
                "resources.claims",
            );
            // Restarting the whole pod on one container's exit (RestartAllContainers); such a
            // rule falls back to the container's own policy here.
            field(
                c.restart_policy_rules
                    .iter()
                    .flatten()
                    .any(|r| r.action == "RestartAllContainers"),
                "restartPolicyRules",
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_are_named_and_defaults_are_not() {
        let plain: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "terminationMessagePath": "/dev/termination-log",
             "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]}
        ], "hostUsers": true, "resourceClaims": [], "activeDeadlineSeconds": 5,
           "initContainers": [{"name": "side", "restartPolicy": "Always",
                               "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}]}}))
        .expect("pod json");
        assert!(unsupported_fields(&plain).is_empty());
        let odd: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "readinessGates": [{"conditionType": "x"}],
            "runtimeClassName": "gvisor",
            "hostUsers": false,
            "containers": [{"name": "c", "volumeDevices": [{"name": "d", "devicePath": "/dev/x"}]},
                           {"name": "r", "restartPolicy": "Never", "restartPolicyRules": [
                               {"action": "Restart", "exitCodes": {"operator": "In", "values": [3]}},
                               {"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [4]}}]}]
        }}))
        .expect("pod json");
        assert_eq!(
            unsupported_fields(&odd),
            [
                "spec.hostUsers",
                "spec.runtimeClassName",
                "spec.containers[0].volumeDevices",
                "spec.containers[1].restartPolicyRules",
            ]
        );
    }
}
