//! A response body read straight off a pooled upstream connection, which goes back to its pool
//! the moment the body's last byte has been read.

use super::pool::{Conn, ConnPool};
use super::response::Framing;
use super::{chunked::Decoded, H1Error};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Read size for body data that was not already buffered with the head.
const READ_SIZE: usize = 16 * 1024;
const MAX_READ_SIZE: usize = 64 * 1024;

pub struct DirectBody {
    state: State,
}

enum State {
    Done,
    /// The whole body arrived with the head; the connection is already back in its pool.
    Ready(Bytes),
    /// Boxed: only bodies that outgrow the first read pay for the connection's state here.
    Streaming(Box<Streaming>),
}

pub(super) struct Streaming {
    pub conn: Conn,
    pub framing: Framing,
    pub keep_alive: bool,
    pub pool: Arc<ConnPool>,
}

impl DirectBody {
    pub(super) fn ready(data: Bytes) -> DirectBody {
        DirectBody {
            state: if data.is_empty() {
                State::Done
            } else {
                State::Ready(data)
            },
        }
    }

    pub(super) fn streaming(s: Streaming) -> DirectBody {
        DirectBody {
            state: State::Streaming(Box::new(s)),
        }
    }

    /// The body has been read to its end: the connection goes back to the pool when the
    /// upstream allows it and sent nothing past the body.
    fn finish(&mut self) {
        if let State::Streaming(s) = std::mem::replace(&mut self.state, State::Done) {
            if s.keep_alive && s.conn.buf.is_empty() {
                s.pool.checkin(s.conn);
            }
        }
    }
}

impl http_body::Body for DirectBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            let s = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Ready(_) => {
                    let State::Ready(data) = std::mem::replace(&mut this.state, State::Done) else {
                        return Poll::Ready(None);
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Streaming(s) => s,
            };
            match &mut s.framing {
                Framing::Length(left) if !s.conn.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(s.conn.buf.len());
                    let data = s.conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Chunked(decoder) => match decoder.decode(&mut s.conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Framing::Close if !s.conn.buf.is_empty() => {
                    let data = s.conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Length(_) | Framing::Close => {}
            }
            // A body of known size is read in pieces of up to 64 KiB, one of unknown size in 16
            // KiB pieces: fewer reads for large responses, no large buffer for small ones.
            let want = match s.framing {
                Framing::Length(left) => usize::try_from(left)
                    .unwrap_or(MAX_READ_SIZE)
                    .clamp(1024, MAX_READ_SIZE),
                _ => READ_SIZE,
            };
            if s.conn.buf.capacity() - s.conn.buf.len() < want.min(READ_SIZE) {
                s.conn.buf.reserve(want);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut s.conn.stream),
                cx,
                &mut s.conn.buf
            ));
            match read {
                Ok(0) => {
                    let close_delimited = matches!(s.framing, Framing::Close);
                    this.state = State::Done;
                    return Poll::Ready(if close_delimited {
                        None
                    } else {
                        Some(Err(H1Error::UnexpectedEof))
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done => SizeHint::with_exact(0),
            State::Ready(b) => SizeHint::with_exact(b.len() as u64),
            State::Streaming(s) => match s.framing {
                Framing::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}
