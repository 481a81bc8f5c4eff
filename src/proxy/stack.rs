//! The order of protections on a route, outermost first:
//!
//! 1. timeout: the whole request, across retries, has `route.timeout`.
//! 2. rate limit: refuse early and cheaply, before any upstream work.
//! 3. retry: inside the limiter (a retry is not a new client request) and outside the balancer
//!    (so a retry can pick another endpoint), with a budget.
//! 4. balancer: P2C or round robin over endpoints that are not ejected or unhealthy.
//! 5. breaker: per upstream; open means no traffic at all.
//! 6. concurrency: per upstream in-flight and pending caps.
//! 7. outlier: per endpoint; records each answer for ejection.
//! 8. client: the pooled connection, which enforces the call's deadline.

use super::call::{Answer, Call};
use crate::error::ProxyError;
use crate::layers::breaker::BreakerLayer;
use crate::layers::concurrency::ConcurrencyLayer;
use crate::layers::outlier::OutlierLayer;
use crate::layers::rate_limit::{RateLimitLayer, RouteLimiter};
use crate::layers::retry::{RetryLayer, RetryPolicy};
use crate::layers::timeout::TimeoutLayer;
use crate::metrics::RouteMetrics;
use crate::upstream::balance::BalanceLayer;
use crate::upstream::client::ClientService;
use crate::upstream::Upstream;
use std::sync::Arc;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::Layer;

/// A route's composed service.
pub type RouteStack = BoxCloneSyncService<Call, Answer, ProxyError>;

pub fn build(
    upstream: &Arc<Upstream>,
    timeout: Duration,
    limiter: Option<&Arc<RouteLimiter>>,
    retry: Option<&Arc<RetryPolicy>>,
    metrics: &RouteMetrics,
) -> RouteStack {
    let svc = ClientService::new(upstream.clone());
    let svc = OutlierLayer::new(upstream.clone()).layer(svc);
    let svc = ConcurrencyLayer::new(upstream.clone()).layer(svc);
    let svc = BreakerLayer::new(upstream.clone()).layer(svc);
    let mut svc = RouteStack::new(BalanceLayer::new(upstream.clone()).layer(svc));
    if let Some(policy) = retry {
        svc = RouteStack::new(RetryLayer::new(policy.clone(), metrics.clone()).layer(svc));
    }
    if let Some(limiter) = limiter {
        svc = RouteStack::new(RateLimitLayer::new(limiter.clone(), metrics.clone()).layer(svc));
    }
    RouteStack::new(TimeoutLayer::new(timeout).layer(svc))
}
