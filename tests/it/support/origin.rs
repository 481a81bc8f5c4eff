//! In-process upstreams with switchable behaviour and hit counters.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What an origin does with each request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with this body.
    Ok(&'static str),
    /// This status, small body.
    Status(u16),
    /// Wait, then 200.
    Delay(Duration),
    /// Wait until the test adds a permit to the semaphore, then 200 "slow ok": a slow request
    /// whose end the test decides, instead of a timer racing the test's own steps.
    Gate(Arc<tokio::sync::Semaphore>),
    /// Close the connection without answering.
    Reset,
    /// 200 with the request body echoed back (streamed), and `x-echo-len` trailer-free.
    Echo,
    /// Answer an HTTP/1.1 upgrade with 101, then echo bytes on the raw connection.
    UpgradeEcho,
}

/// A request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

pub struct Origin {
    behaviour: Behaviour,
    fail_first: usize,
    fail_status: u16,
}

impl Default for Origin {
    fn default() -> Self {
        Self::new()
    }
}

impl Origin {
    pub fn new() -> Self {
        Origin {
            behaviour: Behaviour::Ok("ok"),
            fail_first: 0,
            fail_status: 500,
        }
    }
    pub fn behaviour(mut self, b: Behaviour) -> Self {
        self.behaviour = b;
        self
    }
    pub fn body(self, body: &'static str) -> Self {
        self.behaviour(Behaviour::Ok(body))
    }
    pub fn status(self, s: u16) -> Self {
        self.behaviour(Behaviour::Status(s))
    }
    pub fn delay(self, d: Duration) -> Self {
        self.behaviour(Behaviour::Delay(d))
    }
    /// The first `n` requests get `fail_status` (500 unless set).
    pub fn fail_first(mut self, n: usize) -> Self {
        self.fail_first = n;
        self
    }

    pub async fn start(self) -> OriginHandle {
        self.start_on("127.0.0.1:0").await
    }

    /// Like [`Origin::start`], on `addr` (another loopback address, a given port).
    pub async fn start_on(self, addr: &str) -> OriginHandle {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            behaviour: Mutex::new(self.behaviour),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            fail_first: self.fail_first,
            fail_status: self.fail_status,
            seen: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    // Reset needs the raw socket: read a request head and close with RST.
                    if matches!(*s.behaviour.lock(), Behaviour::Reset) {
                        s.hits.fetch_add(1, Ordering::SeqCst);
                        let mut stream = stream;
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf).await;
                        let _ = stream.set_zero_linger();
                        drop(stream);
                        return;
                    }
                    let svc = service_fn(move |req| serve(s.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OriginHandle { addr, state, task }
    }
}

struct OriginState {
    behaviour: Mutex<Behaviour>,
    hits: AtomicUsize,
    connections: AtomicUsize,
    fail_first: usize,
    fail_status: u16,
    seen: Mutex<Vec<Seen>>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

async fn serve(
    s: Arc<OriginState>,
    mut req: http::Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    let behaviour = s.behaviour.lock().clone();
    let mut seen = Seen {
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req.headers().clone(),
        body_len: 0,
    };
    if n < s.fail_first {
        s.seen.lock().push(seen);
        let mut r = Response::new(full("failing on purpose\n"));
        *r.status_mut() = StatusCode::from_u16(s.fail_status).unwrap();
        return Ok(r);
    }
    let resp = match behaviour {
        Behaviour::Ok(body) => {
            let b = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes().len())
                .unwrap_or(0);
            seen.body_len = b;
            Response::new(full(body))
        }
        Behaviour::Status(code) => {
            let mut r = Response::new(full(format!("status {code}\n")));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        Behaviour::Delay(d) => {
            tokio::time::sleep(d).await;
            Response::new(full("slow ok\n"))
        }
        Behaviour::Gate(gate) => {
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            Response::new(full("slow ok\n"))
        }
        Behaviour::Reset => Response::new(full("")),
        Behaviour::Echo => {
            // Stream the body straight back: nothing is buffered on either side.
            let mut r = Response::new(req.into_body().boxed());
            r.headers_mut().insert("x-echo", "1".parse().unwrap());
            s.seen.lock().push(seen);
            return Ok(r);
        }
        Behaviour::UpgradeEcho => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("upgrade", "echo".parse().unwrap());
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            r
        }
    };
    s.seen.lock().push(seen);
    Ok(resp)
}

/// A running origin.
pub struct OriginHandle {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    task: tokio::task::JoinHandle<()>,
}

impl OriginHandle {
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    pub fn set(&self, b: Behaviour) {
        *self.state.behaviour.lock() = b;
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }
    pub fn last(&self) -> Option<Seen> {
        self.state.seen.lock().last().cloned()
    }
    /// Stops accepting; the port is then dead (connections refused).
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for OriginHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on, and that no other test can start listening on.
pub async fn dead_addr() -> SocketAddr {
    // Bound but never listening: connections are refused. The socket is leaked so the port stays
    // taken for the test process's life; a released port could be handed to another test's
    // listener running at the same time, and the "dead" endpoint would answer.
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr().unwrap();
    std::mem::forget(s);
    addr
}
