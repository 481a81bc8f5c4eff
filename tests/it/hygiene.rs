//! Request hygiene (issue 14): what is routed is what is forwarded. Hostile bytes go over raw
//! TCP (no client library tidies them up), HTTP/2 over the h2 crate's client, and recording
//! origins show what the upstream received.

use crate::support::proxy::simple_config;
use crate::support::raw::{exchange, RawConn, RawOrigin};
use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Listener "main" (with `listener_extra`), host `known.example`: `/admin/` to `admin` with
/// `admin_extra` (a rate limit, say), everything else to `public`.
fn two_routes(
    public: SocketAddr,
    admin: SocketAddr,
    listener_extra: &str,
    admin_extra: &str,
) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"
{listener_extra}

[[route]]
name = "public"
host = "known.example"
path_prefix = "/"
upstream = "public"

[[route]]
name = "admin"
host = "known.example"
path_prefix = "/admin/"
upstream = "admin"
{admin_extra}

[[upstream]]
name = "public"
endpoints = ["{public}"]

[[upstream]]
name = "admin"
endpoints = ["{admin}"]
"#
    )
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: known.example\r\nConnection: close\r\n\r\n")
}

/// The bypasses of issue 14, each a spelling of `/admin/x` that an upstream normalizing its
/// path would serve from its admin handler.
const BYPASSES: [&str; 6] = [
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "//admin/x",
    "/%61dmin/x",
    "/./admin/x",
    "/public/%2E%2E/admin/./x",
];

/// Every spelling of `/admin/x` is routed to `/admin/`, counts against its rate limit, and
/// reaches the admin upstream as `/admin/x` with its query untouched.
#[tokio::test]
async fn path_bypasses_are_routed_and_forwarded_normalized() {
    let public = Origin::new().body("public").start().await;
    let admin = Origin::new().body("admin").start().await;
    // One token per request below, and none refilled while the test runs.
    let limit = format!(
        "[route.rate_limit]\nrps = 0.01\nburst = {}\nkey = \"global\"",
        BYPASSES.len() + 1
    );
    let proxy = TestProxy::start(&two_routes(public.addr, admin.addr, "", &limit)).await;

    let r = exchange(proxy.addr, get("/admin/x"))
        .await
        .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    for target in BYPASSES {
        let r = exchange(proxy.addr, get(target)).await.expect("a response");
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.body, b"admin", "{target} skipped the /admin/ route");
        assert_eq!(admin.last().unwrap().path, "/admin/x", "{target}");
    }
    assert_eq!(public.hits(), 0, "a bypass reached the public route");

    // The limit saw every one of them: the next request is over it, whatever its spelling.
    let r = exchange(proxy.addr, get("/public/../admin/y"))
        .await
        .expect("a response");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.error_kind(), "rate_limited");

    // The query is not the path: it reaches the upstream byte for byte.
    let proxy = TestProxy::start(&two_routes(public.addr, admin.addr, "", "")).await;
    let r = exchange(proxy.addr, get("/x//y/../z?a=/../b%2F&c=%2e%2e"))
        .await
        .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(public.last().unwrap().path, "/x/z?a=/../b%2F&c=%2e%2e");
}

/// Encoded slashes and backslashes, raw backslashes, NUL and broken escapes are refused:
/// 400 `bad_request`, nothing forwarded.
#[tokio::test]
async fn ambiguous_paths_are_400() {
    let public = Origin::new().start().await;
    let admin = Origin::new().start().await;
    let proxy = TestProxy::start(&two_routes(public.addr, admin.addr, "", "")).await;
    for target in [
        "/public/..%2fadmin/x",
        "/public/..%2Fadmin/x",
        "/admin%2fx",
        "/public/..%5cadmin/x",
        "/public/..%5Cadmin/x",
        "/public/..\\admin/x",
        "/admin/x%00.png",
        "/admin/%zz",
    ] {
        let r = exchange(proxy.addr, get(target)).await.expect("a response");
        assert_eq!(r.status, 400, "{target}: {r:?}");
        assert_eq!(r.error_kind(), "bad_request", "{target}: {r:?}");
    }
    assert_eq!(
        public.hits() + admin.hits(),
        0,
        "a refused path was forwarded"
    );
}

/// `normalize_path = false`: the raw path is routed and forwarded as it came.
#[tokio::test]
async fn normalize_path_false_routes_and_forwards_the_raw_path() {
    let public = Origin::new().body("public").start().await;
    let admin = Origin::new().body("admin").start().await;
    let proxy = TestProxy::start(&two_routes(
        public.addr,
        admin.addr,
        "normalize_path = false",
        "",
    ))
    .await;
    for target in ["/public/../admin/x", "//admin/x", "/public/..%2Fadmin/x"] {
        let r = exchange(proxy.addr, get(target)).await.expect("a response");
        assert_eq!(r.body, b"public", "{target}: {r:?}");
        assert_eq!(public.last().unwrap().path, target);
    }
    assert_eq!(admin.hits(), 0);
}

/// `Upgrade: h2c` is not tunnelled: the upgrade headers are dropped, the origin answers a plain
/// HTTP/1.1 request, and the connection carries on as HTTP/1.1.
#[tokio::test]
async fn h2c_upgrade_is_answered_as_plain_http1() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let mut c = RawConn::connect(proxy.addr).await;
    for upgrade in ["h2c", "echo", "TLS/1.2"] {
        c.send(format!(
            "GET /u HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ))
        .await;
        let r = c.read_response().await.expect("a response");
        assert_eq!(r.status, 200, "{upgrade}: {r:?}");
        assert_eq!(r.body, b"ok");
        let seen = origin.last().unwrap();
        for name in ["upgrade", "http2-settings", "connection"] {
            assert!(
                !seen.headers.contains_key(name),
                "{upgrade}: the origin got {name}: {:?}",
                seen.headers
            );
        }
    }
    // Still HTTP/1.1 on the same connection, not a tunnel.
    c.send("GET /after HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.last().unwrap().path, "/after");
}

/// An absolute-form target's authority is the host: routed on and forwarded as `Host`.
#[tokio::test]
async fn absolute_form_authority_is_forwarded_as_host() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = exchange(
        proxy.addr,
        "GET http://target.example:8080/abs?q=1 HTTP/1.1\r\nHost: header.example\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.last().unwrap();
    assert_eq!(seen.path, "/abs?q=1");
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);
    assert_eq!(seen.headers["host"], "target.example:8080");
    assert_eq!(seen.headers["x-forwarded-host"], "target.example:8080");
}

/// Two Host headers are refused: levee and the upstream could each believe another one.
#[tokio::test]
async fn two_host_headers_are_400() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    for head in [
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    ] {
        let r = exchange(proxy.addr, head).await.expect("a response");
        assert_eq!(r.status, 400, "{head:?}: {r:?}");
        assert_eq!(r.error_kind(), "bad_request");
    }
    assert_eq!(origin.hits(), 0);
}

/// Sends one HTTP/2 request (prior knowledge, the h2 crate's client) and returns its status and
/// `x-levee-error`.
async fn h2_request(addr: SocketAddr, authority: &str, host: Option<&str>) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("http://{authority}/h2"))
        .version(http::Version::HTTP_2)
        .body(())
        .unwrap();
    if let Some(host) = host {
        req.headers_mut().insert("host", host.parse().unwrap());
    }
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("no HTTP/2 response")
        .unwrap();
    let kind = resp
        .headers()
        .get("x-levee-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (resp.status().as_u16(), kind)
}

/// HTTP/2: a `host` header that disagrees with `:authority` is refused; one that agrees (in
/// any case) is fine, and so is none.
#[tokio::test]
async fn h2_host_disagreeing_with_authority_is_400() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    assert_eq!(
        h2_request(proxy.addr, "a.example", Some("b.example")).await,
        (400, "bad_request".into())
    );
    assert_eq!(origin.hits(), 0);
    assert_eq!(
        h2_request(proxy.addr, "a.example", Some("A.Example")).await,
        (200, String::new())
    );
    assert_eq!(
        h2_request(proxy.addr, "a.example", None).await,
        (200, String::new())
    );
    assert_eq!(origin.last().unwrap().headers["host"], "a.example");
}

async fn get_with_xff(proxy: &TestProxy, xff: &str) -> u16 {
    let head = format!(
        "GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
    );
    exchange(proxy.addr, head).await.expect("a response").status
}

/// Behind a trusted proxy, `x-forwarded-for` entries with ports are addresses, and an entry
/// that is not one ends the walk: the forged entries to its left never become the rate-limit
/// key, so changing them buys nothing.
#[tokio::test]
async fn forged_forwarded_for_entries_never_become_the_key() {
    let origin = Origin::new().start().await;
    let limit = "[route.rate_limit]\nrps = 0.01\nburst = 1\nkey = \"client_ip\"";
    let listener = "trusted_proxies = [\"127.0.0.0/8\"]\n";
    let config = simple_config(&[origin.addr], limit, "").replacen(
        "bind = \"127.0.0.1:0\"\n",
        &format!("bind = \"127.0.0.1:0\"\n{listener}"),
        1,
    );
    let proxy = TestProxy::start(&config).await;
    // Each pair: the same real client (the rightmost entry the trusted proxy wrote) behind two
    // different forged entries. The second is over the client's limit.
    for real in ["203.0.113.7:1234", "[2001:db8::7]:443", "unknown"] {
        let first = get_with_xff(&proxy, &format!("198.51.100.1, {real}")).await;
        let second = get_with_xff(&proxy, &format!("198.51.100.2, {real}")).await;
        assert_eq!((first, second), (200, 429), "real client {real}");
    }
}

/// An upstream's own `x-levee-error` never reaches the client: it would pass for levee's.
#[tokio::test]
async fn upstream_x_levee_error_is_stripped() {
    let origin = RawOrigin::start(
        b"HTTP/1.1 200 OK\r\nx-levee-error: circuit_open\r\nX-Levee-Error: rate_limited\r\n\
          content-length: 2\r\n\r\nok",
    )
    .await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let r = exchange(proxy.addr, get("/")).await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"ok");
    assert!(!r.has_header("x-levee-error"), "{r:?}");
}

/// The access log line names the client: the peer, or the client a trusted proxy forwarded.
/// Through the real binary, whose stderr is the log.
#[tokio::test]
async fn access_log_carries_the_client_address() {
    use tokio::io::AsyncBufReadExt;
    let origin = Origin::new().start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levee.toml");
    let config = simple_config(&[origin.addr], "", "").replacen(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        1,
    );
    std::fs::write(
        &path,
        format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{config}"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["run", "--workers", "1", "--log-format", "json", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("levee logged nothing for 30 s")
            .unwrap()
            .expect("levee exited")
    };
    let addr: SocketAddr = loop {
        let line = next_line().await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        // `--log-format json` flattens each event's fields into the line.
        if v["message"] == "listening" && v["listener"] == "main" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    let head = "GET /logged HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 192.0.2.44\r\n\
                Connection: close\r\n\r\n";
    let r = exchange(addr, head).await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    let access = loop {
        let line = next_line().await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["target"] == "levee::access" {
            break v;
        }
    };
    assert_eq!(access["client"], "192.0.2.44", "{access}");
    assert_eq!(access["path"], "/logged", "{access}");
    child.kill().await.unwrap();
}
