//! What a reload carries over: the one rule deciding whether an upstream's live state (breaker,
//! ejections, health, pools), a route's rate-limit buckets and its retry budget survive a
//! reload. `Snapshot::build` applies it and `levee check --diff` reports it (`super::diff`), so
//! the preview can never disagree with what the reload does. Change the rule here, nowhere else.

use super::model::{RateLimitScope, RedisConfig, RouteConfig, UpstreamConfig};

/// Whether a piece of live state survives a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// The running state goes on: an open breaker stays open, buckets stay drained.
    Kept,
    /// Fresh state is built, for this reason.
    Reset(ResetWhy),
}

/// Why state is not carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetWhy {
    /// Nothing of that name ran before.
    Added,
    /// Its own definition changed (`super::diff` names the keys).
    Changed,
    /// A global limit whose `[redis]` changed: it gets a new Redis client, and so new leases.
    RedisChanged,
}

impl Carry {
    pub fn is_kept(self) -> bool {
        self == Carry::Kept
    }

    fn unless_changed(same: bool) -> Carry {
        if same {
            Carry::Kept
        } else {
            Carry::Reset(ResetWhy::Changed)
        }
    }
}

/// An upstream keeps its breaker, ejections, health and pools while its whole definition is
/// unchanged: any of its keys may change what that state means (endpoints, thresholds, TLS).
/// `old` is the running upstream of the same name, if any.
pub fn upstream(old: Option<&UpstreamConfig>, new: &UpstreamConfig) -> Carry {
    match old {
        None => Carry::Reset(ResetWhy::Added),
        Some(old) => Carry::unless_changed(old == new),
    }
}

/// The shared Redis client (connections, breaker) is kept while `[redis]` is unchanged.
pub fn redis(old: Option<&RedisConfig>, new: &RedisConfig) -> Carry {
    match old {
        None => Carry::Reset(ResetWhy::Added),
        Some(old) => Carry::unless_changed(old == new),
    }
}

/// A route's rate limiter keeps its buckets while its `rate_limit` settings are unchanged and,
/// for a global limit, its Redis client is kept. `None` when `new` has no limit. `old` is the
/// running route of the same name, if any; `redis` the running and the new `[redis]`.
pub fn limiter(
    old: Option<&RouteConfig>,
    new: &RouteConfig,
    redis: (Option<&RedisConfig>, Option<&RedisConfig>),
) -> Option<Carry> {
    let limit = new.rate_limit.as_ref()?;
    let Some(old_limit) = old.and_then(|o| o.rate_limit.as_ref()) else {
        return Some(Carry::Reset(ResetWhy::Added));
    };
    if old_limit != limit {
        return Some(Carry::Reset(ResetWhy::Changed));
    }
    if limit.scope == RateLimitScope::Global {
        let (old_redis, new_redis) = redis;
        let kept = new_redis.is_some_and(|n| self::redis(old_redis, n).is_kept());
        if !kept {
            return Some(Carry::Reset(ResetWhy::RedisChanged));
        }
    }
    Some(Carry::Kept)
}

/// A route's retry budget is kept while its `retry` settings are unchanged. `None` when `new`
/// does not retry (`attempts` of 1 or no `[route.retry]`).
pub fn retry_budget(old: Option<&RouteConfig>, new: &RouteConfig) -> Option<Carry> {
    let retry = new.retry.as_ref().filter(|r| r.attempts > 1)?;
    let old_retry = old
        .and_then(|o| o.retry.as_ref())
        .filter(|r| r.attempts > 1);
    Some(match old_retry {
        None => Carry::Reset(ResetWhy::Added),
        Some(o) => Carry::unless_changed(o == retry),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(route_extra: &str, upstream_extra: &str, redis: &str) -> super::super::Config {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nupstream = \"u\"\n{route_extra}\n[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n{upstream_extra}\n{redis}"
        );
        super::super::parse("t.toml", &text, Path::new(".")).unwrap()
    }

    #[test]
    fn an_upstream_is_kept_only_while_its_definition_is_equal() {
        let a = config("", "", "");
        let b = config(
            "",
            "[upstream.circuit_breaker]\nfailure_rate_threshold = 0.3",
            "",
        );
        assert_eq!(
            upstream(None, &a.upstreams[0]),
            Carry::Reset(ResetWhy::Added)
        );
        assert_eq!(
            upstream(Some(&a.upstreams[0]), &a.upstreams[0]),
            Carry::Kept
        );
        assert_eq!(
            upstream(Some(&a.upstreams[0]), &b.upstreams[0]),
            Carry::Reset(ResetWhy::Changed)
        );
    }

    #[test]
    fn a_global_limiter_follows_its_redis_and_a_local_one_does_not() {
        let redis = |db: u8| format!("[redis]\nurl = \"redis://127.0.0.1:6379/{db}\"");
        let global = "[route.rate_limit]\nrps = 5\nscope = \"global\"";
        let local = "[route.rate_limit]\nrps = 5";
        let (g0, g1) = (config(global, "", &redis(0)), config(global, "", &redis(1)));
        let pair = |a: &super::super::Config, b: &super::super::Config| {
            limiter(
                Some(&a.routes[0]),
                &b.routes[0],
                (a.redis.as_ref(), b.redis.as_ref()),
            )
        };
        assert_eq!(pair(&g0, &g0), Some(Carry::Kept));
        assert_eq!(pair(&g0, &g1), Some(Carry::Reset(ResetWhy::RedisChanged)));
        let (l0, l1) = (config(local, "", &redis(0)), config(local, "", &redis(1)));
        assert_eq!(
            pair(&l0, &l1),
            Some(Carry::Kept),
            "a local limit has no Redis"
        );
        let faster = config("[route.rate_limit]\nrps = 6", "", "");
        assert_eq!(pair(&l0, &faster), Some(Carry::Reset(ResetWhy::Changed)));
        let none = config("", "", "");
        assert_eq!(pair(&l0, &none), None, "no limit, no state");
        assert_eq!(pair(&none, &l0), Some(Carry::Reset(ResetWhy::Added)));
    }

    #[test]
    fn a_retry_budget_exists_only_with_more_than_one_attempt() {
        let one = config("[route.retry]\nattempts = 1", "", "");
        let three = config("[route.retry]\nattempts = 3", "", "");
        let four = config("[route.retry]\nattempts = 4", "", "");
        assert_eq!(retry_budget(Some(&three.routes[0]), &one.routes[0]), None);
        assert_eq!(
            retry_budget(Some(&one.routes[0]), &three.routes[0]),
            Some(Carry::Reset(ResetWhy::Added))
        );
        assert_eq!(
            retry_budget(Some(&three.routes[0]), &three.routes[0]),
            Some(Carry::Kept)
        );
        assert_eq!(
            retry_budget(Some(&three.routes[0]), &four.routes[0]),
            Some(Carry::Reset(ResetWhy::Changed))
        );
    }
}
