//! Retries per route. A retry turns a transient failure (a refused connection, a reset, a
//! gateway error) into a success, but during an outage every retry is extra load on a backend that
//! is already down. So retries here are bounded three ways: `attempts` per request, a retry
//! [`budget`] per route (a share of recent traffic), and the breaker (an open circuit is never
//! retried). Backoff between tries is exponential with full jitter ([`backoff`]), and each retry
//! prefers a different endpoint than the one that just failed.
//!
//! Only idempotent requests are retried, and only when their body was small enough to keep a
//! copy (`max_retry_body`); larger bodies stream straight through and are sent once.

pub mod backoff;
pub mod budget;

use super::{protection_layer, Protected, Protection};
use crate::body::RequestBody;
use crate::call::{Answer, Call, CallFuture, CallRequest, CallService};
use crate::error::ProxyError;
use crate::metrics::RouteMetrics;
use backoff::Backoff;
use budget::RetryBudget;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Limited};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long deposits count towards the budget.
const BUDGET_TTL: Duration = Duration::from_secs(10);

/// A route's retry policy and budget; the budget survives reloads that keep the policy.
pub struct RetryPolicy {
    pub config: RetryConfig,
    pub budget: RetryBudget,
    backoff: Backoff,
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> Self {
        RetryPolicy {
            budget: RetryBudget::new(
                config.budget_ratio,
                config.budget_min_per_sec,
                BUDGET_TTL,
                Instant::now(),
            ),
            backoff: Backoff {
                base: config.backoff_base,
                max: config.backoff_max,
            },
            config: config.clone(),
        }
    }

    /// Whether this outcome is worth another try under the configured `on` conditions.
    fn should_retry(&self, result: &Result<Answer, ProxyError>, idempotent: bool) -> bool {
        let on = &self.config.on;
        match result {
            Ok(a) => {
                let s = a.resp.status().as_u16();
                idempotent
                    && ((on.gateway_error && matches!(s, 502..=504))
                        || (on.retriable_status && self.config.retriable_statuses.contains(&s)))
            }
            Err(ProxyError::UpstreamConnect(_)) => on.connect_failure || on.gateway_error,
            Err(ProxyError::UpstreamReset(_)) | Err(ProxyError::UpstreamTimeout) => {
                idempotent && (on.reset || on.gateway_error)
            }
            // The one retryability rule (there is no other): a connect failure never reached
            // the upstream; a reset or timeout may have, so only idempotent calls follow one.
            // Overloaded and no healthy endpoint are not retried: the breaker's and the
            // balancer's verdicts are final for this request. The rest are levee's own refusals,
            // the client's faults, or a protocol violation another try would repeat.
            Err(_) => false,
        }
    }
}

/// Applies the route's retry policy, if it has one; without one, calls pass straight through.
#[derive(Clone)]
pub struct RetryLayer {
    policy: Option<Arc<RetryPolicy>>,
    metrics: Arc<RouteMetrics>,
}

impl RetryLayer {
    pub fn new(policy: Option<Arc<RetryPolicy>>, metrics: Arc<RouteMetrics>) -> Self {
        RetryLayer { policy, metrics }
    }
}

pub type RetryService<S> = Protected<RetryLayer, S>;
protection_layer!(RetryLayer => RetryService);

/// Buffers a small body so it can be sent again; leaves large or unknown-size bodies streaming.
async fn make_replayable(req: &mut Request<RequestBody>, limit: u64) -> Result<(), ProxyError> {
    let body = std::mem::replace(req.body_mut(), RequestBody::empty());
    *req.body_mut() = match body {
        RequestBody::Stream { body, remaining } => {
            let declared = http_body::Body::size_hint(&body).exact();
            if http_body::Body::is_end_stream(&body) {
                RequestBody::Full(None)
            } else if declared.is_some_and(|n| n <= limit) {
                let collected = Limited::new(body, limit as usize)
                    .collect()
                    .await
                    .map_err(|_| ProxyError::BadRequest("client request body ended early"))?;
                let bytes: Bytes = collected.to_bytes();
                if remaining.is_some_and(|r| bytes.len() as u64 > r) {
                    return Err(ProxyError::BodyTooLarge);
                }
                RequestBody::Full(Some(bytes))
            } else {
                RequestBody::Stream { body, remaining }
            }
        }
        full => full,
    };
    Ok(())
}

/// The request in a form every attempt can carry: shared when its body is buffered, else the
/// one owned request for a single attempt (`None` as the spare).
fn share(req: CallRequest) -> (CallRequest, Option<Arc<Request<RequestBody>>>) {
    match req {
        CallRequest::Owned(r) if r.body().try_clone().is_some() => {
            let shared = Arc::new(*r);
            (CallRequest::Shared(shared.clone()), Some(shared))
        }
        CallRequest::Shared(r) => (CallRequest::Shared(r.clone()), Some(r)),
        owned => (owned, None),
    }
}

impl Protection for RetryLayer {
    fn call<S: CallService>(&self, inner: &mut S, mut call: Call) -> CallFuture {
        let Some(policy) = self.policy.clone() else {
            return inner.call(call);
        };
        let metrics = self.metrics.clone();
        let mut inner = inner.clone();
        Box::pin(async move {
            policy.budget.deposit(call.started);
            let idempotent = call.is_idempotent();
            if idempotent && policy.config.attempts > 1 {
                if let CallRequest::Owned(req) = &mut call.req {
                    if !http_body::Body::is_end_stream(req.body()) {
                        // Boxed: most requests have no body, and inline this future's state
                        // would size every retried request's future.
                        Box::pin(make_replayable(req, policy.config.max_retry_body)).await?;
                    } else if matches!(req.body(), RequestBody::Stream { .. }) {
                        *req.body_mut() = RequestBody::empty();
                    }
                }
            }
            let overall = call.deadline;
            let picked = Arc::new(AtomicUsize::new(usize::MAX));
            let mut attempt = 1;
            loop {
                let (req, spare) = if attempt < policy.config.attempts {
                    share(call.req)
                } else {
                    (call.req, None)
                };
                let try_deadline = match policy.config.per_try_timeout {
                    Some(t) => overall.min(crate::deadline::after(Instant::now(), t)),
                    None => overall,
                };
                let next = Call {
                    req,
                    client_ip: call.client_ip,
                    started: call.started,
                    deadline: try_deadline,
                    endpoint: call.endpoint,
                    avoid: call.avoid,
                    picked: Some(picked.clone()),
                };
                let result = inner.call(next).await;
                let Some(req) = spare else { return result };
                if !policy.should_retry(&result, idempotent) {
                    return result;
                }
                let now = Instant::now();
                if !policy.budget.withdraw(now) {
                    metrics.budget_exhausted.inc();
                    tracing::debug!("retry budget exhausted; returning the failure");
                    return result;
                }
                let delay = policy.backoff.delay(attempt);
                if crate::deadline::after(now, delay) >= overall {
                    return result;
                }
                let failed_on = Some(picked.load(Ordering::Relaxed)).filter(|i| *i != usize::MAX);
                // Release the failed response (and its connection) before waiting.
                drop(result);
                // Boxed for the same reason: only a retry pays for a timer's state.
                Box::pin(tokio::time::sleep(delay)).await;
                metrics.retries.inc();
                attempt += 1;
                call = Call {
                    req: CallRequest::Shared(req),
                    client_ip: call.client_ip,
                    started: crate::deadline::after(now, delay),
                    deadline: overall,
                    endpoint: 0,
                    avoid: failed_on.or(call.avoid),
                    picked: None,
                };
            }
        })
    }
}

/// Which failures a retry may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    pub gateway_error: bool,
    pub retriable_status: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Total tries including the first.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_ratio: f64,
    pub budget_min_per_sec: u32,
    pub on: RetryOn,
    pub retriable_statuses: Vec<u16>,
    pub max_retry_body: u64,
}
