//! The shared breaker's side of recovery: the probe that gates half-open and the share of
//! traffic admitted while ramping up, with the locking, logging and metrics around the pure
//! state machine ([`super::state`]). The probe itself is sent by `crate::upstream::probe`.

use super::state::{ProbeEnd, ProbeOutcome, ProbeTicket};
use super::CircuitBreaker;
use tokio::time::Instant;

impl CircuitBreaker {
    /// See [`super::state::Breaker::probe_due`].
    pub fn probe_due(&self) -> Option<Instant> {
        self.inner.lock().probe_due()
    }

    /// See [`super::state::Breaker::begin_probe`]: `Some` for the one caller that should probe.
    pub fn begin_probe(&self, now: Instant) -> Option<ProbeTicket> {
        let mut inner = self.inner.lock();
        let ticket = inner.begin_probe(now);
        // Probing is open for callers: a split must keep sending this target's share elsewhere.
        self.published.publish(inner.state());
        ticket
    }

    /// Digests a probe's outcome; logs a failed one (no state change, so not a transition) and
    /// reports a passed one as the open → half-open transition.
    pub fn finish_probe(&self, ticket: ProbeTicket, outcome: &ProbeOutcome, now: Instant) {
        let end = {
            let mut inner = self.inner.lock();
            let end = inner.finish_probe(ticket, outcome, now);
            // A failed probe re-opens without a transition to report: publish the new open time.
            self.published.publish(inner.state());
            end
        };
        match end {
            ProbeEnd::HalfOpen(t) => self.report(&t),
            ProbeEnd::Reopened(reason) => tracing::warn!(
                upstream = %self.upstream,
                reason = %reason,
                "circuit breaker stays open: {reason}"
            ),
            ProbeEnd::Stale => {}
        }
    }

    /// The share of the upstream's traffic the breaker admits at `now` (1.0 closed, growing
    /// during the ramp after recovery, 0.0 open). A weighted split scales a target's weight
    /// by it, so a recovering upstream gets its traffic back gradually.
    pub fn admitted_share(&self, now: Instant) -> f64 {
        self.inner.lock().admitted_share(now)
    }
}
