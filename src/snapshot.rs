//! The one swappable runtime state. Everything a request needs — compiled router, routes,
//! upstreams with their live state, listener settings — is built here from a
//! validated `Config` and published with a single `ArcSwap::store`. A request loads it once and
//! finishes on it, whatever reloads happen meanwhile.

use crate::config::carry::{self, Carry};
use crate::config::{Config, ListenerConfig, RateLimitScope};
use crate::history::History;
use crate::layers::rate_limit::RouteLimiter;
use crate::layers::retry::RetryPolicy;
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::route::Router;
use crate::redis::Redis;
use crate::upstream::Upstream;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A route ready to serve.
pub struct Route {
    pub name: Arc<str>,
    pub config: crate::config::RouteConfig,
    /// `None` on routes that answer themselves (`config.answer`); for a split route, its first
    /// target.
    pub upstream: Option<Arc<Upstream>>,
    /// Set for a route with a weighted `split`.
    pub split: Option<Arc<crate::proxy::split::Split>>,
    pub limiter: Option<Arc<RouteLimiter>>,
    pub retry: Option<Arc<RetryPolicy>>,
    /// Shared with the route's layers: cloning it is one reference count, not nine.
    pub metrics: Arc<RouteMetrics>,
    /// Requests and 429s of the last minute, per second; kept across reloads by route name.
    pub history: Arc<History>,
}

/// Settings a listener applies per connection, with its TLS acceptor.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// HTTP/1 and HTTP/2 on one port: TLS connections and HTTP/2 prior knowledge.
    pub builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    /// The same HTTP/1 settings, for plaintext HTTP/1 connections (which can be parked).
    pub http1: hyper::server::conn::http1::Builder,
}

/// The complete running configuration.
pub struct Snapshot {
    pub version: u64,
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    pub router: Router,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub listeners: HashMap<String, Arc<ListenerRuntime>>,
    /// The Redis of global rate limits; kept across reloads while `[redis]` is unchanged.
    pub redis: Option<Arc<Redis>>,
    /// What the endpoint names of upstreams with `dns_refresh` resolved to, by upstream name
    /// (`crate::dns`); a reload keeps it, so only a changed answer changes the endpoints.
    pub resolved: Arc<HashMap<String, crate::config::dns::Resolved>>,
}

impl Snapshot {
    /// Builds a snapshot, reusing the live state of `previous` where `crate::config::carry` (the
    /// rule `levee check --diff` reports) says so: an upstream whose definition is equal keeps
    /// its breaker, ejections, health and pool; a route whose limit or retry settings are equal
    /// keeps its buckets and budget.
    pub fn build(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
    ) -> Result<Snapshot, String> {
        let resolved = previous.map(|p| p.resolved.clone()).unwrap_or_default();
        Self::build_resolved(config, previous, metrics, resolved)
    }

    /// [`Snapshot::build`] with the names of upstreams with `dns_refresh` resolved as
    /// `resolved` says. An upstream whose definition is unchanged but whose addresses changed
    /// keeps its breaker, and each address that stays keeps its state (`Upstream::readdressed`).
    pub fn build_resolved(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
        resolved: Arc<HashMap<String, crate::config::dns::Resolved>>,
    ) -> Result<Snapshot, String> {
        let mut upstreams: Vec<Arc<Upstream>> = Vec::with_capacity(config.upstreams.len());
        for declared in &config.upstreams {
            let substituted = match (declared.dns_refresh, resolved.get(&declared.name)) {
                (Some(_), Some(r)) => Some(crate::config::dns::substitute(declared, r)),
                _ => None,
            };
            let u = substituted.as_ref().unwrap_or(declared);
            let old =
                previous.and_then(|p| p.upstreams.iter().find(|old| old.config.name == u.name));
            let kept = old
                .filter(|old| carry::upstream(Some(&old.config), u).is_kept())
                .cloned();
            let same_definition = previous
                .and_then(|p| p.config.upstreams.iter().find(|o| o.name == u.name))
                .is_some_and(|o| o == declared);
            upstreams.push(match kept {
                Some(old) => old,
                None if same_definition && old.is_some() => match old {
                    Some(old) => Arc::new(Upstream::readdressed(old, u, metrics)?),
                    None => Arc::new(Upstream::new(u, metrics)?),
                },
                None => {
                    let mut fresh = Upstream::new(u, metrics)?;
                    if let Some(old) = old {
                        fresh.history = old.history.clone();
                        let now = tokio::time::Instant::now();
                        fresh
                            .slow_start
                            .mark_added(&u.endpoints, &old.config.endpoints, now);
                    }
                    Arc::new(fresh)
                }
            });
        }
        let redis = config.redis.as_ref().map(|c| {
            previous
                .and_then(|p| p.redis.clone())
                .filter(|old| carry::redis(Some(&old.config), c).is_kept())
                .unwrap_or_else(|| Arc::new(Redis::new(c, metrics)))
        });
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let upstream = match &r.upstream {
                None => None,
                Some(name) => Some(
                    upstreams
                        .iter()
                        .find(|u| *u.name == **name)
                        .cloned()
                        .ok_or_else(|| {
                            format!("route \"{}\" names unknown upstream \"{name}\"", r.name)
                        })?,
                ),
            };
            let old = previous.and_then(|p| p.routes.iter().find(|o| o.config.name == r.name));
            let limiter = match &r.rate_limit {
                None => None,
                Some(l) => {
                    let shared = match l.scope {
                        RateLimitScope::Local => None,
                        RateLimitScope::Global => Some(redis.clone().ok_or_else(|| {
                            format!(
                                "route \"{}\" has scope = \"global\" but there is no [redis]",
                                r.name
                            )
                        })?),
                    };
                    let redis_configs = (
                        previous.and_then(|p| p.config.redis.as_ref()),
                        config.redis.as_ref(),
                    );
                    let kept = old
                        .filter(|o| {
                            carry::limiter(Some(&o.config), r, redis_configs) == Some(Carry::Kept)
                        })
                        .and_then(|o| o.limiter.clone());
                    Some(kept.unwrap_or_else(|| {
                        Arc::new(match shared {
                            None => RouteLimiter::new(l),
                            Some(redis) => RouteLimiter::new_global(&r.name, l, redis),
                        })
                    }))
                }
            };
            let retry = r.retry.as_ref().filter(|c| c.attempts > 1).map(|c| {
                old.filter(|o| carry::retry_budget(Some(&o.config), r) == Some(Carry::Kept))
                    .and_then(|o| o.retry.clone())
                    .unwrap_or_else(|| Arc::new(RetryPolicy::new(c)))
            });
            // The route's stack is built per worker (`crate::worker::WorkerSnapshot`).
            let route_metrics = Arc::new(RouteMetrics::new(
                metrics,
                &r.name,
                r.upstream.as_deref().unwrap_or_default(),
            ));
            let split = if r.split.is_empty() {
                None
            } else {
                let previous = old.and_then(|o| o.split.as_deref());
                Some(Arc::new(crate::proxy::split::Split::new(
                    &r.name, &r.split, &upstreams, previous, metrics,
                )?))
            };
            routes.push(Route {
                name: r.name.as_str().into(),
                config: r.clone(),
                upstream,
                split,
                limiter,
                retry,
                metrics: route_metrics,
                history: old.map(|o| o.history.clone()).unwrap_or_default(),
            });
        }
        let router = Router::with_matchers(
            config
                .routes
                .iter()
                .map(|r| (r.host.as_deref(), &r.matcher)),
        );
        let mut listeners = HashMap::new();
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                    crate::tls::server_config(t)
                        .map_err(|e| format!("listener \"{}\": {e}", l.name))?,
                )),
                None => None,
            };
            listeners.insert(
                l.name.clone(),
                Arc::new(ListenerRuntime {
                    config: l.clone(),
                    tls,
                    builder: http_builder(l),
                    http1: http1_builder(l),
                }),
            );
        }
        Ok(Snapshot {
            version: previous.map(|p| p.version + 1).unwrap_or(1),
            loaded_at: SystemTime::now(),
            config: Arc::new(config),
            router,
            routes,
            upstreams,
            listeners,
            redis,
            resolved,
        })
    }

    /// Starts what a snapshot runs in the background (health checks); idempotent per upstream.
    pub fn activate(&self) {
        for u in &self.upstreams {
            u.start_health_checks();
        }
        // Connect only when some route shares its limit: a spare [redis] table stays offline.
        if let Some(r) = &self.redis {
            if self
                .routes
                .iter()
                .any(|route| route.limiter.as_ref().is_some_and(|l| l.redis().is_some()))
            {
                r.warm_up();
            }
        }
    }
}

/// A listener's HTTP/1 settings, applied alike to hyper's HTTP/1 builder and to the auto
/// builder's HTTP/1 half (two types with the same setters).
macro_rules! http1_settings {
    ($builder:expr, $cfg:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($cfg.header_read_timeout)
            .max_headers($cfg.max_headers)
            // hyper refuses header sections beyond its buffer with its own 431; levee's own
            // check (with `x-levee-error`) runs below this ceiling.
            .max_buf_size(($cfg.max_header_bytes * 2).max(16 * 1024))
    };
}

/// The HTTP server settings of a listener (HTTP/1 and HTTP/2), built once per snapshot.
pub fn http_builder(cfg: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    http1_settings!(b.http1(), cfg);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        // A client that does not read holds at most this much per stream (hyper's default is
        // 400 KB; with the window it made ~0.5 MB per stream), and may send no more ahead.
        .max_send_buf_size(cfg.http2_stream_buffer as usize)
        .initial_stream_window_size(cfg.http2_stream_buffer)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes * 2).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

/// The HTTP/1 settings of a listener for plaintext HTTP/1 connections, built once per snapshot.
pub fn http1_builder(cfg: &ListenerConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    http1_settings!(b, cfg);
    b
}
