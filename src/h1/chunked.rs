//! Incremental decoder for `Transfer-Encoding: chunked` response bodies (RFC 9112 §7.1).
//!
//! Strict where leniency has been a smuggling vector: every line ends in CRLF, the size is bare
//! hex of at most 16 digits, and the data must be followed by CRLF. Extensions and trailer fields
//! are read and dropped; both are bounded so an upstream cannot make levee buffer without limit.

use super::H1Error;
use bytes::{Buf, Bytes, BytesMut};

/// The longest chunk-size line (size plus extensions) accepted.
pub(crate) const MAX_SIZE_LINE: usize = 4096;
/// The most trailer-section bytes accepted before the body is refused.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one step of decoding produced.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next piece: read more and call again.
    NeedMore,
    /// The last chunk and the trailer section are consumed; the connection may be reused.
    Done,
}

impl ChunkedDecoder {
    /// Consumes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = take_line(buf, MAX_SIZE_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Chunked("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    // Checked: a line of exactly the room left, plus its CRLF, takes the count
                    // past MAX_TRAILERS, and a wrapped subtraction would lift the bound entirely.
                    let room = MAX_TRAILERS
                        .checked_sub(self.trailer_bytes)
                        .ok_or(H1Error::Chunked("trailer section too long"))?;
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.trailer_bytes = self.trailer_bytes.saturating_add(line.len() + 2);
                    }
                }
                State::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Removes one CRLF-terminated line from `buf` and returns it without the CRLF; `None` when the
/// line is not complete yet. A line longer than `max` or ending in a bare LF is an error.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, H1Error> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(H1Error::Chunked("bare LF in chunked framing")),
        Some(lf) if window[lf - 1] != b'\r' => Err(H1Error::Chunked("bare LF in chunked framing")),
        Some(lf) => {
            let mut line = buf.split_to(lf + 1);
            line.truncate(lf - 1);
            Ok(Some(line))
        }
        None if window.len() >= max.saturating_add(2) => Err(H1Error::Chunked(
            "chunk-size line or trailer section too long",
        )),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`: the size, at most 16 hex digits.
fn parse_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(H1Error::Chunked("invalid chunk size"));
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    if let Some(i) = ext {
        if rest[i] != b';' {
            return Err(H1Error::Chunked("invalid chunk size"));
        }
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        // Sixteen hex digits fit a u64 exactly, so this cannot overflow.
        size = (size << 4) | u64::from((b as char).to_digit(16).unwrap_or(0));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool), H1Error> {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed one byte at a time: every split point must decode the same way.
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf)? {
                    Decoded::Data(x) => out.extend_from_slice(&x),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn decodes_chunks_split_at_every_byte() {
        let (out, done) = decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
    }

    #[test]
    fn skips_trailers() {
        let (out, done) = decode_all(b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-b: 2\r\n\r\n").unwrap();
        assert_eq!(out, b"abc");
        assert!(done);
    }

    #[test]
    fn leaves_the_next_response_in_the_buffer() {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"a"))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn large_sizes_are_hex() {
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"1F\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::NeedMore);
        assert_eq!(d.state, State::Data(31));
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"x\r\n",
            b"-1\r\n",
            b"5 x\r\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nx: y\n\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE + 10));
        assert!(decode_all(&long).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"x-t: 0123456789\r\n");
        }
        assert!(decode_all(&trailers).is_err());
    }

    /// A trailer line that fills the section to one byte short, then bytes with no LF: the room
    /// left must not wrap around (it did, and the decoder then buffered without bound).
    #[test]
    fn a_trailer_line_at_the_limit_then_no_lf_is_refused() {
        let mut input = b"0\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_TRAILERS - 1));
        input.extend_from_slice(b"\r\n");
        input.extend(std::iter::repeat_n(b'b', 64));
        let mut d = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&input[..]);
        assert!(d.decode(&mut buf).is_err());
        assert!(d.trailer_bytes <= MAX_TRAILERS + 2);
    }
}
