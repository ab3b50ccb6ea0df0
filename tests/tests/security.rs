//! securityContext through CRI on real containerd (issue 14): the kubelet's runAsNonRoot
//! refusal, user, groups and fsGroup, seccomp, and the default masked and read-only /proc
//! paths, judged from inside the container.

use anyhow::{Context, Result};
use nodelet_tests::{Node, NodeOpts, listed_pod};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A busybox pod `name` (restartPolicy Never) running `script`, with `pod_sc` and `c_sc` as
/// the pod's and the container's securityContext (flow-style YAML).
fn pod(name: &str, pod_sc: &str, c_sc: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  \
         restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  securityContext: {pod_sc}\n  \
         containers:\n  - name: c\n    image: busybox:1.35\n    securityContext: {c_sc}\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

#[test]
fn security_context_reaches_the_container_and_run_as_non_root_refuses_root() -> Result<()> {
    let Some((node, ro)) = Node::start_with_read_only_port(NodeOpts::default())? else {
        return Ok(());
    };
    // busybox names no user: it would run as root, so runAsNonRoot refuses it.
    node.write_manifest(
        "root.yaml",
        &pod("implicit-root", "{runAsNonRoot: true}", "{}", "id -u"),
    )?;
    // An explicit root user breaks the policy whatever the image.
    node.write_manifest(
        "explicit-root.yaml",
        &pod(
            "explicit-root",
            "{runAsNonRoot: true}",
            "{runAsUser: 0}",
            "id -u",
        ),
    )?;
    // An explicit non-root user, fsGroup and supplemental groups, RuntimeDefault seccomp.
    let script = "id -u; id -G; grep Seccomp: /proc/self/status; \
                  wc -c < /proc/timer_list; \
                  if touch /proc/sys/kernel/hostname 2>/dev/null; then echo sys-rw; else echo sys-ro; fi";
    node.write_manifest(
        "user.yaml",
        &pod(
            "explicit-user",
            "{runAsNonRoot: true, fsGroup: 2000, supplementalGroups: [3000], \
             seccompProfile: {type: RuntimeDefault}}",
            "{runAsUser: 1000, runAsGroup: 1000, allowPrivilegeEscalation: false}",
            script,
        ),
    )?;
    // Unmasked /proc and no seccomp, for contrast.
    node.write_manifest(
        "unmasked.yaml",
        &pod(
            "unmasked",
            "{}",
            "{procMount: Unmasked, seccompProfile: {type: Unconfined}}",
            "grep Seccomp: /proc/self/status; wc -c < /proc/timer_list",
        ),
    )?;

    // An unsafe sysctl not allowed on the node refuses the pod (admission).
    node.write_manifest(
        "sysctl.yaml",
        &pod(
            "unsafe-sysctl",
            "{sysctls: [{name: kernel.msgmax, value: '10000000'}]}",
            "{}",
            "true",
        ),
    )?;
    let refused = node.wait("the unsafe sysctl refused", T, || {
        Ok(listed_pod(ro, "unsafe-sysctl")?.filter(|p| p["status"]["phase"] == "Failed"))
    })?;
    assert_eq!(
        refused["status"]["reason"], "SysctlForbidden",
        "{refused:#}"
    );
    assert_eq!(
        refused["status"]["message"],
        r#"forbidden sysctl: "kernel.msgmax" not allowlisted"#
    );

    // A field nodelet does not implement is named, never ignored in silence.
    node.write_manifest(
        "gated.yaml",
        &nodelet_tests::host_pod("gated", "Always", "sleep 3600")
            .replace("spec:\n", "spec:\n  runtimeClassName: example\n"),
    )?;
    node.wait("the unsupported field reported", T, || {
        let log = node.agent_log();
        Ok(log
            .lines()
            .find(|l| l.contains("reason=UnsupportedFields") && l.contains("gated-e2e-node"))
            .filter(|l| l.contains("nodelet does not implement spec.runtimeClassName"))
            .map(str::to_owned))
    })?;

    let refused = node.wait("implicit-root refused", T, || {
        Ok(listed_pod(ro, "implicit-root")?.filter(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "CreateContainerConfigError"
        }))
    })?;
    let message = refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let uid = refused["metadata"]["uid"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"implicit-root-e2e-node_default({uid})\", container: c)"
        )
    );
    let explicit = node.wait("explicit-root refused", T, || {
        Ok(listed_pod(ro, "explicit-root")?.filter(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "CreateContainerConfigError"
        }))
    })?;
    let message = explicit["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("container's runAsUser breaks non-root policy"),
        "{message}"
    );
    anyhow::ensure!(
        node.pod_containers("implicit-root")?.is_empty(),
        "nothing was created for the refused container"
    );

    for name in ["explicit-user", "unmasked"] {
        node.wait(&format!("{name} to succeed"), T, || {
            Ok(listed_pod(ro, name)?.filter(|p| p["status"]["phase"] == "Succeeded"))
        })?;
    }
    let out = node
        .container_log("default", "explicit-user", "c", 0)
        .context("explicit-user log")?;
    let lines: Vec<&str> = out
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect();
    println!("explicit-user:\n{}", lines.join("\n"));
    assert_eq!(lines.first().copied(), Some("1000"), "{out}");
    let groups: Vec<&str> = lines
        .get(1)
        .copied()
        .unwrap_or_default()
        .split(' ')
        .collect();
    for g in ["1000", "2000", "3000"] {
        assert!(groups.contains(&g), "group {g} in {groups:?}");
    }
    // Seccomp mode 2 is a filter: RuntimeDefault.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "{out}"
    );
    // A masked path reads empty; /proc/sys is read-only.
    assert!(lines.contains(&"0"), "timer_list masked: {out}");
    assert!(lines.contains(&"sys-ro"), "{out}");

    let out = node
        .container_log("default", "unmasked", "c", 0)
        .context("unmasked log")?;
    println!("unmasked:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("Seccomp:") && l.ends_with('0')),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.ends_with(" 0") && !l.contains("Seccomp")),
        "timer_list readable when unmasked: {out}"
    );
    Ok(())
}
