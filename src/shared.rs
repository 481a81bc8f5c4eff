//! State shared by every task of a running levee: the current snapshot, metrics, readiness.

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

/// What the last reload did, for `/status` and the dashboard.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub at: SystemTime,
    pub ok: bool,
    pub message: String,
}

pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// Every listener is bound and we are not draining.
    pub ready: AtomicBool,
    pub last_reload: Mutex<Option<ReloadOutcome>>,
    /// The workers following [`Shared::publish`] (`crate::worker`).
    pub(crate) workers: Mutex<Vec<std::sync::Weak<crate::worker::Worker>>>,
    /// Operators' timed overrides: one store for every worker (`crate::overrides`).
    pub overrides: Arc<crate::overrides::live::Overrides>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Arc<Shared> {
        metrics.config_version.set(snapshot.version as i64);
        let overrides = Arc::new(crate::overrides::live::Overrides::new(metrics.clone()));
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            ready: AtomicBool::new(false),
            last_reload: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            overrides,
        })
    }

    /// Makes `snapshot` the running one, for every worker.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        // Under the lock a worker registers under: none starts on the previous snapshot unseen.
        let mut workers = self.workers.lock();
        // The overrides go onto the new upstreams before any request can see them.
        self.overrides
            .carry_over(&snapshot, || self.snapshot.store(snapshot.clone()));
        workers.retain(|w| match w.upgrade() {
            Some(w) => {
                w.set_snapshot(&snapshot);
                true
            }
            None => false,
        });
    }
}
