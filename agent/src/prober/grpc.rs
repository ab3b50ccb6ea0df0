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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_fails_naming_the_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let Outcome::Failure(why) =
            check("127.0.0.1", port, String::new(), Duration::from_secs(5)).await
        else {
            panic!("a closed port passed");
        };
        let want = format!("error: failed to connect service at \"127.0.0.1:{port}\"");
        assert!(why.starts_with(&want), "{why}");
    }

    #[tokio::test]
    async fn a_server_without_the_health_service_is_not_healthy() {
        // Any HTTP/1 server: the gRPC call cannot succeed, and the probe must say it failed.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        let out = check("127.0.0.1", port, "svc".into(), Duration::from_secs(5)).await;
        assert!(matches!(out, Outcome::Failure(_)), "{out:?}");
    }
}
