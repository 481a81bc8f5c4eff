//! Message framing as real clients and servers produce it: upstream response header limits, an
//! HTTP/2 body ended by a separate empty DATA frame (httpx), request bodies on any method,
//! HTTP/1.0 upstreams behind HTTP/1.1 clients.

use crate::support::client::Client;
use crate::support::origin::Origin;
use crate::support::proxy::{simple_config, TestProxy};
use crate::support::raw::{RawConn, RawOrigin};
use bytes::Bytes;
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A response with `n` `set-cookie` fields (plus `content-length`), leaked for `RawOrigin`.
fn response_with_cookies(n: usize) -> &'static [u8] {
    let mut r = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
    for i in 0..n {
        r.push_str(&format!(
            "set-cookie: session{i}=v{i}; Path=/; HttpOnly\r\n"
        ));
    }
    r.push_str("\r\nok");
    Box::leak(r.into_bytes().into_boxed_slice())
}

/// A client that takes responses with many header fields (hyper's default stops at 100).
async fn fetch(method: Method, url: &str, body: &'static str) -> crate::support::Reply {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http1_max_headers(1000)
        .build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let (parts, body) = client.request(req).await.unwrap().into_parts();
    crate::support::Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// GET goes through levee's own HTTP/1 client; a POST with a body streams through hyper's.
async fn get_and_post(proxy: &TestProxy) -> [crate::support::Reply; 2] {
    [
        fetch(Method::GET, &proxy.url("/"), "").await,
        fetch(Method::POST, &proxy.url("/"), "a body").await,
    ]
}

#[tokio::test]
async fn a_response_with_150_header_fields_passes_by_default() {
    let origin = RawOrigin::start(response_with_cookies(149)).await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    for r in get_and_post(&proxy).await {
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
        assert_eq!(r.headers.get_all("set-cookie").iter().count(), 149);
    }
}

#[tokio::test]
async fn responses_beyond_the_header_limits_are_upstream_protocol_and_trip_nothing() {
    // Outlier detection that ejects any endpoint after two failures in a row (the breaker
    // kept out of the way), then a breaker that opens after two: an oversized response must
    // count for neither.
    let outlier = "[upstream.circuit_breaker]\nminimum_calls = 1000000\n\
                   [upstream.outlier_detection]\nconsecutive_failures = 2\nmax_ejection_percent = 100\n";
    let breaker = "[upstream.circuit_breaker]\nconsecutive_failures = 2\n";
    let first = RawOrigin::start(response_with_cookies(250)).await;
    let second = RawOrigin::start(response_with_cookies(250)).await;
    let proxy = TestProxy::start(&simple_config(&[first.addr, second.addr], "", outlier)).await;
    for _ in 0..4 {
        for r in get_and_post(&proxy).await {
            assert_eq!(
                (r.status.as_u16(), r.error_kind()),
                (502, "upstream_protocol"),
                "{}",
                r.text()
            );
        }
    }

    // Configured limits, lower than the defaults: a count, then a size.
    let origin = RawOrigin::start(response_with_cookies(30)).await;
    let limits = format!("max_response_headers = 20\n{breaker}");
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", &limits)).await;
    for _ in 0..3 {
        for r in get_and_post(&proxy).await {
            assert_eq!(
                (r.status.as_u16(), r.error_kind()),
                (502, "upstream_protocol")
            );
        }
    }
    let big = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-big: {}\r\n\r\nok",
        "b".repeat(3000)
    );
    let origin = RawOrigin::start(Box::leak(big.into_bytes().into_boxed_slice())).await;
    let limits = format!("max_response_header_bytes = \"2KiB\"\n{breaker}");
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", &limits)).await;
    for _ in 0..3 {
        for r in get_and_post(&proxy).await {
            assert_eq!(
                (r.status.as_u16(), r.error_kind()),
                (502, "upstream_protocol")
            );
        }
    }
    // Default limits, a head far beyond them (and beyond hyper's own read buffer).
    let huge = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-huge: {}\r\n\r\nok",
        "h".repeat(500 * 1024)
    );
    let origin = RawOrigin::start(Box::leak(huge.into_bytes().into_boxed_slice())).await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", breaker)).await;
    for _ in 0..3 {
        for r in get_and_post(&proxy).await {
            assert_eq!(
                (r.status.as_u16(), r.error_kind()),
                (502, "upstream_protocol")
            );
        }
    }
    // Just within a configured limit, a response passes.
    let origin = RawOrigin::start(response_with_cookies(19)).await;
    let limits = format!("max_response_headers = 20\n{breaker}");
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", &limits)).await;
    for r in get_and_post(&proxy).await {
        assert_eq!(r.status.as_u16(), 200);
    }
}

/// An HTTP/2 origin (hyper's server) answering with `fields` set-cookie fields and, when
/// `big` is not 0, an `x-big` field of that many bytes.
async fn h2_origin(fields: usize, big: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    for i in 0..fields {
                        resp.headers_mut().append(
                            "set-cookie",
                            format!("session{i}=v{i}; Path=/").parse().unwrap(),
                        );
                    }
                    if big > 0 {
                        resp.headers_mut()
                            .insert("x-big", "b".repeat(big).parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http2_upstreams_apply_the_same_header_limits() {
    let breaker = "protocol = \"h2\"\n[upstream.circuit_breaker]\nconsecutive_failures = 2\n";
    let ok = h2_origin(150, 0).await;
    let proxy = TestProxy::start(&simple_config(&[ok], "", breaker)).await;
    let r = fetch(Method::GET, &proxy.url("/"), "").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(r.headers.get_all("set-cookie").iter().count(), 150);

    let too_many = h2_origin(250, 0).await;
    let proxy = TestProxy::start(&simple_config(&[too_many], "", breaker)).await;
    for _ in 0..4 {
        let r = Client::new().get(&proxy.url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error_kind()),
            (502, "upstream_protocol")
        );
    }

    // Over the byte limit (but within the 4x advertised to the upstream).
    let too_big = h2_origin(0, 3000).await;
    let limits = format!("max_response_header_bytes = \"2KiB\"\n{breaker}");
    let proxy = TestProxy::start(&simple_config(&[too_big], "", &limits)).await;
    for _ in 0..4 {
        let r = Client::new().get(&proxy.url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error_kind()),
            (502, "upstream_protocol")
        );
    }
}

/// One POST the way httpx sends it over HTTP/2: HEADERS with `content-length`, the body in a
/// DATA frame, and END_STREAM in a separate empty DATA frame a little later. Returns the
/// response body; panics if levee reset the stream at any point.
async fn httpx_style_post(mut client: h2::client::SendRequest<Bytes>, uri: String) -> Bytes {
    let req = Request::post(uri)
        .header("content-length", "5")
        .body(())
        .unwrap();
    client = client.ready().await.unwrap();
    let (response, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"hello"), false).unwrap();
    // levee has the whole declared body: the upstream answers before the client's END_STREAM.
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut recv = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("response body");
        let _ = recv.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    // Long enough for a RST_STREAM sent after the response to arrive before END_STREAM goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    body.send_data(Bytes::new(), true)
        .expect("the stream was reset before the client ended its body");
    let reset = tokio::time::timeout(
        Duration::from_millis(100),
        std::future::poll_fn(|cx| body.poll_reset(cx)),
    )
    .await;
    assert!(reset.is_err(), "levee reset the stream: {reset:?}");
    Bytes::from(got)
}

#[tokio::test]
async fn http2_bodies_ended_by_a_separate_empty_frame_never_see_a_reset() {
    let origin = Origin::new().body("answered").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let uri = format!("http://{}/upload/{i}", proxy.addr);
        calls.spawn(httpx_style_post(client.clone(), uri));
    }
    let mut answered = 0;
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.expect("a POST failed"), "answered");
        answered += 1;
    }
    assert_eq!(answered, 50);
    assert_eq!(origin.hits(), 50);
    assert!(origin.seen().iter().all(|s| s.body_len == 5));
}

#[tokio::test]
async fn levees_own_answers_to_http2_posts_end_the_stream_cleanly_too() {
    // No route for this host: levee answers 404 without reading the body.
    let origin = Origin::new().start().await;
    let config = simple_config(&[origin.addr], "host = \"only.example\"", "");
    let proxy = TestProxy::start(&config).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = Request::post(format!("http://{}/x", proxy.addr))
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"hello"), false).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 404);
    tokio::time::sleep(Duration::from_millis(100)).await;
    body.send_data(Bytes::new(), true)
        .expect("the stream was reset before the client ended its body");
}

#[tokio::test]
async fn a_get_with_a_chunked_body_reaches_the_origin() {
    let origin = Origin::new().start().await;
    // Without retries the body streams through hyper's client; with them a small body would be
    // buffered for levee's own client, but a chunked one has no declared size and streams too.
    for route_extra in ["", "[route.retry]\nattempts = 2\n"] {
        let proxy = TestProxy::start(&simple_config(&[origin.addr], route_extra, "")).await;
        let mut conn = RawConn::connect(proxy.addr).await;
        conn.send(
            "GET /search HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
        let r = conn.read_response().await.expect("a response");
        assert_eq!(r.status, 200);
        let seen = origin.last().unwrap();
        assert_eq!(
            (seen.method, seen.body_len),
            (Method::GET, 11),
            "{route_extra}"
        );
        // The connection is still in step: a second request on it is answered.
        conn.send("GET /again HTTP/1.1\r\nhost: app\r\n\r\n").await;
        assert_eq!(conn.read_response().await.unwrap().status, 200);
        assert_eq!(origin.last().unwrap().path, "/again");
    }
}

#[tokio::test]
async fn a_get_with_a_declared_body_reaches_the_origin_through_either_client() {
    let origin = Origin::new().start().await;
    // With retries the body is buffered and levee's own client sends it; without, hyper's.
    for route_extra in ["", "[route.retry]\nattempts = 2\n"] {
        let proxy = TestProxy::start(&simple_config(&[origin.addr], route_extra, "")).await;
        let r = Client::new()
            .request(Method::GET, &proxy.url("/q"), &[], "{\"query\":1}")
            .await;
        assert_eq!(r.status, 200);
        let seen = origin.last().unwrap();
        assert_eq!(
            (seen.method, seen.body_len),
            (Method::GET, 11),
            "{route_extra}"
        );
    }
}

#[tokio::test]
async fn an_http2_get_with_a_body_of_unknown_length_reaches_an_http1_origin() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = Request::get(format!("http://{}/h2", proxy.addr))
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"abc"), false).unwrap();
    body.send_data(Bytes::from_static(b"defg"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let seen = origin.last().unwrap();
    assert_eq!((seen.method, seen.body_len), (Method::GET, 7));
}

/// An origin that speaks HTTP/1.0: it reads a request (head and `content-length` body), writes
/// `response` and closes the connection.
async fn http10_origin(response: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Two requests on one HTTP/1.1 connection through levee (hyper's client connection, so a
/// close after the first is seen). Returns both responses' versions, headers and bodies.
async fn two_requests_on_one_connection(
    proxy: &TestProxy,
    method: Method,
) -> Vec<(Version, http::HeaderMap, Bytes)> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut out = Vec::new();
    for i in 0..2 {
        sender.ready().await.expect("the connection was closed");
        let body = if method == Method::POST { "data" } else { "" };
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("/old/{i}"))
            .header("host", "app")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        out.push((parts.version, parts.headers, body));
    }
    assert!(!conn.is_finished(), "levee closed the client connection");
    out
}

#[tokio::test]
async fn an_http10_upstream_is_reframed_for_http11_clients() {
    for (response, framing) in [
        (
            &b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close"[..],
            "transfer-encoding",
        ),
        (
            &b"HTTP/1.0 200 OK\r\ncontent-length: 11\r\n\r\nuntil close"[..],
            "content-length",
        ),
    ] {
        let origin = http10_origin(response).await;
        let proxy = TestProxy::start(&simple_config(&[origin], "", "")).await;
        // GET: levee's own client; POST with a body: hyper's.
        for method in [Method::GET, Method::POST] {
            for (version, headers, body) in two_requests_on_one_connection(&proxy, method).await {
                assert_eq!(version, Version::HTTP_11);
                assert_eq!(body, "until close");
                assert!(headers.contains_key(framing), "{headers:?}");
                assert!(!headers.contains_key("connection"), "{headers:?}");
            }
        }
    }
}
