//! A real gRPC peer for tests: tonic's server core on hyper's HTTP/2 server, and tonic's client.
//! No protoc: the one message type is a hand-written prost struct, and the service is routed
//! by path by hand, as tonic's generated code does.
//!
//! The server is served by hyper directly rather than `tonic::transport::Server`, because that
//! server enforces `grpc-timeout` itself and would hide whether levee does.

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// The one message both ways.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

pub fn ping(text: &str) -> Ping {
    Ping {
        text: text.to_string(),
        n: 0,
    }
}

pub const UNARY: &str = "/test.Echo/Unary";
pub const STREAM: &str = "/test.Echo/Stream";

/// `(:authority, host header, te header)` of one request.
pub type Seen = (String, Option<String>, Option<String>);

/// What the server saw and a lever to pace it.
#[derive(Default)]
pub struct GrpcState {
    pub calls: AtomicUsize,
    pub connections: AtomicUsize,
    /// Handlers and streams that ended because the caller went away.
    pub cancelled: AtomicUsize,
    /// `(:authority, host header, te header)` of each request.
    pub seen: Mutex<Vec<Seen>>,
    /// Lets a paced stream send its next message.
    pub release: Notify,
}

pub struct GrpcServer {
    pub addr: SocketAddr,
    pub state: Arc<GrpcState>,
}

/// Counts a cancellation when dropped before `done`.
struct CancelGuard {
    state: Arc<GrpcState>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Starts the test service on 127.0.0.1:0 (HTTP/2 cleartext, prior knowledge).
///
/// Unary by request text: anything → echo with `n` = call number; "fail" → INVALID_ARGUMENT
/// with details and metadata; "unavailable" → UNAVAILABLE (trailers-only); "hang" → never
/// answers (counts a cancellation when dropped).
/// Stream by request text: "paced" → one message, then the next after each `release`, three
/// in all; "unavailable" → one message, then UNAVAILABLE in the trailers; "hang" → one message,
/// then nothing until cancelled; "many:N" → N messages as fast as possible.
pub async fn start_server() -> GrpcServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(GrpcState::default());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            st.connections.fetch_add(1, Ordering::SeqCst);
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(route(st, req).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    GrpcServer { addr, state }
}

async fn route(
    st: Arc<GrpcState>,
    req: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("?").to_string())
    };
    let seen = (
        req.uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        header("host"),
        header("te"),
    );
    st.seen.lock().push(seen);
    let n = st.calls.fetch_add(1, Ordering::SeqCst) as u32 + 1;
    let codec = ProstCodec::<Ping, Ping>::default();
    match req.uri().path() {
        UNARY => {
            let st = st.clone();
            let svc = tower::service_fn(move |r: tonic::Request<Ping>| {
                let st = st.clone();
                async move { unary(st, r.into_inner(), n).await }
            });
            tonic::server::Grpc::new(codec).unary(svc, req).await
        }
        STREAM => {
            let st = st.clone();
            let svc = tower::service_fn(move |r: tonic::Request<Ping>| {
                let st = st.clone();
                async move { Ok::<_, Status>(tonic::Response::new(stream(st, r.into_inner()))) }
            });
            tonic::server::Grpc::new(codec)
                .server_streaming(svc, req)
                .await
        }
        _ => Status::unimplemented("no such method").into_http(),
    }
}

async fn unary(st: Arc<GrpcState>, req: Ping, n: u32) -> Result<tonic::Response<Ping>, Status> {
    match req.text.as_str() {
        "fail" => {
            let mut status = Status::with_details(
                Code::InvalidArgument,
                "bad ping",
                Bytes::from_static(b"\x08\x01details"),
            );
            status
                .metadata_mut()
                .insert("x-detail", "from-the-handler".parse().unwrap());
            Err(status)
        }
        "unavailable" => Err(Status::unavailable("handler says unavailable")),
        "hang" => {
            let mut guard = CancelGuard {
                state: st,
                done: false,
            };
            std::future::pending::<()>().await;
            guard.done = true;
            unreachable!()
        }
        text => Ok(tonic::Response::new(Ping {
            text: format!("{text} back"),
            n,
        })),
    }
}

fn stream(st: Arc<GrpcState>, req: Ping) -> ReceiverStream<Result<Ping, Status>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let msg = |n| {
            Ok(Ping {
                text: req.text.clone(),
                n,
            })
        };
        let text = req.text.clone();
        if let Some(count) = text.strip_prefix("many:") {
            let count: u32 = count.parse().unwrap();
            for n in 1..=count {
                if tx.send(msg(n)).await.is_err() {
                    return;
                }
            }
            return;
        }
        if tx.send(msg(1)).await.is_err() {
            return;
        }
        match text.as_str() {
            "paced" => {
                for n in 2..=3 {
                    tokio::select! {
                        _ = st.release.notified() => {}
                        _ = tx.closed() => {
                            st.cancelled.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                    if tx.send(msg(n)).await.is_err() {
                        return;
                    }
                }
            }
            "unavailable" => {
                let _ = tx
                    .send(Err(Status::unavailable("stream says unavailable")))
                    .await;
            }
            "hang" => {
                tx.closed().await;
                st.cancelled.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    });
    ReceiverStream::new(rx)
}

/// A tonic client for `addr` (levee or the server itself), sending `:authority` = `authority`
/// when given.
pub async fn client(
    addr: SocketAddr,
    authority: Option<&str>,
) -> tonic::client::Grpc<tonic::transport::Channel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    if let Some(a) = authority {
        endpoint = endpoint.origin(format!("http://{a}").parse().unwrap());
    }
    tonic::client::Grpc::new(endpoint.connect().await.unwrap())
}

/// tonic's client core over a bare hyper HTTP/2 connection: unlike tonic's `Channel`, it does
/// not enforce `grpc-timeout` itself, so a test sees whether levee does.
#[derive(Clone)]
pub struct BareH2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for BareH2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let mut sender = self.0.clone();
        Box::pin(async move { sender.send_request(req).await })
    }
}

pub async fn bare_client(addr: SocketAddr) -> tonic::client::Grpc<BareH2> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    tonic::client::Grpc::with_origin(BareH2(sender), format!("http://{addr}").parse().unwrap())
}

pub async fn call_unary<T>(
    grpc: &mut tonic::client::Grpc<T>,
    req: tonic::Request<Ping>,
) -> Result<tonic::Response<Ping>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: std::fmt::Debug,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    grpc.ready().await.unwrap();
    grpc.unary(req, PathAndQuery::from_static(UNARY), ProstCodec::default())
        .await
}

pub async fn call_stream(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    req: tonic::Request<Ping>,
) -> Result<tonic::Response<tonic::codec::Streaming<Ping>>, Status> {
    grpc.ready().await.unwrap();
    grpc.server_streaming(
        req,
        PathAndQuery::from_static(STREAM),
        ProstCodec::default(),
    )
    .await
}

/// The `x-levee-error` of a status, "" when levee did not answer itself.
pub fn levee_error(status: &Status) -> String {
    status
        .metadata()
        .get("x-levee-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
