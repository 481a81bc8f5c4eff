//! Circuit breaker per upstream: when an upstream keeps failing, stop sending it traffic for a
//! while so it can recover, instead of piling retries onto it. The state machine (closed → open →
//! half-open) is pure and lives in [`state`]; this file is the plumbing around it: a lock, the
//! clock, logging and metrics of transitions, and the tower service that asks before every call.

pub mod hold;
pub mod published;
pub mod ramp;
mod recovery;
pub mod state;
pub mod window;

use super::{protection_layer, Protected, Protection};
use crate::call::{Call, CallFuture, CallService};
use crate::error::ProxyError;
use crate::metrics::{Metrics, TransitionLabels};
use crate::shard::Local;
use hold::{BreakerHold, HoldDetail, HoldMode};
use parking_lot::Mutex;
use state::{
    Admission, Breaker, BreakerSettings, BreakerSnapshot, CallResult, StateKind, Ticket, Transition,
};
use std::sync::Arc;
use tokio::time::Instant;

/// A shared breaker: one per upstream, used by every request to it.
pub struct CircuitBreaker {
    upstream: Arc<str>,
    inner: Mutex<Breaker>,
    metrics: Arc<Metrics>,
    /// The state for lock-free readers (a split's pick), updated on every transition.
    pub published: published::PublishedState,
    /// An operator's override, asked before the state machine (`crate::overrides`).
    pub hold: BreakerHold,
}

impl CircuitBreaker {
    pub fn new(upstream: Arc<str>, settings: BreakerSettings, metrics: Arc<Metrics>) -> Self {
        metrics
            .circuit_state
            .get_or_create(&crate::metrics::UpstreamLabel {
                upstream: upstream.to_string(),
            })
            .set(0);
        CircuitBreaker {
            upstream,
            inner: Mutex::new(Breaker::new(settings)),
            metrics,
            published: published::PublishedState::new(),
            hold: BreakerHold::default(),
        }
    }

    /// Holds the breaker open or closed (`None` ends the hold); the state gauge follows.
    pub fn set_hold(&self, hold: Option<(HoldMode, HoldDetail)>) {
        let kind = match &hold {
            Some((HoldMode::Open, _)) => StateKind::Open,
            Some((HoldMode::Closed, _)) => StateKind::Closed,
            None => self.kind(Instant::now()),
        };
        self.hold.set(hold);
        self.metrics
            .circuit_state
            .get_or_create(&crate::metrics::UpstreamLabel {
                upstream: self.upstream.to_string(),
            })
            .set(kind.gauge());
    }

    /// Asks to send one call; an open breaker answers 503 `circuit_open` at once. `ramp`: see
    /// [`RampBy`].
    pub fn admit(&self, now: Instant, ramp: RampBy) -> Result<Ticket, ProxyError> {
        let (admission, transition) = self
            .inner
            .lock()
            .admit_ramping(now, ramp == RampBy::Breaker);
        if let Some(t) = transition {
            self.report(&t);
        }
        match admission {
            Admission::Admitted(ticket) => Ok(ticket),
            Admission::Rejected { retry_after } => Err(ProxyError::CircuitOpen { retry_after }),
        }
    }

    pub fn record(&self, ticket: Ticket, result: CallResult, now: Instant) {
        let transition = self.inner.lock().record(ticket, result, now);
        if let Some(t) = transition {
            self.report(&t);
        }
    }

    /// See [`Breaker::record_late_failure`].
    pub fn record_late_failure(&self, now: Instant) {
        if self.hold.mode() == Some(HoldMode::Closed) {
            return;
        }
        let transition = self.inner.lock().record_late_failure(now);
        if let Some(t) = transition {
            self.report(&t);
        }
    }

    pub fn cancel(&self, ticket: Ticket) {
        self.inner.lock().cancel(ticket);
    }

    pub fn kind(&self, now: Instant) -> StateKind {
        self.inner.lock().kind(now)
    }

    /// Why the breaker is in its state, in words (for `/status`).
    pub fn reason(&self, now: Instant) -> String {
        self.inner.lock().reason(now)
    }

    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut snapshot = self.inner.lock().snapshot(now);
        self.hold.overlay(&mut snapshot, now);
        snapshot
    }

    fn report(&self, t: &Transition) {
        // Under the lock, so that racing transitions publish in the order they happened.
        {
            let inner = self.inner.lock();
            self.published.publish(inner.state());
            self.published.publish_ramp(inner.ramp_start());
        }
        tracing::info!(
            upstream = %self.upstream,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = %t.reason,
            "circuit breaker {} -> {}: {}",
            t.from.as_str(),
            t.to.as_str(),
            t.reason
        );
        let upstream = self.upstream.to_string();
        self.metrics
            .circuit_transitions
            .get_or_create(&TransitionLabels {
                upstream: upstream.clone(),
                from: t.from.as_str(),
                to: t.to.as_str(),
            })
            .inc();
        self.metrics
            .circuit_state
            .get_or_create(&crate::metrics::UpstreamLabel { upstream })
            .set(t.to.gauge());
    }
}

/// Returns an admitted ticket unused if the call is dropped (the client went away), so a
/// half-open trial slot is never leaked and a client abort never counts against the upstream.
struct TicketGuard<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Option<Ticket>,
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.breaker.cancel(t);
        }
    }
}

/// Who applies the ramp after the breaker closes (`ramp_duration`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RampBy {
    /// The breaker: it refuses the callers beyond the ramp's share (an upstream of its own).
    Breaker,
    /// A split: it sends the target only its share and the rest to the other targets, so the
    /// breaker admits every call it gets (`crate::proxy::split`).
    Split,
}

/// Adds the upstream's breaker in front of `S`.
#[derive(Clone)]
pub struct BreakerLayer(pub Arc<Local<CircuitBreaker>>, pub RampBy);

pub type BreakerService<S> = Protected<BreakerLayer, S>;
protection_layer!(BreakerLayer => BreakerService);

impl Protection for BreakerLayer {
    fn call<S: CallService>(&self, inner: &mut S, call: Call) -> CallFuture {
        let shared = self.0.clone();
        let ramp_by = self.1;
        let mut inner = inner.clone();
        Box::pin(async move {
            let breaker: &CircuitBreaker = &shared;
            let started = call.started;
            match breaker.hold.mode() {
                None => {}
                Some(HoldMode::Open) => {
                    let retry_after = breaker.hold.remaining(started);
                    return Err(ProxyError::CircuitOpen { retry_after });
                }
                // Admitted without a ticket: no outcome reaches the state machine.
                Some(HoldMode::Closed) => return inner.call(call).await,
            }
            let ticket = breaker.admit(started, ramp_by)?;
            let mut guard = TicketGuard {
                breaker,
                ticket: Some(ticket),
            };
            let mut result = inner.call(call).await;
            if let Ok(crate::call::Answer {
                deferred: Some(deferred),
                at,
                ..
            }) = &mut result
            {
                // A gRPC call judged by the `grpc-status` in its trailers: the ticket (and a
                // half-open trial slot) is held until the body ends. Slowness is still measured
                // to the response head, as for any streamed response.
                let elapsed = *at - started;
                if let Some(ticket) = guard.ticket.take() {
                    let breaker = shared.clone();
                    deferred.on_settled(move |failed, now| match failed {
                        Some(failed) => breaker.record(ticket, CallResult { failed, elapsed }, now),
                        None => breaker.cancel(ticket),
                    });
                }
                return result;
            }
            // No verdict for calls refused before reaching the upstream or failed by the client.
            let Some(failed) = crate::call::verdict(&result) else {
                return result;
            };
            let now = crate::call::finished_at(&result);
            if let Some(ticket) = guard.ticket.take() {
                breaker.record(
                    ticket,
                    CallResult {
                        failed,
                        elapsed: now - started,
                    },
                    now,
                );
            }
            result
        })
    }
}
