//! Human units in the config: durations (`"250ms"`, `"2s"`, `"1m"`) and byte sizes (`"64KiB"`, `1048576`).

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written as a string with a unit, as operators write them in nginx and Envoy configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a duration with a unit, like "250ms", "2s" or "1m""#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h30m"`; a bare number is refused because its unit would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            r#"duration "{s}" has no unit: write "{t}s" or "{t}ms""#
        ));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        format!(r#"invalid duration "{s}" ({e}): write a number with a unit, like "250ms", "2s" or "1m""#)
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            r#"duration "{s}" is longer than 10 years: write at most "10y" (a bigger one would overflow the clock)"#
        ));
    }
    Ok(d)
}

/// The longest duration a config may hold: 10 years of 365.25 days (humantime's `"10y"`).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// A byte size: an integer number of bytes or a string with a unit (`"64KiB"`, `"10MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a size in bytes, like 65536 or "64KiB""#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses sizes with binary (`KiB`, `MiB`, `GiB`) or decimal (`KB`, `MB`, `GB`) units, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!(r#"invalid size "{s}": write bytes like 65536 or "64KiB""#))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                r#"invalid size unit "{other}" in "{s}": use B, KiB, MiB, GiB (or KB, MB, GB)"#
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!(r#"size "{s}" is too large"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("10y"), Ok(MAX_DURATION));
        assert!(parse_duration("18000000000000000000s")
            .unwrap_err()
            .contains("longer than 10 years"));
        assert!(parse_duration("3653days").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
