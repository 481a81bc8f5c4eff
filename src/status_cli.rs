//! `levee status`: the admin `/status` as a table an operator reads in a terminal.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

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
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{admin}{path}")
        .parse()
        .map_err(|e| format!("bad address: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("admin answered {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
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
            let health = if e["ejected"].as_bool() == Some(true) {
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
    let mut widths = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = format!(
        "config version {} (hash {})\n",
        s(&v["version"]),
        s(&v["hash"])
    );
    let line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header));
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
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
    }
}
