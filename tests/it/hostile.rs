//! Hostile input over raw TCP, so no client library can tidy it up: request smuggling attempts,
//! broken framing, oversized and too many headers, slowloris, connection floods, CONNECT and
//! absolute-form tricks, spoofed x-forwarded-for, oversized bodies.

use crate::support::raw::{exchange, Closed, RawConn};
use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Listener "main" with `listener_extra`; one route for host `known.example` only (no
/// catch-all), with `route_extra`, to `origin`.
fn config(origin: SocketAddr, listener_extra: &str, route_extra: &str) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"
{listener_extra}

[[route]]
name = "known"
host = "known.example"
path_prefix = "/"
upstream = "app"
{route_extra}

[[upstream]]
name = "app"
endpoints = ["{origin}"]
"#
    )
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: known.example\r\n\r\n";

/// Asserts that after the first response nothing else comes back and the connection closes:
/// a request hidden behind the first one was never parsed.
async fn assert_closed_without_second_response(c: &mut RawConn) {
    let (rest, _) = c.read_to_close().await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("HTTP/1."),
        "a second response came back on the same connection: {rest:?}"
    );
}

fn assert_nothing_smuggled(origin: &OriginHandle) {
    for seen in origin.seen() {
        assert_ne!(
            seen.path, "/smuggled",
            "a smuggled request reached the origin"
        );
    }
}

/// Sends `head` + `SMUGGLED` in one write; expects 400, a closed connection, and an origin
/// that saw nothing at all.
async fn expect_rejected(proxy: &TestProxy, origin: &OriginHandle, what: &str, head: &str) {
    let before = origin.hits();
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(format!("{head}{SMUGGLED}")).await;
    let r = c
        .read_response()
        .await
        .unwrap_or_else(|| panic!("{what}: connection closed without a response"));
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert_closed_without_second_response(&mut c).await;
    assert_eq!(origin.hits(), before, "{what}: the origin saw a request");
}

/// Content-Length and Transfer-Encoding together (both orders). RFC 9112 §6.3 lets a server
/// reject it, or frame by Transfer-Encoding alone and then close the connection; levee rejects
/// it, as nginx and Envoy do (contract: 400 `bad_request`, nothing forwarded). The bytes a
/// Content-Length-framing peer would see as a second request are never parsed either.
#[tokio::test]
async fn content_length_with_chunked_is_not_smuggled() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    let hidden = format!("0\r\n\r\n{SMUGGLED}");
    let heads = [
        format!(
            "POST /cl-te HTTP/1.1\r\nHost: known.example\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            hidden.len()
        ),
        format!(
            "POST /te-cl HTTP/1.1\r\nHost: known.example\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n",
            hidden.len()
        ),
    ];
    for head in heads {
        let before = origin.seen().len();
        let mut c = RawConn::connect(proxy.addr).await;
        c.send(format!("{head}{hidden}")).await;
        let r = c.read_response().await.expect("a response");
        assert_closed_without_second_response(&mut c).await;
        let seen = origin.seen();
        let new = &seen[before..];
        assert_eq!(r.status, 400, "{head:?}: {r:?}");
        assert_eq!(r.error_kind(), "bad_request");
        assert!(new.is_empty(), "rejected, yet the origin saw {new:?}");
    }
    assert_nothing_smuggled(&origin);
}

/// The same conflict further down a keep-alive connection, behind requests whose bodies (one
/// by length, one chunked) look like header lines: found all the same, and only the requests
/// before it reach the origin.
#[tokio::test]
async fn content_length_with_chunked_is_refused_on_a_busy_connection() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    let fake = "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
    c.send(format!(
        "POST /by-length HTTP/1.1\r\nHost: known.example\r\nContent-Length: {}\r\n\r\n{fake}",
        fake.len()
    ))
    .await;
    assert_eq!(c.read_response().await.expect("a response").status, 200);
    c.send(format!(
        "POST /chunked HTTP/1.1\r\nHost: known.example\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{fake}\r\n0\r\n\r\n",
        fake.len()
    ))
    .await;
    assert_eq!(c.read_response().await.expect("a response").status, 200);
    c.send(format!(
        "POST /both HTTP/1.1\r\nHost: known.example\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: 5\r\n\r\n0\r\n\r\n{SMUGGLED}"
    ))
    .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.error_kind(), "bad_request");
    assert_closed_without_second_response(&mut c).await;
    let paths: Vec<String> = origin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/by-length", "/chunked"]);
}

#[tokio::test]
async fn conflicting_or_malformed_content_length_is_400() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    expect_rejected(
        &proxy,
        &origin,
        "two different Content-Lengths",
        "POST / HTTP/1.1\r\nHost: known.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    )
    .await;
    expect_rejected(
        &proxy,
        &origin,
        "Content-Length list with different values",
        "POST / HTTP/1.1\r\nHost: known.example\r\nContent-Length: 5, 6\r\n\r\nhello",
    )
    .await;
    for bad in ["5x", "-1", "+5", "0x5", "5 5", ""] {
        expect_rejected(
            &proxy,
            &origin,
            &format!("Content-Length {bad:?}"),
            &format!(
                "POST / HTTP/1.1\r\nHost: known.example\r\nContent-Length: {bad}\r\n\r\nhello"
            ),
        )
        .await;
    }
    expect_rejected(
        &proxy,
        &origin,
        "Transfer-Encoding that is not chunked",
        "POST / HTTP/1.1\r\nHost: known.example\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    )
    .await;
    assert_nothing_smuggled(&origin);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn malformed_header_lines_are_400() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    let cases = [
        (
            "obsolete line folding",
            "GET / HTTP/1.1\r\nHost: known.example\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "folded Content-Length",
            "POST / HTTP/1.1\r\nHost: known.example\r\nContent-Length:\r\n 5\r\n\r\nhello",
        ),
        (
            "space in a header name",
            "GET / HTTP/1.1\r\nHost: known.example\r\nBad Header: 1\r\n\r\n",
        ),
        (
            "space before the colon",
            "POST / HTTP/1.1\r\nHost: known.example\r\nContent-Length : 5\r\n\r\nhello",
        ),
        (
            "invalid character in a header name",
            "GET / HTTP/1.1\r\nHost: known.example\r\nX-Foo@: 1\r\n\r\n",
        ),
        (
            "header line without a colon",
            "GET / HTTP/1.1\r\nHost: known.example\r\nno-colon-here\r\n\r\n",
        ),
        (
            "bare CR in a header value",
            "GET / HTTP/1.1\r\nHost: known.example\r\nX-Foo: a\rb\r\n\r\n",
        ),
        (
            "NUL in a header value",
            "GET / HTTP/1.1\r\nHost: known.example\r\nX-Foo: a\0b\r\n\r\n",
        ),
        (
            "garbage request line",
            "GET / HTTP/1.1 extra\r\nHost: known.example\r\n\r\n",
        ),
    ];
    for (what, head) in cases {
        expect_rejected(&proxy, &origin, what, head).await;
    }
    assert_nothing_smuggled(&origin);
    assert_eq!(origin.hits(), 0);
}

/// A bare LF may be taken as a line end (RFC 9112 §2.2) or rejected. What must not happen is a
/// disagreement: the origin gets exactly the one request levee parsed, re-framed with CRLF,
/// with no header value carrying a raw LF, and nothing hidden behind it.
#[tokio::test]
async fn bare_lf_in_headers_is_rejected_or_parsed_consistently() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(
        "GET /lf HTTP/1.1\r\nHost: known.example\r\nX-A: one\nX-B: two\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = c.read_response().await.expect("a response");
    assert_closed_without_second_response(&mut c).await;
    match r.status {
        400 => assert_eq!(origin.hits(), 0),
        200 => {
            assert_eq!(origin.hits(), 1);
            let seen = origin.last().unwrap();
            assert_eq!(seen.path, "/lf");
            assert_eq!(seen.headers["x-a"], "one");
            assert_eq!(seen.headers["x-b"], "two");
            for (name, value) in &seen.headers {
                assert!(
                    !value.as_bytes().contains(&b'\n') && !value.as_bytes().contains(&b'\r'),
                    "{name} carries a raw line break: {value:?}"
                );
            }
        }
        s => panic!("unexpected status {s}: {r:?}"),
    }
    assert_nothing_smuggled(&origin);
}

/// Header sections over `max_header_bytes` (but within hyper's buffer) get levee's own 431.
/// Beyond hyper's ceiling, hyper answers 431 itself; the process keeps serving either way.
#[tokio::test]
async fn oversized_header_section_is_431() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "max_header_bytes = 4096", "")).await;
    let big = "a".repeat(6000);
    let r = exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: known.example\r\nX-Big: {big}\r\n\r\n"),
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(r.error_kind(), "headers_too_large");

    // Several smaller fields adding up past the limit count too.
    let many: String = (0..8)
        .map(|i| format!("X-Part-{i}: {}\r\n", "b".repeat(700)))
        .collect();
    let r = exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: known.example\r\n{many}\r\n"),
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(r.error_kind(), "headers_too_large");

    // Far beyond: hyper refuses before levee sees it.
    let huge = "c".repeat(64 * 1024);
    let mut c = RawConn::connect(proxy.addr).await;
    let _ = c
        .try_send(format!(
            "GET / HTTP/1.1\r\nHost: known.example\r\nX-Huge: {huge}\r\n\r\n"
        ))
        .await;
    if let Some(r) = c.read_response().await {
        assert_eq!(r.status, 431, "{r:?}");
    }
    let (_, _) = c.read_to_close().await;

    // Just under the limit is fine.
    let ok = "d".repeat(3000);
    let r = exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: known.example\r\nX-Ok: {ok}\r\n\r\n"),
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn too_many_header_fields_closes_the_connection() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "max_headers = 10", "")).await;
    let fields: String = (0..30).map(|i| format!("X-F{i}: {i}\r\n")).collect();
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(format!(
        "GET / HTTP/1.1\r\nHost: known.example\r\n{fields}\r\n{SMUGGLED}"
    ))
    .await;
    let r = c.read_response().await.expect("a response");
    assert!(r.status == 431 || r.status == 400, "{r:?}");
    assert_closed_without_second_response(&mut c).await;
    assert_eq!(origin.hits(), 0);

    // The process is fine: a normal request on a new connection is served.
    let r = exchange(proxy.addr, "GET / HTTP/1.1\r\nHost: known.example\r\n\r\n")
        .await
        .expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(origin.hits(), 1);
}

/// A client that sends part of a request line and stalls is cut off after
/// `header_read_timeout`; meanwhile everyone else is served.
#[tokio::test]
async fn slowloris_is_cut_off() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "header_read_timeout = \"300ms\"", "")).await;
    let mut slow = RawConn::connect(proxy.addr).await;
    slow.send("GET / HT").await;

    let r = Client::new()
        .request(
            http::Method::GET,
            &proxy.url("/"),
            &[("host", "known.example")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);

    // Bounded by the raw reader's limit (10s), far above the 300ms timeout.
    let (bytes, how) = slow.read_to_close().await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(" 200 "),
        "the stalled request was answered: {text:?}"
    );
    assert!(matches!(how, Closed::Eof | Closed::Error));
    assert_eq!(origin.hits(), 1);
}

/// With `max_connections = 2` and two idle keep-alive connections open, a third is closed at
/// once; when one of the two goes away, new connections are served again.
#[tokio::test]
async fn max_connections_closes_extra_connections() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "max_connections = 2", "")).await;
    let get = "GET / HTTP/1.1\r\nHost: known.example\r\n\r\n";
    let mut first = RawConn::connect(proxy.addr).await;
    first.send(get).await;
    assert_eq!(
        first.read_response().await.expect("first served").status,
        200
    );
    let mut second = RawConn::connect(proxy.addr).await;
    second.send(get).await;
    assert_eq!(
        second.read_response().await.expect("second served").status,
        200
    );

    let mut third = RawConn::connect(proxy.addr).await;
    let _ = third.try_send(get).await;
    assert!(
        third.read_response().await.is_none(),
        "a third connection was served"
    );
    assert_eq!(origin.hits(), 2);

    // The two are still alive and keep-alive still works on them.
    second.send(get).await;
    assert_eq!(second.read_response().await.expect("reuse").status, 200);

    drop(first);
    eventually(
        "a new connection is served after one closed",
        Duration::from_secs(10),
        || async {
            let mut c = RawConn::connect(proxy.addr).await;
            if c.try_send(get).await.is_err() {
                return false;
            }
            matches!(c.read_response().await, Some(r) if r.status == 200)
        },
    )
    .await;
}

#[tokio::test]
async fn connect_is_405() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    let r = exchange(
        proxy.addr,
        "CONNECT known.example:443 HTTP/1.1\r\nHost: known.example:443\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.error_kind(), "method_not_allowed");
    assert_eq!(origin.hits(), 0);
}

/// In absolute form the request target's authority decides the route, not the Host header:
/// an unknown host is 404 even when Host names a routed one.
#[tokio::test]
async fn absolute_form_routes_by_target_authority() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "")).await;
    for host in ["unknown.example", "known.example"] {
        let r = exchange(
            proxy.addr,
            format!("GET http://unknown.example/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await
        .expect("a response");
        assert_eq!(r.status, 404, "Host: {host}: {r:?}");
        assert_eq!(r.error_kind(), "no_route");
    }
    assert_eq!(origin.hits(), 0);

    // Absolute form itself works for a routed host.
    let r = exchange(
        proxy.addr,
        "GET http://known.example/abs?q=1 HTTP/1.1\r\nHost: known.example\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.hits(), 1);
    assert_eq!(origin.last().unwrap().path, "/abs?q=1");
}

const LIMIT_ONE: &str = "[route.rate_limit]\nrps = 0.05\nburst = 1\nkey = \"client_ip\"";

async fn get_with_xff(proxy: &TestProxy, xff: &str) -> Reply {
    Client::new()
        .request(
            http::Method::GET,
            &proxy.url("/"),
            &[("host", "known.example"), ("x-forwarded-for", xff)],
            "",
        )
        .await
}

/// Without `trusted_proxies` a client-sent x-forwarded-for does not change the rate-limit key:
/// it keys on the peer, so changing the header buys nothing.
#[tokio::test]
async fn spoofed_forwarded_for_does_not_escape_rate_limit() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", LIMIT_ONE)).await;
    let r = get_with_xff(&proxy, "198.51.100.1").await;
    assert_eq!(r.status, 200);
    let r = get_with_xff(&proxy, "198.51.100.2").await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.error_kind(), "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(origin.hits(), 1);
}

/// From a trusted proxy network the x-forwarded-for client is the key: different clients have
/// their own buckets, and the same client is still limited.
#[tokio::test]
async fn trusted_proxy_forwarded_for_is_the_rate_limit_key() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(
        origin.addr,
        "trusted_proxies = [\"127.0.0.0/8\"]",
        LIMIT_ONE,
    ))
    .await;
    let r = get_with_xff(&proxy, "198.51.100.1").await;
    assert_eq!(r.status, 200);
    let r = get_with_xff(&proxy, "198.51.100.2").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get_with_xff(&proxy, "198.51.100.1").await;
    assert_eq!(
        r.status, 429,
        "the same forwarded client must still be limited"
    );
    assert_eq!(r.error_kind(), "rate_limited");
    assert_eq!(origin.hits(), 2);
}

/// `max_body`: a declared Content-Length over it is refused up front; a chunked body that
/// grows past it is cut off and never reaches the origin whole.
#[tokio::test]
async fn body_over_max_body_is_413() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "max_body = 1024")).await;

    let body = "x".repeat(2048);
    let r = exchange(
        proxy.addr,
        format!("POST /cl HTTP/1.1\r\nHost: known.example\r\nContent-Length: 2048\r\n\r\n{body}"),
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error_kind(), "body_too_large");
    assert_eq!(origin.hits(), 0);

    let chunk = "y".repeat(512);
    let chunked: String = (0..4).map(|_| format!("200\r\n{chunk}\r\n")).collect();
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(format!(
        "POST /chunked HTTP/1.1\r\nHost: known.example\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}0\r\n\r\n"
    ))
    .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error_kind(), "body_too_large");
    for seen in origin.seen() {
        assert!(
            seen.body_len <= 1024,
            "the origin received {} bytes of a body over max_body",
            seen.body_len
        );
    }

    // Within the limit, chunked or not, bodies pass whole.
    let small: String = (0..2).map(|_| format!("200\r\n{chunk}\r\n")).collect();
    let r = exchange(
        proxy.addr,
        format!(
            "POST /ok HTTP/1.1\r\nHost: known.example\r\nTransfer-Encoding: chunked\r\n\r\n{small}0\r\n\r\n"
        ),
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.last().unwrap();
    assert_eq!(seen.path, "/ok");
    assert_eq!(seen.body_len, 1024);
}

/// When levee answers without reading a declared body (413, 404), the unread body must never be
/// parsed as the next request on the connection: it is drained or the connection is closed.
#[tokio::test]
async fn unread_body_of_a_refused_request_is_not_parsed_as_a_request() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&config(origin.addr, "", "max_body = 1024")).await;
    let mut body = SMUGGLED.to_string();
    body.push_str(&"z".repeat(2048 - body.len()));
    let heads = [
        ("413", "POST /big HTTP/1.1\r\nHost: known.example\r\n"),
        ("404", "POST /x HTTP/1.1\r\nHost: unknown.example\r\n"),
    ];
    for (what, head) in heads {
        let before = origin.hits();
        let mut c = RawConn::connect(proxy.addr).await;
        c.send(format!(
            "{head}Content-Length: 2048\r\n\r\n{body}GET /second HTTP/1.1\r\nHost: known.example\r\n\r\n"
        ))
        .await;
        let r = c.read_response().await.expect("a response");
        assert_eq!(r.status.to_string(), what, "{r:?}");
        // Either the connection closes, or the next request parsed is the real second one.
        if let Some(r2) = c.read_response().await {
            assert_eq!(r2.status, 200, "{what}: {r2:?}");
            assert_eq!(origin.hits(), before + 1);
            assert_eq!(origin.last().unwrap().path, "/second");
        } else {
            assert_eq!(origin.hits(), before);
        }
    }
    assert_nothing_smuggled(&origin);
}
