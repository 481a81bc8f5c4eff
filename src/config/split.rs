//! Validation of weighted splits (`[[route]] split`) and endpoint weights
//! (`endpoints = [{ address, weight }]`): every problem at its place in the file.

use super::diagnostics::Diagnostics;
use super::model::{SplitTarget, UpstreamConfig};
use super::raw::{RawEndpoint, RawSplitTarget};
use std::collections::HashSet;
use toml::Spanned;

/// The most targets one split may have (the pick keeps a bit per target in one word).
pub const MAX_SPLIT_TARGETS: usize = 64;
/// The largest weight a split target or an endpoint may carry, so sums never overflow.
pub const MAX_WEIGHT: i64 = 1_000_000;

/// Reports a route naming an upstream that does not exist, with a hint.
pub fn check_upstream_name(
    route: &str,
    target: &Spanned<String>,
    upstreams: &[UpstreamConfig],
    d: &mut Diagnostics,
) -> bool {
    let name = target.get_ref();
    if upstreams.iter().any(|u| &u.name == name) {
        return true;
    }
    let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let hint = names
        .iter()
        .map(|n| (strsim::jaro_winkler(name, n), *n))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(": did you mean \"{n}\"?"))
        .unwrap_or_else(|| {
            if names.is_empty() {
                ": no [[upstream]] is defined".to_string()
            } else {
                format!(": defined upstreams are {}", names.join(", "))
            }
        });
    d.at(
        target.span(),
        format!("route \"{route}\" names upstream \"{name}\", which does not exist{hint}"),
    );
    false
}

fn weight(w: i64, span: std::ops::Range<usize>, what: &str, d: &mut Diagnostics) -> u32 {
    match w {
        v if (1..=MAX_WEIGHT).contains(&v) => v as u32,
        v => {
            d.at(
                span,
                format!("{what} weight {v} must be a whole number from 1 to {MAX_WEIGHT}"),
            );
            1
        }
    }
}

/// A route's `split`: known upstreams, each once, positive weights, at most 64 targets.
pub fn split(
    route: &str,
    raw: &Spanned<Vec<Spanned<RawSplitTarget>>>,
    upstreams: &[UpstreamConfig],
    d: &mut Diagnostics,
) -> Vec<SplitTarget> {
    let targets = raw.get_ref();
    if targets.is_empty() {
        d.at(
            raw.span(),
            format!(
                r#"route "{route}" has an empty split: list targets like [{{ upstream = "stable", weight = 95 }}, {{ upstream = "canary", weight = 5 }}]"#
            ),
        );
        return Vec::new();
    }
    if targets.len() > MAX_SPLIT_TARGETS {
        d.at(
            raw.span(),
            format!(
                "route \"{route}\" splits across {} upstreams: at most {MAX_SPLIT_TARGETS}",
                targets.len()
            ),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let t = t.get_ref();
        check_upstream_name(route, &t.upstream, upstreams, d);
        if !seen.insert(t.upstream.get_ref().as_str()) {
            d.at(
                t.upstream.span(),
                format!(
                    "route \"{route}\" lists upstream \"{}\" twice in its split: give it one entry with the summed weight",
                    t.upstream.get_ref()
                ),
            );
        }
        out.push(SplitTarget {
            upstream: t.upstream.get_ref().clone(),
            weight: weight(*t.weight.get_ref(), t.weight.span(), "split", d),
        });
    }
    out
}

/// One endpoint's address and weight.
pub fn endpoint(raw: &Spanned<RawEndpoint>, d: &mut Diagnostics) -> (String, u32) {
    match raw.get_ref() {
        RawEndpoint::Address(a) => (a.clone(), 1),
        RawEndpoint::Weighted(w) => (
            w.address.clone(),
            weight(w.weight, raw.span(), "endpoint", d),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    const UPSTREAMS: &str = "[[upstream]]\nname = \"stable\"\nendpoints = [\"127.0.0.1:1\"]\n[[upstream]]\nname = \"canary\"\nendpoints = [\"127.0.0.1:2\", { address = \"127.0.0.1:3\", weight = 3 }]\n";

    fn file(route: &str) -> String {
        format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\n{route}\n{UPSTREAMS}")
    }

    #[test]
    fn a_split_and_endpoint_weights_are_read() {
        let config = parse(
            "t.toml",
            &file(r#"split = [{ upstream = "stable", weight = 95 }, { upstream = "canary", weight = 5 }]"#),
            Path::new("."),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &config.routes[0];
        assert_eq!(r.upstream.as_deref(), Some("stable"));
        assert_eq!(
            r.split
                .iter()
                .map(|t| (t.upstream.as_str(), t.weight))
                .collect::<Vec<_>>(),
            [("stable", 95), ("canary", 5)]
        );
        assert_eq!(config.upstreams[1].endpoint_weights, [1, 3]);
        assert_eq!(
            config.upstreams[1].endpoints,
            ["127.0.0.1:2", "127.0.0.1:3"]
        );
    }

    #[test]
    fn bad_splits_are_reported_where_they_are_written() {
        let errors = parse(
            "t.toml",
            &file(r#"split = [{ upstream = "stabel", weight = 95 }, { upstream = "canary", weight = 0 }, { upstream = "canary", weight = -2 }]"#),
            Path::new("."),
        )
        .unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with(r#"t.toml:4:23: route "route0" names upstream "stabel", which does not exist: did you mean "stable"?"#),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with(
                "t.toml:4:80: split weight 0 must be a whole number from 1 to 1000000"
            ),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with(r#"t.toml:4:98: route "route0" lists upstream "canary" twice"#),
            "{lines:#?}"
        );
        assert!(
            lines[3].starts_with("t.toml:4:117: split weight -2"),
            "{lines:#?}"
        );

        let both = parse(
            "t.toml",
            &file("upstream = \"stable\"\nsplit = [{ upstream = \"canary\", weight = 1 }]"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            both.0[0]
                .to_string()
                .starts_with(r#"t.toml:5:9: route "route0" has both upstream and split"#),
            "{both}"
        );
        let empty = parse("t.toml", &file("split = []"), Path::new(".")).unwrap_err();
        assert!(
            empty.0[0]
                .to_string()
                .starts_with(r#"t.toml:4:9: route "route0" has an empty split"#),
            "{empty}"
        );
        let none = parse("t.toml", &file("name = \"api\""), Path::new(".")).unwrap_err();
        assert!(
            none.0[0]
                .to_string()
                .contains(r#"route "api" has nowhere to send requests"#),
            "{none}"
        );
    }

    #[test]
    fn a_bad_endpoint_weight_points_at_its_entry() {
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", weight = 0 }]\n";
        let errors = parse("t.toml", text, Path::new(".")).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(
            errors.0[0].to_string().starts_with(
                "t.toml:7:29: endpoint weight 0 must be a whole number from 1 to 1000000"
            ),
            "{errors}"
        );
    }
}
