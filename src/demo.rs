//! `levee demo`: two built-in backends on loopback — one healthy, one that fails a share of its
//! requests and sometimes stalls — and levee in front of them, so a newcomer can watch breakers,
//! retries, ejections and rate limits at work without writing a config.

use crate::runtime::{ConfigSource, Levee};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How a demo backend behaves.
#[derive(Clone, Copy)]
pub struct Behaviour {
    pub name: &'static str,
    /// Share of requests answered with 500.
    pub fail_ratio: f64,
    /// Share of requests that stall before answering.
    pub stall_ratio: f64,
    pub stall: Duration,
}

/// Starts a demo backend on `127.0.0.1:0`.
pub async fn backend(b: Behaviour) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        if fastrand::f64() < b.stall_ratio {
                            tokio::time::sleep(b.stall).await;
                        }
                        let (status, body) = if fastrand::f64() < b.fail_ratio {
                            (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                format!("{} failed on {path}\n", b.name),
                            )
                        } else {
                            (StatusCode::OK, format!("hello from {} ({path})\n", b.name))
                        };
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = status;
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config, in front of the two backends.
pub fn config(bind: &str, admin: &str, healthy: SocketAddr, flaky: SocketAddr) -> String {
    format!(
        r#"# levee demo: generated at startup
[admin]
bind = "{admin}"
drain_timeout = "5s"

[[listener]]
name = "demo"
bind = "{bind}"

# Both backends, with retries: most flaky answers are retried onto the healthy one.
[[route]]
name = "app"
path_prefix = "/"
upstream = "app"
timeout = "3s"
[route.retry]
attempts = 3
per_try_timeout = "1s"
on = ["connect-failure", "reset", "gateway-error", "retriable-status"]
retriable_statuses = [500, 503]

# Only the flaky backend, no retries: watch its breaker trip and recover.
[[route]]
name = "flaky"
path_prefix = "/flaky"
upstream = "flaky"
timeout = "2s"

# 5 requests per second per client, burst 5.
[[route]]
name = "limited"
path_prefix = "/limited"
upstream = "app"
[route.rate_limit]
rps = 5
burst = 5
key = "client_ip"

[[upstream]]
name = "app"
endpoints = ["{healthy}", "{flaky}"]
balance = "p2c"
[upstream.outlier_detection]
consecutive_failures = 3
base_ejection_time = "10s"

[[upstream]]
name = "flaky"
endpoints = ["{flaky}"]
[upstream.circuit_breaker]
failure_rate_threshold = 0.3
minimum_calls = 10
window = {{ kind = "time", size = "10s" }}
open_duration = "10s"
half_open_calls = 3
"#
    )
}

/// Starts the backends and levee; returns levee and the backends' addresses.
pub async fn start(
    bind: &str,
    admin: &str,
    workers: crate::worker::Workers,
) -> Result<(Arc<Levee>, SocketAddr, SocketAddr), String> {
    let healthy = backend(Behaviour {
        name: "healthy",
        fail_ratio: 0.0,
        stall_ratio: 0.0,
        stall: Duration::ZERO,
    })
    .await
    .map_err(|e| format!("cannot start the healthy demo backend: {e}"))?;
    let flaky = backend(Behaviour {
        name: "flaky",
        fail_ratio: 0.4,
        stall_ratio: 0.1,
        stall: Duration::from_secs(3),
    })
    .await
    .map_err(|e| format!("cannot start the flaky demo backend: {e}"))?;
    let text = config(bind, admin, healthy, flaky);
    let levee = crate::run::start(
        ConfigSource::Text {
            name: "<demo>".into(),
            text,
        },
        crate::run::Options {
            watch: false,
            workers,
            release_memory: None,
        },
    )
    .await
    .map_err(|e| e.to_string())?
    .levee;
    Ok((levee, healthy, flaky))
}

pub async fn run(bind: &str, admin: &str, workers: crate::worker::Workers) -> ExitCode {
    // Before binding, as `crate::run` does: a signal right after startup drains.
    let started = match crate::lifecycle::Signals::install() {
        Ok(signals) => start(bind, admin, workers).await.map(|v| (signals, v)),
        Err(e) => Err(format!("cannot install signal handlers: {e}")),
    };
    let (signals, (levee, healthy, flaky)) = match started {
        Ok(v) => v,
        Err(e) => {
            eprintln!("levee demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let proxy = levee
        .listener_addr("demo")
        .await
        .map(|a| a.to_string())
        .unwrap_or_default();
    let admin = levee
        .admin_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        r#"levee demo is running.

  dashboard: http://{admin}/   (open it in a browser; it refreshes every second)

  proxy      http://{proxy}
  admin      http://{admin}   (JSON at /status, Prometheus at /metrics)
  backends   healthy {healthy}, flaky {flaky} (fails 40%, stalls 10% for 3s)

Try:
  curl -i http://{proxy}/                 # retried onto the healthy backend when the flaky one fails
  for i in $(seq 30); do curl -s -o /dev/null -w '%{{http_code}} ' http://{proxy}/flaky; done; echo
                                          # the flaky upstream's breaker opens: 503 circuit_open
  curl -s http://{admin}/status | head -c 600; echo
  levee status --admin {admin}            # the same, as a table, with the reason
  for i in $(seq 10); do curl -s -o /dev/null -w '%{{http_code}} ' http://{proxy}/limited; done; echo
                                          # 429 rate_limited after 5
Ctrl-C drains and exits."#
    );
    signals.serve(levee).await
}
