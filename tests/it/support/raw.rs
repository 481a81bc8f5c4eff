//! Raw TCP for tests that must send bytes no HTTP client would: smuggling attempts, broken
//! framing, stalled request lines, upgrades. Every read is bounded so a hung peer fails the test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any single raw read may wait before the test fails.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

/// A response as it came off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
    /// The `x-levee-error` kind, or "".
    pub fn error_kind(&self) -> &str {
        self.header("x-levee-error").unwrap_or("")
    }
}

/// How a read on a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Orderly close (read returned 0).
    Eof,
    /// Connection reset or another I/O error: also closed.
    Error,
}

pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Like `send`, but a write error (the peer already closed) is returned instead of panicking.
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await?;
        self.stream.flush().await
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk))
            .await
            .expect("raw read timed out")?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (head and body, framed by content-length or chunked, else to EOF).
    /// None when the connection closed before a complete head arrived.
    pub async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill().await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let no_body = status / 100 == 1 || status == 204 || status == 304;
        if no_body {
            return Some(resp);
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                match self.fill().await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let take = len.min(self.buf.len());
            resp.body = self.buf.drain(..take).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            resp.body = self.read_chunked().await;
        } else {
            while let Ok(n) = self.fill().await {
                if n == 0 {
                    break;
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Some(resp)
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if matches!(self.fill().await, Ok(0) | Err(_)) {
                    return body;
                }
            };
            let size_str = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_str:?}"));
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                if matches!(self.fill().await, Ok(0) | Err(_)) {
                    return body;
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Reads exactly `n` bytes (after anything already buffered).
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let got = self.fill().await.unwrap();
            assert!(got > 0, "connection closed before {n} bytes arrived");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until the peer closes; returns the bytes that came before and how it closed.
    /// Panics if the connection stays open longer than `READ_LIMIT` without closing.
    pub async fn read_to_close(&mut self) -> (Vec<u8>, Closed) {
        loop {
            match self.fill().await {
                Ok(0) => return (std::mem::take(&mut self.buf), Closed::Eof),
                Ok(_) => {}
                Err(_) => return (std::mem::take(&mut self.buf), Closed::Error),
            }
        }
    }
}

/// Sends `bytes` on a new connection and reads one response (None if closed without one).
pub async fn exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Option<RawResponse> {
    let mut c = RawConn::connect(addr).await;
    c.send(bytes).await;
    c.read_response().await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A minimal origin speaking raw HTTP/1.1: for each request head it receives, it writes
/// `response` verbatim. For responses no in-process hyper origin would produce.
pub struct RawOrigin {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawOrigin {
    pub async fn start(response: &'static [u8]) -> RawOrigin {
        Self::start_with(response, false).await
    }

    /// Like `start`; with `close_after`, the connection is closed after each response (for
    /// bodies delimited by the end of the connection).
    pub async fn start_with(response: &'static [u8], close_after: bool) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            if stream.write_all(response).await.is_err() {
                                return;
                            }
                            if close_after {
                                let _ = stream.shutdown().await;
                                return;
                            }
                            continue;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        RawOrigin {
            addr,
            connections,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
