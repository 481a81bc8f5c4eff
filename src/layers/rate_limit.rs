//! Rate limiting per route: GCRA (a token bucket without a refill timer) with `rps` and `burst`,
//! one bucket for the route or one per client IP or header value. Refused requests get 429
//! `rate_limited` with `retry-after` and the IETF `ratelimit` / `ratelimit-policy` headers.
//!
//! We wrote the GCRA ourselves (in [`gcra`]) instead of taking `governor`: it must read tokio's
//! clock so paused-time tests drive it, it must report `remaining` and `reset` for the headers, and
//! the same arithmetic is what the Redis script of the global limiter evaluates.

pub mod gcra;
pub mod global;

use super::{protection_layer, Protected, Protection};
use crate::call::{Call, CallFuture, CallService};
use crate::error::ProxyError;
use crate::metrics::RouteMetrics;
use crate::redis::Redis;
use gcra::{Decision, GcraCell, GcraSettings, KeyedLimiter};
use global::{Fallback, GlobalLimiter, KeyDigest, LeaseCheck};
use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
    /// Set for `scope = "global"`: the Redis-backed limit, checked instead of `buckets`.
    global: Option<GlobalLimiter>,
    /// For `on_redis_error = "local"` with `instances`: this instance's share, used while Redis is out.
    local_fallback: Option<Box<RouteLimiter>>,
}

/// The limiter's first, synchronous look at a request.
pub enum Verdict {
    Allow,
    Deny(ProxyError),
    /// A global limit without a local lease for this key: ask Redis (`want` tokens).
    Ask {
        key: KeyDigest,
        want: u32,
    },
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
            global: None,
            local_fallback: None,
        }
    }

    /// A `scope = "global"` limiter for route `route`, sharing its buckets through `redis`.
    pub fn new_global(route: &str, config: &RateLimitConfig, redis: Arc<Redis>) -> Self {
        let local_fallback = global::local_share(config, redis.config.instances)
            .map(|share| Box::new(RouteLimiter::new(&share)));
        let global = GlobalLimiter::new(route, config, redis, local_fallback.is_some());
        RouteLimiter {
            global: Some(global),
            local_fallback,
            ..RouteLimiter::new(config)
        }
    }

    /// The Redis this limiter shares its buckets through, for a global limit.
    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.global.as_ref().map(|g| &g.redis)
    }

    /// Tokens taken from Redis per call, for a global limit.
    pub fn lease_size(&self) -> Option<u32> {
        self.global.as_ref().map(|g| g.leases.lease_size())
    }

    /// Requests refused since this limiter was created.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn tracked_keys(&self) -> usize {
        if let Some(g) = &self.global {
            return g.leases.len();
        }
        match &self.buckets {
            Buckets::One(_) => 1,
            Buckets::Keyed(k) => k.len(),
        }
    }

    /// The synchronous part of a decision: local buckets, or a global limit's lease.
    pub fn verdict(&self, call: &Call, now: Instant) -> Verdict {
        let Some(global) = &self.global else {
            return match self.check(call, now) {
                Ok(()) => Verdict::Allow,
                Err(e) => Verdict::Deny(e),
            };
        };
        let key = KeyDigest::of(self.key_of(call).as_bytes());
        match global.leases.take(&key, now) {
            LeaseCheck::Take => Verdict::Allow,
            LeaseCheck::Denied(retry_after) => Verdict::Deny(self.refuse(retry_after, retry_after)),
            LeaseCheck::Miss { want } => Verdict::Ask { key, want },
        }
    }

    /// The asynchronous part for a global limit: Redis's answer, or `on_redis_error`.
    pub async fn ask(&self, key: &KeyDigest, want: u32, call: &Call) -> Result<(), ProxyError> {
        let Some(global) = &self.global else {
            return Ok(());
        };
        match global.ask(key, want).await {
            Some(Ok(())) => Ok(()),
            Some(Err(retry_after)) => Err(self.refuse(retry_after, retry_after)),
            None => match global.fallback {
                Fallback::Allow => Ok(()),
                Fallback::Deny => Err(self.refuse(crate::redis::OPEN_FOR, crate::redis::OPEN_FOR)),
                Fallback::Local => match &self.local_fallback {
                    Some(local) => local.check(call, Instant::now()).inspect_err(|_| {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                    }),
                    None => Ok(()),
                },
            },
        }
    }

    fn key_of<'a>(&self, call: &'a Call) -> std::borrow::Cow<'a, str> {
        match &self.config.key {
            RateLimitKey::Global => "".into(),
            RateLimitKey::ClientIp => call.client_ip.to_string().into(),
            RateLimitKey::Header(name) => call
                .req
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .into(),
        }
    }

    fn refuse(&self, retry_after: Duration, reset: Duration) -> ProxyError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let header = HeaderValue::from_str(&format!("\"route\";r=0;t={}", ceil_secs(reset)))
            .unwrap_or(HeaderValue::from_static("\"route\";r=0"));
        ProxyError::RateLimited {
            retry_after,
            ratelimit: Some((header, self.policy.clone())),
        }
    }

    /// Checks the local buckets (the only check for `scope = "local"`).
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
                        let key = crate::call::format_ip(call.client_ip, &mut buf);
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
            Decision::Deny { retry_after, reset } => Err(self.refuse(retry_after, reset)),
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
    metrics: Arc<RouteMetrics>,
}

impl RateLimitLayer {
    pub fn new(limiter: Option<Arc<RouteLimiter>>, metrics: Arc<RouteMetrics>) -> Self {
        RateLimitLayer { limiter, metrics }
    }
}

pub type RateLimitService<S> = Protected<RateLimitLayer, S>;
protection_layer!(RateLimitLayer => RateLimitService);

impl Protection for RateLimitLayer {
    fn call<S: CallService>(&self, inner: &mut S, call: Call) -> CallFuture {
        if let Some(limiter) = &self.limiter {
            match limiter.verdict(&call, call.started) {
                Verdict::Allow => {}
                Verdict::Deny(e) => {
                    self.metrics.rate_limited.inc();
                    return Box::pin(async move { Err(e) });
                }
                Verdict::Ask { key, want } => {
                    let limiter = Arc::clone(limiter);
                    let metrics = self.metrics.clone();
                    let mut inner = inner.clone();
                    return Box::pin(async move {
                        if let Err(e) = limiter.ask(&key, want, &call).await {
                            metrics.rate_limited.inc();
                            return Err(e);
                        }
                        inner.call(call).await
                    });
                }
            }
        }
        inner.call(call)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    Global,
    ClientIp,
    Header(http::HeaderName),
}

impl RateLimitKey {
    pub fn describe(&self) -> String {
        match self {
            RateLimitKey::Global => "global".into(),
            RateLimitKey::ClientIp => "client_ip".into(),
            RateLimitKey::Header(h) => format!("header:{h}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    Local,
    Global,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub rps: f64,
    pub burst: u32,
    pub key: RateLimitKey,
    pub scope: RateLimitScope,
    pub max_keys: usize,
}
