//! The kubelet HTTP API (kubelet pkg/kubelet/server): the secure port (TLS, one auth filter in
//! front of every route), the optional read-only port and the local /healthz port.
//!
//! Handlers are thin: parse, read one thing from [`NodeView`], serialise. [`ApiError`] owns the
//! status mapping. Listeners follow the root cancellation token; a port that cannot be bound is
//! logged and the agent keeps running its pods (the kubelet exits instead).

pub mod auth;
pub mod error;
mod listen;
pub mod logs;
pub mod names;
#[cfg(test)]
mod serving_bench;
pub mod stats;
pub mod stream;
pub mod summary_json;
#[cfg(test)]
mod summary_tree;
pub mod tls;
pub mod webhook;

use crate::kuberuntime::health::RuntimeHealth;
use crate::kuberuntime::{Cri, labels};
use crate::metrics::{self, expo::Format};
use crate::options::{AuthorizationMode, Options};
use crate::status::StatusStore;
use auth::AuthPolicy;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
pub use error::ApiError;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use stats::StatsSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The read-only view of the node every handler gets.
pub struct NodeView {
    /// Node name.
    pub node_name: String,
    /// Pod statuses.
    pub status: StatusStore,
    /// CRI client (its own connection).
    pub cri: Cri,
    /// podLogsDir.
    pub pod_logs_dir: PathBuf,
    /// Usage numbers.
    pub stats: Arc<dyn StatsSource>,
    /// The effective configuration for /configz.
    pub configz: Value,
    /// The components' own statistics, for /metrics.
    pub metrics: metrics::AgentSources,
    /// Time of the last successful PLEG relist.
    pub pleg_health: tokio::sync::watch::Receiver<Option<Instant>>,
    /// The runtime checker's last answer.
    pub runtime_health: tokio::sync::watch::Receiver<Option<RuntimeHealth>>,
}

impl NodeView {
    /// A view over these stores.
    pub fn new(
        opts: &Options,
        status: StatusStore,
        cri: Cri,
        stats: Arc<dyn StatsSource>,
        metrics: metrics::AgentSources,
        pleg_health: tokio::sync::watch::Receiver<Option<Instant>>,
        runtime_health: tokio::sync::watch::Receiver<Option<RuntimeHealth>>,
    ) -> Self {
        Self {
            node_name: opts.node_name.clone(),
            status,
            cri,
            pod_logs_dir: opts.pod_logs_dir.clone(),
            stats,
            configz: configz(opts),
            metrics,
            pleg_health,
            runtime_health,
        }
    }

    /// A pod on this node by namespace and name, or 404.
    pub fn pod(&self, ns: &str, name: &str) -> Result<Arc<Pod>, ApiError> {
        names::check(ns)?;
        names::check(name)?;
        self.status
            .pod(ns, name)
            .ok_or_else(|| ApiError::NotFound(format!("pod {ns}/{name} not found")))
    }

    /// The runtime id of a running container, with a label for errors.
    pub fn running_container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<(String, String), ApiError> {
        names::check(container)?;
        let p = self.pod(ns, pod)?;
        let st = logs::any_container_status(&p, container).ok_or_else(|| {
            ApiError::NotFound(format!(
                "container {container:?} not found in pod {ns}/{pod}"
            ))
        })?;
        let id = st
            .container_id
            .as_deref()
            .filter(|_| st.state.as_ref().is_some_and(|s| s.running.is_some()))
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "container {container:?} in pod {ns}/{pod} is not running"
                ))
            })?;
        let id = id.split_once("://").map_or(id, |(_, i)| i).to_string();
        Ok((id, format!("{ns}/{pod}/{container}")))
    }

    /// The runtime checker's verdict; ready until its first answer (start-up is not a fault).
    fn runtime_healthy(&self) -> Result<(), String> {
        self.runtime_health
            .borrow()
            .as_ref()
            .map_or(Ok(()), |h| h.runtime.clone())
    }
}

type View = Arc<NodeView>;

async fn healthz(State(v): State<View>) -> Response {
    let pleg_ok = crate::pleg::is_healthy(*v.pleg_health.borrow());
    let runtime = v.runtime_healthy();
    if pleg_ok && runtime.is_ok() {
        return (StatusCode::OK, "ok").into_response();
    }
    let mut body = String::from("[+]ping ok\n");
    match &runtime {
        Ok(()) => body.push_str("[+]runtime ok\n"),
        Err(e) => body.push_str(&format!("[-]runtime failed: {e}\n")),
    }
    if pleg_ok {
        body.push_str("[+]pleg ok\n");
    } else {
        body.push_str(&format!(
            "[-]pleg failed: no successful relist within {:?}\n",
            crate::pleg::RELIST_THRESHOLD
        ));
    }
    body.push_str("healthz check failed\n");
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

fn pod_list(items: Vec<Value>) -> Json<Value> {
    Json(json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items }))
}

async fn pods(State(v): State<View>) -> Json<Value> {
    let items = v
        .status
        .pods()
        .values()
        .filter_map(|p| serde_json::to_value(&**p).ok())
        .collect();
    pod_list(items)
}

/// The runtime's view: pods with running containers, names and images only.
async fn running_pods(State(v): State<View>) -> Result<Json<Value>, ApiError> {
    let running = proto::runtime::v1::ContainerState::ContainerRunning as i32;
    let containers = v.cri.list_containers(None).await?;
    let mut by_pod: std::collections::BTreeMap<String, (String, String, Vec<Value>)> =
        Default::default();
    for c in containers.iter().filter(|c| c.state == running) {
        let Some((ns, name, uid)) = labels::pod_identity(&c.labels) else {
            continue;
        };
        let cname = c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_default();
        let image = c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        by_pod
            .entry(uid)
            .or_insert_with(|| (ns, name, Vec::new()))
            .2
            .push(json!({ "name": cname, "image": image, "resources": {} }));
    }
    let items = by_pod
        .into_iter()
        .map(|(uid, (ns, name, cs))| {
            json!({
                "metadata": { "name": name, "namespace": ns, "uid": uid, "creationTimestamp": null },
                "spec": { "containers": cs },
                "status": {}
            })
        })
        .collect();
    Ok(pod_list(items))
}

async fn configz_handler(State(v): State<View>) -> Json<Value> {
    Json(json!({ "kubeletconfig": v.configz }))
}

async fn stats_summary(State(v): State<View>) -> Result<Response, ApiError> {
    v.stats.refresh().await;
    let body = summary_json::summary_json(&v.node_name, &v.stats.snapshot()).map_err(|source| {
        ApiError::Encode {
            what: "the Summary",
            source,
        }
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The exposition format the request's Accept header asks for.
fn format_of(headers: &HeaderMap) -> Format {
    Format::from_accept(headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()))
}

fn exposition(headers: &HeaderMap, render: impl FnOnce(Format) -> String) -> Response {
    let format = format_of(headers);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        render(format),
    )
        .into_response()
}

async fn metrics_agent(State(v): State<View>, headers: HeaderMap) -> Response {
    let pods = v.status.pods();
    exposition(&headers, |f| {
        metrics::render_agent(&v.metrics, f, &v.node_name, &pods, v.stats.health())
    })
}

/// Chunks of a /metrics/cadvisor page rendered ahead of the socket.
const CADVISOR_CHUNKS_AHEAD: usize = 4;

/// Streamed: rendered on a blocking thread in [`metrics::expo::CHUNK`]s while the client reads.
/// Whole, the page (8 MB at 250 containers, and its copy as the buffer grew) was fresh mmapped
/// memory on every scrape: 3,500 page faults, which tripled the request's time.
async fn metrics_cadvisor(State(v): State<View>, headers: HeaderMap) -> Response {
    v.stats.refresh().await;
    let s = v.stats.snapshot();
    let format = format_of(&headers);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(
        CADVISOR_CHUNKS_AHEAD,
    );
    tokio::task::spawn_blocking(move || {
        // A client gone away leaves the rest unsent; the render is cheap to finish.
        let sink = move |chunk: String| {
            let _ = tx.blocking_send(Ok(axum::body::Bytes::from(chunk)));
        };
        metrics::cadvisor::render_streaming(format, &s, Box::new(sink));
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn metrics_resource(State(v): State<View>, headers: HeaderMap) -> Response {
    let s = v.stats.snapshot();
    exposition(&headers, |f| metrics::resource::render(f, &s))
}

async fn metrics_probes(State(v): State<View>, headers: HeaderMap) -> Response {
    exposition(&headers, |f| metrics::probes::render(f, &v.metrics.probes))
}

async fn container_logs(
    State(v): State<View>,
    Path(ContainerPath { ns, pod, container }): Path<ContainerPath>,
    Query(q): Query<logs::LogQuery>,
) -> Result<Response, ApiError> {
    let opts = q.parse()?;
    names::check(&container)?;
    let p = v.pod(&ns, &pod)?;
    let spec = p.spec.as_ref();
    let known = spec.is_some_and(|s| {
        s.containers.iter().any(|c| c.name == container)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
            || s.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == container)
    });
    if !known {
        return Err(ApiError::NotFound(format!(
            "container {container:?} not found in pod {ns}/{pod}"
        )));
    }
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let which = logs::attempt(&p, &container, opts.previous)?;
    let path = logs::log_file(&v.pod_logs_dir, &ns, &pod, &uid, &container, which)?;
    let (first, offset, dec) = logs::read_existing(&path, &opts).await?;
    let ct = [(header::CONTENT_TYPE, "text/plain")];
    if !opts.follow || opts.previous {
        return Ok((ct, logs::whole(first)).into_response());
    }
    let view = v.clone();
    let still_running = move || view.running_container(&ns, &pod, &container).is_ok();
    Ok((
        ct,
        logs::follow(path, first, offset, dec, opts, still_running),
    )
        .into_response())
}

/// The `{ns}/{pod}/{container}` of a route, by name, so that the kubelet's variant with a
/// `{uid}` segment before the container shares the handler: the uid is ignored, as the kubelet
/// finds the pod by its full name whenever it has one (kubecontainer.Pods.FindPod).
#[derive(serde::Deserialize)]
struct ContainerPath {
    ns: String,
    pod: String,
    container: String,
}

/// The `{ns}/{pod}` of `/portForward`, with or without the ignored `{uid}` (see [`ContainerPath`]).
#[derive(serde::Deserialize)]
struct PodPath {
    ns: String,
    pod: String,
}

async fn exec_h(
    State(v): State<View>,
    Path(p): Path<ContainerPath>,
    req: Request,
) -> Result<Response, ApiError> {
    stream::exec(&v, &p.ns, &p.pod, &p.container, req).await
}

async fn attach_h(
    State(v): State<View>,
    Path(p): Path<ContainerPath>,
    req: Request,
) -> Result<Response, ApiError> {
    stream::attach(&v, &p.ns, &p.pod, &p.container, req).await
}

async fn port_forward_h(
    State(v): State<View>,
    Path(p): Path<PodPath>,
    req: Request,
) -> Result<Response, ApiError> {
    stream::port_forward(&v, &p.ns, &p.pod, req).await
}

async fn run_h(
    State(v): State<View>,
    Path(p): Path<ContainerPath>,
    req: Request,
) -> Result<Response, ApiError> {
    stream::run(&v, &p.ns, &p.pod, &p.container, req.uri().query()).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound("404 page not found".into())
}

/// Routes of the read-only port (kubelet InstallDefaultHandlers, no debugging handlers).
pub fn read_only_routes(view: View) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/pods", get(pods))
        .route("/pods/", get(pods))
        .route("/stats/summary", get(stats_summary))
        .route("/metrics", get(metrics_agent))
        .route("/metrics/cadvisor", get(metrics_cadvisor))
        .route("/metrics/resource", get(metrics_resource))
        .route("/metrics/probes", get(metrics_probes))
        .fallback(not_found)
        .with_state(view)
}

/// Routes of the secure port: everything, behind the auth filter.
pub fn secure_routes(view: View, policy: Arc<AuthPolicy>) -> Router {
    let debugging = Router::new()
        .route("/runningpods/", get(running_pods))
        .route("/configz", get(configz_handler))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec_h))
        .route("/exec/{ns}/{pod}/{uid}/{container}", any(exec_h))
        .route("/attach/{ns}/{pod}/{container}", any(attach_h))
        .route("/attach/{ns}/{pod}/{uid}/{container}", any(attach_h))
        .route("/portForward/{ns}/{pod}", any(port_forward_h))
        .route("/portForward/{ns}/{pod}/{uid}", any(port_forward_h))
        .route("/run/{ns}/{pod}/{container}", post(run_h))
        .route("/run/{ns}/{pod}/{uid}/{container}", post(run_h))
        .with_state(view.clone());
    read_only_routes(view)
        .merge(debugging)
        .layer(axum::middleware::from_fn_with_state(policy, auth::filter))
}

/// The local /healthz port.
pub fn healthz_routes(view: View) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(view)
}

/// Starts the listeners configured in `opts` as tasks of `tasks`.
pub fn start(
    opts: &Options,
    view: NodeView,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    let s = &opts.server;
    let view = Arc::new(view);
    let clients = s
        .client_ca_file
        .as_deref()
        .map(tls::ClientAuthenticator::from_file)
        .transpose()?;
    let wants_api = s.authentication_webhook || s.authorization_mode == AuthorizationMode::Webhook;
    let reviewer = match opts.kubeconfig.clone().filter(|_| wants_api) {
        Some(path) => {
            let r = Arc::new(webhook::Reviewer::new(
                path,
                opts.node_name.clone(),
                webhook::CacheTtls {
                    token: s.authentication_webhook_cache_ttl,
                    allowed: s.authorization_webhook_cache_authorized_ttl,
                    denied: s.authorization_webhook_cache_unauthorized_ttl,
                },
            ));
            // Load the kubeconfig now so that a bad one is reported at start-up.
            let load = r.clone();
            tasks.spawn(async move {
                match load.load().await {
                    Ok(true) => info!(kubeconfig = %load.kubeconfig().display(), "authentication/authorization webhook: API client ready"),
                    // A request got there first and reported the failure.
                    Ok(false) => {}
                    Err(e) => error!(error = %e.chain(), "authentication/authorization webhook disabled: bearer tokens get 401, Webhook authorization 403"),
                }
            });
            Some(r)
        }
        None => {
            if s.authentication_webhook {
                warn!(
                    "authentication.webhook is enabled but there is no API server (standalone): bearer tokens are not accepted"
                );
            }
            if s.authorization_mode == AuthorizationMode::Webhook {
                warn!(
                    "authorization mode Webhook without an API server (standalone): client-certificate users are allowed, anonymous requests are forbidden"
                );
            }
            None
        }
    };
    for w in auth::exposure_warnings(s) {
        warn!("{w}");
    }
    if clients.is_none() && !s.anonymous_auth {
        warn!(
            "no client CA file and anonymous auth disabled: every request to the secure port will be 401"
        );
    }
    let (chain, key) = tls::serving_identity(
        s.tls_cert_file.as_deref(),
        s.tls_private_key_file.as_deref(),
        &opts.root_dir,
        &opts.node_name,
        &opts.node_ips,
    )?;
    let tls_cfg = tls::server_config(chain, key, clients.as_ref())?;
    let policy = Arc::new(AuthPolicy {
        clients,
        anonymous: s.anonymous_auth,
        token_webhook: s.authentication_webhook,
        mode: s.authorization_mode,
        reviewer,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_cfg));
    tasks.spawn(listen::serve(
        "secure",
        SocketAddr::new(s.address, s.port),
        Some(acceptor),
        secure_routes(view.clone(), policy),
        cancel.clone(),
    ));
    if s.read_only_port != 0 {
        tasks.spawn(listen::serve(
            "read-only",
            SocketAddr::new(s.address, s.read_only_port),
            None,
            read_only_routes(view.clone()),
            cancel.clone(),
        ));
    }
    if s.healthz_port != 0 {
        tasks.spawn(listen::serve(
            "healthz",
            SocketAddr::new(s.healthz_bind_address, s.healthz_port),
            None,
            healthz_routes(view.clone()),
            cancel.clone(),
        ));
    }
    Ok(())
}

/// Go's time.Duration String() for whole seconds ("20s", "1m0s", "2h0m0s").
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// The effective configuration as KubeletConfiguration JSON (what /configz shows).
fn configz(o: &Options) -> Value {
    let s = &o.server;
    json!({
        "enableServer": true,
        "staticPodPath": o.static_pod_path,
        "podLogsDir": o.pod_logs_dir,
        "syncFrequency": go_duration(o.sync_frequency),
        "fileCheckFrequency": go_duration(o.file_check_frequency),
        "runtimeRequestTimeout": go_duration(o.runtime_request_timeout),
        "containerRuntimeEndpoint": o.container_runtime_endpoint,
        "imageServiceEndpoint": o.image_service_endpoint,
        "cgroupDriver": match o.cgroup_driver { crate::options::CgroupDriver::Cgroupfs => "cgroupfs", crate::options::CgroupDriver::Systemd => "systemd" },
        "cgroupRoot": o.cgroup_root,
        "cgroupsPerQOS": o.cgroups_per_qos,
        "resolvConf": o.resolv_conf,
        "clusterDomain": o.cluster_domain,
        "clusterDNS": o.cluster_dns,
        "registerNode": o.register_node,
        "crashLoopBackOff": { "maxContainerRestartPeriod": go_duration(o.max_container_restart_period) },
        "address": s.address.to_string(),
        "port": s.port,
        "readOnlyPort": s.read_only_port,
        "tlsCertFile": s.tls_cert_file,
        "tlsPrivateKeyFile": s.tls_private_key_file,
        "authentication": {
            "x509": { "clientCAFile": s.client_ca_file },
            "webhook": { "enabled": s.authentication_webhook, "cacheTTL": go_duration(s.authentication_webhook_cache_ttl) },
            "anonymous": { "enabled": s.anonymous_auth },
        },
        "authorization": {
            "mode": match s.authorization_mode { AuthorizationMode::AlwaysAllow => "AlwaysAllow", AuthorizationMode::Webhook => "Webhook" },
            "webhook": {
                "cacheAuthorizedTTL": go_duration(s.authorization_webhook_cache_authorized_ttl),
                "cacheUnauthorizedTTL": go_duration(s.authorization_webhook_cache_unauthorized_ttl),
            },
        },
        "healthzPort": s.healthz_port,
        "healthzBindAddress": s.healthz_bind_address.to_string(),
        "logging": { "verbosity": o.verbosity },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use tower::ServiceExt;

    struct NoStats;

    impl StatsSource for NoStats {
        fn snapshot(&self) -> stats::StatsSnapshot {
            stats::StatsSnapshot::default()
        }
    }

    /// The secure routes over one pod `default/p` whose container `c` is not running, with a
    /// runtime that is never dialled, open to anonymous requests.
    fn routes() -> Router {
        let opts = Options::from_args(["nodelet".to_string()]).expect("default options");
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("p".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = crate::status::StatusStore::fixed([("u1".to_string(), Arc::new(pod))].into());
        let cri = Cri::connect(
            "unix:///nonexistent/cri.sock",
            "unix:///nonexistent/cri.sock",
            Duration::from_secs(1),
        )
        .expect("lazy CRI client");
        let view = NodeView::new(
            &opts,
            status,
            cri.clone(),
            Arc::new(NoStats),
            metrics::AgentSources {
                runtime_ops: cri.op_stats(),
                pleg: Arc::default(),
                pod_workers: Arc::default(),
                status: Arc::default(),
                bus: crate::events::Bus::new(),
                eviction: None,
                probes: Arc::default(),
                cgroup_manager: Arc::new(crate::instrument::HistogramVec::new(
                    crate::instrument::DEF_BUCKETS,
                )),
                volumes: Arc::default(),
            },
            tokio::sync::watch::channel(None).1,
            tokio::sync::watch::channel(None).1,
        );
        let policy = AuthPolicy {
            clients: None,
            anonymous: true,
            token_webhook: false,
            mode: AuthorizationMode::AlwaysAllow,
            reviewer: None,
        };
        secure_routes(Arc::new(view), Arc::new(policy))
    }

    async fn call(routes: &Router, method: &str, uri: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let resp = routes.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn uid_routes_answer_as_their_plain_twins() {
        let routes = routes();
        let not_running = "container \"c\" in pod default/p is not running\n";
        let cases = [
            (
                "GET",
                "/exec/default/p/c?command=true&stdout=1",
                "/exec/default/p/other/c?command=true&stdout=1",
                not_running,
            ),
            (
                "GET",
                "/attach/default/p/c?stdout=1",
                "/attach/default/p/other/c?stdout=1",
                not_running,
            ),
            (
                "POST",
                "/run/default/p/c?cmd=true",
                "/run/default/p/other/c?cmd=true",
                not_running,
            ),
            (
                "GET",
                "/portForward/default/nope",
                "/portForward/default/nope/other",
                "pod default/nope not found\n",
            ),
        ];
        for (method, plain, with_uid, body) in cases {
            let want = (StatusCode::NOT_FOUND, body.to_string());
            assert_eq!(call(&routes, method, plain).await, want, "{plain}");
            assert_eq!(call(&routes, method, with_uid).await, want, "{with_uid}");
        }
    }

    #[test]
    fn durations_print_as_go() {
        use std::time::Duration;
        assert_eq!(super::go_duration(Duration::from_secs(20)), "20s");
        assert_eq!(super::go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(super::go_duration(Duration::from_secs(7260)), "2h1m0s");
    }
}
