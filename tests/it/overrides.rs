//! Timed manual overrides (`POST /overrides`, `levee override`): forcing a breaker open or closed,
//! draining and ejecting endpoints, expiry, reloads, the action rules and bad requests.

use crate::support::origin::Behaviour;
use crate::support::proxy::simple_config;
use crate::support::scrape::{get_json, get_text, metric_value, upstream};
use crate::support::{eventually, Client, Origin, Reply, TestProxy};
use http::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

async fn post(proxy: &TestProxy, body: Value) -> Reply {
    Client::new()
        .request(
            Method::POST,
            &proxy.admin_url("/overrides"),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
}

/// Sets an override that must be accepted; returns its id.
async fn set(proxy: &TestProxy, target: &str, action: &str, ttl: &str, reason: &str) -> u64 {
    let r = post(
        proxy,
        json!({"target": target, "action": action, "ttl": ttl, "reason": reason}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["id"].as_u64().expect("an id")
}

async fn delete(proxy: &TestProxy, id: &str, headers: &[(&str, &str)]) -> Reply {
    Client::new()
        .request(
            Method::DELETE,
            &proxy.admin_url(&format!("/overrides/{id}")),
            headers,
            "",
        )
        .await
}

fn endpoint<'a>(status: &'a Value, up: &str, address: &str) -> &'a Value {
    upstream(status, up)["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == address)
        .unwrap()
}

async fn active(proxy: &TestProxy, target: &str, action: &str) -> Option<f64> {
    let text = get_text(&proxy.admin_url("/metrics")).await;
    metric_value(
        &text,
        "levee_override_active",
        &[("target", target), ("action", action)],
    )
}

#[tokio::test]
async fn force_open_answers_503_and_says_why_until_cleared() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let client = Client::new();
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    let hits = origin.hits();

    let id = set(
        &proxy,
        "upstream:app",
        "force_open",
        "10m",
        "db migration INC-42",
    )
    .await;
    for _ in 0..5 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.error_kind(), "circuit_open");
        let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (590..=600).contains(&retry_after),
            "retry-after {retry_after}"
        );
    }
    assert_eq!(origin.hits(), hits, "a forced-open upstream gets nothing");

    let status = get_json(&proxy.admin_url("/status")).await;
    let app = upstream(&status, "app");
    assert_eq!(app["breaker"]["state"], "open");
    let reason = app["breaker"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("held open by override {id}"))
            && reason.contains("db migration INC-42"),
        "{reason}"
    );
    assert_eq!(app["override"]["action"], "force_open");
    let left = app["override"]["expires_in_ms"].as_u64().unwrap();
    assert!(left > 500_000 && left <= 600_000, "{left}");
    assert_eq!(status["overrides"].as_array().unwrap().len(), 1);
    assert_eq!(
        active(&proxy, "upstream:app", "force_open").await,
        Some(1.0)
    );
    let listed = get_json(&proxy.admin_url("/overrides")).await;
    assert_eq!(listed["overrides"][0]["id"], id);
    assert!(listed["overrides"][0]["set_by"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    let r = delete(&proxy, &id.to_string(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    assert_eq!(
        active(&proxy, "upstream:app", "force_open").await,
        Some(0.0)
    );
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(upstream(&status, "app")["breaker"]["state"], "closed");
    assert!(upstream(&status, "app")["override"].is_null());
    assert_eq!(delete(&proxy, &id.to_string(), &[]).await.status, 404);
}

/// force_closed lets traffic through a breaker that its own numbers hold open, and ending the
/// hold gives the breaker its own state back.
#[tokio::test]
async fn force_closed_admits_past_an_open_breaker_and_does_not_trip() {
    let origin = Origin::new().status(500).start().await;
    let breaker = "[upstream.circuit_breaker]\nconsecutive_failures = 2\nopen_duration = \"10m\"\n";
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", breaker)).await;
    let client = Client::new();
    for _ in 0..2 {
        assert_eq!(client.get(&proxy.url("/")).await.status, 500);
    }
    assert_eq!(
        client.get(&proxy.url("/")).await.error_kind(),
        "circuit_open"
    );

    set(
        &proxy,
        "upstream:app",
        "force_closed",
        "10m",
        "the breaker is wrong",
    )
    .await;
    let before = origin.hits();
    for _ in 0..6 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 500, "the origin's own answer: {}", r.text());
        assert_eq!(r.error_kind(), "", "not levee's");
    }
    assert_eq!(origin.hits(), before + 6);
    let status = get_json(&proxy.admin_url("/status")).await;
    let b = &upstream(&status, "app")["breaker"];
    assert_eq!(b["state"], "closed");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("held closed by override"),
        "{b}"
    );

    let id = upstream(&status, "app")["override"]["id"].to_string();
    assert_eq!(delete(&proxy, &id, &[]).await.status, 200);
    assert_eq!(
        client.get(&proxy.url("/")).await.error_kind(),
        "circuit_open",
        "the breaker's own open state is back"
    );
}

/// A drained endpoint gets no new requests, while the one it is serving finishes.
#[tokio::test]
async fn drain_lets_the_request_in_flight_finish() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = Origin::new()
        .behaviour(Behaviour::Gate(gate.clone()))
        .start()
        .await;
    let fast = Origin::new().body("fast").start().await;
    let proxy = TestProxy::start(&simple_config(
        &[slow.addr, fast.addr],
        "timeout = \"60s\"",
        "balance = \"round_robin\"",
    ))
    .await;
    // Requests until one is held by the slow endpoint (the others come back from the fast one).
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        let url = proxy.url("/");
        in_flight.push(tokio::spawn(async move { Client::new().get(&url).await }));
        if slow.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(
        "a request reaches the slow endpoint",
        Duration::from_secs(10),
        || async { slow.hits() == 1 },
    )
    .await;
    let target = format!("endpoint:app/{}", slow.addr);
    set(&proxy, &target, "drain", "10m", "kernel update").await;

    let client = Client::new();
    for _ in 0..10 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "fast");
    }
    assert_eq!(
        slow.hits(),
        1,
        "no new request reached the drained endpoint"
    );
    let status = get_json(&proxy.admin_url("/status")).await;
    let ep = endpoint(&status, "app", &slow.addr.to_string());
    assert_eq!(ep["override"]["action"], "drain");
    assert_eq!(ep["in_flight"], 1);
    assert_eq!(ep["ejected"], false, "drained is not ejected");

    gate.add_permits(1);
    let mut bodies = Vec::new();
    for t in in_flight {
        let r = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the in-flight request finished")
            .unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.text());
    }
    assert!(
        bodies.iter().any(|b| b.starts_with("slow ok")),
        "{bodies:?}"
    );
}

/// An ejected endpoint is out of the balancer and shown as ejected until the override ends.
#[tokio::test]
async fn eject_takes_an_endpoint_out_until_cleared() {
    let a = Origin::new().body("a").start().await;
    let b = Origin::new().body("b").start().await;
    let proxy = TestProxy::start(&simple_config(&[a.addr, b.addr], "", "")).await;
    let id = set(
        &proxy,
        &format!("endpoint:app/{}", a.addr),
        "eject",
        "10m",
        "bad disk",
    )
    .await;
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(client.get(&proxy.url("/")).await.text(), "b");
    }
    assert_eq!(a.hits(), 0);
    let status = get_json(&proxy.admin_url("/status")).await;
    let ep = endpoint(&status, "app", &a.addr.to_string());
    assert_eq!(ep["ejected"], true);
    assert_eq!(ep["override"]["reason"], "bad disk");
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    let a_addr = a.addr.to_string();
    assert_eq!(
        metric_value(
            &metrics,
            "levee_endpoint_healthy",
            &[("upstream", "app"), ("endpoint", &a_addr)]
        ),
        Some(0.0)
    );

    assert_eq!(delete(&proxy, &id.to_string(), &[]).await.status, 200);
    eventually(
        "the endpoint gets traffic again",
        Duration::from_secs(10),
        || async { client.get(&proxy.url("/")).await.text() == "a" },
    )
    .await;
}

#[tokio::test]
async fn overrides_expire_on_time() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    set(&proxy, "upstream:app", "force_open", "1s", "short").await;
    let client = Client::new();
    assert_eq!(client.get(&proxy.url("/")).await.status, 503);
    eventually(
        "the override expires by itself",
        Duration::from_secs(15),
        || async {
            let status = get_json(&proxy.admin_url("/status")).await;
            status["overrides"].as_array().is_some_and(|a| a.is_empty())
                && upstream(&status, "app")["breaker"]["state"] == "closed"
        },
    )
    .await;
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    assert_eq!(
        active(&proxy, "upstream:app", "force_open").await,
        Some(0.0)
    );
}

/// A reload keeps every override whose target is still there, even when the upstream's state is
/// rebuilt, and drops the ones whose target is gone.
#[tokio::test]
async fn overrides_survive_a_reload_while_their_target_exists() {
    let a = Origin::new().body("a").start().await;
    let b = Origin::new().body("b").start().await;
    let c = Origin::new().body("c").start().await;
    let proxy = TestProxy::start(&simple_config(&[a.addr, b.addr, c.addr], "", "")).await;
    set(
        &proxy,
        &format!("endpoint:app/{}", a.addr),
        "drain",
        "10m",
        "keep me",
    )
    .await;
    set(
        &proxy,
        &format!("endpoint:app/{}", c.addr),
        "eject",
        "10m",
        "drop me",
    )
    .await;

    // A changed definition: the upstream's live state is rebuilt, the overrides are not lost.
    proxy
        .reload(&simple_config(
            &[a.addr, b.addr],
            "",
            "connect_timeout = \"3s\"",
        ))
        .await
        .unwrap();
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(client.get(&proxy.url("/")).await.text(), "b");
    }
    let listed = get_json(&proxy.admin_url("/overrides")).await;
    let list = listed["overrides"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{listed}");
    assert_eq!(list[0]["reason"], "keep me");
    assert_eq!(
        active(&proxy, &format!("endpoint:app/{}", c.addr), "eject").await,
        Some(0.0)
    );

    // Forced open survives a reload too.
    set(&proxy, "upstream:app", "force_open", "10m", "hold").await;
    proxy
        .reload(&simple_config(
            &[a.addr, b.addr],
            "",
            "connect_timeout = \"4s\"",
        ))
        .await
        .unwrap();
    assert_eq!(
        client.get(&proxy.url("/")).await.error_kind(),
        "circuit_open"
    );
}

#[tokio::test]
async fn cross_site_overrides_are_refused() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let client = Client::new();
    let url = proxy.admin_url("/overrides");
    let body =
        json!({"target": "upstream:app", "action": "force_open", "ttl": "1m", "reason": "x"})
            .to_string();
    let evil = client
        .request(
            Method::POST,
            &url,
            &[("origin", "http://evil.example")],
            body.clone(),
        )
        .await;
    assert_eq!(evil.status, 403, "{}", evil.text());
    assert!(evil.text().contains("cross-site"), "{}", evil.text());
    assert!(get_json(&url).await["overrides"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);

    // The dashboard's own origin passes.
    let own = format!("http://{}", proxy.admin);
    let r = client
        .request(Method::POST, &url, &[("origin", own.as_str())], body)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["id"].to_string();
    assert_eq!(
        delete(&proxy, &id, &[("origin", "http://evil.example")])
            .await
            .status,
        403
    );
    assert_eq!(client.get(&proxy.url("/")).await.status, 503, "still held");
    assert_eq!(
        delete(&proxy, &id, &[("origin", own.as_str())])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn bad_requests_get_400_with_the_reason() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let ep = format!("endpoint:app/{}", origin.addr);
    let cases = [
        (
            json!({"target": "upstream:nope", "action": "force_open", "ttl": "1m", "reason": "x"}),
            "no upstream \"nope\"",
        ),
        (
            json!({"target": "endpoint:app/10.9.9.9:1", "action": "drain", "ttl": "1m", "reason": "x"}),
            "no endpoint",
        ),
        (
            json!({"target": "app", "action": "force_open", "ttl": "1m", "reason": "x"}),
            "unknown target",
        ),
        (
            json!({"target": "upstream:app", "action": "drain", "ttl": "1m", "reason": "x"}),
            "applies to an endpoint",
        ),
        (
            json!({"target": ep, "action": "force_open", "ttl": "1m", "reason": "x"}),
            "applies to an upstream",
        ),
        (
            json!({"target": "upstream:app", "action": "pause", "ttl": "1m", "reason": "x"}),
            "unknown action",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "reason": "x"}),
            "missing \"ttl\"",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "ttl": "soon", "reason": "x"}),
            "ttl:",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "ttl": "25h", "reason": "x"}),
            "at most 24h",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "ttl": "1m"}),
            "missing \"reason\"",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "ttl": "1m", "reason": ""}),
            "missing \"reason\"",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "ttl": "1m", "reason": "x", "until": "1m"}),
            "unknown field",
        ),
        (
            json!({"target": "upstream:app", "action": "force_open", "ttl": "1m", "reason": "x".repeat(20_000)}),
            "over 8192 bytes",
        ),
    ];
    for (body, want) in cases {
        let r = post(&proxy, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let client = Client::new();
    let r = client
        .request(
            Method::POST,
            &proxy.admin_url("/overrides"),
            &[],
            "not json",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not an override"), "{}", r.text());
    assert_eq!(delete(&proxy, "99", &[]).await.status, 404);
    assert_eq!(delete(&proxy, "abc", &[]).await.status, 404);
    let r = client.get(&proxy.admin_url("/overrides/1")).await;
    assert_eq!(r.status, 405);
    assert!(get_json(&proxy.admin_url("/overrides")).await["overrides"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
}

fn levee(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_sets_lists_and_clears() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let admin = proxy.admin.to_string();
    let target = format!("endpoint:app/{}", origin.addr);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            levee(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |list: &[&str]| -> Vec<String> {
        let mut v = vec!["override".to_string(), "--admin".into(), admin.clone()];
        v.extend(list.iter().map(|s| s.to_string()));
        v
    };
    let out = run(args(&[
        "set",
        &target,
        "drain",
        "--ttl",
        "10m",
        "--reason",
        "cli drain",
    ]))
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("override 1 set: drain"), "{stdout}");
    assert_eq!(
        Client::new().get(&proxy.url("/")).await.error_kind(),
        "no_healthy_endpoint"
    );

    let out = run(args(&["list"])).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains(&target) && stdout.contains("cli drain"),
        "{stdout}"
    );
    assert!(
        stdout.contains("m left") || stdout.contains("s left"),
        "{stdout}"
    );

    let out = run(vec!["status".into(), "--admin".into(), admin.clone()])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("drained (override 1,"), "{stdout}");
    assert!(stdout.contains("overrides:"), "{stdout}");

    // A refusal: the server's message, exit 1.
    let out = run(args(&[
        "set",
        "upstream:app",
        "drain",
        "--ttl",
        "10m",
        "--reason",
        "x",
    ]))
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("applies to an endpoint"),
        "{stderr}"
    );

    let out = run(args(&["clear", "1"])).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("override 1 cleared"));
    assert_eq!(Client::new().get(&proxy.url("/")).await.status, 200);
    let out = run(args(&["clear", "1"])).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no active override 1"));
    let out = run(args(&["list"])).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no active overrides\n"
    );
}

/// The dashboard lists each override with its countdown and a Clear button, marks the held
/// endpoint, and offers the form to set one (the admin listener is on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_overrides_with_countdowns() {
    let Some(browser) = crate::dashboard::chromium() else {
        eprintln!("SKIPPED: chromium not installed; the dashboard override test did NOT run");
        return;
    };
    let a = Origin::new().start().await;
    let b = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[a.addr, b.addr], "", "")).await;
    let id = set(
        &proxy,
        &format!("endpoint:app/{}", a.addr),
        "drain",
        "10m",
        "rolling <deploy>",
    )
    .await;
    let dom = crate::dashboard::dump_dom(&browser, &proxy.admin_url("/")).await;
    let row = dom
        .split(&format!("<tr data-override=\"{id}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no override row:\n{dom}"));
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(&format!("endpoint:app/{}", a.addr)), "{row}");
    assert!(
        row.contains("rolling &lt;deploy&gt;"),
        "the reason, escaped: {row}"
    );
    assert!(
        row.contains(" min") || row.contains(" s"),
        "a countdown: {row}"
    );
    assert!(
        row.contains(&format!("data-clear=\"{id}\"")),
        "a Clear button: {row}"
    );
    assert!(dom.contains(&format!("drained by override {id}")), "{dom}");
    assert!(
        dom.contains("<div id=\"ov-form\">"),
        "the form is shown: {dom}"
    );
    assert!(
        dom.contains(&format!("<option>endpoint:app/{}</option>", b.addr)),
        "{dom}"
    );
}
