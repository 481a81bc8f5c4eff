//! Per-request cost of levee's pieces: router match, each protection's bookkeeping, header
//! rewriting. Run with `cargo bench --bench micro`. Each must stay well under a microsecond.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use levee::config::{Cidr, UpstreamConfig};
use levee::layers::breaker::state::{Admission, Breaker, BreakerSettings, CallResult};
use levee::layers::outlier::ejection::{OutlierDetector, OutlierSettings};
use levee::layers::rate_limit::gcra::{GcraCell, GcraSettings, KeyedLimiter};
use levee::layers::retry::budget::RetryBudget;
use levee::metrics::Metrics;
use levee::proxy::forward::{add_forwarding_headers, client_ip, strip_hop_by_hop, Peer};
use levee::proxy::route::Router;
use levee::traffic::matcher::{HeaderMatch, PathMatch, Pattern, RequestView, RouteMatch};
use levee::upstream::Upstream;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn router(c: &mut Criterion) {
    let hosts: Vec<String> = (0..25).map(|i| format!("svc{i}.example.com")).collect();
    let prefixes = ["/", "/api", "/api/v1", "/static"];
    let mut routes: Vec<(Option<&str>, &str)> = Vec::new();
    for h in &hosts {
        for p in prefixes {
            routes.push((Some(h.as_str()), p));
        }
    }
    let r = Router::new(routes);
    c.bench_function("router_match_100_routes", |b| {
        b.iter(|| {
            r.find(
                black_box("svc17.example.com"),
                black_box("/api/v1/users/42"),
            )
        })
    });
}

/// 100 routes, each host (25) with a `path_regex` route, a header-regex route, a method and
/// header route and a plain prefix: the request's host table is found by hash and the request
/// matches only the last route of it, so every matcher of its host is tried.
fn router_matchers(c: &mut Criterion) {
    let hosts: Vec<String> = (0..25).map(|i| format!("svc{i}.example.com")).collect();
    let mut routes: Vec<(Option<&str>, RouteMatch)> = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        for m in per_host_matchers(i) {
            routes.push((Some(h.as_str()), m));
        }
    }
    let r = Router::with_matchers(routes.iter().map(|(h, m)| (*h, m)));
    let (headers, method) = bench_headers();
    let req = RequestView {
        path: "/api/v1/users/42",
        query: Some("variant=x&page=2"),
        method: &method,
        headers: &headers,
    };
    assert_eq!(r.find_request("svc17.example.com", &req), Some(17 * 4 + 3));
    c.bench_function("router_match_100_routes_with_matchers", |b| {
        b.iter(|| r.find_request(black_box("svc17.example.com"), black_box(&req)))
    });
    // The worst case: 100 routes in one table (no host), 60 of them regexes on the request's
    // path or header, and the request matches only the last.
    let mut one_table: Vec<RouteMatch> = Vec::new();
    for i in 0..30 {
        one_table.extend(per_host_matchers(i).into_iter().take(2));
    }
    for i in 0..39 {
        one_table.push(RouteMatch {
            query: vec![("variant".into(), format!("{i}"))],
            ..RouteMatch::prefix(&format!("/api/v{i}"))
        });
    }
    one_table.push(RouteMatch::prefix("/"));
    let r = Router::with_matchers(one_table.iter().map(|m| (None, m)));
    assert_eq!(r.find_request("any.example.com", &req), Some(99));
    c.bench_function("router_match_100_routes_one_table_60_regexes", |b| {
        b.iter(|| r.find_request(black_box("any.example.com"), black_box(&req)))
    });
    // The same table tried the way the router did before its regex sets: one search per regex.
    let mut linear: Vec<(usize, &RouteMatch)> = one_table.iter().enumerate().collect();
    linear.sort_by_key(|(i, m)| m.rank(*i));
    let scan = |req: &RequestView<'_>| linear.iter().find(|(_, m)| m.matches(req)).map(|(i, _)| *i);
    assert_eq!(scan(&req), Some(99));
    c.bench_function(
        "router_match_100_routes_one_table_60_regexes_linear_scan",
        |b| b.iter(|| scan(black_box(&req))),
    );
}

/// A `path_regex` route, a header-regex route, a method and header route, a plain prefix.
fn per_host_matchers(i: usize) -> Vec<RouteMatch> {
    vec![
        RouteMatch {
            path: PathMatch::Regex(Pattern::new(&format!("^/v{i}/[a-z]+/[0-9]+$")).unwrap()),
            ..RouteMatch::default()
        },
        RouteMatch {
            headers: vec![(
                HeaderName::from_static("x-tenant"),
                HeaderMatch::Regex(Pattern::new(&format!("^tenant-{i}(-eu)?$")).unwrap()),
            )],
            ..RouteMatch::prefix("/api")
        },
        RouteMatch {
            methods: vec![http::Method::POST],
            headers: vec![(
                HeaderName::from_static("x-canary"),
                HeaderMatch::Exact(format!("{i}")),
            )],
            ..RouteMatch::prefix("/api/v1")
        },
        RouteMatch::prefix("/"),
    ]
}

fn bench_headers() -> (HeaderMap, http::Method) {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("tenant-99"));
    headers.insert("x-canary", HeaderValue::from_static("none"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    (headers, http::Method::GET)
}

fn breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let mut br = Breaker::new(BreakerSettings::default());
    c.bench_function("breaker_admit_record_closed", |b| {
        b.iter(|| {
            let now = Instant::now();
            let (adm, _) = br.admit(now);
            if let Admission::Admitted(t) = adm {
                br.record(
                    t,
                    CallResult {
                        failed: false,
                        elapsed: Duration::from_millis(1),
                    },
                    now,
                );
            }
        })
    });
}

fn limiter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let s = GcraSettings {
        rps: 1e9,
        burst: 1_000_000,
    };
    let cell = GcraCell::new(Instant::now());
    c.bench_function("gcra_check_global", |b| {
        b.iter(|| cell.check(black_box(&s), Instant::now()))
    });
    let keyed = KeyedLimiter::new(s, 100_000, Instant::now());
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let mut i = 0;
    c.bench_function("gcra_check_keyed_1000_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            keyed.check(black_box(&keys[i]), Instant::now())
        })
    });
}

fn budget(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let budget = RetryBudget::new(0.2, 10, Duration::from_secs(10), Instant::now());
    c.bench_function("retry_budget_deposit", |b| {
        b.iter(|| budget.deposit(Instant::now()))
    });
}

fn outlier(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _g = rt.enter();
    let det = OutlierDetector::new(OutlierSettings::default(), 4);
    let mut i = 0;
    c.bench_function("outlier_record_success", |b| {
        b.iter(|| {
            i = (i + 1) % 4;
            det.record(i, false, Instant::now())
        })
    });
    c.bench_function("outlier_is_ejected", |b| {
        b.iter(|| det.is_ejected(black_box(2), Instant::now()))
    });
}

fn balance(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let text = r#"
[[listener]]
bind = "127.0.0.1:0"
[[route]]
upstream = "app"
[[upstream]]
name = "app"
endpoints = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"]
"#;
    let config = levee::config::parse("bench.toml", text, std::path::Path::new(".")).unwrap();
    let u: &UpstreamConfig = &config.upstreams[0];
    let upstream = Upstream::new(u, &Arc::new(Metrics::new())).unwrap();
    c.bench_function("p2c_pick_4_endpoints", |b| {
        b.iter(|| upstream.pick(None, Instant::now()))
    });
}

/// A 95/5 split's pick, with both breakers closed and with the canary's open.
fn split(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let text = r#"
[[listener]]
bind = "127.0.0.1:0"
[[route]]
split = [{ upstream = "stable", weight = 95 }, { upstream = "canary", weight = 5 }]
[[upstream]]
name = "stable"
endpoints = ["127.0.0.1:9001"]
[[upstream]]
name = "canary"
endpoints = ["127.0.0.1:9002"]
"#;
    let config = levee::config::parse("bench.toml", text, std::path::Path::new(".")).unwrap();
    let metrics = Arc::new(Metrics::new());
    let ups: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| Arc::new(Upstream::new(u, &metrics).unwrap()))
        .collect();
    let split =
        levee::proxy::split::Split::new("api", &config.routes[0].split, &ups, None, &metrics)
            .unwrap();
    c.bench_function("split_pick_95_5", |b| {
        b.iter(|| split.pick(black_box(Instant::now())))
    });
    ups[1]
        .breaker
        .published
        .publish(&levee::layers::breaker::state::BreakerState::Open {
            until: Instant::now() + Duration::from_secs(3600),
        });
    c.bench_function("split_pick_95_5_canary_open", |b| {
        b.iter(|| split.pick(black_box(Instant::now())))
    });
}

fn headers(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("x-forwarded-for", "203.0.113.9"),
        ("cookie", "session=abcdef0123456789"),
    ] {
        base.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let trusted: Vec<Cidr> = Vec::new();
    let peer = Peer::new("10.1.2.3".parse().unwrap(), false, &trusted);
    let host = HeaderValue::from_static("api.example.com");
    c.bench_function("header_rewrite_request", |b| {
        b.iter(|| {
            let mut h = base.clone();
            let _ = client_ip(&peer, &h, &trusted);
            strip_hop_by_hop(&mut h, false);
            add_forwarding_headers(&mut h, &peer, &host, Version::HTTP_11);
            h
        })
    });
}

/// Everything metrics cost one proxied request: the in-flight gauge, the route's status-class
/// counter and latency histogram, and the upstream's latency histogram.
fn metrics(c: &mut Criterion) {
    let m = Metrics::new();
    let route = levee::metrics::RouteMetrics::new(&m, "api", "app");
    let upstream = levee::metrics::UpstreamMetrics::new(&m, "app", &["127.0.0.1:1".to_string()]);
    c.bench_function("metrics_per_request", |b| {
        b.iter(|| {
            m.in_flight.inc();
            upstream.duration.observe(black_box(0.0031));
            m.in_flight.dec();
            route.requests[levee::metrics::status_class(black_box(200))].inc();
            route.duration.observe(black_box(0.0034));
        })
    });
}

criterion_group!(
    benches,
    router,
    router_matchers,
    breaker,
    limiter,
    budget,
    outlier,
    balance,
    split,
    headers,
    metrics
);
criterion_main!(benches);
