//! Concurrency limits per upstream, like Envoy's circuit-breaker thresholds: at most
//! `max_concurrent_requests` in flight, at most `max_pending` more waiting for a slot; beyond that
//! levee answers 503 `overloaded` at once. A queue that can grow without bound only converts an
//! upstream's slowness into levee's memory and everyone's latency.

use super::{protection_layer, Protected, Protection};
use crate::call::{Call, CallFuture, CallService};
use crate::error::ProxyError;
use crate::shard::Local;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Slots for requests in flight to one upstream, and a bounded number of waiters.
pub struct ConcurrencyLimit {
    slots: Arc<Semaphore>,
    max: u32,
    pending: AtomicU32,
    max_pending: u32,
}

impl ConcurrencyLimit {
    pub fn new(max_concurrent: u32, max_pending: u32) -> Self {
        ConcurrencyLimit {
            slots: Arc::new(Semaphore::new(max_concurrent as usize)),
            max: max_concurrent,
            pending: AtomicU32::new(0),
            max_pending,
        }
    }

    /// Requests holding a slot now.
    pub fn active(&self) -> u32 {
        self.max
            .saturating_sub(self.slots.available_permits() as u32)
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Waits for a slot if there is room in the queue, until `deadline` at most.
    async fn acquire(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ProxyError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ProxyError::Overloaded);
        }
        struct Pending<'a>(&'a AtomicU32);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _pending = Pending(&self.pending);
        // Only a request that has to queue pays for a timer.
        tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ProxyError::Overloaded)?
            .map_err(|_| ProxyError::Overloaded)
    }
}

#[derive(Clone)]
pub struct ConcurrencyLayer(pub Arc<Local<ConcurrencyLimit>>);

pub type ConcurrencyService<S> = Protected<ConcurrencyLayer, S>;
protection_layer!(ConcurrencyLayer => ConcurrencyService);

impl Protection for ConcurrencyLayer {
    fn call<S: CallService>(&self, inner: &mut S, call: Call) -> CallFuture {
        let limit = self.0.clone();
        let mut inner = inner.clone();
        Box::pin(async move {
            let permit = limit.acquire(call.deadline).await?;
            let result = inner.call(call).await;
            drop(permit);
            result
        })
    }
}
