//! Misbehaving origins over raw TCP: each speaks just enough HTTP/1.1 to get a request in, then
//! fails in one precise way no well-behaved server library would (reset mid-body, stall, garbage,
//! dropping a keep-alive connection the proxy is about to reuse).

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The body a faulty origin claims to send: `FULL_LEN` bytes, of which it sends the first
/// `SENT_LEN` before failing.
pub const FULL_LEN: usize = 1000;
pub const SENT_LEN: usize = 100;

/// The bytes of the body, position by position: a truncated body must be a prefix of this.
pub fn body_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// How the origin fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Head with `Content-Length: FULL_LEN`, `SENT_LEN` body bytes, then a TCP reset.
    ResetMidBody,
    /// Head with `Content-Length: FULL_LEN`, `SENT_LEN` body bytes, then an orderly close.
    PartialBodyThenClose,
    /// Head with `Content-Length: FULL_LEN`, `SENT_LEN` body bytes, then silence, socket open.
    StallAfterHeaders,
    /// Reads the request, never writes a byte, socket open.
    StallBeforeHeaders,
    /// Answers with bytes that are not HTTP at all.
    Garbage,
    /// Answers `200 ok` with keep-alive, then closes the connection at once (FIN).
    CloseAfterAnswer,
    /// Answers the first request on each connection with keep-alive `200 ok` and keeps the
    /// connection idle; a second request on it is read and the connection dropped without an
    /// answer (reset when `rst`, else FIN). This is the race where an upstream times out an
    /// idle keep-alive connection just as the proxy reuses it, made deterministic.
    DropReusedConnection { rst: bool },
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

struct State {
    fault: Fault,
    connections: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

/// A running faulty origin.
pub struct FaultyOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyOrigin {
    pub async fn start(fault: Fault) -> FaultyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            fault,
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s.clone(), stream));
            }
        });
        FaultyOrigin { addr, state, task }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Request lines received so far (including requests it then failed).
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().clone()
    }
}

impl Drop for FaultyOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (and ignores any body: the tests send none). None on close.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..i + 4).collect();
            let line = String::from_utf8_lossy(&head);
            return Some(line.lines().next().unwrap_or_default().to_string());
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn hold_open(stream: TcpStream) {
    // Keep the socket (and so the connection) alive well past any test's bounds.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(stream);
}

async fn serve(s: Arc<State>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut on_this_connection = 0usize;
    while let Some(line) = read_head(&mut stream, &mut buf).await {
        s.requests.lock().push(line);
        on_this_connection += 1;
        let partial_head = format!("HTTP/1.1 200 OK\r\ncontent-length: {FULL_LEN}\r\n\r\n");
        match s.fault {
            Fault::ResetMidBody | Fault::PartialBodyThenClose | Fault::StallAfterHeaders => {
                let _ = stream.write_all(partial_head.as_bytes()).await;
                let _ = stream.write_all(&body_bytes(SENT_LEN)).await;
                let _ = stream.flush().await;
                // Let the bytes leave before the reset, so the head surely arrives first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                match s.fault {
                    Fault::ResetMidBody => reset(stream),
                    Fault::PartialBodyThenClose => {
                        let _ = stream.shutdown().await;
                    }
                    _ => hold_open(stream).await,
                }
                return;
            }
            Fault::StallBeforeHeaders => return hold_open(stream).await,
            Fault::Garbage => {
                let _ = stream
                    .write_all(b"\x00\x01 this is not HTTP at all \xff\xfe\r\n\r\n")
                    .await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            Fault::CloseAfterAnswer => {
                let _ = stream.write_all(OK).await;
                let _ = stream.shutdown().await;
                return;
            }
            Fault::DropReusedConnection { rst } => {
                if on_this_connection == 1 {
                    if stream.write_all(OK).await.is_err() {
                        return;
                    }
                    continue;
                }
                if rst {
                    reset(stream);
                } else {
                    let _ = stream.shutdown().await;
                }
                return;
            }
        }
    }
}
