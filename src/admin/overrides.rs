//! `/overrides` on the admin listener: `GET` lists the active overrides, `POST` sets one (201
//! with its `id`), `DELETE /overrides/ID` ends one. Setting and ending are actions, refused like
//! `POST /reload` (non-loopback listener without `allow_actions`, or a cross-site browser).

use crate::overrides::live::Overrides;
use crate::overrides::Spec;
use crate::shared::Shared;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use tokio::time::Instant;

/// The largest `POST /overrides` body read; a reason is at most 512 bytes.
pub const MAX_BODY: usize = 8 * 1024;

/// The admin client's address, put on each request by the accept loop; overrides log it.
#[derive(Clone, Copy, Debug)]
pub struct AdminPeer(pub SocketAddr);

/// What `POST /overrides` takes. Every field optional here so a missing one gets its own message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRequest {
    target: Option<String>,
    action: Option<String>,
    ttl: Option<String>,
    reason: Option<String>,
}

/// Whether `path` is one this module answers.
pub fn handles(path: &str) -> bool {
    path == "/overrides" || path.starts_with("/overrides/")
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    answer(status, json!({ "error": message.into() }))
}

/// Answers a request for `/overrides` or `/overrides/ID`. `refused` is the action rule's
/// verdict for this request (`None`: allowed).
pub async fn serve(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    refused: Option<&'static str>,
) -> Response<Full<Bytes>> {
    let by = req
        .extensions()
        .get::<AdminPeer>()
        .map(|p| p.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let path = req.uri().path().to_string();
    let id = path.strip_prefix("/overrides/");
    match (req.method(), id) {
        (&Method::GET, None) => {
            let now = Instant::now();
            let list: Vec<Value> = shared
                .overrides
                .list()
                .iter()
                .map(|o| o.to_json(now))
                .collect();
            answer(StatusCode::OK, json!({ "overrides": list }))
        }
        (&Method::POST, None) => match refused {
            Some(why) => error(StatusCode::FORBIDDEN, why),
            None => set(shared, req, &by).await,
        },
        (&Method::DELETE, Some(id)) => match refused {
            Some(why) => error(StatusCode::FORBIDDEN, why),
            None => {
                let Ok(id) = id.parse::<u64>() else {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no override \"{id}\": ids are numbers (GET /overrides lists them)"
                        ),
                    );
                };
                match shared
                    .overrides
                    .clear(id, &by, || shared.snapshot.load_full())
                {
                    Some(o) => answer(
                        StatusCode::OK,
                        json!({ "cleared": o.to_json(Instant::now()) }),
                    ),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("no active override {id} (it may have expired)"),
                    ),
                }
            }
        },
        (_, None) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or POST /overrides, DELETE /overrides/ID",
        ),
        (_, Some(_)) => error(StatusCode::METHOD_NOT_ALLOWED, "use DELETE /overrides/ID"),
    }
}

async fn set(shared: &Arc<Shared>, req: Request<Incoming>, by: &str) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body over {MAX_BODY} bytes"),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let r: SetRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body is not an override ({e}): send JSON like {{\"target\": \"upstream:api\", \"action\": \"force_open\", \"ttl\": \"10m\", \"reason\": \"...\"}}"
                ),
            )
        }
    };
    let snapshot = shared.snapshot.load_full();
    let spec = match Spec::parse(
        r.target.as_deref(),
        r.action.as_deref(),
        r.ttl.as_deref(),
        r.reason.as_deref(),
        |t| crate::overrides::live::exists(&snapshot, t),
    ) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match shared
        .overrides
        .set(spec, by, || shared.snapshot.load_full())
    {
        Ok(o) => answer(StatusCode::CREATED, o.to_json(Instant::now())),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Ends overrides on time while the levee behind `shared` runs.
pub fn spawn_expiry(shared: &Arc<Shared>) {
    let overrides: Arc<Overrides> = shared.overrides.clone();
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(overrides.run_expiry(move || weak.upgrade().map(|s| s.snapshot.load_full())));
}
