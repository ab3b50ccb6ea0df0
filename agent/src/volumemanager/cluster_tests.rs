//! The volume manager against the real kube-apiserver (xtask's loopback control plane with
//! Node,RBAC authorization and NodeRestriction), with the node's own client certificate: a
//! ConfigMap, a Secret and a ServiceAccount made with kubectl, pods bound to the node that
//! reference them (the ServiceAccount admission adds kube-api-access-*), and
//! - the files written for configMap (items, modes), secret, optional-missing, downwardAPI and
//!   the projected kube-api-access volume (a token the API server accepts for the pod's
//!   ServiceAccount, ca.crt, namespace);
//! - env from configMapKeyRef, secretKeyRef, envFrom with prefix, optional misses, and the
//!   kubelet's CreateContainerConfigError texts, through the runtime manager's config builder;
//! - updates reaching the files (..data swapped, a key removed from the Secret gone);
//! - a pod whose ConfigMap does not exist failing with an error naming pod, volume and object;
//! - secret, projected and downwardAPI volumes on tmpfs, configMap on disk;
//! - cleanup unmounting and removing the volume directories.
//!
//! Skips without the control plane, fails instead under NODELET_REQUIRE_ALL=1.

use super::*;
use crate::kuberuntime::container::{ContainerInputs, container_config};
use std::time::{Duration, Instant};
use xtask::cluster::{self, ClusterOpts};

const NODE: &str = "vol-node";

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: default}
data: {a: "1", b: "2", greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: sec, namespace: default}
stringData: {password: s3cret, user: admin}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: vol, namespace: default, labels: {app: vol, tier: web}, annotations: {note: "say \"hi\""}}
spec:
  nodeName: vol-node
  serviceAccountName: app
  securityContext: {}
  containers:
  - name: c
    image: busybox:1.36
    envFrom:
    - {prefix: CFG_, configMapRef: {name: cfg}}
    - {configMapRef: {name: absent, optional: true}}
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: MISSING, valueFrom: {configMapKeyRef: {name: cfg, key: nope, optional: true}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
    - {name: BOTH, value: "$(GREETING)-$(CFG_a)"}
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: sec, mountPath: /sec}
    - {name: info, mountPath: /info}
  volumes:
  - name: cfg
    configMap:
      name: cfg
      items: [{key: a, path: dir/a.txt, mode: 0400}, {key: b, path: b}]
  - name: sec
    secret: {secretName: sec, defaultMode: 0600}
  - name: maybe
    configMap: {name: absent, optional: true}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: note, fieldRef: {fieldPath: "metadata.annotations['note']"}}
---
apiVersion: v1
kind: Pod
metadata: {name: broken, namespace: default}
spec:
  nodeName: vol-node
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox:1.36
    env:
    - {name: X, valueFrom: {configMapKeyRef: {name: cfg, key: nope}}}
  volumes:
  - name: needed
    configMap: {name: nope}
"#;

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn desired(c: &cluster::Cluster, name: &str) -> DesiredPod {
    let json = c
        .kubectl(&["get", "pod", "-n", "default", name, "-o", "json"])
        .expect("kubectl get pod");
    let pod: Pod = serde_json::from_str(&json).expect("a Pod");
    DesiredPod {
        pod_ref: PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: pod.metadata.uid.clone().expect("uid"),
        },
        pod,
        source: crate::pod::PodSource::Api,
    }
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn mode(dir: &Path, rel: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir.join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

/// prepare, retried while the node authorizer's graph has not seen the pod yet.
async fn prepare_until_ok(vm: &VolumeManager, p: &DesiredPod) {
    let started = Instant::now();
    loop {
        match vm.prepare(p).await {
            Ok(()) => break,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("prepare: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("prepare never succeeded: {e}"),
        }
    }
    eprintln!(
        "volumes of {} ready after {:.2} s (information, not a limit)",
        p.pod_ref,
        started.elapsed().as_secs_f64()
    );
}

fn node_context(root: &Path, vm: VolumeManager) -> crate::kuberuntime::NodeContext {
    let opts = crate::options::Options::from_args(
        ["nodelet", "--hostname-override", NODE]
            .into_iter()
            .map(String::from),
    )
    .expect("fixed flags resolve");
    crate::kuberuntime::NodeContext {
        node_name: NODE.into(),
        host_ip: "10.0.0.1".into(),
        pod_logs_dir: root.join("logs"),
        root_dir: root.to_owned(),
        cluster_dns: Vec::new(),
        cluster_domain: None,
        host_dns: Default::default(),
        cm: crate::cm::ContainerManager::new(&opts),
        memory_capacity: 1 << 30,
        cpu_capacity_milli: 2000,
        volumes: vm,
        recorder: crate::recorder::Recorder::logging_only(),
        seccomp_default: false,
        services: Default::default(),
    }
}

#[test]
fn volumes_and_env_from_the_real_api_server() {
    let base = std::env::temp_dir().join(format!("nodelet-volumes-{}", std::process::id()));
    let scratch = Scratch(base.clone());
    let Some(c) = cluster::start_or_skip(ClusterOpts {
        node_name: NODE.into(),
        ..ClusterOpts::new(base.join("cluster"))
    })
    .expect("control plane") else {
        return;
    };
    c.kubectl_in(&c.admin_kubeconfig(), &["apply", "-f", "-"], Some(OBJECTS))
        .expect("kubectl apply");
    let root = scratch.0.join("root");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let kc = kube::config::Kubeconfig::read_from(c.node_kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let vm = VolumeManager::new(Some(client), root.clone())
            .with_object_ttl(Duration::from_secs(3600))
            .with_node_allocatable(2000, 1 << 30);
        let p = desired(&c, "vol");
        prepare_until_ok(&vm, &p).await;
        let vols = root.join("pods").join(&p.pod_ref.uid).join("volumes");

        // configMap with items and modes.
        let cfg = vols.join("kubernetes.io~configmap/cfg");
        assert_eq!(read(&cfg, "dir/a.txt"), "1");
        assert_eq!(read(&cfg, "b"), "2");
        assert_eq!(mode(&cfg, "dir/a.txt"), 0o400);
        assert_eq!(mode(&cfg, "b"), 0o644);
        assert!(!cfg.join("greeting").exists(), "items select keys");
        let first = std::fs::read_link(cfg.join("..data")).expect("..data");
        // secret, defaultMode.
        let sec = vols.join("kubernetes.io~secret/sec");
        assert_eq!(read(&sec, "password"), "s3cret");
        assert_eq!(mode(&sec, "user"), 0o600);
        // optional and absent: an empty volume.
        let maybe = vols.join("kubernetes.io~configmap/maybe");
        assert!(maybe.join("..data").exists());
        // downwardAPI.
        let info = vols.join("kubernetes.io~downward-api/info");
        assert_eq!(read(&info, "labels"), "app=\"vol\"\ntier=\"web\"");
        assert_eq!(read(&info, "note"), "say \"hi\"");
        assert_eq!(read(&info, "name"), "vol");
        // kube-api-access-*: token, ca.crt, namespace.
        let access = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name.starts_with("kube-api-access-")))
            .expect("the ServiceAccount admission added kube-api-access-*");
        let proj = vm.host_path(&p.pod_ref.uid, access).expect("projected path");
        assert!(proj.ends_with(format!("kubernetes.io~projected/{}", access.name)));
        assert_eq!(read(&proj, "namespace"), "default");
        assert!(read(&proj, "ca.crt").contains("BEGIN CERTIFICATE"));
        assert!(
            tmpfs::is_mount_point(&sec).expect("stat")
                && tmpfs::is_mount_point(&proj).expect("stat")
                && tmpfs::is_mount_point(&info).expect("stat")
                && !tmpfs::is_mount_point(&cfg).expect("stat"),
            "secret, projected and downwardAPI volumes are on tmpfs, configMap on disk"
        );
        let token = read(&proj, "token");
        assert_eq!(mode(&proj, "token"), 0o644);
        let whoami = std::process::Command::new(c.kubectl_path())
            .args(["--server", &c.server(), "--certificate-authority"])
            .arg(c.ca_path())
            .args(["--token", &token, "auth", "whoami", "-o", "json"])
            .env("KUBECONFIG", base.join("no-kubeconfig"))
            .output()
            .expect("kubectl auth whoami");
        let who = String::from_utf8_lossy(&whoami.stdout);
        assert!(
            who.contains("system:serviceaccount:default:app") && who.contains(&p.pod_ref.uid),
            "the API server accepts the token as the pod's ServiceAccount, bound to the pod: {who} {}",
            String::from_utf8_lossy(&whoami.stderr)
        );

        // Env through the runtime manager's config builder.
        let ctx = node_context(&root, vm.clone());
        let spec = p.pod.spec.clone().expect("spec");
        let input = ContainerInputs {
            container: &spec.containers[0],
            kind: crate::kuberuntime::ephemeral::ContainerKind::Regular,
            restart_count: 0,
            image_ref: "sha256:0".into(),
            pod_ip: "10.88.0.9".into(),
            image_user: None,
        };
        let cfg_env = container_config(&ctx, &p, &input).expect("container config");
        let env: HashMap<String, String> = cfg_env
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert_eq!(env.get("CFG_a").map(String::as_str), Some("1"));
        assert_eq!(env.get("CFG_greeting").map(String::as_str), Some("hello"));
        assert_eq!(env.get("GREETING").map(String::as_str), Some("hello"));
        assert_eq!(env.get("PASSWORD").map(String::as_str), Some("s3cret"));
        assert_eq!(env.get("POD").map(String::as_str), Some("vol"));
        assert_eq!(env.get("SA").map(String::as_str), Some("app"));
        assert_eq!(env.get("BOTH").map(String::as_str), Some("hello-1"));
        assert!(!env.contains_key("MISSING"), "an optional miss sets nothing");
        let ro: Vec<bool> = cfg_env
            .mounts
            .iter()
            .filter(|m| ["/cfg", "/sec", "/info"].contains(&m.container_path.as_str()))
            .map(|m| m.readonly)
            .collect();
        assert_eq!(ro, [true, true, true], "API-backed volumes mount read-only");

        // An update reaches the files: ..data swapped, a removed key gone.
        c.kubectl(&[
            "patch",
            "configmap",
            "cfg",
            "-n",
            "default",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/data/a","value":"one"}]"#,
        ])
        .expect("patch configmap");
        c.kubectl(&[
            "patch",
            "secret",
            "sec",
            "-n",
            "default",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/user"}]"#,
        ])
        .expect("patch secret");
        // Only the watches can bring the update: the TTL cache would wait an hour.
        let patched = Instant::now();
        loop {
            vm.prepare(&p).await.expect("refresh");
            if read(&cfg, "dir/a.txt") == "one" && std::fs::symlink_metadata(sec.join("user")).is_err() {
                break;
            }
            assert!(
                patched.elapsed() < Duration::from_secs(60),
                "the ConfigMap and Secret updates did not arrive by watch"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(read(&cfg, "dir/a.txt"), "one");
        assert!(
            std::fs::symlink_metadata(sec.join("user")).is_err(),
            "a key no longer in the Secret vanished"
        );
        assert_eq!(read(&sec, "password"), "s3cret");
        assert_ne!(std::fs::read_link(cfg.join("..data")).expect("..data"), first);

        // A missing, non-optional ConfigMap: the error names pod, volume and object.
        let b = desired(&c, "broken");
        let started = Instant::now();
        let err = loop {
            let e = vm.prepare(&b).await.expect_err("configmap nope does not exist");
            let text = e.to_string();
            if text.contains("not found") || started.elapsed() > Duration::from_secs(60) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(
            err.contains("\"needed\"")
                && err.contains("default/broken")
                && err.contains("configmap \"nope\" not found"),
            "{err}"
        );
        let bspec = b.pod.spec.clone().expect("spec");
        let env_err = container_config(
            &ctx,
            &b,
            &ContainerInputs {
                container: &bspec.containers[0],
                ..input
            },
        )
        .expect_err("key nope is missing");
        assert!(
            env_err
                .to_string()
                .contains("couldn't find key nope in ConfigMap default/cfg"),
            "{env_err}"
        );

        vm.cleanup(&p.pod_ref.uid).await;
        assert!(!cfg.exists() && !proj.exists(), "cleanup removed the volumes");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !mounts.contains(&p.pod_ref.uid),
            "cleanup unmounted the pod's tmpfs volumes"
        );
    });
    c.stop().expect("stop the control plane");
}
