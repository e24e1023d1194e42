//! UDP datagrams on a tunnel stream, as HTTP Datagrams in capsules (RFC 9297), the framing
//! CONNECT-UDP uses (RFC 9298): over HTTP/2 on the CONNECT stream's body, and the same bytes
//! on a QUIC tunnel stream.
//!
//! ```text
//! capsule  = type:varint length:varint value(length bytes)       (QUIC varints, RFC 9000 16)
//! DATAGRAM = type 0x00, value = context-id:varint (0: a UDP payload) payload
//! ```
//! Capsules of other types are skipped, as RFC 9297 asks; a datagram with another context id
//! is dropped. A capsule longer than [`MAX_CAPSULE`] ends the stream with an error: no UDP
//! payload is larger than 65,527 bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The DATAGRAM capsule type.
pub const DATAGRAM: u64 = 0x00;

/// Largest capsule value accepted: a maximal UDP payload and its context id.
pub const MAX_CAPSULE: u64 = 65_535 + 8;

/// Largest value a QUIC varint holds.
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// Why a stream of capsules cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapsuleError {
    /// A capsule announces more than [`MAX_CAPSULE`] bytes.
    #[error("capsule of {0} bytes is larger than the limit of {MAX_CAPSULE}")]
    TooLong(u64),
    /// The stream ended inside a capsule.
    #[error("the stream ended inside a capsule")]
    Truncated,
}

/// Appends `v` as a QUIC variable-length integer; values above [`MAX_VARINT`] are clamped.
pub fn put_varint(out: &mut BytesMut, v: u64) {
    let v = v.min(MAX_VARINT);
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        out.put_u32(0x8000_0000 | v as u32);
    } else {
        out.put_u64(0xc000_0000_0000_0000 | v);
    }
}

/// Reads a QUIC variable-length integer from the front of `buf`: the value and its length,
/// or `None` when `buf` is too short.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Appends one UDP payload as a DATAGRAM capsule (context id 0).
pub fn put_datagram(out: &mut BytesMut, payload: &[u8]) {
    put_varint(out, DATAGRAM);
    put_varint(out, payload.len() as u64 + 1);
    put_varint(out, 0);
    out.put_slice(payload);
}

/// One UDP payload as a DATAGRAM capsule.
pub fn datagram(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    put_datagram(&mut out, payload);
    out.freeze()
}

/// Reads capsules from a byte stream fed in pieces: sans-I/O, buffers at most one capsule.
#[derive(Debug, Default)]
pub struct CapsuleReader {
    buf: BytesMut,
}

impl CapsuleReader {
    /// A reader with nothing buffered.
    pub fn new() -> Self {
        CapsuleReader::default()
    }

    /// Adds bytes that arrived on the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next UDP payload whose capsule is complete (`Ok(None)`: more bytes needed).
    /// Other capsules and other contexts are skipped.
    pub fn next_datagram(&mut self) -> Result<Option<Bytes>, CapsuleError> {
        loop {
            let Some((kind, a)) = get_varint(&self.buf) else {
                return Ok(None);
            };
            let Some((len, b)) = get_varint(&self.buf[a..]) else {
                return Ok(None);
            };
            if len > MAX_CAPSULE {
                return Err(CapsuleError::TooLong(len));
            }
            let head = a + b;
            let len = len as usize;
            if self.buf.len() < head + len {
                return Ok(None);
            }
            self.buf.advance(head);
            let mut value = self.buf.split_to(len).freeze();
            if kind != DATAGRAM {
                continue;
            }
            match get_varint(&value) {
                Some((0, n)) => {
                    value.advance(n);
                    return Ok(Some(value));
                }
                // Another context (or none at all): not a UDP payload of ours.
                _ => continue,
            }
        }
    }

    /// At the end of the stream: an error if a capsule was cut short.
    pub fn finish(&self) -> Result<(), CapsuleError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CapsuleError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_size() {
        for v in [
            0,
            1,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            MAX_VARINT,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(get_varint(&b), Some((v, b.len())), "{v}");
            assert_eq!(get_varint(&b[..b.len() - 1]), None, "{v} cut short");
        }
        // RFC 9000 appendix A.1 examples.
        assert_eq!(get_varint(&[0x25]), Some((37, 1)));
        assert_eq!(get_varint(&[0x7b, 0xbd]), Some((15_293, 2)));
        assert_eq!(
            get_varint(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Some((494_878_333, 4))
        );
    }

    #[test]
    fn datagrams_come_back_whatever_the_pieces() {
        let payloads: Vec<Vec<u8>> =
            vec![vec![], b"dns?".to_vec(), vec![7u8; 1500], vec![1u8; 65_527]];
        let mut stream = BytesMut::new();
        for p in &payloads {
            put_datagram(&mut stream, p);
            // A capsule of an unknown type between them is skipped.
            put_varint(&mut stream, 0x2a);
            put_varint(&mut stream, 3);
            stream.put_slice(b"xyz");
        }
        for piece in [1, 2, 7, 1000, stream.len()] {
            let mut r = CapsuleReader::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                r.push(chunk);
                while let Some(d) = r.next_datagram().unwrap() {
                    got.push(d.to_vec());
                }
            }
            assert_eq!(got, payloads, "pieces of {piece}");
            r.finish().unwrap();
        }
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        let mut r = CapsuleReader::new();
        let mut b = BytesMut::new();
        put_varint(&mut b, DATAGRAM);
        put_varint(&mut b, MAX_CAPSULE + 1);
        r.push(&b);
        assert_eq!(
            r.next_datagram(),
            Err(CapsuleError::TooLong(MAX_CAPSULE + 1))
        );
        let mut r = CapsuleReader::new();
        r.push(&datagram(b"abc")[..4]);
        assert_eq!(r.next_datagram(), Ok(None));
        assert_eq!(r.finish(), Err(CapsuleError::Truncated));
        // Another context id is not ours.
        let mut b = BytesMut::new();
        put_varint(&mut b, DATAGRAM);
        put_varint(&mut b, 2);
        put_varint(&mut b, 1);
        b.put_u8(9);
        let mut r = CapsuleReader::new();
        r.push(&b);
        assert_eq!(r.next_datagram(), Ok(None));
        r.finish().unwrap();
    }
}
