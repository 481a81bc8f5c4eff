//! The unit of work that flows down a route's service stack.

use super::body::RequestBody;
use http::{Method, Request, Response};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::time::Instant;

/// A request on its way upstream, with what the layers decide about it along the way.
pub struct Call {
    /// Boxed: a call moves through every layer, and a pointer is cheaper to move than a request.
    pub req: Box<Request<RequestBody>>,
    pub client_ip: IpAddr,
    /// When levee received the request: the clock reading the layers share, so a request reads
    /// the clock a few times rather than once per layer.
    pub started: Instant,
    /// When the route's `timeout` (or a retry's `per_try_timeout`) runs out. The innermost layer
    /// enforces it, so a timeout is seen by the breaker and outlier detector as the upstream's
    /// failure rather than as a cancelled call.
    pub deadline: Instant,
    /// Set by the balancer.
    pub endpoint: usize,
    /// The endpoint the previous attempt failed on; the balancer prefers another.
    pub avoid: Option<usize>,
    /// Where the balancer reports its pick, for a retry to avoid it; only set when retrying.
    pub picked: Option<Arc<AtomicUsize>>,
}

impl Call {
    /// GET, HEAD, OPTIONS, PUT, DELETE and TRACE: safe to send twice (RFC 9110 §9.2.2).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            *self.req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
    }
}

/// An upstream's answer and the endpoint that gave it.
pub struct Answer {
    pub resp: Response<crate::upstream::client::UpstreamBody>,
    pub endpoint: usize,
}

pub type CallFuture =
    Pin<Box<dyn Future<Output = Result<Answer, crate::error::ProxyError>> + Send>>;

/// What every layer of a route's stack wraps: a cloneable service from a [`Call`] to an
/// [`Answer`], failing with a `ProxyError`, whose future is boxed. One name for the bound the
/// layers share.
pub trait CallService:
    tower::Service<Call, Response = Answer, Error = crate::error::ProxyError, Future = CallFuture>
    + Clone
    + Send
    + 'static
{
}

impl<T> CallService for T where
    T: tower::Service<
            Call,
            Response = Answer,
            Error = crate::error::ProxyError,
            Future = CallFuture,
        > + Clone
        + Send
        + 'static
{
}
