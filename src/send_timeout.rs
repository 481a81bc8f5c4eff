//! `[[listener]] send_timeout`: a client that accepts no response bytes for this long is
//! disconnected, over HTTP/1 and HTTP/2 alike.
//!
//! Without it, a client that stops reading holds its connection, its response buffers and the
//! upstream response behind them for as long as it likes (nginx's `send_timeout` and Envoy's
//! stream idle timeout exist for this). The check sits in the connection's IO, below hyper:
//! a write (or flush) that cannot proceed because the socket's send buffer is full starts a
//! timer; any write that moves bytes stops it; when it fires, the pending write fails and hyper
//! ends the connection. A client reading slowly but steadily is never cut off, and an idle
//! connection (nothing to send) is never timed here; the header read timeout covers that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An IO whose writes fail once they have made no progress for `limit`.
pub struct SendTimeout<T> {
    inner: T,
    limit: Duration,
    /// Allocated on the first stall only: most connections never fill their send buffer.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<T> SendTimeout<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        SendTimeout {
            inner,
            limit,
            timer: None,
            stalled: false,
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    /// A write made no progress: start the clock if it is not running, and fail once it ran out.
    fn stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let deadline = crate::deadline::after(Instant::now(), self.limit);
        let timer = match &mut self.timer {
            Some(t) if self.stalled => t,
            Some(t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client accepted no bytes for send_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<R>(&mut self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if matches!(r, Poll::Ready(Ok(_))) {
            self.stalled = false;
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_write(cx, buf) {
            Poll::Pending => me.stalled(cx),
            r => me.progressed(r),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => me.stalled(cx),
            r => me.progressed(r),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_flush(cx) {
            Poll::Pending => me.stalled(cx),
            r => me.progressed(r),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_shutdown(cx) {
            Poll::Pending => me.stalled(cx),
            r => me.progressed(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that reads nothing: the writer fails once the pipe is full and `limit` has passed
    /// without progress; a peer that reads in time keeps it going.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_limit() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = SendTimeout::new(ours, Duration::from_secs(60));
        io.write_all(&[0u8; 1024]).await.unwrap();
        // Full: a read of 512 bytes 59 s later is progress and restarts the clock.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(59)).await;
            let mut buf = [0u8; 512];
            theirs.read_exact(&mut buf).await.unwrap();
            theirs
        });
        io.write_all(&[0u8; 512]).await.unwrap();
        let _theirs = reader.await.unwrap();
        let started = Instant::now();
        let err = io.write_all(&[0u8; 512]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
