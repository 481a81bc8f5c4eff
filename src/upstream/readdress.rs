//! An upstream whose definition is unchanged but whose endpoint names resolved to other
//! addresses (`crate::dns`): the breaker and history go on, and each address that stays keeps
//! its health, counters and outlier state; added addresses start fresh (and slow).

use super::Upstream;
use crate::config::UpstreamConfig;
use crate::layers::outlier::ejection::OutlierDetector;
use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Upstream {
    /// `old` with the endpoints of `config` (its definition with the names resolved).
    pub fn readdressed(
        old: &Upstream,
        config: &UpstreamConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Upstream, String> {
        let mut fresh = Upstream::new(config, metrics)?;
        fresh.breaker = old.breaker.clone();
        fresh.history = old.history.clone();
        let from: Vec<Option<usize>> = fresh
            .endpoints
            .iter()
            .map(|e| old.endpoints.iter().position(|o| o.address == e.address))
            .collect();
        fresh.outlier = std::sync::Arc::new(OutlierDetector::carried(
            config.outlier,
            &old.outlier,
            &from,
        ));
        for (ep, src) in fresh.endpoints.iter().zip(&from) {
            let Some(o) = src.and_then(|j| old.endpoints.get(j)) else {
                continue;
            };
            ep.healthy
                .store(o.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
            ep.requests
                .store(o.requests.load(Ordering::Relaxed), Ordering::Relaxed);
            ep.failures
                .store(o.failures.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        fresh.refresh_endpoint_gauges(tokio::time::Instant::now());
        fresh.slow_start.mark_added(
            &config.endpoints,
            &old.config.endpoints,
            tokio::time::Instant::now(),
        );
        Ok(fresh)
    }
}
