//! Per-route rewrites: request and response headers to remove, set and add (values with
//! `${client_ip}`, `${request_id}`, `${route}`, `${upstream}`, parsed once at config load), and the
//! path (`strip_prefix`, `replace_prefix`) the upstream sees. `host_rewrite` is applied where the
//! upstream's `Host` is decided (`super::handler`).

use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers no rewrite may touch: hop-by-hop and framing headers are levee's to manage (the
/// request-hygiene guarantees), `host` has `host_rewrite`, `x-levee-error` is levee's verdict.
pub const FORBIDDEN: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "x-levee-error",
    "x-request-id",
];

/// A variable a header value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    RequestId,
    Route,
    Upstream,
}

impl Var {
    const ALL: [(&'static str, Var); 4] = [
        ("client_ip", Var::ClientIp),
        ("request_id", Var::RequestId),
        ("route", Var::Route),
        ("upstream", Var::Upstream),
    ];
}

/// A header value with variables, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// No variables: the value as it goes out.
    Fixed(HeaderValue),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Var(Var),
}

impl Template {
    /// Parses `${name}` variables; `$` not followed by `{` is literal.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_string()));
            }
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed \"${{\" in \"{s}\": write ${{client_ip}}, ${{request_id}}, ${{route}} or ${{upstream}}"));
            };
            let name = &after[..end];
            let Some((_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown variable ${{{name}}}: the variables are ${{client_ip}}, ${{request_id}}, ${{route}}, ${{upstream}}"));
            };
            parts.push(Part::Var(*var));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let invalid = || format!("\"{s}\" is not a valid header value (control characters?)");
        for p in &parts {
            if let Part::Text(t) = p {
                HeaderValue::from_str(t).map_err(|_| invalid())?;
            }
        }
        match parts.as_slice() {
            [] => Ok(Template::Fixed(HeaderValue::from_static(""))),
            [Part::Text(t)] => Ok(Template::Fixed(
                HeaderValue::from_str(t).map_err(|_| invalid())?,
            )),
            _ => Ok(Template::Parts(parts)),
        }
    }

    pub fn expand(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        match self {
            Template::Fixed(v) => Some(v.clone()),
            Template::Parts(parts) => {
                let mut out = Vec::with_capacity(64);
                for p in parts {
                    match p {
                        Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                        Part::Var(Var::ClientIp) => {
                            use std::io::Write;
                            // Writing to a Vec cannot fail.
                            let _ = write!(out, "{}", vars.client_ip);
                        }
                        Part::Var(Var::RequestId) => {
                            out.extend_from_slice(vars.request_id.as_bytes())
                        }
                        Part::Var(Var::Route) => out.extend_from_slice(vars.route.as_bytes()),
                        Part::Var(Var::Upstream) => out.extend_from_slice(vars.upstream.as_bytes()),
                    }
                }
                HeaderValue::from_bytes(&out).ok()
            }
        }
    }
}

/// What variables expand to for one request.
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    pub route: &'a str,
    /// Empty on routes that answer themselves.
    pub upstream: &'a str,
}

/// `request_headers` or `response_headers`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderRewrite {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderRewrite {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Removes, then sets (replacing every value), then adds (appending a value).
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            if let Some(v) = value.expand(vars) {
                headers.insert(name.clone(), v);
            }
        }
        for (name, value) in &self.add {
            if let Some(v) = value.expand(vars) {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// How the path is rewritten before it goes upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum PathRewrite {
    /// `strip_prefix`: `/v1/users` → `/users`, `/v1` → `/`.
    Strip(String),
    /// `replace_prefix = { from, to }`.
    Replace { from: String, to: String },
}

impl PathRewrite {
    /// The new path, or `None` when it stays (the path does not start with the prefix).
    pub fn apply(&self, path: &str) -> Option<String> {
        let (from, to) = match self {
            PathRewrite::Strip(p) => (p.as_str(), ""),
            PathRewrite::Replace { from, to } => (from.as_str(), to.as_str()),
        };
        let rest = path.strip_prefix(from)?;
        let mut out = String::with_capacity(to.len() + rest.len() + 2);
        if !to.starts_with('/') {
            out.push('/');
        }
        out.push_str(to);
        match (out.ends_with('/'), rest.strip_prefix('/')) {
            // `to = "/"` and a rest of `/x` would give `//x`.
            (true, Some(r)) => out.push_str(r),
            (false, None) if !rest.is_empty() => {
                out.push('/');
                out.push_str(rest);
            }
            _ => out.push_str(rest),
        }
        Some(out)
    }
}

/// A route's rewrites, all optional.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteRewrite {
    pub request_headers: HeaderRewrite,
    pub response_headers: HeaderRewrite,
    pub path: Option<PathRewrite>,
    /// The `Host` (HTTP/2: `:authority`) the upstream sees.
    pub host: Option<HeaderValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_and_unknown_ones_are_refused() {
        let id = HeaderValue::from_static("abc");
        let vars = Vars {
            client_ip: "10.0.0.1".parse().unwrap(),
            request_id: &id,
            route: "api",
            upstream: "app",
        };
        let t = Template::parse("${client_ip} via ${route}/${upstream} #${request_id}$x").unwrap();
        assert_eq!(t.expand(&vars).unwrap(), "10.0.0.1 via api/app #abc$x");
        assert_eq!(
            Template::parse("plain").unwrap(),
            Template::Fixed("plain".parse().unwrap())
        );
        assert!(Template::parse("${nope}")
            .unwrap_err()
            .contains("unknown variable ${nope}"));
        assert!(Template::parse("${route").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a\u{1}b").is_err());
    }

    #[test]
    fn remove_then_set_then_add() {
        let id = HeaderValue::from_static("abc");
        let vars = Vars {
            client_ip: "::1".parse().unwrap(),
            request_id: &id,
            route: "r",
            upstream: "u",
        };
        let rw = HeaderRewrite {
            remove: vec![HeaderName::from_static("x-debug")],
            set: vec![(
                HeaderName::from_static("x-env"),
                Template::parse("prod").unwrap(),
            )],
            add: vec![(
                HeaderName::from_static("x-env"),
                Template::parse("${route}").unwrap(),
            )],
        };
        let mut h = HeaderMap::new();
        h.insert("x-debug", "1".parse().unwrap());
        h.append("x-env", "a".parse().unwrap());
        h.append("x-env", "b".parse().unwrap());
        rw.apply(&mut h, &vars);
        assert!(!h.contains_key("x-debug"));
        let env: Vec<_> = h.get_all("x-env").iter().collect();
        assert_eq!(env, ["prod", "r"]);
    }

    #[test]
    fn prefixes_rewrite_without_double_slashes() {
        let strip = PathRewrite::Strip("/v1".into());
        assert_eq!(strip.apply("/v1/users").as_deref(), Some("/users"));
        assert_eq!(strip.apply("/v1").as_deref(), Some("/"));
        assert_eq!(strip.apply("/v2/x"), None);
        let replace = PathRewrite::Replace {
            from: "/v1/".into(),
            to: "/".into(),
        };
        assert_eq!(replace.apply("/v1/users").as_deref(), Some("/users"));
        let replace = PathRewrite::Replace {
            from: "/old".into(),
            to: "/new/api".into(),
        };
        assert_eq!(replace.apply("/old/x").as_deref(), Some("/new/api/x"));
        assert_eq!(replace.apply("/old").as_deref(), Some("/new/api"));
    }
}
