//! Validation of a route's traffic-control keys: matchers (`path`, `path_regex`, `methods`,
//! `headers`, `query`), rewrites (`request_headers`, `response_headers`, `strip_prefix`,
//! `replace_prefix`, `host_rewrite`) and self-answers (`redirect`, `direct_response`). Regexes and
//! header templates are compiled here, once; every problem is reported at its position.

use super::diagnostics::Diagnostics;
use super::raw::{RawHeaderRewrite, RawRoute};
use crate::traffic::matcher::{HeaderMatch, PathMatch, Pattern, RouteMatch};
use crate::traffic::redirect::{DirectResponse, LocalAnswer, Redirect, RedirectPath};
use crate::traffic::rewrite::{HeaderRewrite, PathRewrite, RouteRewrite, Template, FORBIDDEN};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::ops::Range;
use toml::Spanned;

/// A route's traffic-control settings, validated.
pub struct Traffic {
    pub matcher: RouteMatch,
    pub rewrite: RouteRewrite,
    pub answer: Option<LocalAnswer>,
}

/// Where to point at a route as a whole: its name, else its first matcher or target key.
pub fn route_span(raw: &RawRoute) -> Range<usize> {
    [
        raw.name.as_ref(),
        raw.host.as_ref(),
        raw.path_prefix.as_ref(),
        raw.path.as_ref(),
        raw.path_regex.as_ref(),
        raw.upstream.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.span())
    .next()
    .or_else(|| raw.split.as_ref().map(|s| s.span()))
    .or_else(|| raw.redirect.as_ref().map(|r| r.span()))
    .or_else(|| raw.direct_response.as_ref().map(|r| r.span()))
    .unwrap_or(0..0)
}

/// Checks that the route has exactly one target: `upstream`, `redirect` or `direct_response`.
pub fn check_target(raw: &RawRoute, name: &str, d: &mut Diagnostics) {
    let targets: Vec<(&str, Range<usize>)> = [
        raw.upstream.as_ref().map(|u| ("upstream", u.span())),
        raw.split.as_ref().map(|s| ("split", s.span())),
        raw.redirect.as_ref().map(|r| ("redirect", r.span())),
        raw.direct_response
            .as_ref()
            .map(|r| ("direct_response", r.span())),
    ]
    .into_iter()
    .flatten()
    .collect();
    match targets.as_slice() {
        [] => d.at(
            route_span(raw),
            format!("route \"{name}\" has nowhere to send requests: give it one of upstream = \"NAME\", split, redirect or direct_response"),
        ),
        [_] => {}
        [(first, _), (second, span), ..] => d.at(
            span.clone(),
            format!("route \"{name}\" has both {first} and {second}: a route has exactly one of upstream, split, redirect and direct_response"),
        ),
    }
    if raw.upstream.is_none() && raw.split.is_none() {
        // Redirects and direct responses answer before the protection stack.
        for (key, span) in [
            ("retry", raw.retry.as_ref().map(|r| r.span())),
            ("rate_limit", raw.rate_limit.as_ref().map(|r| r.span())),
            (
                "request_headers",
                raw.request_headers.as_ref().map(|r| r.span()),
            ),
            ("strip_prefix", raw.strip_prefix.as_ref().map(|r| r.span())),
            (
                "replace_prefix",
                raw.replace_prefix.as_ref().map(|r| r.span()),
            ),
            ("host_rewrite", raw.host_rewrite.as_ref().map(|r| r.span())),
        ] {
            if let Some(span) = span {
                d.at(span, format!("route \"{name}\" answers itself (no upstream): {key} would never apply; remove it"));
            }
        }
    }
}

pub fn traffic(raw: &RawRoute, path_prefix: &str, d: &mut Diagnostics) -> Traffic {
    let matcher = RouteMatch {
        path: path_match(raw, path_prefix, d),
        methods: methods(raw.methods.as_deref().unwrap_or_default(), d),
        headers: raw
            .headers
            .iter()
            .flatten()
            .filter_map(|(name, value)| header_match(name, value, d))
            .collect(),
        query: raw
            .query
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect(),
    };
    let rewrite = RouteRewrite {
        request_headers: raw
            .request_headers
            .as_ref()
            .map(|r| header_rewrite(r.get_ref(), "request_headers", d))
            .unwrap_or_default(),
        response_headers: raw
            .response_headers
            .as_ref()
            .map(|r| header_rewrite(r.get_ref(), "response_headers", d))
            .unwrap_or_default(),
        path: path_rewrite(raw, d),
        host: raw.host_rewrite.as_ref().and_then(|h| {
            let v = h.get_ref().trim();
            let valid = !v.is_empty()
                && is_host(v)
                && !v.contains(['/', '?', '#']);
            match HeaderValue::from_str(v) {
                Ok(value) if valid => Some(value),
                _ => {
                    d.at(h.span(), format!("host_rewrite \"{}\" is not a host: write \"internal.api\" or \"internal.api:8080\"", h.get_ref()));
                    None
                }
            }
        }),
    };
    let answer = match (&raw.redirect, &raw.direct_response) {
        (Some(r), _) => redirect(r, &matcher.path, d).map(LocalAnswer::Redirect),
        (None, Some(dr)) => direct_response(dr, d).map(LocalAnswer::Direct),
        (None, None) => None,
    };
    Traffic {
        matcher,
        rewrite,
        answer,
    }
}

fn path_match(raw: &RawRoute, path_prefix: &str, d: &mut Diagnostics) -> PathMatch {
    let given: Vec<(&str, Range<usize>)> = [
        raw.path_prefix.as_ref().map(|p| ("path_prefix", p.span())),
        raw.path.as_ref().map(|p| ("path", p.span())),
        raw.path_regex.as_ref().map(|p| ("path_regex", p.span())),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let [(first, _), (second, span), ..] = given.as_slice() {
        d.at(
            span.clone(),
            format!("a route matches one of path_prefix, path and path_regex, not both {first} and {second}"),
        );
    }
    if let Some(p) = &raw.path {
        if !p.get_ref().starts_with('/') {
            d.at(
                p.span(),
                format!(r#"path "{}" must start with "/""#, p.get_ref()),
            );
        }
        return PathMatch::Exact(p.get_ref().clone());
    }
    if let Some(r) = &raw.path_regex {
        match Pattern::new(r.get_ref()) {
            Ok(p) => return PathMatch::Regex(p),
            Err(e) => d.at(r.span(), format!("path_regex: {e}")),
        }
    }
    PathMatch::Prefix(path_prefix.to_string())
}

fn methods(raw: &[Spanned<String>], d: &mut Diagnostics) -> Vec<Method> {
    let mut out: Vec<Method> = Vec::new();
    for m in raw {
        let name = m.get_ref().trim();
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
        match Method::from_bytes(name.as_bytes()) {
            Ok(method) if valid => {
                if !out.contains(&method) {
                    out.push(method);
                }
            }
            _ => d.at(
                m.span(),
                format!(r#"method "{}" is not an HTTP method: write it in capitals, like "GET" or "POST""#, m.get_ref()),
            ),
        }
    }
    out
}

fn header_name(name: &str, span: Range<usize>, d: &mut Diagnostics) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            d.at(span, format!("\"{name}\" is not a valid header name"));
            None
        }
    }
}

fn header_match(
    name: &str,
    value: &Spanned<toml::Value>,
    d: &mut Diagnostics,
) -> Option<(HeaderName, HeaderMatch)> {
    let header = header_name(name, value.span(), d)?;
    let m = match value.get_ref() {
        toml::Value::String(s) if s == "*" => HeaderMatch::Present,
        toml::Value::String(s) => HeaderMatch::Exact(s.clone()),
        toml::Value::Table(t) if t.len() == 1 && t.get("regex").is_some_and(|r| r.is_str()) => {
            let source = t.get("regex").and_then(|r| r.as_str()).unwrap_or_default();
            match Pattern::new(source) {
                Ok(p) => HeaderMatch::Regex(p),
                Err(e) => {
                    d.at(value.span(), format!("headers.{name}: {e}"));
                    return None;
                }
            }
        }
        _ => {
            d.at(
                value.span(),
                format!(r#"headers.{name}: write a value ("1"), "*" for present, or {{ regex = "..." }}"#),
            );
            return None;
        }
    };
    Some((header, m))
}

fn rewritable_name(
    name: &str,
    span: Range<usize>,
    key: &str,
    d: &mut Diagnostics,
) -> Option<HeaderName> {
    let header = header_name(name, span.clone(), d)?;
    if FORBIDDEN.contains(&header.as_str()) {
        let why = match header.as_str() {
            "host" => "use host_rewrite for the Host the upstream sees",
            "x-request-id" => "levee keeps or makes it (see README: request ids)",
            "x-levee-error" => "only levee writes its verdict",
            _ => "hop-by-hop and framing headers are levee's to manage",
        };
        d.at(span, format!("{key} cannot change \"{header}\": {why}"));
        return None;
    }
    Some(header)
}

fn header_rewrite(raw: &RawHeaderRewrite, key: &str, d: &mut Diagnostics) -> HeaderRewrite {
    let templates = |map: &Option<std::collections::BTreeMap<String, Spanned<String>>>,
                     d: &mut Diagnostics| {
        let mut out = Vec::new();
        for (name, value) in map.iter().flatten() {
            let Some(header) = rewritable_name(name, value.span(), key, d) else {
                continue;
            };
            match Template::parse(value.get_ref()) {
                Ok(t) => out.push((header, t)),
                Err(e) => d.at(value.span(), format!("{key}: {e}")),
            }
        }
        out
    };
    let set = templates(&raw.set, d);
    let add = templates(&raw.add, d);
    let remove = raw
        .remove
        .iter()
        .flatten()
        .filter_map(|n| rewritable_name(n.get_ref(), n.span(), key, d))
        .collect();
    HeaderRewrite { remove, set, add }
}

fn path_rewrite(raw: &RawRoute, d: &mut Diagnostics) -> Option<PathRewrite> {
    let must_be_path = |s: &Spanned<String>, key: &str, d: &mut Diagnostics| {
        if !s.get_ref().starts_with('/') {
            d.at(
                s.span(),
                format!(r#"{key} "{}" must start with "/""#, s.get_ref()),
            );
        }
    };
    match (&raw.strip_prefix, &raw.replace_prefix) {
        (Some(_), Some(r)) => {
            d.at(
                r.span(),
                "strip_prefix and replace_prefix both rewrite the path: keep one",
            );
            None
        }
        (Some(s), None) => {
            must_be_path(s, "strip_prefix", d);
            Some(PathRewrite::Strip(s.get_ref().clone()))
        }
        (None, Some(r)) => {
            let r = r.get_ref();
            must_be_path(&r.from, "replace_prefix.from", d);
            must_be_path(&r.to, "replace_prefix.to", d);
            Some(PathRewrite::Replace {
                from: r.from.get_ref().clone(),
                to: r.to.get_ref().clone(),
            })
        }
        (None, None) => None,
    }
}

fn redirect(
    raw: &Spanned<super::raw::RawRedirect>,
    path: &PathMatch,
    d: &mut Diagnostics,
) -> Option<Redirect> {
    let r = raw.get_ref();
    let scheme = r.scheme.as_ref().and_then(|s| match s.get_ref().as_str() {
        "http" | "https" => Some(s.get_ref().clone()),
        other => {
            d.at(
                s.span(),
                format!(r#"redirect scheme "{other}": write "http" or "https""#),
            );
            None
        }
    });
    let host = r.host.as_ref().and_then(|h| {
        let v = h.get_ref().trim();
        if v.is_empty() || !is_host(v) || v.contains(['/', '?', '#']) {
            d.at(h.span(), format!(r#"redirect host "{}" is not a host: write "example.com" or "example.com:8443""#, h.get_ref()));
            None
        } else {
            Some(v.to_string())
        }
    });
    let valid_path = |p: &Spanned<String>, key: &str, d: &mut Diagnostics| {
        let ok = p.get_ref().starts_with('/') && HeaderValue::from_str(p.get_ref()).is_ok();
        if !ok {
            d.at(
                p.span(),
                format!(r#"redirect {key} "{}" must start with "/""#, p.get_ref()),
            );
        }
        ok
    };
    let new_path = match (&r.path, &r.prefix) {
        (Some(_), Some(p)) => {
            d.at(p.span(), "a redirect has path or prefix, not both");
            None
        }
        (Some(p), None) => {
            valid_path(p, "path", d).then(|| RedirectPath::Path(p.get_ref().clone()))
        }
        (None, Some(p)) => match path {
            PathMatch::Prefix(matched) => {
                valid_path(p, "prefix", d).then(|| RedirectPath::Prefix {
                    matched: matched.clone(),
                    to: p.get_ref().clone(),
                })
            }
            _ => {
                d.at(p.span(), "redirect prefix replaces the route's path_prefix, and this route matches by path or path_regex: use redirect path");
                None
            }
        },
        (None, None) => None,
    };
    let status = match &r.status {
        None => StatusCode::MOVED_PERMANENTLY,
        Some(s) if matches!(s.get_ref(), 301 | 302 | 307 | 308) => {
            StatusCode::from_u16(*s.get_ref()).unwrap_or(StatusCode::MOVED_PERMANENTLY)
        }
        Some(s) => {
            d.at(
                s.span(),
                format!(
                    "redirect status {}: write 301, 302, 307 or 308",
                    s.get_ref()
                ),
            );
            return None;
        }
    };
    Some(Redirect {
        scheme,
        host,
        path: new_path,
        status,
    })
}

fn direct_response(
    raw: &Spanned<super::raw::RawDirectResponse>,
    d: &mut Diagnostics,
) -> Option<DirectResponse> {
    let r = raw.get_ref();
    let status = match StatusCode::from_u16(*r.status.get_ref()) {
        Ok(s) if (200..=599).contains(&s.as_u16()) => s,
        _ => {
            d.at(
                r.status.span(),
                format!(
                    "direct_response status {}: write 200 to 599",
                    r.status.get_ref()
                ),
            );
            return None;
        }
    };
    let content_type = match &r.content_type {
        None => HeaderValue::from_static("text/plain; charset=utf-8"),
        Some(c) => match HeaderValue::from_str(c.get_ref()) {
            Ok(v) if !c.get_ref().trim().is_empty() => v,
            _ => {
                d.at(
                    c.span(),
                    format!(
                        "direct_response content_type \"{}\" is not a valid header value",
                        c.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    Some(DirectResponse {
        status,
        body: r.body.clone().unwrap_or_default().into(),
        content_type,
    })
}

/// Warns (the file still loads) about routes that can never match because a route tried before
/// them matches every request they would.
pub fn warn_shadowed(routes: &[super::RouteConfig], spans: &[Range<usize>], d: &Diagnostics) {
    let pairs =
        crate::traffic::shadow::shadowed(routes.iter().map(|r| (r.host.as_deref(), &r.matcher)));
    for (shadowed, by) in pairs {
        let (Some(later), Some(earlier), Some(span)) =
            (routes.get(shadowed), routes.get(by), spans.get(shadowed))
        else {
            continue;
        };
        tracing::warn!(
            "{}: route \"{}\" (route #{}) can never match: route \"{}\" (route #{}, {}) is tried first and matches every request it would; give it a narrower match or remove it",
            d.position(span.clone()),
            later.name,
            shadowed + 1,
            earlier.name,
            by + 1,
            earlier.matcher.path.describe(),
        );
    }
}

/// `name` or `name:port` (or `[v6]:port`), as a Host header may carry it: an authority without
/// userinfo, path or whitespace.
fn is_host(v: &str) -> bool {
    !v.contains(['@', '/', '?', '#', ' ', '\t'])
        && v.parse::<http::uri::Authority>()
            .is_ok_and(|a| !a.host().is_empty())
}
