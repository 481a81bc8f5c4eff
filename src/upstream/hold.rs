//! An operator's hold on one endpoint (`crate::overrides`): drained (no new requests, those in
//! flight finish) or ejected (out of the balancer like an outlier ejection, which neither health
//! checks nor outlier detection can end early). The balancer reads it with one relaxed atomic
//! load per candidate, next to the endpoint's other counters.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why an endpoint is held out of the balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointHoldKind {
    Drain,
    Eject,
}

/// The hold slot of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointHold(AtomicU8);

impl EndpointHold {
    #[inline]
    pub fn get(&self) -> Option<EndpointHoldKind> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(EndpointHoldKind::Drain),
            2 => Some(EndpointHoldKind::Eject),
            _ => None,
        }
    }

    /// Whether the balancer must skip the endpoint.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    pub fn set(&self, kind: Option<EndpointHoldKind>) {
        let v = match kind {
            None => 0,
            Some(EndpointHoldKind::Drain) => 1,
            Some(EndpointHoldKind::Eject) => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}
