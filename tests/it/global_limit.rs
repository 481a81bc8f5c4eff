//! `scope = "global"` rate limits shared by several levee instances through a real Redis, and
//! what happens when Redis is unreachable, killed or comes back.

use crate::support::origin::dead_addr;
use crate::support::redis::TestRedis;
use crate::support::scrape::{get_json, get_text, metric_or_zero};
use crate::support::*;
use std::time::Duration;
use tokio::time::Instant;

/// A route name no other test (sharing the CI Redis) uses, so buckets do not mix.
fn unique_route() -> String {
    format!("g{:016x}", fastrand::u64(..))
}

fn config(origin: &OriginHandle, route: &str, limit: &str, redis: &str) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "{route}"
path_prefix = "/"
upstream = "app"
[route.rate_limit]
{limit}

[[upstream]]
name = "app"
endpoints = ["{}"]

{redis}
"#,
        origin.addr
    )
}

#[derive(Default, Debug)]
struct Counts {
    ok: usize,
    limited: usize,
    other: usize,
}

/// Four clients, spread over `urls`, each sending a request every ~5 ms for `run`.
async fn drive(urls: &[String], run: Duration) -> (Counts, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = urls[i % urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let mut c = Counts::default();
            while start.elapsed() < run {
                let r = client.get(&url).await;
                match r.status.as_u16() {
                    200 => c.ok += 1,
                    429 => {
                        assert_eq!(r.error_kind(), "rate_limited");
                        assert!(r.headers.contains_key("retry-after"));
                        c.limited += 1;
                    }
                    _ => c.other += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            c
        }));
    }
    let mut total = Counts::default();
    for t in tasks {
        let c = t.await.unwrap();
        total.ok += c.ok;
        total.limited += c.limited;
        total.other += c.other;
    }
    (total, start.elapsed())
}

#[tokio::test]
async fn two_instances_share_one_global_limit() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let origin = Origin::new().start().await;
    let (rps, burst) = (20.0, 20.0);
    let redis_table = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"250ms\"\ninstances = 2\n",
        redis.url
    );
    let run = Duration::from_secs(2);

    // Global: both instances draw from one bucket in Redis.
    let route = unique_route();
    let limit = "rps = 20\nburst = 20\nkey = \"global\"\nscope = \"global\"";
    let cfg = config(&origin, &route, limit, &redis_table);
    let a = TestProxy::start(&cfg).await;
    let b = TestProxy::start(&cfg).await;
    let (global, elapsed) = drive(&[a.url("/"), b.url("/")], run).await;
    // The documented bound: rps × T + burst + N × (k − 1), with k = 1 here; +2 for the instant
    // the bucket started, which is a little before the first request we timed.
    let bound = rps * elapsed.as_secs_f64() + burst;
    eprintln!("global: {global:?} in {elapsed:?}, bound {bound:.0}");
    assert_eq!(global.other, 0, "{global:?}");
    assert!(global.limited > 0, "{global:?}");
    assert!(global.ok as f64 <= bound + 2.0, "{global:?} > {bound}");
    assert!(
        global.ok as f64 >= 0.6 * bound,
        "{global:?} far below {bound}"
    );
    let status = get_json(&a.admin_url("/status")).await;
    assert_eq!(status["redis"]["state"], "healthy", "{status}");
    assert_eq!(status["routes"][0]["rate_limit"]["scope"], "global");
    assert!(!status["redis"]["url"].as_str().unwrap().is_empty());

    // Local: the same limit per instance allows about twice as much.
    let route = unique_route();
    let limit = "rps = 20\nburst = 20\nkey = \"global\"\nscope = \"local\"";
    let cfg = config(&origin, &route, limit, &redis_table);
    let c = TestProxy::start(&cfg).await;
    let d = TestProxy::start(&cfg).await;
    let (local, elapsed) = drive(&[c.url("/"), d.url("/")], run).await;
    let one = rps * elapsed.as_secs_f64() + burst;
    eprintln!("local: {local:?} in {elapsed:?}, one instance's bound {one:.0}");
    assert!(local.ok as f64 >= 1.6 * one, "{local:?}");
    assert!(local.ok as f64 <= 2.0 * one + 4.0, "{local:?}");
    assert!(
        local.ok as f64 >= 1.5 * global.ok as f64,
        "{local:?} vs {global:?}"
    );
    for p in [a, b, c, d] {
        p.shutdown().await;
    }
}

#[tokio::test]
async fn unreachable_redis_follows_on_redis_error_without_hanging() {
    let origin = Origin::new().start().await;
    let dead = dead_addr().await;
    let route = unique_route();
    let limit = "rps = 1000\nburst = 1000\nscope = \"global\"";
    let redis_table = |mode: &str| {
        format!("[redis]\nurl = \"redis://:hunter2@{dead}\"\ntimeout = \"50ms\"\non_redis_error = \"{mode}\"\n")
    };
    let proxy = TestProxy::start(&config(&origin, &route, limit, &redis_table("deny"))).await;
    let client = Client::new();
    for _ in 0..10 {
        let t = Instant::now();
        let r = client.get(&proxy.url("/")).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.error_kind(), "rate_limited");
    }
    assert_eq!(origin.hits(), 0);

    let status = get_json(&proxy.admin_url("/status")).await;
    let redis = &status["redis"];
    assert_eq!(redis["state"], "failing", "{status}");
    assert_eq!(redis["on_redis_error"], "deny");
    assert!(redis["last_error"].is_string(), "{redis}");
    let url = redis["url"].as_str().unwrap();
    assert!(!url.contains("hunter2"), "password shown: {url}");
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    assert_eq!(metric_or_zero(&metrics, "levee_redis_up", &[]), 0.0);
    assert!(metric_or_zero(&metrics, "levee_redis_errors_total", &[]) >= 3.0);
    assert!(
        metric_or_zero(&metrics, "levee_redis_fallback_total", &[("mode", "deny")]) >= 10.0,
        "{metrics}"
    );

    // allow: every request goes through, still quickly.
    proxy
        .reload(&config(&origin, &route, limit, &redis_table("allow")))
        .await
        .unwrap();
    for _ in 0..10 {
        let t = Instant::now();
        let r = client.get(&proxy.url("/")).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(status["redis"]["on_redis_error"], "allow");
    proxy.shutdown().await;
}

#[tokio::test]
async fn redis_killed_mid_test_then_back() {
    let Some(mut redis) = TestRedis::own().await else {
        return;
    };
    let origin = Origin::new().start().await;
    let route = unique_route();
    // instances = 2: while Redis is down this instance limits at rps/2, burst/2.
    let limit = "rps = 1\nburst = 4\nscope = \"global\"";
    let redis_table = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"100ms\"\non_redis_error = \"local\"\ninstances = 2\n",
        redis.url
    );
    let proxy = TestProxy::start(&config(&origin, &route, limit, &redis_table)).await;
    let client = Client::new();
    let burst = |n: usize| {
        let (client, url) = (client.clone(), proxy.url("/"));
        async move {
            let mut ok = 0;
            for _ in 0..n {
                let t = Instant::now();
                let r = client.get(&url).await;
                assert!(
                    t.elapsed() < Duration::from_secs(1),
                    "took {:?}",
                    t.elapsed()
                );
                ok += usize::from(r.status == 200);
            }
            ok
        }
    };
    assert_eq!(burst(8).await, 4, "the global burst");

    redis.kill();
    // Redis's last refusal is remembered for its retry-after (1 s at 1 rps) without asking it.
    assert_eq!(burst(2).await, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Local fallback at burst 4/2 = 2 (+ at most one refill while we send).
    let during = burst(8).await;
    assert!((2..=3).contains(&during), "{during}");
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(status["redis"]["state"], "failing", "{status}");
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    assert!(metric_or_zero(&metrics, "levee_redis_fallback_total", &[("mode", "local")]) >= 8.0);

    // Back (empty, so the bucket is full again): the global limit resumes after the breaker's probe.
    redis.restart().await;
    let (a, p) = (&proxy, &client);
    eventually(
        "redis healthy again",
        Duration::from_secs(15),
        move || async move {
            p.get(&a.url("/")).await;
            get_json(&a.admin_url("/status")).await["redis"]["state"] == "healthy"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(burst(8).await, 4, "the global burst again");
    let metrics = get_text(&proxy.admin_url("/metrics")).await;
    assert_eq!(metric_or_zero(&metrics, "levee_redis_up", &[]), 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn scope_and_redis_changes_take_effect_on_reload() {
    let Some(redis) = TestRedis::get().await else {
        return;
    };
    let origin = Origin::new().start().await;
    let route = unique_route();
    let local = "rps = 1\nburst = 2\nscope = \"local\"";
    let global = "rps = 1\nburst = 2\nscope = \"global\"";
    let table = format!("[redis]\nurl = \"{}\"\ntimeout = \"250ms\"\n", redis.url);
    let proxy = TestProxy::start(&config(&origin, &route, local, "")).await;
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(status["redis"].is_null());

    proxy
        .reload(&config(&origin, &route, global, &table))
        .await
        .unwrap();
    let client = Client::new();
    let ok = {
        let mut ok = 0;
        for _ in 0..5 {
            ok += usize::from(client.get(&proxy.url("/")).await.status == 200);
        }
        ok
    };
    assert_eq!(ok, 2);
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(status["routes"][0]["rate_limit"]["scope"], "global");
    assert_eq!(status["redis"]["state"], "healthy", "{status}");

    // A second instance on the same route shares the (spent) bucket.
    let other = TestProxy::start(&config(&origin, &route, global, &table)).await;
    assert_eq!(client.get(&other.url("/")).await.status, 429);

    // Back to local: its own fresh bucket.
    proxy
        .reload(&config(&origin, &route, local, &table))
        .await
        .unwrap();
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    proxy.shutdown().await;
    other.shutdown().await;
}

/// How often Redis is asked with leasing, and the added latency against a local limit. Prints the
/// figures for the record; asserts only a generous bound on the calls.
#[tokio::test]
async fn leasing_keeps_redis_off_the_hot_path() {
    let Some(redis) = TestRedis::own().await else {
        return;
    };
    let origin = Origin::new().start().await;
    let table = |instances: u32| {
        format!(
            "[redis]\nurl = \"{}\"\ntimeout = \"250ms\"\ninstances = {instances}\n",
            redis.url
        )
    };
    let mut figures = Vec::new();
    let mut before = 0;
    // k = 100 with 1 instance; k = 1 (a Redis call per request) when 100 instances share it.
    for (what, scope, instances) in [
        ("local", "local", 1),
        ("global k=100", "global", 1),
        ("global k=1", "global", 100),
    ] {
        let table = table(instances);
        let limit = format!("rps = 2000\nburst = 2000\nscope = \"{scope}\"");
        let proxy = TestProxy::start(&config(&origin, &unique_route(), &limit, &table)).await;
        let client = Client::new();
        for _ in 0..50 {
            client.get(&proxy.url("/")).await;
        }
        let mut took = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            assert_eq!(client.get(&proxy.url("/")).await.status, 200);
            took.push(t.elapsed());
        }
        took.sort();
        figures.push((what, took[took.len() / 2], took[took.len() * 99 / 100]));
        proxy.shutdown().await;
        if what == "global k=100" {
            before = redis_calls(&redis.url).await;
        }
    }
    let after = redis_calls(&redis.url).await;
    eprintln!(
        "leasing: {before} Redis calls for 550 requests with k = 100, {} with k = 1; latency p50/p99: {figures:?}",
        after - before
    );
    assert!(before >= 1);
    assert!(before <= 55, "{before} calls: leasing is not working");
}

/// EVALSHA and EVAL calls Redis has served.
async fn redis_calls(url: &str) -> u64 {
    let info: String = {
        let client = ::redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    let calls = |cmd: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    calls("evalsha") + calls("eval")
}

#[test]
fn check_refuses_global_scope_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levee.toml");
    // `scope = "global"` is on line 11, its value at column 9.
    let text = r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
upstream = "app"
[route.rate_limit]
rps = 5
burst = 5
scope = "global"

[[upstream]]
name = "app"
endpoints = ["127.0.0.1:1"]
"#;
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!("{}:11:9: ", path.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&want) && l.contains("[redis]")),
        "want a problem at {want}: {stderr}"
    );
}
