//! The unit of work that flows down a route's service stack.

use crate::body::RequestBody;
use http::{Method, Request, Response};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::time::Instant;

/// A request on its way upstream, with what the layers decide about it along the way.
pub struct Call {
    pub req: CallRequest,
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
    pub fn is_idempotent(&self) -> bool {
        is_idempotent(self.req.method())
    }
}

/// GET, HEAD, OPTIONS, PUT, DELETE and TRACE: safe to send twice (RFC 9110 §9.2.2). The one
/// copy of the rule: retries and the resend on a stale pooled connection both ask it.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The request of a call. Either way it is a pointer: a call moves through every layer, and a
/// pointer is cheaper to move than a request.
pub enum CallRequest {
    Owned(Box<Request<RequestBody>>),
    /// Shared by the attempts of a retried request, whose body is buffered: an attempt costs a
    /// reference count, not a copy of the head.
    Shared(Arc<Request<RequestBody>>),
}

impl CallRequest {
    pub fn new(req: Request<RequestBody>) -> CallRequest {
        CallRequest::Owned(Box::new(req))
    }

    /// The request to hand to a client that consumes it; a shared one is copied only while
    /// another attempt still holds it.
    pub fn into_owned(self) -> Result<Request<RequestBody>, crate::error::ProxyError> {
        match self {
            CallRequest::Owned(req) => Ok(*req),
            CallRequest::Shared(req) => match Arc::try_unwrap(req) {
                Ok(req) => Ok(req),
                Err(req) => copy_request(&req).ok_or(crate::error::ProxyError::BadRequest(
                    "request body cannot be sent twice",
                )),
            },
        }
    }
}

impl std::ops::Deref for CallRequest {
    type Target = Request<RequestBody>;

    fn deref(&self) -> &Request<RequestBody> {
        match self {
            CallRequest::Owned(req) => req,
            CallRequest::Shared(req) => req,
        }
    }
}

/// A copy of `req` if its body can be replayed.
pub fn copy_request(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let body = req.body().try_clone()?;
    let mut r = Request::new(body);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    Some(r)
}

/// An upstream's answer and the endpoint that gave it.
pub struct Answer {
    pub resp: Response<crate::body::UpstreamBody>,
    pub endpoint: usize,
    /// When the response head arrived: the one clock reading the layers share on the way out.
    pub at: Instant,
    /// Whether the upstream failed this call (a `failure_statuses` answer, a trailers-only gRPC
    /// failure): decided once, where the client returns; the layers read it through [`verdict`].
    pub failed: bool,
    /// Set for a gRPC response whose `grpc-status` is still to come in its trailers: layers
    /// that judge the answer attach their bookkeeping here instead of recording at the head,
    /// and the response body settles it when the call really ends.
    pub deferred: Option<Box<crate::grpc::DeferredVerdict>>,
}

/// Whether a call's outcome counts against the upstream (an upstream failure, an answer judged
/// failed); `None` when the upstream was never asked, the client caused the failure, or a gRPC
/// answer's status is still to come (`Answer::deferred`).
pub fn verdict(result: &Result<Answer, crate::error::ProxyError>) -> Option<bool> {
    match result {
        Ok(a) => a.deferred.is_none().then_some(a.failed),
        Err(e) => e.is_upstream_failure().then_some(true),
    }
}

/// When `result` arrived: the answer's own reading, or now for a failure.
pub fn finished_at(result: &Result<Answer, crate::error::ProxyError>) -> Instant {
    match result {
        Ok(a) => a.at,
        Err(_) => Instant::now(),
    }
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

/// Formats an IP into a stack buffer. This runs on every request, and `Display` for IPv4 goes
/// through the formatting machinery; writing the four octets by hand is several times cheaper.
pub fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + (octet / 10) % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            &buf[..len]
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            let len = cursor.position() as usize;
            &buf[..len]
        }
    }
}
