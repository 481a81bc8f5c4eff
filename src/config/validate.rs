//! From what was written to what will run: fills defaults, checks ranges and references, and
//! reports every problem at its place in the file.

use super::diagnostics::Diagnostics;
use super::model::*;
use super::raw::*;
use crate::grpc::GrpcStatusSet;
use crate::layers::breaker::state::BreakerSettings;
use crate::layers::breaker::window::WindowSettings;
use crate::layers::outlier::ejection::OutlierSettings;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Validates `raw`; `base_dir` resolves relative certificate paths.
pub fn validate(raw: RawConfig, base_dir: &Path, d: &mut Diagnostics) -> Option<Config> {
    let admin = admin(raw.admin, d);
    let listeners: Vec<ListenerConfig> = raw
        .listener
        .into_iter()
        .enumerate()
        .filter_map(|(i, l)| listener(i, l, base_dir, d))
        .collect();
    let upstreams: Vec<UpstreamConfig> = raw
        .upstream
        .into_iter()
        .filter_map(|u| upstream(u, base_dir, d))
        .collect();
    let redis = raw.redis.map(|r| redis(r.into_inner(), d));
    let dns = raw.dns.map(|r| super::dns::dns(r, d)).unwrap_or_default();
    let has_redis = redis.is_some();
    let route_spans: Vec<std::ops::Range<usize>> =
        raw.route.iter().map(super::traffic::route_span).collect();
    let routes: Vec<RouteConfig> = raw
        .route
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| route(i, r, &upstreams, has_redis, d))
        .collect();
    if listeners.is_empty() && d.is_empty() {
        d.at(
            0..0,
            "no [[listener]]: add one, e.g. [[listener]] bind = \"0.0.0.0:8080\"",
        );
    }
    if routes.is_empty() && d.is_empty() {
        d.at(
            0..0,
            "no [[route]]: add one, e.g. [[route]] path_prefix = \"/\" upstream = \"app\"",
        );
    }
    if !d.is_empty() {
        return None;
    }
    super::traffic::warn_shadowed(&routes, &route_spans, d);
    Some(Config {
        admin,
        listeners,
        routes,
        upstreams,
        redis,
        dns,
        hash: String::new(),
        shown: Default::default(),
    })
}

fn admin(raw: Option<RawAdmin>, d: &mut Diagnostics) -> AdminConfig {
    let mut admin = AdminConfig::default();
    let Some(raw) = raw else { return admin };
    if let Some(bind) = raw.bind {
        if let Some(addr) = socket_addr(&bind, d) {
            admin.bind = addr;
        }
    }
    admin.watch = raw.watch.unwrap_or(false);
    admin.allow_actions = raw.allow_actions.unwrap_or(false);
    if let Some(t) = raw.drain_timeout {
        admin.drain_timeout = t.0;
    }
    for h in raw.allowed_hosts.unwrap_or_default() {
        let name = h
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            admin.allowed_hosts.push(name);
        } else {
            d.at(
                h.span(),
                format!(
                    r#"invalid host name "{}" in allowed_hosts: write a DNS name without port, like "admin.internal""#,
                    h.get_ref()
                ),
            );
        }
    }
    admin
}

fn socket_addr(s: &Spanned<String>, d: &mut Diagnostics) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.at(
                s.span(),
                format!(
                    r#"invalid address "{}": write IP:PORT, like "0.0.0.0:8080" or "[::]:8080""#,
                    s.get_ref()
                ),
            );
            None
        }
    }
}

pub(super) fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

fn readable_file(base_dir: &Path, s: &Spanned<String>, what: &str, d: &mut Diagnostics) -> PathBuf {
    let path = resolve(base_dir, s.get_ref());
    if let Err(e) = std::fs::metadata(&path) {
        d.at(
            s.span(),
            format!("cannot read {what} file {}: {e}", path.display()),
        );
    }
    path
}

fn listener(
    i: usize,
    raw: RawListener,
    base_dir: &Path,
    d: &mut Diagnostics,
) -> Option<ListenerConfig> {
    let name = raw
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| format!("listener{i}"));
    let bind = socket_addr(&raw.bind, d);
    let mut trusted = Vec::new();
    for t in raw.trusted_proxies.unwrap_or_default() {
        match Cidr::parse(t.get_ref()) {
            Ok(c) => trusted.push(c),
            Err(e) => d.at(t.span(), e),
        }
    }
    let tls = raw.tls.map(|tls| {
        let span = tls.span();
        let tls = tls.into_inner();
        if tls.certificates.is_empty() {
            d.at(
                span,
                "tls needs at least one entry in certificates = [{ cert = ..., key = ... }]",
            );
        }
        let certificates: Vec<CertificateConfig> = tls
            .certificates
            .into_iter()
            .map(|c| {
                let entry = c.span();
                let c = c.into_inner();
                let errors = d.problem_count();
                let cert = CertificateConfig {
                    cert: readable_file(base_dir, &c.cert, "certificate", d),
                    key: readable_file(base_dir, &c.key, "key", d),
                    server_names: c.server_names.unwrap_or_default(),
                };
                // Both files are there: load them exactly as the listener will (PEM, key type,
                // key matches cert), and report a problem at this certificate entry.
                if d.problem_count() == errors {
                    let one = ListenerTls {
                        certificates: vec![cert.clone()],
                    };
                    match crate::tls::server_config(&one) {
                        Ok(_) => {
                            if let Some(w) = crate::tls::expiry_warning(&cert.cert) {
                                tracing::warn!("{}: {w}", d.position(entry.clone()));
                            }
                        }
                        Err(e) => d.at(entry, e),
                    }
                }
                cert
            })
            .collect();
        ListenerTls { certificates }
    });
    let max_header_bytes = raw.max_header_bytes.map(|s| s.0).unwrap_or(64 * 1024);
    Some(ListenerConfig {
        name,
        bind: bind?,
        header_read_timeout: raw
            .header_read_timeout
            .map(|t| t.0)
            .unwrap_or(Duration::from_secs(10)),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_headers: raw.max_headers.unwrap_or(100),
        max_connections: raw.max_connections.unwrap_or(10_000),
        http2_max_concurrent_streams: listener_streams(raw.http2_max_concurrent_streams, d),
        http2_stream_buffer: listener_stream_buffer(raw.http2_stream_buffer, d),
        send_timeout: match raw.send_timeout {
            None => Duration::from_secs(60),
            Some(t) if t.get_ref().0.is_zero() => {
                d.at(t.span(), r#"send_timeout must be more than 0, like "60s""#);
                Duration::from_secs(60)
            }
            Some(t) => t.into_inner().0,
        },
        trusted_proxies: trusted,
        normalize_path: raw.normalize_path.unwrap_or(true),
        tls,
    })
}

/// `http2_max_concurrent_streams`: 1..=10000, default 100 (nginx's and Envoy's are 128 and 100).
fn listener_streams(raw: Option<Spanned<u32>>, d: &mut Diagnostics) -> u32 {
    match raw {
        None => 100,
        Some(n) if (1..=10_000).contains(n.get_ref()) => n.into_inner(),
        Some(n) => {
            d.at(
                n.span(),
                "http2_max_concurrent_streams must be 1..=10000 (default 100)",
            );
            100
        }
    }
}

/// `http2_stream_buffer`: 16KiB..=16MiB (one HTTP/2 frame up to a window's worth), default 64KiB.
fn listener_stream_buffer(raw: Option<Spanned<super::units::Size>>, d: &mut Diagnostics) -> u32 {
    const DEFAULT: u32 = 64 * 1024;
    match raw {
        None => DEFAULT,
        Some(s) if (16 * 1024..=16 * 1024 * 1024).contains(&s.get_ref().0) => {
            u32::try_from(s.get_ref().0).unwrap_or(DEFAULT)
        }
        Some(s) => {
            d.at(
                s.span(),
                r#"http2_stream_buffer must be between "16KiB" and "16MiB" (default "64KiB")"#,
            );
            DEFAULT
        }
    }
}

fn ratio(v: &Option<Spanned<f64>>, default: f64, key: &str, d: &mut Diagnostics) -> f64 {
    match v {
        None => default,
        Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
        Some(s) => {
            d.at(
                s.span(),
                format!(
                    "{key} = {} is out of range: write a fraction between 0.0 and 1.0 (0.5 = 50%)",
                    s.get_ref()
                ),
            );
            default
        }
    }
}

fn route(
    i: usize,
    raw: RawRoute,
    upstreams: &[UpstreamConfig],
    has_redis: bool,
    d: &mut Diagnostics,
) -> Option<RouteConfig> {
    let name = raw
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| format!("route{i}"));
    // Exactly one of upstream, split, redirect and direct_response (`super::traffic`).
    super::traffic::check_target(&raw, &name, d);
    let split = match &raw.split {
        Some(s) => super::split::split(&name, s, upstreams, d),
        None => Vec::new(),
    };
    if let Some(u) = &raw.upstream {
        super::split::check_upstream_name(&name, u, upstreams, d);
    }
    let target = raw
        .upstream
        .as_ref()
        .map(|u| u.get_ref().clone())
        .or_else(|| split.first().map(|t| t.upstream.clone()));
    let host = raw.host.as_ref().and_then(|h| {
        let v = h.get_ref().trim().to_ascii_lowercase();
        let bare = v.strip_prefix("*.").unwrap_or(&v);
        if bare.is_empty() || bare.contains('*') || bare.contains('/') || bare.contains(' ') {
            d.at(
                h.span(),
                format!(
                    r#"invalid host "{}": write "api.example.com" or "*.example.com""#,
                    h.get_ref()
                ),
            );
            None
        } else {
            Some(v)
        }
    });
    let path_prefix = match &raw.path_prefix {
        None => "/".to_string(),
        Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
        Some(p) => {
            d.at(
                p.span(),
                format!(r#"path_prefix "{}" must start with "/""#, p.get_ref()),
            );
            "/".to_string()
        }
    };
    let tunnel_idle_timeout = match &raw.tunnel_idle_timeout {
        None => Duration::from_secs(3600),
        Some(t) if t.get_ref().0.is_zero() => {
            d.at(
                t.span(),
                r#"tunnel_idle_timeout must be longer than zero: write a duration like "1h" or "5m""#,
            );
            Duration::from_secs(3600)
        }
        Some(t) => t.get_ref().0,
    };
    let traffic = super::traffic::traffic(&raw, &path_prefix, d);
    let retry = raw.retry.map(|r| retry(r.into_inner(), d));
    let rate_limit = raw
        .rate_limit
        .and_then(|r| rate_limit(r.into_inner(), has_redis, d));
    Some(RouteConfig {
        name,
        host,
        path_prefix,
        upstream: target,
        split,
        matcher: traffic.matcher,
        rewrite: traffic.rewrite,
        answer: traffic.answer,
        timeout: raw.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(30)),
        max_body: raw.max_body.map(|s| s.0),
        retry,
        rate_limit,
        tunnel_idle_timeout,
    })
}

fn retry(raw: RawRetry, d: &mut Diagnostics) -> RetryConfig {
    let attempts = match &raw.attempts {
        None => 2,
        Some(a) if *a.get_ref() >= 1 && *a.get_ref() <= 10 => *a.get_ref(),
        Some(a) => {
            d.at(
                a.span(),
                format!(
                    "attempts = {} is out of range: total tries including the first, 1..=10",
                    a.get_ref()
                ),
            );
            2
        }
    };
    let mut on = RetryOn::default();
    match &raw.on {
        None => {
            on.connect_failure = true;
            on.reset = true;
        }
        Some(list) => {
            for c in list {
                match c.get_ref().as_str() {
                    "connect-failure" => on.connect_failure = true,
                    "reset" => on.reset = true,
                    "gateway-error" => on.gateway_error = true,
                    "retriable-status" => on.retriable_status = true,
                    other => d.at(
                        c.span(),
                        format!(r#"unknown retry condition "{other}": use "connect-failure", "reset", "gateway-error" or "retriable-status""#),
                    ),
                }
            }
        }
    }
    let (base, max) = raw
        .backoff
        .map(|b| (b.base.map(|x| x.0), b.max.map(|x| x.0)))
        .unwrap_or((None, None));
    let backoff_base = base.unwrap_or(Duration::from_millis(25));
    let (budget_ratio, budget_min) = match &raw.budget {
        None => (0.2, 10),
        Some(b) => (
            ratio(&b.ratio, 0.2, "budget.ratio", d),
            b.min_per_sec.unwrap_or(10),
        ),
    };
    RetryConfig {
        attempts,
        per_try_timeout: raw.per_try_timeout.map(|t| t.0),
        backoff_base,
        backoff_max: max.unwrap_or(Duration::from_millis(250)).max(backoff_base),
        budget_ratio,
        budget_min_per_sec: budget_min,
        on,
        retriable_statuses: raw.retriable_statuses.unwrap_or_else(|| vec![503]),
        max_retry_body: raw.max_retry_body.map(|s| s.0).unwrap_or(64 * 1024),
    }
}

fn redis(raw: RawRedis, d: &mut Diagnostics) -> RedisConfig {
    let mut c = RedisConfig::default();
    if let Some(url) = &raw.url {
        let u = url.get_ref();
        // Parsed as the Redis client parses it, so what passes here is what it connects to (a
        // password holding `/`, `?`, `#` or `@` must be percent-encoded).
        match url::Url::parse(u) {
            Ok(parsed)
                if matches!(parsed.scheme(), "redis" | "rediss")
                    && parsed.host_str().is_some_and(|h| !h.is_empty()) =>
            {
                c.url = u.clone();
            }
            _ => d.at(
                url.span(),
                format!(
                    r#"invalid Redis url "{}": write "redis://HOST:PORT", "redis://:PASSWORD@HOST:PORT/DB" (percent-encode `/`, `?`, `#`, `@` in the password) or "rediss://..." for TLS"#,
                    crate::redis::redact(u)
                ),
            ),
        }
    }
    if let Some(t) = &raw.timeout {
        if t.get_ref().0.is_zero() {
            d.at(t.span(), "timeout must be more than 0");
        } else {
            c.timeout = t.get_ref().0;
        }
    }
    if let Some(p) = &raw.pool_size {
        if (1..=64).contains(p.get_ref()) {
            c.pool_size = *p.get_ref();
        } else {
            d.at(p.span(), "pool_size must be 1..=64 connections");
        }
    }
    if let Some(n) = &raw.instances {
        if *n.get_ref() >= 1 {
            c.instances = Some(*n.get_ref());
        } else {
            d.at(n.span(), "instances must be at least 1 (or left out)");
        }
    }
    if let Some(mode) = &raw.on_redis_error {
        c.on_redis_error = match mode.get_ref().as_str() {
            "local" => OnRedisError::Local,
            "allow" => OnRedisError::Allow,
            "deny" => OnRedisError::Deny,
            other => {
                d.at(
                    mode.span(),
                    format!(r#"on_redis_error "{other}" is not one of "local", "allow", "deny""#),
                );
                OnRedisError::Local
            }
        };
    }
    c
}

fn rate_limit(raw: RawRateLimit, has_redis: bool, d: &mut Diagnostics) -> Option<RateLimitConfig> {
    let rps = *raw.rps.get_ref();
    if !(rps.is_finite() && rps > 0.0) {
        d.at(
            raw.rps.span(),
            format!("rps = {rps} must be a positive number of requests per second"),
        );
        return None;
    }
    let burst = match &raw.burst {
        None => rps.ceil().max(1.0) as u32,
        Some(b) if *b.get_ref() >= 1 => *b.get_ref(),
        Some(b) => {
            d.at(b.span(), "burst must be at least 1");
            1
        }
    };
    let key = match &raw.key {
        None => RateLimitKey::Global,
        Some(k) => match k.get_ref().as_str() {
            "global" => RateLimitKey::Global,
            "client_ip" => RateLimitKey::ClientIp,
            other => match other
                .strip_prefix("header:")
                .map(|h| http::HeaderName::from_bytes(h.trim().as_bytes()))
            {
                Some(Ok(h)) => RateLimitKey::Header(h),
                _ => {
                    d.at(k.span(), format!(r#"unknown rate limit key "{other}": use "global", "client_ip" or "header:NAME""#));
                    RateLimitKey::Global
                }
            },
        },
    };
    let scope = match &raw.scope {
        None => RateLimitScope::Local,
        Some(s) => match s.get_ref().as_str() {
            "local" => RateLimitScope::Local,
            "global" => {
                if !has_redis {
                    d.at(
                        s.span(),
                        r#"scope = "global" needs a [redis] table: add [redis] url = "redis://127.0.0.1:6379", or use scope = "local""#,
                    );
                }
                RateLimitScope::Global
            }
            other => {
                d.at(
                    s.span(),
                    format!(r#"unknown scope "{other}": use "local" or "global""#),
                );
                RateLimitScope::Local
            }
        },
    };
    Some(RateLimitConfig {
        rps,
        burst,
        key,
        scope,
        max_keys: raw.max_keys.unwrap_or(100_000),
    })
}

fn upstream(raw: RawUpstream, base_dir: &Path, d: &mut Diagnostics) -> Option<UpstreamConfig> {
    let name = raw.name.get_ref().clone();
    if name.is_empty() {
        d.at(raw.name.span(), "upstream name must not be empty");
    }
    if raw.endpoints.get_ref().is_empty() {
        d.at(
            raw.endpoints.span(),
            format!("upstream \"{name}\" has no endpoints: add endpoints = [\"127.0.0.1:9001\"]"),
        );
    }
    let mut endpoints = Vec::new();
    let mut endpoint_weights = Vec::new();
    for e in raw.endpoints.get_ref() {
        let (v, weight) = super::split::endpoint(e, d);
        let v = &v;
        match v.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) && !v.contains('/') => {
                endpoints.push(v.clone());
                endpoint_weights.push(weight);
            }
            _ => d.at(e.span(), format!(r#"invalid endpoint "{v}": write HOST:PORT, like "127.0.0.1:9001" or "app.internal:8080""#)),
        }
    }
    let balance = match &raw.balance {
        None => Balance::P2c,
        Some(b) => match b.get_ref().as_str() {
            "p2c" => Balance::P2c,
            "round_robin" => Balance::RoundRobin,
            other => {
                d.at(
                    b.span(),
                    format!(r#"unknown balance "{other}": use "p2c" or "round_robin""#),
                );
                Balance::P2c
            }
        },
    };
    let protocol = match &raw.protocol {
        None => UpstreamProtocol::Http1,
        Some(p) => match p.get_ref().as_str() {
            "http1" | "http/1.1" => UpstreamProtocol::Http1,
            "h2" | "http2" => UpstreamProtocol::H2,
            other => {
                d.at(
                    p.span(),
                    format!(r#"unknown protocol "{other}": use "http1" or "h2""#),
                );
                UpstreamProtocol::Http1
            }
        },
    };
    let tls = raw.tls.and_then(|t| upstream_tls(t, base_dir, d));
    let breaker = raw
        .circuit_breaker
        .map(|b| breaker(b.into_inner(), d))
        .unwrap_or_default();
    let outlier = raw
        .outlier_detection
        .map(|o| outlier(o.into_inner(), d))
        .unwrap_or_default();
    let health_check = raw.health_check.map(|h| {
        let h = h.into_inner();
        let path = match &h.path {
            None => "/healthz".to_string(),
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
            Some(p) => {
                d.at(p.span(), "health_check.path must start with \"/\"");
                "/".into()
            }
        };
        HealthCheckConfig {
            path,
            interval: h.interval.map(|x| x.0).unwrap_or(Duration::from_secs(5)),
            timeout: h.timeout.map(|x| x.0).unwrap_or(Duration::from_secs(1)),
            healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
        }
    });
    let max_response_header_bytes = match &raw.max_response_header_bytes {
        None => 64 * 1024,
        Some(s) if (1024..=16 * 1024 * 1024).contains(&s.get_ref().0) => s.get_ref().0 as usize,
        Some(s) => {
            d.at(
                s.span(),
                format!(
                    r#"max_response_header_bytes = {} is out of range: 1KiB..=16MiB, like "64KiB""#,
                    s.get_ref().0
                ),
            );
            64 * 1024
        }
    };
    let max_response_headers = match &raw.max_response_headers {
        None => 200,
        Some(n) if (1..=10_000).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            d.at(
                n.span(),
                format!(
                    "max_response_headers = {} is out of range: header fields per response, 1..=10000",
                    n.get_ref()
                ),
            );
            200
        }
    };
    let dns_refresh = raw
        .dns_refresh
        .as_ref()
        .and_then(|r| super::dns::refresh(r, d));
    Some(UpstreamConfig {
        name,
        dns_refresh,
        endpoints,
        endpoint_weights,
        balance,
        connect_timeout: raw
            .connect_timeout
            .map(|t| t.0)
            .unwrap_or(Duration::from_secs(2)),
        protocol,
        pool_idle_timeout: raw
            .pool_idle_timeout
            .map(|t| t.0)
            .unwrap_or(Duration::from_secs(90)),
        pool_max_idle_per_endpoint: raw.pool_max_idle_per_endpoint.unwrap_or(1024),
        tls,
        breaker,
        outlier,
        health_check,
        max_response_header_bytes,
        max_response_headers,
    })
}

fn upstream_tls(
    raw: Spanned<toml::Value>,
    base_dir: &Path,
    d: &mut Diagnostics,
) -> Option<UpstreamTls> {
    let span = raw.span();
    match raw.into_inner() {
        toml::Value::Boolean(false) => None,
        toml::Value::Boolean(true) => Some(UpstreamTls {
            ca: None,
            server_name: None,
            insecure_skip_verify: false,
        }),
        toml::Value::Table(t) => {
            let mut tls = UpstreamTls {
                ca: None,
                server_name: None,
                insecure_skip_verify: false,
            };
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("ca", toml::Value::String(s)) => {
                        let p = resolve(base_dir, &s);
                        if let Err(e) = std::fs::metadata(&p) {
                            d.at(span.clone(), format!("cannot read tls.ca file {}: {e}", p.display()));
                        } else if let Err(e) = crate::tls::check_ca(&p) {
                            d.at(span.clone(), format!("tls.ca: {e}"));
                        }
                        tls.ca = Some(p);
                    }
                    ("server_name", toml::Value::String(s)) => tls.server_name = Some(s),
                    ("insecure_skip_verify", toml::Value::Boolean(b)) => tls.insecure_skip_verify = b,
                    (k, _) => d.at(
                        span.clone(),
                        format!("unknown or mistyped tls key `{k}`: known keys are `ca` (path), `server_name` (string), `insecure_skip_verify` (bool)"),
                    ),
                }
            }
            Some(tls)
        }
        _ => {
            d.at(
                span,
                "tls must be true, false or a table { ca, server_name, insecure_skip_verify }",
            );
            None
        }
    }
}

fn breaker(raw: RawBreaker, d: &mut Diagnostics) -> BreakerConfig {
    let defaults = BreakerSettings::default();
    let window = match &raw.window {
        None => defaults.window.clone(),
        Some(w) => {
            let w = w.get_ref();
            match (w.kind.get_ref().as_str(), w.size.get_ref()) {
                ("count", toml::Value::Integer(n)) if *n >= 1 && *n <= 100_000 => {
                    WindowSettings::Count { size: *n as usize }
                }
                ("count", _) => {
                    d.at(
                        w.size.span(),
                        "a count window's size is a number of calls, 1..=100000, like size = 100",
                    );
                    defaults.window.clone()
                }
                ("time", toml::Value::String(s)) => match super::units::parse_duration(s) {
                    Ok(t) if t >= Duration::from_secs(1) => WindowSettings::Time { size: t },
                    Ok(_) => {
                        d.at(w.size.span(), "a time window must span at least 1s");
                        defaults.window.clone()
                    }
                    Err(e) => {
                        d.at(w.size.span(), e);
                        defaults.window.clone()
                    }
                },
                ("time", _) => {
                    d.at(
                        w.size.span(),
                        r#"a time window's size is a duration, like size = "10s""#,
                    );
                    defaults.window.clone()
                }
                (other, _) => {
                    d.at(
                        w.kind.span(),
                        format!(r#"unknown window kind "{other}": use "count" or "time""#),
                    );
                    defaults.window.clone()
                }
            }
        }
    };
    let open_duration = raw
        .open_duration
        .map(|x| x.0)
        .unwrap_or(defaults.open_duration);
    let half_open_calls = match &raw.half_open_calls {
        None => defaults.half_open_calls,
        Some(h) if *h.get_ref() >= 1 => *h.get_ref(),
        Some(h) => {
            d.at(h.span(), "half_open_calls must be at least 1");
            1
        }
    };
    let max_concurrent_requests = match &raw.max_concurrent_requests {
        None => 1024,
        Some(m) if *m.get_ref() >= 1 => *m.get_ref(),
        Some(m) => {
            d.at(m.span(), "max_concurrent_requests must be at least 1");
            1
        }
    };
    let mut failure_statuses = Vec::new();
    match raw.failure_statuses {
        None => failure_statuses.push((500, 599)),
        Some(list) => {
            for s in list {
                match status_range(s.get_ref()) {
                    Some(r) => failure_statuses.push(r),
                    None => d.at(
                        s.span(),
                        r#"failure_statuses entries are status codes (502) or classes ("5xx")"#,
                    ),
                }
            }
        }
    }
    let failure_grpc_statuses = match raw.failure_grpc_statuses {
        None => GrpcStatusSet::new(&super::model::DEFAULT_FAILURE_GRPC_STATUSES),
        Some(list) => {
            let mut codes = Vec::new();
            for s in list {
                match grpc_status_code(s.get_ref()) {
                    Some(c) => codes.push(c),
                    None => d.at(
                        s.span(),
                        r#"failure_grpc_statuses entries are gRPC status codes 0..=16 (14) or their names ("UNAVAILABLE")"#,
                    ),
                }
            }
            GrpcStatusSet::new(&codes)
        }
    };
    BreakerConfig {
        settings: BreakerSettings {
            failure_rate_threshold: ratio(
                &raw.failure_rate_threshold,
                defaults.failure_rate_threshold,
                "failure_rate_threshold",
                d,
            ),
            slow_call_rate_threshold: ratio(
                &raw.slow_call_rate_threshold,
                defaults.slow_call_rate_threshold,
                "slow_call_rate_threshold",
                d,
            ),
            slow_call_duration: raw
                .slow_call_duration
                .map(|x| x.0)
                .unwrap_or(defaults.slow_call_duration),
            window,
            minimum_calls: raw.minimum_calls.unwrap_or(defaults.minimum_calls).max(1),
            consecutive_failures: raw
                .consecutive_failures
                .unwrap_or(defaults.consecutive_failures),
            open_duration,
            max_open_duration: raw
                .max_open_duration
                .map(|x| x.0)
                .unwrap_or(open_duration)
                .max(open_duration),
            half_open_calls,
            probe_path: super::recovery::probe_path(&raw.probe_path, d),
            ramp_duration: raw.ramp_duration.map(|x| x.0).filter(|r| !r.is_zero()),
            reopen_jitter: defaults.reopen_jitter,
        },
        max_concurrent_requests,
        max_pending: raw.max_pending.unwrap_or(1024),
        failure_statuses,
        failure_grpc_statuses,
    }
}

/// The gRPC status codes by number or by their canonical names.
const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn grpc_status_code(v: &toml::Value) -> Option<u32> {
    match v {
        toml::Value::Integer(n) if (0..=16).contains(n) => Some(*n as u32),
        toml::Value::String(s) => GRPC_STATUS_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(s))
            .map(|i| i as u32),
        _ => None,
    }
}

fn status_range(v: &toml::Value) -> Option<(u16, u16)> {
    match v {
        toml::Value::Integer(n) if (100..=599).contains(n) => Some((*n as u16, *n as u16)),
        toml::Value::String(s) => {
            let s = s.to_ascii_lowercase();
            let class = s
                .strip_suffix("xx")?
                .parse::<u16>()
                .ok()
                .filter(|c| (1..=5).contains(c))?;
            Some((class * 100, class * 100 + 99))
        }
        _ => None,
    }
}

fn outlier(raw: RawOutlier, d: &mut Diagnostics) -> OutlierSettings {
    let defaults = OutlierSettings::default();
    let max_ejection_percent = match &raw.max_ejection_percent {
        None => defaults.max_ejection_percent,
        Some(p) if *p.get_ref() <= 100 => *p.get_ref(),
        Some(p) => {
            d.at(p.span(), "max_ejection_percent is a percentage, 0..=100");
            defaults.max_ejection_percent
        }
    };
    let base = raw
        .base_ejection_time
        .map(|x| x.0)
        .unwrap_or(defaults.base_ejection_time);
    OutlierSettings {
        consecutive_failures: raw
            .consecutive_failures
            .unwrap_or(defaults.consecutive_failures),
        failure_rate_threshold: ratio(
            &raw.failure_rate_threshold,
            defaults.failure_rate_threshold,
            "failure_rate_threshold",
            d,
        ),
        min_requests: raw.min_requests.unwrap_or(defaults.min_requests),
        interval: raw.interval.map(|x| x.0).unwrap_or(defaults.interval),
        base_ejection_time: base,
        max_ejection_time: raw
            .max_ejection_time
            .map(|x| x.0)
            .unwrap_or(defaults.max_ejection_time)
            .max(base),
        max_ejection_percent,
    }
}

/// Checks that names are unique and that no two routes match the same requests.
pub fn check_uniqueness(raw: &RawConfig, d: &mut Diagnostics) {
    let mut seen: HashMap<String, ()> = HashMap::new();
    for l in &raw.listener {
        if let Some(n) = &l.name {
            if seen.insert(n.get_ref().clone(), ()).is_some() {
                d.at(
                    n.span(),
                    format!(
                        "listener name \"{}\" is used twice: names must be unique",
                        n.get_ref()
                    ),
                );
            }
        }
    }
    let mut binds: HashMap<String, ()> = HashMap::new();
    for l in &raw.listener {
        if binds.insert(l.bind.get_ref().clone(), ()).is_some() && !l.bind.get_ref().ends_with(":0")
        {
            d.at(
                l.bind.span(),
                format!("two listeners bind {}", l.bind.get_ref()),
            );
        }
    }
    seen.clear();
    for u in &raw.upstream {
        if seen.insert(u.name.get_ref().clone(), ()).is_some() {
            d.at(
                u.name.span(),
                format!(
                    "upstream name \"{}\" is used twice: names must be unique",
                    u.name.get_ref()
                ),
            );
        }
    }
    seen.clear();
    let mut matches: HashMap<(String, String), ()> = HashMap::new();
    for r in &raw.route {
        if let Some(n) = &r.name {
            if seen.insert(n.get_ref().clone(), ()).is_some() {
                d.at(
                    n.span(),
                    format!(
                        "route name \"{}\" is used twice: names must be unique",
                        n.get_ref()
                    ),
                );
            }
        }
        let host = r
            .host
            .as_ref()
            .map(|h| h.get_ref().to_ascii_lowercase())
            .unwrap_or_default();
        // Routes that differ by other matchers are distinct; `levee check` warns about shadows.
        if r.path.is_some()
            || r.path_regex.is_some()
            || r.methods.is_some()
            || r.headers.is_some()
            || r.query.is_some()
        {
            continue;
        }
        let prefix = r
            .path_prefix
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| "/".into());
        if matches.insert((host.clone(), prefix.clone()), ()).is_some() {
            let span = r
                .path_prefix
                .as_ref()
                .map(|p| p.span())
                .unwrap_or_else(|| super::traffic::route_span(r));
            d.at(span, format!("another route already matches host \"{host}\" and path_prefix \"{prefix}\": this one would never be used"));
        }
    }
}
