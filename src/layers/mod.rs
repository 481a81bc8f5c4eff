//! One protection per module, each a tower `Layer` over shared, reload-surviving state; the
//! service around each is the one [`Protected`]. A route's stack composes them in the order
//! `proxy::stack` documents.

pub mod breaker;
pub mod concurrency;
pub mod outlier;
pub mod rate_limit;
pub mod retry;

use crate::call::{Answer, Call, CallFuture, CallService};
use crate::error::ProxyError;
use std::task::{Context, Poll};

/// What a protection does to one call, given the service inside it. The protection is its
/// layer's value (a handful of `Arc`s): each writes only this, and `protection_layer!` makes
/// it a `Layer` whose service is a [`Protected`].
pub trait Protection: Clone + Send + 'static {
    fn call<S: CallService>(&self, inner: &mut S, call: Call) -> CallFuture;
}

/// The `Layer` of a protection: it puts a clone of itself in front of the inner service, as
/// `$service`, the protection's name for its [`Protected`]. (One blanket impl over every
/// `Protection` cannot be written: `Layer` is tower's trait.)
macro_rules! protection_layer {
    ($protection:ty => $service:ident) => {
        impl<S> tower::Layer<S> for $protection {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> $service<S> {
                $crate::layers::Protected::new(self.clone(), inner)
            }
        }
    };
}
pub(crate) use protection_layer;

/// A protection `P` in front of the inner service `S`: what each protection's layer builds.
/// Always ready: where a call waits (a concurrency slot, a global rate-limit answer, a retry's
/// backoff), it waits inside its future.
#[derive(Clone)]
pub struct Protected<P, S> {
    protection: P,
    inner: S,
}

impl<P, S> Protected<P, S> {
    pub fn new(protection: P, inner: S) -> Self {
        Protected { protection, inner }
    }
}

impl<P: Protection, S: CallService> tower::Service<Call> for Protected<P, S> {
    type Response = Answer;
    type Error = ProxyError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> CallFuture {
        self.protection.call(&mut self.inner, call)
    }
}
