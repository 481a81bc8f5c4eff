//! State shared by every task of a running levee: the current snapshot, metrics, readiness.

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
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
    /// Who follows [`Shared::publish`] (the workers), of types this module does not know.
    followers: Mutex<Vec<Weak<dyn Follow>>>,
    /// Operators' timed overrides: one store for every worker (`crate::overrides`).
    pub overrides: Arc<crate::overrides::live::Overrides>,
}

/// Follows the published snapshot: told of each one as it is published, before `publish`
/// returns (so a finished reload is what every worker serves).
pub trait Follow: Send + Sync {
    fn follow(&self, snapshot: &Arc<Snapshot>);
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
            followers: Mutex::new(Vec::new()),
            overrides,
        })
    }

    /// Makes `snapshot` the running one, for every follower.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        // Under the lock a follower subscribes under: none starts on the previous one unseen.
        let mut followers = self.followers.lock();
        // The overrides go onto the new upstreams before any request can see them.
        self.overrides
            .carry_over(&snapshot, || self.snapshot.store(snapshot.clone()));
        followers.retain(|f| f.upgrade().inspect(|f| f.follow(&snapshot)).is_some());
    }

    /// `make` a follower from the running snapshot; it follows every one published after.
    pub fn subscribe<F: Follow + 'static>(
        &self,
        make: impl FnOnce(Arc<Snapshot>) -> Arc<F>,
    ) -> Arc<F> {
        let mut followers = self.followers.lock();
        let follower = make(self.snapshot.load_full());
        followers.push(Arc::downgrade(&follower) as Weak<dyn Follow>);
        follower
    }
}
