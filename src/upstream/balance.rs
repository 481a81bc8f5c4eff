//! Picking an endpoint: power of two choices over least outstanding requests (the default, as in
//! Envoy and linkerd: near-best balance without a global scan), or round robin. Endpoints that are
//! ejected, failing health checks or held by an operator's override are skipped.

use super::{Upstream, WorkerUpstream};
use crate::config::Balance;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

impl Upstream {
    fn available(&self, i: usize, now: Instant) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.healthy.load(Ordering::Relaxed) && !e.hold.is_held())
            && !self.outlier.is_ejected(i, now)
    }

    /// The endpoint for the next request, avoiding `avoid` (the one a retry just failed on) when
    /// another is available. `None` when every endpoint is out.
    pub fn pick(&self, avoid: Option<usize>, now: Instant) -> Option<usize> {
        let n = self.endpoints.len();
        let usable = |i: usize| self.available(i, now) && Some(i) != avoid;
        // An endpoint ramping up (`slow_start.rs`) makes picks weighted for a while.
        let ramping = (n > 1)
            .then(|| self.pick_slow_start(&usable, now))
            .flatten();
        let chosen = match (self.config.balance, n) {
            (_, 0) => None,
            (_, 1) => Some(0).filter(|i| usable(*i)),
            _ if ramping.is_some() => ramping,
            (Balance::RoundRobin, _) => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                let start = self.weights.as_ref().map_or(k, |w| w.round_robin(k));
                (0..n).map(|k| (start + k) % n).find(|i| usable(*i))
            }
            (Balance::P2c, _) => {
                let (a, b) = self.candidates(n);
                match (usable(a), usable(b)) {
                    (true, true) => Some(if self.less_loaded(b, a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Both samples out: scan from a random start so we still find survivors.
                    (false, false) => (0..n).map(|k| (a + k) % n).find(|i| usable(*i)),
                }
            }
        };
        // A retry that could only go back to the endpoint it avoided still goes there.
        chosen.or_else(|| avoid.filter(|i| self.available(*i, now)))
    }

    /// Two distinct endpoints for P2C (`n >= 2`): uniform, or drawn by weight (`super::weights`).
    #[inline]
    fn candidates(&self, n: usize) -> (usize, usize) {
        let a = match &self.weights {
            Some(w) => w.sample(),
            None => fastrand::usize(..n),
        };
        let b = match &self.weights {
            Some(w) => Some(w.sample()).filter(|b| *b != a),
            None => None,
        };
        let b = b.unwrap_or_else(|| (a + 1 + fastrand::usize(..n - 1)) % n);
        (a, b)
    }

    /// Whether `b` has fewer in-flight requests than `a` per unit of weight.
    #[inline]
    fn less_loaded(&self, b: usize, a: usize) -> bool {
        let load = |i: usize| {
            u64::from(
                self.endpoints
                    .get(i)
                    .map_or(0, |e| e.in_flight.load(Ordering::Relaxed)),
            )
        };
        match &self.weights {
            None => load(b) < load(a),
            Some(w) => load(b) * w.weight(a) < load(a) * w.weight(b),
        }
    }
}

use crate::call::{Call, CallFuture, CallService};
use crate::error::ProxyError;
use crate::layers::{protection_layer, Protected, Protection};
use std::sync::Arc;

/// Chooses the endpoint and tracks its outstanding requests for P2C.
#[derive(Clone)]
pub struct BalanceLayer {
    upstream: Arc<WorkerUpstream>,
}

impl BalanceLayer {
    pub fn new(upstream: Arc<WorkerUpstream>) -> Self {
        BalanceLayer { upstream }
    }
}

pub type BalanceService<S> = Protected<BalanceLayer, S>;
protection_layer!(BalanceLayer => BalanceService);

struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Protection for BalanceLayer {
    fn call<S: CallService>(&self, inner: &mut S, mut call: Call) -> CallFuture {
        let upstream = self.upstream.clone();
        let mut inner = inner.clone();
        Box::pin(async move {
            // The request's arrival time is recent enough to judge ejections by.
            let now = call.started;
            let Some(i) = upstream.pick(call.avoid, now) else {
                let retry_after = (0..upstream.endpoints.len())
                    .filter_map(|i| upstream.outlier.ejected_until(i, now))
                    .min()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(std::time::Duration::from_secs(1));
                return Err(ProxyError::NoHealthyEndpoint { retry_after });
            };
            call.endpoint = i;
            if let Some(p) = &call.picked {
                p.store(i, Ordering::Relaxed);
            }
            let ep = &upstream.endpoints[i];
            ep.in_flight.fetch_add(1, Ordering::Relaxed);
            let _in_flight = InFlight(&ep.in_flight);
            inner.call(call).await
        })
    }
}
