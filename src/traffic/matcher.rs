//! What a route matches besides its host: the path (a prefix, an exact path or a regex) and the
//! optional conditions on method, headers and query parameters. Compiled once at config load;
//! matching a request allocates nothing unless a query parameter needs percent-decoding (a host's
//! table, `super::regex_set`, adds one small buffer per regex set it searches).
//!
//! Order within a host (see `super::route`): exact `path` routes, then `path_regex` routes in file
//! order, then `path_prefix` routes longest first; among routes with the same path, the one with
//! more conditions first, then file order. The first route whose path and conditions all match
//! wins.

use http::{HeaderMap, HeaderName, Method};

/// The most memory one compiled regex may take (`RegexBuilder::size_limit`): far above any
/// sensible route regex, far below what a pathological one could take.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A regex from the config, compiled once; equal when written the same.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        regex::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("regex compiles to more than {limit} bytes: simplify it")
                }
                e => format!("invalid regex: {}", e.to_string().replace('\n', " ")),
            })
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    /// `path_prefix`: a plain string prefix.
    Prefix(String),
    /// `path`: the whole path, query excluded.
    Exact(String),
    /// `path_regex`: searches the path; anchor it with `^`.
    Regex(Pattern),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".into())
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// Whether every path `other` matches, `self` matches too (false when it cannot tell).
    fn covers(&self, other: &PathMatch) -> bool {
        match (self, other) {
            (PathMatch::Prefix(a), PathMatch::Prefix(b)) => b.starts_with(a.as_str()),
            (PathMatch::Prefix(a), PathMatch::Exact(b)) => b.starts_with(a.as_str()),
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Regex(a), PathMatch::Exact(b)) => a.is_match(b),
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a == b,
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PathMatch::Prefix(p) => format!("path_prefix \"{p}\""),
            PathMatch::Exact(p) => format!("path \"{p}\""),
            PathMatch::Regex(r) => format!("path_regex \"{}\"", r.as_str()),
        }
    }
}

/// One `headers` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderMatch {
    /// `"*"`: the header is present, whatever its value.
    Present,
    /// A value, compared byte for byte.
    Exact(String),
    /// `{ regex = "..." }`: searches the value.
    Regex(Pattern),
}

impl HeaderMatch {
    pub fn matches(&self, headers: &HeaderMap, name: &HeaderName) -> bool {
        let mut values = headers.get_all(name).iter();
        match self {
            HeaderMatch::Present => values.next().is_some(),
            HeaderMatch::Exact(v) => values.any(|h| h.as_bytes() == v.as_bytes()),
            HeaderMatch::Regex(r) => values.any(|h| h.to_str().is_ok_and(|s| r.is_match(s))),
        }
    }

    /// Whether every request `other` admits, `self` admits too (false when it cannot tell).
    fn covers(&self, other: &HeaderMatch) -> bool {
        match (self, other) {
            (HeaderMatch::Present, _) => true,
            (HeaderMatch::Exact(a), HeaderMatch::Exact(b)) => a == b,
            (HeaderMatch::Regex(a), HeaderMatch::Exact(b)) => a.is_match(b),
            (HeaderMatch::Regex(a), HeaderMatch::Regex(b)) => a == b,
            _ => false,
        }
    }
}

/// The parts of a request a route can match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Everything a route matches besides its host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, HeaderMatch)>,
    /// Parameter name and value, both compared percent-decoded.
    pub query: Vec<(String, String)>,
}

impl RouteMatch {
    /// A `path_prefix` route without conditions (today's routes).
    pub fn prefix(prefix: &str) -> RouteMatch {
        RouteMatch {
            path: PathMatch::Prefix(prefix.into()),
            ..RouteMatch::default()
        }
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path)
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self
                .headers
                .iter()
                .all(|(name, m)| m.matches(req.headers, name))
            && self.query_matches(req.query)
    }

    /// Whether every `query` condition holds for the request's query string.
    pub fn query_matches(&self, query: Option<&str>) -> bool {
        self.query.iter().all(|(k, v)| query_has(query, k, v))
    }

    /// The order routes of one host are tried in, lowest first; `index` is the route's place in
    /// the file. Exact paths, then regexes, then prefixes longest first; more conditions first;
    /// then file order.
    pub fn rank(&self, index: usize) -> impl Ord {
        let (class, len) = match &self.path {
            PathMatch::Exact(_) => (0, 0),
            PathMatch::Regex(_) => (1, 0),
            PathMatch::Prefix(p) => (2, p.len()),
        };
        (
            class,
            std::cmp::Reverse(len),
            std::cmp::Reverse(self.condition_count()),
            index,
        )
    }

    /// Method, header and query conditions: more of them is more specific.
    pub fn condition_count(&self) -> usize {
        usize::from(!self.methods.is_empty()) + self.headers.len() + self.query.len()
    }

    /// Whether `self` matches every request `other` matches. Conservative: `false` when it cannot
    /// tell (two different regexes), so a shadow warning is never wrong.
    pub fn covers(&self, other: &RouteMatch) -> bool {
        self.path.covers(&other.path)
            && (self.methods.is_empty()
                || (!other.methods.is_empty()
                    && other.methods.iter().all(|m| self.methods.contains(m))))
            && self.headers.iter().all(|(name, mine)| {
                other
                    .headers
                    .iter()
                    .any(|(n, theirs)| n == name && mine.covers(theirs))
            })
            && self.query.iter().all(|q| other.query.contains(q))
    }
}

/// Whether the query string has parameter `name` with value `value` (percent-decoded, `+` as a
/// space, as HTML forms encode them).
fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == name && v == value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            path,
            query,
            method: &Method::GET,
            headers,
        }
    }

    #[test]
    fn conditions_all_must_match() {
        let m = RouteMatch {
            path: PathMatch::Regex(Pattern::new("^/v[0-9]+/").unwrap()),
            methods: vec![Method::GET],
            headers: vec![
                (
                    HeaderName::from_static("x-canary"),
                    HeaderMatch::Exact("1".into()),
                ),
                (HeaderName::from_static("x-user"), HeaderMatch::Present),
                (
                    HeaderName::from_static("x-tier"),
                    HeaderMatch::Regex(Pattern::new("^gold|silver$").unwrap()),
                ),
            ],
            query: vec![("debug".into(), "a b".into())],
        };
        let mut h = HeaderMap::new();
        h.insert("x-canary", "1".parse().unwrap());
        h.insert("x-user", "".parse().unwrap());
        h.insert("x-tier", "gold".parse().unwrap());
        assert!(m.matches(&view("/v2/x", Some("z=1&debug=a+b"), &h)));
        assert!(m.matches(&view("/v2/x", Some("debug=a%20b"), &h)));
        assert!(!m.matches(&view("/v2/x", Some("debug=ab"), &h)));
        assert!(!m.matches(&view("/v2/x", None, &h)));
        assert!(!m.matches(&view("/x/v2/", Some("debug=a+b"), &h)));
        let mut post = view("/v2/x", Some("debug=a+b"), &h);
        post.method = &Method::POST;
        assert!(!m.matches(&post));
        h.insert("x-canary", "10".parse().unwrap());
        assert!(!m.matches(&view("/v2/x", Some("debug=a+b"), &h)));
    }

    #[test]
    fn covers_is_conservative() {
        let any = RouteMatch::prefix("/api");
        let get = RouteMatch {
            methods: vec![Method::GET],
            ..RouteMatch::prefix("/api/v1")
        };
        assert!(any.covers(&get));
        assert!(!get.covers(&any));
        let get_head = RouteMatch {
            methods: vec![Method::GET, Method::HEAD],
            ..RouteMatch::prefix("/api")
        };
        assert!(get_head.covers(&get));
        assert!(!get.covers(&get_head));
        let regex = RouteMatch {
            path: PathMatch::Regex(Pattern::new("^/a").unwrap()),
            ..RouteMatch::default()
        };
        let other_regex = RouteMatch {
            path: PathMatch::Regex(Pattern::new("^/ab").unwrap()),
            ..RouteMatch::default()
        };
        assert!(!regex.covers(&other_regex), "cannot tell: not a shadow");
        let exact = RouteMatch {
            path: PathMatch::Exact("/abc".into()),
            ..RouteMatch::default()
        };
        assert!(regex.covers(&exact));
    }

    #[test]
    fn regex_size_is_bounded() {
        assert!(Pattern::new("^/(a|b)$").is_ok());
        let err = Pattern::new("[a-z]{1000}{1000}").unwrap_err();
        assert!(err.contains("more than"), "{err}");
        assert!(Pattern::new("(").unwrap_err().starts_with("invalid regex"));
    }
}
