//! The grpc probe (kubelet pkg/probe/grpc): `grpc.health.v1.Health/Check` for the probe's
//! service on the pod's IP, plaintext, within `timeoutSeconds`; messages worded as the kubelet's.

use super::probe::{Outcome, USER_AGENT};
use proto::grpc::health::v1::health_check_response::ServingStatus;
use proto::grpc::health::v1::{HealthCheckRequest, health_client::HealthClient};
use std::time::Duration;

/// Asks `host:port` whether `service` is serving.
pub async fn check(host: &str, port: u16, service: String, timeout: Duration) -> Outcome {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let secs = format!("{}s", timeout.as_secs());
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"));
        }
    };
    let endpoint = match endpoint.user_agent(USER_AGENT) {
        Ok(e) => e,
        Err(e) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"));
        }
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"));
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {secs}"
            ));
        }
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service });
    let resp = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            return Outcome::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            ));
        }
        Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {secs}"
            ));
        }
        Ok(Err(s)) => return Outcome::Failure(format!("error: health rpc probe failed: {s}")),
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {secs}"
            ));
        }
    };
    match ServingStatus::try_from(resp.status) {
        Ok(ServingStatus::Serving) => Outcome::Success("service healthy".into()),
        Ok(s) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            s.as_str_name()
        )),
        Err(_) => Outcome::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            resp.status
        )),
    }
}
