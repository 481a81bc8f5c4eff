//! Routes that can never match: tried after a route of the same host that matches every request
//! they would. `levee check` warns about them (`crate::config::traffic`); the router tries routes
//! in the same order (`RouteMatch::rank`), so the two cannot disagree.

use super::matcher::RouteMatch;
use std::collections::HashMap;

/// `(shadowed, by)` route indexes, sorted, for routes given as `(host, matcher)` in file order.
/// Hosts are compared as written (lowercase): each distinct host, `*.suffix` or none is one table.
pub fn shadowed<'a>(
    routes: impl IntoIterator<Item = (Option<&'a str>, &'a RouteMatch)>,
) -> Vec<(usize, usize)> {
    let mut tables: HashMap<Option<&str>, Vec<(usize, &RouteMatch)>> = HashMap::new();
    for (i, (host, m)) in routes.into_iter().enumerate() {
        tables.entry(host).or_default().push((i, m));
    }
    let mut out = Vec::new();
    for mut table in tables.into_values() {
        table.sort_by_key(|(i, m)| m.rank(*i));
        for (n, (later, m)) in table.iter().enumerate() {
            if let Some((by, _)) = table[..n].iter().find(|(_, earlier)| earlier.covers(m)) {
                out.push((*later, *by));
            }
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn shadowed_routes_are_named_with_their_shadow() {
        let get_head = RouteMatch {
            methods: vec![Method::GET, Method::HEAD],
            ..RouteMatch::prefix("/a")
        };
        let get = RouteMatch {
            methods: vec![Method::GET],
            ..RouteMatch::prefix("/a")
        };
        let matchers = [get_head, get.clone(), RouteMatch::prefix("/b"), get];
        let hosts = [None, None, Some("x.example"), Some("x.example")];
        // Route 1 is tried after route 0 (same rank, file order), which takes all its requests;
        // route 3 lives in another host's table, where nothing shadows it.
        assert_eq!(
            shadowed(hosts.iter().copied().zip(matchers.iter())),
            vec![(1, 0)]
        );
    }

    #[test]
    fn a_more_specific_route_later_in_the_file_is_not_shadowed() {
        let any = RouteMatch::prefix("/api");
        let gets = RouteMatch {
            methods: vec![Method::GET],
            ..RouteMatch::prefix("/api")
        };
        let longer = RouteMatch::prefix("/api/v2");
        let routes = [(None, &any), (None, &gets), (None, &longer)];
        assert!(shadowed(routes).is_empty());
    }
}
