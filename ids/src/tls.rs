//! The server's side of a TLS handshake, read from the raw stream toward the client: its
//! certificates, visible in clear up to TLS 1.2 (TLS 1.3 encrypts them). Records and
//! handshake messages are reassembled however the stream is cut, within bounds; the reader
//! stops at the Certificate message, at the first record that is not a handshake, or when a
//! bound is reached.
//!
//! The certificate buffers are what Suricata 7 gives its `tls.cert_*` keywords, from the same
//! X.509 parser (`x509-parser`): the subject and issuer as `C=US, O=…, CN=…`, the serial as
//! upper-case hex bytes joined by `:`, and each certificate's DER for `tls.certs`.

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
    /// The server's certificates (leaf first).
    Certificates(Vec<Vec<u8>>),
    /// None will be seen (TLS 1.3, not TLS, a bound, or they were already given).
    Nothing,
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
            return self.finish(Seen::Nothing);
        }
        seen
    }

    fn finish(&mut self, seen: Seen) -> Seen {
        self.done = true;
        self.record = Vec::new();
        self.messages = Vec::new();
        seen
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
                break self.finish(Seen::Nothing);
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
                break self.finish(Seen::Nothing);
            }
            let Some(body) = self.messages.get(at + 4..at + 4 + len) else {
                break Seen::More;
            };
            match head[0] {
                // ServerHello: TLS 1.3 (its supported_versions) encrypts what follows.
                2 if selects_tls13(body) => break self.finish(Seen::Nothing),
                11 => {
                    let certs = certificate_list(body);
                    break self.finish(if certs.is_empty() {
                        Seen::Nothing
                    } else {
                        Seen::Certificates(certs)
                    });
                }
                // ServerHelloDone without certificates (anonymous suites).
                14 => break self.finish(Seen::Nothing),
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

/// Whether a ServerHello body selects TLS 1.3 (its `supported_versions` extension).
fn selects_tls13(body: &[u8]) -> bool {
    // version(2) random(32) session_id(1+n) cipher(2) compression(1) extensions(2+n)
    let Some(&sid_len) = body.get(34) else {
        return false;
    };
    let mut at = 35 + usize::from(sid_len) + 3;
    let Some(ext_len) = body.get(at..at + 2) else {
        return false;
    };
    let end = (at + 2 + usize::from(u16::from_be_bytes([ext_len[0], ext_len[1]]))).min(body.len());
    at += 2;
    while let Some(h) = body.get(at..at + 4) {
        let (kind, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[2], h[3]])),
        );
        if kind == 43 {
            return body.get(at + 4..at + 6) == Some(&[3, 4]);
        }
        at += 4 + len;
        if at >= end {
            break;
        }
    }
    false
}

/// What the `tls.cert_*` keywords read of the leaf certificate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LeafFacts {
    pub(crate) subject: Option<Vec<u8>>,
    pub(crate) issuer: Option<Vec<u8>>,
    pub(crate) serial: Option<Vec<u8>>,
}

impl LeafFacts {
    /// The facts of `der`; none when it is not a certificate the parser reads.
    pub(crate) fn of(der: &[u8]) -> LeafFacts {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return LeafFacts::default();
        };
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
        }
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
                Seen::Certificates(vec![b"leaf-der".to_vec(), b"ca-der".to_vec()]),
                "step {step}"
            );
            assert_eq!(h.push(b"more"), Seen::Nothing);
        }
    }

    #[test]
    fn tls13_and_other_traffic_show_nothing() {
        let mut h = ServerHandshake::default();
        assert_eq!(h.push(&server_flight(&[b"x"], true)), Seen::Nothing);
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
