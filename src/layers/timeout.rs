//! The route's `timeout`: the time from receiving a request to having the upstream's response
//! headers, across every retry. It is carried down as the call's deadline and enforced by the
//! innermost layer (so the breaker counts it as the upstream's failure); the outer timer here is
//! only a backstop for time spent in the layers themselves.

use crate::error::ProxyError;
use crate::proxy::call::{Answer, Call, CallFuture};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

/// Slack for the backstop, so the innermost timer normally fires first.
const BACKSTOP_SLACK: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            timeout: self.timeout,
            inner,
        }
    }
}

#[derive(Clone)]
pub struct TimeoutService<S> {
    timeout: Duration,
    inner: S,
}

impl<S> Service<Call> for TimeoutService<S>
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

    fn call(&mut self, mut call: Call) -> CallFuture {
        let deadline = Instant::now() + self.timeout;
        call.deadline = call.deadline.min(deadline);
        let fut = self.inner.call(call);
        Box::pin(async move {
            tokio::time::timeout_at(deadline + BACKSTOP_SLACK, fut)
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)?
        })
    }
}
