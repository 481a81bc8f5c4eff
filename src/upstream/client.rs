//! The pooled HTTP client for one upstream: keep-alive connections per endpoint, connect timeout,
//! HTTP/1.1 or HTTP/2, optional TLS; failures are sorted into connect errors and resets.

use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::error::ProxyError;
use crate::proxy::body::{RequestBody, RequestBodyError};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Sends requests to an upstream's endpoints over pooled connections.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
    scheme: Scheme,
    version: Version,
}

impl UpstreamClient {
    pub fn new(config: &UpstreamConfig) -> Result<UpstreamClient, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let tls_config = crate::tls::upstream_client_config(config)?;
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
        Ok(UpstreamClient {
            client: b.build(connector),
            scheme: if config.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            version: match config.protocol {
                UpstreamProtocol::Http1 => Version::HTTP_11,
                UpstreamProtocol::H2 => Version::HTTP_2,
            },
        })
    }

    /// Sends `req` to `authority`, keeping its path and query.
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
        authority: &Authority,
    ) -> Result<Response<Incoming>, ProxyError> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        self.client.request(req).await.map_err(classify)
    }
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
        source = e.source();
    }
    if err.is_connect() {
        ProxyError::UpstreamConnect(Box::new(err))
    } else {
        ProxyError::UpstreamReset(Box::new(err))
    }
}

/// The innermost service: sends the call to the chosen endpoint before its deadline.
#[derive(Clone)]
pub struct ClientService {
    upstream: std::sync::Arc<crate::upstream::Upstream>,
}

impl ClientService {
    pub fn new(upstream: std::sync::Arc<crate::upstream::Upstream>) -> Self {
        ClientService { upstream }
    }
}

impl tower::Service<crate::proxy::call::Call> for ClientService {
    type Response = crate::proxy::call::Answer;
    type Error = ProxyError;
    type Future = crate::proxy::call::CallFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProxyError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: crate::proxy::call::Call) -> Self::Future {
        let upstream = self.upstream.clone();
        Box::pin(async move {
            let endpoint = call.endpoint;
            let Some(ep) = upstream.endpoints.get(endpoint) else {
                return Err(ProxyError::NoHealthyEndpoint {
                    retry_after: std::time::Duration::from_secs(1),
                });
            };
            let sent = upstream.client.send(call.req, &ep.authority);
            let resp = tokio::time::timeout_at(call.deadline, sent)
                .await
                .map_err(|_| ProxyError::UpstreamTimeout)??;
            Ok(crate::proxy::call::Answer { resp, endpoint })
        })
    }
}
