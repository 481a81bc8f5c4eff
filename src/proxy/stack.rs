//! The order of protections on a route, outermost first:
//!
//! 1. rate limit: refuse early and cheaply, before any upstream work.
//! 2. retry: inside the limiter (a retry is not a new client request) and outside the balancer
//!    (so a retry can pick another endpoint), with a budget.
//! 3. balancer: P2C or round robin over endpoints that are not ejected or unhealthy.
//! 4. breaker: per upstream; open means no traffic at all.
//! 5. concurrency: per upstream in-flight and pending caps.
//! 6. outlier: per endpoint; records each answer for ejection.
//! 7. client: the pooled connection.
//!
//! The route's `timeout` is no layer: `server/handler.rs` `prepare` sets it once as the call's
//! deadline (no timer armed per request), and it is enforced where a call can wait: the client
//! (so the breaker counts it as the upstream's failure), the concurrency queue, and the retry
//! backoff.

use crate::layers::breaker::{BreakerLayer, BreakerService, RampBy};
use crate::layers::concurrency::{ConcurrencyLayer, ConcurrencyService};
use crate::layers::outlier::{OutlierLayer, OutlierService, Outliers};
use crate::layers::rate_limit::{RateLimitLayer, RateLimitService, RouteLimiter};
use crate::layers::retry::{RetryLayer, RetryPolicy, RetryService};
use crate::metrics::RouteMetrics;
use crate::shard::Local;
use crate::upstream::balance::{BalanceLayer, BalanceService};
use crate::upstream::client::{ClientService, StaleResend};
use crate::upstream::WorkerUpstream;
use std::sync::Arc;
use tower::ServiceBuilder;

/// A route's composed service: one concrete type, so a per-request clone is a handful of `Arc`
/// increments and no allocation.
pub type RouteStack = RateLimitService<
    RetryService<BalanceService<BreakerService<ConcurrencyService<OutlierService<ClientService>>>>>,
>;

/// Built per worker (`crate::worker`): each per-upstream layer gets this worker's own handle on
/// its state, which the upstream owns.
pub fn build(
    upstream: &Arc<WorkerUpstream>,
    limiter: Option<&Arc<RouteLimiter>>,
    retry: Option<&Arc<RetryPolicy>>,
    metrics: &Arc<RouteMetrics>,
    ramp: RampBy,
) -> RouteStack {
    ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.cloned(), metrics.clone()))
        .layer(RetryLayer::new(retry.cloned(), metrics.clone()))
        .layer(BalanceLayer::new(upstream.clone()))
        .layer(BreakerLayer(
            Arc::new(Local(upstream.breaker.clone())),
            ramp,
        ))
        .layer(ConcurrencyLayer(Arc::new(Local(
            upstream.concurrency.clone(),
        ))))
        .layer(OutlierLayer(Arc::new(Outliers {
            detector: upstream.outlier.clone(),
            observer: upstream.0.clone(),
        })))
        .service(ClientService::new(
            upstream.clone(),
            StaleResend {
                policy: retry.cloned(),
                resends: metrics.stale_resends.clone(),
            },
        ))
}
