//! The Redis server behind `scope = "global"` rate limits: its connections, the one Lua script
//! that evaluates GCRA atomically, and a small breaker that stops calling Redis while it fails.
//!
//! Every call is bounded by `[redis] timeout`, connecting included, so a slow or dead Redis costs
//! a request at most that long; after [`TRIP_AFTER`] failures in a row the breaker skips Redis for
//! [`OPEN_FOR`] (costing nothing), then lets one call through to probe it. Transitions are logged
//! once each and counted in metrics; `/status` shows the state and the last error.

use crate::metrics::{Metrics, ModeLabel};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive failures that make the breaker skip Redis.
pub const TRIP_AFTER: u32 = 3;
/// How long the breaker skips Redis before one probe call.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// GCRA in Redis, with Redis's own clock so instances with skewed clocks agree.
///
/// KEYS[1] the bucket (its value is the theoretical arrival time, µs since the epoch);
/// ARGV[1] emission interval in µs, ARGV[2] burst, ARGV[3] tokens wanted.
/// Grants `min(wanted, available)` tokens at once (a lease), charging one interval each; returns
/// `{granted, retry_after_us}` where `retry_after_us` is only set when nothing was granted.
/// The key expires when the bucket would be full again, so idle keys vanish.
pub const GCRA_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local avail = math.floor((now + tolerance - tat) / interval)
if avail < 1 then
  return {0, tat + interval - tolerance - now}
end
local n = math.min(want, avail)
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) / 1000) + 1000)
return {n, 0}
"#;

/// The URL with its userinfo (user and password) replaced by `***`, for logs, `levee check`,
/// `/status` and the config hash.
///
/// The URL is parsed as the Redis client parses it (the `url` crate), so what the client would
/// send as credentials is what is hidden. A URL the parser refuses is redacted by text, from
/// the scheme to the *last* `@`: a password may hold `/`, `?`, `#` or `@` that a split at the
/// first `/` would have shown.
pub fn redact(raw: &str) -> String {
    let parsed = url::Url::parse(raw).ok().and_then(|mut u| {
        if u.username().is_empty() && u.password().is_none() {
            return Some(u.to_string());
        }
        u.set_password(None).ok()?;
        u.set_username("***").ok()?;
        Some(u.to_string())
    });
    // Anything `@` left after parsing (in a path or query) may be the tail of a password that
    // the parser split elsewhere: then fall back to the text rule.
    match parsed {
        Some(p) if !p.contains('@') || p.matches('@').count() == 1 && p.contains("://***@") => p,
        _ => redact_text(raw),
    }
}

fn redact_text(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    match rest.rfind('@') {
        Some(at) if scheme.is_empty() => format!("***@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => raw.to_string(),
    }
}

/// The secret parts of a URL (password, and user when there is one), for scrubbing them out of
/// messages that may quote the URL (a client library's error, say).
pub fn secrets(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(u) = url::Url::parse(raw) {
        if let Some(p) = u.password() {
            out.push(p.to_string());
            if let Ok(decoded) = percent_encoding::percent_decode_str(p).decode_utf8() {
                out.push(decoded.into_owned());
            }
        }
        if !u.username().is_empty() {
            out.push(u.username().to_string());
        }
    }
    if let Some((_, rest)) = raw.split_once("://") {
        if let Some(at) = rest.rfind('@') {
            out.push(rest[..at].to_string());
            if let Some((_, pw)) = rest[..at].split_once(':') {
                out.push(pw.to_string());
            }
        }
    }
    out.retain(|s| s.len() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `text` with every secret of `url` replaced by `***`.
pub fn scrub(text: &str, url: &str) -> String {
    let mut text = text.to_string();
    for s in secrets(url) {
        if text.contains(&s) {
            text = text.replace(&s, "***");
        }
    }
    text
}

/// Whether Redis answers, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// No call has finished yet.
    Unknown,
    Healthy,
    /// [`TRIP_AFTER`] calls in a row failed; the limits use `on_redis_error`.
    Failing,
}

impl RedisState {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Unknown => "unknown",
            RedisState::Healthy => "healthy",
            RedisState::Failing => "failing",
        }
    }
}

/// The breaker guarding Redis: pure state, driven by the caller's clock.
#[derive(Debug)]
pub struct Health {
    state: RedisState,
    consecutive: u32,
    /// While set and in the future, calls are skipped; once past, one call probes and re-arms it.
    open_until: Option<Instant>,
    last_error: Option<String>,
    failures: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: RedisState::Unknown,
            consecutive: 0,
            open_until: None,
            last_error: None,
            failures: 0,
        }
    }
}

impl Health {
    pub fn state(&self) -> RedisState {
        self.state
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Whether a call may go to Redis now. Past the open period the first caller gets the probe
    /// and re-arms the period, so a probe that is cancelled cannot wedge the breaker.
    pub fn permit(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(t) if now >= t => {
                self.open_until = Some(now + OPEN_FOR);
                true
            }
            Some(_) => false,
        }
    }

    /// A call succeeded; returns the new state if it changed.
    pub fn success(&mut self) -> Option<RedisState> {
        self.consecutive = 0;
        self.open_until = None;
        (self.state != RedisState::Healthy).then(|| {
            self.state = RedisState::Healthy;
            self.state
        })
    }

    /// A call failed; returns the new state if it changed.
    pub fn failure(&mut self, now: Instant, error: String) -> Option<RedisState> {
        self.consecutive = self.consecutive.saturating_add(1);
        self.failures += 1;
        self.last_error = Some(error);
        if self.consecutive < TRIP_AFTER {
            return None;
        }
        self.open_until = Some(now + OPEN_FOR);
        (self.state != RedisState::Failing).then(|| {
            self.state = RedisState::Failing;
            self.state
        })
    }
}

/// What a lease call got from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted, 0..=wanted.
    pub tokens: u32,
    /// When nothing was granted: how long until one token is available.
    pub retry_after: Duration,
}

/// Redis could not be asked (breaker open) or did not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Metric handles for Redis.
#[derive(Clone)]
pub struct RedisMetrics {
    pub errors: Counter,
    pub up: Gauge,
    /// Fallback decisions by mode: allow, deny, local.
    pub fallback: [Counter; 3],
}

impl RedisMetrics {
    pub fn new(m: &Metrics) -> Self {
        RedisMetrics {
            errors: m.redis_errors.clone(),
            up: m.redis_up.clone(),
            fallback: ["allow", "deny", "local"]
                .map(|mode| m.redis_fallback.get_or_create(&ModeLabel { mode }).clone()),
        }
    }
}

/// A configured Redis: lazily connected, shared by every global limit of a snapshot, kept across
/// reloads while `[redis]` is unchanged.
pub struct Redis {
    pub config: RedisConfig,
    client: Result<::redis::Client, String>,
    conns: Box<[tokio::sync::OnceCell<::redis::aio::ConnectionManager>]>,
    next: AtomicUsize,
    health: Mutex<Health>,
    script: ::redis::Script,
    pub metrics: RedisMetrics,
    warmed: AtomicBool,
}

impl Redis {
    /// Parses the URL; connects nothing (so `levee check` stays offline).
    pub fn new(config: &RedisConfig, metrics: &Metrics) -> Redis {
        let client = ::redis::Client::open(config.url.as_str()).map_err(|e| e.to_string());
        Redis {
            config: config.clone(),
            client,
            conns: (0..config.pool_size.max(1))
                .map(|_| tokio::sync::OnceCell::new())
                .collect(),
            next: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
            script: ::redis::Script::new(GCRA_LUA),
            metrics: RedisMetrics::new(metrics),
            warmed: AtomicBool::new(false),
        }
    }

    pub fn url(&self) -> String {
        redact(&self.config.url)
    }

    pub fn state(&self) -> RedisState {
        self.health.lock().state()
    }

    /// Connects in the background (once), so the first requests find a connection ready.
    pub fn warm_up(self: &std::sync::Arc<Self>) {
        if self.warmed.swap(true, Ordering::Relaxed) {
            return;
        }
        let me = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let connect_for = me.connect_timeout();
            let r = tokio::time::timeout(connect_for, me.ping()).await;
            match r {
                Ok(Ok(())) => me.record(Ok(())),
                Ok(Err(e)) => me.record(Err(e)),
                Err(_) => me.record(Err(format!("could not connect within {connect_for:?}"))),
            }
        });
    }

    fn connect_timeout(&self) -> Duration {
        self.config.timeout.max(Duration::from_secs(1))
    }

    async fn connection(&self) -> Result<::redis::aio::ConnectionManager, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let client = self.client.as_ref().map_err(|e| e.clone())?;
        let conn = self.conns[i]
            .get_or_try_init(|| async {
                let cfg = ::redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout()))
                    .set_response_timeout(Some(self.config.timeout))
                    .set_number_of_retries(1);
                ::redis::aio::ConnectionManager::new_with_config(client.clone(), cfg).await
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(conn.clone())
    }

    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.connection().await?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn eval(
        &self,
        key: &str,
        interval_us: u64,
        burst: u32,
        want: u32,
    ) -> Result<Grant, String> {
        let mut conn = self.connection().await?;
        let (tokens, retry_us): (i64, i64) = self
            .script
            .key(key)
            .arg(interval_us)
            .arg(burst)
            .arg(want)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Grant {
            tokens: u32::try_from(tokens.max(0)).unwrap_or(0).min(want),
            retry_after: Duration::from_micros(u64::try_from(retry_us.max(0)).unwrap_or(0)),
        })
    }

    /// Takes up to `want` tokens from the bucket `key`, within `[redis] timeout`; `Unavailable`
    /// when the breaker is open or Redis failed or was too slow.
    pub async fn lease(
        &self,
        key: &str,
        interval_us: u64,
        burst: u32,
        want: u32,
    ) -> Result<Grant, Unavailable> {
        if !self.health.lock().permit(Instant::now()) {
            return Err(Unavailable);
        }
        let timeout = self.config.timeout;
        let r = match tokio::time::timeout(timeout, self.eval(key, interval_us, burst, want)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match r {
            Ok(g) => {
                self.record(Ok(()));
                Ok(g)
            }
            Err(e) => {
                self.record(Err(e));
                Err(Unavailable)
            }
        }
    }

    fn record(&self, r: Result<(), String>) {
        let changed = match r {
            Ok(()) => self.health.lock().success(),
            Err(e) => {
                // A client library's message may quote the URL, password and all.
                let e = scrub(&e, &self.config.url);
                self.metrics.errors.inc();
                let changed = self.health.lock().failure(Instant::now(), e.clone());
                if changed.is_none() {
                    tracing::debug!(url = %self.url(), error = %e, "redis call failed");
                }
                changed
            }
        };
        match changed {
            Some(RedisState::Healthy) => {
                self.metrics.up.set(1);
                tracing::info!(url = %self.url(), "redis healthy: global rate limits are shared");
            }
            Some(RedisState::Failing) => {
                self.metrics.up.set(0);
                let error = self.health.lock().last_error().unwrap_or("").to_string();
                tracing::warn!(
                    url = %self.url(),
                    %error,
                    fallback = self.config.on_redis_error.as_str(),
                    "redis failing: global rate limits fall back to on_redis_error"
                );
            }
            _ => {}
        }
    }

    /// The top-level `redis` object of `/status`.
    pub fn status(&self) -> Value {
        let h = self.health.lock();
        json!({
            "url": self.url(),
            "state": h.state().as_str(),
            "last_error": h.last_error(),
            "consecutive_failures": h.consecutive,
            "errors": h.failures,
            "on_redis_error": self.config.on_redis_error.as_str(),
            "instances": self.config.instances,
            "timeout_ms": self.config.timeout.as_millis() as u64,
            "pool_size": self.config.pool_size,
        })
    }
}

/// What a global limit does while Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Let every request through.
    Allow,
    /// Refuse with 429.
    Deny,
    /// Limit on this instance alone at `rps / instances` (allow when `instances` is unset).
    Local,
}

impl OnRedisError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Allow => "allow",
            OnRedisError::Deny => "deny",
            OnRedisError::Local => "local",
        }
    }
}

/// `[redis]`: where global rate limits keep their state.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// Bound on every Redis call, connecting included.
    pub timeout: Duration,
    /// Multiplexed connections, used round robin.
    pub pool_size: u32,
    pub on_redis_error: OnRedisError,
    /// How many levee instances share the limits; sizes leases and the local fallback.
    pub instances: Option<u32>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            timeout: Duration::from_millis(20),
            pool_size: 1,
            on_redis_error: OnRedisError::Local,
            instances: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    #[test]
    fn redact_hides_userinfo_only() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://127.0.0.1:6379/2"),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(
            redact("redis://:s3cret@redis.internal:6379/2"),
            "redis://***@redis.internal:6379/2"
        );
        assert_eq!(redact("rediss://app:pw@r:6380"), "rediss://***@r:6380");
        assert_eq!(redact("redis://token@r"), "redis://***@r");
    }

    #[test]
    fn redact_survives_passwords_with_separators() {
        for (url, password) in [
            ("redis://:pa/ss@r:6379/0", "ss"),
            ("redis://:a/b/c@r:6379", "b/c"),
            ("redis://:p?q#x@r:6379", "q#x"),
            ("redis://:p@ss@r:6379/1", "p@ss"),
            ("redis://u:p%2Fw@r:6379", "p%2Fw"),
            ("redis://:pa/ss@", "ss"),
            ("not a url :secret/x@host", "secret"),
        ] {
            let r = redact(url);
            assert!(!r.contains(password), "{url} -> {r}");
            assert!(r.contains("***"), "{url} -> {r}");
        }
    }

    #[test]
    fn scrub_removes_passwords_from_messages() {
        let url = "redis://:hunter2/x@r:6379";
        let msg = "cannot connect to redis://:hunter2/x@r:6379 (password hunter2/x)";
        let s = scrub(msg, url);
        assert!(!s.contains("hunter2"), "{s}");
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_trips_after_three_failures_and_probes_once_per_second() {
        let mut h = Health::default();
        assert_eq!(h.state(), RedisState::Unknown);
        assert!(h.permit(Instant::now()));
        assert_eq!(h.success(), Some(RedisState::Healthy));
        assert_eq!(h.success(), None, "no transition, no second log");

        assert_eq!(h.failure(Instant::now(), "e1".into()), None);
        assert_eq!(h.failure(Instant::now(), "e2".into()), None);
        assert!(
            h.permit(Instant::now()),
            "still calling below the threshold"
        );
        assert_eq!(
            h.failure(Instant::now(), "e3".into()),
            Some(RedisState::Failing)
        );
        assert_eq!(h.last_error(), Some("e3"));
        assert!(!h.permit(Instant::now()), "open: Redis is not called");

        advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(!h.permit(Instant::now()));
        advance(Duration::from_millis(1)).await;
        assert!(h.permit(Instant::now()), "one probe");
        assert!(!h.permit(Instant::now()), "only one");
        // The probe fails: open again, no new transition.
        assert_eq!(h.failure(Instant::now(), "e4".into()), None);
        assert!(!h.permit(Instant::now()));

        // A probe that never reports (cancelled) does not wedge it.
        advance(OPEN_FOR).await;
        assert!(h.permit(Instant::now()));
        advance(OPEN_FOR).await;
        assert!(h.permit(Instant::now()));
        assert_eq!(h.success(), Some(RedisState::Healthy));
        assert!(h.permit(Instant::now()));
        assert!(h.permit(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let mut h = Health::default();
        h.failure(Instant::now(), "a".into());
        h.failure(Instant::now(), "b".into());
        h.success();
        h.failure(Instant::now(), "c".into());
        h.failure(Instant::now(), "d".into());
        assert_eq!(h.state(), RedisState::Healthy);
        assert!(h.permit(Instant::now()));
        // Never connected and failing from the start: unknown -> failing.
        let mut h = Health::default();
        for _ in 0..2 {
            assert_eq!(h.failure(Instant::now(), "refused".into()), None);
        }
        assert_eq!(
            h.failure(Instant::now(), "refused".into()),
            Some(RedisState::Failing)
        );
    }
}
