//! `levee override set|list|clear`: the admin listener's `/overrides` from a terminal. A refusal
//! (4xx) prints the server's message and exits 1.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// What to ask the admin listener: `levee override`'s subcommands.
#[derive(clap::Subcommand)]
pub enum OverrideCommand {
    /// Set an override (replacing one on the same target).
    Set {
        /// `upstream:NAME` or `endpoint:UPSTREAM/HOST:PORT`.
        target: String,
        /// force_open | force_closed (an upstream), drain | eject (an endpoint).
        #[arg(value_parser = ["force_open", "force_closed", "drain", "eject"])]
        action: String,
        /// How long it holds, like `10m` (at most 24h).
        #[arg(long)]
        ttl: String,
        /// Why, for whoever reads /status next.
        #[arg(long)]
        reason: String,
    },
    /// List the active overrides with their countdowns.
    List,
    /// End an override before its TTL.
    Clear {
        /// The override's id (`levee override list`).
        id: String,
    },
}

pub fn run(admin: &str, command: OverrideCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("levee override: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (method, path, body) = match &command {
        OverrideCommand::Set {
            target,
            action,
            ttl,
            reason,
        } => (
            Method::POST,
            "/overrides".to_string(),
            json!({ "target": target, "action": action, "ttl": ttl, "reason": reason }).to_string(),
        ),
        OverrideCommand::List => (Method::GET, "/overrides".to_string(), String::new()),
        OverrideCommand::Clear { id } => {
            (Method::DELETE, format!("/overrides/{id}"), String::new())
        }
    };
    let (status, v) = match rt.block_on(request(admin, method, &path, body)) {
        Ok((status, body)) => (
            status,
            serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&body).trim() })),
        ),
        Err(e) => {
            eprintln!("levee override: cannot reach http://{admin}{path}: {e}");
            eprintln!("is levee running, and is its admin listener on {admin}? (use --admin ADDR)");
            return ExitCode::FAILURE;
        }
    };
    if !status.is_success() {
        let message = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        eprintln!("levee override: {status}: {message}");
        return ExitCode::FAILURE;
    }
    match command {
        OverrideCommand::Set { .. } => println!(
            "override {} set: {} {} for {} ({})",
            s(&v["id"]),
            s(&v["action"]),
            s(&v["target"]),
            countdown(&v["expires_in_ms"]),
            s(&v["reason"])
        ),
        OverrideCommand::List => print!("{}", render_list(&v["overrides"])),
        OverrideCommand::Clear { .. } => println!(
            "override {} cleared: {} {}",
            s(&v["cleared"]["id"]),
            s(&v["cleared"]["action"]),
            s(&v["cleared"]["target"])
        ),
    }
    ExitCode::SUCCESS
}

/// One request to the admin listener at `admin`, bounded by a 5 s timeout: the answer's status
/// and body. `levee override` and `levee status` (and through it `levee check --diff`) ask this.
pub async fn request(
    admin: &str,
    method: Method,
    path: &str,
    body: String,
) -> Result<(StatusCode, Bytes), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if !body.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad address: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// A JSON value as a table cell: a string bare, null as `-`.
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `expires_in_ms` as an operator reads it: "9m 58s left".
pub fn countdown(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => format!(
            "{} left",
            humantime::format_duration(Duration::from_secs(ms.div_ceil(1000)))
        ),
        None => "-".into(),
    }
}

/// The active overrides as a table, or a line saying there are none.
pub fn render_list(list: &Value) -> String {
    let rows: Vec<[String; 5]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            [
                s(&o["id"]),
                s(&o["target"]),
                s(&o["action"]),
                countdown(&o["expires_in_ms"]),
                format!("{} (set by {})", s(&o["reason"]), s(&o["set_by"])),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no active overrides\n".into();
    }
    table(["ID", "TARGET", "ACTION", "EXPIRES", "REASON"], &rows)
}

/// `rows` under `header`, each column as wide as its widest cell but the last, which is not
/// padded: a long last cell (a reason) pushes nothing else aside.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == N - 1 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for r in rows {
        out.push_str(&line(r.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_each_override_with_its_countdown() {
        let v = json!([{"id": 7, "target": "endpoint:api/127.0.0.1:9001", "action": "drain",
            "expires_in_ms": 599_001, "reason": "deploy", "set_by": "127.0.0.1:5000"}]);
        let t = render_list(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  TARGET"), "{t}");
        assert!(
            lines[1].starts_with("7   endpoint:api/127.0.0.1:9001  drain"),
            "{t}"
        );
        assert!(lines[1].contains("10m left"), "{t}");
        assert!(lines[1].ends_with("deploy (set by 127.0.0.1:5000)"), "{t}");
        assert_eq!(render_list(&json!([])), "no active overrides\n");
    }
}
