//! One access log line per request, written when the response body is done (so `bytes` and
//! `duration` are final), through `tracing` under the target `levee::access`. Turn it off with
//! `RUST_LOG=info,levee::access=off`; when off, nothing is formatted or allocated for it.

use crate::body::OnComplete;
use tokio::time::Instant;

pub const TARGET: &str = "levee::access";

pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

pub struct AccessLog {
    /// The client as levee believes it: the peer, or the `x-forwarded-for` client a trusted
    /// proxy named (the address rate limits key on).
    pub client: std::net::IpAddr,
    pub method: http::Method,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub route: String,
    pub upstream: String,
    pub endpoint: String,
    pub error: &'static str,
    /// The request's `x-request-id` (`super::request_id`).
    pub request_id: String,
    pub started: Instant,
}

impl OnComplete for AccessLog {
    fn complete(&mut self, bytes: u64, finished: bool) {
        tracing::info!(
            target: TARGET,
            client = %self.client,
            method = %self.method,
            host = %self.host,
            path = %self.path,
            status = self.status,
            route = %self.route,
            upstream = %self.upstream,
            endpoint = %self.endpoint,
            error = self.error,
            request_id = %self.request_id,
            bytes,
            complete = finished,
            duration_ms = %Millis(self.started.elapsed()),
        );
    }
}

/// A duration in milliseconds with three fixed decimals (`0.084`), never a float's full
/// expansion (`0.08404800000000001`).
struct Millis(std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_have_three_fixed_decimals() {
        use std::time::Duration;
        assert_eq!(
            super::Millis(Duration::from_nanos(84_048)).to_string(),
            "0.084"
        );
        assert_eq!(super::Millis(Duration::from_millis(2)).to_string(), "2.000");
        assert_eq!(
            super::Millis(Duration::from_micros(12_345_678)).to_string(),
            "12345.678"
        );
    }
}
