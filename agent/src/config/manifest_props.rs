//! Property tests of static pod manifest decoding and validation (issue 10).
//!
//! Whatever the bytes, [`manifest::decode`] must not panic; when it refuses a manifest the error
//! names the file and a field path; when it accepts one, every conversion the runtime manager
//! makes from the pod (sandbox config, container configs with their env, mounts and resources,
//! sync actions) succeeds, so nothing the user wrote can fail later on every sync. Inputs are
//! raw bytes, YAML-ish token soup, random JSON trees with pod field names, and near-valid pods
//! with fields mutated (wrong types, bad values, huge numbers, unicode, deep nesting).
//!
//! Each property runs a bounded number of cases (`PROPTEST_CASES` overrides it for a longer
//! soak) and writes no failure files: a failure prints its shrunk input, and its minimal form
//! goes into `regressions` below as a plain test.

use super::manifest::{self, ManifestError};
use crate::kuberuntime::container::{ContainerInputs, container_config};
use crate::kuberuntime::state::PodRuntimeState;
use crate::kuberuntime::{NodeContext, actions, sandbox};
use crate::options::Options;
use crate::pod::DesiredPod;
use crate::proptest_kit::run;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const MANIFEST: &str = "/etc/kubernetes/manifests/prop.yaml";
const NODE: &str = "node-1";

/// A scratch directory for the directories the runtime manager creates, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("nodelet-props-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Self(d)
    }

    fn clear(&self) {
        for sub in ["logs", "root", "host"] {
            let _ = std::fs::remove_dir_all(self.0.join(sub));
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Node facts as main.rs builds them, with the agent's directories under `scratch`.
fn node_context(scratch: &Path, driver: &str) -> NodeContext {
    let opts = Options::from_args(
        [
            "nodelet",
            "--hostname-override",
            NODE,
            "--cgroup-driver",
            driver,
        ]
        .into_iter()
        .map(String::from),
    )
    .expect("fixed flags resolve");
    NodeContext {
        node_name: NODE.into(),
        host_ip: "10.0.0.1".into(),
        pod_logs_dir: scratch.join("logs"),
        root_dir: scratch.join("root"),
        cluster_dns: vec!["10.96.0.10".into()],
        cluster_domain: Some("cluster.local".into()),
        host_dns: sandbox::parse_resolv_conf("nameserver 10.0.0.2\nsearch example.com\n"),
        cm: crate::cm::ContainerManager::new(&opts),
        memory_capacity: 16 << 30,
        cpu_capacity_milli: 8000,
        volumes: crate::volumemanager::VolumeManager::new(None, scratch.join("root")),
        recorder: crate::recorder::Recorder::logging_only(),
        seccomp_default: false,
        services: Default::default(),
    }
}

/// Manifest bytes, shown as text when a case fails.
#[derive(Clone)]
struct Doc(Vec<u8>);

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Longest a decode may take: the file source decodes on a blocking thread, and a decode that
/// never returns stops every static pod update.
const DECODE_DEADLINE: Duration = Duration::from_secs(10);

/// Decodes on a thread of its own, so that a decode that never returns fails the case instead
/// of hanging the test run (the thread is left behind).
fn decode(data: &[u8]) -> Result<Result<manifest::Decoded, ManifestError>, TestCaseError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let data = data.to_vec();
    std::thread::spawn(move || {
        let _ = tx.send(manifest::decode(Path::new(MANIFEST), &data, NODE));
    });
    match rx.recv_timeout(DECODE_DEADLINE) {
        Ok(r) => Ok(r),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "decode did not return within {DECODE_DEADLINE:?}"
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(TestCaseError::fail("decode panicked"))
        }
    }
}

/// The property: no panic; a refusal names the file and a field; an acceptance runs.
fn check(scratch: &Scratch, doc: &Doc) -> Result<(), TestCaseError> {
    match decode(&doc.0)? {
        Err(e) => check_error(&e),
        Ok(d) => {
            let r = later_stages(scratch, &d.pod);
            scratch.clear();
            r
        }
    }
}

/// Field errors start with the path, then the API server's kind of error.
fn names_a_field(err: &str) -> bool {
    const KINDS: &[&str] = &[
        ": Required value",
        ": Invalid value: ",
        ": Unsupported value: ",
        ": Duplicate value: ",
        ": Forbidden: ",
        ": Not found: ",
    ];
    (err.starts_with("metadata.") || err.starts_with("spec"))
        && KINDS
            .iter()
            .filter_map(|k| err.find(k))
            .min()
            .is_some_and(|at| !err[..at].contains(' '))
}

fn check_error(e: &ManifestError) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(
        msg.contains(MANIFEST),
        "error does not name the file: {msg}"
    );
    match e {
        ManifestError::Decode { field, reason, .. } => {
            prop_assert!(!field.is_empty(), "no field path: {msg}");
            prop_assert!(!reason.is_empty(), "no reason: {msg}");
        }
        ManifestError::Invalid { errors, .. } => {
            prop_assert!(!errors.is_empty(), "invalid without errors: {msg}");
            for err in errors {
                prop_assert!(names_a_field(err), "error without a field path: {err:?}");
            }
        }
        ManifestError::Read { .. } | ManifestError::TooLarge { .. } => {
            prop_assert!(false, "decode cannot fail reading: {msg}");
        }
    }
    Ok(())
}

/// Everything the runtime manager builds from an accepted pod before it calls CRI.
fn later_stages(scratch: &Scratch, p: &DesiredPod) -> Result<(), TestCaseError> {
    let r = &p.pod_ref;
    prop_assert!(
        !r.uid.is_empty() && !r.uid.contains('/') && r.uid != "." && r.uid != "..",
        "UID {:?} cannot name a directory",
        r.uid
    );
    // hostPath volumes point into the scratch directory, so creating them stays in the sandbox.
    let mut p = p.clone();
    let host = scratch.0.join("host");
    if let Some(spec) = p.pod.spec.as_mut() {
        for (i, v) in spec.volumes.iter_mut().flatten().enumerate() {
            if let Some(hp) = v.host_path.as_mut() {
                hp.path = host.join(i.to_string()).to_string_lossy().into_owned();
                hp.type_ = Some("DirectoryOrCreate".into());
            }
        }
    }
    let spec = p.pod.spec.clone().unwrap_or_default();
    let _ = crate::pod::qos_class(&p.pod);
    let _ = crate::pod::grace_period_seconds(&p.pod);
    let plan = actions::compute(
        &spec,
        &PodRuntimeState::default(),
        &Default::default(),
        &Default::default(),
    );
    prop_assert!(
        plan.create_sandbox.is_some(),
        "a new pod gets a sandbox: {plan:?}"
    );
    for driver in ["systemd", "cgroupfs"] {
        let ctx = node_context(&scratch.0, driver);
        let sb = sandbox::sandbox_config(&ctx, &p, 0);
        prop_assert!(
            Path::new(&sb.log_directory).starts_with(&ctx.pod_logs_dir)
                && !sb.log_directory.contains("/../"),
            "log directory {} escapes {}",
            sb.log_directory,
            ctx.pod_logs_dir.display()
        );
        let parent = sb.linux.map(|l| l.cgroup_parent).unwrap_or_default();
        prop_assert!(
            !parent.split('/').any(|s| s == ".." || s == "."),
            "cgroup parent {parent:?}"
        );
    }
    let ctx = node_context(&scratch.0, "cgroupfs");
    let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
    for (c, init) in inits.chain(spec.containers.iter().map(|c| (c, false))) {
        let input = ContainerInputs {
            container: c,
            kind: if init {
                crate::kuberuntime::ephemeral::ContainerKind::Init
            } else {
                crate::kuberuntime::ephemeral::ContainerKind::Regular
            },
            restart_count: 0,
            image_ref: "sha256:0123".into(),
            pod_ip: "10.244.0.7".into(),
            image_user: None,
        };
        let cfg = match container_config(&ctx, &p, &input) {
            // A path the API accepts but no filesystem holds (a subPath component over
            // NAME_MAX): the kubelet too fails that container at start
            // (CreateContainerConfigError), it is not a refusal by field.
            Err(crate::kuberuntime::container::ConfigError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::InvalidFilename =>
            {
                continue;
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!("container {}: {e}", c.name)));
            }
            Ok(cfg) => cfg,
        };
        for m in &cfg.mounts {
            prop_assert!(
                Path::new(&m.host_path).starts_with(&scratch.0) && !m.host_path.contains("/../"),
                "container {} mounts {} from outside the node's directories",
                c.name,
                m.host_path
            );
        }
    }
    Ok(())
}

// --- generators ---

/// Any JSON value, small.
fn junk() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An object from (key, maybe-value) strategies; `None` leaves the key out.
fn object(fields: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Value> {
    let (keys, values): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    values
        .prop_map(move |vals| {
            let m: Map<String, Value> = keys
                .iter()
                .zip(vals)
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect();
            Value::Object(m)
        })
        .boxed()
}

/// Always present.
fn req(s: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    s.prop_map(Some).boxed()
}

/// Present half the time.
fn opt(s: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop::option::of(s).boxed()
}

fn one_of(items: &[&'static str]) -> BoxedStrategy<Value> {
    prop::sample::select(items.to_vec())
        .prop_map(Value::from)
        .boxed()
}

fn flag() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(Value::from).boxed()
}

fn int(r: std::ops::RangeInclusive<i64>) -> BoxedStrategy<Value> {
    r.prop_map(Value::from).boxed()
}

fn list(s: impl Strategy<Value = Value> + 'static, max: usize) -> BoxedStrategy<Value> {
    prop::collection::vec(s, 0..=max)
        .prop_map(Value::from)
        .boxed()
}

fn text() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[a-z0-9 $()=/._-]{0,16}",
        1 => Just("$(A)$$(B)$(".to_string()),
        1 => ".{0,16}",
    ]
    .prop_map(Value::from)
    .boxed()
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Every pod has these volumes, so mounts can name them.
const VOLUMES: usize = 3;

fn valid_volume(i: usize) -> BoxedStrategy<Value> {
    let host_path = object(vec![
        (
            "path",
            req(one_of(&["/var/lib/app", "/srv/data", "/run/x.sock"])),
        ),
        (
            "type",
            opt(one_of(&[
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
            ])),
        ),
    ]);
    prop_oneof![
        Just(json!({"name": format!("v{i}"), "emptyDir": {}})),
        Just(
            json!({"name": format!("v{i}"), "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
        ),
        host_path.prop_map(move |h| json!({"name": format!("v{i}"), "hostPath": h})),
    ]
    .boxed()
}

fn valid_env(container: String) -> BoxedStrategy<Value> {
    let field_ref = object(vec![
        ("apiVersion", opt(Just(json!("v1")))),
        (
            "fieldPath",
            req(one_of(&[
                "metadata.name",
                "metadata.namespace",
                "metadata.uid",
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.hostIP",
                "status.hostIPs",
                "status.podIP",
                "status.podIPs",
                "metadata.labels['app']",
                "metadata.annotations['a']",
            ])),
        ),
    ]);
    let cpu_ref = object(vec![
        ("resource", req(one_of(&["limits.cpu", "requests.cpu"]))),
        ("divisor", opt(one_of(&["1m", "1"]))),
        ("containerName", opt(Just(json!(container)))),
    ]);
    let mem_ref = object(vec![
        (
            "resource",
            req(one_of(&["limits.memory", "requests.memory"])),
        ),
        ("divisor", opt(one_of(&["1", "1Ki", "1Mi", "1G", "1Ei"]))),
    ]);
    let value_from = prop_oneof![
        field_ref.prop_map(|f| json!({"fieldRef": f})),
        cpu_ref.prop_map(|r| json!({"resourceFieldRef": r})),
        mem_ref.prop_map(|r| json!({"resourceFieldRef": r})),
    ];
    let name = "[A-Z_][A-Z0-9_]{0,5}".prop_map(Value::from);
    prop_oneof![
        (name.clone(), text()).prop_map(|(n, v)| json!({"name": n, "value": v})),
        (name, value_from).prop_map(|(n, f)| json!({"name": n, "valueFrom": f})),
    ]
    .boxed()
}

fn valid_resources() -> BoxedStrategy<Value> {
    object(vec![
        (
            "limits",
            opt(object(vec![
                ("cpu", opt(one_of(&["500m", "1", "2", "0.5", "1e0"]))),
                ("memory", opt(one_of(&["128Mi", "1Gi", "1G", "268435456"]))),
                ("ephemeral-storage", opt(one_of(&["1Gi"]))),
            ])),
        ),
        (
            "requests",
            opt(object(vec![
                ("cpu", opt(one_of(&["50m", "100m", "0.1"]))),
                ("memory", opt(one_of(&["32Mi", "64Mi", "100M"]))),
            ])),
        ),
    ])
}

/// A container the API server accepts, named `name`, mounting the pod's volumes.
fn valid_container(name: String) -> BoxedStrategy<Value> {
    let port = (
        1i64..=65535,
        any::<bool>(),
        prop::option::of(one_of(&["TCP", "UDP", "SCTP"])),
    )
        .prop_map(|(p, host, proto)| {
            let mut m = json!({"containerPort": p});
            if host {
                m["hostPort"] = json!(p);
            }
            if let Some(proto) = proto {
                m["protocol"] = proto;
            }
            m
        });
    let mounts = prop::collection::vec(
        (0..VOLUMES, prop::option::of(one_of(&["sub", "a/b", "x.log"])), prop::option::of(one_of(&["None", "HostToContainer"])), any::<bool>()),
        0..=3,
    )
    .prop_map(|ms| {
        let v: Vec<Value> = ms
            .into_iter()
            .enumerate()
            .map(|(j, (vol, sub, prop, ro))| {
                let mut m = json!({"name": format!("v{vol}"), "mountPath": format!("/mnt/{j}"), "readOnly": ro});
                if let Some(sub) = sub {
                    m["subPath"] = sub;
                }
                if let Some(prop) = prop {
                    m["mountPropagation"] = prop;
                }
                m
            })
            .collect();
        Value::from(v)
    });
    let security = object(vec![
        ("runAsUser", opt(int(0..=65535))),
        ("runAsGroup", opt(int(0..=65535))),
        ("privileged", opt(flag())),
        ("readOnlyRootFilesystem", opt(flag())),
        (
            "capabilities",
            opt(object(vec![(
                "add",
                opt(list(one_of(&["NET_ADMIN", "SYS_TIME"]), 2)),
            )])),
        ),
    ]);
    let a = object(vec![
        ("name", req(Just(json!(name.clone())))),
        (
            "image",
            req(one_of(&[
                "busybox:1.35",
                "registry.local:5000/app@sha256:abcd",
                "busybox",
            ])),
        ),
        (
            "imagePullPolicy",
            opt(one_of(&["Always", "IfNotPresent", "Never"])),
        ),
        ("command", opt(list(text(), 3))),
        ("args", opt(list(text(), 3))),
        ("workingDir", opt(Just(json!("/work")))),
        ("ports", opt(list(port, 2))),
        ("resources", opt(valid_resources())),
    ]);
    let b = object(vec![
        ("env", opt(list(valid_env(name), 4))),
        ("volumeMounts", opt(mounts)),
        ("securityContext", opt(security)),
        (
            "terminationMessagePath",
            opt(one_of(&["/dev/termination-log", "", "/tmp/msg"])),
        ),
        (
            "terminationMessagePolicy",
            opt(one_of(&["File", "FallbackToLogsOnError"])),
        ),
        ("tty", opt(flag())),
        ("stdin", opt(flag())),
    ]);
    (a, b).prop_map(|(a, b)| merge(a, b)).boxed()
}

fn valid_spec() -> BoxedStrategy<Value> {
    let containers = (1usize..=3, 0usize..=2).prop_flat_map(|(n, i)| {
        (
            (0..n)
                .map(|k| valid_container(format!("c{k}")))
                .collect::<Vec<_>>(),
            (0..i)
                .map(|k| valid_container(format!("init{k}")))
                .collect::<Vec<_>>(),
            (0..VOLUMES).map(valid_volume).collect::<Vec<_>>(),
        )
    });
    let dns_config = object(vec![
        (
            "nameservers",
            opt(list(one_of(&["1.1.1.1", "2001:db8::1"]), 3)),
        ),
        (
            "searches",
            opt(list(one_of(&["svc.local", "example.com."]), 3)),
        ),
        (
            "options",
            opt(list(
                object(vec![
                    ("name", req(one_of(&["ndots", "edns0"]))),
                    ("value", opt(one_of(&["2"]))),
                ]),
                2,
            )),
        ),
    ]);
    let pod_security = object(vec![
        ("runAsUser", opt(int(0..=65535))),
        ("runAsGroup", opt(int(0..=65535))),
        ("fsGroup", opt(int(0..=65535))),
        ("supplementalGroups", opt(list(int(0..=65535), 2))),
        (
            "sysctls",
            opt(Just(
                json!([{"name": "net.core.somaxconn", "value": "1024"}, {"name": "kernel.shm_rmid_forced", "value": "1"}]),
            )),
        ),
    ]);
    let rest = object(vec![
        (
            "restartPolicy",
            opt(one_of(&["Always", "OnFailure", "Never"])),
        ),
        ("terminationGracePeriodSeconds", opt(int(0..=120))),
        ("activeDeadlineSeconds", opt(int(1..=3600))),
        ("hostname", opt(one_of(&["web", "a-b"]))),
        ("hostNetwork", opt(flag())),
        ("hostPID", opt(flag())),
        ("shareProcessNamespace", opt(flag())),
        (
            "dnsPolicy",
            opt(one_of(&[
                "ClusterFirst",
                "ClusterFirstWithHostNet",
                "Default",
            ])),
        ),
        ("dnsConfig", opt(dns_config)),
        ("securityContext", opt(pod_security)),
        ("serviceAccountName", opt(one_of(&["default"]))),
    ]);
    (containers, rest)
        .prop_map(|((cs, inits, vols), rest)| {
            let mut spec = json!({"containers": cs, "volumes": vols});
            if !inits.is_empty() {
                spec["initContainers"] = Value::from(inits);
            }
            merge(spec, rest)
        })
        .boxed()
}

fn valid_pod() -> BoxedStrategy<Value> {
    let metadata = object(vec![
        (
            "name",
            req(one_of(&["web", "etcd", "a.b-c", "kube-apiserver"])),
        ),
        ("namespace", opt(one_of(&["default", "kube-system"]))),
        (
            "uid",
            opt(one_of(&[
                "0b9c3ad6-6c1e-4c7b-9d2c-2f8f4a3c1e11",
                "fixed_uid",
            ])),
        ),
        (
            "labels",
            opt(Just(json!({"app": "web", "tier": "control-plane"}))),
        ),
        (
            "annotations",
            opt(Just(json!({"a": "1", "example.com/x": "y"}))),
        ),
    ]);
    object(vec![
        ("apiVersion", opt(Just(json!("v1")))),
        ("kind", opt(Just(json!("Pod")))),
        ("metadata", req(metadata)),
        ("spec", req(valid_spec())),
    ])
}

/// Values that break fields: every bad value in the field rules, plus wrong kinds of strings and
/// numbers.
const BAD_STRINGS: &[&str] = &[
    "",
    " ",
    "-",
    "-a",
    "a-",
    "A",
    "a_b",
    "a b",
    "a..b",
    ".",
    "..",
    "/",
    "/etc",
    "../x",
    "a/../../b",
    "rel/path",
    "é",
    "\u{0}",
    "\t",
    "x:y",
    "1.5.3Gi",
    "-1",
    "1e400",
    "0e400",
    "9e18",
    "1Qi",
    "10Ei",
    "1e13",
    "8Ei",
    "5Pi",
    "9223372036854775807",
    "1n",
    "1u",
    "NaN",
    "inf",
    " 1",
    "1 ",
    "Bidirectional",
    "Sideways",
    "Always",
    "None",
    "metadata.labels",
    "status.phase",
    "metadata.labels['']",
    "limits.ephemeral-storage",
    "requests.hugepages-2Mi",
    "not-an-ip",
    "0.0.0.0",
    "256.0.0.1",
    "A=B",
    "$(A)",
    "Directory",
    "ICMP",
    "tcp",
    "v2",
    "8080",
    "a--b",
    "net.core.somaxconn",
    "Net.Bad",
    "dns.example",
    "Bad Domain",
    "2",
    "c0",
    "v0",
    "/mnt/0",
];
const BAD_NUMBERS: &[i64] = &[
    0,
    -1,
    -30,
    65536,
    2_147_483_648,
    -2_147_483_649,
    i64::MAX,
    i64::MIN,
    4_294_967_296,
];

/// One edit of a pod's JSON tree, at the node a path index picks.
#[derive(Debug, Clone)]
enum Mutation {
    String(&'static str),
    Number(i64),
    Junk(Value),
    Remove,
    /// Duplicate the node into its array (duplicate names, ports, mount paths).
    Duplicate,
    /// Repeat a string to this length.
    Long(usize),
    /// Insert a key the spec may not have set, with a bad value.
    AddKey(&'static str, Value),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        6 => prop::sample::select(BAD_STRINGS.to_vec()).prop_map(Mutation::String),
        3 => prop::sample::select(BAD_NUMBERS.to_vec()).prop_map(Mutation::Number),
        2 => junk().prop_map(Mutation::Junk),
        2 => Just(Mutation::Remove),
        2 => Just(Mutation::Duplicate),
        1 => prop::sample::select(vec![64usize, 254, 300, 70_000]).prop_map(Mutation::Long),
        2 => (
            prop::sample::select(KEYS.to_vec()),
            prop_oneof![
                prop::sample::select(BAD_STRINGS.to_vec()).prop_map(Value::from),
                prop::sample::select(BAD_NUMBERS.to_vec()).prop_map(Value::from),
                junk(),
            ]
        )
            .prop_map(|(k, v)| Mutation::AddKey(k, v)),
    ]
    .boxed()
}

/// JSON pointers of every node, in document order.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pointers(
                    child,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn mutate(mut v: Value, edits: Vec<(prop::sample::Index, Mutation)>) -> Value {
    for (index, m) in edits {
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        let at = index.get(&all).clone();
        let (parent_at, key) = at.rsplit_once('/').unwrap_or(("", ""));
        match m {
            Mutation::Remove | Mutation::Duplicate => {
                let key = key.replace("~1", "/").replace("~0", "~");
                let Some(parent) = v.pointer_mut(parent_at) else {
                    continue;
                };
                match (parent, m) {
                    (Value::Object(o), Mutation::Remove) => {
                        o.remove(&key);
                    }
                    (Value::Array(a), Mutation::Remove) => {
                        if let Ok(i) = key.parse::<usize>()
                            && i < a.len()
                        {
                            a.remove(i);
                        }
                    }
                    (Value::Array(a), _) => {
                        if let Some(item) = key.parse::<usize>().ok().and_then(|i| a.get(i)) {
                            a.push(item.clone());
                        }
                    }
                    _ => {}
                }
            }
            Mutation::AddKey(k, value) => {
                if let Some(Value::Object(o)) = v.pointer_mut(&at) {
                    o.insert(k.to_string(), value);
                }
            }
            m => {
                let Some(node) = v.pointer_mut(&at) else {
                    continue;
                };
                *node = match m {
                    Mutation::String(s) => json!(s),
                    Mutation::Number(n) => json!(n),
                    Mutation::Junk(j) => j,
                    Mutation::Long(n) => {
                        let base = node.as_str().filter(|s| !s.is_empty()).unwrap_or("a");
                        json!(base.chars().cycle().take(n).collect::<String>())
                    }
                    _ => continue,
                };
            }
        }
    }
    v
}

/// A valid pod with up to three edits; a quarter of the cases keep the pod valid.
fn near_valid_pod() -> BoxedStrategy<Value> {
    (
        valid_pod(),
        prop::collection::vec((any::<prop::sample::Index>(), mutation()), 0..=3),
    )
        .prop_map(|(pod, edits)| mutate(pod, edits))
        .boxed()
}

/// A pod as the user would write it: JSON, or YAML.
fn encoded(v: Value) -> BoxedStrategy<Doc> {
    let json = serde_json::to_vec(&v).unwrap_or_default();
    let yaml = serde_yaml_ng::to_string(&v)
        .unwrap_or_default()
        .into_bytes();
    prop_oneof![Just(Doc(json)), Just(Doc(yaml))].boxed()
}

/// Field names a pod has, for random trees and token soup.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "uid",
    "spec",
    "containers",
    "initContainers",
    "image",
    "ports",
    "containerPort",
    "hostPort",
    "resources",
    "limits",
    "requests",
    "cpu",
    "memory",
    "env",
    "valueFrom",
    "fieldRef",
    "fieldPath",
    "volumes",
    "volumeMounts",
    "mountPath",
    "subPath",
    "hostPath",
    "path",
    "emptyDir",
    "restartPolicy",
    "securityContext",
    "runAsUser",
    "dnsConfig",
    "nameservers",
    "labels",
    "annotations",
];

/// Random trees whose keys are pod field names.
fn tree() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
        prop::sample::select(BAD_STRINGS.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..5).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
    .boxed()
}

/// YAML-ish token soup: indentation, flow syntax, anchors, tags, documents, field names.
fn soup() -> BoxedStrategy<Doc> {
    let token = prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(|k| format!("{k}: ")),
        2 => prop::sample::select(vec![
            "\n", "\n  ", "\n    ", "- ", "{", "}", "[", "]", ", ", "\t", "---\n", "...\n",
            "&a ", "*a ", "!!binary ", "!!int ", "\"\\u0000\"", "'", "\"", "#", "? ", "| ",
            "> ", "%YAML 1.2\n", "<<: *a\n", "~", "null", "true", "0x1F", "1e400", "-1",
            "99999999999999999999", "\u{feff}", "\u{0}", "\r\n",
        ])
        .prop_map(String::from),
        2 => "[a-z0-9.:/-]{1,10}",
        1 => ".{1,4}",
    ];
    prop::collection::vec(token, 0..80)
        .prop_map(|t| Doc(t.concat().into_bytes()))
        .boxed()
}

#[test]
fn arbitrary_bytes_never_panic_and_errors_name_file_and_field() {
    let s = Scratch::new("bytes");
    let bytes = prop::collection::vec(any::<u8>(), 0..256).prop_map(Doc);
    run(512, bytes, |d| check(&s, &d));
}

#[test]
fn yaml_token_soup_never_panics() {
    let s = Scratch::new("soup");
    run(512, soup(), |b| check(&s, &b));
}

#[test]
fn random_trees_with_pod_field_names() {
    let s = Scratch::new("tree");
    run(256, tree().prop_flat_map(encoded), |b| check(&s, &b));
}

#[test]
fn near_valid_pods_are_refused_by_field_or_run() {
    let s = Scratch::new("pods");
    run(512, near_valid_pod().prop_flat_map(encoded), |b| {
        check(&s, &b)
    });
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let s = Scratch::new("deep");
    let nested = (1usize..400, any::<bool>(), any::<bool>()).prop_map(|(depth, seq, yaml)| {
        let (open, close) = if seq { ("[", "]") } else { ("{\"a\":", "}") };
        let deep = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let doc = format!(
            "{{\"metadata\":{{\"name\":\"p\"}},\"spec\":{{\"containers\":[{{\"name\":\"c\",\"image\":\"x\"}}],\"x\":{deep}}}}}"
        );
        if yaml {
            // Flow-style YAML is a superset of this JSON; a leading comment makes it YAML.
            Doc(format!("# yaml\n{doc}").into_bytes())
        } else {
            Doc(doc.into_bytes())
        }
    });
    run(64, nested, |b| check(&s, &b));
}

/// Minimal inputs the properties found, kept as plain tests. Each was accepted before and then
/// failed later (on every sync, or by panicking, or by hanging), or escaped the pod's directories.
mod regressions {
    use super::*;

    const HEAD: &str =
        "metadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n";

    /// `HEAD` with `extra` appended to the container.
    fn with_container(extra: &str) -> String {
        format!("{HEAD}{extra}")
    }

    fn refused(yaml: &str, field: &str) {
        let doc = Doc(yaml.as_bytes().to_vec());
        let err = match decode(&doc.0) {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("accepted: {yaml}"),
            Err(e) => panic!("{e}"),
        };
        let msg = err.to_string();
        assert!(msg.contains(MANIFEST), "{msg}");
        assert!(msg.contains(field), "{field} not named in: {msg}");
        if let Err(e) = check_error(&err) {
            panic!("{e}");
        }
    }

    fn accepted_and_runs(yaml: &str) {
        let d = manifest::decode(Path::new(MANIFEST), yaml.as_bytes(), NODE).expect("valid");
        let s = Scratch::new("regression");
        if let Err(e) = later_stages(&s, &d.pod) {
            panic!("{e}");
        }
    }

    #[test]
    fn a_valid_pod_runs_through_every_stage() {
        accepted_and_runs(HEAD);
        accepted_and_runs(&with_container(
            "    env:\n    - {name: A, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['x']\"}}}\n    - {name: B, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n    resources: {limits: {cpu: 500m, memory: 1Gi}, requests: {cpu: 100m}}\n    volumeMounts: [{name: v, mountPath: /v, subPath: a/b}]\n  volumes: [{name: v, emptyDir: {}}]\n",
        ));
    }

    #[test]
    fn a_broken_second_document_does_not_hang_the_decoder() {
        // serde_yaml_ng hands out the same parse error forever; counting documents never ended.
        let d = decode(format!("{HEAD}---\n{{\n").as_bytes())
            .expect("decode returns")
            .expect("the first document is the pod");
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    }

    #[test]
    fn a_syntax_error_before_any_key_names_the_document_root() {
        // serde_path_to_error gave an empty path: "field : block sequence entries are not
        // allowed in this context".
        let err = match decode(b"&apiVersion: - ") {
            Ok(Err(e)) => e,
            other => panic!("{other:?}"),
        };
        assert!(err.to_string().contains("field .: "), "{err}");
        if let Err(e) = check_error(&err) {
            panic!("{e}");
        }
    }

    #[test]
    fn unsupported_env_sources_are_refused_up_front() {
        for (env, field) in [
            (
                "{name: A, valueFrom: {fieldRef: {fieldPath: status.phase}}}",
                "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            ),
            (
                "{name: A, valueFrom: {resourceFieldRef: {resource: limits.ephemeral-storage}}}",
                "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
            ),
            (
                "{name: A, valueFrom: {configMapKeyRef: {name: cm, key: k}}}",
                "spec.containers[0].env[0].valueFrom",
            ),
            (
                "{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}",
                "spec.containers[0].env[0].valueFrom",
            ),
            (
                "{name: A, valueFrom: {}}",
                "spec.containers[0].env[0].valueFrom",
            ),
            (
                "{name: A, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 3m}}}",
                "spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor",
            ),
            (
                "{name: A, valueFrom: {resourceFieldRef: {resource: limits.cpu, containerName: other}}}",
                "spec.containers[0].env[0].valueFrom.resourceFieldRef.containerName",
            ),
            (
                "{name: \"A=B\", value: x}",
                "spec.containers[0].env[0].name",
            ),
        ] {
            refused(&with_container(&format!("    env: [{env}]\n")), field);
        }
        refused(
            &with_container("    envFrom: [{configMapRef: {name: cm}}]\n"),
            "spec.containers[0].envFrom",
        );
    }

    #[test]
    fn sub_paths_cannot_leave_their_volume() {
        // An absolute subPath replaced the volume's host path: the container got the host's /etc.
        for (sub, why) in [
            ("/etc", "must be a relative path"),
            ("../x", "must not contain '..'"),
        ] {
            refused(
                &with_container(&format!(
                    "    volumeMounts: [{{name: v, mountPath: /v, subPath: \"{sub}\"}}]\n  volumes: [{{name: v, emptyDir: {{}}}}]\n"
                )),
                &format!(
                    "spec.containers[0].volumeMounts[0].subPath: Invalid value: {sub:?}: {why}"
                ),
            );
        }
    }

    #[test]
    fn only_volumes_nodelet_can_provide_are_accepted() {
        refused(
            &with_container(
                "    volumeMounts: [{name: v, mountPath: /v}]\n  volumes: [{name: v, configMap: {name: cm}}]\n",
            ),
            "spec.volumes[0].configMap: Unsupported value",
        );
        refused(
            &format!("{HEAD}  volumes: [{{name: v}}]\n"),
            "spec.volumes[0]: Required value",
        );
        refused(
            &format!("{HEAD}  volumes: [{{name: \"/\", emptyDir: {{}}}}]\n"),
            "spec.volumes[0].name",
        );
        refused(
            &format!(
                "{HEAD}  volumes: [{{name: v, emptyDir: {{}}}}, {{name: v, emptyDir: {{}}}}]\n"
            ),
            "spec.volumes[1].name: Duplicate value",
        );
    }

    #[test]
    fn uids_that_name_other_directories_are_refused() {
        // <root-dir>/pods/<uid> is removed recursively when the pod goes.
        for uid in ["/", ".", "..", "../../etc", "a/b"] {
            refused(
                &HEAD.replace("{name: p}", &format!("{{name: p, uid: \"{uid}\"}}")),
                "metadata.uid",
            );
        }
    }

    #[test]
    fn quantities_past_the_runtime_arithmetic_are_refused() {
        // 1e11 CPUs overflowed the CFS quota (millicores × 100000) and panicked the pod worker in
        // debug builds; 10Pi of memory overflowed the OOM score (1000 × bytes).
        for (res, q) in [
            ("limits: {cpu: \"1e11\"}", "limits[cpu]"),
            ("requests: {memory: 10Pi}", "requests[memory]"),
        ] {
            refused(
                &with_container(&format!("    resources: {{{res}}}\n")),
                &format!("spec.containers[0].resources.{q}"),
            );
        }
        refused(
            &with_container("    resources: {limits: {cpu: 100m}, requests: {cpu: 200m}}\n"),
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"200m\": must be less than or equal to cpu limit of 100m",
        );
    }

    #[test]
    fn a_log_directory_name_over_name_max_is_refused() {
        // <namespace>_<name>-<node>_<uid> is one directory name; past 255 bytes every sync failed
        // with ENAMETOOLONG.
        let name = vec!["a".repeat(60); 4].join(".");
        refused(
            &HEAD.replace("{name: p}", &format!("{{name: {name}}}")),
            "over the 255-byte file name limit",
        );
    }

    #[test]
    fn ports_and_policies_are_checked() {
        for (extra, field) in [
            (
                "    ports: [{containerPort: 0}]\n",
                "spec.containers[0].ports[0].containerPort",
            ),
            (
                "    ports: [{containerPort: 80, hostPort: 70000}]\n",
                "spec.containers[0].ports[0].hostPort",
            ),
            (
                "    ports: [{containerPort: 80, protocol: ICMP}]\n",
                "spec.containers[0].ports[0].protocol",
            ),
            (
                "    ports: [{containerPort: 80, hostPort: 80}, {containerPort: 81, hostPort: 80}]\n",
                "spec.containers[0].ports[1].hostPort: Duplicate value",
            ),
            (
                "    volumeMounts: [{name: v, mountPath: /v, mountPropagation: Sideways}]\n  volumes: [{name: v, emptyDir: {}}]\n",
                "spec.containers[0].volumeMounts[0].mountPropagation",
            ),
            (
                "    securityContext: {runAsUser: -1}\n",
                "spec.containers[0].securityContext.runAsUser",
            ),
            (
                "    restartPolicy: Sometimes\n",
                "spec.containers[0].restartPolicy: Unsupported value",
            ),
            ("    image: \" busybox\"\n", "spec.containers[0].image"),
            (
                "  dnsPolicy: Sometimes\n",
                "spec.dnsPolicy: Unsupported value",
            ),
            ("  hostname: Not_A_Label\n", "spec.hostname"),
        ] {
            refused(&with_container(extra), field);
        }
    }
}
