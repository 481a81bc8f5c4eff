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
            bytes,
            complete = finished,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}
