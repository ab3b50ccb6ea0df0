//! The harness against real containerd/runc: pods run, logs land, registries serve, and
//! nothing outlives `Env::stop`.
//!
//! Skips (with a printed reason) when containerd or root is missing; fails instead under
//! `NODELET_REQUIRE_ALL=1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use proto::runtime::v1 as cri;
use xtask::containerd::{Env, EnvOpts};
use xtask::images::{BUSYBOX_IMAGE, PAUSE_IMAGE};
use xtask::testing::start_env_or_skip;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build a tokio runtime")
}

/// A unique pod uid and cgroup parent per test (tests of one binary run in parallel threads).
fn unique(tag: &str) -> (String, String) {
    let uid = format!("{tag}-{}", std::process::id());
    (uid.clone(), format!("/nodelet-xtask-test-{uid}"))
}

fn sandbox_config(
    uid: &str,
    cgroup_parent: &str,
    log_dir: &Path,
    host_net: bool,
) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("pod-{uid}"),
            uid: uid.to_owned(),
            namespace: "default".to_owned(),
            attempt: 0,
        }),
        // Host network: no private UTS namespace, so no hostname may be set.
        hostname: if host_net {
            String::new()
        } else {
            format!("pod-{uid}")
        },
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_parent}/pod{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_net {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs a one-shot busybox container printing `line` in a new sandbox; returns the sandbox's
/// status after the container exited.
async fn run_echo_pod(
    env: &Env,
    image: &str,
    config: cri::PodSandboxConfig,
    line: &str,
) -> Result<cri::PodSandboxStatus> {
    run_pod(env, image, config, &format!("echo {line}"), true).await
}

/// Runs `sh -c script` in a new sandbox, waiting for it to exit 0 if `wait`.
async fn run_pod(
    env: &Env,
    image: &str,
    config: cri::PodSandboxConfig,
    script: &str,
    wait: bool,
) -> Result<cri::PodSandboxStatus> {
    let client = proto::Client::connect(env.socket()).await?;
    let mut rt = client.runtime();
    let sandbox = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("RunPodSandbox; containerd log:\n{}", env.log_tail(20)))?
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "echo".to_owned(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
                log_path: "echo/0.log".to_owned(),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .context("StartContainer")?;
    if wait {
        wait_exited_ok(&mut rt, &container).await?;
    }
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: sandbox,
        verbose: false,
    })
    .await
    .context("PodSandboxStatus")?
    .into_inner()
    .status
    .context("PodSandboxStatus without status")
}

/// Polls ContainerStatus until the container exited, requiring exit code 0.
async fn wait_exited_ok(
    rt: &mut proto::runtime::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    container: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: container.to_owned(),
                verbose: false,
            })
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .context("ContainerStatus without status")?;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            ensure!(
                st.exit_code == 0,
                "echo exited {}: {}",
                st.exit_code,
                st.message
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("container still {:?} after 20 s", st.state);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the Env's dir, processes and cgroups are gone.
fn assert_gone(dir: &Path, containerd_pid: Option<u32>, cgroup_parent: &str) {
    let needle = format!("{}/", dir.display());
    let left = xtask::process::pids_mentioning(&needle);
    assert!(
        left.is_empty(),
        "processes of {needle} survived stop: {left:?}"
    );
    if let Some(pid) = containerd_pid {
        assert!(
            xtask::process::wait_gone(&[pid], Duration::ZERO),
            "containerd {pid} survived stop"
        );
    }
    assert!(!dir.exists(), "{} survived stop", dir.display());
    let cg = PathBuf::from("/sys/fs/cgroup/memory").join(cgroup_parent.trim_start_matches('/'));
    assert!(!cg.exists(), "{} survived stop", cg.display());
}

#[test]
fn host_network_pod_logs_and_clean_stop() -> Result<()> {
    let (uid, parent) = unique("hostnet");
    let opts = EnvOpts {
        cgroup_parent: Some(parent.clone()),
        ..EnvOpts::default()
    };
    let Some(env) = start_env_or_skip(opts)? else {
        return Ok(());
    };
    let log_dir = env.dir().join("pods").join(&uid);
    let rt = runtime()?;
    rt.block_on(async {
        let client = proto::Client::connect(env.socket()).await?;
        let v = client
            .runtime()
            .version(cri::VersionRequest::default())
            .await?
            .into_inner();
        assert_eq!(v.runtime_name, "containerd");
        for image in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
            let st = client
                .image()
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image: image.to_owned(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await?
                .into_inner();
            let img = st.image.with_context(|| format!("{image} not imported"))?;
            assert!(
                img.repo_tags.iter().any(|t| t == image),
                "{:?}",
                img.repo_tags
            );
        }
        // Manifests say `busybox:1.35`; CRI normalises it to the imported name.
        let config = sandbox_config(&uid, &parent, &log_dir, true);
        run_echo_pod(&env, "busybox:1.35", config, "hello-from-busybox").await?;
        Ok::<_, anyhow::Error>(())
    })?;
    let log = std::fs::read_to_string(log_dir.join("echo/0.log"))
        .with_context(|| format!("no CRI log in {}", log_dir.display()))?;
    assert!(log.contains(" stdout F hello-from-busybox"), "{log}");
    let pod_cgroup = PathBuf::from("/sys/fs/cgroup/memory")
        .join(parent.trim_start_matches('/'))
        .join(format!("pod{uid}"));
    assert!(pod_cgroup.is_dir(), "{} missing", pod_cgroup.display());
    assert_eq!(env.remove_all_sandboxes()?, 1);
    assert!(
        !pod_cgroup.exists(),
        "{} survived its pod",
        pod_cgroup.display()
    );

    let dir = env.dir().to_owned();
    let pid = env.containerd_pid();
    assert!(pid.is_some());
    env.stop()?;
    assert_gone(&dir, pid, &parent);
    Ok(())
}

#[test]
fn bridge_pod_gets_an_address_in_the_env_subnet_and_pulls_from_registry() -> Result<()> {
    let (uid, parent) = unique("bridge");
    let opts = EnvOpts {
        cgroup_parent: Some(parent.clone()),
        ..EnvOpts::default()
    };
    let Some(env) = start_env_or_skip(opts)? else {
        return Ok(());
    };
    let registry = xtask::Registry::start()?;
    let pushed = registry.push_image(&env.images().busybox, "test/busybox:pushed")?;
    env.allow_insecure_registry(&registry.host())?;
    let log_dir = env.dir().join("pods").join(&uid);
    let rt = runtime()?;
    let status = rt.block_on(async {
        let client = proto::Client::connect(env.socket()).await?;
        let pulled = client
            .image()
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: pushed.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("PullImage {pushed}; log:\n{}", env.log_tail(20)))?
            .into_inner();
        assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
        let missing = client
            .image()
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: format!("{}/test/busybox:absent", registry.host()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        assert!(missing.is_err(), "pulling an absent tag succeeded");
        let config = sandbox_config(&uid, &parent, &log_dir, false);
        run_echo_pod(&env, &pushed, config, "hello-from-bridge").await
    })?;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    let prefix = format!("10.89.{}.", env.index());
    assert!(
        ip.starts_with(&prefix),
        "pod ip {ip:?} not in {}",
        env.subnet()
    );
    assert!(
        Path::new("/sys/class/net").join(env.bridge()).exists(),
        "bridge {} missing",
        env.bridge()
    );
    let log = std::fs::read_to_string(log_dir.join("echo/0.log"))?;
    assert!(log.contains(" stdout F hello-from-bridge"), "{log}");

    let (dir, pid, bridge) = (env.dir().to_owned(), env.containerd_pid(), env.bridge());
    env.stop()?;
    registry.stop()?;
    assert_gone(&dir, pid, &parent);
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} survived stop"
    );
    Ok(())
}

#[test]
fn parallel_envs_get_distinct_slots_and_drop_cleans_up() -> Result<()> {
    let Some(a) = start_env_or_skip(EnvOpts::default())? else {
        return Ok(());
    };
    let Some(b) = start_env_or_skip(EnvOpts::default())? else {
        return Ok(());
    };
    assert_ne!(a.index(), b.index());
    assert_ne!(a.socket(), b.socket());
    let gone = [
        (a.dir().to_owned(), a.containerd_pid()),
        (b.dir().to_owned(), b.containerd_pid()),
    ];
    drop(a);
    drop(b);
    for (dir, pid) in gone {
        let needle = format!("{}/", dir.display());
        assert!(xtask::process::pids_mentioning(&needle).is_empty());
        assert!(pid.is_some_and(|p| xtask::process::wait_gone(&[p], Duration::ZERO)));
        assert!(!dir.exists());
    }
    Ok(())
}

/// Set in the child process of `killed_harness_leaves_nothing_after_reclaim`.
const CHILD_VAR: &str = "NODELET_XTASK_TEST_CHILD";

/// Child half of `killed_harness_leaves_nothing_after_reclaim`: starts an Env with a running
/// pod, reports, and waits to be SIGKILLed. A no-op when run normally.
#[test]
fn child_env_with_running_pod() -> Result<()> {
    let Some(parent) = std::env::var_os(CHILD_VAR) else {
        return Ok(());
    };
    let parent = parent.to_string_lossy().into_owned();
    let env = Env::start(EnvOpts {
        cgroup_parent: Some(parent.clone()),
        ..EnvOpts::default()
    })?;
    let uid = "crash";
    let log_dir = env.dir().join("pods");
    runtime()?.block_on(run_pod(
        &env,
        BUSYBOX_IMAGE,
        sandbox_config(uid, &parent, &log_dir, true),
        "sleep 1000",
        false,
    ))?;
    println!("READY {}", env.dir().display());
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

#[test]
fn killed_harness_leaves_nothing_after_reclaim() -> Result<()> {
    if let Some(reason) = xtask::testing::containerd_unavailable() {
        return xtask::testing::skip(&reason);
    }
    if std::env::var_os(CHILD_VAR).is_some() {
        return Ok(());
    }
    let (_, parent) = unique("crash");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_env_with_running_pod",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, &parent)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot re-run the test binary")?;
    let stdout = child.stdout.take().context("no child stdout")?;
    let mut dir = None;
    for line in BufReader::new(stdout).lines() {
        // libtest prints "test NAME ... " without a newline before the test's own output.
        let line = line?;
        if let Some((_, d)) = line.split_once("READY ") {
            dir = Some(PathBuf::from(d.trim()));
            break;
        }
    }
    // Whatever happened, the child must not outlive the test.
    let _ = child.kill();
    child.wait()?;
    let dir = dir.context("child never reported READY")?;
    let needle = format!("{}/", dir.display());
    // containerd died with its parent (PR_SET_PDEATHSIG); the shim and the pod did not. The
    // bound is generous: on a loaded machine the dying containerd takes seconds to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    while xtask::process::pids_mentioning(&needle).iter().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "containerd")
    }) {
        ensure!(
            Instant::now() < deadline,
            "containerd outlived its killed parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !xtask::process::pids_mentioning(&needle).is_empty(),
        "expected the orphaned shim to be alive before reclaim"
    );
    // A parallel test process may reclaim the slot first; either way it must end up clean.
    xtask::containerd::reclaim_stale()?;
    assert_gone(&dir, None, &parent);
    Ok(())
}
