//! The override store as a running levee keeps it: one per process, shared by every worker
//! (`crate::shared::Shared::overrides`). Every change is pushed onto the holds of the running
//! snapshot's upstreams and endpoints (atomics the request path reads), logged with who made it
//! and why, and shown in `levee_override_active{target,action}` (1 while active, 0 after).
//!
//! Changes and reloads are serialised by one lock: a reload re-applies the store to its new
//! snapshot before publishing it ([`Overrides::carry_over`]), and a change applies itself to the
//! snapshot that is published when it runs, so no snapshot goes out without its overrides.

use super::{Action, Override, OverrideStore, Spec, Target};
use crate::layers::breaker::hold::{HoldDetail, HoldMode};
use crate::metrics::{Metrics, OverrideLabels};
use crate::snapshot::Snapshot;
use crate::upstream::hold::EndpointHoldKind;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The running store. See the module docs.
pub struct Overrides {
    store: Mutex<OverrideStore>,
    /// Wakes the expiry task when the next expiry may have moved.
    changed: Notify,
    metrics: Arc<Metrics>,
}

/// Whether the running config has `target`.
pub fn exists(snapshot: &Snapshot, target: &Target) -> bool {
    let Some(u) = snapshot
        .upstreams
        .iter()
        .find(|u| *u.name == *target.upstream())
    else {
        return false;
    };
    match target {
        Target::Upstream(_) => true,
        Target::Endpoint { address, .. } => u.endpoints.iter().any(|e| e.address == *address),
    }
}

impl Overrides {
    pub fn new(metrics: Arc<Metrics>) -> Overrides {
        Overrides {
            store: Mutex::new(OverrideStore::default()),
            changed: Notify::new(),
            metrics,
        }
    }

    /// Sets an override on the snapshot `current` returns (read under the lock), replacing one
    /// on the same target.
    pub fn set(
        &self,
        spec: Spec,
        set_by: &str,
        current: impl FnOnce() -> Arc<Snapshot>,
    ) -> Result<Override, String> {
        let mut store = self.store.lock();
        let snapshot = current();
        if !exists(&snapshot, &spec.target) {
            return Err(format!("{} is not in the running config", spec.target));
        }
        let (o, replaced) =
            store.set(spec, set_by.to_string(), Instant::now(), SystemTime::now())?;
        if let Some(old) = &replaced {
            self.gauge(old, 0);
            tracing::info!(
                id = old.id,
                target = %old.target,
                action = old.action.as_str(),
                by = set_by,
                "override {} replaced by override {}",
                old.id,
                o.id
            );
        }
        self.gauge(&o, 1);
        tracing::warn!(
            id = o.id,
            target = %o.target,
            action = o.action.as_str(),
            ttl = %humantime::format_duration(o.ttl),
            by = set_by,
            reason = %o.reason,
            "override {} set: {} {} for {} by {}: {}",
            o.id,
            o.action,
            o.target,
            humantime::format_duration(o.ttl),
            set_by,
            o.reason
        );
        apply(&store, &snapshot);
        drop(store);
        self.changed.notify_one();
        Ok(o)
    }

    /// Ends override `id` early; `None` when no active override has that id.
    pub fn clear(
        &self,
        id: u64,
        by: &str,
        current: impl FnOnce() -> Arc<Snapshot>,
    ) -> Option<Override> {
        let mut store = self.store.lock();
        let o = store.clear(id)?;
        self.gauge(&o, 0);
        tracing::warn!(
            id = o.id,
            target = %o.target,
            action = o.action.as_str(),
            by,
            reason = %o.reason,
            "override {} cleared by {}: {} {} (was: {})",
            o.id,
            by,
            o.action,
            o.target,
            o.reason
        );
        apply(&store, &current());
        drop(store);
        self.changed.notify_one();
        Some(o)
    }

    /// Ends the overrides whose time is up at `now`.
    pub fn expire(&self, now: Instant, current: impl FnOnce() -> Arc<Snapshot>) {
        let mut store = self.store.lock();
        let done = store.expire(now);
        if done.is_empty() {
            return;
        }
        for o in &done {
            self.gauge(o, 0);
            tracing::warn!(
                id = o.id,
                target = %o.target,
                action = o.action.as_str(),
                set_by = %o.set_by,
                reason = %o.reason,
                "override {} expired after {}: {} {} (set by {}: {})",
                o.id,
                humantime::format_duration(o.ttl),
                o.action,
                o.target,
                o.set_by,
                o.reason
            );
        }
        apply(&store, &current());
    }

    /// Carries the overrides over to a snapshot about to be published: drops (and logs) those
    /// whose target is gone, applies the rest, then runs `publish` under the same lock.
    pub fn carry_over(&self, snapshot: &Snapshot, publish: impl FnOnce()) {
        let mut store = self.store.lock();
        if !store.is_empty() {
            for o in store.retain(|t| exists(snapshot, t)) {
                self.gauge(&o, 0);
                tracing::warn!(
                    id = o.id,
                    target = %o.target,
                    action = o.action.as_str(),
                    reason = %o.reason,
                    "override {} dropped: the reloaded config has no {}",
                    o.id,
                    o.target
                );
            }
        }
        apply(&store, snapshot);
        publish();
        drop(store);
        self.changed.notify_one();
    }

    /// The active overrides, oldest first.
    pub fn list(&self) -> Vec<Override> {
        self.store.lock().list()
    }

    /// Ends overrides on time, for as long as `current` returns a snapshot (`None` once levee
    /// is gone). Runs on the control runtime.
    pub async fn run_expiry(self: Arc<Self>, current: impl Fn() -> Option<Arc<Snapshot>>) {
        loop {
            // Wakes at least once a minute to notice that levee is gone.
            let idle = Instant::now() + std::time::Duration::from_secs(60);
            let next = self
                .store
                .lock()
                .next_expiry()
                .map_or(idle, |at| at.min(idle));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.changed.notified() => {}
            }
            let Some(snapshot) = current() else { return };
            self.expire(Instant::now(), || snapshot);
        }
    }

    fn gauge(&self, o: &Override, value: i64) {
        self.metrics
            .override_active
            .get_or_create(&OverrideLabels {
                target: o.target.to_string(),
                action: o.action.as_str(),
            })
            .set(value);
    }
}

/// Makes the holds of `snapshot`'s upstreams and endpoints match `store`, setting and ending
/// them. Runs on every change (not per request), so a scan is fine.
fn apply(store: &OverrideStore, snapshot: &Snapshot) {
    for u in &snapshot.upstreams {
        let hold = store
            .get(&Target::Upstream(u.name.to_string()))
            .and_then(|o| {
                let mode = match o.action {
                    Action::ForceOpen => HoldMode::Open,
                    Action::ForceClosed => HoldMode::Closed,
                    Action::Drain | Action::Eject => return None,
                };
                Some((
                    mode,
                    HoldDetail {
                        id: o.id,
                        until: o.expires_at,
                        reason: o.reason.clone(),
                    },
                ))
            });
        // An upstream never held is left alone (its state gauge is the breaker's).
        if hold.is_some() || u.breaker.hold.mode().is_some() {
            u.breaker.set_hold(hold);
        }
        for e in u.endpoints.iter() {
            let kind = store
                .get(&Target::Endpoint {
                    upstream: u.name.to_string(),
                    address: e.address.clone(),
                })
                .and_then(|o| match o.action {
                    Action::Drain => Some(EndpointHoldKind::Drain),
                    Action::Eject => Some(EndpointHoldKind::Eject),
                    Action::ForceOpen | Action::ForceClosed => None,
                });
            e.hold.set(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::breaker::state::StateKind;
    use std::time::Duration;

    fn snapshot(endpoints: &str, previous: Option<&Snapshot>, metrics: &Arc<Metrics>) -> Snapshot {
        let text = format!(
            "[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
             [[route]]\nname = \"r\"\nupstream = \"u\"\n\n\
             [[upstream]]\nname = \"u\"\nendpoints = [{endpoints}]\n"
        );
        let config = crate::config::parse("t.toml", &text, std::path::Path::new(".")).unwrap();
        Snapshot::build(config, previous, metrics).unwrap()
    }

    fn spec(target: &str, action: &str, ttl: &str) -> Spec {
        Spec::parse(Some(target), Some(action), Some(ttl), Some("test"), |_| {
            true
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn holds_follow_the_store_through_expiry_and_reloads() {
        let metrics = Arc::new(Metrics::new());
        let shared = crate::shared::Shared::new(
            snapshot("\"127.0.0.1:1\", \"127.0.0.1:2\"", None, &metrics),
            metrics.clone(),
        );
        let current = || shared.snapshot.load_full();
        let o = &shared.overrides;
        o.set(spec("upstream:u", "force_open", "10s"), "tester", current)
            .unwrap();
        o.set(
            spec("endpoint:u/127.0.0.1:2", "eject", "60s"),
            "tester",
            current,
        )
        .unwrap();
        assert!(o
            .set(
                spec("upstream:gone", "force_open", "10s"),
                "tester",
                current
            )
            .is_err());
        let snap = current();
        let u = &snap.upstreams[0];
        assert_eq!(u.breaker.hold.mode(), Some(HoldMode::Open));
        assert_eq!(u.breaker.snapshot(Instant::now()).state, StateKind::Open);
        assert_eq!(u.endpoints[1].hold.get(), Some(EndpointHoldKind::Eject));
        assert_eq!(u.endpoints[0].hold.get(), None);

        // A reload that rebuilds the upstream keeps both holds on the new one ...
        let next = Arc::new(snapshot(
            "\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"",
            Some(&snap),
            &metrics,
        ));
        assert!(!Arc::ptr_eq(&next.upstreams[0], &snap.upstreams[0]));
        shared.publish(next);
        let u = current().upstreams[0].clone();
        assert_eq!(u.breaker.hold.mode(), Some(HoldMode::Open));
        assert_eq!(u.endpoints[1].hold.get(), Some(EndpointHoldKind::Eject));

        // ... expiry ends them on time ...
        tokio::time::advance(Duration::from_millis(9_999)).await;
        o.expire(Instant::now(), current);
        assert_eq!(u.breaker.hold.mode(), Some(HoldMode::Open));
        tokio::time::advance(Duration::from_millis(1)).await;
        o.expire(Instant::now(), current);
        assert_eq!(u.breaker.hold.mode(), None);
        assert_eq!(u.breaker.snapshot(Instant::now()).state, StateKind::Closed);
        assert_eq!(u.endpoints[1].hold.get(), Some(EndpointHoldKind::Eject));

        // ... and a reload without the target drops it.
        let prev = current();
        shared.publish(Arc::new(snapshot("\"127.0.0.1:1\"", Some(&prev), &metrics)));
        assert!(o.list().is_empty());
        assert_eq!(
            metrics
                .override_active
                .get_or_create(&OverrideLabels {
                    target: "endpoint:u/127.0.0.1:2".into(),
                    action: "eject",
                })
                .get(),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_expiry_task_ends_overrides_by_itself() {
        let metrics = Arc::new(Metrics::new());
        let shared =
            crate::shared::Shared::new(snapshot("\"127.0.0.1:1\"", None, &metrics), metrics);
        let weak = Arc::downgrade(&shared);
        let task = tokio::spawn(
            shared
                .overrides
                .clone()
                .run_expiry(move || weak.upgrade().map(|s| s.snapshot.load_full())),
        );
        let current = || shared.snapshot.load_full();
        shared
            .overrides
            .set(
                spec("endpoint:u/127.0.0.1:1", "drain", "5m"),
                "tester",
                current,
            )
            .unwrap();
        let ep = || current().upstreams[0].endpoints[0].hold.get();
        assert_eq!(ep(), Some(EndpointHoldKind::Drain));
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert_eq!(ep(), Some(EndpointHoldKind::Drain));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ep(), None, "expired by itself");
        assert!(shared.overrides.list().is_empty());
        drop(shared);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(task.is_finished(), "the task ends with its levee");
    }
}
