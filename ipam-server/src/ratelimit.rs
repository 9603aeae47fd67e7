//! Per-client request rates on the `/v1` API: each client (its IP address
//! as the TCP connection shows it; every unix-socket client counts as one)
//! gets `per_second` requests a second with bursts of `burst`, and is
//! answered 429 `rate_limited` beyond that, so one misbehaving node cannot
//! starve the others. The token-bucket arithmetic is governor's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{ApiError, ErrorCode};

/// A rate allowed to each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

/// The limiter the middleware shares.
pub struct Limiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

// Clients without an IP (unix socket) share one bucket under this key.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
// How often buckets of clients gone quiet are dropped, in checks.
const FORGET_EVERY: u64 = 4096;

impl Limiter {
    /// A limiter allowing `limit` to each client.
    pub fn new(limit: RateLimit) -> Limiter {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Limiter {
            limit,
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    fn admits(&self, client: IpAddr) -> bool {
        // Clients that stopped calling leave full buckets behind; dropping
        // them now and then keeps memory bounded by the active clients.
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(&client).is_ok()
    }
}

/// The middleware: admits the request or answers 429 with `Retry-After`.
pub async fn limit_rate(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(LOCAL, |ConnectInfo(peer)| peer.ip());
    if limiter.admits(client) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "client {client} sent more than {} requests a second (bursts of {}); slow down",
            limiter.limit.per_second, limiter.limit.burst
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_bucket() {
        let limiter = Limiter::new(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| limiter.admits(a)));
        assert!(!limiter.admits(a));
        assert!(limiter.admits(b));
        assert!(limiter.admits(LOCAL));
    }
}
