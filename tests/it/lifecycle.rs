//! The lifecycle: reloads (admin, SIGHUP, file watch) that never drop a request and carry live
//! state over, graceful drain on SIGTERM, sd_notify, and the systemd unit. Tests that need
//! signals or the environment run the real binary.

use crate::support::proxy::simple_config;
use crate::support::*;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// A GET that reports transport failures instead of panicking: `None` when the connection is
/// refused or reset (a process that is gone, a listener that stopped accepting).
pub async fn try_get(url: &str) -> Option<(StatusCode, String)> {
    let client: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
    let req = http::Request::get(url).body(Full::default()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A port nothing listens on right now: bind 127.0.0.1:0, note it, close.
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A config for the real binary: fixed ports, route "/" to upstream "app" at `origin`.
fn bin_config(listen: SocketAddr, admin: SocketAddr, origin: SocketAddr) -> String {
    format!(
        r#"[admin]
bind = "{admin}"
drain_timeout = "5s"

[[listener]]
name = "main"
bind = "{listen}"

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["{origin}"]
"#
    )
}

/// Writes a file the way editors and deploy tools do: a temporary file renamed over the old one.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The real `levee` binary, killed on drop if still running.
pub struct BinProxy {
    pub child: Child,
    /// Holds the config file; removed on drop.
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// `LEVEE_TEST_WORKERS` when above 2, else 2.
fn bin_workers() -> String {
    std::env::var("LEVEE_TEST_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(2)
        .max(2)
        .to_string()
}

impl BinProxy {
    /// Spawns `levee run --config FILE ARGS…` on a config made by `make(listen, admin)`.
    pub fn spawn(
        make: impl Fn(SocketAddr, SocketAddr) -> String,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> BinProxy {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("levee.toml");
        let (listen, admin) = (free_port(), free_port());
        std::fs::write(&config, make(listen, admin)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_levee"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            // Two workers (SO_REUSEPORT sockets, a control runtime) unless the run asks for more.
            .args(["--workers", &bin_workers(), "--log-level", "info"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("spawn levee");
        BinProxy {
            child,
            _dir: dir,
            config,
            listen,
            admin,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Waits (bounded) until `/ready` answers 200.
    pub async fn wait_ready(&mut self) {
        let url = self.admin_url("/ready");
        let child = &mut self.child;
        eventually("levee /ready is 200", WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("levee exited before it was ready: {status}");
            }
            let url = url.clone();
            async move { matches!(try_get(&url).await, Some((s, _)) if s == 200) }
        })
        .await;
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "levee did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinProxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn body_is(url: &str, want: &str) -> bool {
    matches!(try_get(url).await, Some((s, b)) if s == 200 && b == want)
}

fn with_admin(toml: &str) -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n{toml}")
}

#[tokio::test]
async fn post_reload_switches_upstream_and_refuses_an_invalid_file() {
    let a = Origin::new().body("A").start().await;
    let b = Origin::new().body("B").start().await;
    let proxy = TestProxy::start(&simple_config(&[a.addr], "", "")).await;
    let client = Client::new();
    assert_eq!(client.get(&proxy.url("/")).await.text(), "A");

    std::fs::write(&proxy.path, with_admin(&simple_config(&[b.addr], "", ""))).unwrap();
    let r = client
        .request(Method::POST, &proxy.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["version"], 2);
    assert_eq!(client.get(&proxy.url("/")).await.text(), "B");

    // A route naming an upstream that does not exist, and a mistyped key.
    let bad = simple_config(&[a.addr], "", "").replace(
        "upstream = \"app\"\n",
        "upstream = \"nope\"\ntimeuot = \"1s\"\n",
    );
    std::fs::write(&proxy.path, with_admin(&bad)).unwrap();
    let r = client
        .request(Method::POST, &proxy.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["ok"], false);
    let errors: Vec<String> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(!errors.is_empty());
    let file = proxy.path.display().to_string();
    for e in &errors {
        let rest = e
            .strip_prefix(&format!("{file}:"))
            .unwrap_or_else(|| panic!("error without FILE: prefix: {e}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().unwrap().parse().expect("LINE");
        let col: usize = parts.next().unwrap().parse().expect("COL");
        assert!(line > 1 && col >= 1, "{e}");
    }
    // The old config keeps serving.
    assert_eq!(client.get(&proxy.url("/")).await.text(), "B");
    let status: serde_json::Value =
        serde_json::from_slice(&client.get(&proxy.admin_url("/status")).await.body).unwrap();
    assert_eq!(status["version"], 2);
}

#[tokio::test]
async fn sighup_reloads_the_real_binary() {
    let a = Origin::new().body("A").start().await;
    let b = Origin::new().body("B").start().await;
    let (aa, ba) = (a.addr, b.addr);
    let mut proxy = BinProxy::spawn(|l, ad| bin_config(l, ad, aa), &[], &[]);
    proxy.wait_ready().await;
    assert!(body_is(&proxy.url("/"), "A").await);

    replace_file(&proxy.config, &bin_config(proxy.listen, proxy.admin, ba));
    proxy.signal("HUP");
    let url = proxy.url("/");
    eventually("the route switches to origin B", WAIT, || {
        body_is(&url, "B")
    })
    .await;
    // Still running after the reload.
    assert!(proxy.child.try_wait().unwrap().is_none());
    proxy.signal("TERM");
    assert!(proxy.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_fail_no_request() {
    let a = Origin::new().body("A").start().await;
    let b = Origin::new().body("B").start().await;
    let config_a = simple_config(&[a.addr], "", "");
    let config_b = simple_config(&[b.addr], "", "");
    let proxy = TestProxy::start(&config_a).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = proxy.url("/");
        clients.push(tokio::spawn(async move {
            // One keep-alive client per task: its connection lives across the reloads.
            let client: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>> =
                hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url).body(Full::default()).unwrap();
                match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await.map(|c| c.to_bytes());
                        match body {
                            Ok(body) if status == 200 && (body == "A" || body == "B") => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failed.lock().push(format!("{status}: {other:?}")),
                        }
                    }
                    Err(e) => failed.lock().push(format!("transport: {e:?}")),
                }
            }
        }));
    }
    // Let traffic flow before the first reload.
    let flowing = ok.clone();
    eventually("requests flow", WAIT, || {
        let n = flowing.load(Ordering::Relaxed);
        async move { n >= 20 }
    })
    .await;
    for i in 0..50 {
        let cfg = if i % 2 == 0 { &config_b } else { &config_a };
        let before = ok.load(Ordering::Relaxed);
        let v = proxy.reload(cfg).await.unwrap();
        assert_eq!(v, i + 2);
        // A few requests between reloads, so every snapshot serves some.
        let counter = ok.clone();
        eventually("requests flow between reloads", WAIT, || {
            let n = counter.load(Ordering::Relaxed);
            async move { n >= before + 4 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) >= 200);
    assert!(a.hits() > 0 && b.hits() > 0);
}

fn breaker_config(app: SocketAddr, other: SocketAddr, app_extra: &str) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "other"
path_prefix = "/other"
upstream = "other"

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["{app}"]
{app_extra}

[upstream.circuit_breaker]
consecutive_failures = 3
open_duration = "60s"

[upstream.outlier_detection]
consecutive_failures = 1000

[[upstream]]
name = "other"
endpoints = ["{other}"]
"#
    )
}

async fn breaker_state(client: &Client, proxy: &TestProxy, name: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_slice(&client.get(&proxy.admin_url("/status")).await.body).unwrap();
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {status}"))["breaker"]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn breaker_state_survives_a_reload_that_does_not_touch_its_upstream() {
    let failing = Origin::new().status(500).start().await;
    let other = Origin::new().body("other").start().await;
    let other2 = Origin::new().body("other2").start().await;
    let proxy = TestProxy::start(&breaker_config(failing.addr, other.addr, "")).await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(&proxy.url("/")).await.status, 500);
    }
    assert_eq!(breaker_state(&client, &proxy, "app").await, "open");
    let r = client.get(&proxy.url("/")).await;
    assert_eq!((r.status.as_u16(), r.error_kind()), (503, "circuit_open"));

    // Change only the other upstream: the app breaker stays open.
    proxy
        .reload(&breaker_config(failing.addr, other2.addr, ""))
        .await
        .unwrap();
    assert_eq!(client.get(&proxy.url("/other")).await.text(), "other2");
    assert_eq!(breaker_state(&client, &proxy, "app").await, "open");
    let hits = failing.hits();
    let r = client.get(&proxy.url("/")).await;
    assert_eq!((r.status.as_u16(), r.error_kind()), (503, "circuit_open"));
    assert_eq!(
        failing.hits(),
        hits,
        "an open breaker sends nothing upstream"
    );

    // Change the app upstream itself: it starts fresh, closed.
    proxy
        .reload(&breaker_config(
            failing.addr,
            other2.addr,
            "connect_timeout = \"1234ms\"",
        ))
        .await
        .unwrap();
    assert_eq!(breaker_state(&client, &proxy, "app").await, "closed");
    let r = client.get(&proxy.url("/")).await;
    assert_eq!(r.status, 500, "reaches the origin again");
    assert_eq!(failing.hits(), hits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    // The origin holds the request until the test has seen levee draining, so the check does not
    // race a timer on a loaded machine.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = Origin::new()
        .behaviour(Behaviour::Gate(gate.clone()))
        .start()
        .await;
    let sa = slow.addr;
    let mut proxy = BinProxy::spawn(|l, ad| bin_config(l, ad, sa), &[], &[]);
    proxy.wait_ready().await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    eventually("the slow request reached the origin", WAIT, || {
        let n = slow.hits();
        async move { n == 1 }
    })
    .await;
    proxy.signal("TERM");

    // While the slow request is held, `/ready` turns 503 (the admin listener stays up to say
    // so). Probing the main listener instead would race the drain: a probe accepted just before
    // the listener closes is held at the gated origin like the request under test.
    let ready = proxy.admin_url("/ready");
    eventually("/ready 503 while draining", WAIT, || {
        let ready = ready.clone();
        async move { matches!(try_get(&ready).await, Some((s, _)) if s == 503) }
    })
    .await;
    if in_flight.is_finished() {
        panic!("the held request ended early: {:?}", in_flight.await);
    }
    gate.add_permits(1);
    let answer = in_flight.await.unwrap();
    let (status, body) = answer.expect("the in-flight request completed");
    assert_eq!(status, 200);
    assert_eq!(body, "slow ok\n");
    let exit = proxy.wait_exit(WAIT).await;
    assert_eq!(exit.code(), Some(0), "{exit}");
}

/// Reads datagrams from the notify socket until one contains `want`; returns everything read.
fn read_until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = std::time::SystemTime::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            std::time::SystemTime::now() < deadline,
            "no {want} on NOTIFY_SOCKET; got {seen:?}"
        );
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_reloading_stopping() {
    let origin = Origin::new().start().await;
    let oa = origin.addr;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sock = Arc::new(sock);
    let mut proxy = BinProxy::spawn(
        |l, ad| bin_config(l, ad, oa),
        &[],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let read = |want: &'static str| {
        let sock = sock.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            read_until(&sock, want, &mut seen);
            seen
        })
    };

    let seen = read("READY=1").await.unwrap();
    let ready = seen.last().unwrap();
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=")),
        "READY=1 comes with a STATUS= line: {ready:?}"
    );
    // READY=1 is sent once the listeners are bound.
    assert!(try_get(&proxy.url("/")).await.is_some());
    proxy.wait_ready().await;

    proxy.signal("HUP");
    let seen = read("READY=1").await.unwrap();
    let reloading = seen
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(
        seen[reloading].lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "RELOADING=1 carries MONOTONIC_USEC: {:?}",
        seen[reloading]
    );
    assert!(reloading < seen.len() - 1, "READY=1 follows RELOADING=1");

    proxy.signal("TERM");
    read("STOPPING=1").await.unwrap();
    assert!(proxy.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_watchdog_pings() {
    let origin = Origin::new().start().await;
    let oa = origin.addr;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // WATCHDOG_PID is left unset: the watchdog is then for the main process.
    let _proxy = BinProxy::spawn(
        |l, ad| bin_config(l, ad, oa),
        &[],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "100000"),
        ],
    );
    tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        read_until(&sock, "READY=1", &mut seen);
        read_until(&sock, "WATCHDOG=1", &mut seen);
        read_until(&sock, "WATCHDOG=1", &mut seen);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn watch_flag_reloads_when_the_config_file_changes() {
    let a = Origin::new().body("A").start().await;
    let b = Origin::new().body("B").start().await;
    let (aa, ba) = (a.addr, b.addr);
    let mut proxy = BinProxy::spawn(|l, ad| bin_config(l, ad, aa), &["--watch"], &[]);
    proxy.wait_ready().await;
    assert!(body_is(&proxy.url("/"), "A").await);

    // Replaced by rename, as editors do: the watch is on the directory, so it survives.
    replace_file(&proxy.config, &bin_config(proxy.listen, proxy.admin, ba));
    let url = proxy.url("/");
    eventually("the watch reloads and switches to B", WAIT, || {
        body_is(&url, "B")
    })
    .await;
    // And a plain in-place write is seen too.
    std::fs::write(&proxy.config, bin_config(proxy.listen, proxy.admin, aa)).unwrap();
    eventually("the watch reloads back to A", WAIT, || body_is(&url, "A")).await;
    let status = try_get(&proxy.admin_url("/status")).await.unwrap().1;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["version"], 3, "one reload per change: {status}");
}

#[tokio::test]
async fn admin_watch_setting_reloads_in_process() {
    let a = Origin::new().body("A").start().await;
    let b = Origin::new().body("B").start().await;
    let watched = |addr| {
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\nwatch = true\ndrain_timeout = \"5s\"\n\n{}",
            simple_config(&[addr], "", "")
        )
    };
    let proxy = TestProxy::start(&watched(a.addr)).await;
    assert!(proxy.running.is_watching());
    replace_file(&proxy.path, &watched(b.addr));
    let url = proxy.url("/");
    eventually("the watch switches to B", WAIT, || body_is(&url, "B")).await;
}

#[tokio::test]
async fn a_reload_that_turns_the_watch_on_starts_it() {
    let a = Origin::new().body("A").start().await;
    let b = Origin::new().body("B").start().await;
    let config = |addr, watch| {
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\nwatch = {watch}\ndrain_timeout = \"5s\"\n\n{}",
            simple_config(&[addr], "", "")
        )
    };
    let proxy = TestProxy::start(&config(a.addr, false)).await;
    assert!(!proxy.running.is_watching());
    proxy.reload(&config(a.addr, true)).await.unwrap();
    assert!(proxy.running.is_watching(), "on when the reload returns");
    replace_file(&proxy.path, &config(b.addr, true));
    let url = proxy.url("/");
    eventually("the watch switches to B", WAIT, || body_is(&url, "B")).await;
}

#[tokio::test]
async fn every_reload_is_announced_to_its_listeners() {
    let origin = Origin::new().start().await;
    let config = simple_config(&[origin.addr], "", "");
    let proxy = TestProxy::start(&config).await;
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heard.clone();
    proxy.levee.on_reload(move |r| h.lock().unwrap().push(r));
    proxy.reload(&config).await.unwrap();
    assert!(proxy.reload("not toml [").await.is_err());
    use levee::runtime::Reload::{Begins, Ended};
    assert_eq!(
        *heard.lock().unwrap(),
        [Begins, Ended(Ok(2)), Begins, Ended(Err(2))]
    );
}

#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/levee.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/levee run --config /etc/levee/levee.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=1048576",
        "ConfigurationDirectory=levee",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "levee.service lacks `{line}`"
        );
    }
    let stop: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().strip_suffix('s'))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec=Ns");
    assert!(
        stop > 30,
        "TimeoutStopSec must exceed the 30s default drain"
    );

    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             SKIPPED: systemd-analyze is not installed; levee.service was NOT verified\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    };
    assert!(out.status.success());
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("levee.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/levee", env!("CARGO_BIN_EXE_levee")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// A web page cannot make an operator's browser reload levee: cross-site POSTs carry a foreign
/// `Origin` and are refused; the dashboard's own origin and non-browser clients are not.
#[tokio::test]
async fn cross_site_reload_is_refused() {
    let origin = Origin::new().start().await;
    let proxy = TestProxy::start(&simple_config(&[origin.addr], "", "")).await;
    let client = Client::new();
    let url = proxy.admin_url("/reload");
    let evil = client
        .request(Method::POST, &url, &[("origin", "http://evil.example")], "")
        .await;
    assert_eq!(evil.status, 403, "{}", evil.text());
    let own = format!("http://{}", proxy.admin);
    let same = client
        .request(Method::POST, &url, &[("origin", own.as_str())], "")
        .await;
    assert_eq!(same.status, 200, "{}", same.text());
    let plain = client.request(Method::POST, &url, &[], "").await;
    assert_eq!(plain.status, 200, "{}", plain.text());
}
