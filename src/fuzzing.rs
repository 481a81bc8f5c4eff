//! Entry points for fuzzing: each takes arbitrary bytes, drives one piece of input handling, and
//! panics only when an invariant breaks. The cargo-fuzz targets in `fuzz/` call these, and so
//! does an ordinary test over the regression corpus in `fuzz/corpus/`, so CI (stable, no
//! libFuzzer) replays every interesting input found so far.
//!
//! Panicking is the point here, so the unwrap/expect lints are relaxed for this module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::config::Cidr;
use crate::proxy::forward::{self, Peer};
use crate::proxy::route::{normalize_host, Router};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The config parser and validator on arbitrary text: never panics, and a refused config
/// always says why, at a place inside the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A base directory that does not exist: certificate paths resolve to nothing readable.
    let base = Path::new("/nonexistent-levee-fuzz");
    match crate::config::parse("fuzz.toml", text, base) {
        Ok(config) => {
            assert!(!config.listeners.is_empty(), "accepted with no listener");
            assert!(!config.routes.is_empty(), "accepted with no route");
            for r in &config.routes {
                assert!(
                    r.upstream.as_ref().map_or(r.answer.is_some(), |name| config
                        .upstreams
                        .iter()
                        .any(|u| u.name == *name)),
                    "route {} names a missing upstream",
                    r.name
                );
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without saying why");
            let lines = text.split('\n').count();
            for p in &errors.0 {
                assert!(p.line >= 1 && p.column >= 1, "{p}");
                assert!(p.line <= lines, "{p}: line past the end ({lines} lines)");
                let _ = p.to_string();
            }
        }
    }
}

/// The router on arbitrary routes and a request: `find` agrees with a naive reference,
/// `normalize_host` output is always lowercase and free of separators, and `normalize_path`
/// output is normal (see [`check_normal_path`]) and routes like any other path.
///
/// Input: lines; each but the last is a route `HOST PREFIX` (`HOST` `-` for any host), the
/// last is the request `HOST PATH`.
pub fn router(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let request = lines.pop().unwrap_or_default();
    let routes: Vec<(Option<String>, String)> = lines
        .iter()
        .take(64)
        .map(|l| {
            let (h, p) = l.split_once(' ').unwrap_or((l, "/"));
            let host = (h != "-").then(|| h.to_ascii_lowercase());
            (host, p.to_string())
        })
        .collect();
    for (h, _) in &routes {
        if let Some(h) = h {
            check_normalized(h);
        }
    }
    let router = Router::new(routes.iter().map(|(h, p)| (h.as_deref(), p.as_str())));
    let (raw_host, raw_path) = request.split_once(' ').unwrap_or((request, "/"));
    check_normalized(raw_host);
    let Some(host) = normalize_host(raw_host) else {
        return;
    };
    // The path as levee routes it: normalized, or the raw one where that is refused.
    let normalized = check_normal_path(raw_path);
    let path = normalized.as_deref().unwrap_or(raw_path);
    let found = router.find(&host, path);
    let expected = reference_find(&routes, &host, path);
    assert_eq!(
        found, expected,
        "router disagrees with the reference for host {host:?} path {path:?} over {routes:?}"
    );
    if let Some(i) = found {
        assert!(path.starts_with(&routes[i].1));
    }
}

/// `normalize_path`'s promises: a refused path holds something ambiguous; an accepted one starts
/// with `/` (when the input did), has no empty or dot segment, no escape of an unreserved
/// character, of `/`, `\` or NUL, and normalizes to itself without a copy; and it never grows.
fn check_normal_path(raw: &str) -> Option<String> {
    use crate::proxy::path::normalize_path;
    use std::borrow::Cow;
    let out = match normalize_path(raw) {
        Ok(p) => p.into_owned(),
        Err(why) => {
            assert!(
                raw.contains('\\') || raw.contains('%'),
                "normalize_path({raw:?}) refused an innocent path: {why}"
            );
            return None;
        }
    };
    assert!(
        out.len() <= raw.len().max(1),
        "normalize_path({raw:?}) = {out:?} grew"
    );
    if !raw.starts_with('/') {
        assert_eq!(out, raw);
        return Some(out);
    }
    assert!(out.starts_with('/'), "normalize_path({raw:?}) = {out:?}");
    assert!(!out.contains("//"), "normalize_path({raw:?}) = {out:?}");
    for segment in out.split('/') {
        assert!(
            segment != "." && segment != "..",
            "normalize_path({raw:?}) = {out:?}"
        );
    }
    assert!(!out.contains('\\'), "normalize_path({raw:?}) = {out:?}");
    for (i, _) in out.match_indices('%') {
        let digits = out.as_bytes().get(i + 1..i + 3).unwrap_or_default();
        assert!(
            digits.len() == 2
                && digits
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()),
            "normalize_path({raw:?}) = {out:?}: escape not in upper case"
        );
    }
    let upper = out.to_ascii_uppercase();
    for escape in [
        "%2F", "%5C", "%00", "%2E", "%41", "%7E", "%5F", "%2D", "%30",
    ] {
        assert!(!upper.contains(escape), "normalize_path({raw:?}) = {out:?}");
    }
    assert!(
        matches!(normalize_path(&out), Ok(Cow::Borrowed(p)) if p == out),
        "normalize_path({raw:?}) = {out:?} is not normal itself"
    );
    Some(out)
}

fn check_normalized(raw: &str) {
    if let Some(h) = normalize_host(raw) {
        assert!(
            !h.bytes().any(|b| b.is_ascii_uppercase()
                || b.is_ascii_whitespace()
                || b == b'/'
                || b == b'@'),
            "normalize_host({raw:?}) = {h:?}"
        );
        assert!(h.len() <= raw.len(), "normalize_host({raw:?}) grew");
    }
}

/// What the router should answer, the slow and obvious way: the exact host's routes if any,
/// else those of the longest matching wildcard, else the host-less ones; then the longest
/// prefix of the path, the earliest route on a tie.
fn reference_find(routes: &[(Option<String>, String)], host: &str, path: &str) -> Option<usize> {
    let exact: Vec<usize> = (0..routes.len())
        .filter(|&i| routes[i].0.as_deref() == Some(host) && !host.starts_with('*'))
        .collect();
    let candidates = if !exact.is_empty() {
        exact
    } else {
        let best_suffix = routes
            .iter()
            .filter_map(|(h, _)| h.as_deref()?.strip_prefix('*'))
            .filter(|s| host.len() > s.len() && host.ends_with(s))
            .max_by_key(|s| s.len());
        match best_suffix {
            Some(suffix) => (0..routes.len())
                .filter(|&i| {
                    routes[i]
                        .0
                        .as_deref()
                        .and_then(|h| h.strip_prefix('*'))
                        .is_some_and(|s| s == suffix)
                })
                .collect(),
            None => (0..routes.len())
                .filter(|&i| routes[i].0.is_none())
                .collect(),
        }
    };
    candidates
        .into_iter()
        .filter(|&i| path.starts_with(routes[i].1.as_str()))
        .min_by_key(|&i| (std::cmp::Reverse(routes[i].1.len()), i))
}

/// Header processing on an arbitrary header map: hop-by-hop headers never survive, the
/// forwarding headers always end with this hop, and the client address is the peer or one the
/// headers named.
///
/// Input: byte 0 holds flags (version, TLS, trusted peer, IPv6), then the peer address (4 or
/// 16 bytes), then lines: the first is the Host value, the rest `name:value` headers.
pub fn headers(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let version = match flags & 3 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        2 => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let tls = flags & 4 != 0;
    let trust = flags & 8 != 0;
    let (ip, rest): (IpAddr, &[u8]) = if flags & 16 != 0 && rest.len() >= 16 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&rest[..16]);
        (Ipv6Addr::from(b).into(), &rest[16..])
    } else if rest.len() >= 4 {
        (
            Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]).into(),
            &rest[4..],
        )
    } else {
        (Ipv4Addr::LOCALHOST.into(), rest)
    };
    let trusted: Vec<Cidr> = if trust {
        ["10.0.0.0/8", "127.0.0.0/8", "::1/128", "fd00::/8"]
            .iter()
            .filter_map(|c| Cidr::parse(c).ok())
            .collect()
    } else {
        Vec::new()
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let host = lines
        .next()
        .and_then(|h| HeaderValue::from_bytes(h).ok())
        .unwrap_or(HeaderValue::from_static(""));
    let mut headers = HeaderMap::new();
    for line in lines.take(100) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    let peer = Peer::new(ip, tls, &trusted);
    assert_eq!(peer.trusted, trusted.iter().any(|c| c.contains(ip)));
    let client = forward::client_ip(&peer, &headers, &trusted);
    if !peer.trusted {
        assert_eq!(
            client, ip,
            "an untrusted peer's headers moved the client address"
        );
    } else if client != ip {
        let named = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|s| forward::parse_forwarded_ip(s.trim_ascii()) == Some(client));
        assert!(named, "client address {client} is from nowhere");
    }

    let upgrade = forward::is_upgrade_request(version, &headers);
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    forward::strip_hop_by_hop(&mut headers, upgrade);
    for name in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-authenticate",
    ] {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    if upgrade {
        assert_eq!(headers.get_all("connection").iter().count(), 1);
        assert!(headers.contains_key("upgrade"));
    } else {
        assert!(!headers.contains_key("connection"), "connection survived");
        assert!(!headers.contains_key("upgrade"), "upgrade survived");
        for name in &listed {
            assert!(
                !headers.contains_key(name),
                "{name} was listed in Connection"
            );
        }
    }

    forward::add_forwarding_headers(&mut headers, &peer, &host, version);
    let mut buf = [0u8; 64];
    let ip_text = crate::call::format_ip(ip, &mut buf).to_vec();
    let xff = headers
        .get_all("x-forwarded-for")
        .iter()
        .collect::<Vec<_>>();
    assert_eq!(xff.len(), 1, "x-forwarded-for is one line");
    assert!(
        xff[0].as_bytes().ends_with(&ip_text),
        "x-forwarded-for {:?} does not end with the peer",
        xff[0]
    );
    // A fuzz assertion: panicking is how the fuzzer reports a missing header.
    let via = headers.get("via").expect("via is set"); // ok: fuzz assertion
    assert!(via.as_bytes().ends_with(b" levee"), "via {via:?}");
    let proto = headers.get("x-forwarded-proto").expect("proto is set"); // ok: fuzz assertion
    if !peer.trusted {
        let want: &[u8] = if tls { b"https" } else { b"http" };
        assert_eq!(proto.as_bytes(), want);
        assert_eq!(headers.get("x-forwarded-host"), Some(&host));
    }
}

/// The upstream HTTP/1 response-head parser on arbitrary bytes, as a hostile upstream sends
/// them: never panics, gives the same answer whether the bytes arrive at once or split in two,
/// and never asks for more input while holding a head larger than its limit.
///
/// Input: byte 0 picks the request method (bits 0-1) and the split point (the rest); then the
/// bytes the upstream sends.
pub fn h1_response(data: &[u8]) {
    use crate::h1::response::{parse, Limits};
    use bytes::BytesMut;
    // The defaults of `max_response_header_bytes` and `max_response_headers`.
    const LIMITS: Limits = Limits {
        max_head: 64 * 1024,
        max_headers: 200,
    };
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let method = match flags & 3 {
        0 => http::Method::GET,
        1 => http::Method::HEAD,
        2 => http::Method::POST,
        _ => http::Method::CONNECT,
    };
    let summary = |r: Result<Option<crate::h1::response::Head>, _>, rest: &BytesMut| {
        r.map(|h| {
            h.map(|h| {
                let framing = format!("{:?}", h.framing);
                (h.status, h.headers, framing, h.keep_alive, rest.len())
            })
        })
        .map_err(|e: crate::h1::H1Error| e.to_string())
    };
    let mut whole = BytesMut::from(input);
    let at_once = summary(parse(&mut whole, &method, LIMITS), &whole);
    if let Ok(None) = at_once {
        assert!(
            whole.len() <= LIMITS.max_head,
            "waits for more holding {} bytes",
            whole.len()
        );
    }
    // The same bytes in two reads: a head split anywhere parses the same once it is complete.
    let split = usize::from(flags >> 2).min(input.len());
    let mut buf = BytesMut::from(&input[..split]);
    let first = parse(&mut buf, &method, LIMITS);
    let split_answer = match first {
        Ok(None) => {
            buf.extend_from_slice(&input[split..]);
            summary(parse(&mut buf, &method, LIMITS), &buf)
        }
        other => {
            if split < input.len() {
                // Decided on the first part: only a complete head or an error may do that, and
                // the whole input must agree when it was an error.
                if other.is_err() {
                    assert!(
                        at_once.is_err(),
                        "a prefix was refused but the whole was not"
                    );
                }
                return;
            }
            summary(other, &buf)
        }
    };
    assert_eq!(
        format!("{at_once:?}"),
        format!("{split_answer:?}"),
        "split at {split}"
    );
}

/// The chunked body decoder on arbitrary bytes: never panics, decodes the same however the
/// input is split into reads, and never asks for more input while holding more bytes than its
/// line and trailer bounds allow (a hostile upstream cannot make it buffer without limit).
///
/// Input: byte 0 is the read size (1..=256); then the body bytes.
pub fn h1_chunked(data: &[u8]) {
    use crate::h1::chunked::{ChunkedDecoder, Decoded, MAX_SIZE_LINE, MAX_TRAILERS};
    use bytes::BytesMut;
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let bound = MAX_SIZE_LINE.max(MAX_TRAILERS) + 2;
    let run = |step: usize| -> (Vec<u8>, Result<bool, String>) {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf) {
                    Ok(Decoded::Data(x)) => {
                        assert!(!x.is_empty(), "an empty data piece");
                        out.extend_from_slice(&x);
                    }
                    Ok(Decoded::NeedMore) => {
                        assert!(
                            buf.len() <= bound,
                            "waits for more holding {} bytes",
                            buf.len()
                        );
                        break;
                    }
                    Ok(Decoded::Done) => return (out, Ok(true)),
                    Err(e) => return (out, Err(e.to_string())),
                }
            }
        }
        (out, Ok(false))
    };
    let (whole_out, whole) = run(input.len().max(1));
    let (split_out, split) = run(usize::from(step).max(1));
    assert_eq!(whole, split, "read size {step}");
    if whole.is_ok() {
        assert_eq!(whole_out, split_out, "read size {step}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_take_anything() {
        for data in [
            &b""[..],
            b"\xff\xfe",
            b"[[listener]]\nbind = \"127.0.0.1:0\"\n",
            b"- /\n*.a.b /x\na.b /\nwww.a.b /x/y",
            b"\x0b\x0a\x00\x00\x01example.com\nx-forwarded-for: 1.2.3.4, 10.0.0.2\nconnection: x-a, upgrade\nx-a: 1\nupgrade: ws",
        ] {
            config(data);
            router(data);
            headers(data);
            h1_response(data);
            h1_chunked(data);
        }
    }
}
