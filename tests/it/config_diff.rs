//! Reload previews: `levee check --diff` through the real binary, against a file and against a
//! running levee's `GET /config`, and a reload that does what the preview said.

use crate::support::proxy::simple_config;
use crate::support::scrape::{get_json, get_text, upstream};
use crate::support::*;
use http::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// The `[admin]` table `TestProxy` adds to a config without one (`support::proxy`).
const ADMIN: &str = "[admin]\nbind = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n";

/// A config with two routes onto one upstream, a limit on one, a breaker on the upstream.
fn config(route_name: &str, threshold: &str, extra: &str) -> String {
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "{route_name}"
path_prefix = "/api"
upstream = "app"
[route.rate_limit]
rps = 100

[[route]]
name = "web"
path_prefix = "/"
upstream = "app"

[[upstream]]
name = "app"
endpoints = ["127.0.0.1:9"]
[upstream.circuit_breaker]
failure_rate_threshold = {threshold}
{extra}"#
    )
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }

    fn assert_lines(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.has_line(line),
                "want the line {line:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Runs the real binary without blocking the runtime the test proxy serves on.
async fn levee(args: &[&str], config: &Path) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn diff_against(old: &Path, new: &Path) -> Out {
    levee(&["--diff", "--against", old.to_str().unwrap()], new).await
}

#[tokio::test]
async fn an_added_route_is_listed_and_every_state_kept() {
    let files = Files::new();
    let old = files.write("old.toml", &config("api", "0.5", ""));
    let added = "[[route]]\nname = \"canary\"\nhost = \"canary.example.com\"\nupstream = \"app\"\n";
    let new = files.write("new.toml", &config("api", "0.5", added));
    let out = diff_against(&old, &new).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.assert_lines(&[
        "+ route canary",
        "upstream app: state kept",
        "limiter api: state kept",
    ]);
    assert!(!out.stdout.contains("state reset"), "{}", out.stdout);
    // Same file both sides: nothing changes, and it says so.
    let same = diff_against(&old, &old).await;
    assert_eq!(same.code, 0);
    same.assert_lines(&["no changes", "upstream app: state kept"]);
}

#[tokio::test]
async fn a_changed_breaker_threshold_resets_the_upstream() {
    let files = Files::new();
    let old = files.write("old.toml", &config("api", "0.5", ""));
    let new = files.write("new.toml", &config("api", "0.25", ""));
    let out = diff_against(&old, &new).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.assert_lines(&[
        "~ upstream app: circuit_breaker.failure_rate_threshold 0.5 → 0.25",
        "upstream app: state reset (circuit_breaker.failure_rate_threshold changed)",
        "limiter api: state kept",
    ]);
    // The same for a pipeline, as JSON.
    let json = levee(
        &[
            "--diff",
            "--against",
            old.to_str().unwrap(),
            "--format",
            "json",
        ],
        &new,
    )
    .await;
    assert_eq!(json.code, 0, "{}{}", json.stdout, json.stderr);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        doc["changes"][0],
        serde_json::json!({"kind": "upstream", "name": "app", "change": "modified",
            "key": "circuit_breaker.failure_rate_threshold", "old": "0.5", "new": "0.25"})
    );
    assert_eq!(
        doc["states"][0],
        serde_json::json!({"kind": "upstream", "name": "app", "state": "reset",
            "why": "circuit_breaker.failure_rate_threshold changed"})
    );
}

#[tokio::test]
async fn a_renamed_route_keeps_its_upstreams_state() {
    let files = Files::new();
    let old = files.write("old.toml", &config("api", "0.5", ""));
    let new = files.write("new.toml", &config("api-v2", "0.5", ""));
    let out = diff_against(&old, &new).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.assert_lines(&[
        "+ route api-v2",
        "- route api",
        "+ limiter api-v2",
        "- limiter api",
        "upstream app: state kept",
        // Buckets belong to the route by name: a renamed route starts with full ones.
        "limiter api-v2: state reset (new route)",
    ]);
    // Sorted by kind, then name: routes before limiters before state lines.
    let at = |l: &str| out.stdout.find(l).unwrap();
    assert!(at("upstream app: state kept") < at("limiter api-v2: state reset"));
    assert!(at("- route api\n") < at("+ route api-v2"));
    assert!(at("+ route api-v2") < at("- limiter api\n"));
    assert!(at("- limiter api\n") < at("+ limiter api-v2"));
    assert!(at("+ limiter api-v2") < at("upstream app: state kept"));
}

#[tokio::test]
async fn a_broken_new_config_exits_1_with_positions() {
    let files = Files::new();
    let old = files.write("old.toml", &config("api", "0.5", ""));
    let broken =
        config("api", "1.5", "").replace("upstream = \"app\"\n[route", "upstream = \"ap\"\n[route");
    let new = files.write("new.toml", &broken);
    let out = diff_against(&old, &new).await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let file = new.display().to_string();
    for at in [":8:12: ", ":21:26: "] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}{at}"))),
            "want a problem at {file}{at}\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stdout.contains("state"),
        "no diff for an invalid file: {}",
        out.stdout
    );
    // An unreadable OLD is not NEW's fault: exit 2, and NEW was still checked.
    let missing = files.dir.path().join("missing.toml");
    let out = diff_against(&missing, &old).await;
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(": ok ("), "{}", out.stdout);
}

#[tokio::test]
async fn get_config_hides_the_redis_password_and_parses_again() {
    let origin = Origin::new().start().await;
    let cfg = simple_config(&[origin.addr], "", "")
        + "\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:1/3\"\n";
    let proxy = TestProxy::start(&cfg).await;
    let shown = get_text(&proxy.admin_url("/config")).await;
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://***@127.0.0.1:1/3"), "{shown}");
    let again = levee::config::parse("config", &shown, Path::new("/")).unwrap();
    let running = proxy.levee.shared.snapshot.load().config.clone();
    assert_eq!(again.routes, running.routes);
    assert_eq!(again.upstreams, running.upstreams);
    assert_eq!(again.listeners, running.listeners);
    // Only GET, and only for hosts the admin listener answers, like /status.
    let client = Client::new();
    let post = client
        .request(Method::POST, &proxy.admin_url("/config"), &[], "")
        .await;
    assert_eq!(post.status, 405);
    let rebound = client
        .request(
            Method::GET,
            &proxy.admin_url("/config"),
            &[("host", "rebind.attacker.example")],
            "",
        )
        .await;
    assert_eq!(rebound.status, 403);
    assert!(!rebound.text().contains("redis"), "{}", rebound.text());
}

/// The preview against a running levee goes through `GET /config`; then the reload does what
/// it said: `state kept` leaves the tripped breaker open, `state reset` closes it.
#[tokio::test]
async fn the_reload_does_what_the_diff_against_the_running_levee_said() {
    let origin = Origin::new().status(500).start().await;
    let breaker = r#"[upstream.circuit_breaker]
minimum_calls = 3
failure_rate_threshold = 0.5
window = { kind = "count", size = 10 }
open_duration = "60s"
[upstream.outlier_detection]
consecutive_failures = 0
"#;
    let running = simple_config(&[origin.addr], "", breaker);
    let proxy = TestProxy::start(&running).await;
    let admin = proxy.admin.to_string();
    let files = Files::new();

    // Unchanged: the preview of the running file is empty.
    let same = files.write("same.toml", &std::fs::read_to_string(&proxy.path).unwrap());
    let out = levee(&["--diff", "--admin", &admin], &same).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.assert_lines(&["no changes", "upstream app: state kept"]);

    let client = Client::new();
    eventually("the breaker opens on 500s", WAIT, || async {
        client.get(&proxy.url("/")).await.error_kind() == "circuit_open"
    })
    .await;
    let state = |s: serde_json::Value| upstream(&s, "app")["breaker"]["state"].clone();

    // A new route leaves the upstream alone: the preview says kept, and the breaker stays open.
    let kept = running.clone()
        + "\n[[route]]\nname = \"more\"\nhost = \"more.example\"\nupstream = \"app\"\n";
    let kept_path = files.write("kept.toml", &format!("{ADMIN}{kept}"));
    let out = levee(&["--diff", "--admin", &admin], &kept_path).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.assert_lines(&["+ route more", "upstream app: state kept"]);
    proxy.reload(&kept).await.unwrap();
    assert_eq!(state(get_json(&proxy.admin_url("/status")).await), "open");
    assert_eq!(
        client.get(&proxy.url("/")).await.error_kind(),
        "circuit_open"
    );

    // A changed threshold: the preview says reset, and the reload closes the breaker.
    let reset = kept.replace(
        "failure_rate_threshold = 0.5",
        "failure_rate_threshold = 0.9",
    );
    let reset_path = files.write("reset.toml", &format!("{ADMIN}{reset}"));
    let out = levee(&["--diff", "--admin", &admin], &reset_path).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.assert_lines(&[
        "~ upstream app: circuit_breaker.failure_rate_threshold 0.5 → 0.9",
        "upstream app: state reset (circuit_breaker.failure_rate_threshold changed)",
    ]);
    proxy.reload(&reset).await.unwrap();
    assert_eq!(state(get_json(&proxy.admin_url("/status")).await), "closed");

    // Nothing listening: NEW is valid, but there is nothing to compare with.
    let dead = crate::support::origin::dead_addr().await.to_string();
    let out = levee(&["--diff", "--admin", &dead], &reset_path).await;
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
}
