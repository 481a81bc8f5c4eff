//! Forwarding basics: routing, headers, streaming, upgrades, errors the proxy makes itself, and
//! the `check` and `demo` commands through the real binary.

use crate::support::origin::dead_addr;
use crate::support::proxy::simple_config;
use crate::support::raw::{RawConn, RawOrigin};
use crate::support::*;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::test]
async fn get_passes_through() {
    let origin = Origin::new().body("hello").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = Client::new().get(&proxy.url("/x?y=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello");
    assert_eq!(r.error_kind(), "");
    let seen = origin.last().unwrap();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, "/x?y=1");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn no_route_is_404_with_kind() {
    let origin = Origin::new().start().await;
    let cfg = simple_config(&[origin.addr], "host = \"only.example\"", "");
    let proxy = TestProxy::start(&cfg).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_kind(), "no_route");
    assert_eq!(origin.hits(), 0);
}

/// Deterministic pseudo-random bytes (xorshift), so a reordering or a dropped chunk shows.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// FNV-1a, fed incrementally.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A request body fed from a channel: the test decides when each chunk leaves.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A 20 MB POST to an echoing origin. The response head and the first echoed bytes must come
/// back while most of the request body is still unsent: levee buffers neither direction.
#[tokio::test]
async fn large_post_streams_both_ways() {
    const TOTAL: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let origin = Origin::new().behaviour(Behaviour::Echo).start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;

    let data = Bytes::from(payload(TOTAL, 0x5eed));
    let mut sent_sum = Fnv::new();
    sent_sum.update(&data);

    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = ChanBody(rx);
    let req = Request::post("/echo")
        .header("host", "stream.example")
        .header("content-length", TOTAL.to_string())
        .body(body)
        .unwrap();
    let response = sender.send_request(req);
    tx.send(data.slice(..CHUNK)).await.unwrap();

    // Only one chunk of twenty megabytes has been sent: the answer must already be flowing.
    let resp = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no response head while the request body was still streaming")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "1");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < CHUNK {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("first chunk not echoed while the request body was still streaming")
            .expect("echo ended early")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    assert_eq!(&got[..], &data[..got.len()]);

    let rest = data.slice(CHUNK..);
    let writer = tokio::spawn(async move {
        let mut off = 0;
        while off < rest.len() {
            let end = (off + CHUNK).min(rest.len());
            tx.send(rest.slice(off..end)).await.unwrap();
            off = end;
        }
    });
    let mut echo_sum = Fnv::new();
    echo_sum.update(&got);
    let mut echo_len = got.len();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            echo_sum.update(&d);
            echo_len += d.len();
        }
    }
    writer.await.unwrap();
    assert_eq!(echo_len, TOTAL);
    assert_eq!(
        echo_sum.0, sent_sum.0,
        "echoed body differs from the one sent"
    );
    assert_eq!(origin.hits(), 1);
}

/// Several hosts and prefixes, each to its own origin: the most specific host wins, then the
/// longest prefix within it; an unknown host matches nothing (no catch-all is configured).
#[tokio::test]
async fn routes_by_host_then_longest_prefix() {
    let exact = Origin::new().body("exact").start().await;
    let exact_v2 = Origin::new().body("exact-v2").start().await;
    let exact_v2_admin = Origin::new().body("exact-v2-admin").start().await;
    let wild = Origin::new().body("wild").start().await;
    let deep = Origin::new().body("deep").start().await;
    let cfg = format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "wild"
host = "*.example"
upstream = "wild"

[[route]]
name = "exact-v2-admin"
host = "api.example"
path_prefix = "/v2/admin"
upstream = "exact-v2-admin"

[[route]]
name = "exact"
host = "api.example"
path_prefix = "/"
upstream = "exact"

[[route]]
name = "exact-v2"
host = "api.example"
path_prefix = "/v2"
upstream = "exact-v2"

[[route]]
name = "deep"
host = "*.deep.example"
upstream = "deep"

[[upstream]]
name = "exact"
endpoints = ["{}"]
[[upstream]]
name = "exact-v2"
endpoints = ["{}"]
[[upstream]]
name = "exact-v2-admin"
endpoints = ["{}"]
[[upstream]]
name = "wild"
endpoints = ["{}"]
[[upstream]]
name = "deep"
endpoints = ["{}"]
"#,
        exact.addr, exact_v2.addr, exact_v2_admin.addr, wild.addr, deep.addr
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let cases = [
        ("api.example", "/", "exact"),
        ("API.Example:8080", "/users", "exact"),
        ("api.example", "/v2", "exact-v2"),
        ("api.example", "/v2/items?x=1", "exact-v2"),
        ("api.example", "/v2/admin/x", "exact-v2-admin"),
        ("api.example", "/v3", "exact"),
        ("www.example", "/v2", "wild"),
        ("a.b.example", "/", "wild"),
        ("x.deep.example", "/", "deep"),
        ("deeper.x.deep.example", "/v2", "deep"),
    ];
    for (host, path, want) in cases {
        let r = client
            .request(Method::GET, &proxy.url(path), &[("host", host)], "")
            .await;
        assert_eq!(r.status, 200, "{host}{path}");
        assert_eq!(r.text(), want, "{host}{path} went to the wrong origin");
    }
    assert_eq!(exact.hits(), 3);
    assert_eq!(exact_v2.hits(), 2);
    assert_eq!(exact_v2_admin.hits(), 1);
    assert_eq!(wild.hits(), 2);
    assert_eq!(deep.hits(), 2);
    assert_eq!(exact_v2.last().unwrap().path, "/v2/items?x=1");

    for host in ["other.test", "example.org", "api.example.com"] {
        let r = client
            .request(Method::GET, &proxy.url("/"), &[("host", host)], "")
            .await;
        assert_eq!(r.status, 404, "{host}");
        assert_eq!(r.error_kind(), "no_route", "{host}");
    }
    let total = exact.hits() + exact_v2.hits() + exact_v2_admin.hits() + wild.hits() + deep.hits();
    assert_eq!(total, 10, "an unrouted request reached an origin");
}

/// Forwarding headers are added (a client's own x-forwarded-for kept and the peer appended;
/// its x-forwarded-proto/-host not believed) and hop-by-hop headers never reach the origin.
#[tokio::test]
async fn forwarding_headers_added_and_hop_by_hop_stripped_towards_origin() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(
        "GET /h HTTP/1.1\r\n\
         Host: front.example\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\n\
         Connection: x-custom, keep-alive\r\n\
         x-custom: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Connection: keep-alive\r\n\
         x-kept: yes\r\n\
         \r\n",
    )
    .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200);

    let seen = origin.last().unwrap();
    let h = &seen.headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "front.example");
    assert_eq!(h["host"], "front.example");
    let via = h["via"].to_str().unwrap();
    assert!(via.contains("levee"), "via = {via:?}");
    assert_eq!(h["x-kept"], "yes");
    for gone in ["x-custom", "keep-alive", "te", "proxy-connection"] {
        assert!(!h.contains_key(gone), "{gone} reached the origin: {h:?}");
    }
    for v in h.get_all("connection") {
        let v = v.to_str().unwrap().to_ascii_lowercase();
        assert!(!v.contains("x-custom"), "connection: {v}");
    }
}

/// The same over HTTP/1.1 from a normal client, through two hops of x-forwarded-for.
#[tokio::test]
async fn forwarded_for_appends_to_a_list() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = Client::new()
        .request(
            Method::GET,
            &proxy.url("/"),
            &[
                ("x-forwarded-for", "198.51.100.1, 198.51.100.2"),
                ("via", "1.1 edge"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let h = origin.last().unwrap().headers;
    assert_eq!(
        h["x-forwarded-for"],
        "198.51.100.1, 198.51.100.2, 127.0.0.1"
    );
    let via = h["via"].to_str().unwrap();
    assert!(via.starts_with("1.1 edge, "), "via = {via:?}");
    assert!(via.contains("levee"), "via = {via:?}");
}

/// Hop-by-hop headers in the origin's response never reach the client.
#[tokio::test]
async fn hop_by_hop_stripped_from_responses() {
    let origin = RawOrigin::start(
        b"HTTP/1.1 200 OK\r\n\
          Connection: x-resp\r\n\
          x-resp: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          x-kept: yes\r\n\
          Content-Length: 2\r\n\
          \r\n\
          ok",
    )
    .await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    c.send("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for gone in ["x-resp", "keep-alive", "proxy-connection"] {
        assert!(!r.has_header(gone), "{gone} reached the client: {r:?}");
    }
    if let Some(v) = r.header("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-resp"),
            "connection: {v}"
        );
    }
}

#[tokio::test]
async fn dead_endpoint_is_502_upstream_connect() {
    let dead = dead_addr().await;
    let proxy = TestProxy::start(&simple_config(&[dead], "", "")).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_kind(), "upstream_connect");
}

#[tokio::test]
async fn resetting_origin_is_502_upstream_reset() {
    let origin = Origin::new().behaviour(Behaviour::Reset).start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = Client::new()
        .request(Method::POST, &proxy.url("/submit"), &[], "payload")
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_kind(), "upstream_reset");
    assert_eq!(origin.hits(), 1, "a POST must not be retried");
}

#[tokio::test]
async fn slow_origin_is_504_upstream_timeout() {
    let origin = Origin::new().delay(Duration::from_secs(30)).start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "timeout = \"200ms\"", "")).await;
    let r = Client::new().get(&proxy.url("/")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.error_kind(), "upstream_timeout");
    assert!(origin.hits() <= 1, "a timed-out request was retried");
}

#[tokio::test]
async fn http2_prior_knowledge_client() {
    let origin = Origin::new().body("over h2").start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let client = Client::h2();
    for i in 0..3 {
        let r = client.get(&proxy.url(&format!("/h2/{i}"))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "over h2");
    }
    let r = client
        .request(Method::POST, &proxy.url("/h2/post"), &[], "h2 body")
        .await;
    assert_eq!(r.status, 200);
    let seen = origin.last().unwrap();
    assert_eq!(seen.path, "/h2/post");
    assert_eq!(seen.body_len, 7);
    let via = seen.headers["via"].to_str().unwrap();
    assert!(via.contains("2 levee"), "via = {via:?}");
    assert_eq!(origin.hits(), 4);
}

/// A WebSocket upgrade is tunnelled: 101 comes back, then raw bytes flow both ways.
#[tokio::test]
async fn upgrade_is_tunnelled() {
    let origin = Origin::new()
        .behaviour(Behaviour::UpgradeEcho)
        .start()
        .await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    c.send(
        "GET /ws HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("echo"));
    for msg in ["ping through levee", "second frame \u{1F30A}"] {
        c.send(msg).await;
        let back = c.read_exact(msg.len()).await;
        assert_eq!(back, msg.as_bytes());
    }
    let seen = origin.last().unwrap();
    assert_eq!(seen.headers["upgrade"], "websocket");
}

// --- levee check, through the real binary -------------------------------------------------------

fn levee_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
}

/// Runs `levee check` on `text`; returns (exit code, stdout, stderr, the file's path).
fn check(text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levee.toml");
    std::fs::write(&path, text).unwrap();
    let out = levee_bin()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

/// The stderr line for `file:line:col: `, asserting there is exactly one.
fn problem_at<'a>(stderr: &'a str, file: &str, line: u32, col: u32) -> &'a str {
    let prefix = format!("{file}:{line}:{col}: ");
    let hits: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(
        hits.len(),
        1,
        "want one problem at {prefix:?}, stderr:\n{stderr}"
    );
    hits[0]
}

const CHECK_HEAD: &str = r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"
"#;

#[test]
fn check_accepts_the_example_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = levee_bin()
        .args(["check", "--config", path])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_unknown_key_with_suggestion() {
    // line 12, column 1: `endpoint`
    let text =
        format!("{CHECK_HEAD}\n[[upstream]]\nname = \"app\"\nendpoint = [\"127.0.0.1:1\"]\n");
    let (code, _, stderr, file) = check(&text);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    let line = problem_at(&stderr, &file, 12, 1);
    assert!(line.contains("endpoint"), "{line}");
    assert!(line.contains("did you mean `endpoints`"), "{line}");
}

#[test]
fn check_reports_bad_duration() {
    // `timeout = "5"` on line 9; the value starts at column 11.
    let text = format!(
        "{CHECK_HEAD}timeout = \"5\"\n\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n"
    );
    let (code, _, stderr, file) = check(&text);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    let line = problem_at(&stderr, &file, 9, 11);
    assert!(line.contains("\"5\""), "{line}");
}

#[test]
fn check_reports_every_dangling_upstream() {
    // Two routes name upstreams that do not exist: both are reported, each at its value.
    let text = r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
upstream = "app"

[[route]]
name = "other"
path_prefix = "/o"
upstream = "nope"

[[route]]
name = "third"
path_prefix = "/t"
upstream =   "missing"

[[upstream]]
name = "app"
endpoints = ["127.0.0.1:1"]
"#;
    let (code, _, stderr, file) = check(text);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    let line = problem_at(&stderr, &file, 12, 12);
    assert!(line.contains("\"nope\""), "{line}");
    let line = problem_at(&stderr, &file, 17, 14);
    assert!(line.contains("\"missing\""), "{line}");
    assert_eq!(stderr.lines().count(), 2, "stderr:\n{stderr}");
}

// --- levee demo, through the real binary --------------------------------------------------------

#[tokio::test]
async fn demo_starts_and_answers_on_ephemeral_ports() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args([
            "demo",
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let find_proxy = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("proxy") {
                let url = rest.trim();
                return url.strip_prefix("http://").map(str::to_string);
            }
        }
        None
    };
    let addr = tokio::time::timeout(Duration::from_secs(30), find_proxy)
        .await
        .expect("the demo did not print its proxy address")
        .expect("the demo exited without printing its proxy address");
    let addr: SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0, "the demo printed port 0");

    // The demo's "/" retries the flaky backend's failures onto the healthy one; it is flaky on
    // purpose, so allow a few tries, but it must answer 200.
    let client = Client::new();
    let url = format!("http://{addr}/");
    eventually("the demo answers 200 on /", Duration::from_secs(20), || {
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).await.status == 200 }
    })
    .await;
    child.kill().await.unwrap();
}

/// `protocol = "h2"` speaks HTTP/2 (prior knowledge) to the upstream: concurrent requests share
/// one multiplexed connection (per worker), where HTTP/1.1 needs a connection per request in
/// flight.
#[tokio::test]
async fn h2_upstream_multiplexes_one_connection() {
    for (protocol, expect_one) in [("h2", true), ("http1", false)] {
        let origin = Origin::new()
            .delay(std::time::Duration::from_millis(200))
            .start()
            .await;
        let cfg = simple_config(&[origin.addr], "", &format!("protocol = \"{protocol}\""));
        let proxy = TestProxy::start(&cfg).await;
        let client = Client::new();
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let (client, url) = (client.clone(), proxy.url(&format!("/c{i}")));
                tokio::spawn(async move { client.get(&url).await.status })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 200, "protocol {protocol}");
        }
        assert_eq!(origin.hits(), 8);
        if expect_one {
            // One multiplexed connection per worker at most: each worker has its own pool.
            let workers = crate::support::proxy::workers().count();
            assert!(
                origin.connections() <= workers,
                "h2 upstream must multiplex: {} connections for {workers} worker(s)",
                origin.connections()
            );
        } else {
            assert!(
                origin.connections() > 1,
                "http1 upstream needs parallel connections, saw {}",
                origin.connections()
            );
        }
    }
}
