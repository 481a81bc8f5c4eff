//! The probe that gates a breaker's half-open (`probe_path`, or the health check's path): when
//! the open time ends, one `GET` to one endpoint of the upstream, and only a pass (2xx or 3xx
//! within the health check's `timeout`, 1s without one) lets the trial calls through. One task
//! per upstream, on the control plane, whatever the number of workers: the breaker is shared, and
//! [`CircuitBreaker::begin_probe`](crate::layers::breaker::CircuitBreaker::begin_probe) hands out
//! one probe per open period. The task holds a weak reference and ends when a reload drops the
//! upstream.

use super::Upstream;
use crate::body::RequestBody;
use crate::config::UpstreamConfig;
use crate::layers::breaker::state::{BreakerSettings, ProbeOutcome};
use http::{header, HeaderValue, Request};
use std::sync::Weak;
use std::time::Duration;
use tokio::time::Instant;

/// A probe's timeout without a health check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an idle task looks at its breaker while nothing is due (closed, half-open): a
/// trip sets a due time this soon at the latest, far below any sensible `open_duration`.
const IDLE_LOOK: Duration = Duration::from_millis(250);

/// The breaker's settings with the path it probes resolved: `probe_path`, else the active
/// health check's path, else none (half-open is not gated).
pub fn breaker_settings(config: &UpstreamConfig) -> BreakerSettings {
    let mut settings = config.breaker.settings.clone();
    if settings.probe_path.is_none() {
        settings.probe_path = config.health_check.as_ref().map(|h| h.path.clone());
    }
    settings
}

pub(super) fn spawn(upstream: Weak<Upstream>) {
    tokio::spawn(async move {
        let mut next_endpoint = 0usize;
        loop {
            let Some(u) = upstream.upgrade() else { return };
            let now = Instant::now();
            let Some(ticket) = u.breaker.begin_probe(now) else {
                let wake = u
                    .breaker
                    .probe_due()
                    .map_or(now + IDLE_LOOK, |due| due.min(now + IDLE_LOOK));
                drop(u);
                tokio::time::sleep_until(wake).await;
                continue;
            };
            let outcome = probe(&u, &mut next_endpoint).await;
            u.breaker.finish_probe(ticket, &outcome, Instant::now());
        }
    });
}

/// One probe: to the endpoint the balancer would pick, or (all out) the next one in turn.
async fn probe(u: &Upstream, next_endpoint: &mut usize) -> ProbeOutcome {
    let n = u.endpoints.len();
    let Some(path) = breaker_settings(&u.config).probe_path else {
        return failed("no probe path".into());
    };
    if n == 0 {
        return failed("no endpoints".into());
    }
    let i = u.pick(None, Instant::now()).unwrap_or(*next_endpoint % n);
    *next_endpoint = next_endpoint.wrapping_add(1);
    let ep = &u.endpoints[i];
    let Ok(mut req) = Request::get(path.as_str()).body(RequestBody::empty()) else {
        return failed("invalid probe path".into());
    };
    if let Ok(v) = HeaderValue::from_str(&ep.address) {
        req.headers_mut().insert(header::HOST, v);
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("levee-breaker-probe"),
    );
    let timeout = u
        .config
        .health_check
        .as_ref()
        .map_or(PROBE_TIMEOUT, |h| h.timeout);
    let unbudgeted = Default::default();
    let sent = u.client.send(
        crate::call::CallRequest::new(req),
        i,
        &ep.authority,
        &unbudgeted,
    );
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(resp)) => {
            let status = resp.status();
            ProbeOutcome {
                passed: status.is_success() || status.is_redirection(),
                detail: status.as_u16().to_string(),
            }
        }
        Ok(Err(e)) => failed(format!("{} to {}", e.kind(), ep.address)),
        Err(_) => failed(format!("timed out after {}", humantime_ms(timeout))),
    }
}

fn failed(detail: String) -> ProbeOutcome {
    ProbeOutcome {
        passed: false,
        detail,
    }
}

/// "1s", "500ms": the timeout as written in a config.
fn humantime_ms(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn upstream_config(extra: &str) -> UpstreamConfig {
        let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:1\"]\n{extra}\n");
        parse("t.toml", &text, Path::new("."))
            .unwrap()
            .upstreams
            .remove(0)
    }

    #[test]
    fn the_probe_path_is_probe_path_else_the_health_checks_else_none() {
        let path = |extra: &str| breaker_settings(&upstream_config(extra)).probe_path;
        assert_eq!(path(""), None);
        assert_eq!(
            path("[upstream.health_check]\npath = \"/ready\""),
            Some("/ready".to_owned())
        );
        assert_eq!(
            path("[upstream.health_check]\npath = \"/ready\"\n[upstream.circuit_breaker]\nprobe_path = \"/deep\""),
            Some("/deep".to_owned())
        );
        // The config keeps what was written; only the breaker gets the resolved path.
        let c = upstream_config("[upstream.health_check]\npath = \"/ready\"");
        assert_eq!(c.breaker.settings.probe_path, None);
    }
}
