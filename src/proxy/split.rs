//! Weighted splits: a route that sends each request to one of several upstreams by weight
//! (a canary at 5%). Each target is a whole upstream with its own breaker, limits and metrics.
//!
//! A target whose breaker is open (with open time left) gets no traffic: its share goes to the
//! others in proportion to their weights until the breaker lets calls through again. A
//! half-open breaker gets its normal share, so its trial calls happen as they would without a
//! split. With every target open the configured weights apply and the breakers answer
//! `circuit_open` as they would for a single upstream. The pick reads each breaker's
//! lock-free published state (`crate::layers::breaker::published`), which is shared by every
//! worker, and costs one random number and two passes over the targets: no lock, no allocation.
//!
//! A target whose breaker closed with a `ramp_duration` gets its weight times the ramp's share
//! (10% rising to all, `layers::breaker::ramp`), read from the same published state; the rest
//! goes to the others, and its breaker admits every call the split sends it
//! (`RampBy::Split`) instead of also refusing the share beyond the ramp with a 503.
//!
//! The shift is logged once when a target's breaker leaves closed and once when it is closed
//! again, by whichever worker notices first (a compare-and-swap on the route's shared mask).

use crate::config::SplitTarget;
use crate::layers::breaker::hold::HoldMode;
use crate::layers::breaker::RampBy;
use crate::layers::rate_limit::RouteLimiter;
use crate::layers::retry::RetryPolicy;
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::stack::{self, RouteStack};
use crate::upstream::{Upstream, WorkerUpstream};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// A ramp share of 1 (full weight), in 1/65536 units: weights stay integers.
const SHARE_ONE: f64 = 65536.0;

/// One target of a split, as every worker shares it.
pub struct Target {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    /// The route's request metrics labelled with this target's upstream.
    pub metrics: Arc<RouteMetrics>,
}

/// A route's split, shared by every worker.
pub struct Split {
    route: Arc<str>,
    pub targets: Box<[Target]>,
    /// Bit `i` set: target `i`'s breaker was seen not closed (open or probing); what the shift
    /// log last said.
    logged: AtomicU64,
}

impl Split {
    /// `previous` (the same route before a reload) passes on what was already logged, so a
    /// reload does not announce a shift again.
    pub fn new(
        route: &str,
        config: &[SplitTarget],
        upstreams: &[Arc<Upstream>],
        previous: Option<&Split>,
        metrics: &Metrics,
    ) -> Result<Split, String> {
        let targets = config
            .iter()
            .map(|t| {
                let upstream = upstreams
                    .iter()
                    .find(|u| *u.name == *t.upstream)
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "route \"{route}\" splits to unknown upstream \"{}\"",
                            t.upstream
                        )
                    })?;
                Ok(Target {
                    metrics: Arc::new(RouteMetrics::new(metrics, route, &t.upstream)),
                    upstream,
                    weight: t.weight,
                })
            })
            .collect::<Result<Box<[Target]>, String>>()?;
        let same_targets = previous.is_some_and(|p| {
            p.targets.len() == targets.len()
                && p.targets
                    .iter()
                    .zip(targets.iter())
                    .all(|(a, b)| a.upstream.name == b.upstream.name)
        });
        let logged = match previous {
            Some(p) if same_targets => p.logged.load(Ordering::Relaxed),
            _ => 0,
        };
        Ok(Split {
            route: route.into(),
            targets,
            logged: AtomicU64::new(logged),
        })
    }

    /// Bit `i` set: target `i` refuses every call at `now` (breaker open, time left, or an
    /// operator's override holding it open; one holding it closed admits whatever its state).
    #[inline]
    fn refusing(&self, now: Instant) -> u64 {
        let mut mask = 0;
        for (i, t) in self.targets.iter().enumerate() {
            let breaker = &t.upstream.breaker;
            let refuses = match breaker.hold.mode() {
                Some(HoldMode::Open) => true,
                Some(HoldMode::Closed) => false,
                None => breaker.published.refuses(now),
            };
            if refuses {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The target for a request arriving at `now`.
    #[inline]
    pub fn pick(&self, now: Instant) -> usize {
        let refusing = self.refusing(now);
        self.note_shift();
        let weights = self.weights(refusing, now);
        let total: u64 = weights.clone().sum();
        choose(weights, fastrand::u64(..total.max(1)))
    }

    /// Each target's weight for the next pick, given who refuses: 0 for a refusing target,
    /// `weight × ramp share` for the others; the configured weights when that leaves nothing.
    fn weights(&self, refusing: u64, now: Instant) -> impl Iterator<Item = u64> + Clone + '_ {
        let scaled = move |i: usize, t: &Target| {
            if refusing & (1 << i) != 0 {
                0
            } else {
                // In 0..=SHARE_ONE: the cast cannot truncate meaningfully.
                let share = (t.upstream.breaker.published.ramp_share(now) * SHARE_ONE) as u64;
                u64::from(t.weight) * share
            }
        };
        let any = self
            .targets
            .iter()
            .enumerate()
            .any(|(i, t)| scaled(i, t) > 0);
        self.targets.iter().enumerate().map(move |(i, t)| {
            if any {
                scaled(i, t)
            } else {
                u64::from(t.weight)
            }
        })
    }

    /// Logs a target's breaker leaving closed (its share moves) or closing again, once.
    #[inline]
    fn note_shift(&self) {
        let mut not_closed = 0u64;
        for (i, t) in self.targets.iter().enumerate() {
            if !t.upstream.breaker.published.is_closed() {
                not_closed |= 1 << i;
            }
        }
        let logged = self.logged.load(Ordering::Relaxed);
        if logged == not_closed
            || self
                .logged
                .compare_exchange(logged, not_closed, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for (i, t) in self.targets.iter().enumerate() {
            let bit = 1 << i;
            if not_closed & bit != 0 && logged & bit == 0 {
                tracing::warn!(
                    route = %self.route,
                    upstream = %t.upstream.name,
                    "split of route {}: {}",
                    self.route,
                    self.shift_words(i, not_closed)
                );
            } else if not_closed & bit == 0 && logged & bit != 0 {
                tracing::info!(
                    route = %self.route,
                    upstream = %t.upstream.name,
                    "split of route {}: {}: breaker closed, it gets its {} again",
                    self.route,
                    t.upstream.name,
                    percent(t.weight, self.total_weight())
                );
            }
        }
    }

    fn total_weight(&self) -> u64 {
        self.targets.iter().map(|t| u64::from(t.weight)).sum()
    }

    /// "canary: breaker open, its 5% goes to stable", for target `i` with the targets in `out`
    /// not taking traffic.
    fn shift_words(&self, i: usize, out: u64) -> String {
        let Some(t) = self.targets.get(i) else {
            return String::new();
        };
        let share = percent(t.weight, self.total_weight());
        let mut takers = String::new();
        for (j, o) in self.targets.iter().enumerate() {
            if out & (1 << j) == 0 {
                if !takers.is_empty() {
                    takers.push_str(", ");
                }
                takers.push_str(&o.upstream.name);
            }
        }
        if takers.is_empty() {
            format!(
                "{}: breaker open, and so are all the others: configured weights kept ({share})",
                t.upstream.name
            )
        } else {
            format!(
                "{}: breaker open, its {share} goes to {takers}",
                t.upstream.name
            )
        }
    }

    /// What `/status` shows: each target with its configured and effective share, and the
    /// shift in words.
    pub fn status(&self, now: Instant) -> serde_json::Value {
        let refusing = self.refusing(now);
        let effective: Vec<u64> = self.weights(refusing, now).collect();
        let effective_total: u64 = effective.iter().sum();
        let total = self.total_weight();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .zip(&effective)
            .enumerate()
            .map(|(i, (t, eff))| {
                let state = t.upstream.breaker.kind(now).as_str();
                serde_json::json!({
                    "upstream": &*t.upstream.name,
                    "weight": t.weight,
                    "breaker": state,
                    "configured_percent": share(u64::from(t.weight), total),
                    "effective_percent": share(*eff, effective_total),
                    "ramp_share": t.upstream.breaker.published.ramp_share(now),
                    "taking_traffic": refusing & (1 << i) == 0 || refusing.count_ones() as usize == self.targets.len(),
                })
            })
            .collect();
        let mut shift = String::new();
        for i in 0..self.targets.len() {
            if refusing & (1 << i) != 0 {
                if !shift.is_empty() {
                    shift.push_str("; ");
                }
                let _ = write!(shift, "{}", self.shift_words(i, refusing));
            }
        }
        serde_json::json!({
            "targets": targets,
            "shift": (!shift.is_empty()).then_some(shift),
        })
    }
}

/// One split target as a worker runs it: its own stack over its own upstream.
pub struct WorkerTarget {
    pub stack: RouteStack,
    pub upstream: Arc<WorkerUpstream>,
    pub metrics: Arc<RouteMetrics>,
}

/// A worker's stacks for a split's targets, over the worker's handles on the upstreams, with
/// the route's limiter and retry policy (shared by every target).
pub fn worker_targets(
    split: &Split,
    upstreams: &[Arc<WorkerUpstream>],
    limiter: Option<&Arc<RouteLimiter>>,
    retry: Option<&Arc<RetryPolicy>>,
) -> Box<[WorkerTarget]> {
    split
        .targets
        .iter()
        .map(|t| {
            let upstream = upstreams
                .iter()
                .find(|u| Arc::ptr_eq(&u.0, &t.upstream))
                .cloned()
                .unwrap_or_else(|| Arc::new(crate::shard::Local(t.upstream.clone())));
            let metrics = Arc::new(RouteMetrics::clone(&t.metrics));
            WorkerTarget {
                stack: stack::build(&upstream, limiter, retry, &metrics, RampBy::Split),
                upstream,
                metrics,
            }
        })
        .collect()
}

/// The target of a split route for a request arriving at `now`, among this worker's `targets`
/// for it; `None` for a route with one upstream.
#[inline]
pub fn pick<'a>(
    split: Option<&Split>,
    targets: &'a [WorkerTarget],
    now: Instant,
) -> Option<&'a WorkerTarget> {
    targets.get(split?.pick(now))
}

/// `part` of `total` in percent, rounded to 0.1.
fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / total as f64).round() / 10.0
}

/// "5%", "33.3%".
fn percent(part: u32, total: u64) -> String {
    let p = share(u64::from(part), total);
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// The index `r` lands on when the weights are laid end to end (`r < sum`); the last index
/// with a weight when `r` is beyond them.
#[inline]
pub fn choose(weights: impl Iterator<Item = u64>, mut r: u64) -> usize {
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if w == 0 {
            continue;
        }
        if r < w {
            return i;
        }
        r -= w;
        last = i;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BreakerConfig, UpstreamConfig};
    use crate::layers::breaker::state::BreakerState;
    use std::time::Duration;

    #[test]
    fn choose_lays_weights_end_to_end() {
        let w = [95u64, 5];
        assert_eq!(choose(w.iter().copied(), 0), 0);
        assert_eq!(choose(w.iter().copied(), 94), 0);
        assert_eq!(choose(w.iter().copied(), 95), 1);
        assert_eq!(choose(w.iter().copied(), 99), 1);
        // Zero weights are never chosen, whatever r is.
        let w = [0u64, 3, 0, 1];
        let picks: Vec<usize> = (0..4).map(|r| choose(w.iter().copied(), r)).collect();
        assert_eq!(picks, [1, 1, 1, 3]);
        assert_eq!(choose(w.iter().copied(), 100), 3);
    }

    fn upstream(name: &str) -> Arc<Upstream> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let config = UpstreamConfig {
            name: name.into(),
            endpoints: vec!["127.0.0.1:1".into()],
            endpoint_weights: vec![1],
            balance: crate::config::Balance::P2c,
            connect_timeout: Duration::from_secs(1),
            protocol: crate::config::UpstreamProtocol::Http1,
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle_per_endpoint: 1,
            tls: None,
            breaker: BreakerConfig::default(),
            outlier: Default::default(),
            health_check: None,
            max_response_header_bytes: 65536,
            max_response_headers: 100,
            dns_refresh: None,
        };
        match Upstream::new(&config, &metrics) {
            Ok(u) => Arc::new(u),
            Err(e) => panic!("{e}"),
        }
    }

    fn split(targets: &[(&str, u32)]) -> Split {
        let ups: Vec<Arc<Upstream>> = targets.iter().map(|(n, _)| upstream(n)).collect();
        let config: Vec<SplitTarget> = targets
            .iter()
            .map(|(n, w)| SplitTarget {
                upstream: n.to_string(),
                weight: *w,
            })
            .collect();
        match Split::new("api", &config, &ups, None, &crate::metrics::Metrics::new()) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Where 1000 evenly spaced draws land, as a deterministic stand-in for the RNG: each
    /// target's share in per mille.
    fn counts(s: &Split, now: Instant) -> Vec<u64> {
        let refusing = s.refusing(now);
        let total: u64 = s.weights(refusing, now).sum();
        let mut c = vec![0; s.targets.len()];
        for k in 0..1000u128 {
            let r = (u128::from(total) * k / 1000) as u64;
            c[choose(s.weights(refusing, now), r)] += 1;
        }
        c
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_target_gives_its_share_to_the_others_until_its_time_runs_out() {
        let s = split(&[("stable", 90), ("canary", 5), ("spare", 5)]);
        let now = Instant::now();
        let canary = |state| s.targets[1].upstream.breaker.published.publish(&state);
        assert_eq!(counts(&s, now), [900, 50, 50]);
        canary(BreakerState::Open {
            until: now + Duration::from_secs(10),
        });
        // Its 5 go to the others in proportion to their weights: 90/95 and 5/95.
        assert_eq!(counts(&s, now), [948, 0, 52]);
        let status = s.status(now);
        assert_eq!(
            status["shift"],
            "canary: breaker open, its 5% goes to stable, spare"
        );
        assert_eq!(status["targets"][1]["effective_percent"], 0.0);
        assert_eq!(status["targets"][0]["effective_percent"], 94.7);
        // Open time over: the next calls are half-open trials at the normal share.
        assert_eq!(counts(&s, now + Duration::from_secs(10)), [900, 50, 50]);
        canary(BreakerState::HalfOpen {
            admitted: 1,
            succeeded: 0,
        });
        assert_eq!(counts(&s, now), [900, 50, 50]);
    }

    #[tokio::test(start_paused = true)]
    async fn every_target_open_falls_back_to_the_configured_weights() {
        let s = split(&[("stable", 95), ("canary", 5)]);
        let now = Instant::now();
        for t in s.targets.iter() {
            t.upstream.breaker.published.publish(&BreakerState::Open {
                until: now + Duration::from_secs(10),
            });
        }
        assert_eq!(counts(&s, now), [950, 50]);
        // The random pick agrees with the deterministic one on where weight 0 can land.
        for _ in 0..100 {
            assert!(s.pick(now) < 2);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ramping_target_gets_its_weight_times_the_ramp_share() {
        let s = split(&[("stable", 50), ("canary", 50)]);
        let now = Instant::now();
        let ramp = |share_at: Instant| {
            s.targets[1]
                .upstream
                .breaker
                .published
                .publish_ramp(Some((share_at, Duration::from_secs(30))))
        };
        // Just closed: 10% of its weight (5 of 55), the rest to stable.
        ramp(now);
        let c = counts(&s, now);
        assert!((90..=92).contains(&c[1]), "{c:?}");
        // A third of the way: 40% (20 of 70).
        let later = now + Duration::from_secs(10);
        let c = counts(&s, later);
        assert!((285..=287).contains(&c[1]), "{c:?}");
        // Over: its whole half again.
        assert_eq!(counts(&s, now + Duration::from_secs(30)), [500, 500]);
        let status = s.status(later);
        let share = status["targets"][1]["ramp_share"].as_f64().unwrap();
        assert!((share - 0.4).abs() < 1e-6, "{status}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_shift_is_logged_once_each_way() {
        let s = split(&[("stable", 95), ("canary", 5)]);
        let now = Instant::now();
        let canary = |state| s.targets[1].upstream.breaker.published.publish(&state);
        s.note_shift();
        assert_eq!(s.logged.load(Ordering::Relaxed), 0);
        canary(BreakerState::Open {
            until: now + Duration::from_secs(1),
        });
        s.pick(now);
        assert_eq!(s.logged.load(Ordering::Relaxed), 0b10);
        // Half-open still counts as shifted: the end is logged when the breaker closes.
        canary(BreakerState::HalfOpen {
            admitted: 0,
            succeeded: 0,
        });
        s.pick(now);
        assert_eq!(s.logged.load(Ordering::Relaxed), 0b10);
        canary(BreakerState::Closed);
        s.pick(now);
        assert_eq!(s.logged.load(Ordering::Relaxed), 0);
    }
}
