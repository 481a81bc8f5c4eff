//! levee with several workers, each a single-threaded runtime on its own thread with its own
//! SO_REUSEPORT listener socket (`levee::worker`): new connections spread over the workers, the
//! metrics a scrape shows add up every worker's shard, and a reload reaches every worker,
//! connections opened before it included. (The whole suite also runs with four workers:
//! `LEVEE_TEST_WORKERS=4`, as `.ci/run` does.)

use crate::support::proxy::simple_config;
use crate::support::raw::RawConn;
use crate::support::scrape::{get_text, metric_or_zero};
use crate::support::*;
use levee::metrics::RequestLabels;
use levee::Workers;

const WORKERS: usize = 4;

async fn start(toml: &str) -> TestProxy {
    TestProxy::start_with(toml, Workers::Threads(WORKERS)).await
}

async fn get_body(c: &mut RawConn) -> String {
    c.send("GET / HTTP/1.1\r\nHost: app.example\r\n\r\n").await;
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn connections_spread_over_the_workers_and_the_metrics_add_up() {
    let origin = Origin::new().body("ok").start().await;
    let proxy = start(&simple_config(&[origin.addr], "", "")).await;
    // Fresh connections: the kernel hashes each one's address pair to one worker's socket; 64
    // of them all on one of four workers would be a 1 in 4^63 chance.
    for _ in 0..64 {
        let mut c = RawConn::connect(proxy.addr).await;
        assert_eq!(get_body(&mut c).await, "ok");
    }
    let served = proxy
        .levee
        .shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: "app".into(),
            upstream: "app".into(),
            class: "2xx",
        })
        .per_worker();
    assert_eq!(served.iter().sum::<u64>(), 64, "{served:?}");
    assert_eq!(
        served[0], 0,
        "the control runtime served requests: {served:?}"
    );
    let workers_serving = served.iter().filter(|n| **n > 0).count();
    assert!(
        workers_serving >= 2,
        "one worker served everything: {served:?}"
    );

    // What a scrape shows is the sum over the workers.
    let text = get_text(&proxy.admin_url("/metrics")).await;
    let total = metric_or_zero(
        &text,
        "levee_requests_total",
        &[("route", "app"), ("class", "2xx")],
    );
    assert_eq!(total, 64.0, "{text}");
    let count = metric_or_zero(
        &text,
        "levee_request_duration_seconds_count",
        &[("route", "app")],
    );
    assert_eq!(count, 64.0, "{text}");
    assert_eq!(
        metric_or_zero(&text, "levee_in_flight_requests", &[]),
        0.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_reload_reaches_every_worker_and_its_open_connections() {
    let a = Origin::new().body("a").start().await;
    let b = Origin::new().body("b").start().await;
    let proxy = start(&simple_config(&[a.addr], "", "")).await;
    // Keep-alive connections on (very likely) every worker, opened before the reload.
    let mut conns = Vec::new();
    for _ in 0..32 {
        let mut c = RawConn::connect(proxy.addr).await;
        assert_eq!(get_body(&mut c).await, "a");
        conns.push(c);
    }
    proxy
        .reload(&simple_config(&[b.addr], "", ""))
        .await
        .expect("reload");
    for c in &mut conns {
        assert_eq!(get_body(c).await, "b", "a worker kept the old snapshot");
    }
    let mut fresh = RawConn::connect(proxy.addr).await;
    assert_eq!(get_body(&mut fresh).await, "b");
    proxy.shutdown().await;
}

/// `Shared::publish` tells every live subscriber before it returns (a dropped one is skipped).
#[test]
fn publish_tells_every_live_subscriber_before_it_returns() {
    use levee::shared::{Follow, Shared};
    use levee::snapshot::Snapshot;
    use std::sync::{Arc, Mutex};
    struct Seen(Mutex<Vec<u64>>);
    impl Follow for Seen {
        fn follow(&self, snapshot: &Arc<Snapshot>) {
            self.0.lock().unwrap().push(snapshot.version);
        }
    }
    let metrics = Arc::new(levee::metrics::Metrics::new());
    let text = simple_config(&["127.0.0.1:1".parse().unwrap()], "", "");
    let config = || levee::config::parse("t.toml", &text, std::path::Path::new(".")).unwrap();
    let first = Snapshot::build(config(), None, &metrics).unwrap();
    let shared = Shared::new(first, metrics.clone());
    let seen = shared.subscribe(|s| Arc::new(Seen(Mutex::new(vec![s.version]))));
    let gone = shared.subscribe(|_| Arc::new(Seen(Mutex::new(vec![]))));
    drop(gone);
    let old = shared.snapshot.load_full();
    let second = Arc::new(Snapshot::build(config(), Some(&old), &metrics).unwrap());
    let v2 = second.version;
    shared.publish(second);
    assert_eq!(*seen.0.lock().unwrap(), [old.version, v2]);
    assert_ne!(old.version, v2);
}
