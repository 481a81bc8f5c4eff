//! The config file exactly as written: serde structs with `deny_unknown_fields`, spans kept where
//! validation needs to point back at the text. Nothing here is used on the request path.

use super::units::{Dur, Size};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    pub redis: Option<Spanned<RawRedis>>,
    pub dns: Option<RawDns>,
}

/// `[dns]`: where endpoint names are resolved.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub nameservers: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<Spanned<String>>,
    pub watch: Option<bool>,
    pub allow_actions: Option<bool>,
    pub drain_timeout: Option<Dur>,
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub bind: Spanned<String>,
    pub header_read_timeout: Option<Dur>,
    pub max_header_bytes: Option<Size>,
    pub max_headers: Option<usize>,
    pub max_connections: Option<usize>,
    pub http2_max_concurrent_streams: Option<Spanned<u32>>,
    pub http2_stream_buffer: Option<Spanned<Size>>,
    pub send_timeout: Option<Spanned<Dur>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub normalize_path: Option<bool>,
    pub tls: Option<Spanned<RawListenerTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<Spanned<RawCertificate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    /// A weighted split across upstreams instead of one `upstream` (`super::split`).
    pub split: Option<Spanned<Vec<Spanned<RawSplitTarget>>>>,
    pub timeout: Option<Dur>,
    pub max_body: Option<Size>,
    pub retry: Option<Spanned<RawRetry>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    pub tunnel_idle_timeout: Option<Spanned<Dur>>,
    // Matchers, rewrites and self-answers (`super::traffic`).
    pub path: Option<Spanned<String>>,
    pub path_regex: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub headers: Option<BTreeMap<String, Spanned<toml::Value>>>,
    pub query: Option<BTreeMap<String, Spanned<String>>>,
    pub strip_prefix: Option<Spanned<String>>,
    pub replace_prefix: Option<Spanned<RawReplacePrefix>>,
    pub host_rewrite: Option<Spanned<String>>,
    pub request_headers: Option<Spanned<RawHeaderRewrite>>,
    pub response_headers: Option<Spanned<RawHeaderRewrite>>,
    pub redirect: Option<Spanned<RawRedirect>>,
    pub direct_response: Option<Spanned<RawDirectResponse>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplacePrefix {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRewrite {
    pub set: Option<BTreeMap<String, Spanned<String>>>,
    pub add: Option<BTreeMap<String, Spanned<String>>>,
    pub remove: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub scheme: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub status: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectResponse {
    pub status: Spanned<u16>,
    pub body: Option<String>,
    pub content_type: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Spanned<u32>>,
    pub per_try_timeout: Option<Dur>,
    pub backoff: Option<RawBackoff>,
    pub budget: Option<RawBudget>,
    pub on: Option<Vec<Spanned<String>>>,
    pub retriable_statuses: Option<Vec<u16>>,
    pub max_retry_body: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub base: Option<Dur>,
    pub max: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub ratio: Option<Spanned<f64>>,
    pub min_per_sec: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rps: Spanned<f64>,
    pub burst: Option<Spanned<u32>>,
    pub key: Option<Spanned<String>>,
    pub scope: Option<Spanned<String>>,
    pub max_keys: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<Spanned<String>>,
    pub timeout: Option<Spanned<Dur>>,
    pub on_redis_error: Option<Spanned<String>>,
    pub pool_size: Option<Spanned<u32>>,
    pub instances: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    pub endpoints: Spanned<Vec<Spanned<RawEndpoint>>>,
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Dur>,
    pub protocol: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Dur>,
    pub pool_max_idle_per_endpoint: Option<usize>,
    pub tls: Option<Spanned<toml::Value>>,
    pub circuit_breaker: Option<Spanned<RawBreaker>>,
    pub outlier_detection: Option<Spanned<RawOutlier>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub max_response_header_bytes: Option<Spanned<Size>>,
    pub max_response_headers: Option<Spanned<usize>>,
    pub dns_refresh: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failure_rate_threshold: Option<Spanned<f64>>,
    pub slow_call_rate_threshold: Option<Spanned<f64>>,
    pub slow_call_duration: Option<Dur>,
    pub window: Option<Spanned<RawWindow>>,
    pub minimum_calls: Option<u32>,
    pub consecutive_failures: Option<u32>,
    pub open_duration: Option<Dur>,
    pub max_open_duration: Option<Dur>,
    pub half_open_calls: Option<Spanned<u32>>,
    pub max_concurrent_requests: Option<Spanned<u32>>,
    pub max_pending: Option<u32>,
    pub failure_statuses: Option<Vec<Spanned<toml::Value>>>,
    pub failure_grpc_statuses: Option<Vec<Spanned<toml::Value>>>,
    pub probe_path: Option<Spanned<String>>,
    pub ramp_duration: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub kind: Spanned<String>,
    pub size: Spanned<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub failure_rate_threshold: Option<Spanned<f64>>,
    pub min_requests: Option<u32>,
    pub interval: Option<Dur>,
    pub base_ejection_time: Option<Dur>,
    pub max_ejection_time: Option<Dur>,
    pub max_ejection_percent: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

/// One target of a route's `split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplitTarget {
    pub upstream: Spanned<String>,
    pub weight: Spanned<i64>,
}

/// An endpoint: `"host:port"`, or `{ address = "host:port", weight = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEndpoint {
    Address(String),
    Weighted(RawWeightedEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedEndpoint {
    pub address: String,
    /// Not `Spanned`: an untagged enum is buffered, which loses spans; errors point at the entry.
    pub weight: i64,
}
