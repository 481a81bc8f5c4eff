//! GCRA (Generic Cell Rate Algorithm) rate limiting.
//!
//! GCRA is a token bucket written as a single number: the *theoretical
//! arrival time* (TAT), the instant at which the bucket would be full again.
//! A request is allowed if, after charging it one emission interval
//! (`1 / rps`), the TAT is no further ahead of `now` than `burst` intervals.
//! Keeping one `u64` per bucket instead of `(tokens, last_refill)` means a
//! bucket is updated with a single compare-and-swap, and a keyed table costs
//! 16 bytes per client.
//!
//! All arithmetic is integer nanoseconds since an origin [`Instant`], so there
//! is no floating-point drift between requests and results are exact enough to
//! assert in tests (`retry_after` is precisely `1/rps` per missing token).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Limit parameters: a sustained rate and how many requests may arrive at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcraSettings {
    /// Sustained requests per second. Non-positive or NaN means (almost) no
    /// refill: only the initial burst is ever allowed.
    pub rps: f64,
    /// How many requests may arrive at once (bucket size). `0` is treated as `1`.
    pub burst: u32,
}

/// Outcome of a rate-limit check.
///
/// The fields feed the IETF `RateLimit` header: `limit` is the burst,
/// `remaining` the tokens left, `reset` the time until the bucket is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow {
        /// Requests that could still be made right now.
        remaining: u32,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    /// The request exceeds the limit.
    Deny {
        /// Time after which this same request would be allowed (`Retry-After`).
        retry_after: Duration,
        /// Time until the bucket is full again.
        reset: Duration,
    },
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Keeps `now + burst * interval` far from `u64::MAX` so the hot path needs no
/// overflow checks beyond one saturating add (about 146 years of nanoseconds).
const MAX_HORIZON_NS: u64 = u64::MAX / 4;

/// Settings reduced to integer nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Emission interval: the cost of one request.
    interval: u64,
    /// How far ahead of `now` the TAT may run: `burst * interval`.
    tolerance: u64,
}

impl Params {
    fn new(s: &GcraSettings) -> Self {
        let burst = u64::from(s.burst.max(1));
        // NaN and non-positive rates fail this test and become "never refills";
        // an infinite rate becomes a 1ns interval, i.e. effectively unlimited.
        let interval = if s.rps > 0.0 {
            (1e9 / s.rps).round()
        } else {
            f64::INFINITY
        };
        // `as` saturates, so huge intervals clamp instead of wrapping.
        let interval = (interval as u64).clamp(1, (MAX_HORIZON_NS / burst).max(1));
        Params {
            interval,
            tolerance: interval.saturating_mul(burst),
        }
    }

    /// One GCRA step; the new TAT is `Some` only when the request is allowed.
    fn step(&self, tat: u64, now: u64) -> (Decision, Option<u64>) {
        // A TAT in the past is a full bucket: credit does not accumulate beyond it.
        let start = tat.max(now);
        let new_tat = start.saturating_add(self.interval);
        let ahead = new_tat - now;
        if ahead > self.tolerance {
            let decision = Decision::Deny {
                retry_after: Duration::from_nanos(ahead - self.tolerance),
                reset: Duration::from_nanos(start - now),
            };
            (decision, None)
        } else {
            let remaining = (self.tolerance - ahead) / self.interval;
            let decision = Decision::Allow {
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset: Duration::from_nanos(ahead),
            };
            (decision, Some(new_tat))
        }
    }
}

fn nanos_since(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// A single lock-free GCRA bucket (e.g. a route-wide limit).
#[derive(Debug)]
pub struct GcraCell {
    origin: Instant,
    /// TAT in nanoseconds since `origin`; 0 (or anything `<= now`) is a full bucket.
    tat: AtomicU64,
}

impl GcraCell {
    /// A full bucket. `now` becomes the origin of its internal clock.
    pub fn new(now: Instant) -> Self {
        GcraCell {
            origin: now,
            tat: AtomicU64::new(0),
        }
    }

    /// Charges one request against the bucket if it fits.
    ///
    /// Settings are passed per call so a config reload takes effect without
    /// losing the bucket's state.
    pub fn check(&self, s: &GcraSettings, now: Instant) -> Decision {
        let params = Params::new(s);
        let now = nanos_since(self.origin, now);
        // Relaxed is enough: the TAT is the only shared datum and CAS on a
        // single location is totally ordered regardless of memory ordering.
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let (decision, new_tat) = params.step(tat, now);
            let Some(new_tat) = new_tat else {
                return decision;
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return decision,
                Err(actual) => tat = actual,
            }
        }
    }
}

/// Hasher for keys that are already SipHash outputs: hashing them again would
/// be wasted work on every request.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by our maps; this keeps the trait total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<PreHashed>>;

const SHARDS: usize = 16;

/// Many GCRA buckets keyed by a string (client IP, header value, ...), with a
/// hard cap on the number of keys tracked.
///
/// Keys are stored as their 64-bit hash under a per-process random SipHash key,
/// so a lookup never allocates and clients cannot craft collisions; an
/// accidental collision (odds ~n²/2⁶⁵) would only make two clients share a bucket.
///
/// Memory is bounded by `max_keys`. When a shard is at its share, buckets that
/// are full again are dropped first (that loses nothing); if none are, some
/// arbitrary entries are evicted. Evicting a key resets it to a full bucket, so
/// under a flood of distinct keys the limiter errs towards allowing rather than
/// towards blocking legitimate clients.
#[derive(Debug)]
pub struct KeyedLimiter {
    settings: GcraSettings,
    params: Params,
    origin: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
}

impl KeyedLimiter {
    /// An empty limiter tracking at most `max_keys` keys (at least 1).
    pub fn new(settings: GcraSettings, max_keys: usize, now: Instant) -> Self {
        let max_keys = max_keys.max(1);
        // Fewer shards than keys would make a shard's share round down to 0.
        let shard_count = SHARDS.min(max_keys);
        let shards = (0..shard_count)
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        KeyedLimiter {
            settings,
            params: Params::new(&settings),
            origin: now,
            hasher: RandomState::new(),
            shards,
            // Rounding down keeps the total at or under `max_keys`.
            shard_cap: max_keys / shard_count,
        }
    }

    /// Charges one request against `key`'s bucket if it fits.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let hash = self.hasher.hash_one(key);
        let now = nanos_since(self.origin, now);
        let mut shard = self.shard(hash).lock();
        if let Some(tat) = shard.get_mut(&hash) {
            let (decision, new_tat) = self.params.step(*tat, now);
            if let Some(new_tat) = new_tat {
                *tat = new_tat;
            }
            return decision;
        }
        if shard.len() >= self.shard_cap {
            make_room(&mut shard, now, self.shard_cap);
        }
        let (decision, new_tat) = self.params.step(0, now);
        if let Some(new_tat) = new_tat {
            shard.insert(hash, new_tat);
        }
        decision
    }

    /// Drops buckets that are full again (their TAT is in the past): forgetting them loses nothing.
    pub fn retain_recent(&self, now: Instant) {
        let now = nanos_since(self.origin, now);
        for shard in self.shards.iter() {
            shard.lock().retain(|_, tat| *tat > now);
        }
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().is_empty())
    }

    /// The settings this limiter was built with.
    pub fn settings(&self) -> &GcraSettings {
        &self.settings
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // High bits pick the shard: the map itself uses the low bits for its
        // buckets and the top 7 for its tags, so neither gets skewed.
        let idx = ((hash >> 32) as usize) % self.shards.len();
        &self.shards[idx]
    }
}

/// Frees at least one slot in a full shard.
fn make_room(shard: &mut Shard, now: u64, cap: usize) {
    shard.retain(|_, tat| *tat > now);
    // Freeing a slack of cap/8 slots at once amortises these O(n) passes over
    // many inserts when every tracked key is active (a flood of distinct keys).
    let target = cap - (cap / 8).max(1);
    let mut excess = shard.len().saturating_sub(target);
    if excess > 0 {
        shard.retain(|_, _| {
            if excess == 0 {
                true
            } else {
                excess -= 1;
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);

    fn settings(rps: f64, burst: u32) -> GcraSettings {
        GcraSettings { rps, burst }
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn types_are_send_sync() {
        assert_send_sync::<GcraCell>();
        assert_send_sync::<KeyedLimiter>();
    }

    #[tokio::test(start_paused = true)]
    async fn burst_allowed_at_once_then_denied() {
        let s = settings(10.0, 5);
        let cell = GcraCell::new(Instant::now());
        let now = Instant::now();
        for _ in 0..5 {
            assert!(cell.check(&s, now).is_allowed());
        }
        assert!(!cell.check(&s, now).is_allowed());
        assert!(!cell.check(&s, now).is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_one_interval_per_missing_token() {
        let s = settings(10.0, 5);
        let cell = GcraCell::new(Instant::now());
        for _ in 0..5 {
            cell.check(&s, Instant::now());
        }
        assert_eq!(
            cell.check(&s, Instant::now()),
            Decision::Deny {
                retry_after: 100 * MS,
                reset: 500 * MS
            }
        );
        advance(40 * MS).await;
        assert_eq!(
            cell.check(&s, Instant::now()),
            Decision::Deny {
                retry_after: 60 * MS,
                reset: 460 * MS
            }
        );
        advance(60 * MS).await;
        assert_eq!(
            cell.check(&s, Instant::now()),
            Decision::Allow {
                remaining: 0,
                reset: 500 * MS
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refills_at_rps() {
        let s = settings(10.0, 1);
        let cell = GcraCell::new(Instant::now());
        let mut allowed = 0;
        for _ in 0..=100 {
            if cell.check(&s, Instant::now()).is_allowed() {
                allowed += 1;
            }
            advance(10 * MS).await;
        }
        // t = 0, 100ms, ..., 1000ms.
        assert_eq!(allowed, 11);

        // Idle long enough and the whole burst is back, but no more than that.
        let s = settings(10.0, 3);
        advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(
            (0..10).filter(|_| cell.check(&s, now).is_allowed()).count(),
            3
        );
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down() {
        let s = settings(10.0, 5);
        let cell = GcraCell::new(Instant::now());
        for i in 1..=5u32 {
            assert_eq!(
                cell.check(&s, Instant::now()),
                Decision::Allow {
                    remaining: 5 - i,
                    reset: 100 * MS * i
                }
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn settings_change_applies_to_existing_cell() {
        let cell = GcraCell::new(Instant::now());
        for _ in 0..2 {
            assert!(cell.check(&settings(1.0, 2), Instant::now()).is_allowed());
        }
        assert!(!cell.check(&settings(1.0, 2), Instant::now()).is_allowed());
        assert!(cell.check(&settings(1.0, 3), Instant::now()).is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn degenerate_settings_do_not_panic() {
        let now = Instant::now();
        let cell = GcraCell::new(now);
        for s in [
            settings(0.0, 0),
            settings(-5.0, 1),
            settings(f64::NAN, 3),
            settings(f64::INFINITY, 1),
            settings(1e-300, u32::MAX),
            settings(1e300, u32::MAX),
        ] {
            for _ in 0..3 {
                cell.check(&s, now);
                cell.check(&s, now + Duration::from_secs(1 << 40));
            }
        }
        // Zero rate: the burst, then nothing.
        let cell = GcraCell::new(now);
        assert!(cell.check(&settings(0.0, 0), now).is_allowed());
        assert!(!cell
            .check(&settings(0.0, 0), now + Duration::from_secs(3600))
            .is_allowed());
        // A `now` before the origin counts as the origin.
        let cell = GcraCell::new(now + Duration::from_secs(5));
        assert!(cell.check(&settings(1.0, 1), now).is_allowed());
        assert!(!cell.check(&settings(1.0, 1), now).is_allowed());
    }

    #[test]
    fn concurrent_checks_allow_exactly_burst_when_time_is_frozen() {
        let s = settings(1.0, 50);
        let now = Instant::now();
        let cell = Arc::new(GcraCell::new(now));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| cell.check(&s, now).is_allowed())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_buckets_are_independent() {
        let limiter = KeyedLimiter::new(settings(10.0, 2), 1000, Instant::now());
        let now = Instant::now();
        assert!(limiter.check("10.0.0.1", now).is_allowed());
        assert!(limiter.check("10.0.0.1", now).is_allowed());
        assert_eq!(
            limiter.check("10.0.0.1", now),
            Decision::Deny {
                retry_after: 100 * MS,
                reset: 200 * MS
            }
        );
        assert_eq!(
            limiter.check("10.0.0.2", now),
            Decision::Allow {
                remaining: 1,
                reset: 100 * MS
            }
        );
        assert_eq!(limiter.len(), 2);
        assert_eq!(limiter.settings(), &settings(10.0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn retain_recent_drops_only_full_buckets() {
        let limiter = KeyedLimiter::new(settings(1.0, 2), 1000, Instant::now());
        assert!(limiter.is_empty());
        limiter.check("idle", Instant::now());
        advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert!(limiter.check("busy", now).is_allowed());
        assert!(limiter.check("busy", now).is_allowed());
        assert_eq!(limiter.len(), 2);

        limiter.retain_recent(now);
        assert_eq!(limiter.len(), 1);
        // The busy key kept its state.
        assert!(!limiter.check("busy", now).is_allowed());
        advance(Duration::from_secs(2)).await;
        limiter.retain_recent(Instant::now());
        assert!(limiter.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn key_cap_holds_under_many_distinct_keys() {
        for max_keys in [0, 1, 7, 16, 100, 1000] {
            let limiter = KeyedLimiter::new(settings(1.0, 5), max_keys, Instant::now());
            let now = Instant::now();
            for i in 0..max_keys.max(1) * 10 {
                // Every new key is allowed: eviction errs towards allowing.
                assert!(limiter.check(&format!("client-{i}"), now).is_allowed());
                assert!(limiter.len() <= max_keys.max(1), "max_keys {max_keys}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_shard_prefers_dropping_full_buckets() {
        // 16 shards of 100 keys each.
        let limiter = KeyedLimiter::new(settings(1.0, 1), 1600, Instant::now());
        let start = Instant::now();
        for i in 0..5000 {
            limiter.check(&format!("old-{i}"), start);
        }
        advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        // Fewer active keys than one shard holds: "hot" must survive the churn,
        // because the old, full buckets are dropped before anything active.
        limiter.check("hot", now);
        for i in 0..99 {
            limiter.check(&format!("new-{i}"), now);
        }
        assert!(limiter.len() <= 1600);
        assert!(!limiter.check("hot", now).is_allowed());
    }

    #[test]
    fn keyed_concurrency_smoke() {
        let now = Instant::now();
        let limiter = Arc::new(KeyedLimiter::new(settings(1.0, 10), 64, now));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| limiter.check("shared", now).is_allowed())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 10);
    }
}
