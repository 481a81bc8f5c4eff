//! The `/status` document: what levee is protecting and why, as JSON.

use crate::shared::Shared;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

pub fn render(shared: &Shared) -> Value {
    let snap = shared.snapshot.load_full();
    let now = Instant::now();
    let wall = SystemTime::now();
    let second = crate::history::unix_second();
    // Active overrides, shown on their upstream or endpoint and in one list.
    let overrides = shared.overrides.list();
    let held = |target: crate::overrides::Target| {
        overrides
            .iter()
            .find(|o| o.target == target)
            .map(|o| o.to_json(now))
    };
    let upstreams: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let b = u.breaker.snapshot(now);
            let h = u.history.series_at(second);
            let endpoints: Vec<Value> = u
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let o = u.outlier.snapshot(i, now);
                    let ejected_for = o.ejected_until.map(|t| t.saturating_duration_since(now));
                    let held = held(crate::overrides::Target::Endpoint {
                        upstream: u.name.to_string(),
                        address: e.address.clone(),
                    });
                    let held_ejected =
                        e.hold.get() == Some(crate::upstream::hold::EndpointHoldKind::Eject);
                    json!({
                        "address": e.address,
                        "weight": u.config.endpoint_weights.get(i).copied().unwrap_or(1),
                        "healthy": e.healthy.load(Ordering::Relaxed),
                        "ejected": ejected_for.is_some() || held_ejected,
                        "override": held,
                        "ejected_for_ms": ejected_for.map(ms),
                        "ejected_until": ejected_for.map(|d| unix(wall + d)),
                        "times_ejected": o.times_ejected,
                        "in_flight": e.in_flight.load(Ordering::Relaxed),
                        // Keep-alive connections pooled by levee's own HTTP/1 client.
                        "idle_connections": u.client.idle_connections(i),
                        "requests": e.requests.load(Ordering::Relaxed),
                        "failures": e.failures.load(Ordering::Relaxed),
                        "recent_requests": o.requests,
                        "recent_failure_rate": o.failure_rate,
                        "consecutive_failures": o.consecutive_failures,
                    })
                })
                .collect();
            json!({
                "name": &*u.name,
                "balance": format!("{:?}", u.config.balance).to_ascii_lowercase(),
                "override": held(crate::overrides::Target::Upstream(u.name.to_string())),
                "breaker": {
                    "state": b.state.as_str(),
                    "reason": b.reason,
                    "calls": b.calls,
                    "failures": b.failures,
                    "slow_calls": b.slow,
                    "consecutive_failures": b.consecutive_failures,
                    "half_open_in_ms": b.open_remaining.map(ms),
                    "trips": b.trips,
                    "failure_rate_threshold": u.config.breaker.settings.failure_rate_threshold,
                    "minimum_calls": u.config.breaker.settings.minimum_calls,
                },
                "active_requests": u.concurrency.active(),
                "pending_requests": u.concurrency.pending(),
                "max_concurrent_requests": u.config.breaker.max_concurrent_requests,
                "endpoints": endpoints,
                "history": {
                    "requests": h.total,
                    "failures": h.marked,
                },
            })
        })
        .collect();
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .map(|r| {
            let h = r.history.series_at(second);
            json!({
                "name": &*r.name,
                "host": r.config.host,
                "path_prefix": r.config.path_prefix,
                "upstream": r.config.upstream,
                "split": r.split.as_ref().map(|s| s.status(now)),
                "timeout_ms": ms(r.config.timeout),
                "rate_limit": r.limiter.as_ref().map(|l| json!({
                    "rps": l.config.rps,
                    "burst": l.config.burst,
                    "key": l.config.key.describe(),
                    "scope": format!("{:?}", l.config.scope).to_ascii_lowercase(),
                    "refused": l.refused(),
                    "tracked_keys": l.tracked_keys(),
                    "lease_size": l.lease_size(),
                })),
                "retry": r.retry.as_ref().map(|p| json!({
                    "attempts": p.config.attempts,
                    "budget_ratio": p.config.budget_ratio,
                    "budget_balance": p.budget.balance(now),
                })),
                "retries": r.metrics.retries.get(),
                "retry_budget_exhausted": r.metrics.budget_exhausted.get(),
                "history": {
                    "requests": h.total,
                    "rate_limited": h.marked,
                },
            })
        })
        .collect();
    let last_reload = shared
        .last_reload
        .lock()
        .clone()
        .map(|r| json!({ "at": unix(r.at), "ok": r.ok, "message": r.message }));
    json!({
        "version": snap.version,
        "hash": snap.config.hash,
        "loaded_at": unix(snap.loaded_at),
        "ready": shared.ready.load(Ordering::Relaxed),
        "now": unix(wall),
        "history_end": second,
        "actions_allowed": snap.config.admin.bind.ip().is_loopback()
            || snap.config.admin.allow_actions,
        "last_reload": last_reload,
        "upstreams": upstreams,
        "routes": routes,
        "overrides": overrides.iter().map(|o| o.to_json(now)).collect::<Vec<_>>(),
        "redis": snap.redis.as_ref().map(|r| r.status()),
    })
}
