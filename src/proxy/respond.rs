//! levee's own answers: a [`ProxyError`] as an HTTP response, or as a gRPC trailers-only one.
//! The request path renders them; `error.rs` and `grpc.rs` below only name what to say.

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::grpc;
use http::{header, HeaderValue, Response, StatusCode};

/// The one place a failure becomes an HTTP answer.
pub fn error(err: ProxyError) -> Response<ResponseBody> {
    let status = err.status();
    let body = format!("{}: {}\n", status.as_u16(), err);
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("x-levee-error", HeaderValue::from_static(err.kind()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = err.retry_after() {
        // Whole seconds, rounded up: "0" would invite an immediate retry into the same wall.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let ProxyError::RateLimited {
        ratelimit: Some((limit, policy)),
        ..
    } = err
    {
        h.insert("ratelimit", limit);
        h.insert("ratelimit-policy", policy);
    }
    resp
}

/// levee's answer to a gRPC request it does not forward: HTTP 200, trailers-only (the status
/// in the headers of an empty body with END_STREAM), keeping `x-levee-error`, `retry-after`
/// and the rate-limit headers of the HTTP answer.
pub fn grpc_trailers_only(err: ProxyError) -> Response<ResponseBody> {
    let code = grpc::status_for_kind(err.kind());
    let message = percent_encode(&err.to_string());
    let (mut parts, _) = error(err).into_parts();
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.remove(header::CONTENT_LENGTH);
    h.insert(grpc::GRPC_STATUS, HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert(grpc::GRPC_MESSAGE, v);
    }
    Response::from_parts(parts, ResponseBody::empty())
}

/// `grpc-message` is percent-encoded UTF-8: printable ASCII other than `%` passes as is.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn levee_answers_grpc_trailers_only() {
        let resp = grpc_trailers_only(ProxyError::CircuitOpen {
            retry_after: Duration::from_millis(2500),
        });
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "circuit breaker for upstream is open");
        assert_eq!(h["x-levee-error"], "circuit_open");
        assert_eq!(h["retry-after"], "3");
        assert!(http_body::Body::is_end_stream(resp.body()));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% off\nnow é"), "50%25 off%0Anow %C3%A9");
    }
}
