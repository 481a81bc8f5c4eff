//! Global (`scope = "global"`) rate limits: one GCRA bucket per key in Redis, shared by every
//! levee instance, with token leasing to keep Redis off the hot path.
//!
//! A request whose key has a local lease spends a token from it and never touches Redis. On a
//! miss, the instance asks Redis for a batch of `k` tokens at once (the script grants
//! `min(k, available)` and charges them all); the request spends one, the rest form the lease.
//! Leased tokens die after [`LEASE_TTL`], so an instance that goes quiet cannot hoard them.
//! A refusal from Redis is remembered locally for its `retry_after` (nothing can be granted
//! before then), so a flood of over-limit traffic does not turn into a flood of Redis calls.
//!
//! Keys are never stored as written: a key (an API key header, say) is as long as the client
//! makes it, so each is reduced to a [`KeyDigest`], 128 bits of its SHA-256, both in the local
//! lease table and in the Redis key. At most `max_keys` leases are held, idle ones evicted
//! first, so the table is bounded in bytes (about 100 bytes a key), not only in entries. SHA-256
//! rather than a keyed hash: every instance must name a key's bucket in Redis alike, and a
//! client must not be able to make two keys share one.
//!
//! Accuracy: Redis charged every token any instance serves, so over any window the fleet serves at
//! most what Redis granted in it (`rps × window + burst`) plus the tokens sitting in leases when
//! the window opened: at most `k − 1` per instance, `N × (k − 1)` for a fleet of N. Unused leased
//! tokens that expire make the fleet stricter, never looser.

use super::RateLimitConfig;
use crate::deadline::after;
use crate::redis::OnRedisError;
use crate::redis::{Grant, Redis};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A rate-limit key reduced to a fixed size: the first 128 bits of its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 16]);

impl KeyDigest {
    pub fn of(key: &[u8]) -> KeyDigest {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest.as_ref()[..16]);
        KeyDigest(out)
    }

    /// Appends the digest as 32 lowercase hex digits.
    fn push_hex(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// How long leased tokens may be spent before they are dropped.
pub const LEASE_TTL: Duration = Duration::from_millis(500);

/// Lease size `k` for a limit: about 1/20 s of one instance's share of the rate, at least 1, and
/// never more than one instance's share of the burst.
pub fn lease_size(rps: f64, burst: u32, instances: u32) -> u32 {
    let n = f64::from(instances.max(1));
    let by_rate = (rps / 20.0 / n).floor();
    let by_burst = (burst / instances.max(1)).max(1);
    if by_rate.is_finite() && by_rate >= 1.0 {
        (by_rate.min(f64::from(u32::MAX)) as u32).min(by_burst)
    } else {
        1
    }
}

/// What the local lease table says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCheck {
    /// A leased token was spent: allow.
    Take,
    /// Redis recently refused this key; no token exists before this long.
    Denied(Duration),
    /// Ask Redis for this many tokens (`k`, or 1 while another ask for the key is in flight).
    Miss { want: u32 },
}

#[derive(Debug, Default)]
struct Lease {
    tokens: u32,
    expires: Option<Instant>,
    denied_until: Option<Instant>,
    /// An ask for `k` tokens is in flight until then (bounded, so a cancelled ask cannot stick).
    asking_until: Option<Instant>,
}

impl Lease {
    fn idle(&self, now: Instant) -> bool {
        let live = |t: Option<Instant>| t.is_some_and(|t| t > now);
        let holds_tokens = self.tokens > 0 && live(self.expires);
        !(holds_tokens || live(self.denied_until) || live(self.asking_until))
    }
}

/// Per-key leases of one route on this instance.
#[derive(Debug)]
pub struct Leases {
    k: u32,
    ttl: Duration,
    /// How long an ask may be in flight (the Redis timeout).
    ask_for: Duration,
    max_keys: usize,
    map: Mutex<HashMap<KeyDigest, Lease>>,
}

impl Leases {
    pub fn new(k: u32, ttl: Duration, ask_for: Duration, max_keys: usize) -> Self {
        Leases {
            k: k.max(1),
            ttl,
            ask_for,
            max_keys: max_keys.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn lease_size(&self) -> u32 {
        self.k
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }

    /// Spends a leased token if there is one.
    pub fn take(&self, key: &KeyDigest, now: Instant) -> LeaseCheck {
        let mut map = self.map.lock();
        if let Some(l) = map.get_mut(key) {
            if l.tokens > 0 && l.expires.is_some_and(|t| t > now) {
                l.tokens -= 1;
                return LeaseCheck::Take;
            }
            l.tokens = 0;
            if let Some(until) = l.denied_until.filter(|t| *t > now) {
                return LeaseCheck::Denied(until - now);
            }
            if l.asking_until.is_some_and(|t| t > now) {
                return LeaseCheck::Miss { want: 1 };
            }
            l.asking_until = Some(after(now, self.ask_for));
            return LeaseCheck::Miss { want: self.k };
        }
        if map.len() >= self.max_keys {
            map.retain(|_, l| !l.idle(now));
            // Still nearly full: forget them all rather than scan again on the next new key (a
            // flood of fresh keys would make every request a scan). Forgetting leases only makes
            // the limit stricter; a forgotten refusal is asked of Redis again.
            if map.len() >= self.max_keys - self.max_keys / 8 {
                map.clear();
            }
        }
        map.insert(
            *key,
            Lease {
                asking_until: Some(after(now, self.ask_for)),
                ..Lease::default()
            },
        );
        LeaseCheck::Miss { want: self.k }
    }

    /// Records Redis's answer to an ask for `want` tokens. Returns whether this request may go:
    /// it spends one granted token, the rest (capped at `k − 1`) become the lease.
    pub fn settle(&self, key: &KeyDigest, want: u32, grant: Grant, now: Instant) -> bool {
        let mut map = self.map.lock();
        if map.len() >= self.max_keys && !map.contains_key(key) {
            // Evicted while Redis was asked, and the table is full again: answer without
            // keeping a lease rather than grow past the cap.
            return grant.tokens > 0;
        }
        let l = map.entry(*key).or_default();
        if want == self.k {
            l.asking_until = None;
        }
        if grant.tokens == 0 {
            l.denied_until = Some(after(now, grant.retry_after));
            return false;
        }
        l.denied_until = None;
        let live = if l.expires.is_some_and(|t| t > now) {
            l.tokens
        } else {
            0
        };
        l.tokens = (live + grant.tokens - 1).min(self.k - 1);
        l.expires = Some(after(now, self.ttl));
        true
    }

    /// An ask failed: let the next request ask for a full batch again.
    pub fn abandon(&self, key: &KeyDigest, want: u32) {
        if want == self.k {
            if let Some(l) = self.map.lock().get_mut(key) {
                l.asking_until = None;
            }
        }
    }
}

/// What a global limit does when Redis could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Allow,
    Deny,
    /// Check the local limiter at rps / instances.
    Local,
}

impl Fallback {
    /// The decision for `on_redis_error` when a local limiter at rps/N exists or not.
    pub fn for_mode(mode: OnRedisError, has_local: bool) -> Fallback {
        match mode {
            OnRedisError::Allow => Fallback::Allow,
            OnRedisError::Deny => Fallback::Deny,
            OnRedisError::Local if has_local => Fallback::Local,
            OnRedisError::Local => Fallback::Allow,
        }
    }

    /// Index into `RedisMetrics::fallback` (allow, deny, local).
    pub fn metric_index(self) -> usize {
        match self {
            Fallback::Allow => 0,
            Fallback::Deny => 1,
            Fallback::Local => 2,
        }
    }
}

/// The local limiter settings used while Redis is out: each of N instances takes 1/N.
pub fn local_share(config: &RateLimitConfig, instances: Option<u32>) -> Option<RateLimitConfig> {
    let n = instances?.max(1);
    Some(RateLimitConfig {
        rps: config.rps / f64::from(n),
        burst: (config.burst / n).max(1),
        scope: super::RateLimitScope::Local,
        ..config.clone()
    })
}

/// A route's global limit on this instance.
pub struct GlobalLimiter {
    pub redis: Arc<Redis>,
    pub leases: Leases,
    /// `levee:rl:{route}:` — the key's digest in hex follows.
    prefix: String,
    interval_us: u64,
    burst: u32,
    pub fallback: Fallback,
}

impl GlobalLimiter {
    pub fn new(route: &str, config: &RateLimitConfig, redis: Arc<Redis>, has_local: bool) -> Self {
        let instances = redis.config.instances.unwrap_or(1);
        let k = lease_size(config.rps, config.burst, instances);
        let interval_us = (1e6 / config.rps).round().clamp(1.0, 1e15) as u64;
        GlobalLimiter {
            leases: Leases::new(k, LEASE_TTL, redis.config.timeout, config.max_keys),
            prefix: format!("levee:rl:{route}:"),
            interval_us,
            burst: config.burst.max(1),
            fallback: Fallback::for_mode(redis.config.on_redis_error, has_local),
            redis,
        }
    }

    /// Asks Redis for tokens; `Some(allowed)` with its answer, `None` when it could not be asked.
    pub async fn ask(&self, key: &KeyDigest, want: u32) -> Option<Result<(), Duration>> {
        let mut redis_key = String::with_capacity(self.prefix.len() + 32);
        redis_key.push_str(&self.prefix);
        key.push_hex(&mut redis_key);
        match self
            .redis
            .lease(&redis_key, self.interval_us, self.burst, want)
            .await
        {
            Ok(grant) => {
                if self.leases.settle(key, want, grant, Instant::now()) {
                    Some(Ok(()))
                } else {
                    Some(Err(grant.retry_after))
                }
            }
            Err(_) => {
                self.leases.abandon(key, want);
                self.redis.metrics.fallback[self.fallback.metric_index()].inc();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);

    fn k(key: &str) -> KeyDigest {
        KeyDigest::of(key.as_bytes())
    }

    fn grant(tokens: u32) -> Grant {
        Grant {
            tokens,
            retry_after: Duration::ZERO,
        }
    }

    #[test]
    fn lease_size_follows_rate_instances_and_burst() {
        assert_eq!(lease_size(20.0, 20, 2), 1);
        assert_eq!(lease_size(100.0, 100, 1), 5);
        assert_eq!(lease_size(1000.0, 1000, 2), 25);
        assert_eq!(lease_size(1000.0, 10, 2), 5, "capped by the burst share");
        assert_eq!(lease_size(1000.0, 1, 4), 1);
        assert_eq!(lease_size(0.5, 1, 1), 1);
        assert_eq!(lease_size(f64::INFINITY, 7, 1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_serves_k_requests_per_redis_call() {
        let leases = Leases::new(5, LEASE_TTL, 20 * MS, 100);
        let now = Instant::now();
        assert_eq!(leases.take(&k("a"), now), LeaseCheck::Miss { want: 5 });
        assert!(leases.settle(&k("a"), 5, grant(5), now));
        for _ in 0..4 {
            assert_eq!(leases.take(&k("a"), now), LeaseCheck::Take);
        }
        assert_eq!(leases.take(&k("a"), now), LeaseCheck::Miss { want: 5 });
        // Keys are independent.
        assert_eq!(leases.take(&k("b"), now), LeaseCheck::Miss { want: 5 });
        assert_eq!(leases.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_grants_and_concurrent_asks_never_hold_more_than_k_minus_1() {
        let leases = Leases::new(5, LEASE_TTL, 20 * MS, 100);
        let now = Instant::now();
        assert_eq!(leases.take(&k("a"), now), LeaseCheck::Miss { want: 5 });
        // A second request while the first ask is in flight asks for one token only.
        assert_eq!(leases.take(&k("a"), now), LeaseCheck::Miss { want: 1 });
        assert!(leases.settle(&k("a"), 1, grant(1), now));
        assert!(leases.settle(&k("a"), 5, grant(2), now), "a partial grant");
        assert_eq!(leases.take(&k("a"), now), LeaseCheck::Take);
        assert_eq!(leases.take(&k("a"), now), LeaseCheck::Miss { want: 5 });
        // Overlapping full grants are capped at k - 1 held tokens.
        assert!(leases.settle(&k("a"), 5, grant(5), now));
        assert!(leases.settle(&k("a"), 1, grant(1), now));
        assert!(leases.settle(&k("a"), 5, grant(5), now));
        let served = (0..10)
            .take_while(|_| leases.take(&k("a"), now) == LeaseCheck::Take)
            .count();
        assert_eq!(served, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn leased_tokens_expire() {
        let leases = Leases::new(10, LEASE_TTL, 20 * MS, 100);
        let take = || leases.take(&k("a"), Instant::now());
        assert_eq!(take(), LeaseCheck::Miss { want: 10 });
        assert!(leases.settle(&k("a"), 10, grant(10), Instant::now()));
        assert_eq!(take(), LeaseCheck::Take);
        advance(LEASE_TTL).await;
        assert_eq!(
            take(),
            LeaseCheck::Miss { want: 10 },
            "8 unused tokens are gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_remembered_until_retry_after() {
        let leases = Leases::new(3, LEASE_TTL, 20 * MS, 100);
        let take = || leases.take(&k("a"), Instant::now());
        assert_eq!(take(), LeaseCheck::Miss { want: 3 });
        let refused = Grant {
            tokens: 0,
            retry_after: 100 * MS,
        };
        assert!(!leases.settle(&k("a"), 3, refused, Instant::now()));
        advance(40 * MS).await;
        assert_eq!(take(), LeaseCheck::Denied(60 * MS));
        advance(60 * MS).await;
        assert_eq!(take(), LeaseCheck::Miss { want: 3 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_cancelled_ask_does_not_stick() {
        let leases = Leases::new(4, LEASE_TTL, 20 * MS, 100);
        let take = || leases.take(&k("a"), Instant::now());
        assert_eq!(take(), LeaseCheck::Miss { want: 4 });
        leases.abandon(&k("a"), 4);
        assert_eq!(take(), LeaseCheck::Miss { want: 4 });
        // Never settled nor abandoned (the request was dropped): after the timeout, a full ask.
        assert_eq!(take(), LeaseCheck::Miss { want: 1 });
        advance(20 * MS).await;
        assert_eq!(take(), LeaseCheck::Miss { want: 4 });
    }

    #[tokio::test(start_paused = true)]
    async fn key_cap_holds() {
        let leases = Leases::new(2, LEASE_TTL, 20 * MS, 10);
        for i in 0..100 {
            let key = k(&format!("k{i}"));
            let now = Instant::now();
            if leases.take(&key, now) == (LeaseCheck::Miss { want: 2 }) {
                leases.settle(&key, 2, grant(2), now);
            }
            assert!(leases.len() <= 10);
            advance(MS).await;
        }
    }

    #[test]
    fn digests_are_fixed_size_and_stable() {
        let long = "x".repeat(16 * 1024);
        assert_ne!(k(&long), k("x"));
        assert_eq!(k("client-1"), k("client-1"));
        let mut hex = String::new();
        k("").push_hex(&mut hex);
        // SHA-256 of the empty string, first 16 bytes: the Redis key every instance agrees on.
        assert_eq!(hex, "e3b0c44298fc1c149afbf4c8996fb924");
    }

    /// A flood of distinct keys while every lease is busy: the table never passes the cap and
    /// a new key does not cost a scan of the table each time.
    #[tokio::test(start_paused = true)]
    async fn a_key_flood_stays_under_the_cap() {
        let leases = Leases::new(2, LEASE_TTL, 20 * MS, 1000);
        let now = Instant::now();
        for i in 0..50_000u32 {
            let key = KeyDigest::of(&i.to_le_bytes());
            assert_eq!(leases.take(&key, now), LeaseCheck::Miss { want: 2 });
            assert!(leases.len() <= 1000);
        }
        for i in 0..50_000u32 {
            let key = KeyDigest::of(&i.to_le_bytes());
            leases.settle(&key, 2, grant(2), now);
            assert!(leases.len() <= 1000);
        }
    }

    #[test]
    fn fallback_modes() {
        use OnRedisError::*;
        assert_eq!(Fallback::for_mode(Allow, true), Fallback::Allow);
        assert_eq!(Fallback::for_mode(Deny, true), Fallback::Deny);
        assert_eq!(Fallback::for_mode(Deny, false), Fallback::Deny);
        assert_eq!(Fallback::for_mode(Local, true), Fallback::Local);
        assert_eq!(
            Fallback::for_mode(Local, false),
            Fallback::Allow,
            "local without instances = allow"
        );
    }

    #[test]
    fn local_share_splits_rate_and_burst() {
        let c = RateLimitConfig {
            rps: 100.0,
            burst: 50,
            key: crate::layers::rate_limit::RateLimitKey::Global,
            scope: crate::layers::rate_limit::RateLimitScope::Global,
            max_keys: 10,
        };
        assert_eq!(local_share(&c, None), None);
        let s = local_share(&c, Some(4)).unwrap();
        assert_eq!((s.rps, s.burst), (25.0, 12));
        assert_eq!(s.scope, crate::layers::rate_limit::RateLimitScope::Local);
        assert_eq!(local_share(&c, Some(100)).unwrap().burst, 1);
    }
}
