//! Passive outlier detection over one upstream's endpoint pool (as in Envoy).
//!
//! Real responses are watched, not health-check probes: an endpoint that fails
//! `consecutive_failures` times in a row, or whose failure rate over `interval`
//! crosses `failure_rate_threshold`, is ejected from load balancing for a
//! while, and comes back on its own when that time passes (no timer task:
//! ejection is a deadline compared against `now`).
//!
//! Ejections back off: each lasts `base_ejection_time` times the endpoint's
//! ejection count, capped at `max_ejection_time`. Like Envoy, the count is
//! forgiven by one for every `interval` the endpoint spends back in service, so
//! a flapping endpoint stays out longer and longer while one that failed once,
//! long ago, is not punished forever.
//!
//! `max_ejection_percent` stops a systemic problem (a bad deploy, an
//! overloaded database behind every endpoint) from ejecting the whole pool and
//! piling all traffic on the few survivors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Slots of each endpoint's failure-rate window.
const SLOTS: usize = 10;
/// Longest ejection honoured, whatever the settings say (a century: keeps the
/// deadline representable in nanoseconds and `Instant` arithmetic panic-free).
const LONGEST_EJECTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Outlier-detection tuning for one upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierSettings {
    /// Eject after this many failures in a row; `0` disables this check.
    pub consecutive_failures: u32,
    /// Eject when, over `interval`, at least `min_requests` were seen and this
    /// share of them (`0.0..=1.0`) failed; `0` disables this check.
    pub failure_rate_threshold: f64,
    /// Requests needed in `interval` before the failure rate is trusted.
    pub min_requests: u32,
    /// Window of the failure rate, and the period after which one ejection is
    /// forgiven while the endpoint stays in service.
    pub interval: Duration,
    /// Duration of a first ejection; the n-th lasts n times this.
    pub base_ejection_time: Duration,
    /// Upper bound on any ejection.
    pub max_ejection_time: Duration,
    /// Never eject more than this percentage of the pool at once (capped at
    /// 100; `0` disables ejection).
    ///
    /// As in Envoy, a pool of two or more may always eject at least one
    /// endpoint, even when the percentage rounds down to zero. A pool of one is
    /// only ejected at 100%: with nowhere else to send traffic, ejecting it just
    /// turns every request into a local error (the circuit breaker is the tool
    /// for that case).
    pub max_ejection_percent: u32,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_failures: 5,
            failure_rate_threshold: 0.0,
            min_requests: 20,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// An endpoint was just ejected (for logs, metrics and the status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EjectionEvent {
    /// Index of the endpoint in the pool.
    pub endpoint: usize,
    /// When it returns to service.
    pub until: Instant,
    /// Ejection count that set the duration (including this one, after forgiveness).
    pub times_ejected: u32,
    /// Human-readable cause, e.g. "5 consecutive failures".
    pub reason: String,
}

/// Point-in-time view of one endpoint's outlier state.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EndpointOutlierSnapshot {
    /// Set while the endpoint is ejected.
    pub ejected_until: Option<Instant>,
    /// Ejection count used for the next ejection's duration (see [`OutlierDetector`]).
    pub times_ejected: u32,
    /// Current streak of failures.
    pub consecutive_failures: u32,
    /// Failures / requests over the last `interval` (0 without requests).
    pub failure_rate: f64,
    /// Requests seen over the last `interval`.
    pub requests: u32,
}

/// Per-endpoint outlier state for a pool of endpoints addressed by index.
///
/// `is_ejected` is a single atomic load. `record` takes only that endpoint's
/// lock, plus a pool-wide lock in the rare moment an ejection is decided, so
/// that concurrent ejections cannot overshoot `max_ejection_percent`.
///
/// Outcomes reported while an endpoint is ejected are ignored: they belong to
/// requests sent before the ejection and say nothing new. An ejection also
/// clears the streak and the failure-rate window, so a returning endpoint is
/// judged on fresh traffic only.
#[derive(Debug)]
pub struct OutlierDetector {
    settings: OutlierSettings,
    origin: Instant,
    slot_ns: u64,
    interval_ns: u64,
    endpoints: Box<[Endpoint]>,
    ejection: Mutex<()>,
}

#[derive(Debug)]
struct Endpoint {
    /// Ejection deadline in nanoseconds since `origin`; not ejected once `<= now`.
    ejected_until: AtomicU64,
    state: Mutex<EndpointState>,
}

#[derive(Debug, Default, Clone)]
struct EndpointState {
    consecutive_failures: u32,
    times_ejected: u32,
    /// Start of the current forgiveness period (nanoseconds since `origin`).
    forgive_from: u64,
    window: Window,
}

#[derive(Debug, Default, Clone)]
struct Window {
    generation: u64,
    requests: [u32; SLOTS],
    failures: [u32; SLOTS],
}

impl Window {
    fn rotate(&mut self, generation: u64) {
        // Older times (a lagging caller) are counted in the current slot.
        if generation <= self.generation {
            return;
        }
        let stale = (generation - self.generation).min(SLOTS as u64);
        for step in 1..=stale {
            let idx = ((self.generation + step) % SLOTS as u64) as usize;
            self.requests[idx] = 0;
            self.failures[idx] = 0;
        }
        self.generation = generation;
    }

    fn record(&mut self, failed: bool) {
        let idx = (self.generation % SLOTS as u64) as usize;
        self.requests[idx] = self.requests[idx].saturating_add(1);
        if failed {
            self.failures[idx] = self.failures[idx].saturating_add(1);
        }
    }

    /// (requests, failures) over the window.
    fn totals(&self) -> (u32, u32) {
        let sum = |xs: &[u32; SLOTS]| xs.iter().fold(0u32, |a, &x| a.saturating_add(x));
        (sum(&self.requests), sum(&self.failures))
    }

    fn clear(&mut self) {
        self.requests = [0; SLOTS];
        self.failures = [0; SLOTS];
    }
}

/// Why an ejection was triggered; formatted only when an ejection happens.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Consecutive(u32),
    FailureRate { failures: u32, requests: u32 },
}

impl OutlierDetector {
    /// A detector for a pool of `endpoints` endpoints, all in service.
    pub fn new(settings: OutlierSettings, endpoints: usize) -> Self {
        let interval_ns = u64::try_from(settings.interval.as_nanos()).unwrap_or(u64::MAX);
        OutlierDetector {
            settings,
            origin: Instant::now(),
            slot_ns: (interval_ns / SLOTS as u64).max(1),
            interval_ns,
            endpoints: (0..endpoints)
                .map(|_| Endpoint {
                    ejected_until: AtomicU64::new(0),
                    state: Mutex::new(EndpointState::default()),
                })
                .collect(),
            ejection: Mutex::new(()),
        }
    }

    /// A detector for `from.len()` endpoints where endpoint `i` goes on as `old`'s endpoint
    /// `from[i]` (its ejection, streak and window), or starts fresh where that is `None`: an
    /// upstream whose resolved addresses changed keeps the state of those that stayed.
    pub fn carried(
        settings: OutlierSettings,
        old: &OutlierDetector,
        from: &[Option<usize>],
    ) -> Self {
        let mut d = Self::new(settings, from.len());
        d.origin = old.origin;
        for (ep, src) in d.endpoints.iter_mut().zip(from) {
            if let Some(o) = src.and_then(|j| old.endpoints.get(j)) {
                ep.ejected_until = AtomicU64::new(o.ejected_until.load(Ordering::Acquire));
                *ep.state.get_mut() = o.state.lock().clone();
            }
        }
        d
    }

    /// Records one request outcome for `endpoint`; returns the ejection it
    /// caused, if any. Out-of-range indices are ignored.
    pub fn record(&self, endpoint: usize, failed: bool, now: Instant) -> Option<EjectionEvent> {
        let ep = self.endpoints.get(endpoint)?;
        let now_ns = self.nanos(now);
        if ep.ejected_until.load(Ordering::Acquire) > now_ns {
            return None;
        }
        let mut st = ep.state.lock();
        // Re-checked under the lock: another task may have just ejected it.
        if ep.ejected_until.load(Ordering::Acquire) > now_ns {
            return None;
        }
        self.forgive(&mut st, now_ns);
        st.window.rotate(now_ns / self.slot_ns);
        st.window.record(failed);
        st.consecutive_failures = if failed {
            st.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        let trigger = self.trigger(&st)?;
        self.eject(endpoint, ep, &mut st, trigger, now, now_ns)
    }

    /// Whether `endpoint` is out of load balancing at `now` (one atomic load).
    /// Out-of-range indices are never ejected.
    pub fn is_ejected(&self, endpoint: usize, now: Instant) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|ep| ep.ejected_until.load(Ordering::Acquire) > self.nanos(now))
    }

    /// When `endpoint` returns to service, if it is ejected at `now`.
    pub fn ejected_until(&self, endpoint: usize, now: Instant) -> Option<Instant> {
        let until = self
            .endpoints
            .get(endpoint)?
            .ejected_until
            .load(Ordering::Acquire);
        if until > self.nanos(now) {
            self.origin.checked_add(Duration::from_nanos(until))
        } else {
            None
        }
    }

    /// When `endpoint`'s latest ejection ended, if it was ever ejected and is back at `now`
    /// (for its slow start).
    pub fn returned_at(&self, endpoint: usize, now: Instant) -> Option<Instant> {
        let until = self
            .endpoints
            .get(endpoint)?
            .ejected_until
            .load(Ordering::Acquire);
        if until == 0 || until > self.nanos(now) {
            return None;
        }
        self.origin.checked_add(Duration::from_nanos(until))
    }

    /// State of `endpoint` for the status page; all zeros for an unknown index.
    pub fn snapshot(&self, endpoint: usize, now: Instant) -> EndpointOutlierSnapshot {
        let Some(ep) = self.endpoints.get(endpoint) else {
            return EndpointOutlierSnapshot::default();
        };
        let now_ns = self.nanos(now);
        let ejected_until = self.ejected_until(endpoint, now);
        let mut st = ep.state.lock();
        if ejected_until.is_none() {
            self.forgive(&mut st, now_ns);
        }
        st.window.rotate(now_ns / self.slot_ns);
        let (requests, failures) = st.window.totals();
        EndpointOutlierSnapshot {
            ejected_until,
            times_ejected: st.times_ejected,
            consecutive_failures: st.consecutive_failures,
            failure_rate: rate(failures, requests),
            requests,
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Forgives one ejection per full `interval` spent in service.
    fn forgive(&self, st: &mut EndpointState, now_ns: u64) {
        if st.times_ejected == 0 || self.interval_ns == 0 || now_ns <= st.forgive_from {
            return;
        }
        let periods = (now_ns - st.forgive_from) / self.interval_ns;
        if periods > 0 {
            st.times_ejected = st
                .times_ejected
                .saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
            st.forgive_from = st
                .forgive_from
                .saturating_add(periods.saturating_mul(self.interval_ns));
        }
    }

    fn trigger(&self, st: &EndpointState) -> Option<Trigger> {
        let s = &self.settings;
        if s.consecutive_failures > 0 && st.consecutive_failures >= s.consecutive_failures {
            return Some(Trigger::Consecutive(st.consecutive_failures));
        }
        // `> 0.0` is also false for NaN, which therefore means "off".
        if s.failure_rate_threshold > 0.0 {
            let (requests, failures) = st.window.totals();
            if requests > 0
                && requests >= s.min_requests
                && rate(failures, requests) >= s.failure_rate_threshold
            {
                return Some(Trigger::FailureRate { failures, requests });
            }
        }
        None
    }

    /// How many endpoints may be ejected at once; see `max_ejection_percent`.
    fn max_ejected(&self) -> usize {
        let n = self.endpoints.len();
        let percent = self.settings.max_ejection_percent.min(100) as usize;
        match (n, percent) {
            (0, _) | (_, 0) => 0,
            (1, p) => usize::from(p >= 100),
            (n, p) => (n.saturating_mul(p) / 100).max(1),
        }
    }

    fn eject(
        &self,
        endpoint: usize,
        ep: &Endpoint,
        st: &mut EndpointState,
        trigger: Trigger,
        now: Instant,
        now_ns: u64,
    ) -> Option<EjectionEvent> {
        let _guard = self.ejection.lock();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.ejected_until.load(Ordering::Acquire) > now_ns)
            .count();
        if ejected >= self.max_ejected() {
            // The streak and window are kept, so the endpoint is ejected as
            // soon as room frees up if it is still failing.
            return None;
        }
        let times_ejected = st.times_ejected.saturating_add(1);
        let duration = self
            .settings
            .base_ejection_time
            .checked_mul(times_ejected)
            .unwrap_or(Duration::MAX)
            .min(self.settings.max_ejection_time)
            .min(LONGEST_EJECTION);
        let until = now.checked_add(duration)?;
        let until_ns = self.nanos(until);
        ep.ejected_until.store(until_ns, Ordering::Release);
        st.times_ejected = times_ejected;
        st.consecutive_failures = 0;
        st.window.clear();
        st.forgive_from = until_ns;
        Some(EjectionEvent {
            endpoint,
            until,
            times_ejected,
            reason: self.describe(trigger),
        })
    }

    fn describe(&self, trigger: Trigger) -> String {
        match trigger {
            Trigger::Consecutive(n) => format!("{n} consecutive failures"),
            Trigger::FailureRate { failures, requests } => format!(
                "failure rate {:.0}% ({failures}/{requests}) over {:?}",
                rate(failures, requests) * 100.0,
                self.settings.interval
            ),
        }
    }
}

fn rate(failures: u32, requests: u32) -> f64 {
    if requests == 0 {
        0.0
    } else {
        f64::from(failures) / f64::from(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::advance;

    const SEC: Duration = Duration::from_secs(1);

    fn fail_n(d: &OutlierDetector, endpoint: usize, n: u32) -> Option<EjectionEvent> {
        let mut last = None;
        for _ in 0..n {
            last = d.record(endpoint, true, Instant::now());
        }
        last
    }

    #[test]
    fn is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OutlierDetector>();
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures() {
        let d = OutlierDetector::new(OutlierSettings::default(), 4);
        assert!(fail_n(&d, 1, 4).is_none());
        assert!(!d.is_ejected(1, Instant::now()));
        let now = Instant::now();
        let event = d.record(1, true, now);
        assert_eq!(
            event,
            Some(EjectionEvent {
                endpoint: 1,
                until: now + 30 * SEC,
                times_ejected: 1,
                reason: "5 consecutive failures".into(),
            })
        );
        assert!(d.is_ejected(1, now));
        assert_eq!(d.ejected_until(1, now), Some(now + 30 * SEC));
        assert!(!d.is_ejected(0, now));
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_streak() {
        let d = OutlierDetector::new(OutlierSettings::default(), 2);
        assert!(fail_n(&d, 0, 4).is_none());
        assert!(d.record(0, false, Instant::now()).is_none());
        assert_eq!(d.snapshot(0, Instant::now()).consecutive_failures, 0);
        assert!(fail_n(&d, 0, 4).is_none());
        assert!(!d.is_ejected(0, Instant::now()));
        assert_eq!(d.snapshot(0, Instant::now()).consecutive_failures, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_and_is_capped() {
        let settings = OutlierSettings {
            base_ejection_time: 10 * SEC,
            max_ejection_time: 25 * SEC,
            ..OutlierSettings::default()
        };
        let d = OutlierDetector::new(settings, 2);
        for (times, expected) in [(1, 10), (2, 20), (3, 25), (4, 25)] {
            let now = Instant::now();
            let event = fail_n(&d, 0, 5).expect("ejected");
            assert_eq!(event.times_ejected, times);
            assert_eq!(event.until, now + expected * SEC);
            // Straight back to failing the moment it returns.
            advance(event.until - now).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn comes_back_after_until() {
        let d = OutlierDetector::new(OutlierSettings::default(), 2);
        let until = fail_n(&d, 0, 5).expect("ejected").until;
        advance(30 * SEC - Duration::from_nanos(1)).await;
        assert!(d.is_ejected(0, Instant::now()));
        advance(Duration::from_nanos(1)).await;
        assert_eq!(Instant::now(), until);
        assert!(!d.is_ejected(0, Instant::now()));
        assert_eq!(d.ejected_until(0, Instant::now()), None);
        // Back with a clean slate: one failure is not enough to re-eject.
        assert!(d.record(0, true, Instant::now()).is_none());
        assert!(!d.is_ejected(0, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_while_ejected_are_ignored() {
        let d = OutlierDetector::new(OutlierSettings::default(), 2);
        fail_n(&d, 0, 5).expect("ejected");
        assert!(fail_n(&d, 0, 20).is_none());
        let snap = d.snapshot(0, Instant::now());
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.requests, 0);
        assert_eq!(snap.times_ejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_caps_the_pool() {
        let d = OutlierDetector::new(OutlierSettings::default(), 4);
        assert!(fail_n(&d, 0, 5).is_some());
        advance(SEC).await;
        assert!(fail_n(&d, 1, 5).is_some());
        assert!(fail_n(&d, 2, 10).is_none());
        assert!(!d.is_ejected(2, Instant::now()));
        assert_eq!(d.snapshot(2, Instant::now()).consecutive_failures, 10);
        // Endpoint 0 returns; endpoint 2 still failing takes its place.
        advance(29 * SEC).await;
        assert!(!d.is_ejected(0, Instant::now()));
        assert!(d.is_ejected(1, Instant::now()));
        let event = d.record(2, true, Instant::now()).expect("room freed");
        assert_eq!(event.reason, "11 consecutive failures");
        assert!(d.is_ejected(2, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn small_pools() {
        // Two endpoints at 10%: one may still be ejected.
        let settings = OutlierSettings {
            max_ejection_percent: 10,
            ..OutlierSettings::default()
        };
        let d = OutlierDetector::new(settings, 2);
        assert!(fail_n(&d, 0, 5).is_some());
        assert!(fail_n(&d, 1, 5).is_none());

        // A single endpoint is only ejected at 100%.
        let d = OutlierDetector::new(OutlierSettings::default(), 1);
        assert!(fail_n(&d, 0, 50).is_none());
        let settings = OutlierSettings {
            max_ejection_percent: 100,
            ..OutlierSettings::default()
        };
        let d = OutlierDetector::new(settings, 1);
        assert!(fail_n(&d, 0, 5).is_some());

        // 0% disables ejection altogether.
        let settings = OutlierSettings {
            max_ejection_percent: 0,
            ..OutlierSettings::default()
        };
        let d = OutlierDetector::new(settings, 10);
        assert!(fail_n(&d, 0, 50).is_none());
    }

    /// Ejection by failure rate alone: 50% of at least 20 requests.
    fn by_failure_rate() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 0,
            failure_rate_threshold: 0.5,
            min_requests: 20,
            ..OutlierSettings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_ejection_needs_min_requests() {
        let d = OutlierDetector::new(by_failure_rate(), 3);
        for i in 0..19 {
            assert!(d.record(0, i % 2 == 1, Instant::now()).is_none());
            advance(SEC / 4).await;
        }
        let snap = d.snapshot(0, Instant::now());
        assert_eq!(snap.requests, 19);
        assert_eq!(snap.consecutive_failures, 0);
        let event = d.record(0, true, Instant::now()).expect("ejected");
        assert_eq!(event.reason, "failure rate 50% (10/20) over 10s");
        assert!(d.is_ejected(0, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_only_counts_the_interval() {
        let d = OutlierDetector::new(by_failure_rate(), 3);
        for _ in 0..19 {
            assert!(d.record(0, true, Instant::now()).is_none());
        }
        advance(10 * SEC).await;
        assert_eq!(d.snapshot(0, Instant::now()).requests, 0);
        assert!(d.record(0, true, Instant::now()).is_none());

        // Below the threshold nothing happens, however many requests
        // (failures come last in each ten, so the running rate never tops 40%).
        for i in 0..200 {
            assert!(d.record(1, i % 10 >= 6, Instant::now()).is_none());
        }
        let snap = d.snapshot(1, Instant::now());
        assert_eq!(snap.requests, 200);
        assert!((snap.failure_rate - 0.4).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_count_is_forgiven_while_healthy() {
        let d = OutlierDetector::new(OutlierSettings::default(), 2);
        let first = fail_n(&d, 0, 5).expect("ejected");
        advance(first.until - Instant::now()).await;
        let second = fail_n(&d, 0, 5).expect("ejected");
        assert_eq!(second.times_ejected, 2);
        assert_eq!(second.until - Instant::now(), 60 * SEC);
        advance(second.until - Instant::now()).await;
        // One interval in service forgives one ejection.
        advance(10 * SEC).await;
        assert_eq!(d.snapshot(0, Instant::now()).times_ejected, 1);
        let third = fail_n(&d, 0, 5).expect("ejected");
        assert_eq!(third.times_ejected, 2);
        advance(third.until - Instant::now()).await;
        advance(60 * SEC).await;
        let fourth = fail_n(&d, 0, 5).expect("ejected");
        assert_eq!(fourth.times_ejected, 1);
        assert_eq!(fourth.until - Instant::now(), 30 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_check_can_be_disabled() {
        let settings = OutlierSettings {
            consecutive_failures: 0,
            ..OutlierSettings::default()
        };
        let d = OutlierDetector::new(settings, 2);
        assert!(fail_n(&d, 0, 1000).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_range_index_is_safe() {
        let d = OutlierDetector::new(OutlierSettings::default(), 2);
        let now = Instant::now();
        assert!(fail_n(&d, 2, 10).is_none());
        assert!(fail_n(&d, usize::MAX, 10).is_none());
        assert!(!d.is_ejected(2, now));
        assert_eq!(d.ejected_until(2, now), None);
        assert_eq!(d.snapshot(2, now), EndpointOutlierSnapshot::default());

        let empty = OutlierDetector::new(OutlierSettings::default(), 0);
        assert!(fail_n(&empty, 0, 10).is_none());
        assert!(!empty.is_ejected(0, now));
    }

    #[tokio::test(start_paused = true)]
    async fn degenerate_settings_do_not_panic() {
        let settings = OutlierSettings {
            consecutive_failures: 1,
            failure_rate_threshold: f64::NAN,
            min_requests: 0,
            interval: Duration::ZERO,
            base_ejection_time: Duration::MAX,
            max_ejection_time: Duration::MAX,
            max_ejection_percent: u32::MAX,
        };
        let d = OutlierDetector::new(settings, 3);
        let event = fail_n(&d, 0, 1).expect("ejected");
        assert_eq!(event.until - Instant::now(), LONGEST_EJECTION);
        d.snapshot(0, Instant::now());
        // A time before the detector existed.
        let past = Instant::now() - Duration::from_secs(5);
        d.record(1, false, past);
        d.snapshot(1, past);
    }

    #[test]
    fn concurrent_ejections_respect_the_cap() {
        let settings = OutlierSettings {
            consecutive_failures: 1,
            ..OutlierSettings::default()
        };
        let d = Arc::new(OutlierDetector::new(settings, 8));
        let now = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| d.record(i, true, now).is_some())
                        .count()
                })
            })
            .collect();
        let events: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(events, 4);
        assert_eq!((0..8).filter(|&i| d.is_ejected(i, now)).count(), 4);
    }
}
