//! CRI (`runtime.v1`) messages and gRPC clients, and the way to reach a runtime's socket.
//!
//! Owns the wire contract with the container runtime (containerd, CRI-O): the Kubernetes
//! Container Runtime Interface as written in `proto/runtime/v1/api.proto` (wire-compatible with
//! `k8s.io/cri-api`), compiled at build time into prost messages and tonic clients
//! ([`runtime::v1`]). Only clients exist: nodelet calls a runtime and never serves CRI.
//! Its one caller is the agent's `kuberuntime` module (kubelet counterpart:
//! `k8s.io/cri-client`, the kubelet's remote runtime and image services).
//!
//! Where to start: [`parse_endpoint`] turns `--container-runtime-endpoint` into a socket path,
//! [`Client::connect_lazy`] dials it, and [`Client::runtime`] / [`Client::image`] hand out the
//! two service clients over that one connection.

use std::fmt;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub mod listing;

/// Generated code, one module per proto package.
pub mod runtime {
    /// The CRI `runtime.v1` package: messages, enums, and the `runtime_service_client` and
    /// `image_service_client` modules.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// The gRPC health checking protocol (`grpc.health.v1`): the client of the agent's grpc probes.
pub mod grpc {
    /// `grpc.health.v1`.
    pub mod health {
        /// Health/Check messages and the `health_client` module.
        #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

use runtime::v1::image_service_client::ImageServiceClient;
use runtime::v1::runtime_service_client::RuntimeServiceClient;

/// Largest message a client sends or accepts: 16 MiB, as the kubelet's `maxMsgSize`
/// (`k8s.io/cri-client/pkg/utils.go`). tonic's default of 4 MiB is too small for
/// ListContainers or ListImages on a busy node.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// A CRI endpoint that nodelet cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The endpoint was empty.
    #[error("CRI endpoint is empty; expected unix:///path/to/socket or a socket path")]
    Empty,
    /// The endpoint names a transport other than a unix socket.
    #[error(
        "CRI endpoint {value:?}: {scheme}:// is not supported ({why}); use unix:///path/to/socket"
    )]
    UnsupportedScheme {
        /// The endpoint as given.
        value: String,
        /// Its scheme, without `://`.
        scheme: String,
        /// Why that scheme cannot be used.
        why: &'static str,
    },
    /// A `unix:` endpoint whose path is not absolute (e.g. `unix://run/x.sock`).
    #[error(
        "CRI endpoint {value:?}: the socket path must be absolute, as in unix:///run/containerd/containerd.sock"
    )]
    RelativeUnixPath {
        /// The endpoint as given.
        value: String,
    },
}

/// Parses a CRI endpoint (`--container-runtime-endpoint`) into the socket path to dial.
///
/// Accepts `unix:///abs/path`, `unix:/abs/path` and a plain path (which the kubelet also
/// accepts, with a deprecation warning). Rejects `tcp://` (the kubelet dropped it) and
/// `npipe://` (Windows) and any other scheme, naming the bad value.
pub fn parse_endpoint(s: &str) -> Result<PathBuf, EndpointError> {
    let value = s.trim();
    if value.is_empty() {
        return Err(EndpointError::Empty);
    }
    if let Some(rest) = value.strip_prefix("unix:") {
        // `unix:///p` is the URL form with an empty host; `unix:/p` is also a valid URL.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return if path.starts_with('/') {
            Ok(PathBuf::from(path))
        } else {
            Err(EndpointError::RelativeUnixPath {
                value: value.to_owned(),
            })
        };
    }
    if let Some((scheme, _)) = value.split_once("://") {
        let why = match scheme {
            "tcp" => "the kubelet removed TCP endpoints and nodelet only dials unix sockets",
            "npipe" => "named pipes exist only on Windows",
            _ => "nodelet only dials unix sockets",
        };
        return Err(EndpointError::UnsupportedScheme {
            value: value.to_owned(),
            scheme: scheme.to_owned(),
            why,
        });
    }
    Ok(PathBuf::from(value))
}

/// The endpoint every connection is made through. Its URI is never dialled (the connector
/// opens the socket); it only sets the HTTP/2 `:authority`, which Go gRPC servers expect to
/// be `localhost` for unix sockets.
fn unix_endpoint() -> Endpoint {
    Endpoint::from_static("http://localhost")
}

/// A tower connector that ignores the URI and opens `path`, fresh for every (re)connect.
fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) }
    })
}

/// Dials the runtime's unix socket now; fails if nothing listens there.
///
/// The returned [`Channel`] still reconnects by itself if the connection drops later: the
/// call in flight fails with `Unavailable`, the next one dials again.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    unix_endpoint()
        .connect_with_connector(unix_connector(path.as_ref().to_path_buf()))
        .await
}

/// Returns a [`Channel`] to the runtime's unix socket without dialling it.
///
/// The socket is opened on the first call and again after every lost connection, so the
/// channel outlives runtime restarts; while the runtime is down, calls fail with
/// `Unavailable`. Use this for a daemon that may start before its runtime.
pub fn connect_unix_lazy(path: impl AsRef<Path>) -> Channel {
    unix_endpoint().connect_with_connector_lazy(unix_connector(path.as_ref().to_path_buf()))
}

/// One connection to a CRI runtime that hands out both service clients.
///
/// Cloning is cheap: clones share the connection (tonic's [`Channel`] multiplexes).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Dials the runtime now (see [`connect_unix`]).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, tonic::transport::Error> {
        Ok(Self::from_channel(connect_unix(path).await?))
    }

    /// Dials the runtime on first use and after every lost connection (see [`connect_unix_lazy`]).
    pub fn connect_lazy(path: impl AsRef<Path>) -> Self {
        Self::from_channel(connect_unix_lazy(path))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self { channel }
    }

    /// The underlying channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// A `RuntimeService` client (pods, containers, stats, events), with [`MAX_MESSAGE_SIZE`].
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// An `ImageService` client (pull, list, remove, fs info), with [`MAX_MESSAGE_SIZE`].
    pub fn image(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

/// Written by hand (build.rs skips the derive) so registry credentials never reach a log:
/// secret fields show only whether they are set. Upstream marks them `debug_redact`.
impl fmt::Debug for runtime::v1::AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redact(secret: &str) -> &'static str {
            if secret.is_empty() { "" } else { "<redacted>" }
        }
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod wire_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_url_and_plain_paths_parse_to_the_socket_path() {
        let want = PathBuf::from("/run/containerd/containerd.sock");
        assert_eq!(
            parse_endpoint("unix:///run/containerd/containerd.sock"),
            Ok(want.clone())
        );
        assert_eq!(
            parse_endpoint("unix:/run/containerd/containerd.sock"),
            Ok(want.clone())
        );
        assert_eq!(
            parse_endpoint("/run/containerd/containerd.sock"),
            Ok(want.clone())
        );
        assert_eq!(
            parse_endpoint("  /run/containerd/containerd.sock\n"),
            Ok(want)
        );
        assert_eq!(parse_endpoint("cri.sock"), Ok(PathBuf::from("cri.sock")));
    }

    #[test]
    fn tcp_and_npipe_are_rejected_naming_the_value() {
        let err = parse_endpoint("tcp://127.0.0.1:1234").expect_err("tcp must be rejected");
        assert!(matches!(
            &err,
            EndpointError::UnsupportedScheme { scheme, .. } if scheme == "tcp"
        ));
        let msg = err.to_string();
        assert!(msg.contains("\"tcp://127.0.0.1:1234\""), "{msg}");
        assert!(msg.contains("TCP"), "{msg}");

        let err = parse_endpoint("npipe:////./pipe/containerd-containerd")
            .expect_err("npipe must be rejected");
        assert!(err.to_string().contains("Windows"), "{err}");

        assert!(matches!(
            parse_endpoint("http://localhost"),
            Err(EndpointError::UnsupportedScheme { .. })
        ));
    }

    #[test]
    fn empty_and_relative_unix_endpoints_are_rejected() {
        assert_eq!(parse_endpoint(""), Err(EndpointError::Empty));
        assert_eq!(parse_endpoint("   "), Err(EndpointError::Empty));
        assert!(matches!(
            parse_endpoint("unix://run/x.sock"),
            Err(EndpointError::RelativeUnixPath { .. })
        ));
        assert!(matches!(
            parse_endpoint("unix://"),
            Err(EndpointError::RelativeUnixPath { .. })
        ));
    }

    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = runtime::v1::AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            server_address: "registry.example".into(),
            identity_token: String::new(),
            registry_token: "tok-123".into(),
        };
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("alice") && shown.contains("registry.example"),
            "{shown}"
        );
        for secret in ["hunter2", "YWxpY2U6aHVudGVyMg==", "tok-123"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        let nested = format!(
            "{:?}",
            runtime::v1::PullImageRequest {
                auth: Some(auth),
                ..Default::default()
            }
        );
        assert!(!nested.contains("hunter2"), "{nested}");
    }

    #[tokio::test]
    async fn connect_unix_fails_when_nothing_listens() {
        let path =
            std::env::temp_dir().join(format!("nodelet-proto-none-{}.sock", std::process::id()));
        assert!(connect_unix(&path).await.is_err());
    }

    #[tokio::test]
    async fn lazy_client_reports_unavailable_while_runtime_is_down() {
        let path =
            std::env::temp_dir().join(format!("nodelet-proto-lazy-{}.sock", std::process::id()));
        let client = Client::connect_lazy(&path);
        let status = client
            .runtime()
            .version(runtime::v1::VersionRequest::default())
            .await
            .expect_err("nothing listens on the socket");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    }
}
