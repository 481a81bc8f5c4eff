//! Traffic control: route matchers, rewrites seen at the origin, redirects and direct responses,
//! request ids end to end, and what `levee check` says about routes.

use crate::support::raw::{exchange, RawOrigin};
use crate::support::{eventually, Client, Origin, OriginHandle, TestProxy};
use http::Method;
use std::net::SocketAddr;
use std::time::Duration;

fn listener() -> &'static str {
    "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n"
}

fn upstream(name: &str, addr: SocketAddr) -> String {
    format!("[[upstream]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n\n")
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A request (method, target, headers) and the route that should answer it.
type Case = (
    Method,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Each matcher picks its route; what a route does not match falls to the next one in order.
#[tokio::test]
async fn matchers_pick_routes_by_path_regex_method_header_and_query() {
    let names = [
        "exact", "regex", "methods", "canary", "present", "tier", "query", "default",
    ];
    let mut origins: Vec<OriginHandle> = Vec::new();
    for n in names {
        origins.push(Origin::new().body(n).start().await);
    }
    let routes = r#"
[[route]]
name = "exact"
path = "/exact"
upstream = "exact"

[[route]]
name = "regex"
path_regex = "^/v[0-9]+/items$"
upstream = "regex"

[[route]]
name = "methods"
path_prefix = "/m"
methods = ["POST", "PUT"]
upstream = "methods"

[[route]]
name = "canary"
path_prefix = "/h"
headers = { "X-Canary" = "1" }
upstream = "canary"

[[route]]
name = "present"
path_prefix = "/p"
headers = { "x-user" = "*" }
upstream = "present"

[[route]]
name = "tier"
path_prefix = "/r"
headers = { "x-tier" = { regex = "^(gold|silver)$" } }
upstream = "tier"

[[route]]
name = "query"
path_prefix = "/q"
query = { "debug" = "1 2" }
upstream = "query"

[[route]]
name = "default"
path_prefix = "/"
upstream = "default"

"#;
    let mut config = format!("{}{routes}", listener());
    for (n, o) in names.iter().zip(&origins) {
        config.push_str(&upstream(n, o.addr));
    }
    let proxy = TestProxy::start(&config).await;
    let client = Client::new();
    let cases: &[Case] = &[
        (Method::GET, "/exact", &[], "exact"),
        (Method::GET, "/exact/more", &[], "default"),
        (Method::GET, "/exact?x=1", &[], "exact"),
        (Method::GET, "/v2/items", &[], "regex"),
        (Method::GET, "/v2/items/x", &[], "default"),
        (Method::GET, "/x/v2/items", &[], "default"),
        (Method::POST, "/m/x", &[], "methods"),
        (Method::PUT, "/m", &[], "methods"),
        (Method::GET, "/m/x", &[], "default"),
        (Method::GET, "/h", &[("x-canary", "1")], "canary"),
        (Method::GET, "/h", &[("x-canary", "2")], "default"),
        (Method::GET, "/h", &[], "default"),
        (Method::GET, "/p", &[("x-user", "")], "present"),
        (Method::GET, "/p", &[], "default"),
        (Method::GET, "/r", &[("x-tier", "gold")], "tier"),
        (Method::GET, "/r", &[("x-tier", "bronze")], "default"),
        (Method::GET, "/q?debug=1+2", &[], "query"),
        (Method::GET, "/q?a=b&debug=1%202", &[], "query"),
        (Method::GET, "/q?debug=1", &[], "default"),
        (Method::GET, "/q", &[], "default"),
    ];
    for (method, path, headers, want) in cases {
        let r = client
            .request(method.clone(), &proxy.url(path), headers, "")
            .await;
        assert_eq!(r.status, 200, "{method} {path} {headers:?}: {r:?}");
        assert_eq!(r.text(), *want, "{method} {path} {headers:?}");
    }
}

/// Routes with the same prefix that differ only by conditions: the more specific is tried first,
/// whatever the file order.
#[tokio::test]
async fn more_conditions_are_tried_first() {
    let any = Origin::new().body("any").start().await;
    let gets = Origin::new().body("gets").start().await;
    let both = Origin::new().body("both").start().await;
    let config = format!(
        r#"{}
[[route]]
name = "any"
path_prefix = "/api"
upstream = "any"

[[route]]
name = "gets"
path_prefix = "/api"
methods = ["GET"]
upstream = "gets"

[[route]]
name = "both"
path_prefix = "/api"
methods = ["GET"]
headers = {{ "x-canary" = "1" }}
upstream = "both"

{}{}{}"#,
        listener(),
        upstream("any", any.addr),
        upstream("gets", gets.addr),
        upstream("both", both.addr)
    );
    let proxy = TestProxy::start(&config).await;
    let c = Client::new();
    let url = proxy.url("/api/x");
    assert_eq!(
        c.request(Method::GET, &url, &[("x-canary", "1")], "")
            .await
            .text(),
        "both"
    );
    assert_eq!(c.request(Method::GET, &url, &[], "").await.text(), "gets");
    assert_eq!(c.request(Method::DELETE, &url, &[], "").await.text(), "any");
}

/// Every request rewrite as the origin sees it, over HTTP/1.1 and HTTP/2 from the client.
#[tokio::test]
async fn request_rewrites_are_seen_at_the_origin() {
    let origin = Origin::new().start().await;
    let config = format!(
        r#"{}
[[route]]
name = "api"
path_prefix = "/v1"
strip_prefix = "/v1"
host_rewrite = "internal.api"
request_headers = {{ set = {{ "x-env" = "prod", "x-forwarded-proto" = "https" }}, add = {{ "x-client" = "ip=${{client_ip}}", "x-tag" = "${{route}}/${{upstream}}", "x-id" = "${{request_id}}" }}, remove = ["x-debug"] }}
upstream = "app"

[[route]]
name = "legacy"
path_prefix = "/old/"
replace_prefix = {{ from = "/old/", to = "/new/api/" }}
upstream = "app"

{}"#,
        listener(),
        upstream("app", origin.addr)
    );
    let proxy = TestProxy::start(&config).await;
    for client in [Client::new(), Client::h2()] {
        let r = client
            .request(
                Method::GET,
                &proxy.url("/v1/users?page=2"),
                &[("x-debug", "1"), ("x-env", "dev"), ("x-tag", "client")],
                "",
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = origin.last().unwrap();
        assert_eq!(seen.path, "/users?page=2", "the query kept: {seen:?}");
        assert_eq!(seen.headers["host"], "internal.api");
        assert!(!seen.headers.contains_key("x-debug"), "{seen:?}");
        let env: Vec<_> = seen.headers.get_all("x-env").iter().collect();
        assert_eq!(env, ["prod"], "set replaces the client's value");
        assert_eq!(
            seen.headers["x-forwarded-proto"], "https",
            "set wins over levee's own"
        );
        assert_eq!(seen.headers["x-client"], "ip=127.0.0.1");
        let tags: Vec<_> = seen.headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["client", "api/app"], "add appends");
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert_eq!(seen.headers["x-id"], id);
        assert_eq!(seen.headers["x-request-id"], id);
    }
    let r = Client::new().get(&proxy.url("/v1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.last().unwrap().path, "/");
    let r = Client::new().get(&proxy.url("/old/a/b?q=1")).await;
    assert_eq!(r.status, 200);
    let seen = origin.last().unwrap();
    assert_eq!(seen.path, "/new/api/a/b?q=1");
}

/// Response rewrites: a removed header (even `server`) never reaches the client; set and add
/// with variables; on levee's own answers too.
#[tokio::test]
async fn response_rewrites_reach_the_client() {
    let origin = RawOrigin::start(
        b"HTTP/1.1 200 OK\r\nServer: origin/1.0\r\nX-Powered-By: php\r\nX-Keep: yes\r\n\
          content-length: 2\r\n\r\nok",
    )
    .await;
    let config = format!(
        r#"{}
[[route]]
name = "site"
upstream = "app"
response_headers = {{ set = {{ "strict-transport-security" = "max-age=63072000" }}, add = {{ "x-served-by" = "${{route}} via ${{upstream}}" }}, remove = ["Server", "x-powered-by"] }}
[route.rate_limit]
rps = 0.001
burst = 1

{}"#,
        listener(),
        upstream("app", origin.addr)
    );
    let proxy = TestProxy::start(&config).await;
    let r = exchange(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"ok");
    assert!(!r.has_header("server"), "{r:?}");
    assert!(!r.has_header("x-powered-by"), "{r:?}");
    assert_eq!(r.header("x-keep"), Some("yes"));
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(r.header("x-served-by"), Some("site via app"));
    // The limit's one token is spent: levee's own 429 gets the rewrite and an id too.
    let r = exchange(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: site.test\r\nx-request-id: mine-429\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(r.header("x-request-id"), Some("mine-429"));
}

/// Redirects: status and Location (scheme, host, path or prefix, the query kept), with no
/// upstream; direct responses with their status, body and type.
#[tokio::test]
async fn redirects_and_direct_responses_need_no_upstream() {
    let origin = Origin::new().start().await;
    let config = format!(
        r#"{}
[[route]]
name = "to-https"
host = "plain.test"
redirect = {{ scheme = "https" }}

[[route]]
name = "moved"
host = "moved.test"
path_prefix = "/old/"
redirect = {{ host = "new.test:8443", prefix = "/new/", status = 308 }}

[[route]]
name = "page"
host = "page.test"
redirect = {{ path = "/maintenance", status = 302 }}

[[route]]
name = "temp"
host = "temp.test"
redirect = {{ scheme = "https", host = "elsewhere.test", status = 307 }}

[[route]]
name = "down"
host = "down.test"
direct_response = {{ status = 503, body = "down for maintenance", content_type = "text/html" }}

[[route]]
name = "app"
upstream = "app"

{}"#,
        listener(),
        upstream("app", origin.addr)
    );
    let proxy = TestProxy::start(&config).await;
    let ask = |host: &'static str, target: &'static str| {
        let addr = proxy.addr;
        async move {
            let head =
                format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            exchange(addr, head).await.expect("a response")
        }
    };
    let cases = [
        (
            "plain.test:8080",
            "/a/b?x=1&y=2",
            301,
            "https://plain.test/a/b?x=1&y=2",
        ),
        (
            "moved.test",
            "/old/page?q=1",
            308,
            "http://new.test:8443/new/page?q=1",
        ),
        (
            "page.test:8080",
            "/anything",
            302,
            "http://page.test:8080/maintenance",
        ),
        ("temp.test", "/t?", 307, "https://elsewhere.test/t?"),
    ];
    for (host, target, status, location) in cases {
        let r = ask(host, target).await;
        assert_eq!(r.status, status, "{host}{target}: {r:?}");
        assert_eq!(r.header("location"), Some(location), "{host}{target}");
        assert!(
            r.header("x-request-id").is_some_and(is_generated_id),
            "{r:?}"
        );
        assert!(!r.has_header("x-levee-error"), "{r:?}");
    }
    let r = ask("down.test", "/x").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, b"down for maintenance");
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(!r.has_header("x-levee-error"), "{r:?}");
    assert!(
        r.header("x-request-id").is_some_and(is_generated_id),
        "{r:?}"
    );
    assert_eq!(origin.hits(), 0, "no request reached an upstream");
    // The routes beside them still proxy.
    assert_eq!(ask("app.test", "/").await.status, 200);
    assert_eq!(origin.hits(), 1);
}

/// `x-request-id`: made when missing, kept when valid, replaced when not; forwarded upstream and
/// returned, on levee's own refusals too. `traceparent` and `tracestate` pass untouched.
#[tokio::test]
async fn request_ids_end_to_end() {
    let origin = Origin::new().start().await;
    let dead = crate::support::origin::dead_addr().await;
    let config = format!(
        r#"{}
[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "dead"

[[route]]
name = "app"
upstream = "app"

{}{}[upstream.circuit_breaker]
consecutive_failures = 1
open_duration = "10m"
"#,
        listener(),
        upstream("app", origin.addr),
        upstream("dead", dead),
    );
    let proxy = TestProxy::start(&config).await;
    let client = Client::new();

    let r = client.get(&proxy.url("/")).await;
    let made = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(is_generated_id(&made), "{made}");
    assert_eq!(
        origin.last().unwrap().headers["x-request-id"],
        made.as_str()
    );
    let again = client.get(&proxy.url("/")).await;
    assert_ne!(
        again.headers["x-request-id"],
        made.as_str(),
        "ids are unique"
    );

    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let r = client
        .request(
            Method::GET,
            &proxy.url("/"),
            &[
                ("x-request-id", "client-id_1.2:3"),
                ("traceparent", traceparent),
                ("tracestate", tracestate),
            ],
            "",
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "client-id_1.2:3");
    let seen = origin.last().unwrap();
    assert_eq!(seen.headers["x-request-id"], "client-id_1.2:3");
    assert_eq!(seen.headers["traceparent"], traceparent);
    assert_eq!(seen.headers["tracestate"], tracestate);

    let too_long = "x".repeat(129);
    for bad in ["has space", "", too_long.as_str(), "caf\u{e9}"] {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nx-request-id: {bad}\r\nConnection: close\r\n\r\n"
        );
        let r = exchange(proxy.addr, head).await.expect("a response");
        let id = r.header("x-request-id").unwrap_or_default().to_string();
        assert!(is_generated_id(&id), "{bad:?} replaced: {r:?}");
        assert_eq!(origin.last().unwrap().headers["x-request-id"], id.as_str());
    }

    // levee's own answers: 502, then the breaker's 503, then no route's 404.
    let r = client
        .request(
            Method::GET,
            &proxy.url("/dead"),
            &[("x-request-id", "r-502")],
            "",
        )
        .await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.headers["x-request-id"], "r-502");
    eventually(
        "the dead upstream's breaker opens",
        Duration::from_secs(10),
        || {
            let c = client.clone();
            let url = proxy.url("/dead");
            async move { c.get(&url).await.error_kind() == "circuit_open" }
        },
    )
    .await;
    let r = client
        .request(
            Method::GET,
            &proxy.url("/dead"),
            &[("x-request-id", "r-503")],
            "",
        )
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.headers["x-request-id"], "r-503");
}

/// The access log line carries the request id next to the client, and durations with three
/// fixed decimals. Through the real binary, whose stderr is the log.
#[tokio::test]
async fn access_log_has_request_id_and_fixed_decimal_durations() {
    use tokio::io::AsyncBufReadExt;
    let origin = Origin::new().start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levee.toml");
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}[[route]]\nupstream = \"app\"\n\n{}",
        listener(),
        upstream("app", origin.addr)
    );
    std::fs::write(&path, config).unwrap();
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
    let mut next_json = async || {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("levee logged nothing for 30 s")
            .unwrap()
            .expect("levee exited");
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default()
    };
    let addr: SocketAddr = loop {
        let v = next_json().await;
        if v["message"] == "listening" && v["listener"] == "main" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    for head in [
        "GET /kept HTTP/1.1\r\nHost: a\r\nx-request-id: log-me-42\r\nConnection: close\r\n\r\n",
        "GET /made HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let r = exchange(addr, head).await.expect("a response");
        assert_eq!(r.status, 200, "{r:?}");
        let access = loop {
            let v = next_json().await;
            if v["target"] == "levee::access" {
                break v;
            }
        };
        let id = access["request_id"].as_str().unwrap_or_default();
        assert_eq!(Some(id), r.header("x-request-id"), "{access}");
        if head.contains("/kept") {
            assert_eq!(id, "log-me-42");
        } else {
            assert!(is_generated_id(id), "{access}");
        }
        assert_eq!(access["client"], "127.0.0.1", "{access}");
        let ms = access["duration_ms"].as_str().unwrap_or_default();
        let (whole, decimals) = ms.split_once('.').unwrap_or_default();
        assert!(
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && decimals.len() == 3
                && decimals.bytes().all(|b| b.is_ascii_digit()),
            "duration_ms {ms:?} in {access}"
        );
    }
    child.kill().await.unwrap();
}

/// Runs `levee check` on `text`; returns (exit code, stderr, the file's path).
fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levee.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn levee_check_warns_about_a_shadowed_route() {
    let text = r#"[[listener]]
bind = "127.0.0.1:0"

[[route]]
name = "reads"
path_prefix = "/api"
methods = ["GET", "HEAD"]
upstream = "app"

[[route]]
name = "gets"
path_prefix = "/api"
methods = ["GET"]
upstream = "app"

[[route]]
name = "narrower"
path_prefix = "/api/v2"
methods = ["GET"]
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["127.0.0.1:9"]
"#;
    let (code, stderr, file) = check(text);
    assert_eq!(code, 0, "a warning, not an error: {stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("can never match"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let w = warnings[0];
    assert!(
        w.contains(&format!("{file}:11:8:")),
        "position of \"gets\": {w}"
    );
    assert!(w.contains("route \"gets\" (route #2)"), "{w}");
    assert!(
        w.contains("route \"reads\" (route #1, path_prefix \"/api\")"),
        "{w}"
    );
}

#[test]
fn config_errors_have_positions() {
    let base = "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:9\"]\n\n[[route]]\n";
    // (route lines, line of the problem, column, what the message says)
    let cases: &[(&str, u32, u32, &str)] = &[
        ("path_regex = \"(\"\nupstream = \"app\"", 9, 14, "invalid regex"),
        ("path_regex = \"[a-z]{1000}{1000}\"\nupstream = \"app\"", 9, 14, "more than"),
        ("headers = { x = { regex = \"[\" } }\nupstream = \"app\"", 9, 17, "invalid regex"),
        ("upstream = \"app\"\nrequest_headers = { set = { x = \"${nope}\" } }", 10, 33, "unknown variable ${nope}"),
        ("upstream = \"app\"\nrequest_headers = { remove = [\"transfer-encoding\"] }", 10, 31, "cannot change \"transfer-encoding\""),
        ("upstream = \"app\"\nresponse_headers = { set = { \"content-length\" = \"1\" } }", 10, 49, "cannot change \"content-length\""),
        ("upstream = \"app\"\nrequest_headers = { set = { host = \"x\" } }", 10, 36, "host_rewrite"),
        ("upstream = \"app\"\nredirect = { scheme = \"https\" }", 10, 12, "has both upstream and redirect"),
        ("path_prefix = \"/\"", 9, 15, "nowhere to send requests"),
        ("redirect = { status = 303 }", 9, 23, "301, 302, 307 or 308"),
        ("redirect = { scheme = \"ftp\" }", 9, 23, "\"http\" or \"https\""),
        ("path = \"/x\"\nredirect = { prefix = \"/y\" }", 10, 23, "use redirect path"),
        ("direct_response = { status = 99 }", 9, 30, "200 to 599"),
        ("methods = [\"get\"]\nupstream = \"app\"", 9, 12, "in capitals"),
        ("path = \"/a\"\npath_prefix = \"/b\"\nupstream = \"app\"", 9, 8, "not both path_prefix and path"),
        ("strip_prefix = \"/a\"\nreplace_prefix = { from = \"/a\", to = \"/b\" }\nupstream = \"app\"", 10, 18, "keep one"),
        ("direct_response = { status = 200 }\nrate_limit = { rps = 1.0 }", 10, 14, "would never apply"),
    ];
    for (route, line, col, says) in cases {
        let text = format!("{base}{route}\n");
        let (code, stderr, file) = check(&text);
        assert_eq!(code, 1, "{route}: {stderr}");
        let prefix = format!("{file}:{line}:{col}: ");
        let hit = stderr.lines().find(|l| l.starts_with(&prefix));
        assert!(
            hit.is_some_and(|l| l.contains(says)),
            "{route}: want {says:?} at {line}:{col}, got:\n{stderr}"
        );
    }
}
