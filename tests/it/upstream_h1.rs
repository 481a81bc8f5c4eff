//! levee's own HTTP/1.1 client (bodiless and buffered requests to plain-TCP upstreams): framing
//! of every kind of response body, interim responses, connection reuse, and refusal of
//! responses whose framing cannot be trusted.

use crate::support::client::Client;
use crate::support::origin::{Behaviour, Origin};
use crate::support::proxy::{simple_config, TestProxy};
use crate::support::raw::RawOrigin;
use http::Method;

async fn proxy_to(addr: std::net::SocketAddr) -> TestProxy {
    TestProxy::start(&simple_config(&[addr], "", "")).await
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let origin = Origin::new().body("pooled").start().await;
    let proxy = proxy_to(origin.addr).await;
    let client = Client::new();
    for _ in 0..20 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "pooled"));
    }
    assert_eq!(origin.connections(), 1);
    let status: serde_json::Value =
        serde_json::from_str(&crate::support::scrape::get_text(&proxy.admin_url("/status")).await)
            .unwrap();
    assert_eq!(
        status["upstreams"][0]["endpoints"][0]["idle_connections"], 1,
        "{status}"
    );
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_the_connection_reused() {
    let origin = RawOrigin::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
    )
    .await;
    let proxy = proxy_to(origin.addr).await;
    let client = Client::new();
    for _ in 0..3 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "hello, world")
        );
    }
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn bodies_ended_by_close_are_read_to_the_end_and_not_reused() {
    let origin = RawOrigin::start_with(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close",
        true,
    )
    .await;
    let proxy = proxy_to(origin.addr).await;
    let client = Client::new();
    for _ in 0..2 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "until close"));
    }
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let origin = RawOrigin::start(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
          HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let proxy = proxy_to(origin.addr).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (201, "ok"));
    assert!(!r.headers.contains_key("link"));
}

#[tokio::test]
async fn responses_with_untrustworthy_framing_are_refused() {
    for response in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        b"not http at all\r\n\r\n",
    ] {
        let origin = RawOrigin::start(response).await;
        let proxy = proxy_to(origin.addr).await;
        let r = Client::new().get(&proxy.url("/")).await;
        assert_eq!(
            (r.status.as_u16(), r.error_kind()),
            (502, "upstream_reset"),
            "{}",
            String::from_utf8_lossy(response)
        );
    }
}

#[tokio::test]
async fn both_transfer_encoding_and_length_never_reach_the_client_together() {
    let origin = RawOrigin::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let proxy = proxy_to(origin.addr).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_ne!(
        r.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"100"[..])
    );
}

#[tokio::test]
async fn head_answers_keep_their_length_and_carry_no_body() {
    let origin = Origin::new().body("twelve bytes").start().await;
    let proxy = proxy_to(origin.addr).await;
    let client = Client::new();
    let head = client.request(Method::HEAD, &proxy.url("/"), &[], "").await;
    assert_eq!(head.status.as_u16(), 200);
    assert_eq!(head.headers.get("content-length").unwrap(), "12");
    assert!(head.body.is_empty());
    let get = client.get(&proxy.url("/")).await;
    assert_eq!(get.text(), "twelve bytes");
    assert_eq!(
        origin.connections(),
        1,
        "the HEAD left the connection reusable"
    );
}

#[tokio::test]
async fn large_bodies_arrive_intact() {
    let big: &'static str = Box::leak(
        (0..(1 << 20))
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect::<String>()
            .into_boxed_str(),
    );
    let origin = Origin::new().body(big).start().await;
    let proxy = proxy_to(origin.addr).await;
    let client = Client::new();
    for _ in 0..2 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status.as_u16(), 200);
        assert!(
            r.body == big.as_bytes(),
            "body differs ({} bytes)",
            r.body.len()
        );
    }
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn buffered_bodies_go_out_with_their_length() {
    let origin = Origin::new().behaviour(Behaviour::Echo).start().await;
    let config = simple_config(&[origin.addr], "[route.retry]\nattempts = 2", "");
    let proxy = TestProxy::start(&config).await;
    let r = Client::new()
        .request(Method::PUT, &proxy.url("/doc"), &[], "replayable")
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "replayable"));
    let seen = origin.last().unwrap();
    assert_eq!(seen.headers.get("content-length").unwrap(), "10");
    assert!(seen.headers.get("transfer-encoding").is_none());
}

#[tokio::test]
async fn an_http10_request_without_host_reaches_the_upstream_with_one() {
    let origin = Origin::new().body("ok").start().await;
    let proxy = proxy_to(origin.addr).await;
    let mut c = crate::support::raw::RawConn::connect(proxy.addr).await;
    c.send("GET /old HTTP/1.0\r\n\r\n").await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.last().unwrap();
    assert_eq!(
        seen.headers.get("host").unwrap().to_str().unwrap(),
        origin.addr.to_string()
    );
}
