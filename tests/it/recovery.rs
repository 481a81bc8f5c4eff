//! Recovery that does not hammer a sick backend: the probe that gates half-open, the ramp after
//! a breaker closes, and endpoint slow start after an ejection, against real origins.

use crate::support::proxy::simple_config;
use crate::support::scrape::{get_json, upstream};
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

/// An origin that answers the probe path (`/healthz`) and every other (user) path with
/// statuses of their own, and counts each kind of request.
#[derive(Default)]
struct SplitOrigin {
    user_status: AtomicU16,
    probe_status: AtomicU16,
    user_hits: AtomicUsize,
    probe_hits: AtomicUsize,
}

impl SplitOrigin {
    async fn start(user: u16, probe: u16) -> (Arc<SplitOrigin>, SocketAddr) {
        let origin = Arc::new(SplitOrigin::default());
        origin.set(user, probe);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let o = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let o = o.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let o = o.clone();
                        async move {
                            let status = if req.uri().path() == "/healthz" {
                                o.probe_hits.fetch_add(1, Ordering::SeqCst);
                                o.probe_status.load(Ordering::SeqCst)
                            } else {
                                o.user_hits.fetch_add(1, Ordering::SeqCst);
                                o.user_status.load(Ordering::SeqCst)
                            };
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"x")));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (origin, addr)
    }

    fn set(&self, user: u16, probe: u16) {
        self.user_status.store(user, Ordering::SeqCst);
        self.probe_status.store(probe, Ordering::SeqCst);
    }

    fn user_hits(&self) -> usize {
        self.user_hits.load(Ordering::SeqCst)
    }

    fn probe_hits(&self) -> usize {
        self.probe_hits.load(Ordering::SeqCst)
    }
}

const NO_OUTLIER: &str = "[upstream.outlier_detection]\nconsecutive_failures = 0\n";

async fn breaker_status(proxy: &TestProxy) -> serde_json::Value {
    let status = get_json(&proxy.admin_url("/status")).await;
    upstream(&status, "app")["breaker"].clone()
}

/// Sends requests until one comes back as `circuit_open`; panics if none does within `WAIT`.
async fn until_open(proxy: &TestProxy, client: &Client) {
    eventually("the breaker opens", WAIT, || async {
        client.get(&proxy.url("/traffic")).await.error_kind() == "circuit_open"
    })
    .await;
}

/// While the probe fails, no user request reaches the upstream, across several open periods;
/// once the probe passes, user traffic flows again.
#[tokio::test]
async fn a_failing_probe_keeps_user_traffic_off_the_upstream() {
    let (origin, addr) = SplitOrigin::start(500, 503).await;
    let cfg = simple_config(
        &[addr],
        "",
        &format!(
            "{NO_OUTLIER}[upstream.circuit_breaker]\nminimum_calls = 5\nwindow = {{ kind = \"count\", size = 10 }}\nopen_duration = \"200ms\"\nmax_open_duration = \"400ms\"\nhalf_open_calls = 1\nprobe_path = \"/healthz\"\n"
        ),
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    until_open(&proxy, &client).await;
    let before = origin.user_hits();
    assert_eq!(before, 5, "five failures trip the breaker");

    // Several open periods (200ms, then 400ms ± 20%): users keep asking, only probes go out.
    let probes_then = origin.probe_hits();
    eventually("four probes fail", WAIT, || async {
        let r = client.get(&proxy.url("/traffic")).await;
        assert_eq!(r.error_kind(), "circuit_open", "{r:?}");
        origin.probe_hits() >= probes_then + 4
    })
    .await;
    assert_eq!(
        origin.user_hits(),
        before,
        "no user request while the probe fails"
    );
    let breaker = breaker_status(&proxy).await;
    assert_eq!(breaker["state"], "open", "{breaker}");
    let reason = breaker["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("open: probe GET /healthz failed (503)"),
        "{reason}"
    );
    assert!(
        reason.contains(", next probe in ") || reason.contains(", probe GET /healthz "),
        "{reason}"
    );
    // One probe per open period for the upstream, whatever the workers: each failed probe is
    // one re-open, and at most one more probe can be on its way while /status is read.
    let trips = breaker["trips"].as_u64().unwrap() as usize;
    let probes = origin.probe_hits();
    assert!(trips >= 5, "{breaker}");
    assert!(
        (trips - 1..=trips).contains(&probes),
        "{probes} probes for {trips} trips (the first trip came from user traffic)"
    );

    // The backend recovers: the next probe passes, the trial call goes through and closes.
    origin.set(200, 200);
    eventually("user traffic flows again", WAIT, || async {
        client.get(&proxy.url("/traffic")).await.status == 200
    })
    .await;
    assert!(origin.user_hits() > before);
    eventually("the breaker closes", WAIT, || async {
        breaker_status(&proxy).await["state"] == "closed"
    })
    .await;
}

/// Without a `probe_path`, the upstream's health check path is the probe.
#[tokio::test]
async fn the_health_check_path_is_the_probe_without_a_probe_path() {
    let (origin, addr) = SplitOrigin::start(500, 200).await;
    let cfg = simple_config(
        &[addr],
        "",
        &format!(
            "{NO_OUTLIER}[upstream.health_check]\npath = \"/healthz\"\ninterval = \"1h\"\n[upstream.circuit_breaker]\nminimum_calls = 5\nwindow = {{ kind = \"count\", size = 10 }}\nopen_duration = \"200ms\"\nhalf_open_calls = 1\n"
        ),
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    // The first health check runs at start-up; wait for it so it is not taken for a probe.
    eventually("the first health check", WAIT, || async {
        origin.probe_hits() >= 1
    })
    .await;
    origin.set(500, 503);
    until_open(&proxy, &client).await;
    let before = origin.user_hits();
    eventually("a probe fails", WAIT, || async {
        breaker_status(&proxy).await["reason"]
            .as_str()
            .unwrap()
            .starts_with("open: probe GET /healthz failed (503)")
    })
    .await;
    assert_eq!(origin.user_hits(), before);
}

/// Sends `n` requests one after the other; how many the upstream answered (the rest must be
/// the ramp's `circuit_open` refusals).
async fn admitted_of(proxy: &TestProxy, client: &Client, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        let r = client.get(&proxy.url("/traffic")).await;
        match (r.status.as_u16(), r.error_kind()) {
            (200, "") => admitted += 1,
            (503, "circuit_open") => {}
            other => panic!("unexpected answer during the ramp: {other:?} {r:?}"),
        }
    }
    admitted
}

/// After the breaker closes, the share admitted grows from 10% over `ramp_duration`; a failure
/// during the ramp opens the breaker again at once.
#[tokio::test]
async fn after_closing_the_share_of_traffic_ramps_up() {
    const RAMP: f64 = 8.0;
    let (origin, addr) = SplitOrigin::start(500, 200).await;
    let cfg = simple_config(
        &[addr],
        "",
        &format!(
            "{NO_OUTLIER}[upstream.circuit_breaker]\nminimum_calls = 5\nwindow = {{ kind = \"count\", size = 10 }}\nopen_duration = \"200ms\"\nhalf_open_calls = 1\nramp_duration = \"{RAMP}s\"\n"
        ),
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    until_open(&proxy, &client).await;
    origin.set(200, 200);
    // The one trial call closes the breaker; the ramp starts when its answer is recorded,
    // between `sent` and `closed`.
    let deadline = Instant::now() + WAIT;
    let sent = loop {
        let sent = Instant::now();
        if client.get(&proxy.url("/traffic")).await.status == 200 {
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "the trial call never closed the breaker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let closed = Instant::now();
    let reason = breaker_status(&proxy).await["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with("ramping up after recovery: "),
        "{reason}"
    );

    // The share at time t of the ramp is 0.1 + 0.9 t / RAMP. The ramp admits evenly (within one
    // request of share × requests, whatever the workers: the breaker is shared), so over a
    // window the admitted count lies between the share at the window's earliest possible start
    // and at its latest possible end, each with a request of slack. Both ends are computed from
    // the measured times, so a slow machine widens the bounds instead of failing the test.
    let share = |t: Duration| (0.1 + 0.9 * t.as_secs_f64() / RAMP).min(1.0);
    let check_window = |n: usize| {
        let proxy = &proxy;
        let client = &client;
        async move {
            let start = Instant::now();
            let admitted = admitted_of(proxy, client, n).await;
            let end = Instant::now();
            let lo = (share(start.saturating_duration_since(closed)) * n as f64).floor() - 1.0;
            let hi = (share(end.saturating_duration_since(sent)) * n as f64).ceil() + 1.0;
            assert!(
                (lo..=hi).contains(&(admitted as f64)),
                "{admitted} of {n} admitted, expected {lo}..={hi}"
            );
            eprintln!("ramp window: {admitted} of {n} admitted, bounds {lo}..={hi}");
            admitted
        }
    };
    let early = check_window(100).await;
    tokio::time::sleep_until(closed + Duration::from_secs_f64(RAMP / 2.0)).await;
    let later = check_window(100).await;
    assert!(later > early, "the share grows: {early} then {later}");

    // One failure during the ramp re-opens at once.
    origin.set(500, 200);
    eventually("a failure reaches the upstream", WAIT, || async {
        client.get(&proxy.url("/traffic")).await.status == 500
    })
    .await;
    let breaker = breaker_status(&proxy).await;
    assert_eq!(breaker["state"], "open", "{breaker}");
    assert_eq!(breaker["reason"], "failed during the ramp after recovery");
}

/// An endpoint back from an ejection gets a small share of the picks at first (Envoy's slow
/// start), instead of half of them.
#[tokio::test]
async fn an_endpoint_back_from_ejection_starts_slow() {
    let steady = Origin::new().start().await;
    let returning = Origin::new().fail_first(2).start().await;
    let cfg = simple_config(
        &[steady.addr, returning.addr],
        "",
        "[upstream.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"300ms\"\nmax_ejection_percent = 50\n[upstream.circuit_breaker]\nminimum_calls = 1000\nramp_duration = \"60s\"\n",
    );
    let proxy = TestProxy::start(&cfg).await;
    let client = Client::new();
    eventually("the returning endpoint fails twice", WAIT, || async {
        client.get(&proxy.url("/traffic")).await;
        returning.hits() >= 2
    })
    .await;
    let ejected_at = Instant::now();
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(
        upstream(&status, "app")["endpoints"][1]["ejected"],
        true,
        "{status}"
    );
    tokio::time::sleep_until(ejected_at + Duration::from_millis(400)).await;
    let before = returning.hits();
    let n = 300;
    for _ in 0..n {
        assert_eq!(client.get(&proxy.url("/traffic")).await.status, 200);
    }
    let back_at = Instant::now();
    let picks = returning.hits() - before;
    // Its weight is 0.1 at first and at most 0.1 + 0.9 × (elapsed / 60s) by the end, so its
    // expected share is at most w / (1 + w). At 0.1 that is 27 of 300 (standard deviation 5);
    // without slow start it would be 150. The bound allows for a slow machine and 5 deviations.
    let elapsed = back_at.duration_since(ejected_at).as_secs_f64();
    let w = 0.1 + 0.9 * elapsed / 60.0;
    let expected = n as f64 * w / (1.0 + w);
    let bound = expected + 5.0 * (expected * (1.0 - w / (1.0 + w))).sqrt() + 5.0;
    eprintln!("slow start: {picks} of {n} picks, bound {bound:.0}");
    assert!(
        (picks as f64) < bound,
        "{picks} of {n} picks, expected at most {bound:.0}"
    );
    assert!(picks > 0, "it does get traffic");
}
