//! The byte tunnel behind an upgrade (WebSocket): bytes are copied both ways until both sides
//! are done, or until nothing has moved either way for the route's `tunnel_idle_timeout`.
//!
//! Why an idle limit: a tunnel whose peers both went silent (a client that vanished without a
//! FIN, a backend that hung) would otherwise hold two sockets and a task forever. nginx closes
//! such tunnels after `proxy_read_timeout`, Envoy after its stream idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both sides finished (or one failed).
    Closed,
    /// Nothing moved either way for the idle limit; both connections were dropped.
    Idle,
}

/// Copies between `a` and `b` until both are done or the tunnel has been silent for `idle`.
pub async fn copy_until_idle<A, B>(a: A, b: B, idle: Duration) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    // Milliseconds since `start` at the last byte read from either side.
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Watched {
        io: a,
        start,
        last: last.clone(),
    };
    let mut b = Watched {
        io: b,
        start,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let mut deadline = start + idle;
    loop {
        tokio::select! {
            _ = &mut copy => return TunnelEnd::Closed,
            _ = tokio::time::sleep_until(deadline) => {
                let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if Instant::now() >= seen + idle {
                    return TunnelEnd::Idle;
                }
                // Traffic since the timer was set: wait out the rest from the last byte.
                deadline = seen + idle;
            }
        }
    }
}

/// One side of a tunnel, noting when it last delivered bytes.
struct Watched<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    crate::rewind::forward_writes!(io);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_closes_after_the_idle_limit() {
        let (client, a) = tokio::io::duplex(1024);
        let (b, _upstream) = tokio::io::duplex(1024);
        let started = Instant::now();
        let end = copy_until_idle(a, b, IDLE).await;
        assert_eq!(end, TunnelEnd::Idle);
        assert_eq!(started.elapsed(), IDLE);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_either_way_keeps_it_open() {
        let (mut client, a) = tokio::io::duplex(1024);
        let (b, mut upstream) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(copy_until_idle(a, b, IDLE));
        let mut buf = [0u8; 4];
        // Ten exchanges, each after most of the idle limit, alternating direction.
        for i in 0..10 {
            tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
            if i % 2 == 0 {
                client.write_all(b"ping").await.unwrap();
                upstream.read_exact(&mut buf).await.unwrap();
            } else {
                upstream.write_all(b"pong").await.unwrap();
                client.read_exact(&mut buf).await.unwrap();
            }
            assert!(!tunnel.is_finished(), "closed after exchange {i}");
        }
        // Then silence: closed one idle limit after the last byte.
        let silent_from = Instant::now();
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Idle);
        assert_eq!(silent_from.elapsed(), IDLE);
        // Both connections were dropped: the peers see the end of their streams.
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(upstream.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_both_sides_close_ends_at_once() {
        let (client, a) = tokio::io::duplex(1024);
        let (b, upstream) = tokio::io::duplex(1024);
        drop(client);
        drop(upstream);
        let started = Instant::now();
        assert_eq!(copy_until_idle(a, b, IDLE).await, TunnelEnd::Closed);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
