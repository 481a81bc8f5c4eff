//! The entry point of every proxied request: pick the snapshot and route, check the request,
//! rewrite headers, run the route's stack, and turn the outcome into the client's response.

use crate::body::{ClientBody, RequestBody, ResponseBody};
use crate::call::Call;
use crate::conn::{ConnActivity, Upgraded};
use crate::error::ProxyError;
use crate::grpc;
use crate::metrics::status_class;
use crate::proxy::access_log::{self, AccessLog};
use crate::proxy::forward::{self, Peer};
use crate::proxy::framing::FramingAudit;
use crate::proxy::path;
use crate::proxy::request_id::{self, X_REQUEST_ID};
use crate::proxy::route::normalize_host;
use crate::proxy::split::{self, WorkerTarget};
use crate::rewind::Rewind;
use crate::snapshot::{ListenerRuntime, Route};
use crate::traffic::matcher::RequestView;
use crate::traffic::redirect::Requested;
use crate::traffic::rewrite::Vars;
use crate::upstream::WorkerUpstream;
use crate::worker::{Worker, WorkerRoute, WorkerSnapshot};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;
use tower::ServiceExt;

/// What a connection knows about itself, captured once at accept.
pub struct ConnContext {
    pub peer: SocketAddr,
    pub tls: bool,
    pub listener: Arc<ListenerRuntime>,
    /// Set on plaintext HTTP/1 connections, which are parked when idle (`crate::server::park`).
    pub activity: Option<Arc<ConnActivity>>,
    /// Set on HTTP/1 connections: which request heads had both `Content-Length` and
    /// `Transfer-Encoding`, which hyper resolves without telling (`crate::proxy::framing`).
    pub framing: Option<Arc<FramingAudit>>,
}

/// Serves one request; never fails (every failure is an HTTP answer) and never panics.
pub async fn handle(
    worker: Arc<Worker>,
    conn: Arc<ConnContext>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    // A parkable connection is parked only when nothing is in flight: the response holds this
    // token until it is sent, the request body another until it is read.
    let busy = conn
        .activity
        .as_ref()
        .map(|a| a.begin(forward::wants_close(req.version(), req.headers())));
    // A guard, not inc/dec: the future is dropped mid-way when the client goes away.
    let shared = &worker.shared;
    let in_flight = InFlight::new(&shared.metrics.in_flight);
    // levee's own answers to a gRPC request are gRPC answers.
    let grpc = grpc::is_grpc_request(req.headers());
    // The worker's own reference to the snapshot: no reference count shared with other cores.
    let snapshot = worker.snapshot();
    let log = access_log::enabled();
    let method = req.method().clone();
    let request_id = request_id::for_request(req.headers());
    let trusted = &conn.listener.config.trusted_proxies;
    let client = forward::client_ip(
        &Peer::new(conn.peer.ip(), conn.tls, trusted),
        req.headers(),
        trusted,
    );
    let path_for_log = if log {
        req.uri().path().to_string()
    } else {
        String::new()
    };
    // Everything before the upstream call is synchronous and consumes the request, so this
    // future holds a `Call` across its one wait instead of copies of the request at every
    // level (it was 3 KB, written afresh for every request).
    let h2 = req.version() == Version::HTTP_2;
    let routed = proxy(
        &snapshot,
        &conn,
        req.map(|body| {
            let body = ClientBody::new(body, conn.activity.as_ref());
            if h2 {
                body.http2()
            } else {
                body
            }
        }),
        started,
        log,
        grpc,
        &request_id,
    );
    // A split route's target for this request (`super::split`).
    let mut target: Option<&WorkerTarget> = None;
    let (resp, route, endpoint, host) = match routed {
        Routed::Done(outcome) => outcome,
        Routed::Call {
            route,
            local,
            call,
            upgrade,
            host,
            grpc_deadline,
        } => {
            target = split::pick(route.split.as_deref(), &local.split, call.started);
            let (stack, upstream) = match target {
                Some(t) => (&t.stack, &t.upstream),
                None => (&local.stack, &local.upstream),
            };
            match stack.clone().oneshot(call).await {
                Ok(answer) => match respond(route, upstream, answer, upgrade, grpc_deadline) {
                    Ok((resp, endpoint)) => (Ok(resp), Some(route), Some(endpoint), host),
                    Err(e) => (Err(e), Some(route), None, host),
                },
                Err(e) => (Err(e), Some(route), None, host),
            }
        }
    };
    drop(in_flight);

    let (mut resp, error_kind) = match resp {
        Ok(r) => (r, ""),
        Err(e) => {
            let kind = e.kind();
            shared.metrics.proxy_error(kind);
            if e.side() == crate::error::Side::Upstream {
                tracing::debug!(error = %e, "upstream failure");
            }
            let resp = if grpc {
                crate::proxy::respond::grpc_trailers_only(e)
            } else {
                crate::proxy::respond::error(e)
            };
            (resp, kind)
        }
    };
    if let Some(route) = route {
        route.config.rewrite.response_headers.apply(
            resp.headers_mut(),
            &Vars {
                client_ip: client,
                request_id: &request_id,
                route: &route.name,
                // A split route's picked target, else the route's upstream.
                upstream: target
                    .map(|t| &t.upstream.0)
                    .or(route.upstream.as_ref())
                    .map_or("", |u| &*u.name),
            },
        );
    }
    // On every answer, levee's own included.
    resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    if let Some(busy) = busy {
        resp.body_mut().hold(busy);
    }
    let status = resp.status().as_u16();
    if let Some(route) = route {
        let metrics = target.map_or(&route.metrics, |t| &t.metrics);
        metrics.requests[status_class(status)].inc();
        route.history.record(error_kind == "rate_limited");
        route
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
    }
    if log {
        let (route_name, upstream, endpoint) = match route {
            Some(r) => {
                let upstream = target.map(|t| &t.upstream.0).or(r.upstream.as_ref());
                (
                    r.name.to_string(),
                    upstream.map(|u| u.name.to_string()).unwrap_or_default(),
                    endpoint
                        .and_then(|i| upstream?.endpoints.get(i))
                        .map(|e| e.address.clone())
                        .unwrap_or_default(),
                )
            }
            None => Default::default(),
        };
        resp.body_mut().set_on_complete(Box::new(AccessLog {
            client,
            method,
            host: host.unwrap_or_default(),
            path: path_for_log,
            status,
            route: route_name,
            upstream,
            endpoint,
            error: error_kind,
            request_id: request_id.to_str().unwrap_or_default().to_string(),
            started,
        }));
    }
    Ok(resp)
}

/// Counts a request in `levee_in_flight_requests` for as long as it lives.
struct InFlight<'a>(&'a crate::metrics::ShardedGauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a crate::metrics::ShardedGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The answer, the route it took, the endpoint that gave it, and the request's host.
type Outcome<'a> = (
    Result<Response<ResponseBody>, ProxyError>,
    Option<&'a Route>,
    Option<usize>,
    Option<String>,
);

/// Where a request goes: answered already (refused, no route), or a call for a route's stack.
enum Routed<'a> {
    Done(Outcome<'a>),
    Call {
        route: &'a Route,
        /// The route's stack on this worker.
        local: &'a WorkerRoute,
        call: Call,
        upgrade: Option<ClientUpgrade>,
        host: Option<String>,
        /// The client's gRPC deadline (`grpc-timeout`), enforced on the response body too.
        grpc_deadline: Option<Instant>,
    },
}

fn proxy<'a>(
    snapshot: &'a WorkerSnapshot,
    conn: &ConnContext,
    mut req: Request<ClientBody>,
    started: Instant,
    log: bool,
    grpc: bool,
    request_id: &HeaderValue,
) -> Routed<'a> {
    let settings = &conn.listener.config;
    // Asked for every request, so the audit's count stays in step with the connection's.
    let conflicting_framing = conn
        .framing
        .as_ref()
        .is_some_and(|audit| audit.next_request_conflicts());
    if conflicting_framing && req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Routed::Done((
            Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            )),
            None,
            None,
            None,
        ));
    }
    if req.method() == Method::CONNECT {
        return Routed::Done((Err(ProxyError::MethodNotAllowed), None, None, None));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > settings.max_header_bytes {
        return Routed::Done((Err(ProxyError::HeadersTooLarge), None, None, None));
    }
    let raw_host = match request_host(&req) {
        Ok(h) => h,
        Err(e) => return Routed::Done((Err(e), None, None, None)),
    };
    let host: Cow<'_, str> = match raw_host
        .as_ref()
        .map(|h| h.to_str().ok().and_then(normalize_host))
    {
        Some(Some(h)) => h,
        Some(None) => {
            return Routed::Done((
                Err(ProxyError::BadRequest("malformed Host header")),
                None,
                None,
                None,
            ))
        }
        None if req.version() == Version::HTTP_10 => Cow::Borrowed(""),
        None => {
            return Routed::Done((
                Err(ProxyError::BadRequest("missing Host header")),
                None,
                None,
                None,
            ))
        }
    };
    if settings.normalize_path {
        // Routed on and forwarded alike: the upstream gets the path the route matched.
        let normalized = match path::normalize_path(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(p)) => Some(p),
            Err(why) => {
                return Routed::Done((
                    Err(ProxyError::BadRequest(why)),
                    None,
                    None,
                    Some(host.into_owned()),
                ))
            }
        };
        if let Some(p) = normalized {
            let uri = std::mem::take(req.uri_mut());
            match path::with_path(uri, &p) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    return Routed::Done((
                        Err(ProxyError::BadRequest("malformed path")),
                        None,
                        None,
                        Some(host.into_owned()),
                    ))
                }
            }
        }
    }
    let found = snapshot.router.find_request(
        &host,
        &RequestView {
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
        },
    );
    let Some((route, local)) =
        found.and_then(|i| Some((snapshot.routes.get(i)?, snapshot.stacks.get(i)?)))
    else {
        return Routed::Done((
            Err(ProxyError::NoRoute),
            None,
            None,
            Some(host.into_owned()),
        ));
    };
    // Kept only for the access log: no allocation per request when it is off.
    let host = log.then(|| host.into_owned());
    let raw_host = raw_host.unwrap_or(HeaderValue::from_static(""));
    // Redirects and direct responses: answered here, no upstream, no stack.
    let Some(local) = local.as_ref() else {
        let answer = route.config.answer.as_ref().map(|a| {
            a.respond(&Requested {
                tls: conn.tls,
                host: raw_host.to_str().unwrap_or_default(),
                path: req.uri().path(),
                query: req.uri().query(),
            })
            .map(ResponseBody::full)
        });
        return Routed::Done((answer.ok_or(ProxyError::NoRoute), Some(route), None, host));
    };
    match prepare(route, conn, req, &raw_host, started, grpc, request_id) {
        Ok((call, upgrade, grpc_deadline)) => Routed::Call {
            route,
            local,
            call,
            upgrade,
            host,
            grpc_deadline,
        },
        Err(e) => Routed::Done((Err(e), Some(route), None, host)),
    }
}

/// The host as the client sent it: the authority of an absolute-form (or HTTP/2) target wins
/// over the Host header, as RFC 9112 §3.2.2 requires, and is what the upstream gets as `Host`.
/// Two `Host` headers, or an HTTP/2 `host` that disagrees with `:authority`, are refused: levee
/// and the upstream could each believe a different one.
fn request_host(req: &Request<ClientBody>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("two Host headers"));
    }
    let Some(authority) = req.uri().authority() else {
        return Ok(host.cloned());
    };
    if req.version() == Version::HTTP_2
        && host.is_some_and(|h| {
            !h.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        })
    {
        return Err(ProxyError::BadRequest(
            "host header disagrees with :authority",
        ));
    }
    Ok(HeaderValue::from_str(authority.as_str()).ok())
}

/// The call for `route`'s stack: the request checked against the route's limits, its headers
/// rewritten for the upstream, the client side of an upgrade if it asks for one, and a gRPC
/// request's deadline.
fn prepare(
    route: &Route,
    conn: &ConnContext,
    mut req: Request<ClientBody>,
    raw_host: &HeaderValue,
    started: Instant,
    grpc: bool,
    request_id: &HeaderValue,
) -> Result<(Call, Option<ClientUpgrade>, Option<Instant>), ProxyError> {
    let settings = &conn.listener.config;
    let max_body = route.config.max_body;
    if let Some(max) = max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let upgrade = forward::is_upgrade_request(req.version(), req.headers());
    let client_upgrade = upgrade.then(|| match &conn.activity {
        Some(activity) => ClientUpgrade::Parkable(activity.clone()),
        None => ClientUpgrade::Hyper(hyper::upgrade::on(&mut req)),
    });

    let peer = Peer::new(conn.peer.ip(), conn.tls, &settings.trusted_proxies);
    let client_ip = forward::client_ip(&peer, req.headers(), &settings.trusted_proxies);
    let version = req.version();
    // An absolute-form target's authority replaces the client's Host (RFC 9112 §3.2.2).
    let host_from_target = req.uri().authority().is_some();
    let (mut parts, body) = req.into_parts();
    parts.extensions.clear();
    let mut upstream_req = Request::from_parts(
        parts,
        RequestBody::Stream {
            body,
            remaining: max_body,
        },
    );
    let headers = upstream_req.headers_mut();
    // gRPC servers require `te: trailers` over HTTP/2; the one value of a hop-by-hop header
    // that is forwarded, and only to HTTP/2 upstreams.
    let te_trailers = route
        .upstream
        .as_ref()
        .is_some_and(|u| u.config.protocol == crate::config::UpstreamProtocol::H2)
        && forward::te_accepts_trailers(headers);
    forward::strip_hop_by_hop(headers, upgrade);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // The client's deadline bounds the wait for the response head (the route's timeout still
    // applies if it is shorter), and then the whole response (`ResponseBody::grpc`).
    let grpc_deadline = if grpc {
        grpc::deadline(headers, started)
    } else {
        None
    };
    forward::add_forwarding_headers(headers, &peer, raw_host, version);
    if !raw_host.is_empty() && (host_from_target || !headers.contains_key(header::HOST)) {
        headers.insert(header::HOST, raw_host.clone());
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
    rewrite_for_upstream(route, &mut upstream_req, client_ip, request_id)?;

    let call = Call {
        req: crate::call::CallRequest::new(upstream_req),
        client_ip,
        started,
        // The route's `timeout`, from receiving the request to the upstream's response head,
        // across retries: set here once, enforced where a call can wait (`proxy/stack.rs`).
        deadline: grpc_deadline
            .map_or(crate::deadline::after(started, route.config.timeout), |d| {
                d.min(crate::deadline::after(started, route.config.timeout))
            }),
        endpoint: 0,
        avoid: None,
        picked: None,
    };
    Ok((call, client_upgrade, grpc_deadline))
}

/// The route's `host_rewrite`, `request_headers` and path rewrite, on the request as it goes
/// upstream (after levee's own forwarding headers, so an operator's `set` wins).
fn rewrite_for_upstream(
    route: &Route,
    req: &mut Request<RequestBody>,
    client_ip: std::net::IpAddr,
    request_id: &HeaderValue,
) -> Result<(), ProxyError> {
    let rewrite = &route.config.rewrite;
    if let Some(host) = &rewrite.host {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    rewrite.request_headers.apply(
        req.headers_mut(),
        &Vars {
            client_ip,
            request_id,
            route: &route.name,
            upstream: route.upstream.as_ref().map_or("", |u| &*u.name),
        },
    );
    if let Some(new_path) = rewrite
        .path
        .as_ref()
        .and_then(|p| p.apply(req.uri().path()))
    {
        let uri = std::mem::take(req.uri_mut());
        *req.uri_mut() =
            path::with_path(uri, &new_path).ok_or(ProxyError::BadRequest("malformed path"))?;
    }
    Ok(())
}

/// The client's response from the upstream's answer; a 101 starts the tunnel.
fn respond(
    route: &Route,
    upstream: &Arc<WorkerUpstream>,
    answer: crate::call::Answer,
    client_upgrade: Option<ClientUpgrade>,
    grpc_deadline: Option<Instant>,
) -> Result<(Response<ResponseBody>, usize), ProxyError> {
    let endpoint = answer.endpoint;
    let deferred = answer.deferred;
    let mut resp = answer.resp;
    // Only levee writes it: an upstream's copy would pass for levee's own verdict.
    resp.headers_mut().remove(forward::X_LEVEE_ERROR);

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::UpstreamReset(
                "upstream switched protocols unasked".into(),
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let idle = route.config.tunnel_idle_timeout;
        match client_upgrade {
            ClientUpgrade::Hyper(client_upgrade) => {
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            tunnel(TokioIo::new(client), upstream, idle).await
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
            }
            ClientUpgrade::Parkable(activity) => {
                // The connection loop sends the socket once hyper has written the 101.
                let (tx, rx) = tokio::sync::oneshot::channel::<Upgraded>();
                activity.expect_upgrade(tx);
                tokio::spawn(async move {
                    match tokio::join!(rx, upstream_upgrade) {
                        (Ok(client), Ok(upstream)) => {
                            let client = Rewind::new(client.stream, client.leftover);
                            tunnel(client, upstream, idle).await
                        }
                        (Err(_), _) => {
                            tracing::debug!("upgrade failed: the client connection ended first")
                        }
                        (_, Err(e)) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
            }
        }
        let (parts, _) = resp.into_parts();
        return Ok((Response::from_parts(parts, ResponseBody::empty()), endpoint));
    }

    let (mut parts, body) = resp.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers, false);
    // hyper writes the status line with the response's version and, for HTTP/1.0, ends the
    // connection after it. The upstream's version describes the upstream hop only: the client
    // gets levee's HTTP/1.1, with a close-delimited body re-framed as chunked and keep-alive
    // kept (hyper still answers an HTTP/1.0 client in HTTP/1.0).
    parts.version = Version::HTTP_11;
    let body = ResponseBody::upstream(body, route.config.timeout);
    // A deferred gRPC verdict judges a broken body itself; other bodies charge late failures.
    let body = match deferred {
        None => body.charge_failures_to(upstream.clone(), endpoint),
        Some(_) => body,
    };
    Ok((
        Response::from_parts(parts, body.grpc(deferred, grpc_deadline)),
        endpoint,
    ))
}

/// Where the client's side of an upgrade comes from.
enum ClientUpgrade {
    /// TLS and HTTP/2 connections: hyper fulfils the upgrade.
    Hyper(hyper::upgrade::OnUpgrade),
    /// Parkable HTTP/1 connections: the connection loop hands the socket over.
    Parkable(Arc<ConnActivity>),
}

/// Copies bytes both ways between an upgraded client and upstream until both sides are done,
/// or until the tunnel has been silent both ways for `idle` (the route's `tunnel_idle_timeout`).
async fn tunnel<C>(client: C, upstream: hyper::upgrade::Upgraded, idle: std::time::Duration)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let upstream = TokioIo::new(upstream);
    if crate::proxy::tunnel::copy_until_idle(client, upstream, idle).await
        == crate::proxy::tunnel::TunnelEnd::Idle
    {
        tracing::debug!(
            ?idle,
            "tunnel idle both ways for tunnel_idle_timeout; closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: std::future::Future>(
        _: impl FnOnce(Arc<Worker>, Arc<ConnContext>, Request<Incoming>) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper writes this future afresh for every request, and HTTP/2 spawns a task of it per
    /// stream: its size is per-request memory traffic. The request must not be held across the
    /// upstream wait at several levels (it was 2992 bytes before `proxy` became synchronous).
    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(handle);
        // 1200 bytes in a release build, about the same in debug, when this was written.
        assert!(size <= 1536, "the request future is {size} bytes");
    }
}
