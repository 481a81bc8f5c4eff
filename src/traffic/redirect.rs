//! Routes that answer themselves, with no upstream: `redirect` (Location = the new scheme, host
//! and path, the request's query kept) and `direct_response` (a fixed status, body and type: a
//! maintenance page without a backend).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// What a route without an upstream answers.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalAnswer {
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// `redirect = { scheme, host, path | prefix, status }`; what is not given stays as requested.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub scheme: Option<String>,
    /// With a port if wanted (`example.com:8443`).
    pub host: Option<String>,
    pub path: Option<RedirectPath>,
    /// 301, 302, 307 or 308.
    pub status: StatusCode,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RedirectPath {
    /// The whole path.
    Path(String),
    /// Replaces the route's `path_prefix` (the field holds it) with `to`.
    Prefix { matched: String, to: String },
}

/// `direct_response = { status, body, content_type }`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

/// What the redirect needs to know about the request.
pub struct Requested<'a> {
    pub tls: bool,
    /// The request's host as sent (with its port); empty when it had none.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl LocalAnswer {
    pub fn respond(&self, req: &Requested<'_>) -> Response<Bytes> {
        match self {
            LocalAnswer::Redirect(r) => r.respond(req),
            LocalAnswer::Direct(d) => {
                let mut resp = Response::new(d.body.clone());
                *resp.status_mut() = d.status;
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, d.content_type.clone());
                resp
            }
        }
    }
}

impl Redirect {
    /// The `Location` for a request.
    pub fn location(&self, req: &Requested<'_>) -> String {
        let requested_scheme = if req.tls { "https" } else { "http" };
        let scheme = self.scheme.as_deref().unwrap_or(requested_scheme);
        let host = match &self.host {
            Some(h) => h.as_str(),
            // A port belongs to the scheme it was reached with: `http://a:8080` redirected to
            // https must not keep 8080.
            None if scheme != requested_scheme => strip_port(req.host),
            None => req.host,
        };
        let path: std::borrow::Cow<'_, str> = match &self.path {
            None => req.path.into(),
            Some(RedirectPath::Path(p)) => p.as_str().into(),
            Some(RedirectPath::Prefix { matched, to }) => {
                match req.path.strip_prefix(matched.as_str()) {
                    Some(rest) => format!("{to}{rest}").into(),
                    None => req.path.into(),
                }
            }
        };
        let mut location = format!("{scheme}://{host}{path}");
        if let Some(q) = req.query {
            location.push('?');
            location.push_str(q);
        }
        location
    }

    fn respond(&self, req: &Requested<'_>) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = self.status;
        // Built from a validated config and a request line hyper accepted: always valid, but
        // a refused value answers without Location rather than panicking.
        if let Ok(v) = HeaderValue::from_str(&self.location(req)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.rfind(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(host: &'a str, path: &'a str, query: Option<&'a str>) -> Requested<'a> {
        Requested {
            tls: false,
            host,
            path,
            query,
        }
    }

    #[test]
    fn locations_keep_what_is_not_changed_and_the_query() {
        let https = Redirect {
            scheme: Some("https".into()),
            host: None,
            path: None,
            status: StatusCode::PERMANENT_REDIRECT,
        };
        assert_eq!(
            https.location(&req("a.example:8080", "/x/y", Some("q=1&r=2"))),
            "https://a.example/x/y?q=1&r=2"
        );
        assert_eq!(
            https.location(&req("[::1]:80", "/", None)),
            "https://[::1]/"
        );
        let moved = Redirect {
            scheme: None,
            host: Some("new.example".into()),
            path: Some(RedirectPath::Prefix {
                matched: "/old/".into(),
                to: "/new/".into(),
            }),
            status: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            moved.location(&req("a.example:8080", "/old/page", Some("x"))),
            "http://new.example/new/page?x"
        );
        let same_scheme = Redirect {
            host: None,
            path: Some(RedirectPath::Path("/maintenance".into())),
            ..moved
        };
        assert_eq!(
            same_scheme.location(&req("a.example:8080", "/old/page", None)),
            "http://a.example:8080/maintenance"
        );
    }
}
