//! The pooled HTTP client for one upstream: keep-alive connections per endpoint, connect timeout,
//! HTTP/1.1 or HTTP/2, optional TLS; failures are sorted into connect errors and resets.

use crate::body::{RequestBody, RequestBodyError, UpstreamBody};
use crate::call::CallRequest;
use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::error::ProxyError;
use crate::h1::{self, DirectClient, Failed, H1Error};
use crate::layers::retry::RetryPolicy;
use crate::shard::Sharded;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

type Connector = TrackingConnector<HttpsConnector<HttpConnector>>;

/// One hyper-util client per endpoint of an HTTP/2 upstream.
type EndpointClients = Box<[Client<Connector, RequestBody>]>;

/// Sends requests to an upstream's endpoints over pooled connections.
#[derive(Clone)]
pub struct UpstreamClient {
    /// One per worker (`crate::worker`): each has its own pool, so a pooled connection (and
    /// the task hyper runs it on) stays on the worker that opened it.
    clients: Arc<Sharded<Client<Connector, RequestBody>>>,
    /// For HTTP/2 upstreams, per worker: a client per endpoint whose connector always dials
    /// that endpoint, so a request's URI can carry the client's host as `:authority` (see
    /// `send_hyper`).
    h2: Option<Arc<Sharded<EndpointClients>>>,
    /// For plain-TCP HTTP/1.1 upstreams, per worker: levee's own client for bodiless and
    /// buffered requests.
    direct: Option<Arc<Sharded<DirectClient>>>,
    scheme: Scheme,
    version: Version,
    limits: HeadLimits,
}

/// `max_response_header_bytes` and `max_response_headers`, checked on responses that came
/// through hyper's client (whose own limits are set from them but measure a little differently).
#[derive(Clone, Copy)]
struct HeadLimits {
    bytes: usize,
    fields: usize,
}

impl UpstreamClient {
    pub fn new(config: &UpstreamConfig) -> Result<UpstreamClient, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let tls_config = crate::tls::upstream_client_config(&config.name, config.tls.as_ref())?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
        let builder = match config.tls.as_ref().and_then(|t| t.server_name.clone()) {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| {
                    format!("upstream \"{}\": invalid tls.server_name: {e}", config.name)
                })?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = match config.protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
            UpstreamProtocol::H2 => builder.enable_http2().wrap_connector(http),
        };
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if config.protocol == UpstreamProtocol::H2 {
            b.http2_only(true);
        }
        // Response head limits. hyper's HTTP/1 client counts fields itself and refuses a head
        // that outgrows its read buffer, which is left at hyper's default (it also sizes body
        // reads) unless the limit is larger; `check_head` applies the exact byte limit. HTTP/2
        // advertises a header list size, at 4x the limit so that a response somewhat over it
        // still arrives whole and is refused by `check_head` as `upstream_protocol`: h2 cannot
        // tell an oversized list apart from a garbled response when it resets the stream itself.
        const HYPER_DEFAULT_MAX_BUF: usize = 8192 + 4096 * 100;
        b.http1_max_headers(config.max_response_headers)
            .http1_max_buf_size(config.max_response_header_bytes.max(HYPER_DEFAULT_MAX_BUF))
            .http2_max_header_list_size(
                u32::try_from(config.max_response_header_bytes.saturating_mul(4))
                    .unwrap_or(u32::MAX),
            );
        let direct =
            (config.protocol == UpstreamProtocol::Http1 && config.tls.is_none()).then(|| {
                let settings = h1::Settings {
                    endpoints: config.endpoints.len(),
                    max_idle_per_endpoint: config.pool_max_idle_per_endpoint,
                    idle_timeout: config.pool_idle_timeout,
                    connect_timeout: config.connect_timeout,
                    limits: h1::response::Limits {
                        max_head: config.max_response_header_bytes,
                        max_headers: config.max_response_headers,
                    },
                };
                Arc::new(Sharded::new(|| DirectClient::new(&settings)))
            });
        let scheme = if config.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let h2 = match config.protocol {
            UpstreamProtocol::Http1 => None,
            UpstreamProtocol::H2 => {
                let dials = config
                    .endpoints
                    .iter()
                    .map(|e| {
                        Uri::builder()
                            .scheme(scheme.clone())
                            .authority(e.as_str())
                            .path_and_query("/")
                            .build()
                            .map_err(|_| {
                                format!(
                                    "upstream \"{}\": endpoint \"{e}\" is not a valid HOST:PORT",
                                    config.name
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Some(Arc::new(Sharded::new(|| {
                    dials
                        .iter()
                        .map(|dial| {
                            b.build(TrackingConnector(connector.clone(), Some(dial.clone())))
                        })
                        .collect::<Box<[_]>>()
                })))
            }
        };
        Ok(UpstreamClient {
            h2,
            clients: Arc::new(Sharded::new(|| {
                b.build(TrackingConnector(connector.clone(), None))
            })),
            direct,
            scheme,
            version: match config.protocol {
                UpstreamProtocol::Http1 => Version::HTTP_11,
                UpstreamProtocol::H2 => Version::HTTP_2,
            },
            limits: HeadLimits {
                bytes: config.max_response_header_bytes,
                fields: config.max_response_headers,
            },
        })
    }

    /// Sends `req` to endpoint number `endpoint` at `authority`, keeping its path and query.
    pub async fn send(
        &self,
        req: CallRequest,
        endpoint: usize,
        authority: &Authority,
        stale: &StaleResend,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        match &self.direct {
            Some(direct) if direct_accepts(&req) => {
                let direct = direct.local();
                let body: Option<Bytes> = match req.body() {
                    RequestBody::Full(b) => b.clone(),
                    RequestBody::Stream { .. } => None,
                };
                let mut wire = Vec::new();
                h1::encode(&req, body.as_ref(), authority.as_str(), &mut wire);
                let send = |pooled| direct.send(&wire, req.method(), endpoint, authority, pooled);
                let resp = match send(true).await {
                    Err(Failed { stale: true, error }) if stale.resend(req.method(), &error) => {
                        send(false).await
                    }
                    first => first,
                };
                Ok(resp
                    .map_err(|f| h1_failed(f.error))?
                    .map(UpstreamBody::Direct))
            }
            _ => Ok(self
                .send_hyper(req.into_owned()?, endpoint, authority, stale)
                .await?
                .map(UpstreamBody::Hyper)),
        }
    }

    /// Connections idle in the direct client's pools for `endpoint`, all workers together (0
    /// on hyper's path).
    pub fn idle_connections(&self, endpoint: usize) -> usize {
        self.direct
            .as_ref()
            .map_or(0, |d| d.iter().map(|d| d.idle_connections(endpoint)).sum())
    }

    /// Sends over hyper's pooled client. Over HTTP/2 the upstream sees the request's `Host` as
    /// `:authority` and no `host` header, as a strict server (hypercorn, gRPC) requires: the
    /// endpoint's own client dials the endpoint whatever the URI says, and its pool is keyed by
    /// that authority, so requests for different hosts use different connections.
    async fn send_hyper(
        &self,
        mut req: Request<RequestBody>,
        endpoint: usize,
        authority: &Authority,
        stale: &StaleResend,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (client, authority) = match self.h2.as_ref().and_then(|c| c.local().get(endpoint)) {
            Some(client) => {
                let host = req
                    .headers_mut()
                    .remove(http::header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                    .filter(|a| !a.as_str().contains('@'));
                (client, host.unwrap_or_else(|| authority.clone()))
            }
            None => (self.clients.local(), authority.clone()),
        };
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        if self.version == Version::HTTP_11 {
            frame_unknown_length_body(&mut req);
        }
        // What it takes to send the request again if a pooled connection turns out to be dead.
        let replay = replayable(&req);
        let resp = match client.request(req).await {
            Ok(resp) => answered(resp),
            Err(err) => match replay {
                Some(again) if is_stale_connection(&err) && stale.resend(again.method(), &err) => {
                    client
                        .request(again)
                        .await
                        .map(answered)
                        .map_err(classify)?
                }
                _ => return Err(classify(err)),
            },
        };
        self.check_head(&resp)?;
        Ok(resp)
    }

    /// Refuses a response head beyond the upstream's limits, measured as the protocol measures
    /// it: HTTP/1 header lines (`name: value` and CRLF), HTTP/2 header list size (RFC 9113
    /// §6.5.2: name, value and 32 per field).
    fn check_head(&self, resp: &Response<Incoming>) -> Result<(), ProxyError> {
        let fields = resp.headers().len();
        if fields > self.limits.fields {
            return Err(ProxyError::UpstreamProtocol(
                format!(
                    "response with more than {} header fields",
                    self.limits.fields
                )
                .into(),
            ));
        }
        let per_field = if resp.version() == Version::HTTP_2 {
            32
        } else {
            4
        };
        let bytes: usize = resp
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + per_field)
            .sum();
        if bytes > self.limits.bytes {
            return Err(ProxyError::UpstreamProtocol(
                format!("response head larger than {} bytes", self.limits.bytes).into(),
            ));
        }
        Ok(())
    }
}

/// Whether levee's own client can carry `req`: no body or a buffered one, and no upgrade.
fn direct_accepts(req: &Request<RequestBody>) -> bool {
    let body_ready = match req.body() {
        RequestBody::Full(_) => true,
        RequestBody::Stream { body, .. } => http_body::Body::is_end_stream(body),
    };
    body_ready && !req.headers().contains_key(http::header::UPGRADE)
}

/// A response beyond the upstream's header limits is refused as `upstream_protocol` (not the
/// upstream's failure); a failed connect is `upstream_connect`; anything else that broke the
/// exchange is a reset.
fn h1_failed(error: H1Error) -> ProxyError {
    match error {
        H1Error::HeadTooLarge(_) | H1Error::TooManyHeaders(_) => {
            ProxyError::UpstreamProtocol(Box::new(error))
        }
        H1Error::Connect(_) | H1Error::ConnectTimeout(_) | H1Error::NoSuchEndpoint => {
            ProxyError::UpstreamConnect(Box::new(error))
        }
        _ => ProxyError::UpstreamReset(Box::new(error)),
    }
}

/// The one resend on a stale pooled connection, for both clients: the upstream closed an idle
/// keep-alive connection as levee reused it, so the request never reached the application and
/// an idempotent one ([`crate::call::is_idempotent`]) goes out once more on a fresh connection
/// (what hyper-util's pool does too). The resend withdraws from the route's retry budget like a
/// retry and counts in `levee_stale_resends_total`; with the budget spent it is still made (and
/// counted), as it adds no load on the application. Health probes pass the default: no budget,
/// a counter nobody scrapes.
#[derive(Default)]
pub struct StaleResend {
    pub policy: Option<Arc<RetryPolicy>>,
    pub resends: Counter,
}

impl StaleResend {
    fn resend(&self, method: &Method, error: &dyn std::fmt::Display) -> bool {
        if !crate::call::is_idempotent(method) {
            return false;
        }
        tracing::debug!(%error, "pooled connection was closed; sending again");
        if let Some(policy) = &self.policy {
            policy.budget.withdraw(tokio::time::Instant::now());
        }
        self.resends.inc();
        true
    }
}

/// A request body of unknown length (chunked from the client, or HTTP/2 without
/// `content-length`) is sent chunked whatever the method. hyper's client would otherwise send a
/// GET, HEAD or CONNECT with such a body as bodiless, silently dropping what the client sent.
fn frame_unknown_length_body(req: &mut Request<RequestBody>) {
    let body = req.body();
    if http_body::Body::is_end_stream(body) || http_body::Body::size_hint(body).exact().is_some() {
        return;
    }
    let headers = req.headers_mut();
    if !headers.contains_key(http::header::CONTENT_LENGTH)
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        headers.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
}

/// A copy of an idempotent request whose body (empty or buffered) can be sent again.
fn replayable(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    if !crate::call::is_idempotent(req.method()) {
        return None;
    }
    let body = match req.body() {
        RequestBody::Full(b) => RequestBody::Full(b.clone()),
        RequestBody::Stream { body, .. } if http_body::Body::is_end_stream(body) => {
            RequestBody::empty()
        }
        RequestBody::Stream { .. } => return None,
    };
    let mut again = Request::new(body);
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    Some(again)
}

/// Marks the connection that carried `resp` as having answered: a failure on it from now on,
/// before any response, means the upstream closed it while it sat in the pool.
fn answered(mut resp: Response<Incoming>) -> Response<Incoming> {
    if let Some(used) = resp.extensions_mut().remove::<ConnUse>() {
        used.0.store(true, Ordering::Relaxed);
    }
    resp
}

/// True when `err` says a connection that had already answered a request was closed (FIN or
/// RST) before any byte of this request's response: the upstream dropped an idle keep-alive
/// connection just as levee reused it. That request never reached the application, so an
/// idempotent one is sent once more on a fresh connection. A fresh connection failing, a
/// malformed response or a timeout is never retried here (the retry layer decides those).
fn is_stale_connection(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    let reused = err.connect_info().is_some_and(|c| {
        let mut ext = http::Extensions::new();
        c.get_extras(&mut ext);
        ext.get::<ConnUse>()
            .is_some_and(|u| u.0.load(Ordering::Relaxed))
    });
    if !reused {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
            if h.is_parse() || h.is_timeout() || h.is_user() {
                return false;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return h1::is_closed(io);
        }
        source = e.source();
    }
    false
}

/// Set once a connection has carried a complete response head; shared by every request on it.
#[derive(Clone)]
struct ConnUse(Arc<AtomicBool>);

/// Wraps the connector so each connection carries a [`ConnUse`] flag in its `Connected` info:
/// hyper-util hands it back with every response and every send error on that connection.
/// With a `dial` URI it connects there whatever the request's URI names (an HTTP/2 endpoint).
#[derive(Clone)]
pub struct TrackingConnector<C>(C, Option<Uri>);

impl<C> tower::Service<Uri> for TrackingConnector<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = Tracked<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(self.1.clone().unwrap_or(uri));
        Box::pin(async move {
            let io = connecting.await?;
            Ok(Tracked {
                io,
                used: ConnUse(Arc::new(AtomicBool::new(false))),
            })
        })
    }
}

/// A connection with its [`ConnUse`] flag.
pub struct Tracked<T> {
    io: T,
    used: ConnUse,
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.used.clone())
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Tracked<T> {
    crate::rewind::forward_writes!(io);
}

/// Sorts a client error into what the breaker and the client need to know.
fn classify(err: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(body) = e.downcast_ref::<RequestBodyError>() {
            return match body {
                RequestBodyError::TooLarge => ProxyError::BodyTooLarge,
                RequestBodyError::Client(_) => {
                    ProxyError::BadRequest("client request body ended early")
                }
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return ProxyError::UpstreamProtocol(Box::new(err));
            }
        }
        source = e.source();
    }
    if err.is_connect() {
        ProxyError::UpstreamConnect(Box::new(err))
    } else {
        ProxyError::UpstreamReset(Box::new(err))
    }
}

/// The innermost service: sends the call to the chosen endpoint before its deadline. One `Arc`
/// for the upstream and the route's stale resend, so a call clones one pointer.
#[derive(Clone)]
pub struct ClientService {
    inner: Arc<(Arc<crate::upstream::WorkerUpstream>, StaleResend)>,
}

impl ClientService {
    pub fn new(upstream: Arc<crate::upstream::WorkerUpstream>, stale: StaleResend) -> Self {
        ClientService {
            inner: Arc::new((upstream, stale)),
        }
    }
}

impl tower::Service<crate::call::Call> for ClientService {
    type Response = crate::call::Answer;
    type Error = ProxyError;
    type Future = crate::call::CallFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProxyError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: crate::call::Call) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (upstream, stale) = &*inner;
            let endpoint = call.endpoint;
            let Some(ep) = upstream.endpoints.get(endpoint) else {
                return Err(ProxyError::NoHealthyEndpoint {
                    retry_after: std::time::Duration::from_secs(1),
                });
            };
            let sent = upstream
                .client
                .send(call.req, endpoint, &ep.authority, stale);
            let resp = tokio::time::timeout_at(call.deadline, sent)
                .await
                .unwrap_or(Err(ProxyError::UpstreamTimeout));
            // The upstream's latency, from the request's arrival (queueing for a slot included)
            // to the head or the failure; and the verdict on the call, decided once, here.
            let at = tokio::time::Instant::now();
            if resp
                .as_ref()
                .map_or_else(ProxyError::is_upstream_failure, |_| true)
            {
                upstream
                    .metrics
                    .duration
                    .observe((at - call.started).as_secs_f64());
            }
            let resp = resp?;
            let deferred = upstream.defer_verdict(&resp);
            Ok(crate::call::Answer {
                failed: deferred.is_none() && upstream.is_failure(&resp),
                deferred,
                resp,
                endpoint,
                at,
            })
        })
    }
}
