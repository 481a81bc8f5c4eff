//! What the request side tells a parkable HTTP/1 connection about itself: how many requests,
//! responses and request bodies are still in flight on it, when it last went idle, whether it
//! may be resumed after a park at all, and where an upgraded socket must go. Plus the pure
//! decision the connection loop takes from that (`plan`), kept apart so it is tested alone.

use bytes::Bytes;
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long an HTTP/1 connection has nothing in flight before it is parked. Long enough that a
/// client sending request after request (a browser loading a page, a pooled client under load)
/// keeps its hyper connection and pays nothing; short enough that most of the time a keep-alive
/// connection spends idle (seconds to minutes) it is parked. Resuming costs a fresh hyper
/// connection, about what a new TCP connection costs levee minus the handshake.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// Awake HTTP/1 connections (each a hyper connection with its 8 KiB read and 8 KiB write
/// buffers) a worker keeps before it parks idle ones sooner: about 1 MiB for 64.
pub const AWAKE_COMFORTABLE: usize = 64;

/// How long an idle connection keeps its hyper connection while its worker holds more than
/// `AWAKE_COMFORTABLE` awake: nginx frees an idle connection's buffers at once, and a burst of
/// new connections that each make one request (10 000 in a few seconds) would otherwise hold
/// 16 KiB each for `PARK_AFTER`. Long enough that a client sending its next request right
/// after the response (a pooled client under load) keeps its connection awake.
pub const PARK_AFTER_UNDER_PRESSURE: Duration = Duration::from_millis(20);

/// The park period when `awake` connections of this worker hold a hyper connection.
pub fn park_after(awake: usize) -> Duration {
    if awake > AWAKE_COMFORTABLE {
        PARK_AFTER_UNDER_PRESSURE
    } else {
        PARK_AFTER
    }
}

thread_local! {
    /// This thread's HTTP/1 connections that hold a hyper connection (are not parked). A worker
    /// is one thread with a single-threaded runtime, so this is its worker's count, written by
    /// no other core.
    static AWAKE: Cell<usize> = const { Cell::new(0) };
}

/// One awake connection, counted on its thread while it lives. Zero-sized, so it costs the
/// parked connection's task nothing.
pub struct Awake(());

impl Awake {
    pub fn enter() -> Awake {
        AWAKE.with(|a| a.set(a.get() + 1));
        Awake(())
    }

    /// Awake connections on this thread.
    pub fn count() -> usize {
        AWAKE.with(Cell::get)
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        // Saturating: a connection's task never leaves its worker's thread, but a miscount
        // must not wrap.
        AWAKE.with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// The socket of a connection whose request was answered with 101, and the bytes the client
/// sent after its request that hyper had already read.
#[derive(Debug)]
pub struct Upgraded {
    pub stream: TcpStream,
    pub leftover: Bytes,
}

/// Per-connection state shared by the connection loop and the requests it serves.
#[derive(Debug)]
pub struct ConnActivity {
    /// `idle_since_ms` counts from here.
    base: Instant,
    /// Live `Busy` tokens: requests being answered and request bodies not yet read to the end.
    busy: AtomicU32,
    /// Requests started on this connection (wrapping); the loop compares it across a hyper
    /// connection's life to know whether that one has parsed a request yet.
    started: AtomicU32,
    /// When the last token was released, in ms after `base`.
    idle_since_ms: AtomicU64,
    /// Set when resuming after a park would be wrong: a request asked to close, spoke
    /// HTTP/1.0, or left its body unread (hyper may stop reading it half-way).
    no_park: AtomicBool,
    /// Filled by the handler when it proxies a 101: the loop hands the socket over.
    upgrade: Mutex<Option<oneshot::Sender<Upgraded>>>,
}

/// Keeps its connection from being parked while it lives.
#[derive(Debug)]
pub struct Busy(Arc<ConnActivity>);

impl Busy {
    /// See `ConnActivity::forbid_parking`.
    pub fn forbid_parking(&self) {
        self.0.forbid_parking();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl ConnActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnActivity {
            base: Instant::now(),
            busy: AtomicU32::new(0),
            started: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            no_park: AtomicBool::new(false),
            upgrade: Mutex::new(None),
        })
    }

    /// A request arrived. `wants_close` is true when it asked for the connection to end after
    /// it (HTTP/1.0, `Connection: close`): hyper then closes the connection itself, and a
    /// parked one must never be resumed under a client that reads its response to EOF.
    /// The returned token belongs to the response; drop it when the response is sent.
    pub fn begin(self: &Arc<Self>, wants_close: bool) -> Busy {
        if wants_close {
            self.forbid_parking();
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        self.hold()
    }

    /// A token for something else the connection waits on (a request body).
    pub fn hold(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn release(&self) {
        // The time first, then the count: a loop that sees zero also sees when it became zero.
        let now = self.ms_since_base(Instant::now());
        self.idle_since_ms.fetch_max(now, Ordering::Relaxed);
        self.busy.fetch_sub(1, Ordering::Release);
    }

    /// From now on this connection is never parked (hyper serves it as before until it ends).
    pub fn forbid_parking(&self) {
        self.no_park.store(true, Ordering::Relaxed);
    }

    pub fn parking_forbidden(&self) -> bool {
        self.no_park.load(Ordering::Relaxed)
    }

    /// Requests started so far (wrapping).
    pub fn started(&self) -> u32 {
        self.started.load(Ordering::Relaxed)
    }

    /// When the connection last had nothing in flight (its accept, before any request).
    pub fn idle_since(&self) -> Instant {
        self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }

    /// What the loop sees at a check; `first` is `started()` when the current hyper
    /// connection began.
    pub fn seen(&self, first: u32) -> Seen {
        let busy = self.busy.load(Ordering::Acquire);
        Seen {
            busy,
            requests_here: self.started() != first,
            no_park: self.parking_forbidden(),
            idle_since: self.idle_since(),
        }
    }

    /// The handler proxied a 101: the socket goes to `tx` once hyper has written it.
    pub fn expect_upgrade(&self, tx: oneshot::Sender<Upgraded>) {
        *self.upgrade.lock() = Some(tx);
    }

    pub fn take_upgrade(&self) -> Option<oneshot::Sender<Upgraded>> {
        self.upgrade.lock().take()
    }

    fn ms_since_base(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

/// A snapshot of a connection's activity, taken by the loop at a check.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub busy: u32,
    /// Whether the current hyper connection has parsed a request yet.
    pub requests_here: bool,
    pub no_park: bool,
    pub idle_since: Instant,
}

/// What the connection loop does at a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Ask hyper to end the connection (it is idle: it does so at once) and park the socket.
    Park,
    /// The idle timeout passed while a request head was still incomplete: close.
    Close,
    /// Check again then.
    At(Instant),
    /// Never park this connection; stop checking.
    Never,
}

/// The parking decision. Parking is asked of hyper only when it is certainly between requests:
/// nothing in flight for `park_after` (`PARK_AFTER`, shorter under pressure), and at least one request parsed by the current hyper
/// connection (so hyper's keep-alive state is idle). A hyper connection that has not parsed a
/// request may hold half a head, and asking it to stop then would make it answer the rest with
/// `connection: close`; that case is only bounded by `idle_timeout`, as hyper itself does.
pub fn plan(seen: Seen, now: Instant, idle_timeout: Duration, park_after: Duration) -> Step {
    if seen.no_park {
        return Step::Never;
    }
    if seen.busy > 0 {
        return Step::At(now + park_after);
    }
    if !seen.requests_here {
        let deadline = crate::deadline::after(seen.idle_since, idle_timeout);
        if now >= deadline {
            return Step::Close;
        }
        return Step::At(deadline.min(now + park_after));
    }
    let park_at = seen.idle_since + park_after;
    if now >= park_at {
        Step::Park
    } else {
        Step::At(park_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn seen(t0: Instant) -> Seen {
        Seen {
            busy: 0,
            requests_here: true,
            no_park: false,
            idle_since: t0,
        }
    }

    #[test]
    fn an_idle_connection_parks_after_the_park_period() {
        let t0 = Instant::now();
        assert_eq!(
            plan(seen(t0), t0, TIMEOUT, PARK_AFTER),
            Step::At(t0 + PARK_AFTER)
        );
        assert_eq!(
            plan(seen(t0), t0 + PARK_AFTER, TIMEOUT, PARK_AFTER),
            Step::Park
        );
    }

    #[test]
    fn under_pressure_an_idle_connection_parks_sooner() {
        let t0 = Instant::now();
        let soon = park_after(AWAKE_COMFORTABLE + 1);
        assert_eq!(soon, PARK_AFTER_UNDER_PRESSURE);
        assert_eq!(park_after(AWAKE_COMFORTABLE), PARK_AFTER);
        assert_eq!(plan(seen(t0), t0, TIMEOUT, soon), Step::At(t0 + soon));
        assert_eq!(plan(seen(t0), t0 + soon, TIMEOUT, soon), Step::Park);
    }

    #[test]
    fn awake_connections_are_counted_on_their_thread_while_their_guards_live() {
        let before = Awake::count();
        let a = Awake::enter();
        let b = Awake::enter();
        assert_eq!(Awake::count(), before + 2);
        std::thread::spawn(|| assert_eq!(Awake::count(), 0))
            .join()
            .unwrap();
        drop(a);
        assert_eq!(Awake::count(), before + 1);
        drop(b);
        assert_eq!(Awake::count(), before);
    }

    #[test]
    fn a_busy_connection_is_checked_again_later() {
        let t0 = Instant::now();
        let s = Seen {
            busy: 1,
            ..seen(t0)
        };
        let now = t0 + Duration::from_secs(30);
        assert_eq!(
            plan(s, now, TIMEOUT, PARK_AFTER),
            Step::At(now + PARK_AFTER)
        );
    }

    #[test]
    fn a_connection_that_asked_to_close_is_never_parked() {
        let t0 = Instant::now();
        let s = Seen {
            no_park: true,
            ..seen(t0)
        };
        assert_eq!(plan(s, t0 + TIMEOUT, TIMEOUT, PARK_AFTER), Step::Never);
    }

    #[test]
    fn without_a_parsed_request_it_waits_for_the_idle_timeout_then_closes() {
        let t0 = Instant::now();
        let s = Seen {
            requests_here: false,
            ..seen(t0)
        };
        let now = t0 + Duration::from_secs(5);
        assert_eq!(
            plan(s, now, TIMEOUT, PARK_AFTER),
            Step::At(now + PARK_AFTER)
        );
        let now = t0 + TIMEOUT - Duration::from_millis(300);
        assert_eq!(plan(s, now, TIMEOUT, PARK_AFTER), Step::At(t0 + TIMEOUT));
        assert_eq!(plan(s, t0 + TIMEOUT, TIMEOUT, PARK_AFTER), Step::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_count_in_flight_work_and_stamp_the_idle_time() {
        let a = ConnActivity::new();
        let first = a.started();
        let response = a.begin(false);
        let body = a.hold();
        let s = a.seen(first);
        assert_eq!(s.busy, 2);
        assert!(s.requests_here);
        tokio::time::advance(Duration::from_millis(1500)).await;
        drop(response);
        assert_eq!(a.seen(first).busy, 1);
        tokio::time::advance(Duration::from_millis(500)).await;
        let released = Instant::now();
        drop(body);
        let s = a.seen(first);
        assert_eq!(s.busy, 0);
        assert_eq!(s.idle_since, released);
        assert!(!a.seen(a.started()).requests_here);
    }

    #[test]
    fn a_request_that_wants_close_forbids_parking() {
        let a = ConnActivity::new();
        drop(a.begin(false));
        assert!(!a.parking_forbidden());
        drop(a.begin(true));
        assert!(a.parking_forbidden());
    }
}
