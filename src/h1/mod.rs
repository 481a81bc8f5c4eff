//! levee's own HTTP/1.1 client for plain-TCP upstreams, used for requests whose body is empty
//! or already buffered (nearly every GET) and that do not ask for an upgrade.
//!
//! Why not hyper-util's pooled client for these: with it every request crosses to a separate
//! connection task over a channel, and the pool hashes the endpoint's scheme and authority byte
//! by byte with SipHash twice per request. Measured with callgrind, that plumbing was about a
//! fifth of levee's instructions per small request. Here the request's own task writes the head
//! and reads the response on a connection it takes from a per-endpoint list, and the body hands
//! the connection back when its last byte is read. Streamed uploads, upgrades, TLS and HTTP/2
//! upstreams stay on hyper, which handles what this client does not need to: bodies sent while
//! the response arrives, `Expect: 100-continue` waits, protocol switches.
//!
//! A leaf: it imports nothing of levee's outside this directory (`tests/it/architecture.rs`
//! checks). It takes its [`Settings`] and a request already encoded, fails with its own
//! [`H1Error`], and reports a stale pooled connection for `upstream/client.rs` to decide on.

mod body;
// Visible to the crate for `crate::fuzzing`, which drives both on arbitrary bytes.
pub(crate) mod chunked;
mod pool;
mod request;
pub(crate) mod response;

pub use body::DirectBody;
use body::Streaming;
use pool::{Conn, ConnPool};
pub use request::encode;
use response::Framing;

use http::uri::Authority;
use http::{Method, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("response with more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("invalid content-length in response")]
    BadContentLength,
    #[error("invalid chunked response body: {0}")]
    Chunked(&'static str),
    #[error("upstream closed the connection before the response ended")]
    UnexpectedEof,
    #[error("upstream switched protocols unasked")]
    UnexpectedUpgrade,
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("no such endpoint")]
    NoSuchEndpoint,
}

/// What the client needs to know of its upstream.
#[derive(Clone, Copy)]
pub struct Settings {
    pub endpoints: usize,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub limits: response::Limits,
}

/// Initial read buffer of a connection: a typical response head and small body in one read.
const HEAD_READ_SIZE: usize = 8 * 1024;

/// One worker's client: a connection is registered with the I/O driver of the worker that
/// opened it and is only used there, and no pool lock is shared between cores. The caller keeps
/// one per worker.
pub struct DirectClient {
    /// One per endpoint, in the upstream's endpoint order.
    pools: Box<[Arc<ConnPool>]>,
    settings: Settings,
}

impl DirectClient {
    pub fn new(settings: &Settings) -> DirectClient {
        DirectClient {
            pools: (0..settings.endpoints)
                .map(|_| {
                    Arc::new(ConnPool::new(
                        settings.max_idle_per_endpoint,
                        settings.idle_timeout,
                    ))
                })
                .collect(),
            settings: *settings,
        }
    }

    /// Idle connections pooled for `endpoint`.
    pub fn idle_connections(&self, endpoint: usize) -> usize {
        self.pools.get(endpoint).map_or(0, |p| p.idle_count())
    }

    /// Sends `wire` (from [`encode`]) to `endpoint`, on a pooled connection if `pooled` and
    /// one is idle, else on a fresh one.
    pub async fn send(
        &self,
        wire: &[u8],
        method: &Method,
        endpoint: usize,
        authority: &Authority,
        pooled: bool,
    ) -> Result<Response<DirectBody>, Failed> {
        let fail = |error| Failed {
            stale: false,
            error,
        };
        let pool = self
            .pools
            .get(endpoint)
            .ok_or(fail(H1Error::NoSuchEndpoint))?;
        let conn = match pooled
            .then(|| pool.checkout(tokio::time::Instant::now()))
            .flatten()
        {
            Some(conn) => conn,
            None => self.connect(authority).await.map_err(fail)?,
        };
        let (conn, head) = exchange(conn, wire, method, self.settings.limits).await?;
        let body = into_body(conn, head.framing, head.keep_alive, pool);
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    async fn connect(&self, authority: &Authority) -> Result<Conn, H1Error> {
        let connecting = TcpStream::connect(authority.as_str());
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(H1Error::Connect(e)),
            Err(_) => return Err(H1Error::ConnectTimeout(self.settings.connect_timeout)),
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(Conn::new(stream))
    }
}

/// Whether `e` says the peer closed (FIN or RST) the connection.
pub fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// A failed exchange; `stale` when a reused connection failed before any response byte: the
/// request never reached the application, and may go again on a fresh connection.
pub struct Failed {
    pub stale: bool,
    pub error: H1Error,
}

/// Writes `wire` on `conn` and reads the final response head.
async fn exchange(
    mut conn: Conn,
    wire: &[u8],
    method: &Method,
    limits: response::Limits,
) -> Result<(Conn, response::Head), Failed> {
    let stale_if =
        |conn: &Conn, received: bool, e: &std::io::Error| conn.reused && !received && is_closed(e);
    if let Err(e) = conn.stream.write_all(wire).await {
        return Err(Failed {
            stale: stale_if(&conn, false, &e),
            error: H1Error::Io(e),
        });
    }
    let mut received = false;
    loop {
        match response::parse(&mut conn.buf, method, limits) {
            Ok(Some(head)) => return Ok((conn, head)),
            Ok(None) => {}
            Err(error) => {
                return Err(Failed {
                    stale: false,
                    error,
                })
            }
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(HEAD_READ_SIZE);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => {
                return Err(Failed {
                    stale: conn.reused && !received,
                    error: H1Error::UnexpectedEof,
                })
            }
            Ok(_) => received = true,
            Err(e) => {
                return Err(Failed {
                    stale: stale_if(&conn, received, &e),
                    error: H1Error::Io(e),
                })
            }
        }
    }
}

/// The body after a head. When all of it is already buffered (a small response usually arrives
/// in the same read as its head) the connection goes straight back to the pool.
fn into_body(
    mut conn: Conn,
    framing: Framing,
    keep_alive: bool,
    pool: &Arc<ConnPool>,
) -> DirectBody {
    if let Framing::Length(n) = framing {
        if conn.buf.len() as u64 >= n {
            // `n` fits: it is at most the buffer's length.
            let data = conn.buf.split_to(n as usize).freeze();
            if keep_alive && conn.buf.is_empty() {
                pool.checkin(conn);
            }
            return DirectBody::ready(data);
        }
    }
    DirectBody::streaming(Streaming {
        conn,
        framing,
        keep_alive,
        pool: pool.clone(),
    })
}
