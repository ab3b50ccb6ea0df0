//! The agent's API client keeps to `kubeAPIQPS` / `kubeAPIBurst`, as the kubelet's (client-go's
//! token bucket, `flowcontrol.NewTokenBucketRateLimiter`): each request takes a token; a
//! request that finds none waits until one is due. The bucket starts full, so start-up (a
//! relist, a burst of status patches after an outage) goes at once and only a sustained flood
//! is spread out. Heartbeats (node status, lease) use a client of their own, unthrottled, as
//! the kubelet's heartbeat client.

use crate::options::ApiRate;
use hyper::{Request, Response};
use kube::client::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A token bucket that reserves: a request past the burst is told how long to wait, and the
/// next one waits behind it (golang.org/x/time/rate's Reserve).
#[derive(Debug)]
struct TokenBucket {
    qps: f64,
    burst: f64,
    /// Tokens (negative: owed to waiting requests) as of the instant beside them.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(rate: ApiRate, now: Instant) -> Self {
        let burst = f64::from(rate.burst.max(1));
        TokenBucket {
            qps: rate.qps.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Takes a token; how long the request must wait for it (zero: go now).
    fn reserve(&self, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *st;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * self.qps).min(self.burst) - 1.0;
        *st = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }
}

/// `client` with every request held to `rate`.
pub fn throttled(client: kube::Client, rate: ApiRate) -> kube::Client {
    let ns = client.default_namespace().to_owned();
    kube::Client::new(
        Throttled {
            inner: client,
            bucket: Arc::new(TokenBucket::new(rate, Instant::now())),
        },
        ns,
    )
}

#[derive(Clone)]
struct Throttled {
    inner: kube::Client,
    bucket: Arc<TokenBucket>,
}

impl tower::Service<Request<Body>> for Throttled {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The wait happens per request in `call`; the inner client buffers.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let wait = self.bucket.reserve(Instant::now());
        let client = self.inner.clone();
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            client.send(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_requests_queue_at_the_rate() {
        let t0 = Instant::now();
        let b = TokenBucket::new(
            ApiRate {
                qps: 10.0,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(b.reserve(t0)), 100);
        assert_eq!(ms(b.reserve(t0)), 200, "the next waits behind the first");
        // A second later the debt is paid and 8 tokens are back: capped at the burst.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(b.reserve(t1), Duration::ZERO);
        }
        assert_eq!(ms(b.reserve(t1)), 100);
    }
}
