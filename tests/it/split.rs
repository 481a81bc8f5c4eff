//! Weighted splits across upstreams and endpoint weights within one, through real sockets: a
//! canary at 5%, its share moving to stable while its breaker is open and coming back after.

use crate::support::scrape::get_json;
use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Outlier detection off, so that only the breaker acts on the canary.
const NO_OUTLIER: &str = "[upstream.outlier_detection]\nconsecutive_failures = 0\n";

fn split_config(
    stable: SocketAddr,
    canary: SocketAddr,
    weights: (u32, u32),
    canary_extra: &str,
) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "api"
path_prefix = "/"
split = [{{ upstream = "stable", weight = {} }}, {{ upstream = "canary", weight = {} }}]

[[upstream]]
name = "stable"
endpoints = ["{stable}"]

[[upstream]]
name = "canary"
endpoints = ["{canary}"]
{canary_extra}
"#,
        weights.0, weights.1
    )
}

fn route<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["routes"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no route {name} in {status}"))
}

#[tokio::test]
async fn a_95_5_split_sends_about_5_percent_to_the_canary() {
    let stable = Origin::new().body("stable").start().await;
    let canary = Origin::new().body("canary").start().await;
    let proxy = TestProxy::start(&split_config(stable.addr, canary.addr, (95, 5), "")).await;
    let client = Client::new();
    let mut to_canary = 0;
    for _ in 0..2000 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        if r.text() == "canary" {
            to_canary += 1;
        }
    }
    // Binomial(2000, 0.05): mean 100, standard deviation 9.7. 60..=140 is more than 4 standard
    // deviations either way: a false failure about once in 30 000 runs.
    assert!(
        (60..=140).contains(&to_canary),
        "{to_canary} of 2000 went to the canary"
    );
    assert_eq!(canary.hits(), to_canary);
    assert_eq!(stable.hits(), 2000 - to_canary);

    let status = get_json(&proxy.admin_url("/status")).await;
    let split = &route(&status, "api")["split"];
    assert_eq!(split["targets"][0]["upstream"], "stable");
    assert_eq!(split["targets"][0]["configured_percent"], 95.0);
    assert_eq!(split["targets"][1]["effective_percent"], 5.0);
    assert!(split["shift"].is_null(), "{split}");
}

#[tokio::test]
async fn an_open_canary_gives_its_share_to_stable_until_it_recovers() {
    let stable = Origin::new().body("stable").start().await;
    let canary = Origin::new().status(500).start().await;
    let threshold = 3;
    let cfg = split_config(
        stable.addr,
        canary.addr,
        (50, 50),
        &format!(
            "{NO_OUTLIER}[upstream.circuit_breaker]\nconsecutive_failures = {threshold}\nopen_duration = \"4s\"\nhalf_open_calls = 1\n"
        ),
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();

    // The bad canary costs its users the breaker's threshold and no more.
    let mut failed = 0;
    let mut sent = 0;
    while canary.hits() < threshold {
        let r = client.get(&proxy.url("/")).await;
        sent += 1;
        assert!(sent < 500, "the canary never got {threshold} requests");
        if r.status != 200 {
            assert_eq!(r.status, 500, "{r:?}");
            failed += 1;
        }
    }
    let tripped = Instant::now();
    assert_eq!(failed, threshold);

    // Open: everything goes to stable, nobody gets 503.
    let canary_hits = canary.hits();
    let mut checked = 0;
    while checked < 100 && tripped.elapsed() < Duration::from_secs(3) {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "stable");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} requests in 3 s");
    assert_eq!(canary.hits(), canary_hits, "no traffic to the open canary");
    let status = get_json(&proxy.admin_url("/status")).await;
    let split = &route(&status, "api")["split"];
    assert_eq!(
        split["shift"], "canary: breaker open, its 50% goes to stable",
        "{split}"
    );
    assert_eq!(split["targets"][0]["effective_percent"], 100.0, "{split}");
    assert_eq!(split["targets"][1]["effective_percent"], 0.0, "{split}");
    assert_eq!(split["targets"][1]["breaker"], "open", "{split}");

    // Fixed before the open time runs out: the trial succeeds, the canary gets its share back.
    canary.set(Behaviour::Ok("canary"));
    let c = &client;
    let p = &proxy;
    eventually(
        "the canary answers again",
        Duration::from_secs(20),
        || async move {
            let r = c.get(&p.url("/")).await;
            assert_eq!(r.status, 200, "{r:?}");
            r.text() == "canary"
        },
    )
    .await;
    let mut to_canary = 0;
    for _ in 0..200 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        if r.text() == "canary" {
            to_canary += 1;
        }
    }
    // Binomial(200, 0.5): mean 100, standard deviation 7.1; 60..=140 is over 5 of them.
    assert!(
        (60..=140).contains(&to_canary),
        "{to_canary} of 200 to the canary"
    );
    let status = get_json(&proxy.admin_url("/status")).await;
    let split = &route(&status, "api")["split"];
    assert!(split["shift"].is_null(), "{split}");
    assert_eq!(split["targets"][1]["breaker"], "closed", "{split}");
    assert_eq!(split["targets"][1]["effective_percent"], 50.0, "{split}");
}

#[tokio::test]
async fn levee_status_says_where_the_share_went() {
    let stable = Origin::new().body("stable").start().await;
    let canary = Origin::new().status(500).start().await;
    let cfg = split_config(
        stable.addr,
        canary.addr,
        (95, 5),
        &format!("{NO_OUTLIER}[upstream.circuit_breaker]\nconsecutive_failures = 1\nopen_duration = \"60s\"\n"),
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let mut sent = 0;
    while canary.hits() == 0 {
        client.get(&proxy.url("/")).await;
        sent += 1;
        assert!(sent < 2000, "the canary never got a request");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    let table = levee::status_cli::render_table(&status);
    assert!(
        table.contains("canary: breaker open, its 5% goes to stable"),
        "{table}"
    );
}

/// Which of two origins answered `n` sequential requests, for an upstream weighted 1:3.
async fn weighted_counts(balance: &str, n: usize) -> (usize, usize) {
    let light = Origin::new().body("light").start().await;
    let heavy = Origin::new().body("heavy").start().await;
    let cfg = format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["{}", {{ address = "{}", weight = 3 }}]
balance = "{balance}"
"#,
        light.addr, heavy.addr
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    for _ in 0..n {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    let eps = &status["upstreams"][0]["endpoints"];
    assert_eq!(eps[1]["weight"], 3, "{status}");
    (light.hits(), heavy.hits())
}

#[tokio::test]
async fn endpoint_weights_1_to_3_hold_with_p2c() {
    let (light, heavy) = weighted_counts("p2c", 2000).await;
    assert_eq!(light + heavy, 2000);
    // Binomial(2000, 0.25) for the light one: mean 500, standard deviation 19.4; 400..=600 is
    // over 5 of them either way.
    assert!((400..=600).contains(&light), "light {light}, heavy {heavy}");
}

#[tokio::test]
async fn endpoint_weights_1_to_3_hold_with_round_robin() {
    // Round robin is exact per cycle of 4 (one counter shared by every worker).
    let (light, heavy) = weighted_counts("round_robin", 400).await;
    assert_eq!((light, heavy), (100, 300));
}

#[tokio::test]
async fn a_reload_keeps_the_shift_while_the_canary_stays_broken() {
    let stable = Origin::new().body("stable").start().await;
    let canary = Origin::new().status(500).start().await;
    let canary_extra = format!(
        "{NO_OUTLIER}[upstream.circuit_breaker]\nconsecutive_failures = 1\nopen_duration = \"60s\"\n"
    );
    let cfg = split_config(stable.addr, canary.addr, (50, 50), &canary_extra);
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    let mut sent = 0;
    while canary.hits() == 0 {
        client.get(&proxy.url("/")).await;
        sent += 1;
        assert!(sent < 500, "the canary never got a request");
    }
    // The route changes (a new timeout), the upstreams do not: their breakers are kept, and so
    // is the shift.
    let reloaded = cfg.replace(
        "path_prefix = \"/\"\n",
        "path_prefix = \"/\"\ntimeout = \"20s\"\n",
    );
    assert_ne!(reloaded, cfg);
    proxy.reload(&reloaded).await.unwrap();
    for _ in 0..50 {
        let r = client.get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "stable");
    }
    assert_eq!(
        canary.hits(),
        1,
        "the open canary got traffic after the reload"
    );
    let status = get_json(&proxy.admin_url("/status")).await;
    let split = &route(&status, "api")["split"];
    assert_eq!(
        split["shift"], "canary: breaker open, its 50% goes to stable",
        "{split}"
    );

    // Weights changed by a reload apply at once.
    let reweighted = reloaded.replace("weight = 50 }, {", "weight = 60 }, {");
    proxy.reload(&reweighted).await.unwrap();
    let status = get_json(&proxy.admin_url("/status")).await;
    let split = &route(&status, "api")["split"];
    assert_eq!(split["targets"][0]["configured_percent"], 54.5, "{split}");
    assert_eq!(split["targets"][0]["effective_percent"], 100.0, "{split}");
}
