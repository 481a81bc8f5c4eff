//! A breaker's state published lock-free, for readers on the request path that only need to
//! know whether the upstream takes traffic now (a split choosing its target) and must not take
//! the breaker's lock to find out. Written under the breaker's lock on every transition, so the
//! last write is always the latest state.

use super::state::BreakerState;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

const CLOSED: u64 = 0;
const HALF_OPEN: u64 = 1;
/// Open states are stored as `OPEN_BASE` + nanoseconds from `epoch` to the end of the open time.
const OPEN_BASE: u64 = 2;

#[derive(Debug)]
pub struct PublishedState {
    epoch: Instant,
    state: AtomicU64,
}

impl PublishedState {
    pub fn new() -> PublishedState {
        PublishedState {
            epoch: Instant::now(),
            state: AtomicU64::new(CLOSED),
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
    use std::time::Duration;

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
}
