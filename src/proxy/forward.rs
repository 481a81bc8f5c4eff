//! Header rewriting between client and upstream: hop-by-hop headers go, forwarding headers
//! (`x-forwarded-*`, `via`) come, and the client's address is only believed from trusted proxies.

use crate::call::format_ip;
use crate::config::Cidr;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::Version;
use std::net::IpAddr;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// legacy ones proxies in the wild still send.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// levee's own verdict on an answer it made; removed from upstream responses.
pub const X_LEVEE_ERROR: HeaderName = HeaderName::from_static("x-levee-error");

/// True when the request asks for a WebSocket upgrade over HTTP/1.1: the only protocol switch
/// levee tunnels. Any other token (`h2c` above all: the upstream would then serve any path over
/// HTTP/2 inside the tunnel, past routes, limits and breakers) is dropped with the other
/// hop-by-hop headers, and the request is answered as plain HTTP/1.1.
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        && connection_has_token(headers, "upgrade")
}

/// True when the client asked for the connection to end after this request: HTTP/1.0 (whose
/// keep-alive extension levee does not count on) or `Connection: close`.
pub fn wants_close(version: Version, headers: &HeaderMap) -> bool {
    version != Version::HTTP_11 || connection_has_token(headers, "close")
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including any the `Connection` header names. When `upgrade` is
/// set, `Upgrade: websocket` (alone, whatever else the client offered) and `Connection: upgrade`
/// are restored so the tunnel can be set up.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass of cheap name comparisons over the headers present tells which hop-by-hop names
    // to remove; a hashed lookup per name on every message costs more. Upstream responses
    // usually carry `Connection: keep-alive`, requests usually nothing.
    let mut present = [false; 8];
    let mut any = false;
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present[i] = true;
            any = true;
        }
    }
    if !any && !upgrade {
        return;
    }
    // `Connection` (index 0) may name further headers to drop; the usual tokens are not names.
    if present[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, here) in HOP_BY_HOP.iter().zip(present) {
        if here && !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// True when `te` lists `trailers`: the client accepts trailers, which gRPC requires.
pub fn te_accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// What the handler knows about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub ip: IpAddr,
    pub tls: bool,
    pub trusted: bool,
}

impl Peer {
    pub fn new(ip: IpAddr, tls: bool, trusted_proxies: &[Cidr]) -> Self {
        let trusted = trusted_proxies.iter().any(|c| c.contains(ip));
        Peer { ip, tls, trusted }
    }
}

/// The client's address: the peer itself, or, when the peer is a trusted proxy, the rightmost
/// address in `x-forwarded-for` that is not also a trusted proxy (the leftmost is client-forged).
///
/// The walk goes right to left, one hop at a time, as nginx's `real_ip_recursive` does: each
/// entry was written by the hop to its right, so it is believed only while that hop is trusted.
/// An entry that is not an address (`unknown`, garbage) ends the walk, and the client is the
/// last trusted hop reached: skipping it would let whatever stands to its left, written by
/// anyone, become the client and the rate-limit key. Entries may carry a port (`ip:port`,
/// `[v6]:port`), as some load balancers write them; empty entries (`a,,b`) are skipped.
pub fn client_ip(peer: &Peer, headers: &HeaderMap, trusted_proxies: &[Cidr]) -> IpAddr {
    if !peer.trusted {
        return peer.ip;
    }
    let mut client = peer.ip;
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty());
    for entry in entries {
        let Some(ip) = parse_forwarded_ip(entry) else {
            break;
        };
        client = ip;
        if !trusted_proxies.iter().any(|c| c.contains(ip)) {
            break;
        }
    }
    client
}

/// An `x-forwarded-for` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
pub fn parse_forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    let v6 = text.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Adds the forwarding headers an upstream expects behind a proxy. `host` is the request's
/// host as the client sent it (with its port, if any).
pub fn add_forwarding_headers(
    headers: &mut HeaderMap,
    peer: &Peer,
    host: &HeaderValue,
    version: Version,
) {
    let mut ip_buf = [0u8; 64];
    let ip = format_ip(peer.ip, &mut ip_buf);
    // The entry API hashes each name once for both the lookup and the write.
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut e) => {
            // Several x-forwarded-for lines are folded into one list, as RFC 9110 allows.
            let mut list: Vec<u8> = Vec::with_capacity(64);
            for v in e.iter() {
                let v = v.as_bytes().trim_ascii();
                if !v.is_empty() {
                    list.extend_from_slice(v);
                    list.extend_from_slice(b", ");
                }
            }
            list.extend_from_slice(ip);
            if let Ok(v) = HeaderValue::from_bytes(&list) {
                e.insert(v);
            }
        }
        Entry::Vacant(e) => {
            if let Ok(v) = HeaderValue::from_bytes(ip) {
                e.insert(v);
            }
        }
    }
    let proto = HeaderValue::from_static(if peer.tls { "https" } else { "http" });
    match headers.entry(X_FORWARDED_PROTO) {
        Entry::Occupied(_) if peer.trusted => {}
        Entry::Occupied(mut e) => {
            e.insert(proto);
        }
        Entry::Vacant(e) => {
            e.insert(proto);
        }
    }
    match headers.entry(X_FORWARDED_HOST) {
        Entry::Occupied(_) if peer.trusted => {}
        Entry::Occupied(mut e) => {
            e.insert(host.clone());
        }
        Entry::Vacant(e) => {
            e.insert(host.clone());
        }
    }
    let hop = match version {
        Version::HTTP_2 => "2 levee",
        Version::HTTP_10 => "1.0 levee",
        _ => "1.1 levee",
    };
    let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {hop}")).ok(),
        None => Some(HeaderValue::from_static(hop)),
    };
    if let Some(v) = via {
        headers.insert(header::VIA, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn ips_format_like_display() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(format_ip(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn strips_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("x-ok", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-ok"));
    }

    #[test]
    fn upgrade_survives_when_tunnelling() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "h2c, WebSocket")]);
        assert!(is_upgrade_request(Version::HTTP_11, &h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn only_websocket_is_an_upgrade() {
        for (connection, upgrade) in [
            ("Upgrade, HTTP2-Settings", "h2c"),
            ("upgrade", "echo"),
            ("upgrade", "TLS/1.0"),
            ("keep-alive", "websocket"),
        ] {
            let mut h = map(&[
                ("connection", connection),
                ("upgrade", upgrade),
                ("http2-settings", "AAMAAABkAAQAAP__"),
            ]);
            assert!(!is_upgrade_request(Version::HTTP_11, &h), "{upgrade}");
            strip_hop_by_hop(&mut h, false);
            assert!(!h.contains_key("upgrade") && !h.contains_key("connection"));
        }
        let h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(!is_upgrade_request(Version::HTTP_10, &h));
    }

    #[test]
    fn forwarded_for_is_appended_and_untrusted_by_default() {
        let peer = Peer::new("10.0.0.9".parse().unwrap(), false, &[]);
        let mut h = map(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(&peer, &h, &[]), peer.ip);
        add_forwarding_headers(
            &mut h,
            &peer,
            &HeaderValue::from_static("example.com"),
            Version::HTTP_11,
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["via"], "1.1 levee");
    }

    #[test]
    fn trusted_proxy_reveals_client() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = Peer::new("10.0.0.9".parse().unwrap(), false, &trusted);
        let h = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(
            client_ip(&peer, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_entries_with_ports_are_addresses() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = Peer::new("10.0.0.9".parse().unwrap(), false, &trusted);
        for (xff, client) in [
            ("6.6.6.6, 9.9.9.9:1234", "9.9.9.9"),
            ("6.6.6.6, [2001:db8::1]:443", "2001:db8::1"),
            ("6.6.6.6, [2001:db8::1]", "2001:db8::1"),
            ("6.6.6.6, 2001:db8::2, 10.0.0.1:80", "2001:db8::2"),
            ("6.6.6.6,, 1.2.3.4 ,", "1.2.3.4"),
        ] {
            let h = map(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(&peer, &h, &trusted).to_string(), client, "{xff}");
        }
    }

    /// A forged entry behind one that does not parse never becomes the client: the walk stops
    /// at the last trusted hop (the peer, or a trusted address to the right of the bad entry).
    #[test]
    fn an_unparseable_forwarded_entry_ends_the_walk() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = Peer::new("10.0.0.9".parse().unwrap(), false, &trusted);
        for (xff, client) in [
            ("6.6.6.6, unknown", "10.0.0.9"),
            ("6.6.6.6, 1.2.3.4:abc", "10.0.0.9"),
            ("6.6.6.6, _hidden, 10.1.1.1", "10.1.1.1"),
            ("6.6.6.6, 2001:db8::1:443x", "10.0.0.9"),
        ] {
            let h = map(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(&peer, &h, &trusted).to_string(), client, "{xff}");
        }
        // Several header lines read as one list, the last line nearest.
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        h.append("x-forwarded-for", HeaderValue::from_static("unknown"));
        assert_eq!(client_ip(&peer, &h, &trusted), peer.ip);
    }
}
