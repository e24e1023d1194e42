//! The tunnel's stream header: what the source node says about a connection before its bytes,
//! and what the destination node answers. Pure and sans-I/O: feed bytes, get a header or
//! "need more"; see `docs/TUNNEL.md` for the wire format.
//!
//! ```text
//! request  = "EW" version:u8 flags:u8 length:u16 TLV*        (length = bytes of TLVs)
//! TLV      = type:u8 length:u16 value
//!   1 original destination   family:u8 (4|6) address port:u16
//!   2 original source        family:u8 (4|6) address port:u16
//!   3 trace context          W3C traceparent, ASCII
//!   4 carried protocol       u8: 17 = UDP datagrams in capsules (wire::capsule); absent = TCP
//!   types < 128 not known to the reader are errors (critical); types >= 128 are skipped
//! response = "EW" version:u8 status:u8 length:u16 reason(UTF-8, `length` bytes)
//! ```
//! All integers are big-endian. A request or response longer than [`MAX_HEADER`] is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The QUIC tunnel's ALPN protocol id, version 1: the TLS handshake agrees on it before any
/// stream header is sent.
pub const ALPN: &[u8] = b"eastwall-tunnel/1";
/// The only version this node speaks.
pub const VERSION: u8 = 1;
/// Largest request or response header, in bytes (fixed part included).
pub const MAX_HEADER: usize = 4096;
const MAGIC: [u8; 2] = *b"EW";
const FIXED: usize = 6;

const T_DST: u8 = 1;
const T_SRC: u8 = 2;
const T_TRACE: u8 = 3;
const T_PROTO: u8 = 4;

/// What a tunnel stream carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A TCP connection's bytes.
    #[default]
    Tcp,
    /// A UDP session's datagrams, each in a DATAGRAM capsule ([`crate::capsule`]).
    Udp,
}

impl StreamKind {
    /// The IANA number of the carried protocol.
    pub fn number(self) -> u8 {
        match self {
            StreamKind::Tcp => 6,
            StreamKind::Udp => 17,
        }
    }
}

/// What a source node tells the destination node about a tunnelled connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// The destination the workload connected to.
    pub dst: SocketAddr,
    /// The workload's own address and port.
    pub src: SocketAddr,
    /// W3C trace context, if the connection carries one.
    pub trace: Option<String>,
    /// TCP bytes or UDP datagrams.
    pub kind: StreamKind,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The stream does not start with `EW`.
    #[error("not an eastwall tunnel stream (bad magic)")]
    Magic,
    /// A version this node does not speak.
    #[error("unsupported tunnel header version {0}")]
    Version(u8),
    /// Declared or actual length over [`MAX_HEADER`].
    #[error("tunnel header of {0} bytes exceeds the limit of {MAX_HEADER}")]
    TooLong(usize),
    /// A TLV runs past the header's end or has a wrong length for its type.
    #[error("malformed tunnel header field (type {0})")]
    Malformed(u8),
    /// A critical field this node does not know.
    #[error("unknown critical tunnel header field (type {0})")]
    UnknownCritical(u8),
    /// A required field is absent.
    #[error("tunnel header lacks the {0}")]
    Missing(&'static str),
    /// A field appears twice.
    #[error("tunnel header repeats field type {0}")]
    Repeated(u8),
    /// The stream ended before the header did.
    #[error("stream ended inside the tunnel header")]
    Truncated,
}

/// Outcome of trying to read a header from the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A complete header and the number of bytes it used.
    Done(T, usize),
    /// At least this many bytes are needed in total.
    NeedMore(usize),
}

impl StreamHeader {
    /// Serializes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut tlvs = Vec::with_capacity(48);
        put_addr(&mut tlvs, T_DST, self.dst);
        put_addr(&mut tlvs, T_SRC, self.src);
        if let Some(t) = &self.trace {
            let t = &t.as_bytes()[..t.len().min(512)];
            tlvs.push(T_TRACE);
            tlvs.extend_from_slice(&(t.len() as u16).to_be_bytes());
            tlvs.extend_from_slice(t);
        }
        // TCP streams carry no protocol field: their bytes are those older nodes expect.
        if self.kind != StreamKind::Tcp {
            tlvs.push(T_PROTO);
            tlvs.extend_from_slice(&1u16.to_be_bytes());
            tlvs.push(self.kind.number());
        }
        let mut out = Vec::with_capacity(FIXED + tlvs.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&(tlvs.len() as u16).to_be_bytes());
        out.extend_from_slice(&tlvs);
        out
    }

    /// Reads a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Decoded<StreamHeader>, HeaderError> {
        let len = match fixed(buf)? {
            Decoded::Done(len, _) => len,
            Decoded::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
        };
        let total = FIXED + len;
        if buf.len() < total {
            return Ok(Decoded::NeedMore(total));
        }
        let (mut dst, mut src, mut trace, mut kind) = (None, None, None, None);
        let mut rest = &buf[FIXED..total];
        while !rest.is_empty() {
            if rest.len() < 3 {
                return Err(HeaderError::Malformed(rest[0]));
            }
            let t = rest[0];
            let l = u16::from_be_bytes([rest[1], rest[2]]) as usize;
            let v = rest.get(3..3 + l).ok_or(HeaderError::Malformed(t))?;
            rest = &rest[3 + l..];
            match t {
                T_DST => set_once(&mut dst, get_addr(t, v)?, t)?,
                T_SRC => set_once(&mut src, get_addr(t, v)?, t)?,
                T_TRACE => {
                    let s = std::str::from_utf8(v).map_err(|_| HeaderError::Malformed(t))?;
                    if !s.is_ascii() {
                        return Err(HeaderError::Malformed(t));
                    }
                    set_once(&mut trace, s.to_owned(), t)?;
                }
                T_PROTO => {
                    let k = match v {
                        [6] => StreamKind::Tcp,
                        [17] => StreamKind::Udp,
                        _ => return Err(HeaderError::Malformed(t)),
                    };
                    set_once(&mut kind, k, t)?;
                }
                t if t < 128 => return Err(HeaderError::UnknownCritical(t)),
                _ => {}
            }
        }
        Ok(Decoded::Done(
            StreamHeader {
                dst: dst.ok_or(HeaderError::Missing("original destination"))?,
                src: src.ok_or(HeaderError::Missing("original source"))?,
                trace,
                kind: kind.unwrap_or_default(),
            },
            total,
        ))
    }
}

/// The destination node's answer on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// What happened.
    pub status: Status,
    /// Human-readable detail (deciding rule, error); empty when connected.
    pub reason: String,
}

/// Status codes of a [`Response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The destination decided to allow and connected to the workload; bytes follow.
    Connected = 0,
    /// The destination's policy denied the connection.
    Denied = 1,
    /// The header was unreadable.
    BadHeader = 2,
    /// The destination is not a workload of this node.
    UnknownDestination = 3,
    /// The proven peer identity does not own the claimed source.
    IdentityMismatch = 4,
    /// The workload could not be reached.
    Unreachable = 5,
    /// The destination node refused it for lack of resources (the source workload's
    /// connection budget there, or its descriptors).
    Overloaded = 6,
}

impl Status {
    fn from_u8(v: u8) -> Option<Status> {
        Some(match v {
            0 => Status::Connected,
            1 => Status::Denied,
            2 => Status::BadHeader,
            3 => Status::UnknownDestination,
            4 => Status::IdentityMismatch,
            5 => Status::Unreachable,
            6 => Status::Overloaded,
            _ => return None,
        })
    }

    /// The status [`Status::as_str`] names `s`.
    pub fn from_name(s: &str) -> Option<Status> {
        [
            Status::Connected,
            Status::Denied,
            Status::BadHeader,
            Status::UnknownDestination,
            Status::IdentityMismatch,
            Status::Unreachable,
            Status::Overloaded,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Short name for records.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::Denied => "denied",
            Status::BadHeader => "bad-header",
            Status::UnknownDestination => "unknown-destination",
            Status::IdentityMismatch => "identity-mismatch",
            Status::Unreachable => "unreachable",
            Status::Overloaded => "overloaded",
        }
    }
}

impl Response {
    /// Serializes the response (the reason is cut to fit [`MAX_HEADER`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut reason = self.reason.as_bytes();
        let max = MAX_HEADER - FIXED;
        if reason.len() > max {
            let mut cut = max;
            while !self.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason = &reason[..cut];
        }
        let mut out = Vec::with_capacity(FIXED + reason.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.status as u8);
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(reason);
        out
    }

    /// Reads a response from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Decoded<Response>, HeaderError> {
        let len = match fixed(buf)? {
            Decoded::Done(len, _) => len,
            Decoded::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
        };
        if buf.len() < FIXED + len {
            return Ok(Decoded::NeedMore(FIXED + len));
        }
        let status = Status::from_u8(buf[3]).ok_or(HeaderError::Malformed(buf[3]))?;
        let reason = String::from_utf8_lossy(&buf[FIXED..FIXED + len]).into_owned();
        Ok(Decoded::Done(Response { status, reason }, FIXED + len))
    }
}

/// Checks magic and version and returns the declared length of what follows.
fn fixed(buf: &[u8]) -> Result<Decoded<usize>, HeaderError> {
    // Check what is there as early as possible: a wrong first byte is refused at once.
    for (i, m) in MAGIC.iter().enumerate() {
        if buf.get(i).is_some_and(|b| b != m) {
            return Err(HeaderError::Magic);
        }
    }
    if let Some(&v) = buf.get(2)
        && v != VERSION
    {
        return Err(HeaderError::Version(v));
    }
    if buf.len() < FIXED {
        return Ok(Decoded::NeedMore(FIXED));
    }
    let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    if FIXED + len > MAX_HEADER {
        return Err(HeaderError::TooLong(FIXED + len));
    }
    Ok(Decoded::Done(len, FIXED))
}

fn set_once<T>(slot: &mut Option<T>, v: T, t: u8) -> Result<(), HeaderError> {
    if slot.is_some() {
        return Err(HeaderError::Repeated(t));
    }
    *slot = Some(v);
    Ok(())
}

fn put_addr(out: &mut Vec<u8>, t: u8, a: SocketAddr) {
    out.push(t);
    match a.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&7u16.to_be_bytes());
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&19u16.to_be_bytes());
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn get_addr(t: u8, v: &[u8]) -> Result<SocketAddr, HeaderError> {
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match (v.first(), v.len()) {
        (Some(4), 7) => {
            let ip = Ipv4Addr::new(v[1], v[2], v[3], v[4]);
            Ok(SocketAddr::new(ip.into(), port(&v[5..7])))
        }
        (Some(6), 19) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[1..17]);
            Ok(SocketAddr::new(Ipv6Addr::from(o).into(), port(&v[17..19])))
        }
        _ => Err(HeaderError::Malformed(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> StreamHeader {
        StreamHeader {
            dst: "10.0.2.3:5432".parse().unwrap(),
            src: "[fd00::1]:40000".parse().unwrap(),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            kind: Default::default(),
        }
    }

    #[test]
    fn round_trip_at_every_split() {
        let h = hdr();
        let bytes = h.encode();
        for cut in 0..bytes.len() {
            match StreamHeader::decode(&bytes[..cut]).unwrap() {
                Decoded::NeedMore(n) => assert!(n > cut && n <= bytes.len()),
                Decoded::Done(..) => panic!("complete at {cut} of {}", bytes.len()),
            }
        }
        let mut with_payload = bytes.clone();
        with_payload.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            StreamHeader::decode(&with_payload).unwrap(),
            Decoded::Done(h, bytes.len())
        );
    }

    #[test]
    fn refusals() {
        let good = hdr().encode();
        assert_eq!(
            StreamHeader::decode(b"GET / HTTP/1.1"),
            Err(HeaderError::Magic)
        );
        assert_eq!(StreamHeader::decode(b"EX"), Err(HeaderError::Magic));
        let mut v2 = good.clone();
        v2[2] = 2;
        assert_eq!(StreamHeader::decode(&v2), Err(HeaderError::Version(2)));
        let mut long = good.clone();
        long[4..6].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(StreamHeader::decode(&long), Err(HeaderError::TooLong(5006)));
        // A critical unknown field.
        let mut unk = good[..6].to_vec();
        let tlv = [9u8, 0, 1, 0];
        unk[4..6].copy_from_slice(&((good.len() - 6 + tlv.len()) as u16).to_be_bytes());
        unk.extend_from_slice(&good[6..]);
        unk.extend_from_slice(&tlv);
        assert_eq!(
            StreamHeader::decode(&unk),
            Err(HeaderError::UnknownCritical(9))
        );
        // A non-critical unknown field is skipped.
        let last = unk.len() - 4;
        unk[last] = 200;
        assert!(matches!(StreamHeader::decode(&unk), Ok(Decoded::Done(..))));
        // Missing source.
        let only_dst = StreamHeader {
            trace: None,
            kind: Default::default(),
            ..hdr()
        }
        .encode();
        let dst_len = 3 + 7;
        let mut h = only_dst[..6].to_vec();
        h[4..6].copy_from_slice(&(dst_len as u16).to_be_bytes());
        h.extend_from_slice(&only_dst[6..6 + dst_len]);
        assert_eq!(
            StreamHeader::decode(&h),
            Err(HeaderError::Missing("original source"))
        );
        // Repeated destination.
        let mut rep = h[..6].to_vec();
        rep[4..6].copy_from_slice(&((2 * dst_len) as u16).to_be_bytes());
        rep.extend_from_slice(&h[6..]);
        rep.extend_from_slice(&h[6..]);
        assert_eq!(StreamHeader::decode(&rep), Err(HeaderError::Repeated(1)));
        // Truncated TLV inside a complete header.
        let mut bad = good.clone();
        bad[8] = 0xff;
        assert!(matches!(
            StreamHeader::decode(&bad),
            Err(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic PRNG; every prefix of random bytes must decode or fail cleanly.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if x.is_multiple_of(3) && buf.len() > 3 {
                buf[0] = b'E';
                buf[1] = b'W';
                buf[2] = VERSION;
            }
            let _ = StreamHeader::decode(&buf);
            let _ = Response::decode(&buf);
        }
    }

    #[test]
    fn response_round_trip() {
        let r = Response {
            status: Status::Denied,
            reason: "rule dev-not-prod".into(),
        };
        let b = r.encode();
        assert_eq!(Response::decode(&b).unwrap(), Decoded::Done(r, b.len()));
        assert_eq!(Response::decode(&b[..3]).unwrap(), Decoded::NeedMore(6));
        let huge = Response {
            status: Status::Unreachable,
            reason: "é".repeat(5000),
        };
        let b = huge.encode();
        assert!(b.len() <= MAX_HEADER);
        assert!(matches!(Response::decode(&b), Ok(Decoded::Done(..))));
    }
}
