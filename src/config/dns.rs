//! DNS service discovery, the config half: `[upstream] dns_refresh` and `[dns] nameservers`
//! validated, and the rule that turns an upstream's endpoint names into the addresses they
//! resolved to (`crate::dns` resolves; `crate::snapshot` builds the endpoints from this).

use super::diagnostics::Diagnostics;
use super::model::{DnsConfig, UpstreamConfig};
use super::raw::RawDns;
use super::units::Dur;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use toml::Spanned;

/// The most addresses one name contributes; a bigger answer is cut (and logged) there.
pub const MAX_ADDRESSES_PER_NAME: usize = 64;

/// The shortest and longest `dns_refresh`.
pub const REFRESH_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// What each endpoint name of an upstream resolved to: `"host:port"` → `["ip:port", ...]`.
pub type Resolved = HashMap<String, Vec<String>>;

pub(super) fn refresh(raw: &Spanned<Dur>, d: &mut Diagnostics) -> Option<Duration> {
    let v = raw.get_ref().0;
    let (lo, hi) = REFRESH_RANGE;
    if v < lo || v > hi {
        d.at(
            raw.span(),
            format!(
                r#"dns_refresh = "{}" is out of range: 1s..=1h, like "5s" (leave it out to resolve names as the connector does)"#,
                humantime::format_duration(v)
            ),
        );
        return None;
    }
    Some(v)
}

pub(super) fn dns(raw: RawDns, d: &mut Diagnostics) -> DnsConfig {
    let mut nameservers = Vec::new();
    for s in raw.nameservers.unwrap_or_default() {
        let text = s.get_ref().trim();
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(a) => nameservers.push(a),
            None => d.at(
                s.span(),
                format!(
                    r#"invalid nameserver "{text}": write IP or IP:PORT, like "10.0.0.2" or "127.0.0.1:5353""#
                ),
            ),
        }
    }
    DnsConfig { nameservers }
}

/// The endpoint names of `u` that need resolving: `host:port` whose host is not an IP address.
pub fn names(u: &UpstreamConfig) -> Vec<(String, u16)> {
    u.endpoints
        .iter()
        .filter_map(|e| {
            let (host, port) = e.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().is_ok() {
                return None;
            }
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// `u` with each resolved name replaced by its addresses, each with the name's weight; a name
/// not in `resolved` (never resolved yet) stays as written, and an address two names share is
/// listed once.
pub fn substitute(u: &UpstreamConfig, resolved: &Resolved) -> UpstreamConfig {
    let mut endpoints: Vec<String> = Vec::with_capacity(u.endpoints.len());
    let mut weights = Vec::with_capacity(u.endpoints.len());
    for (i, e) in u.endpoints.iter().enumerate() {
        let weight = u.endpoint_weights.get(i).copied().unwrap_or(1);
        let addresses = match resolved.get(e) {
            Some(a) if !a.is_empty() => a.as_slice(),
            _ => std::slice::from_ref(e),
        };
        for a in addresses {
            if !endpoints.contains(a) {
                endpoints.push(a.clone());
                weights.push(weight);
            }
        }
    }
    UpstreamConfig {
        endpoints,
        endpoint_weights: weights,
        ..u.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<super::super::Config, String> {
        let base =
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nupstream = \"u\"\n";
        super::super::parse("t.toml", &format!("{base}{text}"), Path::new("."))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn dns_refresh_is_bounded_and_points_at_its_value() {
        let up = |r: &str| {
            parse(&format!(
                "[[upstream]]\nname = \"u\"\nendpoints = [\"app.internal:80\"]\ndns_refresh = \"{r}\"\n"
            ))
        };
        assert_eq!(
            up("5s").unwrap().upstreams[0].dns_refresh,
            Some(Duration::from_secs(5))
        );
        let short = up("10ms").unwrap_err();
        assert!(short.contains("t.toml:9:15"), "{short}");
        assert!(short.contains("out of range: 1s..=1h"), "{short}");
        let long = up("2h").unwrap_err();
        assert!(long.contains("out of range"), "{long}");
        let plain = parse("[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n").unwrap();
        assert_eq!(plain.upstreams[0].dns_refresh, None, "off by default");
    }

    #[test]
    fn nameservers_parse_with_or_without_a_port_and_bad_ones_are_placed() {
        let up = "[[upstream]]\nname = \"u\"\nendpoints = [\"a:1\"]\n";
        let ok = parse(&format!(
            "{up}[dns]\nnameservers = [\"127.0.0.1:5353\", \"10.0.0.2\", \"[::1]:53\"]\n"
        ))
        .unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:5353", "10.0.0.2:53", "[::1]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ok.dns.nameservers, want);
        let bad = parse(&format!("{up}[dns]\nnameservers = [\"ns.example:53\"]\n")).unwrap_err();
        assert!(bad.contains("t.toml:10:16"), "{bad}");
        assert!(
            bad.contains("invalid nameserver \"ns.example:53\""),
            "{bad}"
        );
        let unknown = parse(&format!("{up}[dns]\nserver = \"1.1.1.1\"\n")).unwrap_err();
        assert!(unknown.contains("t.toml:10"), "{unknown}");
    }

    #[test]
    fn names_are_replaced_by_their_addresses_with_their_weights() {
        let c = parse(
            "[[upstream]]\nname = \"u\"\nendpoints = [\"10.0.0.9:80\", { address = \"app:80\", weight = 3 }, \"other:81\"]\n",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(
            names(u),
            vec![("app".to_string(), 80), ("other".to_string(), 81)]
        );
        let mut r = Resolved::new();
        r.insert(
            "app:80".into(),
            vec!["10.0.0.1:80".into(), "10.0.0.2:80".into()],
        );
        let s = substitute(u, &r);
        assert_eq!(
            s.endpoints,
            ["10.0.0.9:80", "10.0.0.1:80", "10.0.0.2:80", "other:81"]
        );
        assert_eq!(s.endpoint_weights, [1, 3, 3, 1]);
        assert_eq!(
            substitute(u, &Resolved::new()),
            *u,
            "nothing resolved: as written"
        );
    }
}
