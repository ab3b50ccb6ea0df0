//! A real Kubernetes control plane on loopback: [`Cluster`] (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) in one state dir, for cluster-mode e2e tests and
//! `cargo xtask cluster up|down|status`.
//!
//! Binaries come from [`crate::k8s`] (built from the Go module proxy, cached per version). The
//! PKI is made here with rcgen, once per dir, and reused by later starts: one CA signs every
//! serving and client certificate and is also the controller-manager's CSR signer, so the
//! certificates a kubelet gets through TLS bootstrap chain to the same `--client-ca-file`.
//! What kubeadm would set up for nodes is set up too: a bootstrap token (group
//! [`BOOTSTRAP_GROUP`]) that may create CSRs, auto-approval of node client CSRs and of their
//! renewals, a node client certificate, and kubeconfigs for both paths.
//!
//! Everything listens on 127.0.0.1 only, on ports picked free at the first start and kept in
//! `cluster.json` while they stay free. Each component writes its log to `<dir>/<name>.log` and
//! its pid to `<dir>/run/<name>.pid`; [`down`] stops processes by those pidfiles (after
//! checking that the pid's command line still names the dir), SIGTERM then SIGKILL.
//!
//! Kubelets are not verified by the apiserver (`--kubelet-certificate-authority` is unset, as in
//! kubeadm's default): a kubelet's serving certificate is self-signed unless it asks for one.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use crate::k8s::{self, ControlPlaneBins};
use crate::process::{self, Daemon, run};

/// Env var: default state dir of `cargo xtask cluster` (else `<target>/nodelet-cluster`).
pub const DIR_VAR: &str = "NODELET_CLUSTER_DIR";
/// `--service-cluster-ip-range`; the `kubernetes` Service gets [`SERVICE_IP`].
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The first address of [`SERVICE_CIDR`], in the apiserver's serving certificate.
pub const SERVICE_IP: &str = "10.0.0.1";
/// The extra group of the bootstrap token; it may create CSRs and gets node client CSRs
/// approved.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:nodelet";
/// The service-account issuer (and default API audience).
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// CN of the apiserver's client certificate towards kubelets.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

const CA_NAME: &str = "nodelet-ca";
/// The aggregation layer's CA: it signs only the apiserver's proxy client certificate, so
/// request headers are trusted from that one client (kubeadm's `front-proxy-ca`).
const FRONT_PROXY_CA_NAME: &str = "nodelet-front-proxy-ca";
/// How long a component gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The default state dir: `$NODELET_CLUSTER_DIR` or `<target>/nodelet-cluster`.
pub fn default_dir() -> PathBuf {
    std::env::var_os(DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join("nodelet-cluster"))
}

/// This machine's hostname, lowercased (the kubelet's default node name).
pub fn default_node_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// State dir: PKI, etcd data, kubeconfigs, logs, pidfiles. Created if missing; a dir used
    /// before is reused (same CA, same data).
    pub dir: PathBuf,
    /// The node whose client certificate and kubeconfig are made.
    pub node_name: String,
    /// Kubernetes release (`vX.Y.Z`) of the binaries.
    pub release: String,
    /// etcd version (`v3.x.y`).
    pub etcd_version: String,
    /// Let the processes outlive this one (`cargo xtask cluster up`): no parent-death signal,
    /// own session. Stop them with [`down`]. A [`Cluster`] still stops them on drop unless
    /// [`Cluster::leave_running`] is called.
    pub detach: bool,
    /// How long each start-up step (etcd healthy, apiserver ready, controllers healthy, default
    /// ServiceAccount) may take.
    pub step_timeout: Duration,
}

impl ClusterOpts {
    /// Options for a cluster in `dir`, everything else default.
    pub fn new(dir: impl Into<PathBuf>) -> ClusterOpts {
        ClusterOpts {
            dir: dir.into(),
            ..ClusterOpts::default()
        }
    }
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            dir: default_dir(),
            node_name: default_node_name(),
            release: k8s::RELEASE.to_owned(),
            etcd_version: k8s::ETCD_VERSION.to_owned(),
            detach: false,
            step_timeout: Duration::from_secs(180),
        }
    }
}

/// A control-plane process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager.
    ControllerManager,
    /// kube-scheduler.
    Scheduler,
}

impl Component {
    /// Start order; stops go the other way.
    pub const ALL: [Component; 4] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Scheduler,
    ];

    /// Program name (also the log and pidfile stem).
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
        }
    }

    /// The path its health is probed on.
    fn health_path(self) -> &'static str {
        match self {
            Component::Etcd => "/health",
            Component::ApiServer => "/readyz",
            Component::ControllerManager | Component::Scheduler => "/healthz",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Files inside a state dir.
#[derive(Debug, Clone)]
struct Layout {
    dir: PathBuf,
    pki: PathBuf,
    run: PathBuf,
    etcd_data: PathBuf,
    state: PathBuf,
    token: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_owned(),
            pki: dir.join("pki"),
            run: dir.join("run"),
            etcd_data: dir.join("etcd"),
            state: dir.join("cluster.json"),
            token: dir.join("bootstrap-token"),
        }
    }

    fn crt(&self, name: &str) -> PathBuf {
        self.pki.join(format!("{name}.crt"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.pki.join(format!("{name}.key"))
    }

    fn ca(&self) -> PathBuf {
        self.crt("ca")
    }

    fn kubeconfig(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.kubeconfig"))
    }

    fn log(&self, c: Component) -> PathBuf {
        self.dir.join(format!("{}.log", c.name()))
    }

    fn pidfile(&self, c: Component) -> PathBuf {
        self.run.join(format!("{}.pid", c.name()))
    }

    /// What every component's command line contains: the dir with a trailing slash.
    fn needle(&self) -> String {
        format!("{}/", self.dir.display())
    }
}

/// The loopback ports of one cluster, kept in `cluster.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
    controller_manager: u16,
    scheduler: u16,
}

impl Ports {
    const KEYS: [&str; 5] = [
        "etcd_client",
        "etcd_peer",
        "apiserver",
        "controller_manager",
        "scheduler",
    ];

    fn from_array(p: [u16; 5]) -> Ports {
        Ports {
            etcd_client: p[0],
            etcd_peer: p[1],
            apiserver: p[2],
            controller_manager: p[3],
            scheduler: p[4],
        }
    }

    fn to_array(self) -> [u16; 5] {
        [
            self.etcd_client,
            self.etcd_peer,
            self.apiserver,
            self.controller_manager,
            self.scheduler,
        ]
    }

    fn of(self, c: Component) -> u16 {
        match c {
            Component::Etcd => self.etcd_client,
            Component::ApiServer => self.apiserver,
            Component::ControllerManager => self.controller_manager,
            Component::Scheduler => self.scheduler,
        }
    }

    fn to_json(self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in Self::KEYS.iter().zip(self.to_array()) {
            m.insert((*k).to_owned(), v.into());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Option<Ports> {
        let mut p = [0u16; 5];
        for (slot, k) in p.iter_mut().zip(Self::KEYS) {
            *slot = u16::try_from(v.get(k)?.as_u64()?).ok()?;
        }
        Some(Ports::from_array(p))
    }

    /// The saved ports if all are still free, else fresh ones.
    fn reuse_or_pick(saved: Option<Ports>) -> Result<Ports> {
        if let Some(p) = saved
            && p.to_array().iter().all(|&port| port_free(port))
        {
            return Ok(p);
        }
        // Hold every probe listener until all are picked so no two ports coincide.
        let listeners = (0..5)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0"))
            .collect::<Result<Vec<_>>>()?;
        let mut p = [0u16; 5];
        for (slot, l) in p.iter_mut().zip(&listeners) {
            *slot = l.local_addr().context("no local address")?.port();
        }
        Ok(Ports::from_array(p))
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `cluster.json`: what `status` and a later `up` need to know.
fn read_state(l: &Layout) -> Option<Value> {
    let text = fs::read_to_string(&l.state).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// PKI

/// The years a certificate is valid: from last year to ten years ahead (rcgen's default would
/// be 1975..4096, which some tools print as suspicious).
fn validity() -> (i32, i32) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Mean Gregorian year; a day's error at a year boundary is absorbed by the margin.
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(56);
    (year - 1, year + 10)
}

/// A CA: a key on disk and an issuer made from it. The issuer certificate is
/// re-made from fixed parameters, so it signs with the same name and key identifier as the
/// `ca.crt` written at creation.
struct Ca {
    issuer: rcgen::Certificate,
    key: KeyPair,
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (from, to) = validity();
    p.not_before = rcgen::date_time_ymd(from, 1, 1);
    p.not_after = rcgen::date_time_ymd(to, 1, 1);
    Ok(p)
}

impl Ca {
    /// Loads `pki/<stem>.key`, or creates the CA (key and `<stem>.crt`, subject CN=`cn`) if
    /// there is none.
    fn load_or_create(l: &Layout, stem: &str, cn: &str) -> Result<Ca> {
        let key_path = l.key(stem);
        let key = if key_path.is_file() {
            KeyPair::from_pem(&read_to_string(&key_path)?)
                .with_context(|| format!("bad CA key {}", key_path.display()))?
        } else {
            let key = KeyPair::generate().context("cannot generate the CA key")?;
            let cert = ca_params(cn)?
                .self_signed(&key)
                .with_context(|| format!("cannot self-sign CA {cn}"))?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&l.crt(stem), cert.pem().as_bytes(), 0o644)?;
            key
        };
        let issuer = ca_params(cn)?
            .self_signed(&key)
            .with_context(|| format!("cannot rebuild the issuer of CA {cn}"))?;
        Ok(Ca { issuer, key })
    }

    /// Writes `pki/<name>.crt` and `.key` unless both exist.
    fn ensure(&self, l: &Layout, name: &str, spec: &CertSpec) -> Result<()> {
        let (crt, key_path) = (l.crt(name), l.key(name));
        if crt.is_file() && key_path.is_file() {
            return Ok(());
        }
        let key = KeyPair::generate().with_context(|| format!("cannot generate key {name}"))?;
        let cert = spec
            .params()?
            .signed_by(&key, &self.issuer, &self.key)
            .with_context(|| format!("cannot sign certificate {name}"))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&crt, cert.pem().as_bytes(), 0o644)
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    Client,
    Server,
    /// etcd: its serving certificate is also its peer client certificate.
    Both,
}

/// A leaf certificate: subject, usage, subject alternative names.
#[derive(Debug, Clone)]
struct CertSpec {
    cn: String,
    org: Option<String>,
    usage: Usage,
    sans: Vec<String>,
}

impl CertSpec {
    fn client(cn: &str, org: Option<&str>) -> CertSpec {
        CertSpec {
            cn: cn.to_owned(),
            org: org.map(str::to_owned),
            usage: Usage::Client,
            sans: Vec::new(),
        }
    }

    fn server(cn: &str, usage: Usage, sans: &[&str]) -> CertSpec {
        CertSpec {
            cn: cn.to_owned(),
            org: None,
            usage,
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut p = CertificateParams::new(self.sans.clone())
            .with_context(|| format!("bad subject alternative names {:?}", self.sans))?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(o) = &self.org {
            p.distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        p.distinguished_name
            .push(DnType::CommonName, self.cn.as_str());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = match self.usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        p.use_authority_key_identifier_extension = true;
        let (from, to) = validity();
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        Ok(p)
    }
}

const LOOPBACK_SANS: &[&str] = &["127.0.0.1", "::1", "localhost"];

/// Every certificate of a cluster whose node is `node`: (file stem, spec).
fn cert_specs(node: &str) -> Vec<(String, CertSpec)> {
    let mut apiserver_sans = LOOPBACK_SANS.to_vec();
    apiserver_sans.extend([
        SERVICE_IP,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]);
    vec![
        (
            "etcd-server".to_owned(),
            CertSpec::server("etcd", Usage::Both, LOOPBACK_SANS),
        ),
        (
            "apiserver-etcd-client".to_owned(),
            CertSpec::client("kube-apiserver-etcd-client", None),
        ),
        (
            "apiserver".to_owned(),
            CertSpec::server("kube-apiserver", Usage::Server, &apiserver_sans),
        ),
        (
            "apiserver-kubelet-client".to_owned(),
            CertSpec::client(KUBELET_CLIENT_USER, None),
        ),
        (
            "admin".to_owned(),
            CertSpec::client("nodelet-admin", Some("system:masters")),
        ),
        (
            "controller-manager".to_owned(),
            CertSpec::client("system:kube-controller-manager", None),
        ),
        (
            "controller-manager-serving".to_owned(),
            CertSpec::server("kube-controller-manager", Usage::Server, LOOPBACK_SANS),
        ),
        (
            "scheduler".to_owned(),
            CertSpec::client("system:kube-scheduler", None),
        ),
        (
            "scheduler-serving".to_owned(),
            CertSpec::server("kube-scheduler", Usage::Server, LOOPBACK_SANS),
        ),
        (
            format!("node-{node}"),
            CertSpec::client(&format!("system:node:{node}"), Some("system:nodes")),
        ),
    ]
}

/// Creates what is missing of the PKI: CA, leaf certificates, service-account key pair.
fn ensure_pki(l: &Layout, node: &str) -> Result<()> {
    fs::create_dir_all(&l.pki).with_context(|| format!("cannot create {}", l.pki.display()))?;
    fs::set_permissions(&l.pki, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", l.pki.display()))?;
    let ca = Ca::load_or_create(l, "ca", CA_NAME)?;
    for (name, spec) in cert_specs(node) {
        ca.ensure(l, &name, &spec)?;
    }
    let front = Ca::load_or_create(l, "front-proxy-ca", FRONT_PROXY_CA_NAME)?;
    front.ensure(
        l,
        "front-proxy-client",
        &CertSpec::client("front-proxy-client", None),
    )?;
    let (sa_key, sa_pub) = (l.key("sa"), l.pki.join("sa.pub"));
    if !(sa_key.is_file() && sa_pub.is_file()) {
        let key = KeyPair::generate().context("cannot generate the service-account key")?;
        write_file(&sa_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&sa_pub, key.public_key_pem().as_bytes(), 0o644)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bootstrap token, kubeconfigs, API objects

/// A bootstrap token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part; the Secret is `kube-system/bootstrap-token-<id>`.
    pub id: String,
    /// The private part.
    pub secret: String,
}

impl BootstrapToken {
    fn generate() -> Result<BootstrapToken> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut bytes = [0u8; 22];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("cannot read /dev/urandom")?;
        // 256 % 36 = 4: a negligible bias for a test cluster's token.
        let s: String = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Ok(BootstrapToken {
            id: s[..6].to_owned(),
            secret: s[6..].to_owned(),
        })
    }

    fn parse(s: &str) -> Option<BootstrapToken> {
        let (id, secret) = s.trim().split_once('.')?;
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (ok(id, 6) && ok(secret, 16)).then(|| BootstrapToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// `<id>.<secret>`, as a bearer token.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

fn load_or_create_token(l: &Layout) -> Result<BootstrapToken> {
    if let Ok(s) = fs::read_to_string(&l.token)
        && let Some(t) = BootstrapToken::parse(&s)
    {
        return Ok(t);
    }
    let t = BootstrapToken::generate()?;
    write_file(&l.token, format!("{}\n", t.token()).as_bytes(), 0o600)?;
    Ok(t)
}

/// How a kubeconfig's user authenticates.
enum Credentials {
    /// Client certificate and key files.
    Cert { crt: PathBuf, key: PathBuf },
    /// A bearer token.
    Token(String),
}

/// A kubeconfig (JSON, which every YAML reader accepts) with data embedded, so it can be
/// copied elsewhere.
fn render_kubeconfig(
    server: &str,
    ca_pem: &[u8],
    user: &str,
    creds: &Credentials,
) -> Result<String> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let user_v = match creds {
        Credentials::Cert { crt, key } => {
            let crt_pem =
                fs::read(crt).with_context(|| format!("cannot read {}", crt.display()))?;
            let key_pem =
                fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            json!({ "client-certificate-data": b64(&crt_pem), "client-key-data": b64(&key_pem) })
        }
        Credentials::Token(t) => json!({ "token": t }),
    };
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "nodelet",
            "cluster": { "server": server, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{ "name": user, "user": user_v }],
        "contexts": [{ "name": user, "context": { "cluster": "nodelet", "user": user } }],
        "current-context": user,
    });
    Ok(serde_json::to_string_pretty(&v).expect("a JSON literal always serialises"))
}

/// The objects `up` applies once the apiserver is ready: the bootstrap token and the RBAC a
/// TLS-bootstrapping kubelet needs (kubeadm's `bootstraptoken/node` phase does the same).
fn bootstrap_objects(token: &BootstrapToken) -> Value {
    let binding = |name: &str, role: &str, kind: &str, subject: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject }],
        })
    };
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": format!("bootstrap-token-{}", token.id), "namespace": "kube-system" },
                "type": "bootstrap.kubernetes.io/token",
                "stringData": {
                    "description": "nodelet TLS bootstrap (cargo xtask cluster)",
                    "token-id": token.id,
                    "token-secret": token.secret,
                    "usage-bootstrap-authentication": "true",
                    "auth-extra-groups": BOOTSTRAP_GROUP,
                },
            },
            // Bootstrappers may create CSRs and watch them get signed...
            binding("nodelet:bootstrappers:node-bootstrapper", "system:node-bootstrapper",
                "Group", BOOTSTRAP_GROUP),
            // ...and their node client CSRs are approved by the csrapproving controller,
            binding("nodelet:bootstrappers:auto-approve-node-client",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                "Group", BOOTSTRAP_GROUP),
            // as are the renewals nodes ask for with their own certificate.
            binding("nodelet:nodes:auto-approve-node-client-renewal",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "Group", "system:nodes"),
            // The apiserver's client towards kubelets: logs, exec, port-forward, stats.
            binding("nodelet:apiserver-kubelet-client", "system:kubelet-api-admin",
                "User", KUBELET_CLIENT_USER),
        ],
    })
}

// ---------------------------------------------------------------------------------------------
// Probes: HTTPS GET against our CA, with a client certificate

/// A TLS client that trusts only the cluster CA and presents one client certificate.
#[derive(Debug, Clone)]
struct Prober {
    tls: Arc<rustls::ClientConfig>,
}

impl Prober {
    fn new(ca: &Path, crt: &Path, key: &Path) -> Result<Prober> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
        {
            let c = c.with_context(|| format!("bad certificate in {}", ca.display()))?;
            roots
                .add(c)
                .with_context(|| format!("cannot trust {}", ca.display()))?;
        }
        let chain = CertificateDer::pem_file_iter(crt)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .with_context(|| format!("cannot read {}", crt.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read {}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("no TLS versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("bad client certificate")?;
        Ok(Prober { tls: Arc::new(tls) })
    }

    /// `GET https://127.0.0.1:<port><path>`: status code and body.
    fn get(&self, port: u16, path: &str) -> Result<(u16, String)> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .and_then(|()| tcp.set_write_timeout(Some(Duration::from_secs(5))))
            .context("cannot set socket timeouts")?;
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let conn =
            rustls::ClientConnection::new(self.tls.clone(), name).context("cannot start TLS")?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .with_context(|| format!("cannot send GET {path} to {addr}"))?;
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            // A peer that closes without close_notify: what arrived is still the answer.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
            Err(e) => return Err(e).with_context(|| format!("reading GET {path} from {addr}")),
        }
        parse_response(&buf).with_context(|| format!("bad answer to GET {path} from {addr}"))
    }
}

/// Status code and body of an HTTP/1.1 response (chunked bodies are returned raw).
fn parse_response(buf: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {:?}", head.lines().next().unwrap_or("")))?;
    Ok((code, body.trim().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A started component: owned by this process (dies with it) or detached (outlives it).
#[derive(Debug)]
enum Proc {
    Owned(Daemon),
    Detached(Child),
}

#[derive(Debug)]
struct Running {
    component: Component,
    pid: u32,
    proc: Proc,
}

impl Running {
    /// `Some(how)` once the process has exited.
    fn exited(&mut self) -> Option<String> {
        match &mut self.proc {
            Proc::Owned(d) => d.exited(),
            Proc::Detached(c) => match c.try_wait() {
                Ok(Some(st)) => Some(st.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("wait failed: {e}")),
            },
        }
    }

    fn stop(&mut self, needle: &str) -> Result<()> {
        match &mut self.proc {
            Proc::Owned(d) => d.stop(STOP_GRACE),
            Proc::Detached(c) => {
                let r = stop_pid(self.component, self.pid, needle);
                // Reap it: it is still our child.
                let _ = c.try_wait();
                r
            }
        }
    }
}

/// Whether `pid` is a live (non-zombie) process whose command line contains `needle`.
fn is_ours(pid: u32, needle: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("X");
    if state == "Z" || state == "X" {
        return false;
    }
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

fn kill(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGTERM, up to [`STOP_GRACE`], SIGKILL, up to 10 s more. A pid that no longer runs one of
/// our commands (exited, or reused by something else) counts as stopped.
fn stop_pid(c: Component, pid: u32, needle: &str) -> Result<()> {
    if !is_ours(pid, needle) {
        return Ok(());
    }
    kill(pid, libc::SIGTERM);
    if wait_not_ours(pid, needle, STOP_GRACE) {
        return Ok(());
    }
    eprintln!("xtask: {c} (pid {pid}) ignored SIGTERM for {STOP_GRACE:?}; sending SIGKILL");
    kill(pid, libc::SIGKILL);
    if wait_not_ours(pid, needle, Duration::from_secs(10)) {
        return Ok(());
    }
    bail!("{c} (pid {pid}) is still running after SIGKILL")
}

fn wait_not_ours(pid: u32, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_ours(pid, needle) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

fn read_pidfile(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The command line of component `c`.
fn command(c: Component, bins: &ControlPlaneBins, l: &Layout, p: Ports) -> Command {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let flag = |k: &str, v: PathBuf| format!("--{k}={}", path(v));
    let ca = l.ca();
    let mut cmd;
    match c {
        Component::Etcd => {
            cmd = Command::new(&bins.etcd);
            let client = format!("https://127.0.0.1:{}", p.etcd_client);
            let peer = format!("https://127.0.0.1:{}", p.etcd_peer);
            let (crt, key) = (l.crt("etcd-server"), l.key("etcd-server"));
            cmd.args([
                "--name=nodelet",
                "--client-cert-auth",
                "--peer-client-cert-auth",
            ])
            .arg(flag("data-dir", l.etcd_data.clone()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=nodelet={peer}"))
            .arg(flag("cert-file", crt.clone()))
            .arg(flag("key-file", key.clone()))
            .arg(flag("trusted-ca-file", ca.clone()))
            .arg(flag("peer-cert-file", crt))
            .arg(flag("peer-key-file", key))
            .arg(flag("peer-trusted-ca-file", ca));
        }
        Component::ApiServer => {
            cmd = Command::new(&bins.apiserver);
            cmd.args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--enable-bootstrap-token-auth=true",
                "--allow-privileged=true",
                // The endpoint reconciler refuses a loopback advertise address ("may not be
                // in the loopback range"): the `kubernetes` Service keeps no endpoints, which
                // nothing here needs (pods cannot reach 127.0.0.1 of the host anyway).
                "--endpoint-reconciler-type=none",
            ])
            .arg(format!("--secure-port={}", p.apiserver))
            .arg(format!(
                "--etcd-servers=https://127.0.0.1:{}",
                p.etcd_client
            ))
            .arg(flag("etcd-cafile", ca.clone()))
            .arg(flag("etcd-certfile", l.crt("apiserver-etcd-client")))
            .arg(flag("etcd-keyfile", l.key("apiserver-etcd-client")))
            .arg(flag("tls-cert-file", l.crt("apiserver")))
            .arg(flag("tls-private-key-file", l.key("apiserver")))
            .arg(flag("client-ca-file", ca))
            .arg(flag(
                "kubelet-client-certificate",
                l.crt("apiserver-kubelet-client"),
            ))
            .arg(flag(
                "kubelet-client-key",
                l.key("apiserver-kubelet-client"),
            ))
            // kubeadm's order. The default puts Hostname first, and a node's hostname (a test
            // node's `--hostname-override`) need not resolve: logs and exec would fail there.
            .arg("--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname")
            .arg(format!("--service-account-issuer={SA_ISSUER}"))
            .arg(flag("service-account-key-file", l.pki.join("sa.pub")))
            .arg(flag("service-account-signing-key-file", l.key("sa")))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            // The aggregation layer (metrics-server, …): without a requestheader CA every
            // delegating component logs "missing content for CA bundle".
            .args([
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            ])
            .arg(flag(
                "requestheader-client-ca-file",
                l.crt("front-proxy-ca"),
            ))
            .arg(flag("proxy-client-cert-file", l.crt("front-proxy-client")))
            .arg(flag("proxy-client-key-file", l.key("front-proxy-client")));
        }
        Component::ControllerManager => {
            cmd = Command::new(&bins.controller_manager);
            let kc = l.kubeconfig("controller-manager");
            cmd.args([
                "--bind-address=127.0.0.1",
                "--controllers=*,bootstrapsigner,tokencleaner",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--cluster-name=nodelet",
            ])
            .arg(format!("--secure-port={}", p.controller_manager))
            .arg(flag("kubeconfig", kc.clone()))
            .arg(flag("authentication-kubeconfig", kc.clone()))
            .arg(flag("authorization-kubeconfig", kc))
            .arg(flag("tls-cert-file", l.crt("controller-manager-serving")))
            .arg(flag(
                "tls-private-key-file",
                l.key("controller-manager-serving"),
            ))
            .arg(flag("client-ca-file", ca.clone()))
            .arg(flag("cluster-signing-cert-file", ca.clone()))
            .arg(flag("cluster-signing-key-file", l.key("ca")))
            .arg(flag("root-ca-file", ca))
            .arg(flag("service-account-private-key-file", l.key("sa")));
        }
        Component::Scheduler => {
            cmd = Command::new(&bins.scheduler);
            let kc = l.kubeconfig("scheduler");
            cmd.args(["--bind-address=127.0.0.1", "--leader-elect=false"])
                .arg(format!("--secure-port={}", p.scheduler))
                .arg(flag("kubeconfig", kc.clone()))
                .arg(flag("authentication-kubeconfig", kc.clone()))
                .arg(flag("authorization-kubeconfig", kc))
                .arg(flag("tls-cert-file", l.crt("scheduler-serving")))
                .arg(flag("tls-private-key-file", l.key("scheduler-serving")))
                .arg(flag("client-ca-file", ca));
        }
    }
    cmd
}

/// Spawns a component: owned ([`Daemon`]: own process group, dies with us) or detached (own
/// session, no parent-death signal). Writes its pidfile.
fn spawn(c: Component, mut cmd: Command, l: &Layout, detach: bool) -> Result<Running> {
    let log = l.log(c);
    let (pid, proc) = if detach {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let err = out
            .try_clone()
            .context("cannot duplicate log file handle")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = process::describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {shown}"))?;
        (child.id(), Proc::Detached(child))
    } else {
        let d = Daemon::spawn(c.name(), cmd, &log)?;
        (d.pid(), Proc::Owned(d))
    };
    write_file(&l.pidfile(c), format!("{pid}\n").as_bytes(), 0o644)?;
    Ok(Running {
        component: c,
        pid,
        proc,
    })
}

/// Stops every component of the cluster in `dir` by its pidfile (scheduler first, etcd last),
/// then kills any control-plane process still naming the dir, and checks none is left.
pub fn down(dir: &Path) -> Result<()> {
    let l = Layout::new(dir);
    let needle = l.needle();
    let mut errors = Vec::new();
    for c in Component::ALL.into_iter().rev() {
        let pidfile = l.pidfile(c);
        let Some(pid) = read_pidfile(&pidfile) else {
            continue;
        };
        match stop_pid(c, pid, &needle) {
            Ok(()) => {
                let _ = fs::remove_file(&pidfile);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    errors.extend(sweep(&l));
    if errors.is_empty() {
        Ok(())
    } else {
        bail!(
            "stopping the cluster in {}: {}",
            dir.display(),
            errors.join("; ")
        )
    }
}

/// Kills control-plane processes of this dir that no pidfile named (a lost pidfile, a crashed
/// `up`); returns what is left or went wrong.
fn sweep(l: &Layout) -> Vec<String> {
    let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
    let killed = process::kill_trees(&names, &l.needle());
    if killed > 0 {
        eprintln!(
            "xtask: killed {killed} control-plane process(es) of {} without a pidfile",
            l.dir.display()
        );
    }
    let left: Vec<u32> = process::pids_mentioning(&l.needle())
        .into_iter()
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let argv0 = c.split(|&b| b == 0).next().unwrap_or(&[]);
                let prog = String::from_utf8_lossy(argv0);
                let prog = prog.rsplit('/').next().unwrap_or("");
                names.contains(&prog)
            })
        })
        .collect();
    if left.is_empty() {
        Vec::new()
    } else {
        vec![format!("control-plane processes still running: {left:?}")]
    }
}

/// One component as `status` sees it.
#[derive(Debug, Clone)]
pub struct ComponentStatus {
    /// Which.
    pub component: Component,
    /// Its pid, if its pidfile names a live process of this dir.
    pub pid: Option<u32>,
    /// `Ok(port)` if its health endpoint answered 200, else why not.
    pub ready: Result<u16, String>,
}

/// Liveness (pidfile) and health (HTTPS probe) of every component in `dir`.
pub fn status(dir: &Path) -> Result<Vec<ComponentStatus>> {
    let l = Layout::new(dir);
    let state = read_state(&l)
        .with_context(|| format!("no cluster in {} (no readable cluster.json)", dir.display()))?;
    let ports = Ports::from_json(&state["ports"])
        .with_context(|| format!("{} has no ports", l.state.display()))?;
    let prober = prober_for(&l, Component::ApiServer)?;
    let etcd_prober = prober_for(&l, Component::Etcd)?;
    let needle = l.needle();
    Ok(Component::ALL
        .into_iter()
        .map(|c| {
            let pid = read_pidfile(&l.pidfile(c)).filter(|&pid| is_ours(pid, &needle));
            let p = if c == Component::Etcd {
                &etcd_prober
            } else {
                &prober
            };
            let ready = probe(p, c, ports.of(c)).map(|()| ports.of(c));
            ComponentStatus {
                component: c,
                pid,
                ready,
            }
        })
        .collect())
}

/// A prober with the client certificate `c`'s health endpoint accepts: the apiserver's etcd
/// client certificate for etcd, the admin's for the rest.
fn prober_for(l: &Layout, c: Component) -> Result<Prober> {
    let who = if c == Component::Etcd {
        "apiserver-etcd-client"
    } else {
        "admin"
    };
    Prober::new(&l.ca(), &l.crt(who), &l.key(who))
}

fn probe(p: &Prober, c: Component, port: u16) -> Result<(), String> {
    match p.get(port, c.health_path()) {
        Ok((200, _)) => Ok(()),
        Ok((code, body)) => Err(format!("HTTP {code}: {}", first_lines(&body, 12))),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// A running control plane. Stopped on drop (unless [`Cluster::leave_running`]).
#[derive(Debug)]
pub struct Cluster {
    layout: Layout,
    opts: ClusterOpts,
    bins: ControlPlaneBins,
    ports: Ports,
    token: BootstrapToken,
    running: Vec<Running>,
    done: bool,
}

impl Cluster {
    /// Builds the binaries if needed, creates what is missing in `opts.dir` (PKI, token,
    /// kubeconfigs), starts etcd, the apiserver, the controller-manager and the scheduler, and
    /// returns once `/readyz` is ok and the `default` ServiceAccount of namespace `default`
    /// exists. Fails if a cluster already runs in that dir.
    pub fn start(opts: ClusterOpts) -> Result<Cluster> {
        let bins = k8s::control_plane(&opts.release, &opts.etcd_version)?;
        fs::create_dir_all(&opts.dir)
            .with_context(|| format!("cannot create {}", opts.dir.display()))?;
        let dir = std::path::absolute(&opts.dir)
            .with_context(|| format!("bad dir {}", opts.dir.display()))?;
        let layout = Layout::new(&dir);
        for c in Component::ALL {
            if let Some(pid) = read_pidfile(&layout.pidfile(c))
                && is_ours(pid, &layout.needle())
            {
                bail!(
                    "{c} (pid {pid}) of a cluster in {} is running; stop it first \
                     (`cargo xtask cluster down --dir {}`)",
                    dir.display(),
                    dir.display()
                );
            }
        }
        for d in [&layout.run, &layout.etcd_data] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        // etcd refuses a data dir others may read.
        fs::set_permissions(&layout.etcd_data, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod {}", layout.etcd_data.display()))?;
        ensure_pki(&layout, &opts.node_name).context("creating the cluster PKI")?;
        let token = load_or_create_token(&layout)?;
        let saved = read_state(&layout).and_then(|s| Ports::from_json(&s["ports"]));
        let ports = Ports::reuse_or_pick(saved)?;
        let state = json!({
            "release": opts.release,
            "etcd": opts.etcd_version,
            "node_name": opts.node_name,
            "ports": ports.to_json(),
        });
        write_file(
            &layout.state,
            serde_json::to_string_pretty(&state)
                .expect("a JSON literal always serialises")
                .as_bytes(),
            0o644,
        )?;
        let mut cluster = Cluster {
            layout,
            opts,
            bins,
            ports,
            token,
            running: Vec::new(),
            done: false,
        };
        cluster.write_kubeconfigs()?;
        // On failure `cluster` drops here, which stops whatever was started.
        cluster.launch()?;
        Ok(cluster)
    }

    fn write_kubeconfigs(&self) -> Result<()> {
        let l = &self.layout;
        let ca_pem =
            fs::read(l.ca()).with_context(|| format!("cannot read {}", l.ca().display()))?;
        let server = self.server();
        let node_cert = format!("node-{}", self.opts.node_name);
        let files: [(&str, String, Credentials); 5] = [
            (
                "admin",
                "nodelet-admin".to_owned(),
                self.cert_creds("admin"),
            ),
            (
                "controller-manager",
                "system:kube-controller-manager".to_owned(),
                self.cert_creds("controller-manager"),
            ),
            (
                "scheduler",
                "system:kube-scheduler".to_owned(),
                self.cert_creds("scheduler"),
            ),
            (
                "node",
                format!("system:node:{}", self.opts.node_name),
                self.cert_creds(&node_cert),
            ),
            (
                "bootstrap",
                format!("system:bootstrap:{}", self.token.id),
                Credentials::Token(self.token.token()),
            ),
        ];
        for (name, user, creds) in &files {
            let text = render_kubeconfig(&server, &ca_pem, user, creds)?;
            write_file(&l.kubeconfig(name), text.as_bytes(), 0o600)?;
        }
        Ok(())
    }

    fn cert_creds(&self, name: &str) -> Credentials {
        Credentials::Cert {
            crt: self.layout.crt(name),
            key: self.layout.key(name),
        }
    }

    fn launch(&mut self) -> Result<()> {
        let timeout = self.opts.step_timeout;
        self.start_component(Component::Etcd)?;
        self.wait_healthy(Component::Etcd, timeout)?;
        self.start_component(Component::ApiServer)?;
        self.wait_healthy(Component::ApiServer, timeout)?;
        let objects = serde_json::to_string(&bootstrap_objects(&self.token))
            .expect("a JSON literal always serialises");
        self.kubectl_in(
            &self.admin_kubeconfig(),
            &["apply", "-f", "-"],
            Some(&objects),
        )
        .context("applying the bootstrap token and its RBAC")?;
        self.start_component(Component::ControllerManager)?;
        self.start_component(Component::Scheduler)?;
        self.wait_healthy(Component::ControllerManager, timeout)?;
        self.wait_healthy(Component::Scheduler, timeout)?;
        self.wait_for(
            "the default ServiceAccount in namespace default (made by the controller-manager)",
            Component::ControllerManager,
            timeout,
            |c| {
                c.kubectl(&[
                    "get",
                    "serviceaccount",
                    "default",
                    "-n",
                    "default",
                    "-o",
                    "name",
                ])
                .map(drop)
            },
        )
    }

    fn start_component(&mut self, c: Component) -> Result<()> {
        let cmd = command(c, &self.bins, &self.layout, self.ports);
        let r = spawn(c, cmd, &self.layout, self.opts.detach)?;
        eprintln!(
            "xtask: started {c} (pid {}), log {}",
            r.pid,
            self.layout.log(c).display()
        );
        self.running.push(r);
        Ok(())
    }

    fn wait_healthy(&mut self, c: Component, timeout: Duration) -> Result<()> {
        let prober = prober_for(&self.layout, c)?;
        let port = self.ports.of(c);
        self.wait_for(
            &format!("{c} {} on 127.0.0.1:{port}", c.health_path()),
            c,
            timeout,
            |_| probe(&prober, c, port).map_err(|e| anyhow!(e)),
        )
    }

    /// Polls `check` until it succeeds; fails early if any component exits, naming its log.
    fn wait_for(
        &mut self,
        what: &str,
        blame: Component,
        timeout: Duration,
        check: impl Fn(&Cluster) -> Result<()>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            for r in &mut self.running {
                if let Some(exit) = r.exited() {
                    let log = self.layout.log(r.component);
                    bail!(
                        "{} exited ({exit}) while waiting for {what}; {} ends with:\n{}",
                        r.component,
                        log.display(),
                        process::log_tail(&log, 30)
                    );
                }
            }
            let last = match check(self) {
                Ok(()) => {
                    eprintln!(
                        "xtask: {what}: ok after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                Err(e) => e,
            };
            if started.elapsed() >= timeout {
                let log = self.layout.log(blame);
                bail!(
                    "timed out after {timeout:?} waiting for {what} (last error: {last:#}); {} \
                     ends with:\n{}",
                    log.display(),
                    process::log_tail(&log, 30)
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The node name the node credentials are for.
    pub fn node_name(&self) -> &str {
        &self.opts.node_name
    }

    /// The Kubernetes release running.
    pub fn release(&self) -> &str {
        &self.opts.release
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The cluster CA (also the CSR signer and `--client-ca-file`).
    pub fn ca_path(&self) -> PathBuf {
        self.layout.ca()
    }

    /// kubeconfig of a cluster admin (O=system:masters).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig("admin")
    }

    /// kubeconfig of node [`Cluster::node_name`] (CN=system:node:<name>, O=system:nodes).
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig("node")
    }

    /// kubeconfig with the bootstrap token, for a kubelet's `--bootstrap-kubeconfig`.
    pub fn bootstrap_kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig("bootstrap")
    }

    /// The bootstrap token.
    pub fn bootstrap_token(&self) -> &BootstrapToken {
        &self.token
    }

    /// The kube-apiserver's client certificate and key towards kubelets, for a kubelet's
    /// authentication tests.
    pub fn apiserver_kubelet_client(&self) -> (PathBuf, PathBuf) {
        let n = "apiserver-kubelet-client";
        (self.layout.crt(n), self.layout.key(n))
    }

    /// A kubeconfig for user `user` (in `group`, if any: rcgen writes one O) with a client
    /// certificate the cluster CA signs: `<dir>/user-<user>.kubeconfig`, made once. Such a user has no RBAC unless a
    /// binding names it (a test's "nobody", metrics-server's own identity).
    pub fn user_kubeconfig(&self, user: &str, group: Option<&str>) -> Result<PathBuf> {
        let name = user_stem(user);
        let path = self.layout.kubeconfig(&name);
        if path.is_file() {
            return Ok(path);
        }
        self.user_cert(user, group)?;
        let ca_pem = fs::read(self.layout.ca())
            .with_context(|| format!("cannot read {}", self.layout.ca().display()))?;
        let text = render_kubeconfig(&self.server(), &ca_pem, user, &self.cert_creds(&name))?;
        write_file(&path, text.as_bytes(), 0o600)?;
        Ok(path)
    }

    /// The client certificate and key (`pki/user-<user>.{crt,key}`) of user `user` (in
    /// `group`, if any), signed by the cluster CA; made once.
    pub fn user_cert(&self, user: &str, group: Option<&str>) -> Result<(PathBuf, PathBuf)> {
        let name = user_stem(user);
        let ca = Ca::load_or_create(&self.layout, "ca", CA_NAME)?;
        ca.ensure(&self.layout, &name, &CertSpec::client(user, group))?;
        Ok((self.layout.crt(&name), self.layout.key(&name)))
    }

    /// The kubectl binary of the same release.
    pub fn kubectl_path(&self) -> &Path {
        &self.bins.kubectl
    }

    /// The binaries in use.
    pub fn bins(&self) -> &ControlPlaneBins {
        &self.bins
    }

    /// A component's log file.
    pub fn log_path(&self, c: Component) -> PathBuf {
        self.layout.log(c)
    }

    /// A component's pid while it runs.
    pub fn pid(&self, c: Component) -> Option<u32> {
        self.running
            .iter()
            .find(|r| r.component == c)
            .map(|r| r.pid)
    }

    /// `kubectl <args>` as the admin; stdout, or an error with kubectl's stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_in(&self.admin_kubeconfig(), args, None)
    }

    /// `kubectl --kubeconfig <kubeconfig> <args>` with `stdin` piped in (e.g. for `-f -`).
    pub fn kubectl_in(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String> {
        let mut cmd = Command::new(&self.bins.kubectl);
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        let Some(input) = stdin else {
            return run(&mut cmd);
        };
        let shown = process::describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {shown}"))?;
        let mut pipe = child.stdin.take().context("no stdin pipe")?;
        let input = input.to_owned();
        // A writer thread: kubectl may answer before reading all its input.
        let writer = thread::spawn(move || pipe.write_all(input.as_bytes()));
        let out = child
            .wait_with_output()
            .with_context(|| format!("cannot wait for {shown}"))?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("stdin writer panicked"))?;
        if !out.status.success() {
            bail!(
                "{shown} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        written.with_context(|| format!("cannot write the input of {shown}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Hands the processes over to [`down`]: they keep running after this value is gone.
    /// Only meaningful with [`ClusterOpts::detach`]; owned processes die with this process.
    pub fn leave_running(mut self) {
        self.done = true;
    }

    /// Stops every component (scheduler first), checks none is left, removes the pidfiles.
    /// The dir (PKI, data, logs) stays. The error lists every step that failed.
    pub fn stop(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let needle = self.layout.needle();
        let mut errors = Vec::new();
        while let Some(mut r) = self.running.pop() {
            match r.stop(&needle) {
                Ok(()) => {
                    let _ = fs::remove_file(self.layout.pidfile(r.component));
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        errors.extend(sweep(&self.layout));
        if errors.is_empty() {
            Ok(())
        } else {
            bail!(
                "stopping the cluster in {}: {}",
                self.layout.dir.display(),
                errors.join("; ")
            )
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("xtask: {e:#}");
        }
    }
}

/// `user-<user>` with what a file name should not hold (`:`) replaced by `_`.
fn user_stem(user: &str) -> String {
    let stem: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("user-{stem}")
}

/// Why a cluster cannot be started here, if it cannot: no Go and the binaries not cached.
pub fn unavailable(release: &str, etcd_version: &str) -> Option<String> {
    let cached = k8s::CONTROL_PLANE
        .iter()
        .all(|p| k8s::cached(release, p).is_some())
        && k8s::cache_root()
            .join(format!("etcd-{etcd_version}/bin/etcd"))
            .is_file();
    if cached {
        return None;
    }
    k8s::go_unavailable().map(|why| {
        format!(
            "the control plane of {release} is not built in {} and cannot be: {why}",
            k8s::cache_root().display()
        )
    })
}

/// Starts a [`Cluster`], or returns `Ok(None)` after printing why it cannot (see
/// [`crate::testing::skip`]). A start that fails on a machine that has everything is an error.
pub fn start_or_skip(opts: ClusterOpts) -> Result<Option<Cluster>> {
    if let Some(reason) = unavailable(&opts.release, &opts.etcd_version) {
        crate::testing::skip(&reason)?;
        return Ok(None);
    }
    Cluster::start(opts).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_tokens_have_the_kubeadm_shape() -> Result<()> {
        let t = BootstrapToken::generate()?;
        assert_eq!(BootstrapToken::parse(&t.token()), Some(t.clone()));
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_some());
        assert!(BootstrapToken::parse("ABCDEF.0123456789abcdef").is_none());
        assert!(BootstrapToken::parse("abcdef.0123").is_none());
        Ok(())
    }

    #[test]
    fn bootstrap_secret_grants_csr_creation_and_approval() {
        let t = BootstrapToken {
            id: "abcdef".to_owned(),
            secret: "0123456789abcdef".to_owned(),
        };
        let v = bootstrap_objects(&t);
        let items = v["items"].as_array().expect("items");
        let secret = &items[0];
        assert_eq!(secret["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(secret["metadata"]["namespace"], "kube-system");
        assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(
            secret["stringData"]["usage-bootstrap-authentication"],
            "true"
        );
        assert_eq!(secret["stringData"]["auth-extra-groups"], BOOTSTRAP_GROUP);
        let roles: Vec<(&str, &str)> = items[1..]
            .iter()
            .map(|b| {
                (
                    b["roleRef"]["name"].as_str().unwrap_or(""),
                    b["subjects"][0]["name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert!(roles.contains(&("system:node-bootstrapper", BOOTSTRAP_GROUP)));
        assert!(roles.contains(&(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            BOOTSTRAP_GROUP
        )));
        assert!(roles.contains(&(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes"
        )));
    }

    #[test]
    fn every_listener_is_on_loopback() {
        let l = Layout::new(Path::new("/tmp/c"));
        let bins = ControlPlaneBins {
            etcd: "etcd".into(),
            apiserver: "kube-apiserver".into(),
            controller_manager: "kube-controller-manager".into(),
            scheduler: "kube-scheduler".into(),
            kubectl: "kubectl".into(),
        };
        let p = Ports::from_array([1, 2, 3, 4, 5]);
        for c in Component::ALL {
            let args: Vec<String> = command(c, &bins, &l, p)
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            for a in &args {
                if a.starts_with("--listen-") || a.starts_with("--bind-address") {
                    assert!(a.contains("127.0.0.1"), "{c}: {a}");
                }
            }
            if c != Component::Etcd {
                assert!(args.contains(&"--bind-address=127.0.0.1".to_owned()), "{c}");
            }
            assert!(args.iter().any(|a| a.contains("/tmp/c/")), "{c}: no needle");
        }
    }

    #[test]
    fn ports_round_trip_through_cluster_json() {
        let p = Ports::from_array([10, 20, 30, 40, 50]);
        assert_eq!(Ports::from_json(&p.to_json()), Some(p));
        assert_eq!(Ports::from_json(&json!({"etcd_client": 1})), None);
    }

    #[test]
    fn http_status_and_body_are_parsed() -> Result<()> {
        let (code, body) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
        assert_eq!((code, body.as_str()), (200, "ok"));
        assert!(parse_response(b"garbage").is_err());
        Ok(())
    }

    #[test]
    fn node_certificate_names_the_node() {
        let specs = cert_specs("worker-1");
        let (_, node) = specs
            .iter()
            .find(|(n, _)| n == "node-worker-1")
            .expect("a node certificate");
        assert_eq!(node.cn, "system:node:worker-1");
        assert_eq!(node.org.as_deref(), Some("system:nodes"));
        let (_, api) = specs
            .iter()
            .find(|(n, _)| n == "apiserver")
            .expect("a serving certificate");
        for san in [
            "127.0.0.1",
            "::1",
            "localhost",
            SERVICE_IP,
            "kubernetes.default",
        ] {
            assert!(api.sans.iter().any(|s| s == san), "{san}");
        }
    }
}
