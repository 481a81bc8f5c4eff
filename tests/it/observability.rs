//! What levee tells operators: `/metrics`, `/status`, the admin probes and `levee status`.

use crate::support::origin::dead_addr;
use crate::support::scrape::{get_json, get_text, metric_or_zero, metric_value, upstream};
use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Routes: "app" (/) with a breaker that trips quickly, "retrying" (/retry) with retries on 500,
/// "limited" (/limited) with a small rate limit; each on its own upstream and origin.
fn config(app: SocketAddr, flaky: SocketAddr, steady: SocketAddr) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"

[[route]]
name = "retrying"
path_prefix = "/retry"
upstream = "flaky"
[route.retry]
attempts = 3
on = ["retriable-status"]
retriable_statuses = [500]
backoff = {{ base = "1ms", max = "2ms" }}

[[route]]
name = "limited"
path_prefix = "/limited"
upstream = "steady"
[route.rate_limit]
rps = 1
burst = 2

[[upstream]]
name = "app"
endpoints = ["{app}"]
[upstream.circuit_breaker]
minimum_calls = 5
failure_rate_threshold = 0.5
window = {{ kind = "count", size = 10 }}
open_duration = "30s"
[upstream.outlier_detection]
consecutive_failures = 0

[[upstream]]
name = "flaky"
endpoints = ["{flaky}"]

[[upstream]]
name = "steady"
endpoints = ["{steady}"]
"#
    )
}

/// Sends GETs to "/" until the breaker answers `circuit_open`; returns the upstream 500s seen.
async fn trip_breaker(client: &Client, proxy: &TestProxy) -> usize {
    for upstream_errors in 0..20 {
        let r = client.get(&proxy.url("/")).await;
        if r.error_kind() == "circuit_open" {
            return upstream_errors;
        }
        assert_eq!(r.status, 500, "{r:?}");
    }
    panic!("the breaker never opened");
}

fn requests(text: &str, route: &str, upstream: &str, class: &str) -> f64 {
    metric_or_zero(
        text,
        "levee_requests_total",
        &[("route", route), ("upstream", upstream), ("class", class)],
    )
}

#[tokio::test]
async fn metrics_count_requests_breaker_retries_and_limits() {
    let app = Origin::new().start().await;
    let flaky = Origin::new().fail_first(2).start().await;
    let steady = Origin::new().start().await;
    let proxy = TestProxy::start(&config(app.addr, flaky.addr, steady.addr)).await;
    let client = Client::new();
    let metrics_url = proxy.admin_url("/metrics");

    let before = get_text(&metrics_url).await;
    assert_eq!(
        metric_value(&before, "levee_circuit_state", &[("upstream", "app")]),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        metric_value(&before, "levee_config_version", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&before, "levee_build_info", &[]),
        Some(1.0),
        "{before}"
    );

    // 2xx on "app", then a trip: upstream 500s, then circuit_open 503s.
    for _ in 0..4 {
        assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    }
    app.set(Behaviour::Status(500));
    let upstream_500s = trip_breaker(&client, &proxy).await;
    let mut refused = 1;
    for _ in 0..2 {
        assert_eq!(
            client.get(&proxy.url("/")).await.error_kind(),
            "circuit_open"
        );
        refused += 1;
    }

    // Retries on "retrying": the first request fails twice and succeeds on its third try.
    for _ in 0..3 {
        let r = client.get(&proxy.url("/retry")).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(flaky.hits(), 5);

    // 429s on "limited".
    let (mut passed, mut limited) = (0, 0);
    for _ in 0..8 {
        match client.get(&proxy.url("/limited")).await.status.as_u16() {
            200 => passed += 1,
            429 => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(limited > 0, "the limit was reached");

    let after = get_text(&metrics_url).await;
    let delta =
        |route, up, class| requests(&after, route, up, class) - requests(&before, route, up, class);
    assert_eq!(delta("app", "app", "2xx"), 4.0, "{after}");
    assert_eq!(
        delta("app", "app", "5xx"),
        (upstream_500s + refused) as f64,
        "{after}"
    );
    assert_eq!(delta("app", "app", "4xx"), 0.0);
    assert_eq!(delta("retrying", "flaky", "2xx"), 3.0, "{after}");
    assert_eq!(delta("limited", "steady", "2xx"), passed as f64);
    assert_eq!(delta("limited", "steady", "4xx"), limited as f64);

    assert_eq!(
        metric_value(&after, "levee_circuit_state", &[("upstream", "app")]),
        Some(1.0),
        "open is 1: {after}"
    );
    assert_eq!(
        metric_value(&after, "levee_circuit_state", &[("upstream", "flaky")]),
        Some(0.0)
    );
    let trips = metric_or_zero(
        &after,
        "levee_circuit_transitions_total",
        &[("upstream", "app"), ("from", "closed"), ("to", "open")],
    );
    assert!(trips >= 1.0, "{after}");
    assert_eq!(
        metric_or_zero(&after, "levee_rate_limited_total", &[("route", "limited")]),
        limited as f64,
        "{after}"
    );
    assert_eq!(
        metric_or_zero(&after, "levee_retries_total", &[("route", "retrying")]),
        2.0,
        "{after}"
    );
    assert_eq!(
        metric_or_zero(&after, "levee_retries_total", &[("route", "app")]),
        0.0
    );
    assert_eq!(metric_value(&after, "levee_config_version", &[]), Some(1.0));
    assert!(
        metric_value(&after, "levee_build_info", &[]).is_some(),
        "{after}"
    );
}

#[tokio::test]
async fn status_explains_an_open_breaker() {
    let app = Origin::new().status(500).start().await;
    let flaky = Origin::new().start().await;
    let steady = Origin::new().start().await;
    let proxy = TestProxy::start(&config(app.addr, flaky.addr, steady.addr)).await;
    let client = Client::new();
    trip_breaker(&client, &proxy).await;

    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(status["version"], 1, "{status}");
    let app_status = upstream(&status, "app");
    assert_eq!(app_status["breaker"]["state"], "open", "{status}");
    let reason = app_status["breaker"]["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    assert!(
        reason.contains(">= 50%") && reason.contains("failure rate"),
        "the reason names the threshold: {reason}"
    );
    let eps = app_status["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["address"], app.addr.to_string());
    assert_eq!(eps[0]["healthy"], true);
    assert_eq!(eps[0]["ejected"], false);
    assert_eq!(upstream(&status, "flaky")["breaker"]["state"], "closed");

    let client = Client::new();
    let r = client.get(&proxy.admin_url("/healthz")).await;
    assert_eq!(r.status, 200);
    let r = client.get(&proxy.admin_url("/ready")).await;
    assert_eq!(r.status, 200);
    let r = client.get(&proxy.admin_url("/no-such-thing")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn status_command_prints_the_open_breaker() {
    let app = Origin::new().status(500).start().await;
    let flaky = Origin::new().start().await;
    let steady = Origin::new().start().await;
    let proxy = TestProxy::start(&config(app.addr, flaky.addr, steady.addr)).await;
    trip_breaker(&Client::new(), &proxy).await;
    let status = get_json(&proxy.admin_url("/status")).await;
    let reason = upstream(&status, "app")["breaker"]["reason"]
        .as_str()
        .unwrap()
        .to_string();

    // Async, so this runtime keeps serving the admin while the child asks it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["status", "--admin", &proxy.admin.to_string()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap_or_else(|| panic!("no row for upstream app:\n{stdout}"));
    assert!(line.contains(" open "), "{stdout}");
    assert!(line.contains(&app.addr.to_string()), "{stdout}");
    assert!(line.contains(&reason), "the reason in full: {stdout}");

    let dead = dead_addr().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["status", "--admin", &dead.to_string()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(&dead.to_string()),
        "names the address: {stderr}"
    );
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[tokio::test]
async fn metrics_show_ejected_endpoints() {
    let good = Origin::new().start().await;
    let bad = Origin::new().status(500).start().await;
    let cfg = crate::support::proxy::simple_config(
        &[good.addr, bad.addr],
        "",
        "[upstream.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_time = \"30s\"\n",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let (bad_addr, good_addr) = (bad.addr.to_string(), good.addr.to_string());
    let before = get_text(&proxy.admin_url("/metrics")).await;
    for ep in [&bad_addr, &good_addr] {
        assert_eq!(
            metric_value(
                &before,
                "levee_endpoint_healthy",
                &[("upstream", "app"), ("endpoint", ep)]
            ),
            Some(1.0),
            "{before}"
        );
    }
    eventually(
        "the failing endpoint is ejected",
        Duration::from_secs(10),
        || async {
            let _ = client.get(&proxy.url("/")).await;
            bad.hits() >= 3
        },
    )
    .await;

    let after = get_text(&proxy.admin_url("/metrics")).await;
    let labels =
        |ep: &str| [("upstream", "app"), ("endpoint", ep)].map(|(k, v)| (k, v.to_string()));
    let value = |name: &str, ep: &str| {
        let l = labels(ep);
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metric_or_zero(&after, name, &l)
    };
    assert_eq!(
        value("levee_endpoint_ejections_total", &bad_addr),
        1.0,
        "{after}"
    );
    assert_eq!(
        value("levee_endpoint_ejections_total", &good_addr),
        0.0,
        "{after}"
    );
    assert_eq!(
        value("levee_endpoint_healthy", &bad_addr),
        0.0,
        "an ejected endpoint gets no traffic: {after}"
    );
    assert_eq!(value("levee_endpoint_healthy", &good_addr), 1.0, "{after}");
}
