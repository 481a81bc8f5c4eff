//! Idle keep-alive connections to one endpoint, most recently used first.

use bytes::BytesMut;
use parking_lot::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// An HTTP/1.1 connection to an endpoint and the bytes read from it but not yet consumed.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// It has carried a complete exchange before: a failure ahead of any byte of the next
    /// response means the upstream closed it while it sat idle.
    pub reused: bool,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            reused: false,
        }
    }

    /// Still open and silent. The probe costs no system call unless the socket has been
    /// reported readable since the last read, which for an idle connection means the upstream
    /// closed it (or sent bytes nobody asked for): either way it is not reused.
    fn is_reusable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Each worker has its own pool per endpoint (`DirectClient`), so the lock is only ever taken
/// by one thread; aligned to its own cache lines so that two workers' pools never share one.
#[repr(align(128))]
pub struct ConnPool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl ConnPool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> ConnPool {
        ConnPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently returned connection that is still usable, if any.
    pub fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) >= self.idle_timeout {
                // The rest are older still.
                let expired = std::mem::take(&mut *idle);
                drop(idle);
                drop(expired);
                return None;
            }
            if entry.conn.is_reusable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request; the oldest idle connection makes room when full.
    pub fn checkin(&self, mut conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        conn.reused = true;
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let expired = idle
            .iter()
            .take_while(|e| now.saturating_duration_since(e.since) >= self.idle_timeout)
            .count();
        let overflow = (idle.len() + 1).saturating_sub(self.max_idle);
        let stale: Vec<Idle> = idle.drain(..expired.max(overflow)).collect();
        idle.push(Idle { conn, since: now });
        drop(idle);
        drop(stale);
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }
}
