//! Timed manual overrides: an operator holds an upstream's breaker open or closed, or drains or
//! ejects one endpoint, for a bounded time and with a reason (`POST /overrides`,
//! `levee override set`, the dashboard).
//!
//! This file is the bookkeeping only: which overrides are active, their ids, and when they
//! expire, with the clock passed in so that tests drive time. [`live`] runs it (one store per
//! levee, shared by every worker), pushes each override onto the upstream or endpoint it holds
//! (an atomic the request path reads) and logs and counts every change.
//!
//! Rules an operator can rely on:
//! - every override has a TTL (at most [`MAX_TTL`]) and a reason: nothing is held forever or
//!   without a word about why;
//! - one override per target: setting a new one on the same upstream or endpoint replaces the
//!   old (so a drain can be extended, or a force_open turned into a force_closed);
//! - overrides are runtime state, never written to the config file; a reload keeps every
//!   override whose target still exists and drops the others.

pub mod live;

use std::fmt;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The longest TTL an override may have: long enough for a night, short enough that a forgotten
/// drain ends by itself.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Overrides active at once (there is one per target at most; this bounds the memory).
pub const MAX_OVERRIDES: usize = 1024;

/// What an override holds: an upstream's breaker, or one endpoint of an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `upstream:NAME`
    Upstream(String),
    /// `endpoint:UPSTREAM/ADDR`, the address as the upstream's `endpoints` lists it.
    Endpoint { upstream: String, address: String },
}

impl Target {
    /// Parses `upstream:NAME` or `endpoint:UPSTREAM/ADDR`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let hint = r#"write "upstream:NAME" or "endpoint:UPSTREAM/HOST:PORT""#;
        if let Some(name) = s.strip_prefix("upstream:") {
            if name.is_empty() {
                return Err(format!("target \"{s}\" names no upstream: {hint}"));
            }
            return Ok(Target::Upstream(name.to_string()));
        }
        if let Some(rest) = s.strip_prefix("endpoint:") {
            return match rest.split_once('/') {
                Some((upstream, address)) if !upstream.is_empty() && !address.is_empty() => {
                    Ok(Target::Endpoint {
                        upstream: upstream.to_string(),
                        address: address.to_string(),
                    })
                }
                _ => Err(format!("target \"{s}\" is not UPSTREAM/ADDR: {hint}")),
            };
        }
        Err(format!("unknown target \"{s}\": {hint}"))
    }

    /// The upstream the target is (or belongs to).
    pub fn upstream(&self) -> &str {
        match self {
            Target::Upstream(u) | Target::Endpoint { upstream: u, .. } => u,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Upstream(u) => write!(f, "upstream:{u}"),
            Target::Endpoint { upstream, address } => write!(f, "endpoint:{upstream}/{address}"),
        }
    }
}

/// What an override does to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Upstream: every request gets levee's 503 `circuit_open`.
    ForceOpen,
    /// Upstream: the breaker admits everything and does not trip.
    ForceClosed,
    /// Endpoint: no new requests; those in flight finish.
    Drain,
    /// Endpoint: out of the balancer like an outlier ejection, which nothing else can end early.
    Eject,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::ForceOpen,
        Action::ForceClosed,
        Action::Drain,
        Action::Eject,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::ForceOpen => "force_open",
            Action::ForceClosed => "force_closed",
            Action::Drain => "drain",
            Action::Eject => "eject",
        }
    }

    pub fn parse(s: &str) -> Result<Action, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown action \"{s}\": use force_open or force_closed (upstream:NAME), drain or eject (endpoint:UPSTREAM/ADDR)"
                )
            })
    }

    /// Whether the action applies to this kind of target.
    pub fn fits(self, target: &Target) -> bool {
        matches!(
            (self, target),
            (Action::ForceOpen | Action::ForceClosed, Target::Upstream(_))
                | (Action::Drain | Action::Eject, Target::Endpoint { .. })
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated request for an override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub target: Target,
    pub action: Action,
    pub ttl: Duration,
    pub reason: String,
}

impl Spec {
    /// Checks what an operator sent, field by field, with a message that says how to fix it.
    /// `exists` says whether the running config has the target.
    pub fn parse(
        target: Option<&str>,
        action: Option<&str>,
        ttl: Option<&str>,
        reason: Option<&str>,
        exists: impl Fn(&Target) -> bool,
    ) -> Result<Spec, String> {
        let target = Target::parse(
            target
                .ok_or(r#"missing "target": "upstream:NAME" or "endpoint:UPSTREAM/HOST:PORT""#)?,
        )?;
        let action = Action::parse(
            action.ok_or(r#"missing "action": force_open, force_closed, drain or eject"#)?,
        )?;
        if !action.fits(&target) {
            return Err(match target {
                Target::Upstream(_) => format!(
                    "{action} applies to an endpoint (endpoint:UPSTREAM/ADDR); an upstream takes force_open or force_closed"
                ),
                Target::Endpoint { .. } => format!(
                    "{action} applies to an upstream (upstream:NAME); an endpoint takes drain or eject"
                ),
            });
        }
        if !exists(&target) {
            return Err(match &target {
                Target::Upstream(u) => format!("no upstream \"{u}\" in the running config"),
                Target::Endpoint { upstream, address } => format!(
                    "no endpoint \"{address}\" in upstream \"{upstream}\" of the running config"
                ),
            });
        }
        let ttl =
            ttl.ok_or(r#"missing "ttl": how long the override holds, like "10m" (at most 24h)"#)?;
        let ttl = crate::config::units::parse_duration(ttl).map_err(|e| format!("ttl: {e}"))?;
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(format!(
                "ttl must be more than 0 and at most 24h (overrides always end by themselves), not {}",
                humantime::format_duration(ttl)
            ));
        }
        let reason = reason.map(str::trim).unwrap_or("");
        if reason.is_empty() {
            return Err(r#"missing "reason": say why, for whoever looks at /status next"#.into());
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(format!(
                "reason is {} bytes; at most {MAX_REASON_BYTES}",
                reason.len()
            ));
        }
        if reason.chars().any(char::is_control) {
            return Err("reason must be one line without control characters".into());
        }
        Ok(Spec {
            target,
            action,
            ttl,
            reason: reason.to_string(),
        })
    }
}

/// One active override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub id: u64,
    pub target: Target,
    pub action: Action,
    pub reason: String,
    /// Who set it: the admin client's address.
    pub set_by: String,
    pub set_at: SystemTime,
    pub ttl: Duration,
    pub expires_at: Instant,
}

impl Override {
    pub fn expires_in(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }

    /// As the admin API, `/status` and the dashboard show it.
    pub fn to_json(&self, now: Instant) -> serde_json::Value {
        let left = self.expires_in(now);
        let unix = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        };
        serde_json::json!({
            "id": self.id,
            "target": self.target.to_string(),
            "action": self.action.as_str(),
            "reason": self.reason,
            "set_by": self.set_by,
            "set_at": unix(self.set_at),
            "ttl_ms": u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            "expires_in_ms": u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            "expires_at": unix(SystemTime::now() + left),
        })
    }
}

/// The active overrides, at most one per target.
#[derive(Debug, Default)]
pub struct OverrideStore {
    last_id: u64,
    active: Vec<Override>,
}

impl OverrideStore {
    /// Adds an override; returns it and the one it replaced on the same target, if any.
    pub fn set(
        &mut self,
        spec: Spec,
        set_by: String,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(Override, Option<Override>), String> {
        let replaced = self
            .active
            .iter()
            .position(|o| o.target == spec.target)
            .map(|i| self.active.swap_remove(i));
        if replaced.is_none() && self.active.len() >= MAX_OVERRIDES {
            return Err(format!(
                "{MAX_OVERRIDES} overrides are active already; clear some first"
            ));
        }
        self.last_id += 1;
        let o = Override {
            id: self.last_id,
            target: spec.target,
            action: spec.action,
            reason: spec.reason,
            set_by,
            set_at: wall,
            ttl: spec.ttl,
            expires_at: now + spec.ttl,
        };
        self.active.push(o.clone());
        Ok((o, replaced))
    }

    /// Ends an override early; `None` when no active override has that id.
    pub fn clear(&mut self, id: u64) -> Option<Override> {
        let i = self.active.iter().position(|o| o.id == id)?;
        Some(self.active.swap_remove(i))
    }

    /// Removes and returns the overrides whose time is up.
    pub fn expire(&mut self, now: Instant) -> Vec<Override> {
        let (done, keep) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|o| o.expires_at <= now);
        self.active = keep;
        done
    }

    /// Keeps the overrides whose target `exists`; returns the others, removed.
    pub fn retain(&mut self, exists: impl Fn(&Target) -> bool) -> Vec<Override> {
        let (keep, gone) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|o| exists(&o.target));
        self.active = keep;
        gone
    }

    /// The active overrides, oldest id first.
    pub fn list(&self) -> Vec<Override> {
        let mut all = self.active.clone();
        all.sort_by_key(|o| o.id);
        all
    }

    pub fn get(&self, target: &Target) -> Option<&Override> {
        self.active.iter().find(|o| o.target == *target)
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// When the next override expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.active.iter().map(|o| o.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, action: &str, ttl: &str) -> Spec {
        Spec::parse(
            Some(target),
            Some(action),
            Some(ttl),
            Some("testing"),
            |_| true,
        )
        .unwrap()
    }

    /// Sets `action` on `target` for `ttl`, by "me" at `now`.
    fn set(
        store: &mut OverrideStore,
        target: &str,
        action: &str,
        ttl: &str,
        now: Instant,
    ) -> Result<(Override, Option<Override>), String> {
        store.set(
            spec(target, action, ttl),
            "me".into(),
            now,
            SystemTime::now(),
        )
    }

    fn err(
        target: Option<&str>,
        action: Option<&str>,
        ttl: Option<&str>,
        reason: Option<&str>,
    ) -> String {
        Spec::parse(target, action, ttl, reason, |t| t.upstream() == "api").unwrap_err()
    }

    #[test]
    fn targets_round_trip() {
        for s in [
            "upstream:api",
            "endpoint:api/127.0.0.1:80",
            "endpoint:api/[::1]:80",
        ] {
            assert_eq!(Target::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "api",
            "upstream:",
            "endpoint:api",
            "endpoint:/1.2.3.4:5",
            "endpoint:api/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_that_do_not_fit_are_refused_with_the_fix() {
        let ok = Some("upstream:api");
        assert!(err(None, Some("drain"), Some("1m"), Some("x")).contains("missing \"target\""));
        assert!(err(ok, None, Some("1m"), Some("x")).contains("missing \"action\""));
        assert!(err(ok, Some("pause"), Some("1m"), Some("x")).contains("unknown action"));
        assert!(err(ok, Some("drain"), Some("1m"), Some("x")).contains("applies to an endpoint"));
        let ep = Some("endpoint:api/1.2.3.4:80");
        assert!(
            err(ep, Some("force_open"), Some("1m"), Some("x")).contains("applies to an upstream")
        );
        assert!(err(
            Some("upstream:web"),
            Some("force_open"),
            Some("1m"),
            Some("x")
        )
        .contains("no upstream \"web\""));
        assert!(err(ok, Some("force_open"), None, Some("x")).contains("missing \"ttl\""));
        assert!(err(ok, Some("force_open"), Some("ten"), Some("x")).contains("ttl:"));
        assert!(err(ok, Some("force_open"), Some("10"), Some("x")).contains("no unit"));
        assert!(err(ok, Some("force_open"), Some("25h"), Some("x")).contains("at most 24h"));
        assert!(err(ok, Some("force_open"), Some("0s"), Some("x")).contains("at most 24h"));
        assert!(err(ok, Some("force_open"), Some("1m"), None).contains("missing \"reason\""));
        assert!(err(ok, Some("force_open"), Some("1m"), Some("  ")).contains("missing \"reason\""));
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        assert!(err(ok, Some("force_open"), Some("1m"), Some(&long)).contains("bytes"));
        assert!(err(ok, Some("force_open"), Some("1m"), Some("a\nb")).contains("one line"));
        assert!(Spec::parse(ok, Some("force_open"), Some("24h"), Some("x"), |_| true).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn overrides_expire_on_time_and_one_target_holds_one() {
        let mut store = OverrideStore::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let (a, _) = set(&mut store, "upstream:api", "force_open", "10s", t0).unwrap();
        let (b, _) = set(&mut store, "endpoint:api/1.2.3.4:80", "drain", "30s", t0).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(store.next_expiry(), Some(t0 + Duration::from_secs(10)));

        // The same target again replaces the first, with a new id.
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let (c, replaced) = store
            .set(
                spec("upstream:api", "force_closed", "10s"),
                "you".into(),
                now,
                wall,
            )
            .unwrap();
        assert_eq!(replaced.map(|r| r.id), Some(1));
        assert_eq!(c.id, 3);
        assert_eq!(
            store.list().iter().map(|o| o.id).collect::<Vec<_>>(),
            [2, 3]
        );

        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(
            store.expire(Instant::now()).is_empty(),
            "not before its time"
        );
        assert_eq!(
            store.get(&Target::Upstream("api".into())).map(|o| o.id),
            Some(3)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let gone = store.expire(Instant::now());
        assert_eq!(gone.iter().map(|o| o.id).collect::<Vec<_>>(), [3]);
        assert_eq!(store.next_expiry(), Some(t0 + Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(store.expire(Instant::now()).len(), 1);
        assert!(store.is_empty());
        assert_eq!(store.next_expiry(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn clear_and_retain() {
        let mut store = OverrideStore::default();
        let now = Instant::now();
        set(&mut store, "upstream:api", "force_open", "1m", now).unwrap();
        set(&mut store, "upstream:web", "force_open", "1m", now).unwrap();
        set(&mut store, "endpoint:api/1.2.3.4:80", "eject", "1m", now).unwrap();
        assert_eq!(
            store.clear(2).map(|o| o.target.to_string()).as_deref(),
            Some("upstream:web")
        );
        assert_eq!(store.clear(2), None, "cleared once");
        let dropped = store.retain(|t| *t != Target::Upstream("api".into()));
        assert_eq!(dropped.iter().map(|o| o.id).collect::<Vec<_>>(), [1]);
        assert_eq!(store.list().iter().map(|o| o.id).collect::<Vec<_>>(), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_is_bounded() {
        let mut store = OverrideStore::default();
        let now = Instant::now();
        for i in 0..MAX_OVERRIDES {
            set(
                &mut store,
                &format!("upstream:u{i}"),
                "force_open",
                "1m",
                now,
            )
            .unwrap();
        }
        let full = set(&mut store, "upstream:one-more", "force_open", "1m", now);
        assert!(full.unwrap_err().contains("clear some first"));
        // Replacing one still works when full.
        assert!(set(&mut store, "upstream:u0", "force_closed", "1m", now).is_ok());
    }
}
