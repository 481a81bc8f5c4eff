//! The route's `timeout`: the time from receiving a request to having the upstream's response
//! headers, across every retry. It is carried down as the call's deadline and enforced where a
//! call can wait: the innermost layer (so the breaker counts it as the upstream's failure), the
//! concurrency queue, and the retry backoff. No timer is armed here: one timer per request is
//! measurable CPU at proxy rates.

use crate::error::ProxyError;
use crate::call::{Answer, Call, CallFuture, CallService};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

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
    S: CallService,
{
    type Response = Answer;
    type Error = ProxyError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: Call) -> CallFuture {
        call.deadline = call
            .deadline
            .min(crate::deadline::after(call.started, self.timeout));
        self.inner.call(call)
    }
}
