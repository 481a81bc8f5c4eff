//! Passive outlier detection per endpoint: the answers real traffic gets are the health check.
//! An endpoint that keeps failing is ejected from the pool for a while (longer each time), so one
//! bad instance cannot keep failing a share of requests. The policy is in [`ejection`].

pub mod ejection;

use crate::call::{Answer, Call, CallFuture, CallService};
use crate::error::ProxyError;
use crate::upstream::{Upstream, WorkerUpstream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone)]
pub struct OutlierLayer {
    upstream: Arc<WorkerUpstream>,
}

impl OutlierLayer {
    pub fn new(upstream: Arc<WorkerUpstream>) -> Self {
        OutlierLayer { upstream }
    }
}

impl<S> Layer<S> for OutlierLayer {
    type Service = OutlierService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OutlierService {
            upstream: self.upstream.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct OutlierService<S> {
    upstream: Arc<WorkerUpstream>,
    inner: S,
}

impl<S> Service<Call> for OutlierService<S>
where
    S: CallService,
{
    type Response = Answer;
    type Error = ProxyError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> CallFuture {
        let upstream = self.upstream.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let endpoint = call.endpoint;
            let mut result = inner.call(call).await;
            if let Ok(Answer {
                deferred: Some(deferred),
                ..
            }) = &mut result
            {
                // A gRPC call: judged when its trailers bring the final `grpc-status`.
                let upstream = upstream.clone();
                deferred.on_settled(move |failed, now| {
                    if let Some(failed) = failed {
                        record(&upstream, endpoint, failed, now);
                    }
                });
                return result;
            }
            let Some(failed) = upstream.verdict(&result) else {
                return result;
            };
            record(
                &upstream,
                endpoint,
                failed,
                crate::call::finished_at(&result),
            );
            result
        })
    }
}

/// Counts one answer of `endpoint` and feeds it to outlier detection.
fn record(upstream: &Upstream, endpoint: usize, failed: bool, now: tokio::time::Instant) {
    upstream.history.record(failed);
    if let Some(ep) = upstream.endpoints.get(endpoint) {
        ep.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            ep.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    upstream.judge_endpoint(endpoint, failed, now);
}
