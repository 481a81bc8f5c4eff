//! Parking idle HTTP/1 keep-alive connections, so that an idle connection costs a socket and a
//! few hundred bytes instead of hyper's buffers and connection state.
//!
//! hyper keeps an HTTP/1 connection's read buffer (8–16 KiB), write buffer (8 KiB) and its
//! connection future alive for as long as the connection is open, idle or not, and offers no way
//! to release them from outside. nginx frees its request buffers on an idle keep-alive
//! connection; this module does the same by ending the hyper connection instead: once nothing
//! has been in flight for `PARK_AFTER` (20 ms once the worker holds over 64 awake, see
//! `conn::park_after`), the loop asks hyper to shut the connection down
//! gracefully (hyper, idle between requests, stops at once and writes nothing), takes the socket
//! back with the bytes hyper read but had not parsed, and waits for the socket to become
//! readable. Then a fresh hyper connection continues on the same socket, fed those bytes first.
//!
//! A parked connection is resumed only when the loop itself stopped hyper and no request on it
//! asked to close (HTTP/1.0, `Connection: close`) or left its body half-read: in every other
//! ending hyper closed the connection for its own reasons and so does the loop.
//!
//! Plaintext only: the first bytes tell HTTP/2 prior knowledge (served by hyper-util's auto
//! builder, as TLS connections are, and never parked) from HTTP/1. Upgrades (101) on a parkable
//! connection are handed over through `ConnActivity`, since the plain hyper connection used here
//! does not fulfil `hyper::upgrade::on`.

use crate::conn::{park_after, plan, Awake, ConnActivity, Step, Upgraded, PARK_AFTER};
use crate::rewind::Rewind;

use crate::proxy::framing::{Audited, FramingAudit};
use crate::send_timeout::SendTimeout;
use crate::server::handler::{handle, ConnContext};
use crate::snapshot::ListenerRuntime;
use crate::worker::Worker;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first read of a new connection: room for a typical request head.
const FIRST_READ: usize = 4096;

/// How the first bytes of a plaintext connection read.
enum Start {
    /// HTTP/1, with any bytes already taken off the socket.
    Http1(Bytes),
    /// HTTP/2 prior knowledge, with the part of the preface already taken off the socket.
    Http2(Bytes),
}

/// Serves one plaintext connection: HTTP/1 with parking, or HTTP/2 prior knowledge as before.
/// `stop` turns true when the listener drains; `watcher` keeps the listener's drain waiting
/// until this connection has ended.
pub async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    worker: Arc<Worker>,
    listener: Arc<ListenerRuntime>,
    mut stop: watch::Receiver<bool>,
    watcher: Watcher,
) {
    let activity = ConnActivity::new();
    let idle_timeout = listener.config.header_read_timeout;
    let mut stream = stream;
    // A connection that never sends a byte is held no longer than one that stalls mid-head.
    let deadline = crate::deadline::after(activity.idle_since(), idle_timeout);
    let start = tokio::select! {
        biased;
        _ = stop.changed() => return,
        _ = tokio::time::sleep_until(deadline) => return,
        s = sniff(&mut stream) => match s {
            Ok(Some(s)) => s,
            Ok(None) | Err(_) => return,
        },
    };
    let read = match start {
        Start::Http2(read) => {
            let ctx = Arc::new(ConnContext {
                peer,
                tls: false,
                listener: listener.clone(),
                activity: None,
                framing: None,
            });
            let svc = service_fn(move |req| handle(worker.clone(), ctx.clone(), req));
            // Boxed: the auto connection is large, and inline it would size every parked
            // HTTP/1 connection's task too.
            let send_timeout = listener.config.send_timeout;
            let io = TokioIo::new(SendTimeout::new(Rewind::new(stream, read), send_timeout));
            let conn =
                Box::pin(watcher.watch(listener.builder.serve_connection_with_upgrades(io, svc)));
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        Start::Http1(read) => read,
    };
    // Not watched by hyper-util: held so the listener's drain waits for this connection too.
    let _drain_guard = watcher;
    // Every byte of the HTTP/1 stream passes the audit once: these here, the rest as hyper
    // reads them from the socket (bytes handed back to hyper after parking are not read twice).
    let framing = FramingAudit::new();
    framing.observe(&read);
    let ctx = Arc::new(ConnContext {
        peer,
        tls: false,
        listener,
        activity: Some(activity.clone()),
        framing: Some(framing),
    });
    serve_http1(stream, read, worker, ctx, activity, stop).await;
}

/// Reads the connection's first bytes and tells HTTP/2 prior knowledge from HTTP/1 by them. A
/// read rather than a peek: the bytes read (usually the whole first request) go to hyper first,
/// so a new connection costs no extra system call. None on EOF before any byte.
async fn sniff(stream: &mut TcpStream) -> std::io::Result<Option<Start>> {
    let mut buf = bytes::BytesMut::with_capacity(FIRST_READ);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then(|| Start::Http1(buf.freeze())));
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(Start::Http1(buf.freeze())));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Start::Http2(buf.freeze())));
        }
        // A partial preface (or an HTTP/1 request that starts like one): read until decided.
        if buf.capacity() == buf.len() {
            buf.reserve(FIRST_READ);
        }
    }
}

/// The HTTP/1 connection loop: a hyper connection while there is work, the bare socket while
/// parked, until the client leaves, the idle timeout passes, or the listener drains.
async fn serve_http1(
    mut stream: TcpStream,
    mut unparsed: Bytes,
    worker: Arc<Worker>,
    ctx: Arc<ConnContext>,
    activity: Arc<ConnActivity>,
    mut stop: watch::Receiver<bool>,
) {
    let idle_timeout = ctx.listener.config.header_read_timeout;
    let peer = ctx.peer;
    let tick = tokio::time::sleep(PARK_AFTER);
    tokio::pin!(tick);
    let mut draining = false;
    // The first hyper connection starts at once: `serve_plain` saw bytes waiting.
    let mut parked = false;
    loop {
        if parked && unparsed.is_empty() {
            // Parked: nothing but the socket, until it has bytes (or EOF) to read.
            let _parked = Parked::new(&worker.shared.metrics.parked);
            tick.as_mut()
                .reset(crate::deadline::after(activity.idle_since(), idle_timeout));
            let mut probe = [0u8; 1];
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = &mut tick => return,
                // `poll_peek` rather than `peek`: its future is a few bytes, not a few hundred.
                r = std::future::poll_fn(|cx| {
                    stream.poll_peek(cx, &mut tokio::io::ReadBuf::new(&mut probe))
                }) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
            }
        }

        let io = TokioIo::new(SendTimeout::new(
            Rewind::keeping_open(
                Audited::new(stream, ctx.framing.clone()),
                std::mem::take(&mut unparsed),
            ),
            ctx.listener.config.send_timeout,
        ));
        let svc = {
            let (worker, ctx) = (worker.clone(), ctx.clone());
            // Counted awake for as long as hyper's connection (which owns this service) lives.
            // The guard rides in the service rather than in this loop: held across the loop's
            // awaits it grew every parked connection's task by ~190 bytes.
            let awake = Awake::enter();
            service_fn(move |req| {
                let _awake = &awake;
                handle(worker.clone(), ctx.clone(), req)
            })
        };
        // Boxed: its size stays off this task's future while the connection is parked.
        let mut conn = Box::new(ctx.listener.http1.serve_connection(io, svc));
        let first = activity.started();
        let mut parking = false;
        let mut checking = true;
        tick.as_mut()
            .reset(Instant::now() + park_after(Awake::count()));
        let ended = loop {
            tokio::select! {
                biased;
                r = &mut *conn => break r,
                _ = stop.changed(), if !draining => {
                    // As hyper-util's watcher does: idle now means closed now; a request in
                    // flight finishes, with `connection: close` if its head is not sent yet.
                    draining = true;
                    std::pin::Pin::new(&mut *conn).graceful_shutdown();
                }
                _ = &mut tick, if checking && !parking && !draining => {
                    let park_after = park_after(Awake::count());
                    match plan(activity.seen(first), Instant::now(), idle_timeout, park_after) {
                        Step::Park => {
                            parking = true;
                            std::pin::Pin::new(&mut *conn).graceful_shutdown();
                        }
                        Step::Close => return,
                        Step::At(at) => tick.as_mut().reset(at),
                        Step::Never => checking = false,
                    }
                }
            }
        };
        let parts = conn.into_parts();
        let (socket, rest) = parts.io.into_inner().into_inner().into_parts();
        stream = socket.into_inner();
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
            return;
        }
        let leftover = join(&parts.read_buf, &rest);
        if let Some(tx) = activity.take_upgrade() {
            let _ = tx.send(Upgraded { stream, leftover });
            return;
        }
        if !parking || draining || activity.parking_forbidden() {
            // hyper ended it for its own reasons (the client asked to close, EOF, a drain):
            // finish as hyper would have, with a FIN.
            let _ = stream.shutdown().await;
            return;
        }
        worker.shared.metrics.parks.inc();
        unparsed = leftover;
        parked = true;
    }
}

/// Counts a connection in `levee_parked_connections` while it is parked.
struct Parked<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Parked<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Parked(gauge)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What hyper had read but not parsed, then what it had not read of the bytes it was given:
/// copied out, so a few leftover bytes do not pin hyper's whole read buffer while parked.
fn join(read_buf: &[u8], rest: &[u8]) -> Bytes {
    if rest.is_empty() {
        return Bytes::copy_from_slice(read_buf);
    }
    let mut all = Vec::with_capacity(read_buf.len() + rest.len());
    all.extend_from_slice(read_buf);
    all.extend_from_slice(rest);
    Bytes::from(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::snapshot::Snapshot;

    /// The task of an idle connection is this future plus tokio's task header: it must stay
    /// small, since a parked connection keeps nothing else (hyper's connection is boxed).
    #[tokio::test]
    async fn the_connection_future_is_small() {
        let text = "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
                    [[route]]\nname = \"r\"\nupstream = \"u\"\n\n\
                    [[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:9\"]\n";
        let config = crate::config::parse("t.toml", text, std::path::Path::new(".")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let snapshot = Snapshot::build(config, None, &metrics).unwrap();
        let listener = snapshot.listeners["main"].clone();
        let shared = crate::shared::Shared::new(snapshot, metrics);
        let worker = Worker::new(0, shared);
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(server.local_addr().unwrap())
            .await
            .unwrap();
        let peer = stream.local_addr().unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let fut = serve_plain(stream, peer, worker, listener, stop, graceful.watcher());
        let size = std::mem::size_of_val(&fut);
        // 944 bytes in a debug build, 904 in release, when this was written.
        assert!(size <= 1024, "the connection future is {size} bytes");
    }

    #[test]
    fn unparsed_bytes_keep_their_order() {
        assert_eq!(&join(b"GET / HT", b"TP/1.1\r\n")[..], b"GET / HTTP/1.1\r\n");
        assert_eq!(&join(b"", b"abc")[..], b"abc");
        assert_eq!(&join(b"abc", b"")[..], b"abc");
        assert!(join(b"", b"").is_empty());
    }
}
