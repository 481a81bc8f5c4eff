//! An upstream's live state: its endpoints, breaker, concurrency limit, outlier detector and
//! connection pool. It lives in an `Arc` that a reload hands to the next snapshot unchanged when
//! the upstream's config did not change, so none of that state is lost.

pub mod balance;
pub mod client;
pub mod health;
pub mod hold;
pub mod probe;
pub mod readdress;
pub mod slow_start;
pub mod weights;

use crate::config::UpstreamConfig;
use crate::history::History;
use crate::layers::breaker::CircuitBreaker;
use crate::layers::concurrency::ConcurrencyLimit;
use crate::layers::outlier::ejection::{EjectionEvent, OutlierDetector};
use crate::layers::outlier::OutlierObserver;
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::shard::Local;
use client::UpstreamClient;
use http::uri::Authority;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One `host:port` of an upstream.
pub struct Endpoint {
    pub address: String,
    pub authority: Authority,
    /// Requests sent and not yet answered: the load P2C compares.
    pub in_flight: AtomicU32,
    /// Active health check verdict; stays true when no checks are configured.
    pub healthy: AtomicBool,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// An operator's drain or ejection (`crate::overrides`); the balancer skips a held endpoint.
    pub hold: hold::EndpointHold,
}

/// One worker's handle on a shared [`Upstream`], which its balancer and client clone per request
/// (see [`Local`]).
pub type WorkerUpstream = Local<Upstream>;

/// A response that was counted as a success broke mid-body (reset, stall): count it against the
/// breaker and the endpoint after all.
impl crate::body::LateFailure for WorkerUpstream {
    fn late_failure(&self, endpoint: usize) {
        let now = tokio::time::Instant::now();
        self.breaker.record_late_failure(now);
        if let Some(ep) = self.endpoints.get(endpoint) {
            ep.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.judge_endpoint(endpoint, true, now);
    }
}

/// Everything levee keeps about one upstream.
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    pub endpoints: Box<[Endpoint]>,
    /// Shared with the next snapshot's upstream when only its resolved addresses change.
    pub breaker: Arc<CircuitBreaker>,
    pub concurrency: Arc<ConcurrencyLimit>,
    pub outlier: Arc<OutlierDetector>,
    pub client: UpstreamClient,
    pub metrics: UpstreamMetrics,
    /// Requests and failures of the last minute, per second, for the dashboard; carried over to
    /// the upstream of the same name when a reload changes its definition.
    pub history: Arc<History>,
    pub(crate) next: AtomicUsize,
    /// Set when endpoints carry different weights (`weights`).
    pub weights: Option<weights::WeightTable>,
    health_started: AtomicBool,
    probe_started: AtomicBool,
    /// When each endpoint last came back (added, healthy again), for its slow start.
    pub slow_start: slow_start::SlowStart,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, metrics: &Arc<Metrics>) -> Result<Upstream, String> {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                let authority: Authority = e.parse().map_err(|_| {
                    format!(
                        "upstream \"{}\": endpoint \"{e}\" is not a valid HOST:PORT",
                        config.name
                    )
                })?;
                Ok(Endpoint {
                    address: e.clone(),
                    authority,
                    in_flight: AtomicU32::new(0),
                    healthy: AtomicBool::new(true),
                    requests: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    hold: hold::EndpointHold::default(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let endpoints_len = endpoints.len();
        let upstream_metrics = UpstreamMetrics::new(metrics, &config.name, &config.endpoints);
        // Every transition shows in the metrics from the start, at zero.
        for (from, to) in crate::layers::breaker::state::StateKind::TRANSITIONS {
            drop(
                metrics
                    .circuit_transitions
                    .get_or_create(&crate::metrics::TransitionLabels {
                        upstream: config.name.clone(),
                        from: from.as_str(),
                        to: to.as_str(),
                    }),
            );
        }
        for g in &upstream_metrics.healthy {
            g.set(1);
        }
        let name: Arc<str> = config.name.as_str().into();
        Ok(Upstream {
            breaker: Arc::new(CircuitBreaker::new(
                name.clone(),
                probe::breaker_settings(config),
                metrics.clone(),
            )),
            concurrency: Arc::new(ConcurrencyLimit::new(
                config.breaker.max_concurrent_requests,
                config.breaker.max_pending,
            )),
            outlier: Arc::new(OutlierDetector::new(config.outlier, endpoints.len())),
            client: UpstreamClient::new(config)?,
            metrics: upstream_metrics,
            history: Arc::new(History::new()),
            name,
            config: config.clone(),
            endpoints: endpoints.into_boxed_slice(),
            next: AtomicUsize::new(0),
            weights: weights::WeightTable::new(&config.endpoint_weights),
            health_started: AtomicBool::new(false),
            probe_started: AtomicBool::new(false),
            slow_start: slow_start::SlowStart::new(endpoints_len),
        })
    }

    /// Brings each endpoint's `levee_endpoint_healthy` gauge up to date: 1 only when it can get
    /// traffic, i.e. passes health checks and is not ejected. Ejections end by the clock, with no
    /// event to hook, so this runs when metrics are scraped.
    pub fn refresh_endpoint_gauges(&self, now: tokio::time::Instant) {
        for (i, (ep, gauge)) in self.endpoints.iter().zip(&self.metrics.healthy).enumerate() {
            let usable = ep.healthy.load(Ordering::Relaxed)
                && !self.outlier.is_ejected(i, now)
                && !ep.hold.is_held();
            gauge.set(i64::from(usable));
        }
    }

    /// Whether an answer counts against the upstream: a `failure_statuses` answer or a
    /// trailers-only gRPC answer with a `failure_grpc_statuses` status. The client asks once per
    /// answer (`Answer::failed`); the layers read its verdict (`crate::call::verdict`).
    pub fn is_failure<B>(&self, resp: &http::Response<B>) -> bool {
        let breaker = &self.config.breaker;
        // A trailers-only gRPC answer: an HTTP 200 gRPC response with `grpc-status` in its head.
        breaker.is_failure_status(resp.status().as_u16())
            || (resp.status() == http::StatusCode::OK
                && crate::grpc::status_in(resp.headers())
                    .is_some_and(|code| breaker.failure_grpc_statuses.contains(code))
                && crate::grpc::is_grpc_response(resp.headers()))
    }

    /// For a gRPC answer whose `grpc-status` will come in its trailers, the verdict that its
    /// body settles; `None` for every other answer, which is judged at its head.
    pub fn defer_verdict<B: http_body::Body>(
        &self,
        resp: &http::Response<B>,
    ) -> Option<Box<crate::grpc::DeferredVerdict>> {
        let grpc = resp.status() == http::StatusCode::OK
            && !resp.body().is_end_stream()
            && !resp.headers().contains_key(crate::grpc::GRPC_STATUS)
            && crate::grpc::is_grpc_response(resp.headers());
        grpc.then(|| {
            Box::new(crate::grpc::DeferredVerdict::new(
                self.config.breaker.failure_grpc_statuses,
            ))
        })
    }

    /// Feeds one outcome to outlier detection; logs and counts an ejection if it causes one.
    pub fn judge_endpoint(&self, endpoint: usize, failed: bool, now: tokio::time::Instant) {
        if let Some(ev) = self.outlier.record(endpoint, failed, now) {
            self.ejected(endpoint, &ev, now);
        }
    }

    /// Starts active health checks once per upstream (not again when a reload keeps it).
    pub fn start_health_checks(self: &Arc<Self>) {
        if self.config.health_check.is_some() && !self.health_started.swap(true, Ordering::AcqRel) {
            health::spawn(Arc::downgrade(self));
        }
        let gated = probe::breaker_settings(&self.config).probe_path.is_some();
        if gated && !self.probe_started.swap(true, Ordering::AcqRel) {
            probe::spawn(Arc::downgrade(self));
        }
    }
}

/// What the outlier layer tells the upstream: the counters and history of each judged answer,
/// and the log line and metric of an ejection.
impl OutlierObserver for Upstream {
    fn answered(&self, endpoint: usize, failed: bool) {
        self.history.record(failed);
        if let Some(ep) = self.endpoints.get(endpoint) {
            ep.requests.fetch_add(1, Ordering::Relaxed);
            if failed {
                ep.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn ejected(&self, endpoint: usize, ev: &EjectionEvent, now: tokio::time::Instant) {
        let address = self
            .endpoints
            .get(endpoint)
            .map(|e| e.address.as_str())
            .unwrap_or("?");
        tracing::warn!(
            upstream = %self.name,
            endpoint = address,
            times_ejected = ev.times_ejected,
            reason = %ev.reason,
            "outlier detection ejected endpoint {address} for {:?}: {}",
            ev.until.saturating_duration_since(now),
            ev.reason
        );
        if let Some(c) = self.metrics.ejections.get(endpoint) {
            c.inc();
        }
    }
}
