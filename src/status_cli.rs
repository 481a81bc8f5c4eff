//! `levee status`: the admin `/status` as a table an operator reads in a terminal.

use crate::override_cli::{request, s, table};
use serde_json::Value;
use std::process::ExitCode;

pub fn run(admin: &str) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("levee status: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fetch(admin)) {
        Ok(v) => {
            print!("{}", render_table(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("levee status: cannot read http://{admin}/status: {e}");
            eprintln!("is levee running, and is its admin listener on {admin}? (use --admin ADDR)");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(admin: &str) -> Result<Value, String> {
    let body = get(admin, "/status").await?;
    serde_json::from_str(&body).map_err(|e| format!("not a levee status document: {e}"))
}

/// The body of `GET http://ADMIN/PATH`, bounded by a 5 s timeout; an error unless it is a 2xx.
pub async fn get(admin: &str, path: &str) -> Result<String, String> {
    let (status, body) = request(admin, http::Method::GET, path, String::new()).await?;
    if !status.is_success() {
        return Err(format!("admin answered {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
}

/// Renders the status document; open breakers first, with the reason column in full.
pub fn render_table(v: &Value) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut ups: Vec<&Value> = v["upstreams"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let rank = |u: &Value| match u["breaker"]["state"].as_str() {
        Some("open") => 0,
        Some("half_open") => 1,
        _ => 2,
    };
    ups.sort_by_key(|u| rank(u));
    for u in ups {
        let state = s(&u["breaker"]["state"]);
        let reason = s(&u["breaker"]["reason"]);
        let name = s(&u["name"]);
        let mut first = true;
        for e in u["endpoints"].as_array().into_iter().flatten() {
            let held = &e["override"];
            let health = if held.is_object() {
                format!(
                    "{} (override {}, {})",
                    if held["action"] == "drain" {
                        "drained"
                    } else {
                        "ejected"
                    },
                    s(&held["id"]),
                    crate::override_cli::countdown(&held["expires_in_ms"])
                )
            } else if e["ejected"].as_bool() == Some(true) {
                format!("ejected {}ms", s(&e["ejected_for_ms"]))
            } else if e["healthy"].as_bool() == Some(false) {
                "unhealthy".into()
            } else {
                "ok".into()
            };
            let counters = format!(
                "in_flight={} requests={} failures={}",
                s(&e["in_flight"]),
                s(&e["requests"]),
                s(&e["failures"])
            );
            rows.push([
                if first { name.clone() } else { String::new() },
                s(&e["address"]),
                health,
                if first { state.clone() } else { String::new() },
                counters,
                if first { reason.clone() } else { String::new() },
            ]);
            first = false;
        }
    }
    let header = [
        "UPSTREAM",
        "ENDPOINT",
        "ENDPOINT STATE",
        "BREAKER",
        "COUNTERS",
        "WHY",
    ];
    let mut out = format!(
        "config version {} (hash {})\n",
        s(&v["version"]),
        s(&v["hash"])
    );
    out.push_str(&table(header, &rows));
    out.push_str(&render_splits(v));
    if v["overrides"].as_array().is_some_and(|a| !a.is_empty()) {
        out.push_str("\noverrides:\n");
        out.push_str(&crate::override_cli::render_list(&v["overrides"]));
    }
    out
}

/// One line per split route: each target's configured and effective share, then the shift in
/// words ("canary: breaker open, its 5% goes to stable").
fn render_splits(v: &Value) -> String {
    let mut out = String::new();
    for r in v["routes"].as_array().into_iter().flatten() {
        let Some(targets) = r["split"]["targets"].as_array() else {
            continue;
        };
        let shares: Vec<String> = targets
            .iter()
            .map(|t| {
                format!(
                    "{} {}% (now {}%, breaker {})",
                    s(&t["upstream"]),
                    s(&t["configured_percent"]),
                    s(&t["effective_percent"]),
                    s(&t["breaker"])
                )
            })
            .collect();
        out.push_str(&format!(
            "route {} splits: {}\n",
            s(&r["name"]),
            shares.join(", ")
        ));
        if let Some(shift) = r["split"]["shift"].as_str() {
            out.push_str(&format!("  {shift}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_breakers_sort_first_and_columns_align() {
        let v = serde_json::json!({
            "version": 2, "hash": "ab",
            "upstreams": [
                {"name": "fine", "breaker": {"state": "closed", "reason": "ok"}, "endpoints": [
                    {"address": "127.0.0.1:1", "healthy": true, "ejected": false, "in_flight": 0, "requests": 5, "failures": 0}]},
                {"name": "melting", "breaker": {"state": "open", "reason": "failure rate 90% over the last 10 calls >= 50%"}, "endpoints": [
                    {"address": "127.0.0.1:2", "healthy": true, "ejected": true, "ejected_for_ms": 900, "in_flight": 0, "requests": 10, "failures": 9}]}
            ]
        });
        let t = render_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("melting"), "{t}");
        assert!(lines[2].contains("failure rate 90%"));
        assert_eq!(lines[1].find("ENDPOINT "), lines[2].find("127.0.0.1:2"));
        assert!(
            !t.contains("overrides:"),
            "no override section without overrides: {t}"
        );
    }

    #[test]
    fn overrides_show_on_their_endpoint_and_in_a_list_with_countdowns() {
        let held = serde_json::json!({"id": 4, "target": "endpoint:fine/127.0.0.1:1", "action": "drain",
            "expires_in_ms": 90_000, "reason": "deploy", "set_by": "127.0.0.1:5"});
        let v = serde_json::json!({
            "version": 2, "hash": "ab",
            "upstreams": [
                {"name": "fine", "breaker": {"state": "closed", "reason": "ok"}, "endpoints": [
                    {"address": "127.0.0.1:1", "healthy": true, "ejected": false, "override": held,
                     "in_flight": 1, "requests": 5, "failures": 0}]}
            ],
            "overrides": [held],
        });
        let t = render_table(&v);
        assert!(t.contains("drained (override 4, 1m 30s left)"), "{t}");
        assert!(t.contains("\noverrides:\nID"), "{t}");
        assert!(t.contains("endpoint:fine/127.0.0.1:1"), "{t}");
    }

    #[test]
    fn a_shifted_split_is_said_in_words() {
        let v = serde_json::json!({
            "version": 1, "hash": "ab", "upstreams": [],
            "routes": [{"name": "api", "split": {"targets": [
                {"upstream": "stable", "configured_percent": 95.0, "effective_percent": 100.0, "breaker": "closed"},
                {"upstream": "canary", "configured_percent": 5.0, "effective_percent": 0.0, "breaker": "open"}],
                "shift": "canary: breaker open, its 5% goes to stable"}}]
        });
        let t = render_table(&v);
        assert!(
            t.contains("route api splits: stable 95.0% (now 100.0%, breaker closed), canary 5.0% (now 0.0%, breaker open)"),
            "{t}"
        );
        assert!(
            t.contains("  canary: breaker open, its 5% goes to stable\n"),
            "{t}"
        );
    }
}
