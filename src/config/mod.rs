//! Configuration: the TOML file (`raw`), its validation (`validate`) into a `Config` (`model`),
//! and errors that point at `FILE:LINE:COL` (`diagnostics`). `levee check`, startup and every
//! reload go through [`load`], so they can never disagree.

pub mod carry;
pub mod diagnostics;
pub mod diff;
pub mod dns;
pub mod model;
pub mod raw;
mod recovery;
pub mod shown;
pub mod split;
pub mod traffic;
pub mod units;
pub mod validate;

pub use diagnostics::{ConfigErrors, Problem};
pub use model::*;

use diagnostics::{explain_toml_message, Diagnostics};
use std::path::Path;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&file, &text, base_dir)
}

/// Parses and validates config text; `file` names it in messages, `base_dir` anchors relative paths.
pub fn parse(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut d = Diagnostics::new(file, text);
    let Some(raw) = deserialize_all(text, &mut d) else {
        d.finish()?;
        return Err(ConfigErrors(Vec::new()));
    };
    validate::check_uniqueness(&raw, &mut d);
    let secrets = secret_spans(&raw);
    let config = validate::validate(raw, base_dir, &mut d);
    d.finish()?;
    let mut config = config.ok_or_else(|| ConfigErrors(Vec::new()))?;
    config.hash = content_hash(&without_secrets(text, secrets));
    config.shown = std::sync::Arc::new(shown::table(text, base_dir));
    Ok(config)
}

/// Where the file holds secrets: the Redis URL (its password). Kept out of the `/status` hash,
/// which anyone who can read `/status` could otherwise brute-force a short password from.
fn secret_spans(raw: &raw::RawConfig) -> Vec<std::ops::Range<usize>> {
    raw.redis
        .as_ref()
        .and_then(|r| r.get_ref().url.as_ref())
        .map(|u| u.span())
        .into_iter()
        .collect()
}

/// The text with each secret span replaced by the redacted value, so the hash still changes
/// when the rest of the URL (host, port, database) does.
fn without_secrets(text: &str, mut spans: Vec<std::ops::Range<usize>>) -> String {
    spans.sort_by_key(|s| std::cmp::Reverse(s.start));
    let mut out = text.to_string();
    for span in spans {
        let Some(written) = out.get(span.clone()) else {
            continue;
        };
        // The span covers the TOML string, quotes included; redact what is between them.
        let inner = written.trim_matches(|c| c == '"' || c == '\'');
        let redacted = format!("\"{}\"", crate::redis::redact(inner));
        out.replace_range(span, &redacted);
    }
    out
}

/// Deserializes the file, reporting every key-level problem rather than only the first.
///
/// serde stops at the first problem, but an operator fixing a file wants them all. So after each
/// problem on a `key = value` line, that line is blanked out (with spaces, so every later position
/// stays exact) and deserialization runs again, a bounded number of times. Problems that only the
/// blanking caused (a required key now missing) are not reported; a syntax error stops at once.
/// Problems found are in `d`, so the caller refuses the file even when this returns a value.
fn deserialize_all(text: &str, d: &mut Diagnostics) -> Option<raw::RawConfig> {
    if let Err(e) = text.parse::<toml::Table>() {
        d.at(e.span().unwrap_or(0..0), e.message().trim());
        return None;
    }
    let mut work = text.to_string();
    let mut blanked: Vec<String> = Vec::new();
    let mut failed = false;
    for _ in 0..64 {
        let e = match toml::from_str::<raw::RawConfig>(&work) {
            // Validation still runs on what is left, so its problems are listed too.
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let message = e.message();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        if failed && missing.is_some_and(|f| blanked.iter().any(|b| b == f)) {
            return None;
        }
        let span = e.span().unwrap_or(0..0);
        d.at(span.clone(), explain_toml_message(message));
        failed = true;
        let at = span.start.min(work.len());
        let start = work
            .get(..at)
            .and_then(|w| w.rfind('\n'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let end = work
            .get(at..)
            .and_then(|w| w.find('\n'))
            .map(|i| at + i)
            .unwrap_or(work.len());
        let line = work.get(start..end).unwrap_or("");
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('[') {
            return None;
        }
        if let Some((key, _)) = line.split_once('=') {
            blanked.push(key.trim().trim_matches('"').to_string());
        }
        work.replace_range(start..end, &" ".repeat(end - start));
        if work.parse::<toml::Table>().is_err() {
            return None;
        }
    }
    None
}

/// FNV-1a of the file with its secrets redacted: stable across runs and platforms, enough to
/// tell two files apart, and no help to anyone guessing a password.
fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_problem_is_listed_with_its_position() {
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\nport = 5\n[[route]]\nupstream = \"ap\"\ntimeout = \"5\"\n[[upstream]]\nname = \"app\"\nendpoint = [\"x\"]\nendpoints = [\"127.0.0.1:1\"]\n";
        let errors = parse("t.toml", text, Path::new(".")).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("t.toml:3:1: unknown key `port`"));
        assert!(lines[1].starts_with("t.toml:5:12: route \"route0\" names upstream \"ap\""));
        assert!(lines[2].starts_with("t.toml:6:11: duration \"5\" has no unit"));
        assert!(
            lines[3].starts_with("t.toml:9:1: unknown key `endpoint`: did you mean `endpoints`?")
        );
    }

    #[test]
    fn a_blanked_required_key_is_not_reported_twice() {
        let text = "[[listener]]\nbind = 5\n[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n";
        let errors = parse("t.toml", text, Path::new(".")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!((errors.0[0].line, errors.0[0].column), (2, 8));
    }

    #[test]
    fn failure_grpc_statuses_take_codes_or_names_and_report_the_rest() {
        let cfg = |list: &str| {
            format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n[upstream.circuit_breaker]\nfailure_grpc_statuses = {list}\n")
        };
        let config = parse("t.toml", &cfg("[14, \"internal\"]"), Path::new(".")).unwrap();
        let set = config.upstreams[0].breaker.failure_grpc_statuses;
        assert_eq!(set.codes(), vec![13, 14]);
        let errors = parse("t.toml", &cfg("[14, 17, \"NOPE\"]"), Path::new(".")).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with(
                "t.toml:9:30: failure_grpc_statuses entries are gRPC status codes 0..=16"
            ),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("t.toml:9:34: "), "{lines:#?}");
    }

    #[test]
    fn the_hash_does_not_depend_on_the_redis_password() {
        let file = |url: &str, port: u16| {
            format!("[[listener]]\nbind = \"127.0.0.1:{port}\"\n[[route]]\nupstream = \"app\"\n[route.rate_limit]\nrps = 5\nscope = \"global\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n[redis]\nurl = \"{url}\"\n")
        };
        let hash = |text: String| parse("t.toml", &text, Path::new(".")).unwrap().hash;
        let a = hash(file("redis://:hunter2@127.0.0.1:6379/0", 1));
        let b = hash(file("redis://:other@127.0.0.1:6379/0", 1));
        let c = hash(file("redis://:hunter2@127.0.0.1:6379/1", 1));
        let d = hash(file("redis://:hunter2@127.0.0.1:6379/0", 2));
        assert_eq!(a, b, "the password is not hashed");
        assert_ne!(a, c, "the rest of the URL is");
        assert_ne!(a, d, "and so is the rest of the file");
    }

    #[test]
    fn durations_beyond_ten_years_are_refused_at_their_place() {
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\ntimeout = \"18000000000000000000s\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n";
        let errors = parse("t.toml", text, Path::new(".")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!((errors.0[0].line, errors.0[0].column), (5, 11));
        assert!(errors.0[0].message.contains("10 years"), "{errors}");
    }

    #[test]
    fn syntax_errors_stop_at_the_first() {
        let errors = parse("t.toml", "[[listener]\nbind = ", Path::new(".")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
    }

    #[test]
    fn framing_limits_have_defaults_and_refuse_nonsense_with_positions() {
        let base = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n";
        let ok = format!("{base}[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n");
        let config = parse("t.toml", &ok, Path::new(".")).unwrap();
        assert_eq!(
            config.routes[0].tunnel_idle_timeout,
            std::time::Duration::from_secs(3600)
        );
        assert_eq!(config.upstreams[0].max_response_header_bytes, 64 * 1024);
        assert_eq!(config.upstreams[0].max_response_headers, 200);

        let bad = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n\
                   tunnel_idle_timeout = \"0s\"\n[[upstream]]\nname = \"app\"\n\
                   endpoints = [\"127.0.0.1:1\"]\nmax_response_header_bytes = 10\n\
                   max_response_headers = 0\n";
        let errors = parse("t.toml", bad, Path::new(".")).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("t.toml:5:23: tunnel_idle_timeout must be longer than zero"));
        assert!(lines[1].starts_with("t.toml:9:29: max_response_header_bytes = 10 is out of range"));
        assert!(lines[2].starts_with("t.toml:10:24: max_response_headers = 0 is out of range"));
    }
}
