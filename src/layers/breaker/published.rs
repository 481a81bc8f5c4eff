//! A breaker's state published lock-free, for readers on the request path that only need to
//! know whether the upstream takes traffic now (a split choosing its target) and must not take
//! the breaker's lock to find out. Written under the breaker's lock on every transition, so the
//! last write is always the latest state.

use super::state::BreakerState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const CLOSED: u64 = 0;
const HALF_OPEN: u64 = 1;
/// Open states are stored as `OPEN_BASE` + nanoseconds from `epoch` to the end of the open time.
const OPEN_BASE: u64 = 2;

#[derive(Debug)]
pub struct PublishedState {
    epoch: Instant,
    state: AtomicU64,
    /// The ramp after the latest close: its start in nanoseconds from `epoch` plus one (0: no
    /// ramp), and its length in nanoseconds. Read apart, so a reader may see a ramp's start
    /// with the previous ramp's length for a moment: a share off by a little, once.
    ramp_from: AtomicU64,
    ramp_nanos: AtomicU64,
}

impl PublishedState {
    pub fn new() -> PublishedState {
        PublishedState {
            epoch: Instant::now(),
            state: AtomicU64::new(CLOSED),
            ramp_from: AtomicU64::new(0),
            ramp_nanos: AtomicU64::new(0),
        }
    }

    pub fn publish(&self, state: &BreakerState) {
        let v = match *state {
            BreakerState::Closed => CLOSED,
            BreakerState::HalfOpen { .. } => HALF_OPEN,
            // Open for callers until the probe ends, which publishes again.
            BreakerState::Probing { .. } => u64::MAX,
            BreakerState::Open { until } => {
                let nanos = until.saturating_duration_since(self.epoch).as_nanos();
                OPEN_BASE.saturating_add(u64::try_from(nanos).unwrap_or(u64::MAX - OPEN_BASE))
            }
        };
        self.state.store(v, Ordering::Release);
    }

    /// The ramp after the latest close (`Breaker::ramp_start`), `None` when there is none.
    pub fn publish_ramp(&self, ramp: Option<(Instant, Duration)>) {
        let (from, nanos) = match ramp {
            Some((start, length)) => (
                self.nanos(start).saturating_add(1),
                u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
            ),
            None => (0, 0),
        };
        self.ramp_nanos.store(nanos, Ordering::Relaxed);
        self.ramp_from.store(from, Ordering::Release);
    }

    /// The share of its traffic the upstream takes at `now` while it ramps up after closing
    /// (`ramp::ramp_share`); 1.0 with no ramp or after it.
    #[inline]
    pub fn ramp_share(&self, now: Instant) -> f64 {
        let from = self.ramp_from.load(Ordering::Acquire);
        if from == 0 {
            return 1.0;
        }
        let length = Duration::from_nanos(self.ramp_nanos.load(Ordering::Relaxed));
        let elapsed = Duration::from_nanos(self.nanos(now).saturating_sub(from - 1));
        super::ramp::ramp_share(elapsed, length)
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the breaker is closed (neither open nor probing with half-open trials).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    /// Whether the breaker refuses every call at `now`: open with open time left. An open
    /// breaker whose time has run out takes traffic again (its next call is a half-open trial),
    /// and so does a half-open one.
    #[inline]
    pub fn refuses(&self, now: Instant) -> bool {
        let v = self.state.load(Ordering::Acquire);
        if v < OPEN_BASE {
            return false;
        }
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u128::from(v - OPEN_BASE) > since
    }
}

impl Default for PublishedState {
    fn default() -> Self {
        PublishedState::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_refuses_until_its_time_runs_out() {
        let p = PublishedState::new();
        let now = Instant::now();
        assert!(!p.refuses(now) && p.is_closed());
        p.publish(&BreakerState::Open {
            until: now + Duration::from_secs(5),
        });
        assert!(p.refuses(now));
        assert!(p.refuses(now + Duration::from_millis(4999)));
        assert!(!p.refuses(now + Duration::from_secs(5)));
        p.publish(&BreakerState::HalfOpen {
            admitted: 0,
            succeeded: 0,
        });
        assert!(!p.refuses(now) && !p.is_closed());
        p.publish(&BreakerState::Closed);
        assert!(!p.refuses(now) && p.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_published_ramp_grows_the_share_to_all() {
        let p = PublishedState::new();
        tokio::time::advance(Duration::from_secs(7)).await;
        let now = Instant::now();
        assert_eq!(p.ramp_share(now), 1.0);
        p.publish_ramp(Some((now, Duration::from_secs(30))));
        assert!((p.ramp_share(now) - super::super::ramp::RAMP_START).abs() < 1e-9);
        assert!((p.ramp_share(now + Duration::from_secs(10)) - 0.4).abs() < 1e-6);
        assert_eq!(p.ramp_share(now + Duration::from_secs(30)), 1.0);
        p.publish_ramp(None);
        assert_eq!(p.ramp_share(now), 1.0);
    }
}
