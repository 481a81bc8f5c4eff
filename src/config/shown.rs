//! The config as levee shows it (`GET /config`, and what `levee check --diff` compares): the
//! file as parsed into TOML values when it was loaded, so every key anyone adds is in it, with
//! comments and layout gone, secrets removed and relative file paths made absolute (they then
//! mean the same wherever the text is read). It parses again with [`super::parse`].
//!
//! Removed: the user and password of any URL (`redis://:PASSWORD@host` → `redis://***@host`),
//! and every string under a key whose name says it is secret (`password`, `secret`, `token`,
//! `authorization`, `cookie`, `api_key`...), such as an `authorization` header a route sets,
//! which becomes `"***"`. Certificate and key file *paths* stay: they are not the key material.

use std::path::Path;
use toml::{Table, Value};

/// What a secret becomes.
pub const REDACTED: &str = "***";

/// `text` (already known to parse) as shown: secrets removed, file paths absolute.
pub fn table(text: &str, base_dir: &Path) -> Table {
    let mut table: Table = text.parse().unwrap_or_default();
    absolute_paths(&mut table, base_dir);
    for (key, value) in table.iter_mut() {
        redact(key, value);
    }
    table
}

/// The shown table as TOML text.
pub fn to_toml(table: &Table) -> String {
    // A table of TOML values always serializes; should it not, show nothing rather than panic.
    toml::to_string(table).unwrap_or_default()
}

/// Key names whose string values are secrets, matched as parts of the lowercased name.
const SECRET_NAMES: [&str; 9] = [
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "api-key",
    "apikey",
];

fn is_secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| key.contains(s)) || key == "credentials"
}

fn redact(key: &str, value: &mut Value) {
    match value {
        Value::String(s) if is_secret_name(key) => *s = REDACTED.to_string(),
        Value::String(s) => {
            let has_userinfo = url::Url::parse(s)
                .is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
            if has_userinfo {
                *s = crate::redis::redact(s);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(key, v)),
        Value::Table(t) => t.iter_mut().for_each(|(k, v)| redact(k, v)),
        _ => {}
    }
}

/// The file paths levee reads, resolved against the config's directory as validation does.
fn absolute_paths(table: &mut Table, base_dir: &Path) {
    let resolve = |v: &mut Value| {
        if let Value::String(p) = v {
            *p = super::validate::resolve(base_dir, p).display().to_string();
        }
    };
    for listener in array_of_tables(table, "listener") {
        let certs = listener
            .get_mut("tls")
            .and_then(Value::as_table_mut)
            .and_then(|t| t.get_mut("certificates"))
            .and_then(Value::as_array_mut);
        for cert in certs.into_iter().flatten().filter_map(Value::as_table_mut) {
            cert.get_mut("cert").map(resolve);
            cert.get_mut("key").map(resolve);
        }
    }
    for upstream in array_of_tables(table, "upstream") {
        let tls = upstream.get_mut("tls").and_then(Value::as_table_mut);
        if let Some(ca) = tls.and_then(|t| t.get_mut("ca")) {
            resolve(ca);
        }
    }
}

fn array_of_tables<'a>(table: &'a mut Table, key: &str) -> impl Iterator<Item = &'a mut Table> {
    table
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_table_mut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo_and_secret_keys_their_values() {
        let text = r#"
[redis]
url = "redis://:hunter2@10.0.0.5:6379/0"
[[route]]
upstream = "app"
request_headers = { set = { Authorization = "Bearer abc", "x-env" = "prod" } }
[route.rate_limit]
key = "header:x-api-key"
[[upstream]]
name = "app"
endpoints = ["localhost:8080"]
"#;
        let shown = to_toml(&table(text, Path::new("/etc/levee")));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("Bearer"), "{shown}");
        assert!(shown.contains("redis://***@10.0.0.5:6379/0"), "{shown}");
        assert!(shown.contains("prod"), "other values stay: {shown}");
        assert!(
            shown.contains("header:x-api-key"),
            "a limit key is no secret: {shown}"
        );
        assert!(shown.contains("\"localhost:8080\""), "not a URL: {shown}");
    }

    /// What `GET /config` returns parses again into the running config, but for the secrets.
    #[test]
    fn the_shown_config_round_trips_through_levees_parser() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(dir.join("config.example.toml")).unwrap();
        let example = example.replace(
            "url = \"redis://127.0.0.1:6379\"",
            "url = \"redis://:hunter2@127.0.0.1:6379/2\"",
        );
        let running = super::super::parse("example.toml", &example, dir).unwrap();
        let text = to_toml(&running.shown);
        assert!(!text.contains("hunter2"), "{text}");
        let again = super::super::parse("shown.toml", &text, Path::new("/")).unwrap();
        assert_eq!(again.admin, running.admin);
        assert_eq!(again.listeners, running.listeners);
        assert_eq!(again.routes, running.routes);
        assert_eq!(again.upstreams, running.upstreams);
        let (a, b) = (again.redis.unwrap(), running.redis.unwrap());
        assert_eq!(a.url, "redis://***@127.0.0.1:6379/2");
        assert_eq!(
            super::super::RedisConfig {
                url: a.url.clone(),
                ..b
            },
            a
        );
        assert_eq!(
            again.shown, running.shown,
            "showing it again changes nothing"
        );
    }

    #[test]
    fn file_paths_become_absolute_and_stay() {
        let text = r#"
[[listener]]
bind = "127.0.0.1:0"
tls = { certificates = [{ cert = "certs/a.pem", key = "/keys/a.key" }] }
[[upstream]]
name = "app"
endpoints = ["127.0.0.1:1"]
tls = { ca = "ca.pem" }
"#;
        let shown = to_toml(&table(text, Path::new("/etc/levee")));
        assert!(shown.contains("\"/etc/levee/certs/a.pem\""), "{shown}");
        assert!(shown.contains("\"/keys/a.key\""), "{shown}");
        assert!(shown.contains("\"/etc/levee/ca.pem\""), "{shown}");
    }
}
