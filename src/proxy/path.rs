//! Request path normalization, so that what routes match is what the upstream receives.
//!
//! Routes match path prefixes, and upstreams (most web frameworks, nginx, Envoy with
//! `normalize_path`) normalize the path before they dispatch. If levee matched the raw path,
//! `/public/../admin/x`, `/public/%2e%2e/admin/x` or `//admin/x` would skip `/admin/`'s route (its
//! rate limit, its breaker) and still reach the upstream's admin handler. So, before routing:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%61` → `a`)
//!    and the hex digits of the other escapes are uppercased (RFC 3986 §6.2.2.1–2), so one
//!    resource has one spelling;
//! 2. repeated slashes are merged (as nginx's `merge_slashes` does);
//! 3. dot segments are removed (RFC 3986 §5.2.4), never climbing above the root.
//!
//! An encoded slash or backslash (`%2F`, `%5C`), a raw backslash, a NUL (`%00`) or a malformed
//! escape is refused rather than guessed at: upstreams disagree on what they mean (`%2F` is a
//! separator to some and data to others, `\` is a separator on Windows), and a request whose
//! meaning depends on who reads it is the bypass this module exists to prevent.
//!
//! This runs on every request: a path that is already normal is checked in one pass over its
//! bytes and borrowed, not copied.

use http::uri::{PathAndQuery, Uri};
use std::borrow::Cow;

/// Why a path was refused; the text goes into the 400's log line.
pub type PathError = &'static str;

/// The normalized form of `path` (the path only, without the query). Paths that do not start
/// with `/` (`*` for `OPTIONS *`) are left as they are.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes())? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// `uri` with its path replaced by `path` (already normalized), its query untouched, and its
/// scheme and authority (absolute form, HTTP/2) kept. None if the result is not a valid URI.
pub fn with_path(uri: Uri, path: &str) -> Option<Uri> {
    let mut parts = uri.into_parts();
    let path_and_query = match parts.path_and_query.as_ref().and_then(|p| p.query()) {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    };
    parts.path_and_query = Some(path_and_query.ok()?);
    Uri::from_parts(parts).ok()
}

/// True when normalizing would change nothing: no escape that decoding would change or refuse,
/// no empty segment (`//`) and no dot segment. A raw backslash is refused here already.
fn is_normal(path: &[u8]) -> Result<bool, PathError> {
    // One plain pass: on paths this short it beats memchr's vectorized searches (measured).
    let mut normal = true;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'\\' => return Err("backslash in path"),
            b'%' if !is_kept_escape(path.get(i + 1..i + 3)) => normal = false,
            b'/' => {
                let rest = &path[i + 1..];
                if rest.starts_with(b"/") || is_dot_segment_start(rest) {
                    normal = false;
                }
            }
            _ => {}
        }
    }
    Ok(normal)
}

/// True when `rest` (what follows a `/`) starts with a `.` or `..` segment.
fn is_dot_segment_start(rest: &[u8]) -> bool {
    let dots = rest.iter().take(2).take_while(|&&b| b == b'.').count();
    dots > 0 && matches!(rest.get(dots), None | Some(b'/'))
}

/// True for the two hex digits of an escape that normalization keeps as it is: uppercase, and
/// neither an unreserved character (decoded) nor one that is refused.
fn is_kept_escape(digits: Option<&[u8]>) -> bool {
    let Some(&[hi, lo]) = digits else {
        return false;
    };
    let upper = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    if !upper(hi) || !upper(lo) {
        return false;
    }
    let value = hex_value(hi).unwrap_or(0) << 4 | hex_value(lo).unwrap_or(0);
    !is_unreserved(value) && !matches!(value, b'/' | b'\\' | 0)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Step 1: unreserved characters decoded, other escapes kept with uppercase hex digits.
fn decode_unreserved(path: &[u8]) -> Result<String, PathError> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i + 1).copied().and_then(hex_value),
                    path.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err("malformed percent-encoding in path");
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' | b'\\' => return Err("encoded slash or backslash in path"),
                    0 => return Err("encoded NUL in path"),
                    v if is_unreserved(v) => out.push(v),
                    _ => {
                        out.push(b'%');
                        out.push(path[i + 1].to_ascii_uppercase());
                        out.push(path[i + 2].to_ascii_uppercase());
                    }
                }
                i += 3;
            }
            b'\\' => return Err("backslash in path"),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII escapes were replaced by ASCII bytes, so the input's UTF-8 is intact.
    String::from_utf8(out).map_err(|_| "path is not UTF-8")
}

/// Steps 2 and 3 on a path that starts with `/`: empty segments dropped, `.` dropped, `..`
/// removing the segment before it (none above the root). A path whose last segment is empty
/// or a dot segment keeps its trailing slash, as RFC 3986 §5.2.4 does (`/a/b/..` → `/a/`).
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut segments = path.get(1..).unwrap_or_default().split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" | "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            s => {
                out.push('/');
                out.push_str(s);
                continue;
            }
        }
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b.c",
            "/.well-known/x",
            "/a/..b/c.",
            "/a/...",
            "/a%20b/caf%C3%A9",
            "*",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn the_bypasses_of_issue_14_all_become_admin() {
        for p in [
            "/public/../admin/x",
            "/public/%2e%2e/admin/x",
            "/public/%2E%2E/admin/x",
            "//admin/x",
            "/%61dmin/x",
            "/./admin/x",
            "/admin/./x",
            "/admin//x",
            "/../admin/x",
            "/a/b/../../admin/x",
            "/public/.%2e/admin/x",
        ] {
            assert_eq!(norm(p).as_deref(), Ok("/admin/x"), "{p}");
        }
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        // RFC 3986 §5.2.4's own examples, and the edges of the root.
        assert_eq!(norm("/a/b/c/./../../g").as_deref(), Ok("/a/g"));
        assert_eq!(norm("/mid/content=5/../6").as_deref(), Ok("/mid/6"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/..").as_deref(), Ok("/"));
        assert_eq!(norm("/../..").as_deref(), Ok("/"));
        assert_eq!(norm("/.").as_deref(), Ok("/"));
        assert_eq!(norm("//").as_deref(), Ok("/"));
        assert_eq!(norm("///a///").as_deref(), Ok("/a/"));
    }

    #[test]
    fn escapes_of_reserved_characters_stay_encoded_in_one_case() {
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(norm("/%7euser/%41").as_deref(), Ok("/~user/A"));
        assert_eq!(norm("/a%3fb").as_deref(), Ok("/a%3Fb"));
        // A decoded `%` is not decoded twice.
        assert_eq!(norm("/%2561dmin").as_deref(), Ok("/%2561dmin"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/public/..%2fadmin/x",
            "/public/..%2Fadmin/x",
            "/a%5cb",
            "/a%5Cb",
            "/a\\b",
            "/a%00b",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%2",
        ] {
            assert!(norm(p).is_err(), "{p} was accepted as {:?}", norm(p));
        }
    }

    #[test]
    fn the_query_and_authority_survive_a_new_path() {
        let uri: Uri = "http://a.example/x/../y?q=/../%2e&r".parse().unwrap();
        let uri = with_path(uri, "/y").unwrap();
        assert_eq!(uri.to_string(), "http://a.example/y?q=/../%2e&r");
        let uri: Uri = "/x//y".parse().unwrap();
        assert_eq!(with_path(uri, "/x/y").unwrap().to_string(), "/x/y");
    }

    /// A small fuzz run on every `cargo test`: paths assembled from the pieces bypasses are
    /// made of, through the router fuzz target's checks (`crate::fuzzing::router`), which
    /// panic when a promise of `normalize_path` breaks.
    #[test]
    fn generated_paths_keep_the_promises() {
        const PIECES: [&str; 22] = [
            "/", "/", ".", "..", "%2e", "%2E", "%2f", "%5C", "%00", "%61", "%7e", "%20", "%c3%a9",
            "a", "admin", "\\", "%", "%z", "é", "//", "?", ";",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let mut path = String::from("/");
            for _ in 0..next() % 10 {
                path.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let input = format!("- /\n- /admin/\nh.example {path}");
            crate::fuzzing::router(input.as_bytes());
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in [
            "/a/./b/../c//d/%2e/%61",
            "/%2e%2e/%2e",
            "/a/b/..",
            "/x%7e%20/..//y/",
            "/caf\u{e9}/../\u{1F30A}//%41",
        ] {
            let once = norm(p).unwrap();
            assert!(
                matches!(normalize_path(&once), Ok(Cow::Borrowed(_))),
                "{p} → {once} is not normal"
            );
        }
    }
}
