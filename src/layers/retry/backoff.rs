//! Exponential backoff with full jitter.
//!
//! Full jitter (a uniform draw in `[0, ceiling]`, after the AWS architecture
//! blog's analysis) spreads clients that failed together across the whole
//! window, so they don't come back in synchronised waves; the exponential
//! ceiling still backs off a backend that stays down.

use std::time::Duration;

/// Backoff schedule: ceilings `base, 2·base, 4·base, …`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling for the first retry.
    pub base: Duration,
    /// Upper bound for any delay.
    pub max: Duration,
}

impl Backoff {
    /// The largest delay for `attempt` (1 = first retry; 0 is treated as 1):
    /// `min(max, base * 2^(attempt-1))`, without overflow for any attempt.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        let doublings = attempt.saturating_sub(1);
        // Past 2^31 the product exceeds any sensible `max` (and u32), so the
        // cap is the answer.
        1u32.checked_shl(doublings)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Attempt 1 = first retry. Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
    ///
    /// `unit` is the random draw in `[0, 1)`, supplied by the caller so the
    /// result is testable; values outside are clamped (NaN counts as 0).
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let unit = if unit > 0.0 { unit.min(1.0) } else { 0.0 };
        // try_ variant: near Duration::MAX the f64 round trip can land just
        // above the representable range, and `mul_f64` would panic there.
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * unit)
            .map_or(ceiling, |d| d.min(ceiling))
    }

    /// A jittered delay for `attempt`, drawn with `fastrand`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff {
            base: 100 * MS,
            max: Duration::from_secs(5),
        }
    }

    #[test]
    fn ceiling_doubles_per_attempt() {
        let b = backoff();
        assert_eq!(b.ceiling(0), 100 * MS);
        assert_eq!(b.ceiling(1), 100 * MS);
        assert_eq!(b.ceiling(2), 200 * MS);
        assert_eq!(b.ceiling(3), 400 * MS);
        assert_eq!(b.ceiling(4), 800 * MS);
        assert_eq!(b.delay_with(3, 0.5), 200 * MS);
        assert_eq!(b.delay_with(4, 0.25), 200 * MS);
    }

    #[test]
    fn cap_is_respected() {
        let b = backoff();
        assert_eq!(b.ceiling(6), 3200 * MS);
        assert_eq!(b.ceiling(7), Duration::from_secs(5));
        for attempt in [7, 10, 31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(attempt), Duration::from_secs(5));
            assert!(b.delay(attempt) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn random_draws_stay_in_bounds_and_spread() {
        let b = backoff();
        for attempt in 1..=10 {
            let ceiling = b.ceiling(attempt);
            let (mut low, mut high) = (0, 0);
            for _ in 0..2000 {
                let d = b.delay(attempt);
                assert!(d <= ceiling, "{d:?} > {ceiling:?}");
                if d < ceiling / 2 {
                    low += 1;
                } else {
                    high += 1;
                }
            }
            // Full jitter: both halves of the range get plenty of draws.
            assert!(low > 500 && high > 500, "attempt {attempt}: {low}/{high}");
        }
    }

    #[test]
    fn unit_is_clamped() {
        let b = backoff();
        assert_eq!(b.delay_with(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay_with(1, -3.0), Duration::ZERO);
        assert_eq!(b.delay_with(1, f64::NAN), Duration::ZERO);
        assert_eq!(b.delay_with(1, 1.0), 100 * MS);
        assert_eq!(b.delay_with(1, f64::INFINITY), 100 * MS);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let b = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(b.ceiling(u32::MAX), Duration::MAX);
        assert!(b.delay_with(u32::MAX, 0.999_999_999) <= Duration::MAX);
        assert_eq!(b.delay_with(2, 1.0), Duration::MAX);

        let b = Backoff {
            base: Duration::from_secs(u64::MAX / 3),
            max: Duration::MAX,
        };
        assert_eq!(b.ceiling(3), Duration::MAX);

        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        assert_eq!(zero.ceiling(u32::MAX), Duration::ZERO);

        // max below base: max wins.
        let inverted = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(1),
        };
        assert_eq!(inverted.ceiling(1), Duration::from_secs(1));
    }
}
