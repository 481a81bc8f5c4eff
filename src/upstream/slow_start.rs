//! Endpoint slow start (Envoy's): with `ramp_duration` set, an endpoint that comes back (from an
//! ejection, from failing health checks, or added by a reload next to endpoints that were
//! already serving) gets a balancing weight that grows from 10% to full over `ramp_duration`
//! ([`ramp_share`]), so it is not handed its full share of traffic while it warms up.
//!
//! While any usable endpoint ramps, the balancer picks at random in proportion to the weights
//! (ignoring outstanding requests for that short while, as Envoy's weighted round robin does);
//! otherwise it balances as configured. Without `ramp_duration` this costs one branch.

use super::Upstream;
use crate::layers::breaker::ramp::ramp_share;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// When each endpoint last came back, as nanoseconds since `origin` plus one (0: never).
pub struct SlowStart {
    origin: Instant,
    back_at: Box<[AtomicU64]>,
}

impl SlowStart {
    pub fn new(endpoints: usize) -> Self {
        SlowStart {
            origin: Instant::now(),
            back_at: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Endpoint `i` came back into service at `now` (healthy again, or added).
    pub fn restart(&self, i: usize, now: Instant) {
        if let Some(at) = self.back_at.get(i) {
            let ns = now.saturating_duration_since(self.origin).as_nanos();
            at.store(
                u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1,
                Ordering::Relaxed,
            );
        }
    }

    fn back_at(&self, i: usize) -> Option<Instant> {
        let ns = self.back_at.get(i)?.load(Ordering::Relaxed);
        (ns > 0).then(|| self.origin + Duration::from_nanos(ns - 1))
    }

    /// After a reload rebuilt the upstream: endpoints `old` did not have start slow at `now`.
    pub fn mark_added(&self, endpoints: &[String], old: &[String], now: Instant) {
        for (i, e) in endpoints.iter().enumerate() {
            if !old.contains(e) {
                self.restart(i, now);
            }
        }
    }
}

impl Upstream {
    /// Endpoint `i`'s balancing weight at `now`, 0.1..=1.0: the ramp's share since it last came
    /// back; 1.0 without `ramp_duration`.
    pub fn endpoint_weight(&self, i: usize, now: Instant) -> f64 {
        let Some(ramp) = self.config.breaker.settings.ramp_duration else {
            return 1.0;
        };
        let back = [self.slow_start.back_at(i), self.outlier.returned_at(i, now)]
            .into_iter()
            .flatten()
            .filter(|t| *t <= now)
            .max();
        back.map_or(1.0, |t| ramp_share(now - t, ramp))
    }

    /// While some usable endpoint ramps up, a pick in proportion to the weights; `None` when
    /// none ramps (or none is usable), for the configured balancer to pick as usual.
    pub(super) fn pick_slow_start(
        &self,
        usable: &dyn Fn(usize) -> bool,
        now: Instant,
    ) -> Option<usize> {
        self.config.breaker.settings.ramp_duration?;
        let weight = |i: usize| {
            if usable(i) {
                self.endpoint_weight(i, now)
            } else {
                0.0
            }
        };
        let n = self.endpoints.len();
        if (0..n).all(|i| !usable(i) || weight(i) >= 1.0) {
            return None;
        }
        weighted_choice((0..n).map(weight), fastrand::f64())
    }
}

/// The index whose share of the weights' running total holds `r` (0.0..1.0); `None` when
/// every weight is 0. Pure, so tests choose `r`.
pub fn weighted_choice(weights: impl Iterator<Item = f64> + Clone, r: f64) -> Option<usize> {
    let total: f64 = weights.clone().sum();
    if total <= 0.0 {
        return None;
    }
    let mut target = r.clamp(0.0, 1.0) * total;
    let mut last = None;
    for (i, w) in weights.enumerate() {
        if w <= 0.0 {
            continue;
        }
        last = Some(i);
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::metrics::Metrics;
    use std::path::Path;
    use std::sync::Arc;

    const SEC: Duration = Duration::from_secs(1);

    fn upstream(extra: &str) -> Upstream {
        let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[upstream.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"10s\"\nmax_ejection_percent = 50\n[upstream.circuit_breaker]\n{extra}\n");
        let config = parse("t.toml", &text, Path::new(".")).unwrap();
        Upstream::new(&config.upstreams[0], &Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn weighted_choice_splits_the_unit_interval_by_weight() {
        let w = [1.0, 0.25, 0.0, 0.25];
        let pick = |r| weighted_choice(w.iter().copied(), r);
        assert_eq!(pick(0.0), Some(0));
        assert_eq!(pick(0.66), Some(0));
        assert_eq!(pick(0.67), Some(1));
        assert_eq!(pick(0.83), Some(1));
        assert_eq!(pick(0.84), Some(3));
        assert_eq!(pick(1.0), Some(3));
        assert_eq!(weighted_choice([0.0, 0.0].into_iter(), 0.5), None);
    }

    /// An endpoint back from an ejection is weighted 10% at first, then more, then fully; the
    /// balancer's picks follow the weights.
    #[tokio::test(start_paused = true)]
    async fn an_endpoint_back_from_ejection_starts_slow() {
        let u = upstream("ramp_duration = \"30s\"");
        let t0 = Instant::now();
        u.judge_endpoint(1, true, t0);
        u.judge_endpoint(1, true, t0);
        assert!(u.outlier.is_ejected(1, t0));
        assert_eq!(u.endpoint_weight(0, t0), 1.0);
        let back = t0 + 10 * SEC;
        assert!(!u.outlier.is_ejected(1, back));
        assert!((u.endpoint_weight(1, back) - 0.1).abs() < 1e-9);
        assert!((u.endpoint_weight(1, back + 15 * SEC) - 0.55).abs() < 1e-9);
        assert_eq!(u.endpoint_weight(1, back + 30 * SEC), 1.0);

        // Picks in proportion: 1 / 1.1 for the full one, 0.1 / 1.1 (9%) for the returning one.
        // 2000 picks: the expected 182 for endpoint 1 has a standard deviation of 13; 100..280
        // is over 6 of them either way.
        let picks = (0..2000).filter(|_| u.pick(None, back) == Some(1)).count();
        assert!((100..280).contains(&picks), "{picks}");
        // Half-way: 0.55 / 1.55 = 35%, i.e. 710 of 2000 (sd 21).
        let picks = (0..2000)
            .filter(|_| u.pick(None, back + 15 * SEC) == Some(1))
            .count();
        assert!((600..820).contains(&picks), "{picks}");
        // Ramp over: the configured balancer again, which spreads evenly.
        let picks = (0..2000)
            .filter(|_| u.pick(None, back + 30 * SEC) == Some(1))
            .count();
        assert!((800..1200).contains(&picks), "{picks}");
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_again_and_added_endpoints_start_slow_only_with_a_ramp() {
        let u = upstream("ramp_duration = \"20s\"");
        let now = Instant::now();
        u.slow_start.restart(0, now);
        assert!((u.endpoint_weight(0, now) - 0.1).abs() < 1e-9);
        assert_eq!(u.endpoint_weight(1, now), 1.0);

        let u = upstream("ramp_duration = \"20s\"");
        let endpoints = u.config.endpoints.clone();
        u.slow_start.mark_added(&endpoints, &endpoints[..1], now);
        assert_eq!(u.endpoint_weight(0, now), 1.0);
        assert!((u.endpoint_weight(1, now + 10 * SEC) - 0.55).abs() < 1e-9);

        let plain = upstream("");
        plain.slow_start.restart(0, now);
        assert_eq!(plain.endpoint_weight(0, now), 1.0);
        assert_eq!(plain.pick_slow_start(&|_| true, now), None);
    }
}
