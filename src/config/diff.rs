//! `levee check --diff`: what a reload from one config to another would do. Which routes,
//! upstreams, listeners and limits are added, removed or modified (key by key, old → new), and
//! for every upstream, limiter and retry budget whether its live state is kept or reset.
//!
//! Whether something changed is decided on the validated model (so `timeout = "30s"` written
//! where the default was already 30s is no change); the keys are named from the config as shown
//! (`super::shown`: as written, secrets removed). Kept or reset comes from `super::carry`, the
//! rule the reload itself applies.

use super::carry::{self, Carry, ResetWhy};
use super::model::{
    AdminConfig, Config, ListenerConfig, RateLimitConfig, RedisConfig, RouteConfig, UpstreamConfig,
};
use std::collections::{BTreeMap, BTreeSet};
use toml::{Table, Value};

/// What a line is about, in the order lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Listener,
    Route,
    /// A route's `[route.rate_limit]`, named by its route.
    Limiter,
    Upstream,
    Redis,
    Admin,
    /// Any other top-level table (named by its key), compared key by key as written.
    Other,
    /// A route's retry budget (state lines only), named by its route.
    RetryBudget,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Route => "route",
            Kind::Limiter => "limiter",
            Kind::Upstream => "upstream",
            Kind::Redis => "redis",
            Kind::Admin => "admin",
            Kind::Other => "",
            Kind::RetryBudget => "retry budget",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// One key, with its old and new value as TOML (`None`: not written, the default).
    Key {
        key: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// The definition changed where the shown config cannot say (a secret).
    Unseen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeLine {
    pub kind: Kind,
    pub name: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLine {
    pub kind: Kind,
    pub name: String,
    pub carry: Carry,
    /// Why it is reset, in words ("circuit_breaker.failure_rate_threshold changed").
    pub why: Option<String>,
}

/// A reload from `old` to `new`, line by line, sorted by kind then name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<ChangeLine>,
    pub states: Vec<StateLine>,
}

/// One thing of a kind on one side: its name, its model, its shown table.
struct Item<T> {
    name: String,
    model: T,
    table: Table,
}

/// Compares what a reload from `old` to `new` would change.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let mut changes = Vec::new();
    compare(Kind::Listener, listeners, old, new, &mut changes);
    compare(Kind::Route, routes, old, new, &mut changes);
    compare(Kind::Limiter, limiters, old, new, &mut changes);
    compare(Kind::Upstream, upstreams, old, new, &mut changes);
    compare(Kind::Redis, redis, old, new, &mut changes);
    compare(Kind::Admin, admin, old, new, &mut changes);
    compare(Kind::Other, others, old, new, &mut changes);
    changes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let states = states(old, new, &changes);
    Diff { changes, states }
}

fn listeners(c: &Config) -> Vec<Item<ListenerConfig>> {
    named(&c.listeners, |l| &l.name, tables(&c.shown, "listener"))
}

/// Each of an array of tables (`[[upstream]]`) with its shown table: the model keeps file order.
fn named<T: Clone>(models: &[T], name: fn(&T) -> &String, tables: Vec<Table>) -> Vec<Item<T>> {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| Item {
            name: name(m).clone(),
            model: m.clone(),
            table: tables.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Routes without their rate limit, which [`limiters`] compares on its own.
fn routes(c: &Config) -> Vec<Item<RouteConfig>> {
    let tables = tables(&c.shown, "route");
    c.routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut table = tables.get(i).cloned().unwrap_or_default();
            table.remove("rate_limit");
            Item {
                name: r.name.clone(),
                model: RouteConfig {
                    rate_limit: None,
                    ..r.clone()
                },
                table,
            }
        })
        .collect()
}

fn limiters(c: &Config) -> Vec<Item<RateLimitConfig>> {
    let tables = tables(&c.shown, "route");
    c.routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let limit = r.rate_limit.clone()?;
            let mut table = Table::new();
            if let Some(t) = tables.get(i).and_then(|t| t.get("rate_limit")) {
                table.insert("rate_limit".into(), t.clone());
            }
            Some(Item {
                name: r.name.clone(),
                model: limit,
                table,
            })
        })
        .collect()
}

fn upstreams(c: &Config) -> Vec<Item<UpstreamConfig>> {
    named(&c.upstreams, |u| &u.name, tables(&c.shown, "upstream"))
}

fn redis(c: &Config) -> Vec<Item<RedisConfig>> {
    c.redis
        .iter()
        .map(|r| Item {
            name: String::new(),
            model: r.clone(),
            table: table(&c.shown, "redis"),
        })
        .collect()
}

/// `[admin]` is always there (its defaults when not written).
fn admin(c: &Config) -> Vec<Item<AdminConfig>> {
    vec![Item {
        name: String::new(),
        model: c.admin.clone(),
        table: table(&c.shown, "admin"),
    }]
}

/// Top-level tables the model has no entity for above (`[dns]`, say): the shown table is
/// all there is to compare, so it stands in for the model too.
fn others(c: &Config) -> Vec<Item<Table>> {
    const KNOWN: [&str; 5] = ["listener", "route", "upstream", "redis", "admin"];
    c.shown
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| {
            let table = match v {
                Value::Table(t) => t.clone(),
                other => Table::from_iter([(k.clone(), other.clone())]),
            };
            Item {
                name: k.clone(),
                model: table.clone(),
                table,
            }
        })
        .collect()
}

/// The tables of an array of tables (`[[route]]`), in file order: the order the model keeps.
fn tables(shown: &Table, key: &str) -> Vec<Table> {
    shown
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_table().cloned().unwrap_or_default())
        .collect()
}

fn table(shown: &Table, key: &str) -> Table {
    shown
        .get(key)
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default()
}

/// The lines for one kind: `items` picks its things out of either side.
fn compare<T: PartialEq>(
    kind: Kind,
    items: fn(&Config) -> Vec<Item<T>>,
    old: &Config,
    new: &Config,
    out: &mut Vec<ChangeLine>,
) {
    let (old, new) = (items(old), items(new));
    let line = |name: &str, change| ChangeLine {
        kind,
        name: name.to_string(),
        change,
    };
    for n in &new {
        match old.iter().find(|o| o.name == n.name) {
            None => out.push(line(&n.name, Change::Added)),
            Some(o) if o.model == n.model => {}
            Some(o) => {
                let keys = key_changes(&o.table, &n.table);
                if keys.is_empty() {
                    out.push(line(&n.name, Change::Unseen));
                }
                out.extend(keys.into_iter().map(|k| line(&n.name, k)));
            }
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        out.push(line(&o.name, Change::Removed));
    }
}

/// Keys whose values differ, by dotted path (`circuit_breaker.window.size`), sorted.
fn key_changes(old: &Table, new: &Table) -> Vec<Change> {
    let (old, new) = (flatten(old), flatten(new));
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Change::Key {
            key: k.clone(),
            old: old.get(k).map(render),
            new: new.get(k).map(render),
        })
        .collect()
}

/// Nested tables become dotted keys; arrays stay whole values.
fn flatten(table: &Table) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, table: &Table, out: &mut BTreeMap<String, Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Table(t) => walk(&key, t, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", table, &mut out);
    out
}

/// A value as TOML writes it inline: `"10s"`, `0.5`, `["a", "b"]`.
fn render(v: &Value) -> String {
    v.to_string()
}

/// One line per upstream, limiter and retry budget of `new`: kept or reset, and why.
fn states(old: &Config, new: &Config, changes: &[ChangeLine]) -> Vec<StateLine> {
    let changed_keys = |kind: Kind, name: &str, prefix: &str| -> Option<String> {
        let keys: Vec<&str> = changes
            .iter()
            .filter(|c| c.kind == kind && c.name == name)
            .filter_map(|c| match &c.change {
                Change::Key { key, .. } if key.starts_with(prefix) => Some(key.as_str()),
                _ => None,
            })
            .collect();
        (!keys.is_empty()).then(|| format!("{} changed", keys.join(", ")))
    };
    let mut out = Vec::new();
    let mut push = |kind: Kind, name: &str, carry: Carry, why: Option<String>| {
        out.push(StateLine {
            kind,
            name: name.to_string(),
            carry,
            why: match carry {
                Carry::Kept => None,
                Carry::Reset(_) => why,
            },
        })
    };
    for u in &new.upstreams {
        let before = old.upstreams.iter().find(|o| o.name == u.name);
        let carry = carry::upstream(before, u);
        let why = match carry {
            Carry::Reset(ResetWhy::Added) => Some("new upstream".to_string()),
            _ => Some(
                changed_keys(Kind::Upstream, &u.name, "")
                    .unwrap_or_else(|| "a value not shown (a secret) changed".into()),
            ),
        };
        push(Kind::Upstream, &u.name, carry, why);
    }
    let redis = (old.redis.as_ref(), new.redis.as_ref());
    for r in &new.routes {
        let before = old.routes.iter().find(|o| o.name == r.name);
        if let Some(carry) = carry::limiter(before, r, redis) {
            let why = match carry {
                Carry::Reset(ResetWhy::Added) if before.is_none() => "new route".to_string(),
                Carry::Reset(ResetWhy::Added) => "rate_limit added".to_string(),
                Carry::Reset(ResetWhy::RedisChanged) => match changed_keys(Kind::Redis, "", "") {
                    Some(keys) => format!("[redis] {keys}"),
                    None => "[redis] changed".to_string(),
                },
                _ => changed_keys(Kind::Limiter, &r.name, "rate_limit")
                    .unwrap_or_else(|| "rate_limit changed".into()),
            };
            push(Kind::Limiter, &r.name, carry, Some(why));
        }
        if let Some(carry) = carry::retry_budget(before, r) {
            let why = match carry {
                Carry::Reset(ResetWhy::Added) if before.is_none() => "new route".to_string(),
                Carry::Reset(ResetWhy::Added) => "retry added".to_string(),
                _ => changed_keys(Kind::Route, &r.name, "retry")
                    .unwrap_or_else(|| "retry changed".into()),
            };
            push(Kind::RetryBudget, &r.name, carry, Some(why));
        }
    }
    // Upstreams first: their state is what an operator mid-incident cares about most.
    let rank = |k: Kind| match k {
        Kind::Upstream => 0,
        Kind::Limiter => 1,
        _ => 2,
    };
    out.sort_by(|a, b| (rank(a.kind), &a.name).cmp(&(rank(b.kind), &b.name)));
    out
}

impl Diff {
    /// The lines `levee check --diff` prints: changes (`+`, `-`, `~`) by kind then name, then
    /// one state line per upstream, limiter and retry budget, in that order, by name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str("no changes\n");
        }
        for c in &self.changes {
            let subject = subject(c.kind, &c.name);
            let line = match &c.change {
                Change::Added => format!("+ {subject}"),
                Change::Removed => format!("- {subject}"),
                Change::Key { key, old, new } => {
                    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(default)".into());
                    format!("~ {subject}: {key} {} → {}", show(old), show(new))
                }
                Change::Unseen => format!("~ {subject}: a value not shown (a secret) changed"),
            };
            out.push_str(&line);
            out.push('\n');
        }
        for s in &self.states {
            let subject = subject(s.kind, &s.name);
            match (&s.carry, &s.why) {
                (Carry::Kept, _) => out.push_str(&format!("{subject}: state kept\n")),
                (Carry::Reset(_), Some(why)) => {
                    out.push_str(&format!("{subject}: state reset ({why})\n"))
                }
                (Carry::Reset(_), None) => out.push_str(&format!("{subject}: state reset\n")),
            }
        }
        out
    }

    /// The same as JSON, for pipelines: `{"changes": [{"kind", "name", "change", "key", "old",
    /// "new"}], "states": [{"kind", "name", "state": "kept" | "reset", "why"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let changes: Vec<_> = self
            .changes
            .iter()
            .map(|c| {
                let mut v = json!({ "kind": c.kind.word(), "name": c.name });
                let (change, key, old, new) = match &c.change {
                    Change::Added => ("added", None, None, None),
                    Change::Removed => ("removed", None, None, None),
                    Change::Key { key, old, new } => {
                        ("modified", Some(key), old.as_ref(), new.as_ref())
                    }
                    Change::Unseen => ("modified", None, None, None),
                };
                v["change"] = json!(change);
                if let Some(key) = key {
                    v["key"] = json!(key);
                    v["old"] = json!(old);
                    v["new"] = json!(new);
                }
                v
            })
            .collect();
        let states: Vec<_> = self
            .states
            .iter()
            .map(|s| {
                json!({
                    "kind": s.kind.word(),
                    "name": s.name,
                    "state": if s.carry.is_kept() { "kept" } else { "reset" },
                    "why": s.why,
                })
            })
            .collect();
        json!({ "changes": changes, "states": states })
    }
}

fn subject(kind: Kind, name: &str) -> String {
    if kind == Kind::Other {
        name.to_string()
    } else if name.is_empty() {
        kind.word().to_string()
    } else {
        format!("{} {name}", kind.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[[listener]]
name = "main"
bind = "127.0.0.1:8080"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
[route.rate_limit]
rps = 100
[route.retry]
attempts = 3

[[upstream]]
name = "api"
endpoints = ["127.0.0.1:9001"]
[upstream.circuit_breaker]
failure_rate_threshold = 0.5

[[upstream]]
name = "web"
endpoints = ["127.0.0.1:9002"]
"#;

    fn parse(text: &str) -> Config {
        super::super::parse("t.toml", text, Path::new(".")).unwrap()
    }

    fn lines(old: &str, new: &str) -> Vec<String> {
        diff(&parse(old), &parse(new))
            .render()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_same_config_changes_nothing_and_keeps_every_state() {
        assert_eq!(
            lines(BASE, BASE),
            [
                "no changes",
                "upstream api: state kept",
                "upstream web: state kept",
                "limiter api: state kept",
                "retry budget api: state kept",
            ]
        );
    }

    #[test]
    fn a_changed_threshold_resets_the_upstream_and_names_the_key() {
        let new = BASE.replace(
            "failure_rate_threshold = 0.5",
            "failure_rate_threshold = 0.3",
        );
        let out = lines(BASE, &new);
        assert_eq!(
            out,
            [
                "~ upstream api: circuit_breaker.failure_rate_threshold 0.5 → 0.3",
                "upstream api: state reset (circuit_breaker.failure_rate_threshold changed)",
                "upstream web: state kept",
                "limiter api: state kept",
                "retry budget api: state kept",
            ]
        );
    }

    #[test]
    fn a_default_written_out_is_no_change() {
        let new = BASE.replace("attempts = 3", "attempts = 3\nbudget = { ratio = 0.2 }");
        assert_eq!(lines(BASE, &new)[0], "no changes");
    }

    #[test]
    fn limits_are_their_own_kind_and_reset_only_when_they_change() {
        let new = BASE
            .replace("rps = 100", "rps = 50")
            .replace("path_prefix = \"/api\"", "path_prefix = \"/v2\"");
        let out = lines(BASE, &new);
        assert_eq!(
            out[..2],
            [
                "~ route api: path_prefix \"/api\" → \"/v2\"",
                "~ limiter api: rate_limit.rps 100 → 50",
            ]
        );
        assert!(out.contains(&"limiter api: state reset (rate_limit.rps changed)".into()));
        assert!(
            out.contains(&"retry budget api: state kept".into()),
            "{out:#?}"
        );
        assert!(out.contains(&"upstream api: state kept".into()), "{out:#?}");
    }

    #[test]
    fn added_and_removed_things_sort_by_kind_then_name() {
        let new = format!(
            "{}\n[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:8081\"\n[[route]]\nname = \"z\"\npath_prefix = \"/z\"\nupstream = \"new\"\n[[upstream]]\nname = \"new\"\nendpoints = [\"127.0.0.1:9003\"]\n",
            BASE.replace(
                "[[upstream]]\nname = \"web\"\nendpoints = [\"127.0.0.1:9002\"]\n",
                ""
            )
        );
        let out = lines(BASE, &new);
        assert_eq!(
            out,
            [
                "+ listener b",
                "+ route z",
                "+ upstream new",
                "- upstream web",
                "upstream api: state kept",
                "upstream new: state reset (new upstream)",
                "limiter api: state kept",
                "retry budget api: state kept",
            ]
        );
    }

    #[test]
    fn tables_the_diff_does_not_know_are_compared_as_written() {
        // No such table exists yet; one added later (`[dns]`) must not go unseen.
        let with = |servers: &str| {
            let c = parse(BASE);
            let mut shown = (*c.shown).clone();
            shown.insert(
                "dns".into(),
                format!("nameservers = [{servers}]")
                    .parse::<Table>()
                    .unwrap()
                    .into(),
            );
            Config {
                shown: std::sync::Arc::new(shown),
                ..c
            }
        };
        let out = diff(&with("\"10.0.0.1:53\""), &with("\"10.0.0.2:53\"")).render();
        assert!(
            out.contains("~ dns: nameservers [\"10.0.0.1:53\"] → [\"10.0.0.2:53\"]\n"),
            "{out}"
        );
        let added = diff(&parse(BASE), &with("")).render();
        assert!(added.starts_with("+ dns\n"), "{added}");
    }

    #[test]
    fn a_changed_redis_resets_global_limits_only() {
        let with = |url: &str, scope: &str| {
            BASE.replace("rps = 100", &format!("rps = 100\nscope = \"{scope}\""))
                + &format!("[redis]\nurl = \"{url}\"\n")
        };
        let old = with("redis://:pw@127.0.0.1:6379/0", "global");
        let new = with("redis://:pw@127.0.0.1:6379/1", "global");
        let out = lines(&old, &new);
        assert!(
            out.contains(
                &"~ redis: url \"redis://***@127.0.0.1:6379/0\" → \"redis://***@127.0.0.1:6379/1\""
                    .into()
            ),
            "{out:#?}"
        );
        assert!(
            out.contains(&"limiter api: state reset ([redis] url changed)".into()),
            "{out:#?}"
        );
        // A new password alone: the reload reconnects, and the diff says so without showing it.
        let other_pw = with("redis://:other@127.0.0.1:6379/0", "global");
        let out = lines(&old, &other_pw);
        assert!(
            out.contains(&"~ redis: a value not shown (a secret) changed".into()),
            "{out:#?}"
        );
        assert!(!out.join("\n").contains("other"), "{out:#?}");
        let local = lines(
            &with("redis://127.0.0.1:6379/0", "local"),
            &with("redis://127.0.0.1:6379/1", "local"),
        );
        assert!(
            local.contains(&"limiter api: state kept".into()),
            "{local:#?}"
        );
    }
}
