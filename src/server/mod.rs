//! Listeners: accept loop, connection cap, optional TLS, HTTP/1.1 and HTTP/2 on one port, and
//! draining through hyper-util's `GracefulShutdown`. Plaintext connections go to `park`, which
//! serves HTTP/1 with a plain hyper connection it can park when idle, and HTTP/2 prior knowledge
//! with hyper-util's auto builder; TLS connections are served by the auto builder.

pub mod handler;
pub mod park;

use crate::proxy::framing::{Audited, FramingAudit};
use crate::send_timeout::SendTimeout;
use crate::server::handler::{handle, ConnContext};
use crate::snapshot::ListenerRuntime;
use crate::worker::{Worker, WorkerRuntime};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Binds with SO_REUSEADDR so a restart does not wait out TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds one socket per worker on `addr`, each registered with its worker's runtime. More than
/// one worker: every socket has SO_REUSEPORT and the kernel spreads new connections over them
/// (see `crate::worker` for why); with port 0 the others join the port the first one got.
pub fn bind_workers(
    addr: SocketAddr,
    workers: &[WorkerRuntime],
) -> std::io::Result<Vec<TcpListener>> {
    let reuseport = workers.len() > 1;
    let mut sockets: Vec<TcpListener> = Vec::with_capacity(workers.len());
    let mut at = addr;
    for w in workers {
        // Registers the socket with the worker's I/O driver, not the calling runtime's.
        let _runtime = w.handle.enter();
        let socket = if at.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if reuseport {
            socket.set_reuseport(true)?;
        }
        socket.bind(at)?;
        let listener = socket.listen(1024)?;
        at = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// A running listener; dropping the handle does not stop it, `stop` does.
pub struct ListenerHandle {
    pub name: String,
    pub bind: SocketAddr,
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// One accept loop per worker.
    tasks: Vec<JoinHandle<()>>,
}

impl ListenerHandle {
    /// Stops accepting and drains this listener's connections for up to `drain`.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.join().await;
    }

    /// Signals the stop without waiting for the drain.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts accepting on `sockets` (from [`bind_workers`]), each on its worker's runtime.
pub fn spawn_listener(
    workers: &[WorkerRuntime],
    name: String,
    bind: SocketAddr,
    sockets: Vec<TcpListener>,
    drain: Duration,
) -> std::io::Result<ListenerHandle> {
    let local_addr = match sockets.first() {
        Some(s) => s.local_addr()?,
        None => return Err(std::io::Error::other("no worker to listen on")),
    };
    let (stop, stop_rx) = watch::channel(false);
    // `max_connections` holds for the listener, across its workers.
    let open = Arc::new(AtomicUsize::new(0));
    let tasks = workers
        .iter()
        .zip(sockets)
        .map(|(w, socket)| {
            w.handle.spawn(accept_loop(
                w.worker.clone(),
                name.clone(),
                socket,
                stop_rx.clone(),
                drain,
                open.clone(),
            ))
        })
        .collect();
    tracing::info!(listener = %name, addr = %local_addr, workers = workers.len(), "listening");
    Ok(ListenerHandle {
        name,
        bind,
        local_addr,
        stop,
        tasks,
    })
}

struct ConnCount(Arc<AtomicUsize>, Arc<Worker>);

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.shared.metrics.connections.dec();
    }
}

async fn accept_loop(
    worker: Arc<Worker>,
    name: String,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    open: Arc<AtomicUsize>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(runtime) = worker.snapshot().listeners.get(&name).cloned() else {
            continue;
        };
        if open.load(Ordering::Relaxed) >= runtime.config.max_connections {
            tracing::debug!(listener = %name, %peer, "max_connections reached; closing new connection");
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        worker.shared.metrics.connections.inc();
        let count = ConnCount(open.clone(), worker.clone());
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let worker = worker.clone();
        let stop = stop.clone();
        // Boxed, and the task holds only the box and the count. tokio aligns a task's cell to
        // 128 bytes: with the plain connection's future inline the cell was 1 280 bytes
        // (massif), which mimalloc serves from its slower aligned path with room to spare;
        // the box (under 1 KiB, 8-byte aligned, a small block) plus a small cell cost each
        // parked connection ~0.3 KiB less (10 000 parked: 34.2 MiB RSS, against 36.6). The TLS
        // handshake and TLS connection states are large; boxed apart, they do not size every
        // plain-TCP connection's box.
        let conn: Pin<Box<dyn Future<Output = ()> + Send>> = match runtime.tls.clone() {
            None => Box::pin(park::serve_plain(
                stream, peer, worker, runtime, stop, watcher,
            )),
            Some(acceptor) => Box::pin(serve_tls(stream, peer, acceptor, worker, runtime, watcher)),
        };
        tokio::spawn(async move {
            let _count = count;
            conn.await
        });
    }
    drop(listener);
    tracing::info!(listener = %name, open = open.load(Ordering::Relaxed), "listener stopped; draining connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "drain timeout reached; closing remaining connections");
    }
}

/// Serves one TLS connection with the auto builder (HTTP/1 or HTTP/2); never parked.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    worker: Arc<Worker>,
    runtime: Arc<ListenerRuntime>,
    watcher: Watcher,
) {
    let handshake_timeout = runtime.config.header_read_timeout;
    let send_timeout = runtime.config.send_timeout;
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // HTTP/1 connections get their request framing audited (`proxy::framing`); HTTP/2 has none.
    let framing = (tls.get_ref().1.alpn_protocol() != Some(b"h2")).then(FramingAudit::new);
    let ctx = Arc::new(ConnContext {
        peer,
        tls: true,
        listener: runtime.clone(),
        activity: None,
        framing: framing.clone(),
    });
    let svc = service_fn(move |req| handle(worker.clone(), ctx.clone(), req));
    let conn = runtime.builder.serve_connection_with_upgrades(
        TokioIo::new(SendTimeout::new(Audited::new(tls, framing), send_timeout)),
        svc,
    );
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
