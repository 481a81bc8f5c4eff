//! Rate limiting per route: GCRA (a token bucket without a refill timer) with `rps` and `burst`,
//! one bucket for the route or one per client IP or header value. Refused requests get 429
//! `rate_limited` with `retry-after` and the IETF `ratelimit` / `ratelimit-policy` headers.
//!
//! We wrote the GCRA ourselves (in [`gcra`]) instead of taking `governor`: it must read tokio's
//! clock so paused-time tests drive it, it must report `remaining` and `reset` for the headers, and
//! the same arithmetic is what the Redis script of the global limiter evaluates.

pub mod gcra;

use crate::config::{RateLimitConfig, RateLimitKey};
use crate::error::ProxyError;
use crate::metrics::RouteMetrics;
use crate::proxy::call::{Answer, Call, CallFuture};
use gcra::{Decision, GcraCell, GcraSettings, KeyedLimiter};
use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

/// How often (in checks) idle per-key buckets are swept.
const SWEEP_EVERY: u64 = 4096;

enum Buckets {
    One(GcraCell),
    Keyed(KeyedLimiter),
}

/// A route's limiter state; kept across reloads while the route's limit settings are unchanged.
pub struct RouteLimiter {
    pub config: RateLimitConfig,
    settings: GcraSettings,
    buckets: Buckets,
    checks: AtomicU64,
    policy: HeaderValue,
    refused: AtomicU64,
}

impl RouteLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let settings = GcraSettings {
            rps: config.rps,
            burst: config.burst,
        };
        let now = Instant::now();
        let buckets = match config.key {
            RateLimitKey::Global => Buckets::One(GcraCell::new(now)),
            _ => Buckets::Keyed(KeyedLimiter::new(settings, config.max_keys, now)),
        };
        let window = (f64::from(config.burst) / config.rps).ceil().max(1.0) as u64;
        let policy = HeaderValue::from_str(&format!("\"route\";q={};w={window}", config.burst))
            .unwrap_or(HeaderValue::from_static("\"route\""));
        RouteLimiter {
            config: config.clone(),
            settings,
            buckets,
            checks: AtomicU64::new(0),
            policy,
            refused: AtomicU64::new(0),
        }
    }

    /// Requests refused since this limiter was created.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn tracked_keys(&self) -> usize {
        match &self.buckets {
            Buckets::One(_) => 1,
            Buckets::Keyed(k) => k.len(),
        }
    }

    pub fn check(&self, call: &Call, now: Instant) -> Result<(), ProxyError> {
        let decision = match &self.buckets {
            Buckets::One(cell) => cell.check(&self.settings, now),
            Buckets::Keyed(keyed) => {
                if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                    keyed.retain_recent(now);
                }
                match &self.config.key {
                    RateLimitKey::ClientIp => {
                        let mut buf = [0u8; 64];
                        let key = crate::proxy::forward::format_ip(call.client_ip, &mut buf);
                        keyed.check(std::str::from_utf8(key).unwrap_or(""), now)
                    }
                    RateLimitKey::Header(name) => {
                        let v = call
                            .req
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        keyed.check(v, now)
                    }
                    RateLimitKey::Global => keyed.check("", now),
                }
            }
        };
        match decision {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny { retry_after, reset } => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let header =
                    HeaderValue::from_str(&format!("\"route\";r=0;t={}", ceil_secs(reset)))
                        .unwrap_or(HeaderValue::from_static("\"route\";r=0"));
                Err(ProxyError::RateLimited {
                    retry_after,
                    ratelimit: Some((header, self.policy.clone())),
                })
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Applies the route's limiter, if it has one (an absent limiter costs one branch).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<RouteLimiter>>,
    metrics: RouteMetrics,
}

impl RateLimitLayer {
    pub fn new(limiter: Option<Arc<RouteLimiter>>, metrics: RouteMetrics) -> Self {
        RateLimitLayer { limiter, metrics }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            limiter: self.limiter.clone(),
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct RateLimitService<S> {
    limiter: Option<Arc<RouteLimiter>>,
    metrics: RouteMetrics,
    inner: S,
}

impl<S> Service<Call> for RateLimitService<S>
where
    S: Service<Call, Response = Answer, Error = ProxyError, Future = CallFuture>
        + Clone
        + Send
        + 'static,
{
    type Response = Answer;
    type Error = ProxyError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> CallFuture {
        if let Some(limiter) = &self.limiter {
            if let Err(e) = limiter.check(&call, call.started) {
                self.metrics.rate_limited.inc();
                return Box::pin(async move { Err(e) });
            }
        }
        self.inner.call(call)
    }
}
