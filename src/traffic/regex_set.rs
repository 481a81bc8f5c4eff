//! One host's routes in the order they are tried (`super::matcher` states it), with their regexes
//! compiled into sets: all `path_regex`es of the table in one `regex::RegexSet`, searched once per
//! request, and the header regexes likewise, one set per header name. A route whose regex is in a
//! set asks the set's answer instead of searching again, so a table of 60 regexes costs about two
//! searches, not 60. Each set is searched lazily, the first time a route needs it, and at most once
//! per request. The order, and so the answer, is the linear scan's: a set only answers "did this
//! regex match", exactly what the regex alone would say.
//!
//! A set is built only where a table has two regexes or more on the same input; a set that cannot
//! be compiled within its size limit is left out and its routes search their own regex as before.

use super::matcher::{HeaderMatch, PathMatch, RequestView, RouteMatch, REGEX_SIZE_LIMIT};
use http::HeaderName;
use regex::{RegexSet, RegexSetBuilder, SetMatches};

/// One route of a table, with where its regexes sit in the table's sets.
#[derive(Debug, Clone)]
struct Entry {
    matcher: RouteMatch,
    route: usize,
    /// Its `path_regex`'s index in the table's path set.
    path_slot: Option<usize>,
    /// Per header condition (same order as `matcher.headers`): `(set, pattern)` in `headers`.
    header_slots: Box<[Option<(usize, usize)>]>,
}

/// The routes of one host, sorted by `RouteMatch::rank`, with their regex sets.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
    paths: Option<RegexSet>,
    /// One set per header name with two regex conditions or more.
    headers: Vec<(HeaderName, RegexSet)>,
}

/// What the sets answered for one request, each searched at most once.
struct Hits<'t> {
    table: &'t RouteTable,
    path: Option<SetMatches>,
    /// Per header set: for each pattern, whether any value of the header matched it.
    headers: Vec<Option<Box<[bool]>>>,
}

impl Hits<'_> {
    fn path(&mut self, path: &str, slot: usize) -> bool {
        match (&self.path, &self.table.paths) {
            (Some(m), _) => m.matched(slot),
            (None, Some(set)) => {
                let m = set.matches(path);
                let hit = m.matched(slot);
                self.path = Some(m);
                hit
            }
            // Unreachable: a slot is given only with a set.
            (None, None) => false,
        }
    }

    fn header(&mut self, req: &RequestView<'_>, set: usize, pattern: usize) -> bool {
        if self.headers.is_empty() {
            self.headers = vec![None; self.table.headers.len()];
        }
        let Some(cell) = self.headers.get_mut(set) else {
            return false;
        };
        let hits = cell.get_or_insert_with(|| {
            let mut hits = vec![false; self.table.headers.get(set).map_or(0, |s| s.1.len())];
            if let Some((name, regexes)) = self.table.headers.get(set) {
                for value in req.headers.get_all(name) {
                    if let Ok(s) = value.to_str() {
                        for i in regexes.matches(s).iter() {
                            if let Some(h) = hits.get_mut(i) {
                                *h = true;
                            }
                        }
                    }
                }
            }
            hits.into_boxed_slice()
        });
        hits.get(pattern).copied().unwrap_or(false)
    }
}

impl RouteTable {
    /// `routes`: `(matcher, route index)` in any order; they are tried in `RouteMatch::rank`'s.
    pub fn new(mut routes: Vec<(RouteMatch, usize)>) -> RouteTable {
        routes.sort_by_key(|(m, r)| m.rank(*r));
        let mut entries: Vec<Entry> = routes
            .into_iter()
            .map(|(matcher, route)| Entry {
                header_slots: vec![None; matcher.headers.len()].into_boxed_slice(),
                matcher,
                route,
                path_slot: None,
            })
            .collect();

        let path_sources: Vec<&str> = entries
            .iter()
            .filter_map(|e| match &e.matcher.path {
                PathMatch::Regex(p) => Some(p.as_str()),
                _ => None,
            })
            .collect();
        let paths = compile(&path_sources);
        if paths.is_some() {
            let mut slot = 0;
            for e in &mut entries {
                if matches!(e.matcher.path, PathMatch::Regex(_)) {
                    e.path_slot = Some(slot);
                    slot += 1;
                }
            }
        }

        let mut names: Vec<HeaderName> = Vec::new();
        for e in &entries {
            for (name, m) in &e.matcher.headers {
                if matches!(m, HeaderMatch::Regex(_)) && !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        let mut headers = Vec::new();
        for name in names {
            let sources: Vec<&str> = entries
                .iter()
                .flat_map(|e| e.matcher.headers.iter())
                .filter_map(|(n, m)| match m {
                    HeaderMatch::Regex(p) if *n == name => Some(p.as_str()),
                    _ => None,
                })
                .collect();
            let Some(set) = compile(&sources) else {
                continue;
            };
            let set_index = headers.len();
            let mut pattern = 0;
            for e in &mut entries {
                for (i, (n, m)) in e.matcher.headers.iter().enumerate() {
                    if *n == name && matches!(m, HeaderMatch::Regex(_)) {
                        if let Some(s) = e.header_slots.get_mut(i) {
                            *s = Some((set_index, pattern));
                        }
                        pattern += 1;
                    }
                }
            }
            headers.push((name, set));
        }

        RouteTable {
            entries,
            paths,
            headers,
        }
    }

    /// The first route, in rank order, whose path and conditions match `req`.
    pub fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        let mut hits = Hits {
            table: self,
            path: None,
            headers: Vec::new(),
        };
        self.entries
            .iter()
            .find(|e| e.matches(req, &mut hits))
            .map(|e| e.route)
    }

    /// How many regexes the sets hold: `(path, header)`. For tests and benches.
    pub fn set_sizes(&self) -> (usize, usize) {
        (
            self.paths.as_ref().map_or(0, RegexSet::len),
            self.headers.iter().map(|(_, s)| s.len()).sum(),
        )
    }
}

impl Entry {
    /// `RouteMatch::matches`, with its regexes answered by the table's sets where they are in one.
    fn matches(&self, req: &RequestView<'_>, hits: &mut Hits<'_>) -> bool {
        let m = &self.matcher;
        let path = match self.path_slot {
            Some(slot) => hits.path(req.path, slot),
            None => m.path.matches(req.path),
        };
        path && (m.methods.is_empty() || m.methods.contains(req.method))
            && m.headers
                .iter()
                .zip(self.header_slots.iter())
                .all(|((name, hm), slot)| match slot {
                    Some((set, pattern)) => hits.header(req, *set, *pattern),
                    None => hm.matches(req.headers, name),
                })
            && m.query_matches(req.query)
    }
}

/// A set of two regexes or more; `None` for fewer, or when the set outgrows its size limit (each
/// regex alone fits in `REGEX_SIZE_LIMIT`, so the set gets that much per regex).
fn compile(sources: &[&str]) -> Option<RegexSet> {
    if sources.len() < 2 {
        return None;
    }
    RegexSetBuilder::new(sources)
        .size_limit(REGEX_SIZE_LIMIT.saturating_mul(sources.len()))
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::matcher::Pattern;
    use http::{HeaderMap, Method};

    fn regex(p: &str) -> PathMatch {
        PathMatch::Regex(Pattern::new(p).unwrap())
    }

    fn header_regex(name: &'static str, p: &str) -> (HeaderName, HeaderMatch) {
        (
            HeaderName::from_static(name),
            HeaderMatch::Regex(Pattern::new(p).unwrap()),
        )
    }

    /// Routes of every kind: exact paths, path regexes (overlapping ones among them), header
    /// regexes on two names (some on the same route as a path regex), exact and present headers,
    /// methods, query parameters and prefixes of several lengths.
    fn mixed() -> Vec<RouteMatch> {
        let mut routes = vec![
            RouteMatch {
                path: PathMatch::Exact("/api/v1".into()),
                ..RouteMatch::default()
            },
            RouteMatch {
                path: PathMatch::Exact("/api/v1".into()),
                methods: vec![Method::POST],
                ..RouteMatch::default()
            },
            RouteMatch {
                path: regex("^/api/v[0-9]+$"),
                ..RouteMatch::default()
            },
            RouteMatch {
                path: regex("^/api/v[0-9]+$"),
                headers: vec![header_regex("x-tenant", "^tenant-[13]$")],
                ..RouteMatch::default()
            },
            RouteMatch {
                path: regex("users/[0-9]+"),
                methods: vec![Method::GET],
                ..RouteMatch::default()
            },
            RouteMatch {
                path: regex("(?i)^/STATIC/"),
                ..RouteMatch::default()
            },
            RouteMatch {
                path: regex("^/v2/[a-z]+/[0-9]+$"),
                headers: vec![header_regex("x-tier", "gold|silver")],
                ..RouteMatch::default()
            },
            RouteMatch {
                headers: vec![
                    header_regex("x-tenant", "^tenant-2(-eu)?$"),
                    header_regex("x-tier", "^gold$"),
                ],
                ..RouteMatch::prefix("/api")
            },
            RouteMatch {
                headers: vec![(
                    HeaderName::from_static("x-canary"),
                    HeaderMatch::Exact("1".into()),
                )],
                ..RouteMatch::prefix("/api/v1")
            },
            RouteMatch {
                headers: vec![(HeaderName::from_static("x-tier"), HeaderMatch::Present)],
                ..RouteMatch::prefix("/v2")
            },
            RouteMatch {
                query: vec![("variant".into(), "b".into())],
                ..RouteMatch::prefix("/api/v1")
            },
            RouteMatch::prefix("/v2"),
            RouteMatch::prefix("/static"),
        ];
        for i in 0..6 {
            routes.push(RouteMatch {
                path: regex(&format!("^/v{i}/[a-z]+/[0-9]+$")),
                ..RouteMatch::default()
            });
            routes.push(RouteMatch {
                headers: vec![header_regex("x-tenant", &format!("^tenant-{i}(-eu)?$"))],
                ..RouteMatch::prefix("/api")
            });
        }
        routes.push(RouteMatch::prefix("/api"));
        routes
    }

    /// The answer before sets: the first route in rank order whose `RouteMatch::matches` holds.
    fn linear(routes: &[RouteMatch], req: &RequestView<'_>) -> Option<usize> {
        let mut sorted: Vec<(usize, &RouteMatch)> = routes.iter().enumerate().collect();
        sorted.sort_by_key(|(i, m)| m.rank(*i));
        sorted
            .into_iter()
            .find(|(_, m)| m.matches(req))
            .map(|(i, _)| i)
    }

    #[test]
    fn sets_answer_like_the_linear_scan() {
        let routes = mixed();
        let mut with_root = routes.clone();
        with_root.push(RouteMatch::prefix("/"));
        let paths = [
            "/",
            "/api",
            "/api/v1",
            "/api/v2",
            "/api/v10",
            "/api/v1/x",
            "/api/x",
            "/v2/ab/12",
            "/v2/ab/12/",
            "/v0/x/1",
            "/v5/abc/9",
            "/v6/abc/9",
            "/users/42",
            "/a/users/7/b",
            "/static/x",
            "/Static/x",
            "/STATIC/",
            "/v2",
            "/other",
            "",
        ];
        let tenants: [&[&str]; 6] = [
            &[],
            &["tenant-1"],
            &["tenant-2-eu"],
            &["tenant-5", "tenant-3"],
            &["x", "tenant-2"],
            &["tenant-9"],
        ];
        let tiers: [&[&str]; 4] = [&[], &["gold"], &["silver"], &["bronze", "gold"]];
        let methods = [Method::GET, Method::POST];
        let queries = [None, Some("variant=b"), Some("variant=a")];
        for table in [&routes, &with_root] {
            let t = RouteTable::new(
                table
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, m)| (m, i))
                    .collect(),
            );
            assert_eq!(t.set_sizes(), (11, 10), "the sets are in use");
            let mut checked = 0;
            let mut found = 0;
            for path in paths {
                for tenant in tenants {
                    for tier in tiers {
                        let mut headers = HeaderMap::new();
                        for v in tenant {
                            headers.append("x-tenant", v.parse().unwrap());
                        }
                        for v in tier {
                            headers.append("x-tier", v.parse().unwrap());
                        }
                        headers.append("x-canary", "1".parse().unwrap());
                        for method in &methods {
                            for query in queries {
                                let req = RequestView {
                                    path,
                                    query,
                                    method,
                                    headers: &headers,
                                };
                                let want = linear(table, &req);
                                assert_eq!(
                                    t.find(&req),
                                    want,
                                    "{path} {tenant:?} {tier:?} {method} {query:?}"
                                );
                                checked += 1;
                                found += usize::from(want.is_some());
                            }
                        }
                    }
                }
            }
            assert!(
                found > checked / 4 && found < checked,
                "{found} of {checked} matched"
            );
        }
    }

    #[test]
    fn a_lone_regex_needs_no_set() {
        let t = RouteTable::new(vec![
            (
                RouteMatch {
                    path: regex("^/a$"),
                    headers: vec![header_regex("x-a", "1")],
                    ..RouteMatch::default()
                },
                0,
            ),
            (RouteMatch::prefix("/"), 1),
        ]);
        assert_eq!(t.set_sizes(), (0, 0));
        let mut h = HeaderMap::new();
        h.insert("x-a", "21".parse().unwrap());
        let req = RequestView {
            path: "/a",
            query: None,
            method: &Method::GET,
            headers: &h,
        };
        assert_eq!(t.find(&req), Some(0));
        assert_eq!(t.find(&RequestView { path: "/b", ..req }), Some(1));
    }
}
