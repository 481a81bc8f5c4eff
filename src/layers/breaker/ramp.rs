//! The ramp after recovery (`ramp_duration`): a share of traffic that grows linearly from
//! [`RAMP_START`] to all of it, so a backend that just came back is not hit by its full load at
//! once. The breaker uses it for the upstream's share after closing (Traefik's
//! `RecoveryDuration`), the balancer for an endpoint's weight after an ejection, a failed health
//! check or being added (Envoy's slow start). Pure: the clock is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// The share of traffic a ramp starts at.
pub const RAMP_START: f64 = 0.1;

/// The share admitted `elapsed` into a ramp of length `ramp`: [`RAMP_START`] at its start,
/// growing linearly to 1.0 at its end (and 1.0 for a zero-length ramp).
pub fn ramp_share(elapsed: Duration, ramp: Duration) -> f64 {
    if ramp.is_zero() || elapsed >= ramp {
        return 1.0;
    }
    RAMP_START + (1.0 - RAMP_START) * (elapsed.as_secs_f64() / ramp.as_secs_f64())
}

/// An upstream's ramp after its breaker closed: admits requests in proportion to the current
/// share. It spreads admissions evenly (error diffusion: every request adds the share to a
/// credit, and one is admitted whenever the credit reaches a whole request) rather than by a
/// coin flip, so over any run of requests the admitted count is within one of `share × run`,
/// deterministic in tests and across workers (the breaker is shared).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ramp {
    started: Instant,
    credit: f64,
}

/// What the ramp says about one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RampAdmission {
    /// The ramp is over: admit, and forget the ramp.
    Over,
    /// Admitted within the ramp.
    Admitted,
    /// Refused; the share admitted now, 0.0..1.0.
    Refused(f64),
}

impl Ramp {
    /// A ramp starting at `now`; the first request is admitted.
    pub fn new(now: Instant) -> Self {
        Ramp {
            started: now,
            credit: 1.0,
        }
    }

    /// When the ramp began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The share admitted at `now`.
    pub fn share(&self, ramp: Duration, now: Instant) -> f64 {
        ramp_share(now.saturating_duration_since(self.started), ramp)
    }

    /// Whether `now` is still within a ramp of length `ramp`.
    pub fn is_running(&self, ramp: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < ramp
    }

    /// Decides one request at `now`.
    pub fn admit(&mut self, ramp: Duration, now: Instant) -> RampAdmission {
        if !self.is_running(ramp, now) {
            return RampAdmission::Over;
        }
        let share = self.share(ramp, now);
        // Credit grows per request, not per second, and stays below 1 after every decision,
        // so a quiet spell banks nothing: a burst after it is admitted at the current share.
        self.credit += share;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            RampAdmission::Admitted
        } else {
            RampAdmission::Refused(share)
        }
    }
}

/// A share as a whole percentage for reasons in words ("40% admitted").
pub fn percent(share: f64) -> u32 {
    // In 0..=100 by construction; the cast cannot truncate meaningfully.
    (share.clamp(0.0, 1.0) * 100.0).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn share_grows_linearly_from_the_start_fraction_to_all() {
        let ramp = 30 * SEC;
        assert_eq!(ramp_share(Duration::ZERO, ramp), RAMP_START);
        assert!((ramp_share(10 * SEC, ramp) - 0.4).abs() < 1e-9);
        assert!((ramp_share(15 * SEC, ramp) - 0.55).abs() < 1e-9);
        assert_eq!(ramp_share(30 * SEC, ramp), 1.0);
        assert_eq!(ramp_share(90 * SEC, ramp), 1.0);
        assert_eq!(ramp_share(Duration::ZERO, Duration::ZERO), 1.0);
        assert_eq!(percent(ramp_share(10 * SEC, ramp)), 40);
    }

    #[test]
    fn admits_the_share_of_each_run_of_requests() {
        let t0 = Instant::now();
        let ramp = 30 * SEC;
        let mut r = Ramp::new(t0);
        // At the start: the first request, then one in ten.
        let first: Vec<bool> = (0..21)
            .map(|_| r.admit(ramp, t0) == RampAdmission::Admitted)
            .collect();
        assert_eq!(first.iter().filter(|a| **a).count(), 3, "{first:?}");
        assert!(first[0]);
        // 10s in (40%): 400 of 1000, exactly.
        let at = t0 + 10 * SEC;
        let admitted = (0..1000)
            .filter(|_| r.admit(ramp, at) == RampAdmission::Admitted)
            .count();
        assert!((399..=401).contains(&admitted), "{admitted}");
        match r.admit(ramp, at) {
            RampAdmission::Admitted => {}
            RampAdmission::Refused(share) => assert_eq!(percent(share), 40),
            RampAdmission::Over => panic!("still ramping"),
        }
        assert_eq!(r.admit(ramp, t0 + ramp), RampAdmission::Over);
    }

    #[test]
    fn a_quiet_spell_banks_no_burst() {
        let t0 = Instant::now();
        let ramp = 30 * SEC;
        let mut r = Ramp::new(t0);
        assert_eq!(r.admit(ramp, t0), RampAdmission::Admitted);
        // Nothing for 20s, then a burst at 70%: the burst is still 70% admitted.
        let at = t0 + 20 * SEC;
        let admitted = (0..100)
            .filter(|_| r.admit(ramp, at) == RampAdmission::Admitted)
            .count();
        assert!((70..=71).contains(&admitted), "{admitted}");
    }
}
