//! The validated config: every default filled in, every reference checked. `Snapshot::build`
//! compiles this into runtime state; equality on these types decides what a reload carries over.

use crate::layers::breaker::state::BreakerSettings;
use crate::layers::outlier::ejection::OutlierSettings;
pub use crate::layers::rate_limit::{RateLimitConfig, RateLimitKey, RateLimitScope};
pub use crate::layers::retry::{RetryConfig, RetryOn};
pub use crate::redis::{OnRedisError, RedisConfig};
pub use crate::tls::{CertificateConfig, ListenerTls, UpstreamTls};
use std::net::SocketAddr;
use std::time::Duration;

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub admin: AdminConfig,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    /// The Redis server shared by `scope = "global"` rate limits.
    pub redis: Option<RedisConfig>,
    /// `[dns]`: the resolver for upstreams with `dns_refresh`.
    pub dns: DnsConfig,
    /// Hash of the file's bytes, shown in `/status` so operators can tell which file is live.
    pub hash: String,
    /// The file as parsed, secrets removed, paths absolute: what `GET /config` shows
    /// (`super::shown`).
    pub shown: std::sync::Arc<toml::Table>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    pub watch: bool,
    pub allow_actions: bool,
    pub drain_timeout: Duration,
    /// Host names the admin listener answers besides IP addresses and `localhost`, lowercase.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 9901)),
            watch: false,
            allow_actions: false,
            drain_timeout: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    /// Response bytes buffered per HTTP/2 stream for a client that does not read; also the
    /// stream's receive window.
    pub http2_stream_buffer: u32,
    /// A client that accepts no response bytes for this long is disconnected.
    pub send_timeout: Duration,
    pub trusted_proxies: Vec<Cidr>,
    /// Normalize request paths before routing and forward the normalized path
    /// (`crate::proxy::path`).
    pub normalize_path: bool,
    pub tls: Option<ListenerTls>,
}

/// An IP network in CIDR notation, for `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!(r#"invalid IP network "{s}": write it like "10.0.0.0/8""#))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!(r#"invalid prefix length in "{s}": 0..={max}"#))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<String>,
    pub path_prefix: String,
    /// The upstream: `None` on routes that answer themselves (`answer`); for a split route,
    /// its first target (so labels and lookups keyed on one upstream keep working).
    pub upstream: Option<String>,
    /// A weighted split (`crate::proxy::split`); empty for a route with one upstream.
    pub split: Vec<SplitTarget>,
    /// The path and the method, header and query conditions the router matches.
    pub matcher: crate::traffic::matcher::RouteMatch,
    pub rewrite: crate::traffic::rewrite::RouteRewrite,
    /// `redirect` or `direct_response`: answered by levee, no upstream.
    pub answer: Option<crate::traffic::redirect::LocalAnswer>,
    pub timeout: Duration,
    pub max_body: Option<u64>,
    pub retry: Option<RetryConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

/// One target of a split route: an upstream and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTarget {
    pub upstream: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    P2c,
    RoundRobin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    H2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    /// `host:port` strings, as written; the connector resolves names.
    pub endpoints: Vec<String>,
    /// `endpoints[i]`'s weight (1 unless written); the balancer respects it.
    pub endpoint_weights: Vec<u32>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
    pub tls: Option<UpstreamTls>,
    pub breaker: BreakerConfig,
    pub outlier: OutlierSettings,
    pub health_check: Option<HealthCheckConfig>,
    /// The largest response head accepted from an endpoint; beyond it: 502 `upstream_protocol`.
    pub max_response_header_bytes: usize,
    /// The most header fields a response may carry; beyond it: 502 `upstream_protocol`.
    pub max_response_headers: usize,
    /// Resolve each endpoint name to all its addresses and re-resolve on this period; `None`:
    /// names are left to the connector, as written.
    pub dns_refresh: Option<Duration>,
}

/// `[dns]`: the nameservers levee asks; empty = the system's (`/etc/resolv.conf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsConfig {
    pub nameservers: Vec<SocketAddr>,
}

/// The breaker's state-machine settings plus the limits and failure definition around it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub settings: BreakerSettings,
    pub max_concurrent_requests: u32,
    pub max_pending: u32,
    /// Inclusive status ranges that count as failures.
    pub failure_statuses: Vec<(u16, u16)>,
    /// `grpc-status` codes of a gRPC response (in its headers or trailers) that count as
    /// failures; default DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE.
    pub failure_grpc_statuses: crate::grpc::GrpcStatusSet,
}

impl BreakerConfig {
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE: the gRPC statuses a 5xx would be.
pub const DEFAULT_FAILURE_GRPC_STATUSES: [u32; 3] = [4, 13, 14];

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            settings: BreakerSettings::default(),
            max_concurrent_requests: 1024,
            max_pending: 1024,
            failure_statuses: vec![(500, 599)],
            failure_grpc_statuses: crate::grpc::GrpcStatusSet::new(&DEFAULT_FAILURE_GRPC_STATUSES),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}
