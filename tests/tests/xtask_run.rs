//! `cargo xtask run` end to end, through the library flow the command runs
//! ([`xtask::run::Session`]): the example pods start, Ctrl-C leaves nothing behind, and the
//! example set-up serves nothing without authentication.

use anyhow::{Context, Result, bail};
use nodelet_tests::*;
use proto::runtime::v1 as cri;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use xtask::cluster::{Cluster, ClusterOpts};
use xtask::run::{ClusterJoin, Session, SessionOpts};

const T: Duration = Duration::from_secs(90);
const NODE_NAME: &str = "xtask-run-e2e";

/// A session as `cargo xtask run` starts one, on its own ports (tests run in parallel); `None`
/// after a skip.
fn start(
    manifests: &Path,
    log: &Path,
    node_name: &str,
    cluster: Option<ClusterJoin>,
) -> Result<Option<(Session, u16)>> {
    let Some(bin) = xtask::testing::nodelet_bin_or_skip()? else {
        return Ok(None);
    };
    if let Some(why) = xtask::testing::containerd_unavailable() {
        skip(&why)?;
        return Ok(None);
    }
    for p in ["curl", "openssl"] {
        if !have(p) {
            skip(&format!("{p} is not installed"))?;
            return Ok(None);
        }
    }
    let port = free_port()?;
    let session = Session::start(SessionOpts {
        bin,
        manifests: manifests.to_owned(),
        node_name: node_name.to_owned(),
        args: vec![
            format!("--port={port}"),
            format!("--healthz-port={}", free_port()?),
            "--v=4".to_owned(),
            // As the kit's nodes: no disk thresholds and no image GC. The machine's disk reports
            // 252G with a fraction usable, so two CI runs side by side pushed imagefs.available
            // under the default 15 %: DiskPressure then refused the API pod (seen in a --busy run).
            "--eviction-hard=memory.available<100Mi".to_owned(),
            "--image-gc-high-threshold=100".to_owned(),
        ],
        agent_log: Some(log.to_owned()),
        env: xtask::EnvOpts::default(),
        cluster,
    })?;
    Ok(Some((session, port)))
}

fn examples() -> PathBuf {
    xtask::workspace_root().join("examples/static-pods")
}

fn agent_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `what` with the agent's log, for a failed wait.
fn with_log<T>(r: Result<T>, log: &Path) -> Result<T> {
    r.with_context(|| format!("agent log:\n{}", agent_log(log)))
}

/// Containers and sandboxes of the session's runtime.
fn cri_state(session: &Session) -> Result<(Vec<cri::Container>, Vec<cri::PodSandbox>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = proto::Client::connect(session.env().socket()).await?;
        let mut r = client.runtime();
        let cs = r
            .list_containers(cri::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers;
        let sbs = r
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        Ok((cs, sbs))
    })
}

/// /sys/fs/cgroup/<hierarchy> dirs, plus the root itself on a pure cgroup v2 host.
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.push(root.to_owned());
    out
}

#[test]
fn example_pods_run_and_ctrl_c_leaves_nothing_behind() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("agent.log");
    let Some((session, _)) = start(&examples(), &log, NODE_NAME, None)? else {
        return Ok(());
    };
    // Both example pods run: hello on the host network, web on the CNI bridge.
    let wanted = [("hello", "hello"), ("web", "httpd")];
    let sandboxes = with_log(
        wait_for("the example pods running", T, || {
            let (cs, sbs) = cri_state(&session)?;
            let running = wanted.iter().all(|(pod, c)| {
                cs.iter().any(|x| {
                    x.state == running()
                        && x.labels.get(POD_NAME_LABEL) == Some(&format!("{pod}-{NODE_NAME}"))
                        && x.labels.get(CONTAINER_NAME_LABEL).map(String::as_str) == Some(*c)
                })
            });
            Ok(running.then_some(sbs))
        }),
        &log,
    )?;
    let pods: Vec<(String, String, String)> = sandboxes
        .iter()
        .filter_map(|s| s.metadata.clone())
        .map(|m| (m.namespace, m.name, m.uid))
        .collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    let dir = session.env().dir().to_owned();
    let bridge = session.env().bridge();
    let leases = Path::new("/var/lib/cni/networks").join(session.env().network_name());
    let cgroup_root = session.cgroup_root().to_owned();

    // Everything the pods made is where the session can remove it: under its dir and cgroup.
    let mut made = Vec::new();
    for (ns, name, uid) in &pods {
        let logs = session.logs_dir().join(format!("{ns}_{name}_{uid}"));
        let pod_dir = session.root_dir().join("pods").join(uid);
        assert!(logs.is_dir(), "{} missing", logs.display());
        assert!(pod_dir.is_dir(), "{} missing", pod_dir.display());
        made.extend([logs, pod_dir]);
        // Not in the system-wide places a `cargo xtask run` used to leave behind.
        for outside in [
            Path::new("/var/log/pods").join(format!("{ns}_{name}_{uid}")),
            Path::new("/var/lib/kubelet/pods").join(uid),
        ] {
            assert!(!outside.exists(), "{} exists", outside.display());
        }
    }
    let memory = Path::new("/sys/fs/cgroup/memory").join(cgroup_root.trim_start_matches('/'));
    let unified = Path::new("/sys/fs/cgroup").join(cgroup_root.trim_start_matches('/'));
    assert!(
        memory.join("kubepods").is_dir() || unified.join("kubepods").is_dir(),
        "no kubepods cgroup under {cgroup_root}"
    );
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    let ids: Vec<String> = sandboxes.iter().map(|s| s.id.clone()).collect();

    // Ctrl-C: SIGINT to the agent (it leaves the pods running), then the session removes them.
    let removed = session.stop()?;
    let mut names: Vec<&str> = removed.pods.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("hello-{NODE_NAME}").as_str(),
            format!("web-{NODE_NAME}").as_str()
        ]
    );
    let log_text = agent_log(&log);
    assert!(
        log_text.contains("pods keep running"),
        "the agent stopped as the kubelet does:\n{log_text}"
    );

    let mut left: Vec<String> = Vec::new();
    let mut check = |p: &Path| {
        if p.exists() {
            left.push(p.display().to_string());
        }
    };
    check(&dir);
    for p in &made {
        check(p);
    }
    for (ns, name, uid) in &pods {
        check(&Path::new("/var/log/pods").join(format!("{ns}_{name}_{uid}")));
        check(&Path::new("/var/lib/kubelet/pods").join(uid));
        for h in hierarchies() {
            for qos in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
                check(&h.join(qos).join(format!("pod{uid}")));
            }
        }
    }
    for h in hierarchies() {
        check(&h.join(cgroup_root.trim_start_matches('/')));
    }
    check(&Path::new("/sys/class/net").join(&bridge));
    check(&leases);
    for id in &ids {
        check(&Path::new("/run/containerd/runc/k8s.io").join(id));
    }
    let procs = xtask::process::pids_mentioning(&dir.to_string_lossy());
    if !procs.is_empty() {
        left.push(format!(
            "processes {procs:?} still mention {}",
            dir.display()
        ));
    }
    if !left.is_empty() {
        bail!("left behind after Ctrl-C: {}", left.join(", "));
    }
    Ok(())
}

/// Local addresses the process `pid` listens on over TCP (v4 and v6), from /proc.
fn listening(pid: u32) -> Result<BTreeSet<String>> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path())
            && let Some(inode) = target
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut out = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... uid timeout inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                out.insert(decode_addr(f[1]));
            }
        }
    }
    Ok(out)
}

/// `0100007F:2A62` (little-endian IPv4 words, hex port) as `127.0.0.1:10850`; IPv6 as `[..]:p`.
fn decode_addr(s: &str) -> String {
    let (ip, port) = s.split_once(':').unwrap_or((s, "0"));
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let bytes: Vec<u8> = (0..ip.len() / 2)
        .filter_map(|i| u8::from_str_radix(&ip[2 * i..2 * i + 2], 16).ok())
        .collect();
    // /proc prints each 32-bit word in host (little-endian) order.
    let ordered: Vec<u8> = bytes
        .chunks(4)
        .flat_map(|w| w.iter().rev().copied())
        .collect();
    match ordered.len() {
        4 => format!(
            "{}.{}.{}.{}:{port}",
            ordered[0], ordered[1], ordered[2], ordered[3]
        ),
        16 => {
            let a: [u8; 16] = ordered.try_into().unwrap_or([0; 16]);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(a))
        }
        _ => format!("{s}:{port}"),
    }
}

fn curl(args: &[&str], url: &str) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').context("no status from curl")?;
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

#[test]
fn example_setup_serves_nothing_without_a_client_certificate() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("agent.log");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests)?;
    let Some((session, port)) = start(&manifests, &log, NODE_NAME, None)? else {
        return Ok(());
    };
    let url = format!("https://127.0.0.1:{port}/pods");
    // Anonymous: 401, on the one port that serves the API.
    let (code, _) = with_log(
        wait_for("the secure port", T, || {
            Ok(curl(&["-k"], &url).ok().filter(|(c, _)| *c != 0))
        }),
        &log,
    )?;
    assert_eq!(code, 401, "anonymous request");
    // The printed recipe works: the session's client certificate, the agent's serving cert.
    let client = session
        .client_cert()
        .context("the session's own config makes a client certificate")?;
    let serving = session.root_dir().join("pki/kubelet.crt");
    let (code, body) = curl(
        &[
            "--cacert",
            &serving.to_string_lossy(),
            "--cert",
            &client.cert.to_string_lossy(),
            "--key",
            &client.key.to_string_lossy(),
        ],
        &url,
    )?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"kind\":\"PodList\""), "{body}");
    // Listening: the secure port and /healthz, both on loopback; no read-only port.
    let pid = session.agent_pid().context("agent running")?;
    let ports = listening(pid)?;
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(
        ports.iter().all(|a| a.starts_with("127.0.0.1:")),
        "{ports:?}"
    );
    assert!(ports.contains(&format!("127.0.0.1:{port}")), "{ports:?}");
    let text = agent_log(&log);
    for warning in ["read-only port serves", "anonymous requests are enabled"] {
        assert!(!text.contains(warning), "{warning}:\n{text}");
    }
    assert!(!text.contains("port=\"read-only\""), "{text}");
    session.stop()?;
    Ok(())
}

/// `cargo xtask run --cluster`: the same session joined to the loopback control plane. The
/// Node becomes Ready, a pod the scheduler binds runs beside the example pods, and Ctrl-C
/// removes the API pod's containers as well as the static ones.
#[test]
fn cluster_variant_joins_the_control_plane_and_ctrl_c_removes_api_pods_too() -> Result<()> {
    const NODE: &str = "xtask-run-cluster-e2e";
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("agent.log");
    let Some(c) = xtask::cluster::start_or_skip(ClusterOpts {
        node_name: NODE.to_owned(),
        ..ClusterOpts::new(tmp.path().join("cluster"))
    })?
    else {
        return Ok(());
    };
    assert_eq!(
        xtask::run::ensure_namespaces(&c, &examples())?,
        ["demo"],
        "the example pods' namespaces"
    );
    let Some((session, _)) = start(&examples(), &log, NODE, Some(ClusterJoin::of(&c)))? else {
        return Ok(());
    };
    with_log(node_ready(&c, NODE), &log)?;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-api\n  namespace: default\nspec:\n  \
         automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: c\n    image: busybox:1.35\n    imagePullPolicy: IfNotPresent\n    \
         command: [\"sh\", \"-c\", \"echo hello-from-api; sleep 3600\"]\n";
    c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(pod))?;
    with_log(
        wait_for("the API pod Running", T, || {
            let p = c.kubectl(&["get", "pod", "from-api", "-o", "jsonpath={.status.phase}"])?;
            Ok((p == "Running").then_some(()))
        }),
        &log,
    )?;
    // kubectl logs goes API server -> agent, with the cluster's kubelet-client certificate.
    let logs = with_log(
        wait_for("kubectl logs through the API server", T, || {
            Ok(c.kubectl(&["logs", "from-api"])
                .ok()
                .filter(|l| l.contains("hello-from-api")))
        }),
        &log,
    )?;
    assert_eq!(logs.trim(), "hello-from-api");
    // The static pods have their mirror pods, in their own namespaces.
    with_log(
        wait_for("the example pods' mirror pods", T, || {
            let web = c.kubectl(&[
                "get",
                "pod",
                "-n",
                "demo",
                &format!("web-{NODE}"),
                "-o",
                "name",
            ]);
            let hello = c.kubectl(&["get", "pod", &format!("hello-{NODE}"), "-o", "name"]);
            Ok((web.is_ok() && hello.is_ok()).then_some(()))
        }),
        &log,
    )?;
    let removed = session.stop()?;
    let mut names: Vec<&str> = removed.pods.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["from-api", &format!("hello-{NODE}"), &format!("web-{NODE}")]
    );
    c.stop()
}

/// Waits for the Node's Ready condition to be True.
fn node_ready(c: &Cluster, node: &str) -> Result<()> {
    wait_for("the Node Ready", T, || {
        let ready = c.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        Ok(ready.is_ok_and(|r| r == "True").then_some(()))
    })
}
