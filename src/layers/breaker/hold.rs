//! An operator's hold on a breaker (`crate::overrides`): forced open or forced closed until a
//! deadline, whatever the state machine says. The breaker service asks it before the state
//! machine; with no hold that is one relaxed atomic load, and the state machine in
//! [`super::state`] knows nothing of holds.

use super::state::{BreakerSnapshot, StateKind};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Which way a breaker is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldMode {
    /// Every call is refused with 503 `circuit_open`.
    Open,
    /// Every call is admitted and none is recorded, so the breaker cannot trip.
    Closed,
}

const NONE: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;

/// Who holds the breaker and why, for the 503's `retry-after` and `/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldDetail {
    pub id: u64,
    pub until: Instant,
    pub reason: String,
}

/// The hold slot of one breaker.
#[derive(Debug, Default)]
pub struct BreakerHold {
    mode: AtomicU8,
    detail: Mutex<Option<HoldDetail>>,
}

impl BreakerHold {
    /// The current hold, if any: the request path's only cost while none is set.
    #[inline]
    pub fn mode(&self) -> Option<HoldMode> {
        match self.mode.load(Ordering::Acquire) {
            OPEN => Some(HoldMode::Open),
            CLOSED => Some(HoldMode::Closed),
            _ => None,
        }
    }

    /// Sets (or with `None`, ends) the hold.
    pub fn set(&self, hold: Option<(HoldMode, HoldDetail)>) {
        let mut detail = self.detail.lock();
        let mode = match &hold {
            None => NONE,
            Some((HoldMode::Open, _)) => OPEN,
            Some((HoldMode::Closed, _)) => CLOSED,
        };
        *detail = hold.map(|(_, d)| d);
        self.mode.store(mode, Ordering::Release);
    }

    /// Time until the hold ends (the `retry-after` of a forced-open answer).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.detail
            .lock()
            .as_ref()
            .map(|d| d.until.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
    }

    /// Shows the hold in a breaker's snapshot: the state it forces and, in words, who holds it
    /// and what the breaker's own state is meanwhile.
    pub fn overlay(&self, snapshot: &mut BreakerSnapshot, now: Instant) {
        let Some(mode) = self.mode() else { return };
        let Some(d) = self.detail.lock().clone() else {
            return;
        };
        let left = d.until.saturating_duration_since(now);
        let left = humantime::format_duration(Duration::from_secs(left.as_secs()));
        let own = format!("{}: {}", snapshot.state, snapshot.reason);
        match mode {
            HoldMode::Open => {
                snapshot.reason = format!(
                    "held open by override {} for another {left}: {} (own state {own})",
                    d.id, d.reason
                );
                snapshot.state = StateKind::Open;
                snapshot.open_remaining = Some(d.until.saturating_duration_since(now));
            }
            HoldMode::Closed => {
                snapshot.reason = format!(
                    "held closed by override {} for another {left}, not tripping: {} (own state {own})",
                    d.id, d.reason
                );
                snapshot.state = StateKind::Closed;
                snapshot.open_remaining = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::breaker::state::{Breaker, BreakerSettings};

    #[tokio::test(start_paused = true)]
    async fn a_hold_shows_over_the_breakers_own_state_and_ends() {
        let hold = BreakerHold::default();
        let mut breaker = Breaker::new(BreakerSettings::default());
        let now = Instant::now();
        assert_eq!(hold.mode(), None);
        let detail = HoldDetail {
            id: 7,
            until: now + Duration::from_secs(600),
            reason: "migration".into(),
        };
        hold.set(Some((HoldMode::Open, detail.clone())));
        assert_eq!(hold.mode(), Some(HoldMode::Open));
        tokio::time::advance(Duration::from_secs(100)).await;
        let now = Instant::now();
        assert_eq!(hold.remaining(now), Duration::from_secs(500));
        let mut s = breaker.snapshot(now);
        hold.overlay(&mut s, now);
        assert_eq!(s.state, StateKind::Open);
        assert_eq!(s.open_remaining, Some(Duration::from_secs(500)));
        assert!(
            s.reason.starts_with(
                "held open by override 7 for another 8m 20s: migration (own state closed"
            ),
            "{}",
            s.reason
        );

        hold.set(Some((HoldMode::Closed, detail)));
        let mut s = breaker.snapshot(now);
        hold.overlay(&mut s, now);
        assert_eq!(s.state, StateKind::Closed);
        assert!(
            s.reason.contains("held closed by override 7"),
            "{}",
            s.reason
        );

        hold.set(None);
        assert_eq!(hold.mode(), None);
        let mut s = breaker.snapshot(now);
        let own = s.clone();
        hold.overlay(&mut s, now);
        assert_eq!(s, own, "no hold, no change");
    }
}
