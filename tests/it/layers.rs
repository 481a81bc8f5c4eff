//! The per-upstream layer services as units, no sockets: each built from its own state (a
//! breaker, a limit, a detector and its observer) around a stub inner service, on a paused clock.

use levee::body::RequestBody;
use levee::call::{Call, CallFuture, CallRequest};
use levee::error::ProxyError;
use levee::layers::breaker::state::{BreakerSettings, StateKind};
use levee::layers::breaker::{BreakerLayer, CircuitBreaker, RampBy};
use levee::layers::concurrency::{ConcurrencyLayer, ConcurrencyLimit};
use levee::layers::outlier::ejection::{EjectionEvent, OutlierDetector, OutlierSettings};
use levee::layers::outlier::{OutlierLayer, OutlierObserver, Outliers};
use levee::shard::Local;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn call(endpoint: usize) -> Call {
    let now = Instant::now();
    Call {
        req: CallRequest::new(http::Request::new(RequestBody::Full(None))),
        client_ip: [127, 0, 0, 1].into(),
        started: now,
        deadline: now + Duration::from_secs(10),
        endpoint,
        avoid: None,
        picked: None,
    }
}

/// An inner service that counts its calls and fails each with what `fail` makes.
fn failing(
    calls: &Arc<AtomicUsize>,
    fail: fn() -> ProxyError,
) -> impl Service<Call, Response = levee::call::Answer, Error = ProxyError, Future = CallFuture>
       + Clone
       + Send
       + 'static {
    let calls = calls.clone();
    tower::service_fn(move |_: Call| -> CallFuture {
        calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Err(fail()) })
    })
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_on_upstream_failures_and_lets_a_trial_through_after_open_duration() {
    let settings = BreakerSettings {
        consecutive_failures: 2,
        open_duration: Duration::from_secs(30),
        max_open_duration: Duration::from_secs(30),
        half_open_calls: 1,
        ..BreakerSettings::default()
    };
    let metrics = Arc::new(levee::metrics::Metrics::new());
    let breaker = Arc::new(CircuitBreaker::new("api".into(), settings, metrics));
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = BreakerLayer(Arc::new(Local(breaker.clone())), RampBy::Breaker);
    let mut svc = layer.layer(failing(&calls, || ProxyError::UpstreamTimeout));
    // A client-side failure says nothing about the upstream: it does not count.
    let mut client_fault = layer.layer(failing(&calls, || ProxyError::BadRequest("no")));
    for _ in 0..3 {
        assert!(client_fault
            .ready()
            .await
            .unwrap()
            .call(call(0))
            .await
            .is_err());
    }
    assert_eq!(breaker.kind(Instant::now()), StateKind::Closed);
    for _ in 0..2 {
        let r = svc.ready().await.unwrap().call(call(0)).await;
        assert!(matches!(r, Err(ProxyError::UpstreamTimeout)));
    }
    assert_eq!(breaker.kind(Instant::now()), StateKind::Open);
    let r = svc.ready().await.unwrap().call(call(0)).await;
    assert!(matches!(r, Err(ProxyError::CircuitOpen { .. })));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        5,
        "an open breaker does not call inner"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    let r = svc.ready().await.unwrap().call(call(0)).await;
    assert!(matches!(r, Err(ProxyError::UpstreamTimeout)));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        6,
        "the half-open trial reached inner"
    );
    assert_eq!(breaker.kind(Instant::now()), StateKind::Open);
}

#[tokio::test(start_paused = true)]
async fn concurrency_queues_within_max_pending_until_the_deadline_and_refuses_beyond() {
    let limit = Arc::new(ConcurrencyLimit::new(1, 1));
    let release = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (r2, c2) = (release.clone(), calls.clone());
    let inner = tower::service_fn(move |_: Call| -> CallFuture {
        let (release, calls) = (r2.clone(), c2.clone());
        Box::pin(async move {
            calls.fetch_add(1, Ordering::Relaxed);
            release.notified().await;
            Err(ProxyError::UpstreamTimeout)
        })
    });
    let svc = ConcurrencyLayer(Arc::new(Local(limit.clone()))).layer(inner);
    let first = tokio::spawn(svc.clone().oneshot(call(0)));
    let queued = tokio::spawn(svc.clone().oneshot(call(0)));
    while limit.pending() == 0 || calls.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(limit.active(), 1);
    let r = svc.clone().oneshot(call(0)).await;
    assert!(
        matches!(r, Err(ProxyError::Overloaded)),
        "beyond max_pending"
    );
    // The queued call waits no longer than its deadline.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(matches!(queued.await.unwrap(), Err(ProxyError::Overloaded)));
    assert_eq!(limit.pending(), 0);
    release.notify_one();
    assert!(matches!(
        first.await.unwrap(),
        Err(ProxyError::UpstreamTimeout)
    ));
    assert_eq!((limit.active(), calls.load(Ordering::Relaxed)), (0, 1));
}

#[derive(Default)]
struct Heard {
    answered: Mutex<Vec<(usize, bool)>>,
    ejected: Mutex<Vec<usize>>,
}

impl OutlierObserver for Heard {
    fn answered(&self, endpoint: usize, failed: bool) {
        self.answered.lock().unwrap().push((endpoint, failed));
    }
    fn ejected(&self, endpoint: usize, _: &EjectionEvent, _: Instant) {
        self.ejected.lock().unwrap().push(endpoint);
    }
}

#[tokio::test(start_paused = true)]
async fn outlier_counts_upstream_failures_per_endpoint_and_reports_the_ejection() {
    let settings = OutlierSettings {
        consecutive_failures: 2,
        max_ejection_percent: 100,
        ..OutlierSettings::default()
    };
    let detector = Arc::new(OutlierDetector::new(settings, 2));
    let heard = Arc::new(Heard::default());
    let outliers = Arc::new(Outliers {
        detector: detector.clone(),
        observer: heard.clone(),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = OutlierLayer(outliers);
    let mut client_fault = layer.layer(failing(&calls, || ProxyError::BadRequest("no")));
    let _ = client_fault.ready().await.unwrap().call(call(1)).await;
    assert!(
        heard.answered.lock().unwrap().is_empty(),
        "not the upstream's fault"
    );
    let mut svc = layer.layer(failing(&calls, || ProxyError::UpstreamTimeout));
    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call(call(1)).await;
    }
    assert_eq!(*heard.answered.lock().unwrap(), [(1, true), (1, true)]);
    assert_eq!(*heard.ejected.lock().unwrap(), [1]);
    assert!(detector.is_ejected(1, Instant::now()) && !detector.is_ejected(0, Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn retry_tries_again_elsewhere_only_for_idempotent_calls_within_attempts() {
    use levee::layers::retry::{RetryConfig, RetryLayer, RetryOn, RetryPolicy};
    let config = RetryConfig {
        attempts: 3,
        per_try_timeout: None,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
        budget_ratio: 0.2,
        budget_min_per_sec: 10,
        on: RetryOn {
            gateway_error: true,
            ..RetryOn::default()
        },
        retriable_statuses: vec![],
        max_retry_body: 1024,
    };
    let metrics = levee::metrics::Metrics::new();
    let route = Arc::new(levee::metrics::RouteMetrics::new(&metrics, "r", "api"));
    let layer = RetryLayer::new(Some(Arc::new(RetryPolicy::new(&config))), route);
    let avoided = Arc::new(Mutex::new(Vec::new()));
    let seen = avoided.clone();
    // Acts as the balancer too: each attempt lands on the endpoint after the one it avoids.
    let inner = tower::service_fn(move |call: Call| -> CallFuture {
        let pick = call.avoid.map_or(0, |a| a + 1);
        if let Some(p) = &call.picked {
            p.store(pick, Ordering::Relaxed);
        }
        seen.lock().unwrap().push(call.avoid);
        Box::pin(async { Err(ProxyError::UpstreamTimeout) })
    });
    let r = layer.layer(inner.clone()).oneshot(call(0)).await;
    assert!(matches!(r, Err(ProxyError::UpstreamTimeout)));
    assert_eq!(*avoided.lock().unwrap(), [None, Some(0), Some(1)]);
    avoided.lock().unwrap().clear();
    let mut post = call(0);
    if let CallRequest::Owned(req) = &mut post.req {
        *req.method_mut() = http::Method::POST;
    }
    let _ = layer.layer(inner).oneshot(post).await;
    assert_eq!(
        avoided.lock().unwrap().len(),
        1,
        "a timed-out POST is not sent again"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_refuses_beyond_the_burst_before_inner_and_refills_with_time() {
    use levee::layers::rate_limit::{
        RateLimitConfig, RateLimitKey, RateLimitLayer, RateLimitScope, RouteLimiter,
    };
    let config = RateLimitConfig {
        rps: 1.0,
        burst: 2,
        key: RateLimitKey::Global,
        scope: RateLimitScope::Local,
        max_keys: 16,
    };
    let metrics = levee::metrics::Metrics::new();
    let route = Arc::new(levee::metrics::RouteMetrics::new(&metrics, "r", "api"));
    let limiter = Arc::new(RouteLimiter::new(&config));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = RateLimitLayer::new(Some(limiter), route.clone())
        .layer(failing(&calls, || ProxyError::UpstreamTimeout));
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let r = svc.clone().oneshot(call(0)).await;
        outcomes.push(matches!(r, Err(ProxyError::RateLimited { .. })));
    }
    assert_eq!(outcomes, [false, false, true]);
    assert_eq!(
        (calls.load(Ordering::Relaxed), route.rate_limited.get()),
        (2, 1)
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = svc.clone().oneshot(call(0)).await;
    assert!(
        matches!(r, Err(ProxyError::UpstreamTimeout)),
        "a token came back"
    );
}

#[tokio::test(start_paused = true)]
async fn balance_skips_ejected_and_unhealthy_endpoints_and_avoids_the_failed_one() {
    use levee::upstream::balance::BalanceLayer;
    let text = "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
                [[route]]\nname = \"r\"\nupstream = \"u\"\n\n\
                [[upstream]]\nname = \"u\"\n\
                endpoints = [\"127.0.0.1:9\", \"127.0.0.1:10\", \"127.0.0.1:11\"]\n";
    let config = levee::config::parse("t.toml", text, std::path::Path::new(".")).unwrap();
    let metrics = Arc::new(levee::metrics::Metrics::new());
    let upstream =
        Arc::new(levee::upstream::Upstream::new(&config.upstreams[0], &metrics).unwrap());
    for _ in 0..5 {
        upstream.outlier.record(1, true, Instant::now());
    }
    assert!(upstream.outlier.is_ejected(1, Instant::now()));
    let picks = Arc::new(Mutex::new(Vec::new()));
    let seen = picks.clone();
    let svc = BalanceLayer::new(Arc::new(Local(upstream.clone()))).layer(tower::service_fn(
        move |call: Call| -> CallFuture {
            seen.lock().unwrap().push(call.endpoint);
            Box::pin(async { Err(ProxyError::UpstreamTimeout) })
        },
    ));
    let avoiding = |avoid| {
        let mut c = call(0);
        c.avoid = Some(avoid);
        c
    };
    for _ in 0..20 {
        let _ = svc.clone().oneshot(avoiding(0)).await;
    }
    assert!(
        picks.lock().unwrap().iter().all(|i| *i == 2),
        "1 is ejected, 0 avoided"
    );
    picks.lock().unwrap().clear();
    upstream.endpoints[2]
        .healthy
        .store(false, Ordering::Relaxed);
    let _ = svc.clone().oneshot(avoiding(0)).await;
    assert_eq!(
        *picks.lock().unwrap(),
        [0],
        "the avoided one is still better than none"
    );
    upstream.endpoints[0]
        .healthy
        .store(false, Ordering::Relaxed);
    let r = svc.clone().oneshot(avoiding(0)).await;
    assert!(matches!(r, Err(ProxyError::NoHealthyEndpoint { .. })));
    assert!(upstream
        .endpoints
        .iter()
        .all(|e| e.in_flight.load(Ordering::Relaxed) == 0));
}
