//! Writing a request head (and its small buffered body) in HTTP/1.1 wire form.

use bytes::Bytes;
use http::{header, Request};

/// Appends `req`'s request line, headers and `body` to `dst`. The headers are sent as levee
/// prepared them (hop-by-hop fields already removed); `content-length` is set from the body
/// when there is one, so a buffered chunked upload goes out with its real length. A request
/// without `Host` (HTTP/1.0 allows that) gets the endpoint's, as HTTP/1.1 requires one.
pub fn encode<B>(req: &Request<B>, body: Option<&Bytes>, authority: &str, dst: &mut Vec<u8>) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    dst.reserve(
        req.method().as_str().len()
            + target.len()
            + 64
            + req.headers().len() * 32
            + body.map_or(0, Bytes::len),
    );
    dst.extend_from_slice(req.method().as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers().contains_key(header::HOST) {
        dst.extend_from_slice(b"host: ");
        dst.extend_from_slice(authority.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers() {
        if body.is_some() && name == header::CONTENT_LENGTH {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(body.len().to_string().as_bytes());
        dst.extend_from_slice(b"\r\n\r\n");
        dst.extend_from_slice(body);
    } else {
        dst.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_request_line_headers_and_body() {
        let req = Request::post("http://ignored.example/a/b?c=d")
            .header("host", "origin")
            .header("x-many", "1")
            .header("x-many", "2")
            .header("content-length", "999")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode(&req, Some(&Bytes::from_static(b"hello")), "ep:1", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?c=d HTTP/1.1\r\nhost: origin\r\nx-many: 1\r\nx-many: 2\r\n\
             content-length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn bodiless_requests_keep_their_headers_as_sent() {
        let req = Request::get("/")
            .header("host", "h")
            .header("content-length", "0")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode(&req, None, "ep:1", &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_request_without_host_gets_the_endpoints() {
        let req = Request::get("/x").body(()).unwrap();
        let mut out = Vec::new();
        encode(&req, None, "10.0.0.1:8080", &mut out);
        assert_eq!(out, b"GET /x HTTP/1.1\r\nhost: 10.0.0.1:8080\r\n\r\n");
    }
}
