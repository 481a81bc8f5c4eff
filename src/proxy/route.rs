//! The router, compiled once per config: a hash lookup for exact hosts, wildcard suffixes from
//! longest to shortest, then the host-less routes; within a host, the longest `path_prefix` wins.
//!
//! Like nginx's `server_name` and Envoy's virtual hosts, the host picks a table first and the path
//! is matched only inside it: a request for `api.example.com` never falls through to the routes of
//! another host because its path matched nothing.

use std::borrow::Cow;
use std::collections::HashMap;

/// Routes for one host, longest prefix first.
#[derive(Debug, Default, Clone)]
struct PathTable {
    prefixes: Vec<(Box<str>, usize)>,
}

impl PathTable {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.prefixes.push((prefix.into(), route));
        self.prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.prefixes
            .iter()
            .find(|(p, _)| path.starts_with(&**p))
            .map(|(_, r)| *r)
    }
}

/// Maps (host, path) to a route index.
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
        let mut r = Router::default();
        for (i, (host, prefix)) in routes.into_iter().enumerate() {
            match host {
                None => r.any.get_or_insert_with(Default::default).insert(prefix, i),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => match r.wildcard.iter_mut().find(|(s, _)| &**s == suffix) {
                        Some((_, t)) => t.insert(prefix, i),
                        None => {
                            let mut t = PathTable::default();
                            t.insert(prefix, i);
                            r.wildcard.push((suffix.into(), t));
                        }
                    },
                    None => r.exact.entry(h.into()).or_default().insert(prefix, i),
                },
            }
        }
        r.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        r
    }

    /// `host` must be lowercase without a port.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(t) = self.exact.get(host) {
            return t.find(path);
        }
        if let Some((_, t)) = self
            .wildcard
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(&**suffix))
        {
            return t.find(path);
        }
        self.any.as_ref().and_then(|t| t.find(path))
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
