//! Broken backends over raw TCP: origins that reset mid-response, send part of a body and close,
//! stall before or after the head, answer with garbage, or drop keep-alive connections levee is
//! about to reuse. Before the response head the client gets a clean 502/504; after it, a stream
//! it can tell was cut (shorter than its Content-Length, then a closed connection). Never a hang
//! (every read is bounded), a wrong byte or a panic, and the breaker sees every call.

use crate::support::fault::{body_bytes, Fault, FaultyOrigin, FULL_LEN, SENT_LEN};
use crate::support::proxy::simple_config;
use crate::support::raw::RawConn;
use crate::support::scrape::{get_json, get_text, metric_or_zero, upstream};
use crate::support::{Client, TestProxy};
use http::Method;
use std::time::Duration;
use tokio::time::Instant;

/// The route timeout in these tests: the deadline for the head, and the longest an upstream
/// body may go silent.
const ROUTE_TIMEOUT: &str = "timeout = \"1s\"";
/// Nothing ejected and the breaker never opens, so every request reaches the faulty origin.
const QUIET: &str = "[upstream.circuit_breaker]\nminimum_calls = 1000000\n\
    [upstream.outlier_detection]\nconsecutive_failures = 0\n";
/// Bound on any single scenario: well over the route timeout, well under a hang.
const SCENARIO_LIMIT: Duration = Duration::from_secs(15);

async fn start(fault: Fault) -> (FaultyOrigin, TestProxy) {
    let origin = FaultyOrigin::start(fault).await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], ROUTE_TIMEOUT, QUIET)).await;
    (origin, proxy)
}

/// The breaker's `(calls, failures)` for upstream "app".
async fn breaker(proxy: &TestProxy) -> (u64, u64) {
    let status = get_json(&proxy.admin_url("/status")).await;
    let b = &upstream(&status, "app")["breaker"];
    (
        b["calls"].as_u64().unwrap(),
        b["failures"].as_u64().unwrap(),
    )
}

/// A GET over raw TCP whose answer started (200, `Content-Length: FULL_LEN`) and was then cut:
/// the body is a strict prefix of what the origin was sending, and levee closes the connection
/// so the client cannot mistake the short body for a whole one.
async fn expect_truncated(fault: Fault) {
    let (origin, proxy) = start(fault).await;
    let started = Instant::now();
    tokio::time::timeout(SCENARIO_LIMIT, async {
        let mut c = RawConn::connect(proxy.addr).await;
        c.send("GET /file HTTP/1.1\r\nhost: app\r\n\r\n").await;
        let r = c.read_response().await.expect("the head arrives");
        assert_eq!(r.status, 200, "{fault:?}: {r:?}");
        assert_eq!(r.header("content-length"), Some("1000"), "{fault:?}: {r:?}");
        assert!(
            r.body.len() < FULL_LEN,
            "{fault:?}: a cut body must be short, got {} bytes",
            r.body.len()
        );
        assert!(r.body.len() <= SENT_LEN, "{fault:?}: more than was sent");
        assert_eq!(r.body, body_bytes(r.body.len()), "{fault:?}: wrong bytes");
        let (rest, _) = c.read_to_close().await;
        assert!(rest.is_empty(), "{fault:?}: bytes after the cut: {rest:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("{fault:?}: the client hung"));
    assert_eq!(origin.requests().len(), 1, "{fault:?}: sent once");
    // The head was a success when it arrived; the cut body is charged to the upstream afterwards.
    let (calls, failures) = breaker(&proxy).await;
    assert!(calls >= 1, "{fault:?}: the breaker saw no call");
    assert!(
        failures >= 1,
        "{fault:?}: the breaker did not count the cut body"
    );
    let status = get_json(&proxy.admin_url("/status")).await;
    let ep = &upstream(&status, "app")["endpoints"][0];
    assert!(
        ep["failures"].as_u64().unwrap() >= 1,
        "{fault:?}: endpoint not charged: {ep}"
    );
    // levee is still serving.
    let s = Client::new().get(&proxy.admin_url("/ready")).await.status;
    assert_eq!(s, 200);
    assert!(started.elapsed() < SCENARIO_LIMIT);
}

#[tokio::test]
async fn reset_mid_body_is_a_detectably_truncated_stream() {
    expect_truncated(Fault::ResetMidBody).await;
}

#[tokio::test]
async fn partial_body_then_close_is_a_detectably_truncated_stream() {
    expect_truncated(Fault::PartialBodyThenClose).await;
}

/// An upstream that goes silent mid-body is cut after the route timeout, not waited on forever.
#[tokio::test]
async fn stall_after_headers_is_cut_after_the_route_timeout() {
    let started = Instant::now();
    expect_truncated(Fault::StallAfterHeaders).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn stall_before_headers_is_504() {
    let (origin, proxy) = start(Fault::StallBeforeHeaders).await;
    let started = Instant::now();
    let r = tokio::time::timeout(SCENARIO_LIMIT, Client::new().get(&proxy.url("/")))
        .await
        .expect("504 in time");
    assert_eq!(
        (r.status.as_u16(), r.error_kind()),
        (504, "upstream_timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(origin.requests().len(), 1);
    let (calls, failures) = breaker(&proxy).await;
    assert_eq!((calls, failures), (1, 1));
}

#[tokio::test]
async fn garbage_instead_of_http_is_502() {
    let (origin, proxy) = start(Fault::Garbage).await;
    for method in [Method::GET, Method::POST] {
        let r = tokio::time::timeout(
            SCENARIO_LIMIT,
            Client::new().request(method.clone(), &proxy.url("/"), &[], "x"),
        )
        .await
        .expect("502 in time");
        assert_eq!((r.status.as_u16(), r.error_kind()), (502, "upstream_reset"));
        assert!(
            !r.text().contains("not HTTP"),
            "garbage leaked: {}",
            r.text()
        );
    }
    assert_eq!(origin.requests().len(), 2, "garbage is never retried");
    let (calls, failures) = breaker(&proxy).await;
    assert_eq!((calls, failures), (2, 2));
}

/// The origin closes each connection right after answering it: whether levee notices before
/// reusing the connection or only when the reuse fails, every GET gets the whole answer.
#[tokio::test]
async fn origin_closing_after_each_answer_costs_nothing() {
    let (origin, proxy) = start(Fault::CloseAfterAnswer).await;
    let client = Client::new();
    for i in 0..20 {
        let r = tokio::time::timeout(SCENARIO_LIMIT, client.get(&proxy.url("/")))
            .await
            .expect("answered in time");
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "ok"),
            "GET {i}"
        );
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(origin.connections() >= 20);
    let (_, failures) = breaker(&proxy).await;
    assert_eq!(failures, 0);
}

/// The upstream drops an idle pooled connection exactly as levee reuses it: the GET is sent
/// again once, on a fresh connection, and the client never knows.
async fn stale_connection_is_retried_for_get(rst: bool) {
    let (origin, proxy) = start(Fault::DropReusedConnection { rst }).await;
    let client = Client::new();
    for round in 1..=3 {
        let r = tokio::time::timeout(SCENARIO_LIMIT, client.get(&proxy.url("/again")))
            .await
            .expect("answered in time");
        assert_eq!(
            (r.status.as_u16(), r.error_kind(), r.text().as_str()),
            (200, "", "ok"),
            "round {round}, rst {rst}"
        );
        // Let the connection go back to the pool and sit there.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Round 1 opened a connection; rounds 2 and 3 each found the pooled one dead and opened one.
    assert_eq!(origin.connections(), 3, "rst {rst}");
    assert_eq!(origin.requests().len(), 5, "rst {rst}: each stale try once");
    let (calls, failures) = breaker(&proxy).await;
    assert_eq!(
        (calls, failures),
        (3, 0),
        "a stale connection is not a failure"
    );
    // Each resend is counted for the route (and withdrawn from its retry budget), not hidden.
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    let resends = metric_or_zero(&metrics, "levee_stale_resends_total", &[("route", "app")]);
    assert_eq!(resends, 2.0, "rst {rst}: two stale resends shown");
}

#[tokio::test]
async fn stale_pooled_connection_closed_is_retried_once_for_get() {
    stale_connection_is_retried_for_get(false).await;
}

#[tokio::test]
async fn stale_pooled_connection_reset_is_retried_once_for_get() {
    stale_connection_is_retried_for_get(true).await;
}

/// A POST on a stale connection may have reached the application: it is not sent again.
#[tokio::test]
async fn stale_pooled_connection_is_not_retried_for_post() {
    let (origin, proxy) = start(Fault::DropReusedConnection { rst: false }).await;
    let client = Client::new();
    // A streamed POST travels on hyper's pool, bodiless GETs on levee's own: warm up the one
    // the second POST will use.
    let first = client
        .request(Method::POST, &proxy.url("/pay"), &[], "first")
        .await;
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = tokio::time::timeout(
        SCENARIO_LIMIT,
        client.request(Method::POST, &proxy.url("/pay"), &[], "once"),
    )
    .await
    .expect("answered in time");
    assert_eq!((r.status.as_u16(), r.error_kind()), (502, "upstream_reset"));
    let posts = origin
        .requests()
        .iter()
        // The origin reads heads only, so the first POST's body prefixes the next line.
        .filter(|l| l.contains("POST /pay"))
        .count();
    assert_eq!(posts, 2, "the second POST reached the origin exactly once");
    let (calls, failures) = breaker(&proxy).await;
    assert_eq!((calls, failures), (2, 1));
    // The next request gets a fresh connection.
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
}
