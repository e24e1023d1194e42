//! The server's side of a TLS handshake, read from the raw stream toward the client: its
//! certificates, visible in clear up to TLS 1.2 (TLS 1.3 encrypts them). Records and
//! handshake messages are reassembled however the stream is cut, within bounds; the reader
//! stops at the Certificate message, at the first record that is not a handshake, or when a
//! bound is reached.
//!
//! The certificate buffers are what Suricata 7 gives its `tls.cert_*` keywords, from the same
//! X.509 parser (`x509-parser`): the subject and issuer as `C=US, O=…, CN=…`, the serial as
//! upper-case hex bytes joined by `:`, and each certificate's DER for `tls.certs`.

use crate::fingerprint::ServerHello;
use sha1::{Digest, Sha1};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Largest handshake message read (a certificate chain is a few KiB; Suricata refuses
/// messages over 64 KiB too).
const MAX_MESSAGE: usize = 64 * 1024;

/// Stream bytes read at most before giving up on seeing certificates.
const MAX_READ: usize = 256 * 1024;

/// Certificates kept at most from one chain.
const MAX_CERTS: usize = 16;

/// What the reader has found so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing yet: give it more.
    More,
    /// The clear part of the server's handshake is over: what it showed.
    Flight(ServerFlight),
    /// Nothing will be seen (not TLS, a bound before any hello, or the flight was given).
    Nothing,
}

/// The server's handshake as far as it is in clear.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerFlight {
    /// Its ServerHello, when one was read.
    pub(crate) hello: Option<ServerHello>,
    /// Its certificates, leaf first (none on TLS 1.3, resumption, anonymous suites).
    pub(crate) certs: Vec<Vec<u8>>,
}

/// Reassembles the server's handshake.
#[derive(Debug, Default)]
pub(crate) struct ServerHandshake {
    /// Bytes of the current record not yet complete.
    record: Vec<u8>,
    /// Handshake bytes not yet a complete message.
    messages: Vec<u8>,
    read: usize,
    done: bool,
    hello: Option<ServerHello>,
}

impl ServerHandshake {
    /// The next stream bytes toward the client.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Seen {
        if self.done {
            return Seen::Nothing;
        }
        self.read += bytes.len();
        self.record.extend_from_slice(bytes);
        let seen = self.records();
        if seen == Seen::More && self.read > MAX_READ {
            return self.finish(Vec::new());
        }
        seen
    }

    /// The ServerHello, as soon as it was read.
    pub(crate) fn hello(&self) -> Option<&ServerHello> {
        self.hello.as_ref()
    }

    /// The clear part is over: the flight, when anything of it was seen.
    fn finish(&mut self, certs: Vec<Vec<u8>>) -> Seen {
        self.done = true;
        self.record = Vec::new();
        self.messages = Vec::new();
        if self.hello.is_none() && certs.is_empty() {
            return Seen::Nothing;
        }
        Seen::Flight(ServerFlight {
            hello: self.hello.clone(),
            certs,
        })
    }

    fn records(&mut self) -> Seen {
        let mut at = 0;
        let seen = loop {
            let Some(head) = self.record.get(at..at + 5) else {
                break Seen::More;
            };
            let (kind, major, len) = (
                head[0],
                head[1],
                usize::from(u16::from_be_bytes([head[3], head[4]])),
            );
            // Handshake records of SSL 3.0 to TLS 1.2 framing; anything else ends the clear
            // part of the handshake (ChangeCipherSpec, alerts, application data).
            if kind != 22 || major != 3 || len > (1 << 14) + 2048 {
                break self.finish(Vec::new());
            }
            let Some(fragment) = self.record.get(at + 5..at + 5 + len) else {
                break Seen::More;
            };
            self.messages.extend_from_slice(fragment);
            at += 5 + len;
            match self.messages() {
                Seen::More => {}
                other => break other,
            }
        };
        if !self.done {
            self.record.drain(..at);
        }
        seen
    }

    fn messages(&mut self) -> Seen {
        let mut at = 0;
        let seen = loop {
            let Some(head) = self.messages.get(at..at + 4) else {
                break Seen::More;
            };
            let len = usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]);
            if len > MAX_MESSAGE {
                break self.finish(Vec::new());
            }
            let Some(body) = self.messages.get(at + 4..at + 4 + len) else {
                break Seen::More;
            };
            match head[0] {
                2 if self.hello.is_none() => {
                    self.hello = server_hello(body);
                    // TLS 1.3 encrypts what follows.
                    if self.hello.as_ref().is_some_and(|h| h.version() == 0x0304) {
                        break self.finish(Vec::new());
                    }
                    at += 4 + len;
                }
                11 => {
                    let certs = certificate_list(body);
                    break self.finish(certs);
                }
                // ServerHelloDone without certificates (anonymous suites).
                14 => break self.finish(Vec::new()),
                _ => at += 4 + len,
            }
        };
        if !self.done {
            self.messages.drain(..at);
        }
        seen
    }
}

/// The DER certificates of a TLS 1.2 Certificate message's body.
fn certificate_list(body: &[u8]) -> Vec<Vec<u8>> {
    let mut certs = Vec::new();
    let Some(total) = body.get(..3) else {
        return certs;
    };
    let total = usize::from(total[0]) << 16 | usize::from(total[1]) << 8 | usize::from(total[2]);
    let list = &body[3..body.len().min(3 + total)];
    let mut at = 0;
    while let Some(len) = list.get(at..at + 3) {
        let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
        let Some(der) = list.get(at + 3..at + 3 + len) else {
            break;
        };
        if certs.len() == MAX_CERTS {
            break;
        }
        certs.push(der.to_vec());
        at += 3 + len;
    }
    certs
}

/// A ServerHello body: version(2) random(32) session_id(1+n) cipher(2) compression(1)
/// extensions(2+n). `None` when it is too short to hold its fixed part.
fn server_hello(body: &[u8]) -> Option<ServerHello> {
    let be = |at: usize| {
        body.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let legacy_version = be(0)?;
    let sid_len = usize::from(*body.get(34)?);
    let cipher = be(35 + sid_len)?;
    let mut hello = ServerHello {
        legacy_version,
        cipher,
        ..ServerHello::default()
    };
    let mut at = 35 + sid_len + 3;
    let Some(ext_len) = be(at) else {
        // Servers before TLS 1.2 may send no extensions.
        return Some(hello);
    };
    let end = (at + 2 + usize::from(ext_len)).min(body.len());
    at += 2;
    while at + 4 <= end {
        let (kind, len) = (be(at)?, usize::from(be(at + 2)?));
        hello.extensions.push(kind);
        if kind == 43 {
            hello.selected_version = be(at + 4);
        }
        at += 4 + len;
    }
    Some(hello)
}

/// What the `tls.cert_*` keywords read of the leaf certificate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LeafFacts {
    pub(crate) subject: Option<Vec<u8>>,
    pub(crate) issuer: Option<Vec<u8>>,
    pub(crate) serial: Option<Vec<u8>>,
    /// SHA-1 of the DER, lower-case hex bytes joined by `:` (`tls.cert_fingerprint`).
    pub(crate) fingerprint: Option<Vec<u8>>,
}

impl LeafFacts {
    /// The facts of `der`; none when it is not a certificate the parser reads.
    pub(crate) fn of(der: &[u8]) -> LeafFacts {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return LeafFacts::default();
        };
        let fingerprint: Vec<String> = Sha1::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let serial: Vec<String> = cert
            .tbs_certificate
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        LeafFacts {
            subject: Some(cert.subject().to_string().into_bytes()),
            issuer: Some(cert.issuer().to_string().into_bytes()),
            serial: Some(serial.join(":").into_bytes()),
            fingerprint: Some(fingerprint.join(":").into_bytes()),
        }
    }
}

/// Record content types (RFC 8446 section 5.1).
pub(crate) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;

/// Largest record body: 2^14 bytes of plaintext and up to 2048 of expansion (RFC 5246
/// section 6.2.3; TLS 1.3 allows less).
const MAX_RECORD: usize = 16_384 + 2_048;

/// One direction of a TLS connection walked record by record, from the 5-byte headers only
/// (bodies are skipped, never kept), to see where encrypted application data starts. Bytes
/// that are not TLS records stop the walk for good.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecordWalk {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current record still to skip.
    skip: usize,
    lost: bool,
}

impl RecordWalk {
    /// Walks the direction's next `bytes`: `record(at, content_type)` for each record whose
    /// header ends in them (`at`: where the header starts in `bytes`, 0 when it began in an
    /// earlier read), until it returns `false`.
    pub(crate) fn walk(&mut self, bytes: &[u8], mut record: impl FnMut(usize, u8) -> bool) {
        let mut at = 0;
        while at < bytes.len() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() - at);
                self.skip -= n;
                at += n;
                continue;
            }
            let start = at.saturating_sub(self.have);
            let n = (5 - self.have).min(bytes.len() - at);
            self.header[self.have..self.have + n].copy_from_slice(&bytes[at..at + n]);
            self.have += n;
            at += n;
            if self.have < 5 {
                return;
            }
            self.have = 0;
            let [kind, major, _, hi, lo] = self.header;
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if !(CHANGE_CIPHER_SPEC..=24).contains(&kind) || major != 3 || len > MAX_RECORD {
                self.lost = true;
                return;
            }
            self.skip = len;
            if !record(start, kind) {
                return;
            }
        }
    }

    /// The bytes stopped looking like TLS records.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost
    }
}

#[cfg(test)]
/// A TLS 1.2 server flight: ServerHello, Certificate (the given DERs), ServerHelloDone,
/// in one handshake record per message.
pub(crate) fn server_flight(certs: &[&[u8]], tls13: bool) -> Vec<u8> {
    let mut hello = vec![3, 3];
    hello.extend([7u8; 32]);
    hello.push(0); // session id
    hello.extend([0xc0, 0x2f, 0]); // cipher, compression
    if tls13 {
        hello.extend([0, 6, 0, 43, 0, 2, 3, 4]);
    } else {
        hello.extend([0, 0]);
    }
    let mut list: Vec<u8> = Vec::new();
    for c in certs {
        list.extend(&(c.len() as u32).to_be_bytes()[1..]);
        list.extend(*c);
    }
    let mut cert_body = (list.len() as u32).to_be_bytes()[1..].to_vec();
    cert_body.extend(list);
    let mut out = Vec::new();
    for (kind, body) in [(2u8, hello), (11, cert_body), (14, Vec::new())] {
        let mut msg = vec![kind];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        out.extend([22, 3, 3]);
        out.extend((msg.len() as u16).to_be_bytes());
        out.extend(msg);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every record's (offset in its read, type) however the bytes are cut.
    fn walked(bytes: &[u8], cuts: &[usize]) -> Vec<(usize, usize, u8)> {
        let mut walk = RecordWalk::default();
        let mut out = Vec::new();
        let mut from = 0;
        for (k, &to) in cuts.iter().chain([&bytes.len()]).enumerate() {
            walk.walk(&bytes[from..to], |at, kind| {
                out.push((k, from + at, kind));
                true
            });
            from = to;
        }
        out
    }

    fn rec(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xaa, len));
        r
    }

    #[test]
    fn records_are_walked_from_their_headers_however_cut() {
        let bytes = [
            rec(22, 40),
            rec(20, 1),
            rec(23, 100),
            rec(23, 0),
            rec(21, 2),
        ]
        .concat();
        let whole = walked(&bytes, &[]);
        let types: Vec<(usize, u8)> = whole.iter().map(|&(_, at, t)| (at, t)).collect();
        assert_eq!(types, [(0, 22), (45, 20), (51, 23), (156, 23), (161, 21)]);
        for cut in 1..bytes.len() {
            let split = walked(&bytes, &[cut]);
            assert_eq!(split.len(), 5, "cut at {cut}");
            for (&(k, at, t), &(wat, wt)) in split.iter().zip(&types) {
                assert_eq!(t, wt);
                // A header cut in two is reported in the read where it ends, at its start.
                let expect = if k == 1 { wat.max(cut) } else { wat };
                assert_eq!(at, expect, "cut at {cut}");
            }
        }
    }

    #[test]
    fn bytes_that_are_not_records_stop_the_walk() {
        for bad in [
            b"GET / HTTP/1.1\r\n".to_vec(),
            [rec(22, 3), vec![22, 2, 0, 0, 1]].concat(),
            [rec(22, 3), vec![23, 3, 3, 0x48, 1]].concat(),
        ] {
            let mut walk = RecordWalk::default();
            let mut kinds = Vec::new();
            walk.walk(&bad, |_, t| {
                kinds.push(t);
                true
            });
            assert!(walk.is_lost());
            assert!(!kinds.contains(&APPLICATION_DATA));
        }
    }

    #[test]
    fn certificates_however_the_stream_is_cut() {
        let flight = server_flight(&[b"leaf-der", b"ca-der"], false);
        for step in [1, 3, 7, 64, flight.len()] {
            let mut h = ServerHandshake::default();
            let mut got = Seen::More;
            for c in flight.chunks(step) {
                match h.push(c) {
                    Seen::More => {}
                    s => {
                        got = s;
                        break;
                    }
                }
            }
            assert_eq!(
                got,
                Seen::Flight(ServerFlight {
                    hello: Some(ServerHello {
                        legacy_version: 0x0303,
                        cipher: 0xc02f,
                        extensions: vec![],
                        selected_version: None,
                    }),
                    certs: vec![b"leaf-der".to_vec(), b"ca-der".to_vec()]
                }),
                "step {step}"
            );
            assert_eq!(h.push(b"more"), Seen::Nothing);
        }
    }

    #[test]
    fn tls13_shows_its_hello_only() {
        let mut h = ServerHandshake::default();
        let Seen::Flight(flight) = h.push(&server_flight(&[b"x"], true)) else {
            panic!("no flight");
        };
        assert!(flight.certs.is_empty());
        let hello = flight.hello.unwrap();
        assert_eq!(
            (hello.version(), hello.extensions.as_slice()),
            (0x0304, &[43][..])
        );
        assert_eq!(h.push(b"more"), Seen::Nothing);
    }

    #[test]
    fn server_hellos_short_or_without_extensions() {
        let mut body = vec![3, 1];
        body.extend([0u8; 32]);
        body.extend([0, 0, 0x2f, 0]);
        let hello = server_hello(&body).unwrap();
        assert_eq!((hello.version(), hello.cipher), (0x0301, 0x2f));
        assert!(hello.extensions.is_empty());
        for cut in 0..body.len() - 1 {
            assert_eq!(server_hello(&body[..cut]), None, "cut {cut}");
        }
        // An extension list that claims more than there is: the extensions that are there.
        body.extend([0, 40, 0xff, 1, 0, 1, 0, 0, 0]);
        assert_eq!(server_hello(&body).unwrap().extensions, [0xff01]);
    }

    #[test]
    fn other_traffic_shows_nothing() {
        let mut h = ServerHandshake::default();
        assert_eq!(h.push(b"HTTP/1.1 200 OK\r\n\r\n"), Seen::Nothing);
        // A message claiming more than the bound.
        let mut h = ServerHandshake::default();
        assert_eq!(
            h.push(&[22, 3, 3, 0, 4, 11, 0xff, 0xff, 0xff]),
            Seen::Nothing
        );
        // Endless small handshake records without a certificate: stops at the bound.
        let mut h = ServerHandshake::default();
        let mut last = Seen::More;
        for _ in 0..100_000 {
            last = h.push(&[22, 3, 3, 0, 4, 0, 0, 0, 0]);
            if last != Seen::More {
                break;
            }
        }
        assert_eq!(last, Seen::Nothing);
    }
}
