//! Bodies as they flow through levee: streamed by default, buffered only when small enough to
//! replay on a retry, and counted on the way out for the access log.

use crate::conn::{Busy, ConnActivity};
use crate::h1::DirectBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Error type of request bodies: the client's stream failed, or it outgrew `max_body`.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
    #[error("request body exceeds the route's max_body")]
    TooLarge,
}

/// The client's request body as hyper delivers it. On a parkable connection it holds the
/// connection busy until it has been read to its end; dropped before that, it forbids parking,
/// since hyper may then stop reading the connection half-way through the body.
///
/// An HTTP/2 body dropped before its END_STREAM is drained in the background instead (see
/// [`drain_h2`]): dropping it would make hyper reset the stream.
#[derive(Debug)]
pub struct ClientBody {
    /// Always `Some` until dropped; taken only by `Drop` to drain an HTTP/2 stream.
    body: Option<Incoming>,
    busy: Option<Busy>,
    /// The body is an HTTP/2 stream's: read it to its end before letting it go.
    h2: bool,
}

impl ClientBody {
    pub fn new(body: Incoming, activity: Option<&Arc<ConnActivity>>) -> Self {
        let busy = match activity {
            Some(a) if !body.is_end_stream() => Some(a.hold()),
            _ => None,
        };
        ClientBody {
            body: Some(body),
            busy,
            h2: false,
        }
    }

    /// Marks the body as an HTTP/2 request stream's, drained to END_STREAM when dropped early.
    pub fn http2(mut self) -> Self {
        self.h2 = true;
        self
    }

    fn ended(&mut self) {
        self.busy = None;
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let unfinished = self.body.as_ref().is_some_and(|b| !b.is_end_stream());
        if let Some(busy) = self.busy.take() {
            if unfinished {
                busy.forbid_parking();
            }
        }
        if self.h2 && unfinished {
            if let Some(body) = self.body.take() {
                drain_h2(body);
            }
        }
    }
}

/// The most an abandoned HTTP/2 request body is read for, and how much of it, before the stream
/// is let go (and reset by hyper) anyway.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const DRAIN_BYTES: u64 = 1024 * 1024;

/// Reads and discards the rest of an HTTP/2 request body until END_STREAM, the client's reset,
/// or the bounds above. Without it, a body dropped once its `content-length` was satisfied (or
/// because levee answered early) makes hyper send RST_STREAM before the client's END_STREAM:
/// RFC 9113 §8.1 allows that, but clients that end a body with a separate empty DATA frame
/// (httpx among them) fail the request when they see it. Reading also returns flow-control
/// credit, so the client can finish sending.
fn drain_h2(mut body: Incoming) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut read = 0u64;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while read <= DRAIN_BYTES {
                match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    Some(Ok(frame)) => {
                        read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    Some(Err(_)) | None => return,
                }
            }
        });
        let _ = drained.await;
    });
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        let ended = frame.is_none() || body.is_end_stream();
        if this.busy.is_some() && ended {
            this.ended();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// Fully buffered (or empty): can be sent again on a retry.
    Full(Option<Bytes>),
    /// Streamed from the client as it arrives; `remaining` enforces `max_body` on chunked bodies.
    Stream {
        body: ClientBody,
        remaining: Option<u64>,
    },
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody::Full(None)
    }

    /// A copy for another attempt, if this body can be replayed.
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Full(b) => Some(RequestBody::Full(b.clone())),
            RequestBody::Stream { .. } => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream { body, remaining } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if let (Some(Ok(f)), Some(left)) = (&frame, remaining.as_mut()) {
                    if let Some(data) = f.data_ref() {
                        let n = data.len() as u64;
                        if n > *left {
                            return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                        }
                        *left -= n;
                    }
                }
                Poll::Ready(frame.map(|r| r.map_err(RequestBodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Stream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Stream { body, .. } => body.size_hint(),
        }
    }
}

/// Charged when a response body that was counted a success breaks after its headers (reset,
/// stall): the upstream, whose breaker and outlier detection count it after all.
pub trait LateFailure: Send + Sync + 'static {
    fn late_failure(&self, endpoint: usize);
}

/// Called once when a response body has been fully sent or abandoned: the access log hook.
pub trait OnComplete: Send + Sync + 'static {
    fn complete(&mut self, bytes: u64, finished: bool);
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error("upstream body: {0}")]
    Upstream(#[from] hyper::Error),
    #[error("upstream body: {0}")]
    Direct(#[from] crate::h1::H1Error),
    #[error("upstream sent no body data for {0:?}")]
    Stalled(std::time::Duration),
}

/// A response body on its way to the client.
pub struct ResponseBody {
    inner: ResponseInner,
    sent: u64,
    done: bool,
    on_complete: Option<Box<dyn OnComplete>>,
    /// Who is charged (and for which endpoint) if this body breaks after the headers.
    charge: Option<(Arc<dyn LateFailure>, usize)>,
    /// Keeps a parkable connection busy until this body is sent or abandoned.
    busy: Option<Busy>,
    /// A gRPC call's verdict waiting for the trailers, and the client's deadline.
    grpc: Option<Box<crate::grpc::GrpcStream>>,
}

enum ResponseInner {
    Upstream(UpstreamBody, Idle),
    Full(Option<Bytes>),
}

/// The longest an upstream body may go without a frame. The timer exists only once a read has
/// had to wait, so a body that is already buffered when polled never touches the timer wheel.
struct Idle {
    limit: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` counts from the current wait (it is re-armed after each frame).
    armed: bool,
}

impl ResponseBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::new(ResponseInner::Full(Some(b.into())))
    }

    pub fn empty() -> Self {
        Self::new(ResponseInner::Full(None))
    }

    /// An upstream's body; if it sends nothing for `idle`, the body ends in an error (the client
    /// sees a truncated response, never a hang).
    pub fn upstream(b: UpstreamBody, idle: std::time::Duration) -> Self {
        Self::new(ResponseInner::Upstream(
            b,
            Idle {
                limit: idle,
                timer: None,
                armed: false,
            },
        ))
    }

    fn new(inner: ResponseInner) -> Self {
        ResponseBody {
            inner,
            sent: 0,
            done: false,
            on_complete: None,
            charge: None,
            busy: None,
            grpc: None,
        }
    }

    /// Makes this a gRPC response body: `verdict` is settled by the trailers' `grpc-status`
    /// (then this body no longer charges late failures: the verdict does), and at `deadline`
    /// the upstream's stream is dropped (reset, which cancels the call upstream) and the client
    /// gets DEADLINE_EXCEEDED trailers.
    pub fn grpc(
        mut self,
        verdict: Option<Box<crate::grpc::DeferredVerdict>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Self {
        self.grpc = crate::grpc::GrpcStream::new(verdict, deadline);
        self
    }

    /// Charges `endpoint` of `upstream` (breaker and outlier detection) if this body fails.
    pub fn charge_failures_to(mut self, upstream: Arc<dyn LateFailure>, endpoint: usize) -> Self {
        self.charge = Some((upstream, endpoint));
        self
    }

    pub fn set_on_complete(&mut self, hook: Box<dyn OnComplete>) {
        self.on_complete = Some(hook);
    }

    /// Holds `busy` until the body is sent or abandoned.
    pub fn hold(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }

    fn finish(&mut self, finished: bool) {
        self.done = true;
        self.busy = None;
        if let Some(mut hook) = self.on_complete.take() {
            hook.complete(self.sent, finished);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let ended = self.is_end_stream();
        if let Some(grpc) = &mut self.grpc {
            // Ended without trailers (INTERNAL to a gRPC client); otherwise the client went
            // away first, and the dropped verdict says nothing about the upstream.
            if grpc.is_pending() && ended {
                grpc.settle(crate::grpc::GrpcEnd::Status(crate::grpc::INTERNAL));
            }
        }
        if !self.done {
            let finished = self.is_end_stream();
            self.finish(finished);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        if let Some(grpc) = &mut this.grpc {
            if !this.done && grpc.deadline_passed(cx) {
                // Dropping the upstream's body resets its stream: the call is cancelled there.
                this.inner = ResponseInner::Full(None);
                this.charge = None;
                grpc.settle(crate::grpc::GrpcEnd::Status(crate::grpc::DEADLINE_EXCEEDED));
                this.grpc = None;
                return Poll::Ready(Some(Ok(Frame::trailers(crate::grpc::deadline_trailers()))));
            }
        }
        let frame = match &mut this.inner {
            ResponseInner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            ResponseInner::Upstream(body, idle) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    idle.armed = false;
                    frame
                }
                Poll::Pending => {
                    let deadline = crate::deadline::after(tokio::time::Instant::now(), idle.limit);
                    let timer = match &mut idle.timer {
                        Some(t) if idle.armed => t,
                        Some(t) => {
                            t.as_mut().reset(deadline);
                            t
                        }
                        None => idle
                            .timer
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    idle.armed = true;
                    ready!(timer.as_mut().poll(cx));
                    Some(Err(ResponseBodyError::Stalled(idle.limit)))
                }
            },
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                } else if let (Some(t), Some(grpc)) = (f.trailers_ref(), &mut this.grpc) {
                    grpc.on_trailers(t);
                }
            }
            Some(Err(_)) => {
                match &mut this.grpc {
                    Some(grpc) if grpc.is_pending() => grpc.settle(crate::grpc::GrpcEnd::Broken),
                    // The upstream failed after its headers were judged a success: charge it now.
                    _ => {
                        if let Some((upstream, endpoint)) = this.charge.take() {
                            upstream.late_failure(endpoint);
                        }
                    }
                }
                this.finish(false)
            }
            None => {
                if let Some(grpc) = &mut this.grpc {
                    grpc.settle(crate::grpc::GrpcEnd::Status(crate::grpc::INTERNAL));
                }
                this.finish(true)
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Full(b) => b.is_none(),
            ResponseInner::Upstream(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseInner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseInner::Full(None) => SizeHint::with_exact(0),
            ResponseInner::Upstream(b, _) => b.size_hint(),
        }
    }
}

/// A response body from either client.
pub enum UpstreamBody {
    Hyper(Incoming),
    Direct(DirectBody),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ResponseBodyError::from))),
            UpstreamBody::Direct(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ResponseBodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Direct(b) => b.size_hint(),
        }
    }
}
