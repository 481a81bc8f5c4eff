//! Sliding windows of recent call outcomes that the circuit breaker computes its rates over.
//!
//! levee rotates four windows; this one is not shared, for these reasons. The outlier
//! detector's (`layers/outlier/ejection.rs`) is the same idea as the time ring here, but counts
//! two numbers per slot, not three, for every endpoint, on slots aligned to the detector's
//! creation so that one division serves ejection deadlines too; on this window its slots would
//! start at each endpoint's first call and its memory grow by half. The retry budget
//! (`layers/retry/budget.rs`) is lock-free atomics shared by the workers, and the dashboard
//! history (`history.rs`) per-worker atomics tagged with the wall-clock second: neither can be
//! a `&mut` ring behind a lock without a lock on the request path.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Ten buckets keeps the expiry granularity at a tenth of the window, which is what operators
/// expect from "the last 10s" without paying for per-call timestamps.
const BUCKETS: usize = 10;
const BUCKETS_U64: u64 = BUCKETS as u64;

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// How a breaker's window of recent calls is bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowSettings {
    /// The last `size` calls, however long ago they happened. A size of 0 is treated as 1.
    Count {
        /// How many of the most recent calls are kept.
        size: usize,
    },
    /// The calls of the last `size` of time, kept in ten buckets of `size / 10` each; a call
    /// therefore stops counting somewhere between `size - size / 10` and `size` after it ended.
    Time {
        /// How far back the window reaches.
        size: Duration,
    },
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self::Count { size: 100 }
    }
}

/// Sums over the calls currently inside a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Calls recorded.
    pub calls: u32,
    /// Of those, the ones that failed.
    pub failures: u32,
    /// Of those, the ones that took at least the slow-call duration (failed or not).
    pub slow: u32,
}

impl WindowTotals {
    fn add_bits(&mut self, bits: u8) {
        // Saturating so that a pathological window can never wrap into a tiny rate.
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(u32::from(bits & FAILED != 0));
        self.slow = self.slow.saturating_add(u32::from(bits & SLOW != 0));
    }

    fn remove_bits(&mut self, bits: u8) {
        self.calls = self.calls.saturating_sub(1);
        self.failures = self.failures.saturating_sub(u32::from(bits & FAILED != 0));
        self.slow = self.slow.saturating_sub(u32::from(bits & SLOW != 0));
    }

    fn remove(&mut self, other: WindowTotals) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
    }
}

fn bits(failed: bool, slow: bool) -> u8 {
    (if failed { FAILED } else { 0 }) | (if slow { SLOW } else { 0 })
}

/// A sliding window of call results, either the last N calls or the last T of time.
///
/// Both kinds keep running totals so that reading them is O(1) (O(buckets) at worst for the
/// time window after a long idle period), because the breaker reads them on every call.
pub struct Window {
    ring: Ring,
    totals: WindowTotals,
}

enum Ring {
    Count(CountRing),
    Time(TimeRing),
}

struct CountRing {
    size: usize,
    /// Grows lazily up to `size`, so a generously configured window costs nothing until the
    /// traffic actually fills it.
    outcomes: Vec<u8>,
    /// Once full, the slot holding the oldest outcome, which the next record overwrites.
    oldest: usize,
}

struct TimeRing {
    size: Duration,
    bucket_nanos: u128,
    /// Bucket indices are counted from the first call so that no absolute clock is needed.
    origin: Option<Instant>,
    /// The newest bucket index seen; buckets older than `head - BUCKETS` have been emptied.
    head: u64,
    buckets: [WindowTotals; BUCKETS],
}

impl Window {
    /// An empty window bounded as `settings` says.
    pub fn new(settings: &WindowSettings) -> Self {
        let ring = match *settings {
            WindowSettings::Count { size } => {
                // The totals are u32, so a larger ring could not be summed exactly anyway.
                let max = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
                Ring::Count(CountRing {
                    size: size.clamp(1, max),
                    outcomes: Vec::new(),
                    oldest: 0,
                })
            }
            WindowSettings::Time { size } => Ring::Time(TimeRing {
                size,
                bucket_nanos: (size.as_nanos() / BUCKETS as u128).max(1),
                origin: None,
                head: 0,
                buckets: [WindowTotals::default(); BUCKETS],
            }),
        };
        Self {
            ring,
            totals: WindowTotals::default(),
        }
    }

    /// Adds one finished call. `now` only matters for the time window.
    pub fn record(&mut self, failed: bool, slow: bool, now: Instant) {
        let bits = bits(failed, slow);
        match &mut self.ring {
            Ring::Count(ring) => {
                if ring.outcomes.len() < ring.size {
                    ring.outcomes.push(bits);
                } else if let Some(slot) = ring.outcomes.get_mut(ring.oldest) {
                    let evicted = std::mem::replace(slot, bits);
                    self.totals.remove_bits(evicted);
                    ring.oldest += 1;
                    if ring.oldest == ring.size {
                        ring.oldest = 0;
                    }
                }
                self.totals.add_bits(bits);
            }
            Ring::Time(ring) => {
                let slot = ring.advance(now, &mut self.totals);
                if let Some(bucket) = ring.buckets.get_mut(slot) {
                    bucket.add_bits(bits);
                    self.totals.add_bits(bits);
                }
            }
        }
    }

    /// The sums over the calls still inside the window at `now`.
    pub fn totals(&mut self, now: Instant) -> WindowTotals {
        if let Ring::Time(ring) = &mut self.ring {
            ring.advance(now, &mut self.totals);
        }
        self.totals
    }

    /// Forgets every call, as if freshly created.
    pub fn reset(&mut self) {
        self.totals = WindowTotals::default();
        match &mut self.ring {
            Ring::Count(ring) => {
                ring.outcomes.clear();
                ring.oldest = 0;
            }
            Ring::Time(ring) => {
                ring.origin = None;
                ring.head = 0;
                ring.buckets = [WindowTotals::default(); BUCKETS];
            }
        }
    }

    /// The window's extent in words, e.g. "the last 100 calls" or "the last 10s".
    pub fn describe(&self) -> String {
        match &self.ring {
            Ring::Count(ring) if ring.size == 1 => "the last call".to_owned(),
            Ring::Count(ring) => format!("the last {} calls", ring.size),
            Ring::Time(ring) => format!("the last {}", format_duration(ring.size)),
        }
    }
}

impl fmt::Debug for Window {
    // Hand-written because the derived form would print every stored outcome.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("extent", &self.describe())
            .field("totals", &self.totals)
            .finish()
    }
}

impl TimeRing {
    /// Empties the buckets that have slid out of the window by `now` and returns the slot of
    /// the current bucket.
    fn advance(&mut self, now: Instant, totals: &mut WindowTotals) -> usize {
        let origin = *self.origin.get_or_insert(now);
        let index = now.saturating_duration_since(origin).as_nanos() / self.bucket_nanos;
        let index = u64::try_from(index).unwrap_or(u64::MAX);
        // A `now` older than the newest bucket (a caller that read the clock before waiting
        // for the lock) is counted in the newest bucket rather than rewriting history.
        if index > self.head {
            let gap = index - self.head;
            if gap >= BUCKETS_U64 {
                self.buckets = [WindowTotals::default(); BUCKETS];
                *totals = WindowTotals::default();
            } else {
                for step in 1..=gap {
                    let slot = slot_of(self.head + step);
                    if let Some(bucket) = self.buckets.get_mut(slot) {
                        totals.remove(std::mem::take(bucket));
                    }
                }
            }
            self.head = index;
        }
        slot_of(self.head)
    }
}

fn slot_of(index: u64) -> usize {
    // The remainder is below BUCKETS, so it always fits.
    usize::try_from(index % BUCKETS_U64).unwrap_or(0)
}

/// A short human form of a duration: "10s", "2m", "250ms"; falls back to Debug for odd values.
pub(super) fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d.subsec_nanos() == 0 {
        let secs = d.as_secs();
        return if secs % 3600 == 0 {
            format!("{}h", secs / 3600)
        } else if secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
    }
    if d.subsec_nanos() % 1_000_000 == 0 {
        return format!("{}ms", d.as_millis());
    }
    format!("{d:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn totals(calls: u32, failures: u32, slow: u32) -> WindowTotals {
        WindowTotals {
            calls,
            failures,
            slow,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn count_window_wraps_around_with_exact_totals() {
        let now = Instant::now();
        let size = 7;
        let mut window = Window::new(&WindowSettings::Count { size });
        let mut reference: VecDeque<(bool, bool)> = VecDeque::new();
        // Several full wraps with an irregular pattern, compared against a naive recount.
        for i in 0..100u32 {
            let failed = i % 3 == 0;
            let slow = i % 5 == 1 || i % 7 == 0;
            window.record(failed, slow, now);
            reference.push_back((failed, slow));
            if reference.len() > size {
                reference.pop_front();
            }
            let calls = u32::try_from(reference.len()).unwrap();
            let failures = u32::try_from(reference.iter().filter(|r| r.0).count()).unwrap();
            let slows = u32::try_from(reference.iter().filter(|r| r.1).count()).unwrap();
            assert_eq!(
                window.totals(now),
                totals(calls, failures, slows),
                "after {i}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn count_window_memory_is_bounded() {
        let now = Instant::now();
        let mut window = Window::new(&WindowSettings::Count { size: 10 });
        for _ in 0..1000 {
            window.record(true, false, now);
        }
        let Ring::Count(ring) = &window.ring else {
            panic!("count window expected");
        };
        assert_eq!(ring.outcomes.len(), 10);
        assert_eq!(window.totals(now), totals(10, 10, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn count_window_ignores_time() {
        let mut window = Window::new(&WindowSettings::Count { size: 5 });
        window.record(true, true, Instant::now());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(window.totals(Instant::now()), totals(1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_sized_count_window_keeps_one_call() {
        let now = Instant::now();
        let mut window = Window::new(&WindowSettings::Count { size: 0 });
        window.record(true, false, now);
        window.record(false, false, now);
        assert_eq!(window.totals(now), totals(1, 0, 0));
        assert_eq!(window.describe(), "the last call");
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_expires_old_failures() {
        let mut window = Window::new(&WindowSettings::Time {
            size: Duration::from_secs(10),
        });
        window.record(true, false, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        window.record(false, true, Instant::now());
        assert_eq!(window.totals(Instant::now()), totals(2, 1, 1));

        // Just before the first call's bucket leaves the window it still counts.
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(window.totals(Instant::now()), totals(2, 1, 1));

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(window.totals(Instant::now()), totals(1, 0, 1));

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(window.totals(Instant::now()), totals(0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_keeps_calls_within_a_bucket_together() {
        let mut window = Window::new(&WindowSettings::Time {
            size: Duration::from_secs(10),
        });
        for _ in 0..3 {
            window.record(true, false, Instant::now());
            tokio::time::advance(Duration::from_millis(300)).await;
        }
        assert_eq!(window.totals(Instant::now()), totals(3, 3, 0));
        tokio::time::advance(Duration::from_secs(9)).await;
        // 9.9s after the first call: all three calls share bucket 0, still inside.
        assert_eq!(window.totals(Instant::now()), totals(3, 3, 0));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(window.totals(Instant::now()), totals(0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_long_idle_clears_everything() {
        let mut window = Window::new(&WindowSettings::Time {
            size: Duration::from_secs(1),
        });
        for _ in 0..20 {
            window.record(true, true, Instant::now());
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(window.totals(Instant::now()), totals(0, 0, 0));
        window.record(false, false, Instant::now());
        assert_eq!(window.totals(Instant::now()), totals(1, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_counts_a_late_timestamp() {
        let mut window = Window::new(&WindowSettings::Time {
            size: Duration::from_secs(10),
        });
        let early = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        window.record(false, false, Instant::now());
        window.record(true, false, early);
        assert_eq!(window.totals(Instant::now()), totals(2, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn reset_forgets_everything() {
        let now = Instant::now();
        for settings in [
            WindowSettings::Count { size: 3 },
            WindowSettings::Time {
                size: Duration::from_secs(10),
            },
        ] {
            let mut window = Window::new(&settings);
            for _ in 0..5 {
                window.record(true, true, now);
            }
            window.reset();
            assert_eq!(window.totals(now), totals(0, 0, 0));
            window.record(true, false, now);
            assert_eq!(window.totals(now), totals(1, 1, 0));
        }
    }

    #[test]
    fn describe_names_the_extent() {
        assert_eq!(
            Window::new(&WindowSettings::Count { size: 100 }).describe(),
            "the last 100 calls"
        );
        assert_eq!(
            Window::new(&WindowSettings::Time {
                size: Duration::from_secs(10)
            })
            .describe(),
            "the last 10s"
        );
        assert_eq!(
            Window::new(&WindowSettings::Time {
                size: Duration::from_secs(120)
            })
            .describe(),
            "the last 2m"
        );
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_micros(5)), "5µs");
    }
}
