//! Protections under failure: breaker, retries and their budget, rate limits, concurrency limits,
//! outlier ejection, active health checks and balancing, each against real origins.

use crate::support::origin::dead_addr;
use crate::support::proxy::simple_config;
use crate::support::scrape::{get_json, get_text, metric_or_zero, metric_value, upstream};
use crate::support::*;
use http::Method;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Outlier detection off, so that only the protection under test acts.
const NO_OUTLIER: &str = "[upstream.outlier_detection]\nconsecutive_failures = 0\n";

/// Requests an origin saw on paths under `/traffic` (health checks use other paths).
fn traffic(origin: &OriginHandle) -> usize {
    origin
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/traffic"))
        .count()
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn breaker_opens_on_500s_and_closes_after_open_duration() {
    let origin = Origin::new().start().await;
    let cfg = simple_config(
        &[origin.addr],
        "",
        r#"[upstream.circuit_breaker]
minimum_calls = 5
failure_rate_threshold = 0.5
window = { kind = "count", size = 10 }
open_duration = "300ms"
half_open_calls = 2
"#,
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    }

    origin.set(Behaviour::Status(500));
    // 3 good + 3 bad is 50% over 6 calls >= 5 minimum: the third 500 trips it.
    let mut upstream_500s = 0;
    let mut tripped_at = None;
    for _ in 0..20 {
        let before = tokio::time::Instant::now();
        let r = client.get(&proxy.url("/")).await;
        if r.error_kind() == "circuit_open" {
            tripped_at = Some(before);
            break;
        }
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(r.error_kind(), "");
        upstream_500s += 1;
        tripped_at = Some(before);
    }
    assert_eq!(upstream_500s, 3, "trips at 50% of 6 calls");
    let hits_when_open = origin.hits();

    // Open: refused at once, with a hint, and the origin sees nothing.
    for _ in 0..5 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.error_kind(), "circuit_open");
        let retry_after: u64 = header(&r, "retry-after").parse().expect("retry-after");
        assert!(retry_after >= 1, "{retry_after}");
    }
    assert_eq!(origin.hits(), hits_when_open, "no traffic while open");

    // Recovered: after open_duration the half-open trials go through and close the breaker.
    origin.set(Behaviour::Ok("back"));
    let first_ok = std::cell::Cell::new(None);
    let (c, p, f) = (&client, &proxy, &first_ok);
    eventually(
        "the breaker lets trial calls through",
        WAIT,
        move || async move {
            let r = c.get(&p.url("/")).await;
            if r.status == 200 {
                f.set(Some(tokio::time::Instant::now()));
                return true;
            }
            assert_eq!(r.error_kind(), "circuit_open", "{r:?}");
            false
        },
    )
    .await;
    let tripped_at = tripped_at.unwrap();
    assert!(
        first_ok.get().unwrap() - tripped_at >= Duration::from_millis(300),
        "no call before open_duration ran out"
    );
    for _ in 0..10 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "back");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(upstream(&status, "app")["breaker"]["state"], "closed");
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    let transitions = |from, to| {
        metric_or_zero(
            &metrics,
            "levee_circuit_transitions_total",
            &[("upstream", "app"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(transitions("closed", "open"), 1.0, "{metrics}");
    assert_eq!(transitions("open", "half_open"), 1.0, "{metrics}");
    assert_eq!(transitions("half_open", "closed"), 1.0, "{metrics}");
    assert_eq!(
        metric_value(&metrics, "levee_circuit_state", &[("upstream", "app")]),
        Some(0.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn breaker_reopens_when_a_trial_fails() {
    let origin = Origin::new().status(500).start().await;
    let cfg = simple_config(
        &[origin.addr],
        "",
        r#"[upstream.circuit_breaker]
minimum_calls = 5
window = { kind = "count", size = 10 }
open_duration = "300ms"
max_open_duration = "10s"
half_open_calls = 2
"#,
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for _ in 0..5 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!((r.status.as_u16(), r.error_kind()), (500, ""), "{r:?}");
    }
    let r = client.get(&proxy.url("/")).await;
    assert_eq!(r.error_kind(), "circuit_open", "5 of 5 failed trips it");
    let hits = origin.hits();

    // Still failing: the first trial call reaches the origin, fails, and re-opens the breaker.
    let retrip_sent = std::cell::Cell::new(None);
    let (c, p, t) = (&client, &proxy, &retrip_sent);
    eventually(
        "a half-open trial reaches the origin",
        WAIT,
        move || async move {
            t.set(Some(tokio::time::Instant::now()));
            let r = c.get(&p.url("/")).await;
            if r.error_kind() == "circuit_open" {
                return false;
            }
            assert_eq!(r.status, 500, "{r:?}");
            true
        },
    )
    .await;
    assert_eq!(origin.hits(), hits + 1, "one trial, then open again");
    let r = client.get(&proxy.url("/")).await;
    assert_eq!(r.error_kind(), "circuit_open", "{r:?}");
    assert_eq!(origin.hits(), hits + 1);

    let status = get_json(&proxy.admin_url("/status")).await;
    let breaker = &upstream(&status, "app")["breaker"];
    assert_eq!(breaker["state"], "open", "{status}");
    assert_eq!(breaker["reason"], "half-open trial failed", "{status}");
    assert_eq!(breaker["trips"], 2, "{status}");
    let remaining = breaker["half_open_in_ms"].as_u64().unwrap();
    // 600ms, the doubled open time, with up to +20% re-open jitter.
    assert!(remaining <= 720, "{status}");
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        metric_or_zero(
            &metrics,
            "levee_circuit_transitions_total",
            &[("upstream", "app"), ("from", "half_open"), ("to", "open")],
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "levee_circuit_state", &[("upstream", "app")]),
        Some(1.0)
    );

    // The re-trip doubled the open time: 600ms pass before the next trial closes it.
    origin.set(Behaviour::Ok("back"));
    eventually("the breaker closes", WAIT, || async {
        client.get(&proxy.url("/")).await.status == 200
    })
    .await;
    assert!(
        retrip_sent.get().unwrap().elapsed() >= Duration::from_millis(480),
        "open for twice open_duration (less up to 20% re-open jitter) after a failed trial"
    );
}
#[tokio::test]
async fn retries_hide_a_dead_endpoint() {
    let good = Origin::new().start().await;
    let dead = dead_addr().await;
    // Outlier detection off: retries alone must hide the dead endpoint.
    let cfg = simple_config(
        &[good.addr, dead],
        "[route.retry]\nattempts = 3\n",
        NO_OUTLIER,
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for i in 0..50 {
        let r = client.get(&proxy.url(&format!("/r{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert_eq!(good.hits(), 50);
    // The dead endpoint was really tried (and failed), so retries did the hiding.
    let status = get_json(&proxy.admin_url("/status")).await;
    let eps = upstream(&status, "app")["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let dead_ep = eps
        .iter()
        .find(|e| e["address"] == dead.to_string())
        .unwrap();
    assert!(
        dead_ep["failures"].as_u64().unwrap() > 0,
        "the dead endpoint was never picked: {status}"
    );
}

#[tokio::test]
async fn post_is_not_retried_after_a_reset_but_get_is() {
    let origin = Origin::new().behaviour(Behaviour::Reset).start().await;
    let cfg = simple_config(
        &[origin.addr],
        "[route.retry]\nattempts = 3\non = [\"reset\", \"connect-failure\"]\n",
        "",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for n in 1..=3 {
        let r = client
            .request(Method::POST, &proxy.url("/orders"), &[], "pay once")
            .await;
        assert_eq!(r.status, 502, "{r:?}");
        assert_eq!(r.error_kind(), "upstream_reset");
        assert_eq!(origin.hits(), n, "a POST reaches the origin exactly once");
    }

    let before = origin.hits();
    let r = client.get(&proxy.url("/orders")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_kind(), "upstream_reset");
    assert_eq!(origin.hits() - before, 3, "a GET is tried `attempts` times");
}

#[tokio::test]
async fn retry_budget_caps_retries_during_an_outage() {
    let a = Origin::new().status(503).start().await;
    let b = Origin::new().status(503).start().await;
    let cfg = simple_config(
        &[a.addr, b.addr],
        r#"[route.retry]
attempts = 3
on = ["gateway-error"]
budget = { ratio = 0.2, min_per_sec = 0 }
backoff = { base = "1ms", max = "2ms" }
"#,
        // The breaker never judges (so this measures the budget), and nothing is ejected.
        "[upstream.circuit_breaker]\nminimum_calls = 1000000\n[upstream.outlier_detection]\nconsecutive_failures = 0\n",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for _ in 0..100 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.error_kind(), "", "the upstream's own 503 comes back");
    }
    let hits = a.hits() + b.hits();
    // 100 originals earn 20 retries; a couple of slack for rounding at the edges.
    assert!(hits >= 110, "retries happened at all: {hits}");
    assert!(
        hits <= 100 + 20 + 3,
        "the budget capped retries: {hits} hits"
    );
}

#[tokio::test]
async fn rate_limit_refuses_beyond_rps_and_burst() {
    let origin = Origin::new().start().await;
    let cfg = simple_config(
        &[origin.addr],
        "[route.rate_limit]\nrps = 5\nburst = 5\n",
        "",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let started = tokio::time::Instant::now();
    let mut passed = 0;
    let mut limited = Vec::new();
    for _ in 0..20 {
        let r = client.get(&proxy.url("/")).await;
        match r.status.as_u16() {
            200 => passed += 1,
            429 => limited.push(r),
            _ => panic!("unexpected {r:?}"),
        }
    }
    // Refill at 5/s during the run may let a few more through than the burst.
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(passed >= 5, "the burst passes: {passed}");
    assert!(
        passed <= 5 + refill + 1,
        "{passed} passed, burst 5 + {refill} refilled"
    );
    assert_eq!(
        origin.hits(),
        passed,
        "refused requests never reach the origin"
    );
    for r in &limited {
        assert_eq!(r.error_kind(), "rate_limited");
        let retry_after: u64 = header(r, "retry-after").parse().expect("retry-after");
        assert!(retry_after >= 1);
        assert!(!header(r, "ratelimit").is_empty(), "{r:?}");
        assert!(!header(r, "ratelimit-policy").is_empty(), "{r:?}");
    }
}

#[tokio::test]
async fn rate_limit_by_header_keys_independently() {
    let origin = Origin::new().start().await;
    let cfg = simple_config(
        &[origin.addr],
        "[route.rate_limit]\nrps = 1\nburst = 3\nkey = \"header:x-api-key\"\n",
        "",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let get = |key: &'static str| {
        let client = client.clone();
        let url = proxy.url("/");
        async move {
            client
                .request(Method::GET, &url, &[("x-api-key", key)], "")
                .await
        }
    };
    // Spend alice's bucket until she is refused.
    let mut refused = false;
    for _ in 0..20 {
        let r = get("alice").await;
        if r.status == 429 {
            assert_eq!(r.error_kind(), "rate_limited");
            refused = true;
            break;
        }
        assert_eq!(r.status, 200);
    }
    assert!(refused, "alice is eventually limited");
    // Bob has his own bucket.
    for _ in 0..3 {
        let r = get("bob").await;
        assert_eq!(r.status, 200, "bob is not limited by alice: {r:?}");
    }
}

#[tokio::test]
async fn concurrency_limit_answers_overloaded() {
    let origin = Origin::new().delay(Duration::from_secs(3)).start().await;
    let cfg = simple_config(
        &[origin.addr],
        "",
        "[upstream.circuit_breaker]\nmax_concurrent_requests = 1\nmax_pending = 0\n",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let url = proxy.url("/slow");
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.get(&url).await }
    });
    eventually("the first request reaches the origin", WAIT, || async {
        origin.hits() == 1
    })
    .await;
    let r = client.get(&proxy.url("/second")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error_kind(), "overloaded");
    assert_eq!(
        origin.hits(),
        1,
        "the refused request never reached the origin"
    );
    let r = first.await.unwrap();
    assert_eq!(
        r.status, 200,
        "the request holding the slot completes: {r:?}"
    );
    // The slot is free again.
    origin.set(Behaviour::Ok("fast"));
    assert_eq!(client.get(&proxy.url("/third")).await.status, 200);
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint() {
    let good = Origin::new().start().await;
    let bad = Origin::new().status(500).start().await;
    let cfg = simple_config(
        &[good.addr, bad.addr],
        "",
        "[upstream.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_time = \"5s\"\n",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let bad_addr = bad.addr.to_string();
    eventually("the failing endpoint is ejected", WAIT, || async {
        let _ = client.get(&proxy.url("/")).await;
        let status = get_json(&proxy.admin_url("/status")).await;
        upstream(&status, "app")["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == bad_addr.as_str() && e["ejected"] == true)
    })
    .await;
    assert_eq!(
        bad.hits(),
        3,
        "ejected after exactly 3 consecutive failures"
    );

    let (good_before, bad_before) = (good.hits(), bad.hits());
    for _ in 0..20 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(bad.hits(), bad_before, "no traffic to the ejected endpoint");
    assert_eq!(good.hits(), good_before + 20);

    let status = get_json(&proxy.admin_url("/status")).await;
    let eps = upstream(&status, "app")["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let bad_ep = eps
        .iter()
        .find(|e| e["address"] == bad_addr.as_str())
        .unwrap();
    assert_eq!(bad_ep["ejected"], true, "{status}");
    assert!(bad_ep["times_ejected"].as_u64().unwrap() >= 1);
    let good_ep = eps
        .iter()
        .find(|e| e["address"] != bad_addr.as_str())
        .unwrap();
    assert_eq!(good_ep["ejected"], false, "{status}");
}

#[tokio::test]
async fn all_endpoints_ejected_is_no_healthy_endpoint() {
    let a = Origin::new().status(500).start().await;
    let b = Origin::new().status(500).start().await;
    let cfg = simple_config(
        &[a.addr, b.addr],
        "",
        "[upstream.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_time = \"5s\"\nmax_ejection_percent = 100\n",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let mut refused = None;
    for _ in 0..30 {
        let r = client.get(&proxy.url("/")).await;
        if r.error_kind() == "no_healthy_endpoint" {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 500, "{r:?}");
    }
    let r = refused.expect("every endpoint ejected");
    assert_eq!(r.status, 503);
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    let hits = a.hits() + b.hits();
    assert_eq!(hits, 6, "3 failures each, then nothing");
    let r = client.get(&proxy.url("/")).await;
    assert_eq!(r.error_kind(), "no_healthy_endpoint");
    assert_eq!(a.hits() + b.hits(), hits);
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_back() {
    let a = Origin::new().body("a").start().await;
    let b = Origin::new().body("b").start().await;
    let cfg = simple_config(
        &[a.addr, b.addr],
        "",
        r#"[upstream.health_check]
path = "/"
interval = "100ms"
unhealthy_threshold = 2
healthy_threshold = 1
[upstream.outlier_detection]
consecutive_failures = 0
"#,
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let b_addr = b.addr.to_string();
    let b_healthy = || async {
        let status = get_json(&proxy.admin_url("/status")).await;
        upstream(&status, "app")["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == b_addr.as_str())
            .unwrap()["healthy"]
            .as_bool()
            .unwrap()
    };
    eventually("health checks reach b", WAIT, || async {
        b.seen().iter().any(|s| s.path == "/")
    })
    .await;
    assert!(b_healthy().await);

    b.set(Behaviour::Status(500));
    eventually("b turns unhealthy", WAIT, || async { !b_healthy().await }).await;
    for i in 0..20 {
        let r = client.get(&proxy.url(&format!("/traffic/{i}"))).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "a");
    }
    assert_eq!(traffic(&b), 0, "no traffic to an unhealthy endpoint");

    b.set(Behaviour::Ok("b"));
    eventually("b turns healthy again", WAIT, || async {
        b_healthy().await
    })
    .await;
    eventually("b gets traffic again", WAIT, || async {
        let r = client.get(&proxy.url("/traffic/again")).await;
        assert_eq!(r.status, 200);
        r.text() == "b"
    })
    .await;
    assert!(traffic(&b) >= 1);
}

#[tokio::test]
async fn round_robin_spreads_exactly() {
    let origins = [
        Origin::new().start().await,
        Origin::new().start().await,
        Origin::new().start().await,
    ];
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let cfg = simple_config(&addrs, "", "balance = \"round_robin\"");
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for _ in 0..30 {
        assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    }
    let hits: Vec<usize> = origins.iter().map(OriginHandle::hits).collect();
    assert_eq!(hits, vec![10, 10, 10]);
}
