//! Idle HTTP/1 keep-alive connections are parked (hyper's connection dropped, the socket kept)
//! and resumed on their next bytes: nothing a client sends may be lost or misread across a park,
//! connections hyper closes stay closed, upgrades still tunnel, the idle timeout still holds,
//! and a drain closes parked connections at once.

use crate::support::proxy::simple_config;
use crate::support::raw::{Closed, RawConn, READ_LIMIT};
use crate::support::scrape::{get_text, metric_or_zero};
use crate::support::*;
use levee::conn::PARK_AFTER;
use std::time::Duration;
use tokio::time::Instant;

const GET: &str = "GET /one HTTP/1.1\r\nHost: app.example\r\n\r\n";

/// Far longer than a park takes (`PARK_AFTER` plus scheduling), far shorter than `READ_LIMIT`.
const PARK_WAIT: Duration = Duration::from_secs(8);

async fn metric(proxy: &TestProxy, name: &str) -> f64 {
    metric_or_zero(&get_text(&proxy.admin_url("/metrics")).await, name, &[])
}

async fn wait_parked(proxy: &TestProxy, n: f64) {
    eventually(
        &format!("{n} parked connection(s)"),
        PARK_WAIT,
        || async move { metric(proxy, "levee_parked_connections").await == n },
    )
    .await;
}

async fn wait_parks(proxy: &TestProxy, n: f64) {
    eventually(&format!("{n} park(s)"), PARK_WAIT, || async move {
        metric(proxy, "levee_connection_parks_total").await >= n
    })
    .await;
}

async fn get_ok(c: &mut RawConn, path: &str) {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n\r\n"))
        .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.has_header("connection"), "{r:?}");
}

/// The basic cycle: served, parked (still open and counted as open), then served again on the
/// same socket, as many times as the client likes.
#[tokio::test]
async fn a_parked_connection_answers_its_next_request() {
    let origin = Origin::new().body("parked ok").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    for round in 1..=3 {
        get_ok(&mut c, &format!("/round/{round}")).await;
        wait_parked(&proxy, 1.0).await;
        assert_eq!(metric(&proxy, "levee_open_connections").await, 1.0);
    }
    assert!(metric(&proxy, "levee_connection_parks_total").await >= 3.0);
    get_ok(&mut c, "/last").await;
    let paths: Vec<String> = origin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/round/1", "/round/2", "/round/3", "/last"]);
}

/// Half a request head waits in hyper's buffer when the connection is parked; it must come back
/// first, in front of the rest, on the next hyper connection.
#[tokio::test]
async fn a_head_split_across_a_park_is_answered() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    get_ok(&mut c, "/first").await;
    c.send("GET /split HTTP/1.1\r\nHost: app.ex").await;
    wait_parks(&proxy, 1.0).await;
    tokio::time::sleep(PARK_AFTER / 2).await;
    c.send("ample\r\nX-Half: two\r\n\r\n").await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.last().unwrap();
    assert_eq!(seen.path, "/split");
    assert_eq!(seen.headers["x-half"], "two");

    // On a fresh connection with no request served yet the half head is not parked (hyper may
    // not be idle), but it is still answered after a wait longer than the park period.
    let mut fresh = RawConn::connect(proxy.addr).await;
    fresh.send("GET /fresh HTTP/1.1\r\nHo").await;
    tokio::time::sleep(PARK_AFTER + PARK_AFTER / 2).await;
    fresh.send("st: app.example\r\n\r\n").await;
    let r = fresh.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.last().unwrap().path, "/fresh");
}

/// Pipelined requests are all answered in order, before and after a park, including a pair
/// whose second request is still in hyper's buffer when the first is answered.
#[tokio::test]
async fn pipelined_requests_survive_parking() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    let pair = |a: &str, b: &str| {
        format!(
            "GET /{a} HTTP/1.1\r\nHost: app.example\r\n\r\nGET /{b} HTTP/1.1\r\nHost: app.example\r\n\r\n"
        )
    };
    c.send(pair("a", "b")).await;
    for _ in 0..2 {
        assert_eq!(c.read_response().await.expect("a response").status, 200);
    }
    wait_parked(&proxy, 1.0).await;
    c.send(pair("c", "d")).await;
    for _ in 0..2 {
        assert_eq!(c.read_response().await.expect("a response").status, 200);
    }
    wait_parked(&proxy, 1.0).await;
    get_ok(&mut c, "/e").await;
    let paths: Vec<String> = origin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/a", "/b", "/c", "/d", "/e"]);
}

/// Reads to EOF, failing if the connection is still open after `limit` (a connection that was
/// wrongly resumed would stay open until the idle timeout).
async fn read_to_eof_within(c: &mut RawConn, limit: Duration) -> String {
    let (bytes, how) = tokio::time::timeout(limit, c.read_to_close())
        .await
        .expect("the connection was not closed");
    assert_eq!(how, Closed::Eof);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A client that asked to close (HTTP/1.0 without keep-alive, or `Connection: close`) reads its
/// response to EOF: the connection is closed after it, never parked and resumed.
#[tokio::test]
async fn a_client_that_asked_to_close_gets_its_response_and_eof() {
    let origin = Origin::new().body("bye").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let limit = PARK_AFTER * 3;
    for head in [
        "GET /old HTTP/1.0\r\nHost: app.example\r\n\r\n",
        "GET /close HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    ] {
        let mut c = RawConn::connect(proxy.addr).await;
        c.send(head).await;
        let text = read_to_eof_within(&mut c, limit).await;
        assert!(text.contains(" 200 "), "{text:?}");
        assert!(text.ends_with("bye"), "{text:?}");
    }
    // Also when the close comes after requests that kept the connection alive and parked.
    let mut c = RawConn::connect(proxy.addr).await;
    get_ok(&mut c, "/kept").await;
    wait_parked(&proxy, 1.0).await;
    c.send("GET /last HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
        .await;
    let text = read_to_eof_within(&mut c, limit).await;
    assert!(text.contains(" 200 "), "{text:?}");
    assert_eq!(metric(&proxy, "levee_parked_connections").await, 0.0);
}

/// A request body levee did not read to its end (here: no route, so it is never forwarded)
/// is drained or the connection is closed by hyper; either way the next bytes on the
/// connection are never taken for a request after a park.
#[tokio::test]
async fn an_unread_request_body_is_never_parsed_as_a_request() {
    let origin = Origin::new().start().await;
    let config = simple_config(&[origin.addr], "", "").replace(
        "path_prefix = \"/\"",
        "path_prefix = \"/\"\nhost = \"app.example\"",
    );
    let proxy = TestProxy::start(&config).await;

    // The whole body arrived: hyper drains it and the connection stays usable.
    let mut c = RawConn::connect(proxy.addr).await;
    c.send("POST / HTTP/1.1\r\nHost: nowhere.example\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(c.read_response().await.expect("a response").status, 404);
    tokio::time::sleep(PARK_AFTER * 2).await;
    get_ok(&mut c, "/after-drain").await;

    // Most of the body is still to come: hyper stops reading and closes after the answer.
    // The rest of the body looks like a request; it must not be answered.
    let mut c = RawConn::connect(proxy.addr).await;
    let hidden = "GET /hidden HTTP/1.1\r\nHost: app.example\r\n\r\n";
    c.send(format!(
        "POST / HTTP/1.1\r\nHost: nowhere.example\r\nContent-Length: {}\r\n\r\nxx",
        2 + hidden.len() + 1000
    ))
    .await;
    assert_eq!(c.read_response().await.expect("a response").status, 404);
    tokio::time::sleep(PARK_AFTER * 2).await;
    let _ = c.try_send(hidden).await;
    let (rest, _) = tokio::time::timeout(PARK_AFTER * 3, c.read_to_close())
        .await
        .expect("the connection was not closed");
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("HTTP/1."), "a second response: {rest:?}");
    assert!(origin.seen().iter().all(|s| s.path != "/hidden"));
}

async fn upgrade_and_echo(c: &mut RawConn, early: &str) {
    c.send(format!(
        "GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n{early}"
    ))
    .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 101, "{r:?}");
    if !early.is_empty() {
        // Sent right behind the upgrade request: hyper had read it; it must reach the tunnel.
        assert_eq!(c.read_exact(early.len()).await, early.as_bytes());
    }
    for msg in ["ping through levee", "second frame \u{1F30A}"] {
        c.send(msg).await;
        assert_eq!(c.read_exact(msg.len()).await, msg.as_bytes());
    }
}

/// An upgrade on a parkable connection tunnels both ways: on a fresh connection, with bytes
/// sent right behind the upgrade request, and on a connection that was parked before.
#[tokio::test]
async fn upgrades_tunnel_on_fresh_and_parked_connections() {
    let origin = Origin::new()
        .behaviour(Behaviour::UpgradeEcho)
        .start()
        .await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;

    let mut c = RawConn::connect(proxy.addr).await;
    upgrade_and_echo(&mut c, "early bytes").await;

    // A tunnel is not an idle keep-alive connection: it is never parked.
    tokio::time::sleep(PARK_AFTER * 2).await;
    assert_eq!(metric(&proxy, "levee_connection_parks_total").await, 0.0);
    c.send("still here").await;
    assert_eq!(c.read_exact(10).await, b"still here");

    // A keep-alive connection that was parked, then upgraded. The echo origin answers every
    // request with 101, so plain requests go to another origin.
    let plain = Origin::new().start().await;
    let both = simple_config(&[plain.addr], "", "")
        + &format!(
            r#"
[[route]]
name = "ws"
path_prefix = "/ws"
upstream = "ws"

[[upstream]]
name = "ws"
endpoints = ["{}"]
"#,
            origin.addr
        );
    let proxy = TestProxy::start(&both).await;
    let mut c = RawConn::connect(proxy.addr).await;
    get_ok(&mut c, "/plain").await;
    wait_parked(&proxy, 1.0).await;
    upgrade_and_echo(&mut c, "").await;
    assert_eq!(metric(&proxy, "levee_parked_connections").await, 0.0);
}

/// A parked connection is closed when the idle timeout (`header_read_timeout`) runs out, counted
/// from the end of its last response as before; so is a connection that never sends a byte.
#[tokio::test]
async fn the_idle_timeout_still_closes_parked_and_silent_connections() {
    let origin = Origin::new().start().await;
    let timeout = PARK_AFTER * 2 + Duration::from_millis(500);
    let config = simple_config(&[origin.addr], "", "").replace(
        "bind = \"127.0.0.1:0\"",
        &format!(
            "bind = \"127.0.0.1:0\"\nheader_read_timeout = \"{}ms\"",
            timeout.as_millis()
        ),
    );
    let proxy = TestProxy::start(&config).await;

    let mut c = RawConn::connect(proxy.addr).await;
    get_ok(&mut c, "/").await;
    let idle_from = Instant::now();
    wait_parked(&proxy, 1.0).await;
    let (rest, how) = c.read_to_close().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(how, Closed::Eof);
    let idle = idle_from.elapsed();
    assert!(
        idle >= timeout - Duration::from_millis(50),
        "closed after {idle:?}"
    );
    assert!(idle < READ_LIMIT, "closed after {idle:?}");

    let silent_from = Instant::now();
    let mut silent = RawConn::connect(proxy.addr).await;
    let (_, how) = silent.read_to_close().await;
    assert_eq!(how, Closed::Eof);
    let idle = silent_from.elapsed();
    assert!(
        idle >= timeout - Duration::from_millis(50),
        "closed after {idle:?}"
    );
    eventually("no connection left open", PARK_WAIT, || async {
        metric(&proxy, "levee_open_connections").await == 0.0
    })
    .await;
}

/// A parked connection counts toward `max_connections` like any open one.
#[tokio::test]
async fn parked_connections_count_toward_max_connections() {
    let origin = Origin::new().start().await;
    let config = simple_config(&[origin.addr], "", "").replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\nmax_connections = 1",
    );
    let proxy = TestProxy::start(&config).await;
    let mut first = RawConn::connect(proxy.addr).await;
    get_ok(&mut first, "/").await;
    wait_parked(&proxy, 1.0).await;
    let mut second = RawConn::connect(proxy.addr).await;
    let _ = second.try_send(GET).await;
    assert!(
        second.read_response().await.is_none(),
        "a second connection was served"
    );
    get_ok(&mut first, "/again").await;
}

/// A drain closes parked connections at once (the drain does not wait for them), while a request
/// in flight on another connection still finishes.
#[tokio::test]
async fn drain_closes_parked_connections_promptly() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let origin = Origin::new()
        .behaviour(Behaviour::Gate(gate.clone()))
        .start()
        .await;
    // drain_timeout is 5s in the test proxy's admin table.
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut parked = RawConn::connect(proxy.addr).await;
    gate.add_permits(1);
    get_ok(&mut parked, "/").await;
    wait_parked(&proxy, 1.0).await;

    let mut busy = RawConn::connect(proxy.addr).await;
    busy.send(GET).await;
    eventually("the held request reached the origin", PARK_WAIT, || async {
        origin.hits() == 2
    })
    .await;

    let started = Instant::now();
    let levee = proxy.levee.clone();
    let drain = tokio::spawn(async move { levee.shutdown().await });
    let (rest, how) = tokio::time::timeout(Duration::from_secs(2), parked.read_to_close())
        .await
        .expect("the parked connection was not closed by the drain");
    assert!(rest.is_empty());
    assert_eq!(how, Closed::Eof);
    assert!(
        !drain.is_finished(),
        "the drain did not wait for the request in flight"
    );
    // With several workers the busy connection may be on another thread than the parked one:
    // once every worker's socket is closed, every worker has seen the drain begin.
    eventually("every worker stopped accepting", PARK_WAIT, || async {
        tokio::net::TcpStream::connect(proxy.addr).await.is_err()
    })
    .await;

    gate.add_permits(1);
    let r = busy
        .read_response()
        .await
        .expect("the held request is answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .expect("the drain finished promptly")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// HTTP/2 prior knowledge is recognised even when its preface arrives in pieces, and an HTTP/1
/// request that starts like it (`P…`) is still HTTP/1.
#[tokio::test]
async fn a_split_http2_preface_is_still_http2() {
    let origin = Origin::new().body("ok").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    c.send("PRI * HTTP/2.0\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send("\r\nSM\r\n\r\n").await;
    // An empty SETTINGS frame; the server's first frame must be its own SETTINGS.
    c.send([0u8, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    let frame = c.read_exact(9).await;
    assert_eq!(frame[3], 4, "first frame type {frame:?}");

    let mut h1 = RawConn::connect(proxy.addr).await;
    h1.send("P").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h1.send("UT /p HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0\r\n\r\n")
        .await;
    let r = h1.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
}
