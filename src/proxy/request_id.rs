//! `x-request-id`: a valid one from the client is kept, otherwise levee makes one (128 random
//! bits, 32 hex digits). It goes upstream, back to the client on every answer (levee's own
//! included) and into the access log.
//!
//! Valid: 1 to 128 characters, each visible ASCII (`!` to `~`, no spaces). Anything else (empty,
//! too long, spaces, control or non-ASCII bytes, several `x-request-id` headers) is replaced, so
//! logs and upstreams never see a value a client crafted to break them.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept.
pub const MAX_LEN: usize = 128;

/// The request's id: the client's when valid, a fresh one otherwise.
pub fn for_request(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    match (sent.next(), sent.next()) {
        (Some(v), None) if is_valid(v.as_bytes()) => v.clone(),
        _ => generate(),
    }
}

pub fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// 128 random bits as 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_kept_others_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, "abc-123_X.y".parse().unwrap());
        assert_eq!(for_request(&h), "abc-123_X.y");
        for bad in ["", "a b", &"x".repeat(129)] {
            h.insert(X_REQUEST_ID, bad.parse().unwrap());
            let id = for_request(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        h.insert(X_REQUEST_ID, "x".repeat(128).parse().unwrap());
        assert_eq!(for_request(&h).len(), 128);
        h.append(X_REQUEST_ID, "second".parse().unwrap());
        assert_eq!(for_request(&h).len(), 32, "two ids: neither is believed");
    }

    #[test]
    fn generated_ids_are_hex_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert!(is_valid(a.as_bytes()));
    }
}
