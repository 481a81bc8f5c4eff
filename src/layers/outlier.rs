//! Passive outlier detection per endpoint: the answers real traffic gets are the health check.
//! An endpoint that keeps failing is ejected from the pool for a while (longer each time), so one
//! bad instance cannot keep failing a share of requests. The policy is in [`ejection`].

pub mod ejection;

use super::{protection_layer, Protected, Protection};
use crate::call::{Answer, Call, CallFuture, CallService};
use ejection::{EjectionEvent, OutlierDetector};
use std::sync::Arc;
use tokio::time::Instant;

/// Who hears what the detector judges: the upstream, which counts each answer (requests,
/// failures, history) and logs and counts each ejection.
pub trait OutlierObserver: Send + Sync + 'static {
    fn answered(&self, endpoint: usize, failed: bool);
    fn ejected(&self, endpoint: usize, ev: &EjectionEvent, now: Instant);
}

/// An upstream's outlier detection as one worker's stack holds it (a per-worker `Arc`, cloned
/// per request): the detector and its observer.
pub struct Outliers {
    pub detector: Arc<OutlierDetector>,
    pub observer: Arc<dyn OutlierObserver>,
}

impl Outliers {
    /// Counts one answer of `endpoint` and feeds it to outlier detection.
    fn record(&self, endpoint: usize, failed: bool, now: Instant) {
        self.observer.answered(endpoint, failed);
        if let Some(ev) = self.detector.record(endpoint, failed, now) {
            self.observer.ejected(endpoint, &ev, now);
        }
    }
}

#[derive(Clone)]
pub struct OutlierLayer(pub Arc<Outliers>);

pub type OutlierService<S> = Protected<OutlierLayer, S>;
protection_layer!(OutlierLayer => OutlierService);

impl Protection for OutlierLayer {
    fn call<S: CallService>(&self, inner: &mut S, call: Call) -> CallFuture {
        let outliers = self.0.clone();
        let mut inner = inner.clone();
        Box::pin(async move {
            let endpoint = call.endpoint;
            let mut result = inner.call(call).await;
            if let Ok(Answer {
                deferred: Some(deferred),
                ..
            }) = &mut result
            {
                // A gRPC call: judged when its trailers bring the final `grpc-status`.
                deferred.on_settled(move |failed, now| {
                    if let Some(failed) = failed {
                        outliers.record(endpoint, failed, now);
                    }
                });
                return result;
            }
            if let Some(failed) = crate::call::verdict(&result) {
                outliers.record(endpoint, failed, crate::call::finished_at(&result));
            }
            result
        })
    }
}
