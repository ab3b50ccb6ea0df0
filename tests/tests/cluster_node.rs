//! Cluster mode, node side (issue 11): the real nodelet, on a real containerd, joins the real
//! loopback control plane `xtask` builds (kube-apiserver with Node,RBAC and NodeRestriction)
//! with the node's own client certificate (CN=system:node:<NODE>), and
//! - registers its Node: the kubelet's labels plus `--node-labels`, the registration taint,
//!   addresses, capacity (cpu, memory, pods = maxPods, ephemeral-storage, huge pages),
//!   allocatable, nodeInfo from the host and CRI, the secure port; and the Node becomes Ready
//!   with the kubelet's condition reasons;
//! - holds a Lease in kube-node-lease (holder the node, 40 s, owned by the Node) whose
//!   renewTime moves;
//! - after a restart finds its Node again (same uid, default labels reconciled), never a
//!   second one;
//! - with those credentials cannot touch another Node (NodeRestriction says Forbidden);
//! - outlives a control-plane outage (everything stopped ~15 s, then started again on the same
//!   state) without a restart, and renews its lease once the API server is back.
//!
//! Only what the API shows is judged, through kubectl; waits have generous ceilings and no
//! timing is asserted (the registration time is printed for information). Skips when the
//! control plane or containerd cannot be had, fails instead under `NODELET_REQUIRE_ALL=1`.

use anyhow::{Context, Result, bail, ensure};
use nodelet_tests::{NODE, Node, NodeOpts, free_port, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use xtask::cluster::{self, Cluster, ClusterOpts};
use xtask::{k8s, process};

/// Ceiling for "it happened" waits.
const T: Duration = Duration::from_secs(120);
/// How long the control plane stays down.
const OUTAGE: Duration = Duration::from_secs(15);
const LABEL: &str = "nodelet.test/role";
const TAINT_KEY: &str = "nodelet.test/dedicated";
const MAX_PODS: u32 = 42;

fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = c.kubectl(&a)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {args:?} printed no JSON"))
}

fn node_json(c: &Cluster) -> Result<Value> {
    get_json(c, &["get", "node", NODE])
}

fn lease_json(c: &Cluster) -> Result<Value> {
    get_json(c, &["get", "lease", "-n", "kube-node-lease", NODE])
}

fn condition<'a>(node: &'a Value, type_: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str().with_context(|| format!("{what} missing: {v}"))
}

/// Bytes of a quantity such as `8141716Ki`, `20Gi` or `1000`.
fn bytes(q: &str) -> Option<u64> {
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// Waits until the Node is Ready with a heartbeat other than `not_heartbeat`.
fn wait_ready(c: &Cluster, node: &Node, not_heartbeat: Option<&str>) -> Result<Value> {
    node.wait("the Node to be Ready", T, || {
        let Ok(n) = node_json(c) else {
            return Ok(None);
        };
        let ready = condition(&n, "Ready").cloned().unwrap_or(Value::Null);
        let fresh = not_heartbeat.is_none_or(|h| ready["lastHeartbeatTime"] != h);
        Ok((ready["status"] == "True" && fresh).then_some(n))
    })
}

fn host_file(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Global-scope addresses of this host (`ip -o addr`), to check the detected InternalIP.
fn host_addresses() -> Result<Vec<String>> {
    let out = process::run(
        std::process::Command::new("ip").args(["-o", "addr", "show", "scope", "global"]),
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .collect())
}

#[test]
fn node_registers_heartbeats_and_outlives_an_api_server_outage() -> Result<()> {
    let port = free_port()?;
    let Some(mut node) = Node::start(NodeOpts {
        // The kit's memory-only eviction default keeps DiskPressure (judged below) False on a
        // build machine whose disk runs low.
        extra_config: format!(
            "port: {port}\nhealthzPort: 0\naddress: 127.0.0.1\nmaxPods: {MAX_PODS}\n"
        ),
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    let dir = tempfile::Builder::new()
        .prefix("nodelet-cluster-node-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let opts = ClusterOpts {
        node_name: NODE.to_owned(),
        ..ClusterOpts::new(dir.path())
    };
    let Some(c) = cluster::start_or_skip(opts.clone())? else {
        return Ok(());
    };
    // Node::start ran the agent standalone; from here on it is a cluster member.
    node.stop_agent(libc::SIGTERM)?;
    let kubeconfig = format!("--kubeconfig={}", c.node_kubeconfig().display());
    let labels = format!("--node-labels={LABEL}=e2e");
    let taints = format!("--register-with-taints={TAINT_KEY}=e2e:NoSchedule");
    let started = Instant::now();
    node.start_agent(&[&kubeconfig, &labels, &taints])?;
    let registered = wait_ready(&c, &node, None)?;
    eprintln!(
        "cluster_node: agent start -> Node Ready seen by kubectl in {:.1} s (information, not a limit)",
        started.elapsed().as_secs_f64()
    );
    let internal_ip = registration_is_the_kubelets(&registered, port)?;
    let uid = str_of(&registered["metadata"]["uid"], "metadata.uid")?.to_owned();
    lease_is_held_and_renewed(&c, &node, &uid)?;
    runtime_outage_makes_the_node_not_ready(&c, &mut node)?;
    node_restriction_holds(&c)?;

    // Restart: the Node is found again, not recreated, and its default labels reconciled.
    let heartbeat = condition(&registered, "Ready")
        .map(|r| r["lastHeartbeatTime"].clone())
        .unwrap_or(Value::Null);
    node.stop_agent(libc::SIGTERM)?;
    c.kubectl(&[
        "label",
        "node",
        NODE,
        "kubernetes.io/arch=wrong",
        "--overwrite",
    ])?;
    let node_ip = format!("--node-ip={internal_ip}");
    node.start_agent(&[&kubeconfig, &labels, &taints, &node_ip])?;
    let again = wait_ready(&c, &node, heartbeat.as_str())?;
    ensure!(
        again["metadata"]["uid"] == uid.as_str(),
        "the Node was recreated: uid {} -> {}",
        uid,
        again["metadata"]["uid"]
    );
    ensure!(
        again["metadata"]["creationTimestamp"] == registered["metadata"]["creationTimestamp"],
        "the Node's creationTimestamp changed"
    );
    let arch = node.wait("kubernetes.io/arch reconciled", T, || {
        let n = node_json(&c)?;
        let a = n["metadata"]["labels"]["kubernetes.io/arch"].clone();
        Ok((a == go_arch()).then_some(a))
    })?;
    ensure!(arch == go_arch());
    ensure!(
        node.agent_log().contains("node was previously registered"),
        "the restarted agent did not say it found its Node"
    );
    let addr = again["status"]["addresses"][0]["address"].clone();
    ensure!(
        addr == internal_ip.as_str(),
        "InternalIP after --node-ip: {addr}"
    );

    let c = outage_is_survived(c, opts, &node)?;
    let log = node.agent_log();
    ensure!(!log.contains("panicked"), "the agent panicked:\n{log}");
    c.stop()
}

/// Labels, taints, addresses, capacity, nodeInfo, conditions; returns the InternalIP.
fn registration_is_the_kubelets(n: &Value, port: u16) -> Result<String> {
    let labels = &n["metadata"]["labels"];
    for (k, v) in [
        ("kubernetes.io/hostname", NODE),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", go_arch()),
        (LABEL, "e2e"),
    ] {
        ensure!(labels[k] == v, "label {k} is {}, want {v}", labels[k]);
    }
    let taints = n["spec"]["taints"].as_array().context("no taints")?;
    ensure!(
        taints
            .iter()
            .any(|t| t["key"] == TAINT_KEY && t["value"] == "e2e" && t["effect"] == "NoSchedule"),
        "registration taint missing: {taints:?}"
    );

    let addrs = n["status"]["addresses"]
        .as_array()
        .context("no addresses")?;
    let of = |t: &str| addrs.iter().find(|a| a["type"] == t).map(|a| &a["address"]);
    ensure!(
        of("Hostname") == Some(&json!(NODE)),
        "Hostname address: {addrs:?}"
    );
    let ip = str_of(of("InternalIP").unwrap_or(&Value::Null), "InternalIP")?.to_owned();
    let host = host_addresses()?;
    ensure!(
        host.contains(&ip),
        "InternalIP {ip} is not a global address of this host ({host:?})"
    );

    let cap = &n["status"]["capacity"];
    let alloc = &n["status"]["allocatable"];
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_cap = str_of(&cap["cpu"], "capacity.cpu")?;
    ensure!(
        cpu_cap.parse::<usize>().is_ok_and(|c| c >= cpus),
        "capacity.cpu {cpu_cap}, this process sees {cpus}"
    );
    let mem_kb: u64 = host_file("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .context("no MemTotal")?;
    ensure!(
        bytes(str_of(&cap["memory"], "capacity.memory")?) == Some(mem_kb * 1024),
        "capacity.memory {} != MemTotal {mem_kb} kB",
        cap["memory"]
    );
    ensure!(
        cap["pods"].as_str().and_then(|p| p.parse::<u32>().ok()) == Some(MAX_PODS),
        "capacity.pods {}",
        cap["pods"]
    );
    let eph = bytes(str_of(
        &cap["ephemeral-storage"],
        "capacity.ephemeral-storage",
    )?);
    ensure!(
        eph.is_some_and(|b| b > 0),
        "ephemeral-storage {}",
        cap["ephemeral-storage"]
    );
    for dir in std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = dir.file_name().to_string_lossy().into_owned();
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let key = if kb % (1 << 20) == 0 {
            format!("hugepages-{}Gi", kb >> 20)
        } else {
            format!("hugepages-{}Mi", kb >> 10)
        };
        ensure!(cap.get(&key).is_some(), "capacity has no {key}: {cap}");
    }
    for k in ["cpu", "memory", "pods", "ephemeral-storage"] {
        ensure!(alloc.get(k).is_some(), "allocatable has no {k}: {alloc}");
    }

    let info = &n["status"]["nodeInfo"];
    let runtime = str_of(&info["containerRuntimeVersion"], "containerRuntimeVersion")?;
    ensure!(
        runtime.starts_with("containerd://") && !runtime.ends_with("Unknown"),
        "containerRuntimeVersion {runtime}"
    );
    let kubelet = str_of(&info["kubeletVersion"], "kubeletVersion")?;
    ensure!(
        kubelet.starts_with(&format!("{}+nodelet", k8s::RELEASE)),
        "kubeletVersion {kubelet} does not name the release under test ({})",
        k8s::RELEASE
    );
    for (field, want) in [
        ("machineID", host_file("/etc/machine-id")),
        ("bootID", host_file("/proc/sys/kernel/random/boot_id")),
        ("kernelVersion", host_file("/proc/sys/kernel/osrelease")),
        ("operatingSystem", "linux".to_owned()),
        ("architecture", go_arch().to_owned()),
    ] {
        ensure!(
            info[field] == want.as_str(),
            "nodeInfo.{field} {} != {want}",
            info[field]
        );
    }
    let os_image = str_of(&info["osImage"], "osImage")?;
    ensure!(
        host_file("/etc/os-release").contains(&format!("PRETTY_NAME=\"{os_image}\"")),
        "osImage {os_image} is not this host's PRETTY_NAME"
    );
    let endpoint = &n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"];
    ensure!(
        *endpoint == port,
        "kubeletEndpoint.Port {endpoint}, want {port}"
    );

    for (t, status, reason) in [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ] {
        let c = condition(n, t).with_context(|| format!("no {t} condition"))?;
        ensure!(
            c["status"] == status && c["reason"] == reason,
            "{t}: {c}, want {status} {reason}"
        );
        ensure!(c["lastTransitionTime"].is_string() && c["lastHeartbeatTime"].is_string());
    }
    let conds = n["status"]["conditions"].as_array().context("conditions")?;
    ensure!(
        conds.last().is_some_and(|c| c["type"] == "Ready"),
        "Ready is not the last condition: {conds:?}"
    );
    Ok(ip)
}

fn lease_is_held_and_renewed(c: &Cluster, node: &Node, uid: &str) -> Result<()> {
    let lease = node.wait("the node's Lease", T, || Ok(lease_json(c).ok()))?;
    let spec = &lease["spec"];
    ensure!(
        spec["holderIdentity"] == NODE,
        "holderIdentity {}",
        spec["holderIdentity"]
    );
    ensure!(
        spec["leaseDurationSeconds"] == 40,
        "leaseDurationSeconds {}",
        spec["leaseDurationSeconds"]
    );
    let owner = &lease["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "Node" && owner["name"] == NODE && owner["uid"] == uid,
        "lease owner {owner}"
    );
    let first = spec["renewTime"].clone();
    ensure!(first.is_string(), "no renewTime: {lease}");
    node.wait("the lease's renewTime to move", T, || {
        let now = lease_json(c)?["spec"]["renewTime"].clone();
        Ok((now != first).then_some(()))
    })
}

/// containerd down -> Ready False with KubeletNotReady naming the runtime; back -> Ready.
fn runtime_outage_makes_the_node_not_ready(c: &Cluster, node: &mut Node) -> Result<()> {
    let version = node.env.cri_version()?;
    let want = format!("containerd://{}", version.trim_start_matches("containerd "));
    let n = node_json(c)?;
    ensure!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"] == want.as_str(),
        "containerRuntimeVersion {}, CRI says {want}",
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
    );
    // The runtime health check runs every 5 s: 15 s down is seen.
    let down_for = Duration::from_secs(15);
    let seen = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + down_for + T;
            while Instant::now() < deadline {
                if let Some(r) = node_json(c)
                    .ok()
                    .and_then(|n| condition(&n, "Ready").cloned())
                    .filter(|r| r["status"] == "False")
                {
                    return Some(r);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            None
        });
        let restarted = node.env.restart_containerd(down_for);
        (restarted, watcher.join())
    });
    seen.0.context("restarting containerd")?;
    let ready = seen
        .1
        .map_err(|_| anyhow::anyhow!("the watcher thread panicked"))?
        .context("the Node never went NotReady while containerd was down")?;
    ensure!(
        ready["reason"] == "KubeletNotReady"
            && str_of(&ready["message"], "Ready message")?.contains("container runtime"),
        "NotReady without the runtime as its reason: {ready}"
    );
    wait_ready(c, node, None).map(drop)
}

/// A node may write its own Node, not another one: the apiserver says Forbidden.
fn node_restriction_holds(c: &Cluster) -> Result<()> {
    let other = "nodelet-e2e-other-node";
    let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": other}});
    c.kubectl_in(
        &c.admin_kubeconfig(),
        &["create", "-f", "-"],
        Some(&obj.to_string()),
    )?;
    let node_kc = c.node_kubeconfig();
    let attempts: [(&str, Vec<&str>); 2] = [
        (
            "labelling another node",
            vec!["label", "node", other, "nodelet-e2e=yes"],
        ),
        (
            "patching another node's status",
            vec![
                "patch",
                "node",
                other,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}"#,
            ],
        ),
    ];
    for (what, args) in attempts {
        match c.kubectl_in(&node_kc, &args, None) {
            Ok(out) => bail!("{what} with the node's credentials was allowed: {out}"),
            Err(e) => {
                let msg = format!("{e:#}");
                ensure!(
                    msg.contains("Forbidden") || msg.contains("forbidden"),
                    "{what} failed, but not as Forbidden: {msg}"
                );
            }
        }
    }
    let n = get_json(c, &["get", "node", other])?;
    ensure!(
        n["metadata"]["labels"].get("nodelet-e2e").is_none() && condition(&n, "Ready").is_none(),
        "another node was modified: {n}"
    );
    Ok(())
}

fn agent_pids(node: &Node) -> Vec<u32> {
    process::pids_mentioning(&format!("--root-dir={}", node.root.display()))
}

/// Stops the whole control plane for [`OUTAGE`], starts it again on the same state, and checks
/// the agent kept running and renews its lease again. Returns the new cluster.
fn outage_is_survived(c: Cluster, opts: ClusterOpts, node: &Node) -> Result<Cluster> {
    let before = lease_json(&c)?["spec"]["renewTime"].clone();
    let pids = agent_pids(node);
    ensure!(!pids.is_empty(), "no agent process before the outage");
    let log_len = node.agent_log().len();
    c.stop()
        .context("stopping the control plane for the outage")?;
    let down = Instant::now();
    while down.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(1));
        ensure!(
            agent_pids(node) == pids,
            "the agent exited during the API server outage:\n{}",
            &node.agent_log()[log_len..]
        );
    }
    let c = Cluster::start(opts).context("starting the control plane again")?;
    let back = Instant::now();
    node.wait("the lease to be renewed after the outage", T, || {
        let now = lease_json(&c).map(|l| l["spec"]["renewTime"].clone());
        Ok(now.ok().filter(|n| *n != before && n.is_string()).map(drop))
    })?;
    eprintln!(
        "cluster_node: control plane down {:.1} s; lease renewed {:.1} s after it was back (information)",
        back.duration_since(down).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    ensure!(
        agent_pids(node) == pids,
        "the agent restarted across the outage"
    );
    let during = node.agent_log()[log_len..].to_owned();
    ensure!(
        during.contains("node lease") && during.contains("will retry"),
        "the agent did not log the failed heartbeats:\n{during}"
    );
    wait_for("the Node Ready after the outage", T, || {
        let n = node_json(&c)?;
        Ok(condition(&n, "Ready")
            .is_some_and(|r| r["status"] == "True")
            .then_some(()))
    })?;
    Ok(c)
}
