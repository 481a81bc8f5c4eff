//! Spots HTTP/1 requests that carry both `Content-Length` and `Transfer-Encoding`, so the handler
//! can refuse them (400 `bad_request`, nothing forwarded) as nginx and Envoy do.
//!
//! Why this watches the bytes: hyper resolves the conflict itself, the way RFC 9112 §6.1 allows
//! (it frames by `Transfer-Encoding`, drops `Content-Length` from the headers it hands over, and
//! closes the connection afterwards), so the handler cannot tell such a request from a plain
//! chunked one. hyper offers no hook for it, so [`Audited`] sits between the socket and hyper
//! and follows the request stream with [`HeadScanner`]: each head's framing headers, then its
//! body (by length or by chunks) to find where the next head starts. It keeps a few dozen
//! bytes of state, whatever the input, and copies nothing.
//!
//! The scanner only informs; hyper still parses and frames every request. If the two ever
//! disagree on a malformed stream, hyper has refused it already; should the scanner lose track
//! (it stops at anything it does not understand), levee falls back to hyper's own handling,
//! which is safe too: framed by `Transfer-Encoding`, then closed.

use parking_lot::Mutex;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one HTTP/1 connection's scanner found, for the handler to ask.
#[derive(Debug)]
pub struct FramingAudit {
    scanner: Mutex<HeadScanner>,
    /// Requests the handler has seen on this connection.
    requests: AtomicU64,
    /// The index of the first head with both framing headers; `u64::MAX` for none.
    conflict_at: AtomicU64,
}

impl FramingAudit {
    pub fn new() -> Arc<Self> {
        Arc::new(FramingAudit {
            scanner: Mutex::new(HeadScanner::default()),
            requests: AtomicU64::new(0),
            conflict_at: AtomicU64::new(u64::MAX),
        })
    }

    /// Feeds bytes that came off the connection, in order, each byte once.
    pub fn observe(&self, bytes: &[u8]) {
        let mut scanner = self.scanner.lock();
        if let Some(head) = scanner.feed(bytes) {
            self.conflict_at.store(head, Ordering::Relaxed);
        }
    }

    /// Called once per request, in order (HTTP/1 serves one at a time): true when this
    /// request's head carried both `Content-Length` and `Transfer-Encoding`.
    pub fn next_request_conflicts(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.conflict_at.load(Ordering::Relaxed) == index
    }
}

/// An IO that shows every byte read from it to a [`FramingAudit`], when it has one.
pub struct Audited<T> {
    inner: T,
    audit: Option<Arc<FramingAudit>>,
}

impl<T> Audited<T> {
    /// `audit` None: a plain pass-through (an HTTP/2 connection, which has no such framing).
    pub fn new(inner: T, audit: Option<Arc<FramingAudit>>) -> Self {
        Audited { inner, audit }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Audited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(audit)) = (&polled, &self.audit) {
            if let Some(new) = buf.filled().get(before..) {
                if !new.is_empty() {
                    audit.observe(new);
                }
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Audited<T> {
    crate::rewind::forward_writes!(inner);
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

/// Where the scanner is in the request stream. Line ends are LF; a CR before it is ignored,
/// as hyper's parser allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request line; empty lines are skipped (RFC 9112 §2.2).
    RequestStart,
    /// Inside the request line.
    RequestLine,
    /// At the start of a header line, or of the empty line that ends the head.
    LineStart,
    /// Reading a header name: `pos` bytes so far, `candidates` the framing names still matching
    /// (bit 0 `content-length`, bit 1 `transfer-encoding`).
    Name { pos: usize, candidates: u8 },
    /// Reading a `Content-Length` value.
    LengthValue { digits: bool },
    /// Skipping a value to its line end.
    Value,
    /// A body of this many more bytes.
    Body(u64),
    /// A chunk-size line: `size` so far; `ext` once past the digits.
    ChunkSize { size: u64, digits: bool, ext: bool },
    /// Chunk data, this many more bytes.
    ChunkData(u64),
    /// The line end after chunk data.
    ChunkDataEnd,
    /// At the start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    /// Skipping a trailer line.
    Trailer,
    /// Lost, or done: a conflicting head was found (hyper closes the connection after it).
    Off,
}

/// Follows a stream of HTTP/1 requests to report each head with both framing headers.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    state: State,
    /// Heads completed so far: the index of the one being read.
    heads: u64,
    content_length: Option<u64>,
    chunked: bool,
}

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner {
            state: State::RequestStart,
            heads: 0,
            content_length: None,
            chunked: false,
        }
    }
}

impl HeadScanner {
    /// Feeds the next bytes; returns the index of a head that has both `Content-Length` and
    /// `Transfer-Encoding` when one ends in these bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<u64> {
        let mut i = 0;
        while i < bytes.len() {
            // Body bytes are skipped in bulk; everything else is one byte at a time.
            match &mut self.state {
                State::Off => return None,
                State::Body(left) | State::ChunkData(left) => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = match self.state {
                            State::Body(_) => self.next_request(),
                            _ => State::ChunkDataEnd,
                        };
                    }
                    continue;
                }
                // The rest of a line that holds nothing the scanner needs: to its end at once.
                State::RequestLine | State::Value | State::Trailer => {
                    match memchr::memchr(b'\n', &bytes[i..]) {
                        Some(at) => i += at,
                        None => return None,
                    }
                }
                // A header name that is neither framing header: on to its colon.
                State::Name { candidates: 0, .. } => {
                    match memchr::memchr2(b':', b'\n', &bytes[i..]) {
                        Some(at) => i += at,
                        None => return None,
                    }
                }
                _ => {}
            }
            let found = self.byte(bytes[i]);
            i += 1;
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn next_request(&mut self) -> State {
        self.heads += 1;
        self.content_length = None;
        self.chunked = false;
        State::RequestStart
    }

    fn byte(&mut self, b: u8) -> Option<u64> {
        self.state = match self.state {
            State::RequestStart => match b {
                b'\r' | b'\n' => State::RequestStart,
                _ => State::RequestLine,
            },
            State::RequestLine => match b {
                b'\n' => State::LineStart,
                _ => State::RequestLine,
            },
            State::LineStart => match b {
                b'\r' => State::LineStart,
                b'\n' => return self.end_of_head(),
                _ => self.name_byte(0, 0b11, b),
            },
            State::Name { pos, candidates } => match b {
                b':' => match candidates {
                    1 if pos == CONTENT_LENGTH.len() => State::LengthValue { digits: false },
                    2 if pos == TRANSFER_ENCODING.len() => {
                        self.chunked = true;
                        State::Value
                    }
                    _ => State::Value,
                },
                // A header line without a colon: hyper refuses it.
                b'\n' => State::Off,
                _ => self.name_byte(pos, candidates, b),
            },
            State::LengthValue { digits } => match b {
                b'0'..=b'9' => {
                    let so_far = if digits {
                        self.content_length.unwrap_or(0)
                    } else {
                        0
                    };
                    match so_far
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(b - b'0')))
                    {
                        // A second Content-Length line counts too: hyper refuses a differing one.
                        Some(n) => {
                            self.content_length = Some(n);
                            State::LengthValue { digits: true }
                        }
                        None => State::Off,
                    }
                }
                b' ' | b'\t' | b'\r' => State::LengthValue { digits },
                b'\n' if digits => State::LineStart,
                _ => State::Off,
            },
            State::Value => match b {
                b'\n' => State::LineStart,
                _ => State::Value,
            },
            State::ChunkSize { size, digits, ext } => match b {
                b'\n' if digits => match size {
                    0 => State::TrailerStart,
                    n => State::ChunkData(n),
                },
                b'\r' => State::ChunkSize { size, digits, ext },
                _ if ext => State::ChunkSize { size, digits, ext },
                b';' | b' ' | b'\t' if digits => State::ChunkSize {
                    size,
                    digits,
                    ext: true,
                },
                _ => match hex(b).and_then(|d| size.checked_mul(16)?.checked_add(u64::from(d))) {
                    Some(size) => State::ChunkSize {
                        size,
                        digits: true,
                        ext: false,
                    },
                    None => State::Off,
                },
            },
            State::ChunkDataEnd => match b {
                b'\r' => State::ChunkDataEnd,
                b'\n' => State::ChunkSize {
                    size: 0,
                    digits: false,
                    ext: false,
                },
                _ => State::Off,
            },
            State::TrailerStart => match b {
                b'\r' => State::TrailerStart,
                b'\n' => self.next_request(),
                _ => State::Trailer,
            },
            State::Trailer => match b {
                b'\n' => State::TrailerStart,
                _ => State::Trailer,
            },
            State::Body(_) | State::ChunkData(_) | State::Off => State::Off,
        };
        None
    }

    /// One byte of a header name: which framing names it still matches.
    fn name_byte(&self, pos: usize, candidates: u8, b: u8) -> State {
        let b = b.to_ascii_lowercase();
        let mut still = 0;
        for (bit, name) in [(1, CONTENT_LENGTH), (2, TRANSFER_ENCODING)] {
            if candidates & bit != 0 && name.get(pos) == Some(&b) {
                still |= bit;
            }
        }
        State::Name {
            pos: pos + 1,
            candidates: still,
        }
    }

    /// The empty line after the headers: report a conflict, or go on to the body.
    fn end_of_head(&mut self) -> Option<u64> {
        if self.chunked && self.content_length.is_some() {
            self.state = State::Off;
            return Some(self.heads);
        }
        self.state = if self.chunked {
            State::ChunkSize {
                size: 0,
                digits: false,
                ext: false,
            }
        } else {
            match self.content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => self.next_request(),
            }
        };
        None
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` whole and byte by byte: both must find the same conflicting head.
    fn conflict(stream: &str) -> Option<u64> {
        let whole = HeadScanner::default().feed(stream.as_bytes());
        let mut one = HeadScanner::default();
        let mut bytewise = None;
        for b in stream.as_bytes() {
            if let Some(h) = one.feed(std::slice::from_ref(b)) {
                bytewise = Some(h);
            }
        }
        assert_eq!(whole, bytewise, "{stream:?}");
        whole
    }

    #[test]
    fn both_framing_headers_in_either_order_are_found() {
        let cl_te =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let te_cl =
            "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(conflict(cl_te), Some(0));
        assert_eq!(conflict(te_cl), Some(0));
        // Bare LF line ends, as hyper also accepts.
        assert_eq!(
            conflict("POST / HTTP/1.1\nContent-Length: 0\nTransfer-Encoding: chunked\n\n"),
            Some(0)
        );
    }

    #[test]
    fn plain_requests_are_not_conflicts() {
        assert_eq!(conflict("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(
            conflict("POST / HTTP/1.1\r\nContent-Length: 3\r\nX-Content-Length: 1\r\n\r\nabc"),
            None
        );
        assert_eq!(
            conflict("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Lengthy: 2\r\n\r\n0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn later_heads_are_found_past_bodies_of_both_kinds() {
        let stream = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 40\r\n\r\n\
            Transfer-Encoding: chunked\r\nContent-Le\r\n\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1A\r\ncontent-length: 1\r\n\r\nabcde\r\n0\r\nx-trailer: 1\r\n\r\n\
            \r\n\
            POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        // Heads: /a = 0, /b = 1 (its body looks like headers), /c = 2 (its chunks too), /d = 3.
        assert_eq!(conflict(stream), Some(3));
    }

    #[test]
    fn the_scanner_stops_at_what_it_does_not_understand() {
        // A broken chunk size: hyper refuses it; the scanner reports nothing after it.
        let stream = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\
            POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(conflict(stream), None);
        let huge = "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(conflict(huge), None);
    }

    #[test]
    fn the_handler_asks_in_request_order() {
        let audit = FramingAudit::new();
        audit.observe(b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\n");
        audit.observe(b"Transfer-Encoding: chunked\r\n\r\n");
        assert!(!audit.next_request_conflicts());
        assert!(audit.next_request_conflicts());
        assert!(!audit.next_request_conflicts());
    }
}
