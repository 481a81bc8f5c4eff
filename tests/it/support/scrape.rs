//! Reading what the admin listener says: Prometheus text and JSON documents.

use super::Client;
use std::collections::HashMap;

/// Parses one exposition line `name{a="b",c="d"} value` into its parts; `None` for comments.
fn parse_line(line: &str) -> Option<(&str, HashMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some((
                n,
                HashMap::new(),
                v.split_whitespace().next()?.parse().ok()?,
            ));
        }
    };
    // Labels: key="value" pairs separated by commas; values may contain escaped quotes.
    let mut labels = HashMap::new();
    let mut chars = rest[1..].char_indices().peekable();
    let body = &rest[1..];
    let mut end = None;
    loop {
        while matches!(chars.peek(), Some((_, ',' | ' '))) {
            chars.next();
        }
        match chars.peek() {
            Some((i, '}')) => {
                end = Some(*i);
                break;
            }
            None => break,
            _ => {}
        }
        let (start, _) = *chars.peek()?;
        let mut eq = None;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                eq = Some(i);
                break;
            }
        }
        let key = body[start..eq?].trim().to_string();
        if !matches!(chars.next(), Some((_, '"'))) {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        for (_, c) in chars.by_ref() {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    let after = &body[end? + 1..];
    let value = after.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The value of the first sample named `name` whose labels include all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_line)
        .find(|(n, l, _)| {
            *n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
}

/// [`metric_value`], or 0 when the sample is absent (a counter nobody has touched yet).
pub fn metric_or_zero(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(text, name, labels).unwrap_or(0.0)
}

/// GETs `url` and parses the body as JSON; panics on a non-200 answer or bad JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let r = Client::new().get(url).await;
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {}", r.text()))
}

/// GETs `url` and returns the body as text; panics on a non-200 answer.
pub async fn get_text(url: &str) -> String {
    let r = Client::new().get(url).await;
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    r.text()
}

/// The `/status` entry of upstream `name`.
pub fn upstream<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no upstream {name:?} in /status: {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_in_any_order_and_plain_samples() {
        let text = "# HELP x y\n# TYPE levee_requests counter\n\
            levee_requests_total{route=\"a\",upstream=\"u\",class=\"2xx\"} 4\n\
            levee_requests_total{route=\"a\",upstream=\"u\",class=\"5xx\"} 2\n\
            levee_config_version 1\n\
            odd{v=\"q\\\"uote,}\"} 3.5\n# EOF\n";
        assert_eq!(
            metric_value(
                text,
                "levee_requests_total",
                &[("class", "5xx"), ("route", "a")]
            ),
            Some(2.0)
        );
        assert_eq!(metric_value(text, "levee_config_version", &[]), Some(1.0));
        assert_eq!(metric_value(text, "odd", &[("v", "q\"uote,}")]), Some(3.5));
        assert_eq!(
            metric_value(text, "levee_requests_total", &[("class", "4xx")]),
            None
        );
    }
}
