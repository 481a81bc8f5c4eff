//! gRPC as levee sees it: which messages are gRPC, the client's deadline (`grpc-timeout`),
//! levee's own answers as trailers-only gRPC responses, and the final `grpc-status` of a
//! response whose status comes in its trailers.
//!
//! A gRPC call that fails is still HTTP 200: the outcome is the `grpc-status`, in the response
//! headers when the server answers at once ("trailers-only") or in the trailers after the last
//! message. So levee's own refusals must be trailers-only answers (a gRPC client reads nothing
//! else), and breakers judge a gRPC call by its `grpc-status`, which may arrive only when the
//! body ends ([`DeferredVerdict`]).

use http::{header, HeaderMap, HeaderValue};
use std::future::Future as _;
use std::time::Duration;
use tokio::time::Instant;

pub const GRPC_STATUS: &str = "grpc-status";
pub const GRPC_MESSAGE: &str = "grpc-message";
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// `grpc-status` codes levee uses itself.
pub const DEADLINE_EXCEEDED: u32 = 4;
pub const INTERNAL: u32 = 13;

/// A request levee answers as gRPC when it answers itself: its content-type starts with
/// `application/grpc` (`+proto`, `+json` and gRPC-Web included), as the contract says.
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A response whose `grpc-status` comes in HTTP trailers or headers: `application/grpc`,
/// optionally `+codec` or parameters. gRPC-Web (`application/grpc-web…`) carries its trailers
/// inside the body, so levee judges it like any HTTP response.
pub fn is_grpc_response(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| matches!(rest.first(), None | Some(b'+') | Some(b';')))
    })
}

/// The `grpc-status` in `headers` (trailers, or the head of a trailers-only response).
pub fn status_in(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(GRPC_STATUS)?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// The client's deadline from `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`). A malformed value is ignored (the upstream may still reject it).
pub fn parse_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.as_bytes();
    let (&unit, digits) = s.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline a `grpc-timeout` header sets for a request received at `started`.
pub fn deadline(headers: &HeaderMap, started: Instant) -> Option<Instant> {
    let timeout = parse_timeout(headers.get(GRPC_TIMEOUT)?)?;
    started.checked_add(timeout)
}

/// The `grpc-status` for one of levee's own answers, by its `x-levee-error` kind (the
/// contract's table). Matched on the kind rather than the error, so that a kind added later
/// gets UNAVAILABLE (retryable, "try again later") until someone decides otherwise.
pub fn status_for_kind(kind: &str) -> u32 {
    match kind {
        "rate_limited" => 8,        // RESOURCE_EXHAUSTED
        "upstream_timeout" => 4,    // DEADLINE_EXCEEDED
        "no_route" => 12,           // UNIMPLEMENTED
        "method_not_allowed" => 12, // UNIMPLEMENTED: no such gRPC method
        "bad_request" | "headers_too_large" | "body_too_large" => 3, // INVALID_ARGUMENT
        // circuit_open, no_healthy_endpoint, overloaded, upstream_connect, upstream_reset and
        // any other kind: UNAVAILABLE.
        _ => 14,
    }
}

/// The trailers levee ends a streaming response with when the client's deadline passes.
pub fn deadline_trailers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(GRPC_STATUS, HeaderValue::from(DEADLINE_EXCEEDED));
    h.insert(
        GRPC_MESSAGE,
        HeaderValue::from_static("deadline exceeded (grpc-timeout, enforced by levee)"),
    );
    h.insert(
        "x-levee-error",
        HeaderValue::from_static("upstream_timeout"),
    );
    h
}

/// A set of `grpc-status` codes (0..=31), e.g. the breaker's `failure_grpc_statuses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrpcStatusSet(u32);

impl GrpcStatusSet {
    pub fn new(codes: &[u32]) -> Self {
        GrpcStatusSet(
            codes
                .iter()
                .filter(|c| **c < 32)
                .fold(0, |set, c| set | (1 << c)),
        )
    }

    pub fn contains(self, code: u32) -> bool {
        code < 32 && self.0 & (1 << code) != 0
    }

    pub fn codes(self) -> Vec<u32> {
        (0..32).filter(|c| self.contains(*c)).collect()
    }
}

/// How a gRPC response ended, for the breaker and outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcEnd {
    /// Trailers (or levee's deadline) gave this `grpc-status`; a body that ended without one is
    /// INTERNAL, as gRPC clients read it.
    Status(u32),
    /// The upstream broke the stream (reset, stall).
    Broken,
    /// The client went away first: says nothing about the upstream.
    Abandoned,
}

type SettleHook = Box<dyn FnOnce(Option<bool>, Instant) + Send>;

/// The verdict on a gRPC answer whose `grpc-status` is still to come in its trailers. The
/// layers that judge answers (breaker, outlier detection) attach what they would have done at
/// the response head; the response body settles it once, when the trailers arrive, the body
/// breaks, or it is dropped (then the hooks hear `None`: no verdict, a breaker ticket is
/// returned unused). So a gRPC call holds its half-open trial slot until it really ends.
pub struct DeferredVerdict {
    failures: GrpcStatusSet,
    hooks: Vec<SettleHook>,
}

impl DeferredVerdict {
    pub fn new(failures: GrpcStatusSet) -> Self {
        DeferredVerdict {
            failures,
            hooks: Vec::new(),
        }
    }

    /// Runs `hook` with `Some(failed)` when the call ends, or `None` when it is abandoned.
    pub fn on_settled(&mut self, hook: impl FnOnce(Option<bool>, Instant) + Send + 'static) {
        self.hooks.push(Box::new(hook));
    }

    /// Settles the verdict: a `failure_grpc_statuses` status or a broken stream is a failure.
    pub fn settle(mut self, end: GrpcEnd) {
        let failed = match end {
            GrpcEnd::Status(code) => Some(self.failures.contains(code)),
            GrpcEnd::Broken => Some(true),
            GrpcEnd::Abandoned => None,
        };
        self.run(failed);
    }

    fn run(&mut self, failed: Option<bool>) {
        let now = Instant::now();
        // Attached outermost last; run innermost first, as the layers would have at the head.
        for hook in self.hooks.drain(..) {
            hook(failed, now);
        }
    }
}

impl Drop for DeferredVerdict {
    fn drop(&mut self) {
        self.run(None);
    }
}

impl std::fmt::Debug for DeferredVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredVerdict")
            .field("failures", &self.failures)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

/// What a gRPC response body carries besides its frames: the verdict waiting for its
/// trailers and the client's deadline (`grpc-timeout`), which ends the call at that instant
/// even mid-stream.
pub struct GrpcStream {
    verdict: Option<Box<DeferredVerdict>>,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl GrpcStream {
    /// `None` when there is nothing to watch, so plain responses carry no state.
    pub fn new(
        verdict: Option<Box<DeferredVerdict>>,
        deadline: Option<Instant>,
    ) -> Option<Box<GrpcStream>> {
        if verdict.is_none() && deadline.is_none() {
            return None;
        }
        Some(Box::new(GrpcStream {
            verdict,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }))
    }

    /// Whether the client's deadline has passed (registers for a wake-up until it has).
    pub fn deadline_passed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Whether the verdict still waits, i.e. a broken body is this verdict's to judge.
    pub fn is_pending(&self) -> bool {
        self.verdict.is_some()
    }

    pub fn settle(&mut self, end: GrpcEnd) {
        if let Some(v) = self.verdict.take() {
            v.settle(end);
        }
    }

    /// The trailers ended the call: their `grpc-status` (missing: INTERNAL) is the verdict.
    pub fn on_trailers(&mut self, trailers: &HeaderMap) {
        self.settle(GrpcEnd::Status(status_in(trailers).unwrap_or(INTERNAL)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;
    use std::sync::{Arc, Mutex};

    #[test]
    fn grpc_timeout_units() {
        let t = |s: &str| parse_timeout(&HeaderValue::from_str(s).unwrap());
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "123456789m", "10x", "1.5S", "-1S", " 1S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        let h = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            h
        };
        assert!(is_grpc_request(&h("application/grpc")));
        assert!(is_grpc_request(&h("application/grpc-web+proto")));
        assert!(!is_grpc_request(&h("application/json")));
        assert!(is_grpc_response(&h("application/grpc")));
        assert!(is_grpc_response(&h("application/grpc+proto")));
        assert!(!is_grpc_response(&h("application/grpc-web")));
        assert!(!is_grpc_response(&HeaderMap::new()));
    }

    #[test]
    fn the_contract_table() {
        let cases: [(ProxyError, u32); 7] = [
            (
                ProxyError::CircuitOpen {
                    retry_after: Duration::from_secs(3),
                },
                14,
            ),
            (ProxyError::Overloaded, 14),
            (ProxyError::UpstreamConnect("refused".into()), 14),
            (
                ProxyError::RateLimited {
                    retry_after: Duration::from_secs(1),
                    ratelimit: None,
                },
                8,
            ),
            (ProxyError::UpstreamTimeout, 4),
            (ProxyError::NoRoute, 12),
            (ProxyError::BodyTooLarge, 3),
        ];
        for (err, code) in cases {
            assert_eq!(status_for_kind(err.kind()), code, "{}", err.kind());
        }
        assert_eq!(status_for_kind("upstream_protocol"), 14);
    }

    #[test]
    fn status_sets() {
        let set = GrpcStatusSet::new(&[4, 13, 14, 99]);
        assert!(set.contains(14) && set.contains(4) && !set.contains(0) && !set.contains(99));
        assert_eq!(set.codes(), vec![4, 13, 14]);
    }

    #[test]
    fn a_deferred_verdict_settles_once_and_abandons_on_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = |seen: &Arc<Mutex<Vec<Option<bool>>>>| {
            let seen = seen.clone();
            move |failed, _| seen.lock().unwrap().push(failed)
        };
        let set = GrpcStatusSet::new(&[14]);
        let mut v = DeferredVerdict::new(set);
        v.on_settled(hook(&seen));
        v.settle(GrpcEnd::Status(14));
        let mut v = DeferredVerdict::new(set);
        v.on_settled(hook(&seen));
        v.settle(GrpcEnd::Status(0));
        let mut v = DeferredVerdict::new(set);
        v.on_settled(hook(&seen));
        v.settle(GrpcEnd::Broken);
        let mut v = DeferredVerdict::new(set);
        v.on_settled(hook(&seen));
        drop(v);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some(true), Some(false), Some(true), None]
        );
    }
}
