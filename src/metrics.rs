//! Prometheus metrics. Handles for each route and upstream are resolved once when a snapshot is
//! built, so the request path bumps atomics instead of hashing label sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use crate::metrics_sharded::{ShardedCounter, ShardedGauge, ShardedHistogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub upstream: String,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub upstream: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub upstream: String,
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverrideLabels {
    pub target: String,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

fn latency_histogram() -> ShardedHistogram {
    // 0.5ms .. ~33s: proxies see both cache hits and stuck backends.
    ShardedHistogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 17,
    ))
}

/// Every metric levee exports. Those written per request are sharded per worker
/// (`crate::metrics_sharded`) and summed when scraped.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, ShardedCounter>,
    pub request_duration: Family<RouteLabel, ShardedHistogram, fn() -> ShardedHistogram>,
    pub upstream_duration: Family<UpstreamLabel, ShardedHistogram, fn() -> ShardedHistogram>,
    pub in_flight: ShardedGauge,
    pub circuit_state: Family<UpstreamLabel, Gauge>,
    pub circuit_transitions: Family<TransitionLabels, Counter>,
    pub retries: Family<RouteLabel, Counter>,
    pub retry_budget_exhausted: Family<RouteLabel, Counter>,
    pub stale_resends: Family<RouteLabel, Counter>,
    pub rate_limited: Family<RouteLabel, Counter>,
    pub ejections: Family<EndpointLabels, Counter>,
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
    pub proxy_errors: Family<KindLabel, Counter>,
    pub reloads: Family<ResultLabel, Counter>,
    pub config_version: Gauge,
    pub connections: ShardedGauge,
    /// Idle HTTP/1 connections parked now (`crate::server::park`); also counted in `connections`.
    pub parked: Gauge,
    /// Times an idle HTTP/1 connection's hyper connection was ended to park it.
    pub parks: Counter,
    pub redis_errors: Counter,
    pub redis_fallback: Family<ModeLabel, Counter>,
    pub redis_up: Gauge,
    /// 1 while an operator's override is active, 0 once it has ended (`crate::overrides`).
    pub override_active: Family<OverrideLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("levee");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            in_flight: ShardedGauge::default(),
            circuit_state: Family::default(),
            circuit_transitions: Family::default(),
            retries: Family::default(),
            retry_budget_exhausted: Family::default(),
            stale_resends: Family::default(),
            rate_limited: Family::default(),
            ejections: Family::default(),
            endpoint_healthy: Family::default(),
            proxy_errors: Family::default(),
            reloads: Family::default(),
            config_version: Gauge::default(),
            connections: ShardedGauge::default(),
            parked: Gauge::default(),
            parks: Counter::default(),
            redis_errors: Counter::default(),
            redis_fallback: Family::default(),
            redis_up: Gauge::default(),
            override_active: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by route, upstream and status class",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request to response headers, by route",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register_with_unit(
            "upstream_request_duration",
            "Time an upstream took to answer, by upstream",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests being proxied now",
            m.in_flight.clone(),
        );
        r.register(
            "circuit_state",
            "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
            m.circuit_state.clone(),
        );
        r.register(
            "circuit_transitions",
            "Circuit breaker state changes, by upstream, from and to",
            m.circuit_transitions.clone(),
        );
        r.register("retries", "Retries sent, by route", m.retries.clone());
        r.register(
            "retry_budget_exhausted",
            "Retries not sent because the retry budget was spent, by route",
            m.retry_budget_exhausted.clone(),
        );
        r.register(
            "stale_resends",
            "Requests sent again because the pooled connection was closed, by route",
            m.stale_resends.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused with 429, by route",
            m.rate_limited.clone(),
        );
        r.register(
            "endpoint_ejections",
            "Endpoints ejected by outlier detection",
            m.ejections.clone(),
        );
        r.register(
            "endpoint_healthy",
            "Endpoint health: 1 receiving traffic, 0 ejected or failing health checks",
            m.endpoint_healthy.clone(),
        );
        r.register(
            "proxy_errors",
            "Answers levee made itself, by x-levee-error kind",
            m.proxy_errors.clone(),
        );
        r.register(
            "config_reloads",
            "Config reload attempts, by result (success, failure)",
            m.reloads.clone(),
        );
        r.register(
            "config_version",
            "Version of the running config, +1 per successful reload",
            m.config_version.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now",
            m.connections.clone(),
        );
        r.register(
            "parked_connections",
            "Idle HTTP/1 client connections parked now (hyper's buffers freed); also open",
            m.parked.clone(),
        );
        r.register(
            "connection_parks",
            "Times an idle HTTP/1 client connection was parked",
            m.parks.clone(),
        );
        r.register(
            "redis_errors",
            "Redis calls of global rate limits that failed or timed out",
            m.redis_errors.clone(),
        );
        r.register(
            "redis_fallback",
            "Global rate limit decisions made without Redis, by on_redis_error mode applied",
            m.redis_fallback.clone(),
        );
        r.register(
            "redis_up",
            "1 while Redis answers global rate limit calls, 0 while failing or unknown",
            m.redis_up.clone(),
        );
        r.register(
            "override_active",
            "Operator overrides by target and action: 1 while active, 0 after it expired or was cleared",
            m.override_active.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "levee build; always 1", build);
        let m = Metrics { registry, ..m };
        m.create_known_series();
        m
    }

    /// Creates a zero-valued series for each label value known without a config, so every
    /// family is in the first scrape and `rate()`/`increase()` alerts work before the first
    /// incident (Prometheus's instrumentation guide: "avoid missing metrics"). The series of each
    /// route and upstream are created when a snapshot is built ([`RouteMetrics::new`],
    /// [`UpstreamMetrics::new`]).
    fn create_known_series(&self) {
        for result in ["success", "failure"] {
            drop(self.reloads.get_or_create(&ResultLabel { result }));
        }
        for kind in crate::error::ProxyError::KINDS {
            drop(self.proxy_errors.get_or_create(&KindLabel { kind }));
        }
        for mode in ["allow", "deny", "local"] {
            drop(self.redis_fallback.get_or_create(&ModeLabel { mode }));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn proxy_error(&self, kind: &'static str) {
        self.proxy_errors.get_or_create(&KindLabel { kind }).inc();
    }
}

/// Status class label for a status code.
pub fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A route's metric handles, resolved once per snapshot.
#[derive(Clone)]
pub struct RouteMetrics {
    pub requests: [ShardedCounter; 5],
    pub duration: ShardedHistogram,
    pub retries: Counter,
    pub budget_exhausted: Counter,
    pub stale_resends: Counter,
    pub rate_limited: Counter,
}

impl RouteMetrics {
    pub fn new(m: &Metrics, route: &str, upstream: &str) -> Self {
        let label = RouteLabel {
            route: route.to_string(),
        };
        RouteMetrics {
            requests: CLASSES.map(|class| {
                m.requests
                    .get_or_create(&RequestLabels {
                        route: route.to_string(),
                        upstream: upstream.to_string(),
                        class,
                    })
                    .clone()
            }),
            duration: m.request_duration.get_or_create(&label).clone(),
            retries: m.retries.get_or_create(&label).clone(),
            budget_exhausted: m.retry_budget_exhausted.get_or_create(&label).clone(),
            stale_resends: m.stale_resends.get_or_create(&label).clone(),
            rate_limited: m.rate_limited.get_or_create(&label).clone(),
        }
    }
}

/// An upstream's metric handles.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub name: String,
    pub duration: ShardedHistogram,
    pub circuit_state: Gauge,
    pub ejections: Vec<Counter>,
    pub healthy: Vec<Gauge>,
}

impl UpstreamMetrics {
    pub fn new(m: &Metrics, upstream: &str, endpoints: &[String]) -> Self {
        let label = UpstreamLabel {
            upstream: upstream.to_string(),
        };
        let ep = |e: &String| EndpointLabels {
            upstream: upstream.to_string(),
            endpoint: e.clone(),
        };
        // An upstream's overrides read 0 from the first scrape (an endpoint's appear when first set).
        for action in ["force_open", "force_closed"] {
            drop(m.override_active.get_or_create(&OverrideLabels {
                target: format!("upstream:{upstream}"),
                action,
            }));
        }
        UpstreamMetrics {
            name: upstream.to_string(),
            duration: m.upstream_duration.get_or_create(&label).clone(),
            circuit_state: m.circuit_state.get_or_create(&label).clone(),
            ejections: endpoints
                .iter()
                .map(|e| m.ejections.get_or_create(&ep(e)).clone())
                .collect(),
            healthy: endpoints
                .iter()
                .map(|e| m.endpoint_healthy.get_or_create(&ep(e)).clone())
                .collect(),
        }
    }
}
