//! Bodies as they flow through levee: streamed by default, buffered only when small enough to
//! replay on a retry, and counted on the way out for the access log.

use crate::park::{Busy, ConnActivity};
use crate::upstream::client::UpstreamBody;
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
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    busy: Option<Busy>,
}

impl ClientBody {
    pub fn new(body: Incoming, activity: Option<&Arc<ConnActivity>>) -> Self {
        let busy = match activity {
            Some(a) if !body.is_end_stream() => Some(a.hold()),
            _ => None,
        };
        ClientBody { body, busy }
    }

    fn ended(&mut self) {
        self.busy = None;
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        if let Some(busy) = self.busy.take() {
            if !self.body.is_end_stream() {
                busy.forbid_parking();
            }
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if this.busy.is_some() && (frame.is_none() || this.body.is_end_stream()) {
            this.ended();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
    Direct(#[from] crate::upstream::h1::H1Error),
    #[error("upstream sent no body data for {0:?}")]
    Stalled(std::time::Duration),
}

/// A response body on its way to the client.
pub struct ResponseBody {
    inner: ResponseInner,
    sent: u64,
    done: bool,
    on_complete: Option<Box<dyn OnComplete>>,
    /// The upstream and endpoint that are charged if this body breaks after the headers.
    charge: Option<(std::sync::Arc<crate::upstream::WorkerUpstream>, usize)>,
    /// Keeps a parkable connection busy until this body is sent or abandoned.
    busy: Option<Busy>,
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
        }
    }

    /// Charges `endpoint` of `upstream` (breaker and outlier detection) if this body fails.
    pub fn charge_failures_to(
        mut self,
        upstream: std::sync::Arc<crate::upstream::WorkerUpstream>,
        endpoint: usize,
    ) -> Self {
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
        let frame = match &mut this.inner {
            ResponseInner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            ResponseInner::Upstream(body, idle) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    idle.armed = false;
                    frame
                }
                Poll::Pending => {
                    let deadline = tokio::time::Instant::now() + idle.limit;
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
                }
            }
            Some(Err(_)) => {
                // The upstream failed after its headers were judged a success: charge it now.
                if let Some((upstream, endpoint)) = this.charge.take() {
                    upstream.late_failure(endpoint);
                }
                this.finish(false)
            }
            None => this.finish(true),
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
