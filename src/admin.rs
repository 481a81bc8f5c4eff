//! The admin listener: the dashboard at `/`, `/healthz`, `/ready`, `/metrics`, `/status`,
//! `GET /config`, `POST /reload`, and operators' overrides under `/overrides` ([`overrides`]).
//! It binds loopback by default; actions that change traffic are refused on other addresses
//! unless `[admin] allow_actions = true`.
//!
//! Hardened like the proxy listeners, since a flood of idle admin connections once exhausted
//! the process's file descriptors and broke the proxy too: a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] (idle keep-alive connections included), and at most
//! [`MAX_CONNECTIONS`] are served at once; further ones wait in the kernel's accept queue, not
//! holding a descriptor, until one ends. Only requests whose `Host` is an IP address,
//! `localhost` or a name in `[admin] allowed_hosts` are answered (403 otherwise): a page on
//! another site that rebinds its DNS name to 127.0.0.1 sends its own name as `Host`.

mod overrides;

pub use overrides::AdminPeer;

use crate::runtime::Levee;
use crate::shared::Shared;
use crate::status;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client has to send a request head, and how long a keep-alive connection may idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// The live dashboard: one self-contained page that polls `/status`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

pub fn spawn(listener: TcpListener, shared: Arc<Shared>, levee: Weak<Levee>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    overrides::spawn_expiry(&shared);
    tokio::spawn(async move {
        loop {
            // Wait for a free slot before accepting: a waiting client costs no descriptor.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if levee.strong_count() == 0 {
                return;
            }
            let shared = shared.clone();
            let levee = levee.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(AdminPeer(peer));
                    serve(shared.clone(), levee.clone(), req)
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}

/// A browser on the operator's machine can be made to POST to a loopback admin listener by any
/// web page. Browsers mark such requests with an `Origin` of the other site; the dashboard's own
/// requests carry the admin listener's origin, and curl or scripts send none.
fn is_cross_site(req: &Request<Incoming>) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    !same
}

/// Why an action (reload, setting or ending an override) is refused for this request, if it is:
/// on a non-loopback admin listener without `[admin] allow_actions`, or from another site.
fn action_refused(
    req: &Request<Incoming>,
    admin: &crate::config::AdminConfig,
) -> Option<&'static str> {
    if !(admin.bind.ip().is_loopback() || admin.allow_actions) {
        Some("actions over a non-loopback admin listener need [admin] allow_actions = true")
    } else if is_cross_site(req) {
        Some("cross-site request refused: act from the dashboard or a non-browser client")
    } else {
        None
    }
}

/// The host a request names this listener by (DNS-rebinding protection checks it): the
/// absolute-form target's, else the `Host` header's.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// Whether `host` (a `Host` value, port and all) is an IP address, `localhost` or allowed.
fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The dashboard, with a policy that lets it talk to this listener and nothing else.
fn dashboard() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_HTML);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn serve(
    shared: Arc<Shared>,
    levee: Weak<Levee>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    if !host_allowed(
        request_host(&req),
        &shared.snapshot.load().config.admin.allowed_hosts,
    ) {
        return Ok(text(
            StatusCode::FORBIDDEN,
            PLAIN,
            "this admin listener answers requests for an IP address, localhost or a name in [admin] allowed_hosts\n",
        ));
    }
    if overrides::handles(req.uri().path()) {
        let refused = action_refused(&req, &shared.snapshot.load().config.admin);
        return Ok(overrides::serve(&shared, req, refused).await);
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => dashboard(),
        (&Method::GET, "/healthz") => text(StatusCode::OK, PLAIN, "ok\n"),
        (&Method::GET, "/ready") => {
            if shared.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, PLAIN, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let now = tokio::time::Instant::now();
            for u in &shared.snapshot.load().upstreams {
                u.refresh_endpoint_gauges(now);
            }
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.encode(),
            )
        }
        (&Method::GET, "/status") => {
            text(StatusCode::OK, JSON, status::render(&shared).to_string())
        }
        // The running config as loaded, secrets removed (`crate::config::shown`).
        (&Method::GET, "/config") => text(
            StatusCode::OK,
            "application/toml; charset=utf-8",
            crate::config::shown::to_toml(&shared.snapshot.load().config.shown),
        ),
        (&Method::POST, "/reload") => {
            if let Some(why) = action_refused(&req, &shared.snapshot.load().config.admin) {
                text(StatusCode::FORBIDDEN, PLAIN, format!("{why}\n"))
            } else {
                match levee.upgrade() {
                    None => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "shutting down\n"),
                    Some(levee) => match levee.reload().await {
                        Ok(version) => text(
                            StatusCode::OK,
                            JSON,
                            serde_json::json!({ "ok": true, "version": version }).to_string(),
                        ),
                        Err(e) => text(
                            StatusCode::BAD_REQUEST,
                            JSON,
                            serde_json::json!({
                                "ok": false,
                                "errors": e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                            })
                            .to_string(),
                        ),
                    },
                }
            }
        }
        (_, "/" | "/healthz" | "/ready" | "/metrics" | "/status" | "/config") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n",
        ),
        (_, "/reload") => text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "use POST /reload\n"),
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    };
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_addresses_localhost_and_allowed_names_pass() {
        let allowed = vec!["admin.internal".to_string()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9901",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9901",
            "localhost",
            "LocalHost:9901",
            "localhost.:9901",
            "admin.internal:9901",
            "Admin.Internal",
        ] {
            assert!(host_allowed(Some(ok), &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9901",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1]x",
            "[::1",
            "127.0.0.1:x",
            "",
        ] {
            assert!(!host_allowed(Some(bad), &allowed), "{bad}");
        }
        assert!(!host_allowed(None, &allowed), "no Host at all");
    }
}
