//! `ApiError`: the one place a failure becomes an HTTP status. 401/403/404 carry no internals;
//! server faults are logged here, once.

use crate::errors::error_chain;
use crate::kuberuntime::CriError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No acceptable credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// Authenticated but not allowed.
    #[error("Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])")]
    Forbidden {
        /// Who asked.
        user: String,
        /// Kubernetes verb of the request.
        verb: &'static str,
        /// nodes/<subresource> the path maps to.
        subresource: &'static str,
    },
    /// The authorizer could not decide (SubjectAccessReview failed): 500, as the kubelet.
    #[error(
        "Authorization error (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])"
    )]
    AuthorizationError {
        /// Who asked.
        user: String,
        /// Kubernetes verb of the request.
        verb: &'static str,
        /// nodes/<subresource> the path maps to.
        subresource: &'static str,
    },
    /// Unknown pod, container or log.
    #[error("{0}")]
    NotFound(String),
    /// Bad parameters or names.
    #[error("{0}")]
    BadRequest(String),
    /// A CRI call failed.
    #[error(transparent)]
    Runtime(#[from] CriError),
    /// Reading a file failed.
    #[error("reading {what}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A response document could not be serialised.
    #[error("encoding {what}")]
    Encode {
        /// The document.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The runtime's streaming server could not be reached.
    #[error("proxying to the runtime's streaming server")]
    Proxy(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A command run via /run exited non-zero.
    #[error("command terminated with non-zero exit code: {code}")]
    ExitCode {
        /// Its exit code.
        code: i32,
    },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Runtime(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            Self::Runtime(_)
            | Self::Io { .. }
            | Self::Encode { .. }
            | Self::ExitCode { .. }
            | Self::AuthorizationError { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Proxy(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Unauthorized => "Unauthorized".to_string(),
            Self::Forbidden { .. }
            | Self::AuthorizationError { .. }
            | Self::NotFound(_)
            | Self::BadRequest(_) => self.to_string(),
            Self::ExitCode { .. } => self.to_string(),
            _ => {
                tracing::warn!(error = %error_chain(&self), "request failed");
                "Internal error".to_string()
            }
        };
        (
            status,
            [("content-type", "text/plain; charset=utf-8")],
            body + "\n",
        )
            .into_response()
    }
}
