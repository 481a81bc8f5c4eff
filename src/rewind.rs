//! An IO that first gives back bytes already taken off it: what hyper had read but not parsed
//! when a connection was parked (a pipelined or half-sent next request), or the bytes read to
//! tell HTTP/2 from HTTP/1. Writes go straight through, as in every IO wrapper of levee's that
//! only watches or replaces reads: `forward_writes!` writes that pass-through once for all.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner` with `pre` in front of it. Reads drain `pre` before they touch `inner`.
#[derive(Debug)]
pub struct Rewind<T> {
    pre: Bytes,
    inner: T,
    /// When set, `poll_shutdown` leaves the socket open: hyper shuts its IO down when an HTTP/1
    /// connection ends, and the connection loop decides whether that means closing or parking.
    keep_open: bool,
}

impl<T> Rewind<T> {
    /// Reads give `pre` first, then `inner`; shutdown shuts `inner` down.
    pub fn new(inner: T, pre: Bytes) -> Self {
        Rewind {
            pre,
            inner,
            keep_open: false,
        }
    }

    /// Like `new`, but shutdown only flushes: the owner closes or keeps the socket afterwards.
    pub fn keeping_open(inner: T, pre: Bytes) -> Self {
        Rewind {
            pre,
            inner,
            keep_open: true,
        }
    }

    /// The IO and whatever of `pre` was not read yet.
    pub fn into_parts(self) -> (T, Bytes) {
        (self.inner, self.pre)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                // Let go of the storage now rather than when the connection ends.
                self.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    forward_writes!(inner, but_shutdown);

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.keep_open {
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The write half of an IO wrapper that only watches or replaces reads: every write method of
/// `AsyncWrite` (or hyper's `rt::Write`, which has the same ones) passed to the field `$io`.
/// `but_shutdown` leaves `poll_shutdown` to the wrapper.
macro_rules! forward_writes {
    ($io:ident) => {
        $crate::rewind::forward_writes!($io, but_shutdown);

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.$io).poll_shutdown(cx)
        }
    };
    ($io:ident, but_shutdown) => {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.$io).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.$io).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$io.is_write_vectored()
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.$io).poll_flush(cx)
        }
    };
}
pub(crate) use forward_writes;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_the_rewound_bytes_first_then_the_io() {
        let (client, mut server) = tokio::io::duplex(64);
        server.write_all(b" world").await.unwrap();
        drop(server);
        let mut r = Rewind::new(client, Bytes::from_static(b"hello"));
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn a_small_read_buffer_takes_the_rewound_bytes_in_pieces() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let mut r = Rewind::new(client, Bytes::from_static(b"abcdef"));
        let mut two = [0u8; 2];
        let mut got = Vec::new();
        loop {
            let n = r.read(&mut two).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&two[..n]);
        }
        assert_eq!(got, b"abcdef");
    }

    #[tokio::test]
    async fn into_parts_returns_what_was_not_read() {
        let (client, _server) = tokio::io::duplex(64);
        let mut r = Rewind::new(client, Bytes::from_static(b"abcdef"));
        let mut four = [0u8; 4];
        r.read_exact(&mut four).await.unwrap();
        let (_io, rest) = r.into_parts();
        assert_eq!(&rest[..], b"ef");
    }

    #[tokio::test]
    async fn keeping_open_does_not_shut_the_io_down() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut r = Rewind::keeping_open(client, Bytes::new());
        r.write_all(b"ping").await.unwrap();
        r.shutdown().await.unwrap();
        // Still open: more writes go through, and the peer sees no EOF.
        r.write_all(b"pong").await.unwrap();
        let mut got = [0u8; 8];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pingpong");
        let (client, _) = r.into_parts();
        drop(client);
        assert_eq!(server.read(&mut got).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn new_shuts_the_io_down() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut r = Rewind::new(client, Bytes::new());
        r.shutdown().await.unwrap();
        let mut got = [0u8; 1];
        assert_eq!(server.read(&mut got).await.unwrap(), 0);
    }
}
