//! Parsing an upstream's response head and deciding how its body is framed (RFC 9112 §6.3).

use super::chunked::ChunkedDecoder;
use super::H1Error;
use bytes::{Buf, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// Header slots parsed on the stack; a response with more (up to the upstream's
/// `max_response_headers`) is parsed again with slots on the heap. 100 covers nearly every
/// response without a heap allocation per request.
const INLINE_HEADERS: usize = 100;

/// The upstream's limits on a response head (`max_response_header_bytes`, `max_response_headers`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest head, status line and header lines included.
    pub max_head: usize,
    pub max_headers: usize,
}

/// How the body after a head ends.
#[derive(Debug)]
pub enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes the connection: the connection cannot be reused.
    Close,
}

/// A final (non-1xx) response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this body has been read to its end.
    pub keep_alive: bool,
}

/// Offsets of one header field within the head.
#[derive(Clone, Copy, Default)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Takes a complete final response head off the front of `buf`, skipping interim 1xx responses.
/// `Ok(None)`: the head is not complete yet.
pub fn parse(buf: &mut BytesMut, method: &Method, limits: Limits) -> Result<Option<Head>, H1Error> {
    loop {
        let inline = limits.max_headers.min(INLINE_HEADERS);
        let mut fields = [Field::default(); INLINE_HEADERS];
        let scanned = {
            let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; INLINE_HEADERS];
            scan(buf, &mut raw[..inline], &mut fields[..inline], limits)
        };
        let head = match scanned {
            Err(H1Error::TooManyHeaders(_)) if limits.max_headers > inline => {
                // Rare: more fields than the stack holds, but within the configured limit.
                let mut fields = vec![Field::default(); limits.max_headers];
                let scanned = {
                    let mut raw: Vec<MaybeUninit<httparse::Header<'_>>> = (0..limits.max_headers)
                        .map(|_| MaybeUninit::uninit())
                        .collect();
                    scan(buf, &mut raw, &mut fields, limits)?
                };
                match scanned {
                    Some((s, count)) => take_head(buf, s, &fields[..count], method)?,
                    None => return Ok(None),
                }
            }
            other => match other? {
                Some((s, count)) => take_head(buf, s, &fields[..count], method)?,
                None => return Ok(None),
            },
        };
        if let Some(head) = head {
            return Ok(Some(head));
        }
    }
}

/// Takes the scanned head off `buf`: the final head, or `None` after skipping an interim one.
fn take_head(
    buf: &mut BytesMut,
    scanned: Scanned,
    fields: &[Field],
    method: &Method,
) -> Result<Option<Head>, H1Error> {
    let Scanned {
        len,
        status,
        version,
    } = scanned;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(H1Error::UnexpectedUpgrade);
        }
        // 100 Continue, 103 Early Hints and the like: the final response follows.
        buf.advance(len);
        return Ok(None);
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(&head[f.name.0 as usize..f.name.1 as usize])
            .map_err(|_| H1Error::Parse(httparse::Error::HeaderName))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(f.value.0 as usize..f.value.1 as usize))
                .map_err(|_| H1Error::Parse(httparse::Error::HeaderValue))?;
        headers.append(name, value);
    }
    let (framing, keep_alive) = framing(status, version, method, &mut headers)?;
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// The parts of a head [`scan`] found.
struct Scanned {
    len: usize,
    status: StatusCode,
    version: Version,
}

/// Parses the head at the front of `buf` into `raw`, recording each field's offsets in
/// `fields`; the number of fields comes back with the head. Leaves `buf` untouched.
fn scan<'b>(
    buf: &'b BytesMut,
    raw: &mut [MaybeUninit<httparse::Header<'b>>],
    fields: &mut [Field],
    limits: Limits,
) -> Result<Option<(Scanned, usize)>, H1Error> {
    let mut resp = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, raw)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => {
            return Err(H1Error::HeadTooLarge(limits.max_head))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::TooManyHeaders(limits.max_headers))
        }
        Err(e) => return Err(H1Error::Parse(e)),
    };
    if len > limits.max_head {
        return Err(H1Error::HeadTooLarge(limits.max_head));
    }
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Parse(httparse::Error::Status))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    for (field, h) in fields.iter_mut().zip(resp.headers.iter()) {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        // `len <= max_head <= 16 MiB` (validated) bounds every offset, so these fit.
        field.name = (name as u32, (name + h.name.len()) as u32);
        field.value = (value as u32, (value + h.value.len()) as u32);
    }
    Ok(Some((
        Scanned {
            len,
            status,
            version,
        },
        resp.headers.len(),
    )))
}

fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), H1Error> {
    let mut keep_alive = match version {
        Version::HTTP_11 => !has_token(headers, header::CONNECTION, "close"),
        _ => has_token(headers, header::CONNECTION, "keep-alive"),
    };
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // With both, Transfer-Encoding wins and the length is dropped so it cannot reach the
        // client; such a connection is not trusted with another request (RFC 9112 §6.3 item 3).
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            (Framing::Chunked(ChunkedDecoder::default()), keep_alive)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(part.trim_ascii()).ok_or(H1Error::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 64 * 1024,
        max_headers: 200,
    };

    fn parse_str(s: &str, method: Method) -> Result<Option<Head>, H1Error> {
        parse(&mut BytesMut::from(s.as_bytes()), &method, LIMITS)
    }

    #[test]
    fn content_length_response() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello"[..],
        );
        let head = parse(&mut buf, &Method::GET, LIMITS).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert!(matches!(head.framing, Framing::Length(5)));
        assert!(head.keep_alive);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(parse_str("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
            .unwrap()
            .is_none());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let head = parse_str(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            Method::POST,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.status, StatusCode::NO_CONTENT);
        assert!(!head.headers.contains_key("link"));
        assert!(matches!(head.framing, Framing::Length(0)));
    }

    #[test]
    fn framing_rules() {
        let cases: &[(&str, Method, &str, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                Method::HEAD,
                "len0",
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::GET,
                "len0",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                "chunked",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::GET,
                "chunked",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::GET,
                "close",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                "chunked",
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Method::GET, "close", false),
            (
                "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
                Method::GET,
                "len",
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Method::GET,
                "len",
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                Method::GET,
                "len",
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
                Method::GET,
                "len",
                true,
            ),
        ];
        for (text, method, kind, keep_alive) in cases {
            let head = parse_str(text, method.clone()).unwrap().unwrap();
            let got = match head.framing {
                Framing::Length(0) => "len0",
                Framing::Length(_) => "len",
                Framing::Chunked(_) => "chunked",
                Framing::Close => "close",
            };
            assert_eq!((got, head.keep_alive), (*kind, *keep_alive), "{text}");
        }
        let both = parse_str(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!both.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn refuses_bad_heads() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse_str(bad, Method::GET).is_err(), "{bad}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(LIMITS.max_head));
        assert!(matches!(
            parse_str(&huge, Method::GET),
            Err(H1Error::HeadTooLarge(_))
        ));
    }

    fn with_fields(n: usize) -> String {
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..n {
            head.push_str(&format!("set-cookie: c{i}=v\r\n"));
        }
        head.push_str("content-length: 0\r\n\r\n");
        head
    }

    #[test]
    fn header_count_limit_is_the_configured_one() {
        // 150 fields: more than the stack holds, within the default limit of 200.
        let head = parse_str(&with_fields(149), Method::GET).unwrap().unwrap();
        assert_eq!(head.headers.get_all("set-cookie").iter().count(), 149);
        assert_eq!(
            parse_str(&with_fields(200), Method::GET)
                .unwrap_err()
                .to_string(),
            "response with more than 200 header fields"
        );
        let small = Limits {
            max_head: 64 * 1024,
            max_headers: 10,
        };
        let mut buf = BytesMut::from(with_fields(9).as_bytes());
        assert!(parse(&mut buf, &Method::GET, small).unwrap().is_some());
        let mut buf = BytesMut::from(with_fields(10).as_bytes());
        assert!(matches!(
            parse(&mut buf, &Method::GET, small),
            Err(H1Error::TooManyHeaders(10))
        ));
    }

    #[test]
    fn head_size_limit_is_the_configured_one() {
        let text = with_fields(50);
        let exact = Limits {
            max_head: text.len(),
            max_headers: 200,
        };
        let mut buf = BytesMut::from(text.as_bytes());
        assert!(parse(&mut buf, &Method::GET, exact).unwrap().is_some());
        let short = Limits {
            max_head: text.len() - 1,
            max_headers: 200,
        };
        let mut buf = BytesMut::from(text.as_bytes());
        assert!(matches!(
            parse(&mut buf, &Method::GET, short),
            Err(H1Error::HeadTooLarge(_))
        ));
    }
}
