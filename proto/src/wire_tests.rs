//! Field numbers against a hand-written protobuf wire reader.
//!
//! prost round-trips would pass with any field numbers, so these tests encode a message with
//! prost and read the raw tags back (or build raw bytes and decode them with prost). A wrong
//! number in `api.proto`, for the fields the kubelet uses most, fails here. Expected numbers
//! are those of `k8s.io/cri-api` `runtime/v1/api.proto`.

use prost::Message;

use crate::runtime::v1 as cri;

/// One decoded field: its number and value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

fn read_varint(buf: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().expect("truncated varint");
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long")
}

/// Splits a message into its top-level fields, in wire order.
fn fields(mut buf: &[u8]) -> Vec<(u32, Val)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf);
        let number = u32::try_from(key >> 3).expect("field number fits u32");
        let val = match key & 7 {
            0 => Val::Varint(read_varint(&mut buf)),
            1 => {
                let (b, rest) = buf.split_at(8);
                buf = rest;
                Val::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)).expect("length fits usize");
                let (b, rest) = buf.split_at(len);
                buf = rest;
                Val::Bytes(b.to_vec())
            }
            5 => {
                let (b, rest) = buf.split_at(4);
                buf = rest;
                Val::Fixed32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
            }
            wt => panic!("unexpected wire type {wt}"),
        };
        out.push((number, val));
    }
    out
}

/// The single field `number` of a message; panics if it is missing or repeated.
fn field(buf: &[u8], number: u32) -> Val {
    let mut found = fields(buf).into_iter().filter(|(n, _)| *n == number);
    let (_, v) = found
        .next()
        .unwrap_or_else(|| panic!("field {number} missing"));
    assert!(found.next().is_none(), "field {number} repeated");
    v
}

fn bytes(buf: &[u8], number: u32) -> Vec<u8> {
    match field(buf, number) {
        Val::Bytes(b) => b,
        other => panic!("field {number} is {other:?}, not length-delimited"),
    }
}

fn string(buf: &[u8], number: u32) -> String {
    String::from_utf8(bytes(buf, number)).expect("utf-8")
}

fn varint(buf: &[u8], number: u32) -> u64 {
    match field(buf, number) {
        Val::Varint(v) => v,
        other => panic!("field {number} is {other:?}, not a varint"),
    }
}

/// Follows a path of embedded-message field numbers.
fn sub(buf: &[u8], path: &[u32]) -> Vec<u8> {
    path.iter().fold(buf.to_vec(), |b, &n| bytes(&b, n))
}

// Writers for the raw-bytes direction.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

fn enc_varint(number: u32, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, number, 0);
    put_varint(&mut out, v);
    out
}

fn enc_bytes(number: u32, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, number, 2);
    put_varint(&mut out, b.len() as u64);
    out.extend_from_slice(b);
    out
}

fn msg(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn sandbox_config() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 3,
        }),
        hostname: "web-host".into(),
        log_directory: "/var/log/pods/default_web_uid-1".into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            ..Default::default()
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Udp.into(),
            container_port: 53,
            host_port: 5353,
            host_ip: String::new(),
        }],
        labels: [("app".to_owned(), "web".to_owned())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/poduid-1".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node.into(),
                    pid: cri::NamespaceMode::Container.into(),
                    ipc: cri::NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                run_as_group: Some(cri::Int64Value { value: 1000 }),
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn pod_sandbox_config_field_numbers() {
    let buf = cri::RunPodSandboxRequest {
        config: Some(sandbox_config()),
        runtime_handler: "runc".into(),
    }
    .encode_to_vec();
    assert_eq!(string(&buf, 2), "runc");
    let cfg = sub(&buf, &[1]);

    let meta = sub(&cfg, &[1]);
    assert_eq!(string(&meta, 1), "web");
    assert_eq!(string(&meta, 2), "uid-1");
    assert_eq!(string(&meta, 3), "default");
    assert_eq!(varint(&meta, 4), 3);

    assert_eq!(string(&cfg, 2), "web-host");
    assert_eq!(string(&cfg, 3), "/var/log/pods/default_web_uid-1");
    assert_eq!(string(&sub(&cfg, &[4]), 1), "10.0.0.10");
    let port = sub(&cfg, &[5]);
    assert_eq!(varint(&port, 1), 1, "UDP");
    assert_eq!(varint(&port, 2), 53);
    assert_eq!(varint(&port, 3), 5353);
    // map<string,string> labels = 6: entries with key = 1, value = 2.
    let label = sub(&cfg, &[6]);
    assert_eq!(
        (string(&label, 1), string(&label, 2)),
        ("app".into(), "web".into())
    );

    let linux = sub(&cfg, &[8]);
    assert_eq!(string(&linux, 1), "/kubepods/poduid-1");
    let sc = sub(&linux, &[2]);
    assert_eq!(varint(&sc, 6), 1, "privileged");
    assert_eq!(varint(&sub(&sc, &[8]), 1), 1000, "run_as_group");
    let ns = sub(&sc, &[1]);
    assert_eq!(varint(&ns, 1), 2, "network = NODE");
    assert_eq!(varint(&ns, 2), 1, "pid = CONTAINER");
    assert!(
        fields(&ns).iter().all(|(n, _)| *n != 3),
        "ipc = POD is the default and is not sent"
    );
}

#[test]
fn container_config_field_numbers() {
    let cfg = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 2,
        }),
        image: Some(cri::ImageSpec {
            image: "busybox:latest".into(),
            user_specified_image: "busybox".into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into()],
        args: vec!["-c".into(), "sleep 1".into()],
        working_dir: "/work".into(),
        envs: vec![cri::KeyValue {
            key: "A".into(),
            value: "1".into(),
        }],
        mounts: vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/x".into(),
            readonly: true,
            propagation: cri::MountPropagation::PropagationBidirectional.into(),
            ..Default::default()
        }],
        log_path: "app/2.log".into(),
        tty: true,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 20 << 20,
                oom_score_adj: 1000,
                memory_swap_limit_in_bytes: 40 << 20,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                run_as_user: Some(cri::Int64Value { value: 65534 }),
                run_as_group: Some(cri::Int64Value { value: 65533 }),
                readonly_rootfs: true,
                no_new_privs: true,
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost.into(),
                    localhost_ref: "/p.json".into(),
                }),
                ..Default::default()
            }),
        }),
        stop_signal: cri::Signal::Sigterm.into(),
        ..Default::default()
    };
    let buf = cri::CreateContainerRequest {
        pod_sandbox_id: "sb".into(),
        config: Some(cfg),
        sandbox_config: Some(sandbox_config()),
    }
    .encode_to_vec();
    assert_eq!(string(&buf, 1), "sb");
    assert_eq!(string(&sub(&buf, &[3, 1]), 1), "web", "sandbox_config = 3");
    let c = sub(&buf, &[2]);

    let meta = sub(&c, &[1]);
    assert_eq!((string(&meta, 1), varint(&meta, 2)), ("app".into(), 2));
    let image = sub(&c, &[2]);
    assert_eq!(string(&image, 1), "busybox:latest");
    assert_eq!(string(&image, 18), "busybox");
    assert_eq!(string(&c, 3), "/bin/sh");
    let args: Vec<_> = fields(&c).into_iter().filter(|(n, _)| *n == 4).collect();
    assert_eq!(args.len(), 2, "args = 4");
    assert_eq!(string(&c, 5), "/work");
    let env = sub(&c, &[6]);
    assert_eq!((string(&env, 1), string(&env, 2)), ("A".into(), "1".into()));
    let mount = sub(&c, &[7]);
    assert_eq!(string(&mount, 1), "/data");
    assert_eq!(string(&mount, 2), "/var/lib/x");
    assert_eq!(varint(&mount, 3), 1);
    assert_eq!(varint(&mount, 5), 2, "PROPAGATION_BIDIRECTIONAL");
    assert_eq!(string(&c, 11), "app/2.log");
    assert_eq!(varint(&c, 14), 1, "tty");
    assert_eq!(varint(&c, 18), 23, "stop_signal = SIGTERM");

    let res = sub(&c, &[15, 1]);
    assert_eq!(varint(&res, 1), 100_000);
    assert_eq!(varint(&res, 2), 50_000);
    assert_eq!(varint(&res, 3), 512);
    assert_eq!(varint(&res, 4), 20 << 20);
    assert_eq!(varint(&res, 5), 1000);
    assert_eq!(varint(&res, 10), 40 << 20);

    let sc = sub(&c, &[15, 2]);
    assert_eq!(string(&sub(&sc, &[1]), 2), "ALL", "drop_capabilities = 2");
    assert_eq!(varint(&sub(&sc, &[5]), 1), 65534, "run_as_user = 5");
    assert_eq!(varint(&sub(&sc, &[12]), 1), 65533, "run_as_group = 12");
    assert_eq!(varint(&sc, 7), 1, "readonly_rootfs");
    assert_eq!(varint(&sc, 11), 1, "no_new_privs");
    let seccomp = sub(&sc, &[15]);
    assert_eq!(varint(&seccomp, 1), 2, "Localhost");
    assert_eq!(string(&seccomp, 2), "/p.json");
}

#[test]
fn pull_image_request_field_numbers() {
    let buf = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: "127.0.0.1:5000/x:1".into(),
            ..Default::default()
        }),
        auth: Some(cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            server_address: "127.0.0.1:5000".into(),
            registry_token: "t".into(),
            ..Default::default()
        }),
        sandbox_config: Some(sandbox_config()),
    }
    .encode_to_vec();
    assert_eq!(string(&sub(&buf, &[1]), 1), "127.0.0.1:5000/x:1");
    let auth = sub(&buf, &[2]);
    assert_eq!(string(&auth, 1), "u");
    assert_eq!(string(&auth, 2), "p");
    assert_eq!(string(&auth, 4), "127.0.0.1:5000");
    assert_eq!(string(&auth, 6), "t");
    assert_eq!(string(&sub(&buf, &[3, 1]), 2), "uid-1");
}

#[test]
fn container_status_decodes_from_runtime_field_numbers() {
    let raw = msg(&[
        enc_bytes(1, b"cid"),
        enc_bytes(2, &msg(&[enc_bytes(1, b"app"), enc_varint(2, 4)])),
        enc_varint(3, 2), // CONTAINER_EXITED
        enc_varint(4, 10),
        enc_varint(5, 20),
        enc_varint(6, 30),
        enc_varint(7, 137),
        enc_bytes(8, &enc_bytes(1, b"busybox")),
        enc_bytes(9, b"sha256:ref"),
        enc_bytes(10, b"OOMKilled"),
        enc_bytes(11, b"killed"),
        enc_bytes(14, &msg(&[enc_bytes(1, b"/data"), enc_bytes(2, b"/host")])),
        enc_bytes(15, b"/var/log/pods/x/app/4.log"),
        enc_bytes(
            16,
            &enc_bytes(1, &msg(&[enc_varint(4, 1 << 20), enc_varint(3, 2)])),
        ),
        enc_bytes(17, b"sha256:id"),
        enc_bytes(
            18,
            &enc_bytes(1, &msg(&[enc_varint(1, 7), enc_varint(2, 8)])),
        ),
        enc_varint(19, 13), // SIGKILL
    ]);
    let resp =
        cri::ContainerStatusResponse::decode(enc_bytes(1, &raw).as_slice()).expect("decodes");
    let s = resp.status.expect("status = 1");
    assert_eq!(s.id, "cid");
    assert_eq!(s.state(), cri::ContainerState::ContainerExited);
    assert_eq!(s.stop_signal(), cri::Signal::Sigkill);
    let meta = s.metadata.expect("metadata");
    assert_eq!((meta.name.as_str(), meta.attempt), ("app", 4));
    assert_eq!((s.created_at, s.started_at, s.finished_at), (10, 20, 30));
    assert_eq!(s.exit_code, 137);
    assert_eq!(s.image.expect("image").image, "busybox");
    assert_eq!(s.image_ref, "sha256:ref");
    assert_eq!(s.reason, "OOMKilled");
    assert_eq!(s.message, "killed");
    assert_eq!(s.mounts[0].host_path, "/host");
    assert_eq!(s.log_path, "/var/log/pods/x/app/4.log");
    let linux = s.resources.and_then(|r| r.linux).expect("resources.linux");
    assert_eq!(
        (linux.memory_limit_in_bytes, linux.cpu_shares),
        (1 << 20, 2)
    );
    assert_eq!(s.image_id, "sha256:id");
    let user = s.user.and_then(|u| u.linux).expect("user.linux");
    assert_eq!((user.uid, user.gid), (7, 8));
}

#[test]
fn pod_sandbox_status_decodes_from_runtime_field_numbers() {
    let status = msg(&[
        enc_bytes(1, b"sid"),
        enc_bytes(
            2,
            &msg(&[
                enc_bytes(1, b"web"),
                enc_bytes(2, b"uid"),
                enc_bytes(3, b"ns"),
            ]),
        ),
        enc_varint(3, 1), // SANDBOX_NOTREADY
        enc_varint(4, 99),
        enc_bytes(
            5,
            &msg(&[
                enc_bytes(1, b"10.88.0.2"),
                enc_bytes(2, &enc_bytes(1, b"fd00::2")),
            ]),
        ),
        enc_bytes(6, &enc_bytes(1, &enc_bytes(2, &enc_varint(1, 2)))),
        enc_bytes(9, b"runc"),
    ]);
    let raw = msg(&[
        enc_bytes(1, &status),
        enc_bytes(3, &enc_bytes(1, b"cid")),
        enc_varint(4, 1234),
    ]);
    let resp = cri::PodSandboxStatusResponse::decode(raw.as_slice()).expect("decodes");
    let s = resp.status.expect("status");
    assert_eq!(s.id, "sid");
    assert_eq!(s.state(), cri::PodSandboxState::SandboxNotready);
    assert_eq!(s.metadata.expect("metadata").namespace, "ns");
    assert_eq!(s.created_at, 99);
    let net = s.network.expect("network");
    assert_eq!(net.ip, "10.88.0.2");
    assert_eq!(net.additional_ips[0].ip, "fd00::2");
    let ns = s
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .expect("linux.namespaces.options");
    assert_eq!(ns.network(), cri::NamespaceMode::Node);
    assert_eq!(s.runtime_handler, "runc");
    assert_eq!(resp.containers_statuses[0].id, "cid");
    assert_eq!(resp.timestamp, 1234);
}

#[test]
fn container_stats_decode_from_runtime_field_numbers() {
    let u64v = |n, v| enc_bytes(n, &enc_varint(1, v));
    let stats = msg(&[
        enc_bytes(
            1,
            &msg(&[enc_bytes(1, b"cid"), enc_bytes(2, &enc_bytes(1, b"app"))]),
        ),
        enc_bytes(
            2,
            &msg(&[enc_varint(1, 5), u64v(2, 1_000_000), u64v(3, 250)]),
        ),
        enc_bytes(
            3,
            &msg(&[
                enc_varint(1, 6),
                u64v(2, 4096),
                u64v(3, 8192),
                u64v(4, 5000),
                u64v(5, 3000),
                u64v(6, 11),
                u64v(7, 12),
            ]),
        ),
        enc_bytes(
            4,
            &msg(&[
                enc_bytes(2, &enc_bytes(1, b"/var/lib/c")),
                u64v(3, 77),
                u64v(4, 3),
            ]),
        ),
        enc_bytes(5, &msg(&[enc_varint(1, 8), u64v(3, 64)])),
    ]);
    let resp =
        cri::ListContainerStatsResponse::decode(enc_bytes(1, &stats).as_slice()).expect("decodes");
    let s = &resp.stats[0];
    let attrs = s.attributes.as_ref().expect("attributes");
    assert_eq!(attrs.id, "cid");
    let cpu = s.cpu.as_ref().expect("cpu");
    assert_eq!(cpu.timestamp, 5);
    assert_eq!(
        cpu.usage_core_nano_seconds.as_ref().map(|v| v.value),
        Some(1_000_000)
    );
    assert_eq!(cpu.usage_nano_cores.as_ref().map(|v| v.value), Some(250));
    let mem = s.memory.as_ref().expect("memory");
    assert_eq!(mem.timestamp, 6);
    let get = |v: &Option<cri::UInt64Value>| v.as_ref().map(|v| v.value);
    assert_eq!(get(&mem.working_set_bytes), Some(4096));
    assert_eq!(get(&mem.available_bytes), Some(8192));
    assert_eq!(get(&mem.usage_bytes), Some(5000));
    assert_eq!(get(&mem.rss_bytes), Some(3000));
    assert_eq!(get(&mem.page_faults), Some(11));
    assert_eq!(get(&mem.major_page_faults), Some(12));
    let fs = s.writable_layer.as_ref().expect("writable_layer");
    assert_eq!(
        fs.fs_id.as_ref().map(|f| f.mountpoint.as_str()),
        Some("/var/lib/c")
    );
    assert_eq!(
        (get(&fs.used_bytes), get(&fs.inodes_used)),
        (Some(77), Some(3))
    );
    assert_eq!(
        get(&s.swap.as_ref().expect("swap").swap_usage_bytes),
        Some(64)
    );
}

#[test]
fn container_event_decodes_from_runtime_field_numbers() {
    let raw = msg(&[
        enc_bytes(1, b"cid"),
        enc_varint(2, 2), // CONTAINER_STOPPED_EVENT
        enc_varint(3, 42),
        enc_bytes(4, &enc_bytes(1, b"sid")),
        enc_bytes(5, &enc_bytes(1, b"cid")),
    ]);
    let ev = cri::ContainerEventResponse::decode(raw.as_slice()).expect("decodes");
    assert_eq!(ev.container_id, "cid");
    assert_eq!(
        ev.container_event_type(),
        cri::ContainerEventType::ContainerStoppedEvent
    );
    assert_eq!(ev.created_at, 42);
    assert_eq!(ev.pod_sandbox_status.expect("sandbox").id, "sid");
    assert_eq!(ev.containers_statuses[0].id, "cid");
}

#[test]
fn enum_values_match_upstream() {
    use cri::{
        CgroupDriver, ContainerEventType, ContainerState, MountPropagation, NamespaceMode,
        PodSandboxState, Protocol, Signal,
    };
    assert_eq!(
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(i32::from),
        [0, 1, 2]
    );
    assert_eq!(
        [
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Node,
            NamespaceMode::Target
        ]
        .map(i32::from),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            ContainerState::ContainerCreated,
            ContainerState::ContainerRunning,
            ContainerState::ContainerExited,
            ContainerState::ContainerUnknown
        ]
        .map(i32::from),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            PodSandboxState::SandboxReady,
            PodSandboxState::SandboxNotready
        ]
        .map(i32::from),
        [0, 1]
    );
    assert_eq!(
        [
            MountPropagation::PropagationPrivate,
            MountPropagation::PropagationHostToContainer,
            MountPropagation::PropagationBidirectional
        ]
        .map(i32::from),
        [0, 1, 2]
    );
    assert_eq!(
        [
            ContainerEventType::ContainerCreatedEvent,
            ContainerEventType::ContainerStartedEvent,
            ContainerEventType::ContainerStoppedEvent,
            ContainerEventType::ContainerDeletedEvent
        ]
        .map(i32::from),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [CgroupDriver::Systemd, CgroupDriver::Cgroupfs].map(i32::from),
        [0, 1]
    );
    assert_eq!(
        [
            Signal::RuntimeDefault,
            Signal::Sigkill,
            Signal::Sigterm,
            Signal::Sigrtmin,
            Signal::Sigrtmax
        ]
        .map(i32::from),
        [0, 13, 23, 35, 65]
    );
}
