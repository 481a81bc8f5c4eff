//! The router, compiled once per config: a hash lookup for exact hosts, wildcard suffixes from
//! longest to shortest, then the host-less routes; within a host, the first route in
//! `crate::traffic::matcher`'s order whose path and conditions match (exact `path`, then `path_regex`, then
//! the longest `path_prefix`; more conditions first). A table's path regexes are searched as one
//! `regex::RegexSet`, and its header regexes as one set per header name
//! (`crate::traffic::regex_set`), so many regex routes cost about one search each per request.
//!
//! Like nginx's `server_name` and Envoy's virtual hosts, the host picks a table first and the path
//! is matched only inside it: a request for `api.example.com` never falls through to the routes of
//! another host because its path matched nothing.

use crate::traffic::matcher::{RequestView, RouteMatch};
use crate::traffic::regex_set::RouteTable;
use http::{HeaderMap, Method};
use std::borrow::Cow;
use std::collections::HashMap;

/// Routes for one host, in the order they are tried (`crate::traffic::matcher` states it), their
/// regexes searched as sets (`crate::traffic::regex_set`).
type PathTable = RouteTable;

/// Maps a request's host, path, method, headers and query to a route index.
#[derive(Debug, Default, Clone)]
pub struct Router {
    exact: HashMap<Box<str>, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    wildcard: Vec<(Box<str>, PathTable)>,
    any: Option<PathTable>,
}

impl Router {
    /// Builds from `(host, path_prefix)` per route, in route order; hosts are lowercase already.
    pub fn new<'a>(routes: impl IntoIterator<Item = (Option<&'a str>, &'a str)>) -> Router {
        let matchers: Vec<(Option<&str>, RouteMatch)> = routes
            .into_iter()
            .map(|(h, p)| (h, RouteMatch::prefix(p)))
            .collect();
        Router::with_matchers(matchers.iter().map(|(h, m)| (*h, m)))
    }

    /// Builds from `(host, matcher)` per route, in route order; hosts are lowercase already.
    pub fn with_matchers<'a>(
        routes: impl IntoIterator<Item = (Option<&'a str>, &'a RouteMatch)>,
    ) -> Router {
        type Routes = Vec<(RouteMatch, usize)>;
        let mut exact: HashMap<Box<str>, Routes> = HashMap::new();
        let mut wildcard: Vec<(Box<str>, Routes)> = Vec::new();
        let mut any: Option<Routes> = None;
        for (i, (host, matcher)) in routes.into_iter().enumerate() {
            let entry = (matcher.clone(), i);
            match host {
                None => any.get_or_insert_with(Vec::new).push(entry),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => match wildcard.iter_mut().find(|(s, _)| &**s == suffix) {
                        Some((_, t)) => t.push(entry),
                        None => wildcard.push((suffix.into(), vec![entry])),
                    },
                    None => exact.entry(h.into()).or_default().push(entry),
                },
            }
        }
        wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        Router {
            exact: exact
                .into_iter()
                .map(|(h, t)| (h, RouteTable::new(t)))
                .collect(),
            wildcard: wildcard
                .into_iter()
                .map(|(s, t)| (s, RouteTable::new(t)))
                .collect(),
            any: any.map(RouteTable::new),
        }
    }

    /// `host` must be lowercase without a port. A GET without headers or query.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        let headers = HeaderMap::new();
        self.find_request(
            host,
            &RequestView {
                path,
                query: None,
                method: &Method::GET,
                headers: &headers,
            },
        )
    }

    /// `host` must be lowercase without a port.
    pub fn find_request(&self, host: &str, req: &RequestView<'_>) -> Option<usize> {
        self.table(host).and_then(|t| t.find(req))
    }

    fn table(&self, host: &str) -> Option<&PathTable> {
        if let Some(t) = self.exact.get(host) {
            return Some(t);
        }
        if let Some((_, t)) = self
            .wildcard
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
        {
            return Some(t);
        }
        self.any.as_ref()
    }
}

/// Lowercase host without port, from a `Host` header or URI authority; `None` when malformed.
/// Borrows when the host is already in that form, which is the common case.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new([
            (None, "/"),                          // 0
            (None, "/api"),                       // 1
            (Some("api.example.com"), "/"),       // 2
            (Some("api.example.com"), "/v2"),     // 3
            (Some("*.example.com"), "/"),         // 4
            (Some("*.eu.example.com"), "/"),      // 5
            (Some("only.example.org"), "/admin"), // 6
        ])
    }

    #[test]
    fn exact_host_then_wildcard_then_any() {
        let r = router();
        assert_eq!(r.find("api.example.com", "/v2/users"), Some(3));
        assert_eq!(r.find("api.example.com", "/v1"), Some(2));
        assert_eq!(r.find("www.example.com", "/x"), Some(4));
        assert_eq!(r.find("a.eu.example.com", "/x"), Some(5));
        assert_eq!(r.find("example.com", "/api/x"), Some(1));
        assert_eq!(r.find("other.net", "/z"), Some(0));
    }

    #[test]
    fn host_table_does_not_fall_through() {
        let r = router();
        assert_eq!(r.find("only.example.org", "/public"), None);
        assert_eq!(Router::new([(Some("a.b"), "/x")]).find("c.d", "/x"), None);
    }

    fn get<'a>(path: &'a str, headers: &'a HeaderMap, method: &'a Method) -> RequestView<'a> {
        RequestView {
            path,
            query: None,
            method,
            headers,
        }
    }

    #[test]
    fn exact_then_regex_then_prefix_and_more_conditions_first() {
        use crate::traffic::matcher::{HeaderMatch, PathMatch, Pattern};
        let canary = RouteMatch {
            headers: vec![(
                http::HeaderName::from_static("x-canary"),
                HeaderMatch::Exact("1".into()),
            )],
            ..RouteMatch::prefix("/api")
        };
        let gets = RouteMatch {
            methods: vec![Method::GET],
            ..RouteMatch::prefix("/api")
        };
        let matchers = [
            RouteMatch::prefix("/api"), // 0
            gets,                       // 1
            canary,                     // 2
            RouteMatch {
                path: PathMatch::Regex(Pattern::new("^/api/v[0-9]+$").unwrap()),
                ..RouteMatch::default()
            }, // 3
            RouteMatch {
                path: PathMatch::Exact("/api/v1".into()),
                ..RouteMatch::default()
            }, // 4
        ];
        let r = Router::with_matchers(matchers.iter().map(|m| (None, m)));
        let none = HeaderMap::new();
        let mut canary_headers = HeaderMap::new();
        canary_headers.insert("x-canary", "1".parse().unwrap());
        let (get_m, post) = (Method::GET, Method::POST);
        assert_eq!(r.find_request("h", &get("/api/v1", &none, &get_m)), Some(4));
        assert_eq!(r.find_request("h", &get("/api/v2", &none, &post)), Some(3));
        // Same prefix: one condition beats none, equal counts keep file order.
        assert_eq!(r.find_request("h", &get("/api/x", &none, &get_m)), Some(1));
        assert_eq!(
            r.find_request("h", &get("/api/x", &canary_headers, &get_m)),
            Some(1)
        );
        assert_eq!(
            r.find_request("h", &get("/api/x", &canary_headers, &post)),
            Some(2)
        );
        assert_eq!(r.find_request("h", &get("/api/x", &none, &post)), Some(0));
        assert_eq!(r.find_request("h", &get("/other", &none, &post)), None);
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(
            normalize_host("API.Example.com:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("a b").as_deref(), None);
        assert_eq!(normalize_host("host:port").as_deref(), None);
    }
}
