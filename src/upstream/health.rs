//! Active health checks: `GET path` on every endpoint each `interval`; an endpoint turns unhealthy
//! after `unhealthy_threshold` failed checks in a row and healthy again after `healthy_threshold`
//! passes. Unhealthy endpoints get no traffic. The task holds only a weak reference, so it ends by
//! itself when a reload drops the upstream.

use super::Upstream;
use crate::body::RequestBody;
use http::{header, HeaderValue, Request};
use std::sync::atomic::Ordering;
use std::sync::Weak;

pub(super) fn spawn(upstream: Weak<Upstream>) {
    tokio::spawn(async move {
        let Some(hc) = upstream
            .upgrade()
            .and_then(|u| u.config.health_check.clone())
        else {
            return;
        };
        let n = upstream.upgrade().map(|u| u.endpoints.len()).unwrap_or(0);
        let mut passes = vec![0u32; n];
        let mut fails = vec![0u32; n];
        let mut tick = tokio::time::interval(hc.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(u) = upstream.upgrade() else { return };
            let checks = (0..n).map(|i| {
                let u = u.clone();
                let path = hc.path.clone();
                async move {
                    let ep = &u.endpoints[i];
                    let mut req = Request::get(path.as_str()).body(RequestBody::empty()).ok()?;
                    if let Ok(v) = HeaderValue::from_str(&ep.address) {
                        req.headers_mut().insert(header::HOST, v);
                    }
                    req.headers_mut()
                        .insert(header::USER_AGENT, HeaderValue::from_static("levee-health-check"));
                    let res = tokio::time::timeout(hc.timeout, u.client.send(crate::call::CallRequest::new(req), i, &ep.authority, &Default::default())).await;
                    Some(matches!(res, Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()))
                }
            });
            let results = futures_join_all(checks).await;
            for (i, ok) in results.into_iter().enumerate() {
                let ok = ok.flatten().unwrap_or(false);
                let ep = &u.endpoints[i];
                let was = ep.healthy.load(Ordering::Relaxed);
                if ok {
                    passes[i] += 1;
                    fails[i] = 0;
                } else {
                    fails[i] += 1;
                    passes[i] = 0;
                }
                let now_healthy = if was {
                    fails[i] < hc.unhealthy_threshold
                } else {
                    passes[i] >= hc.healthy_threshold
                };
                if now_healthy != was {
                    ep.healthy.store(now_healthy, Ordering::Relaxed);
                    if now_healthy {
                        u.slow_start.restart(i, tokio::time::Instant::now());
                    }
                    if let Some(g) = u.metrics.healthy.get(i) {
                        g.set(i64::from(now_healthy));
                    }
                    tracing::info!(
                        upstream = %u.name,
                        endpoint = %ep.address,
                        healthy = now_healthy,
                        "health check: endpoint is now {}",
                        if now_healthy { "healthy" } else { "unhealthy" }
                    );
                }
            }
        }
    });
}

/// Runs the checks of one round concurrently, so one stalled endpoint cannot delay the others.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<Option<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.ok());
    }
    out
}
