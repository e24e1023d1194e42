//! DNS messages (RFC 1035) as far as a firewall decides on them: the header, the question
//! (the name the policy's `dns` rules test), and the answers (for records). Pure; never
//! panics on any input: names are bounded (255 bytes, 127 labels), compression pointers must
//! point backwards and are followed at most [`MAX_POINTERS`] times, counts are checked
//! against the message's length.
//!
//! Names are returned in lower case (the 0x20 trick of mixed-case queries changes nothing),
//! without the trailing dot; a label holding a `.` or a byte that is not printable ASCII is
//! refused (a name such rules could not see as written).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::eve::{EveDnsAnswer, EveDnsMessage, EveDnsQuery};

/// Most compression pointers followed while reading one name.
pub const MAX_POINTERS: usize = 16;

/// Length of the header, where the question starts.
const HEADER: usize = 12;

/// Longest name, in wire bytes (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;

/// Why a message is not a DNS message eastwall reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// Shorter than its header or its sections say.
    #[error("truncated DNS message")]
    Truncated,
    /// A name longer than 255 bytes, a label past 63, or a reserved label type.
    #[error("malformed DNS name")]
    BadName,
    /// Compression pointers that loop or point forward.
    #[error("DNS compression pointers loop or point forward")]
    PointerLoop,
    /// A label with a dot or a byte that is not printable ASCII.
    #[error("DNS name with a label that cannot be written as text")]
    Unprintable,
    /// Not one question (a query with 0 or several questions).
    #[error("DNS message with {0} questions (one expected)")]
    Questions(u16),
}

/// The header flags eastwall uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Query id.
    pub id: u16,
    /// A response (QR set).
    pub response: bool,
    /// Opcode (0: a standard query).
    pub opcode: u8,
    /// Response code (0 NOERROR, 3 NXDOMAIN, 5 REFUSED).
    pub rcode: u8,
    /// The whole flags field (QR, opcode, AA, TC, RD, RA, Z, rcode).
    pub flags: u16,
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its owner name.
    pub name: String,
    /// Record type (1 A, 28 AAAA, 5 CNAME, ...).
    pub rtype: u16,
    /// Time to live.
    pub ttl: u32,
    /// The data as text: an address for A and AAAA, a name for CNAME, PTR and NS; empty for
    /// other types.
    pub data: String,
}

/// A DNS message: its header, its one question, its answers (responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The question's name, lower case, without the final dot (`.` for the root).
    pub name: String,
    /// The question's type.
    pub qtype: u16,
    /// The question's class.
    pub qclass: u16,
    /// Where the question ends in the message (what a refusal repeats).
    pub question_end: usize,
    /// Answer records (only those of readable types and names; the rest are skipped).
    pub answers: Vec<Answer>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, DnsError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(DnsError::Truncated)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, DnsError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(DnsError::Truncated)
}

/// Reads the name at `at`; returns it and where it ends in the message (past the first
/// pointer when compressed).
fn name_at(msg: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut out = String::new();
    let mut wire_len = 1usize;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let end = end.unwrap_or(at + 1);
                if out.is_empty() {
                    out.push('.');
                }
                return Ok((out, end));
            }
            0x00 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated)?;
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME {
                    return Err(DnsError::BadName);
                }
                if label
                    .iter()
                    .any(|&c| c == b'.' || !(0x21..0x7f).contains(&c))
                {
                    return Err(DnsError::Unprintable);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &c in label {
                    out.push(char::from(c.to_ascii_lowercase()));
                }
                at += 1 + label.len();
            }
            0xc0 => {
                let target = usize::from(u16_at(msg, at)? & 0x3fff);
                // Only backwards (a forward or self pointer could loop), and never into the
                // header, where no name is (so the question reads the same in an answer
                // whose header differs).
                if target >= at || target < HEADER || pointers >= MAX_POINTERS {
                    return Err(DnsError::PointerLoop);
                }
                pointers += 1;
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(DnsError::BadName),
        }
    }
}

/// Whether a byte stream starts like DNS over TCP (RFC 1035 4.2.2): a two-byte length, then
/// the header of a standard query with one question. What follows is read message by
/// message; this only chooses to.
pub fn starts_like_tcp_query(stream: &[u8]) -> bool {
    let (Ok(len), Ok(flags), Ok(qd)) = (u16_at(stream, 0), u16_at(stream, 4), u16_at(stream, 6))
    else {
        return false;
    };
    usize::from(len) >= HEADER + 5 && flags & 0xf800 == 0 && qd == 1
}

/// Reads a DNS message (a query or a response) with exactly one question.
pub fn parse(msg: &[u8]) -> Result<Message, DnsError> {
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    if qd != 1 {
        return Err(DnsError::Questions(qd));
    }
    let (name, after) = name_at(msg, HEADER)?;
    let qtype = u16_at(msg, after)?;
    let qclass = u16_at(msg, after + 2)?;
    let question_end = after + 4;
    let header = Header {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rcode: (flags & 0x000f) as u8,
        flags,
    };
    let mut answers = Vec::new();
    let mut at = question_end;
    // Each record takes at least 11 bytes: a count larger than that allows is a lie.
    if usize::from(an) * 11 > msg.len().saturating_sub(at) {
        return Err(DnsError::Truncated);
    }
    for _ in 0..an {
        let (owner, after) = name_at(msg, at)?;
        let rtype = u16_at(msg, after)?;
        let ttl = u32_at(msg, after + 4)?;
        let rdlen = usize::from(u16_at(msg, after + 8)?);
        let rdata_at = after + 10;
        let rdata = msg
            .get(rdata_at..rdata_at + rdlen)
            .ok_or(DnsError::Truncated)?;
        let data = match (rtype, rdata.len()) {
            (1, 4) => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            (28, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                Ipv6Addr::from(a).to_string()
            }
            (5 | 12 | 2, _) => name_at(msg, rdata_at).map(|(n, _)| n).unwrap_or_default(),
            _ => String::new(),
        };
        answers.push(Answer {
            name: owner,
            rtype,
            ttl,
            data,
        });
        at = rdata_at + rdlen;
    }
    Ok(Message {
        header,
        name,
        qtype,
        qclass,
        question_end,
        answers,
    })
}

impl Message {
    /// The message as EVE's `dns` object (Suricata's version 3), transaction `tx_id` of its
    /// flow.
    pub fn eve(&self, tx_id: u64) -> EveDnsMessage {
        let f = self.header.flags;
        EveDnsMessage {
            version: 3,
            kind: if self.header.response {
                "response"
            } else {
                "request"
            },
            tx_id,
            id: self.header.id,
            flags: format!("{f:x}"),
            qr: self.header.response,
            aa: f & 0x0400 != 0,
            tc: f & 0x0200 != 0,
            rd: f & 0x0100 != 0,
            ra: f & 0x0080 != 0,
            opcode: self.header.opcode,
            rcode: rcode_name(self.header.rcode),
            queries: vec![EveDnsQuery {
                rrname: self.name.clone(),
                rrtype: type_name(self.qtype),
            }],
            answers: self
                .answers
                .iter()
                .map(|a| EveDnsAnswer {
                    rrname: a.name.clone(),
                    rrtype: type_name(a.rtype),
                    ttl: a.ttl,
                    rdata: a.data.clone(),
                })
                .collect(),
        }
    }
}

/// The REFUSED answer to `query` (a message [`parse`] read): the same id and question, no
/// records (RFC 1035 4.1.1).
pub fn refused(query: &[u8], parsed: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(parsed.question_end);
    out.extend_from_slice(&query[..2]);
    // QR, the query's opcode and RD, RA clear, RCODE 5.
    let flags = u16_at(query, 2).unwrap_or(0);
    let flags = 0x8000 | (flags & 0x7900) | 5;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(query.get(HEADER..parsed.question_end).unwrap_or_default());
    out
}

/// A record type's name as EVE writes it (`A`, `AAAA`, ..., else the number).
pub fn type_name(t: u16) -> String {
    let known = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        65 => "HTTPS",
        255 => "ANY",
        _ => return format!("TYPE{t}"),
    };
    known.to_owned()
}

/// A response code's name as EVE writes it.
pub fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype`, as a stub resolver sends it.
    pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&0x0100u16.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn a_query_and_its_answer() {
        let q = query(0x1234, "Db.Corp.Example", 1);
        let m = parse(&q).unwrap();
        assert_eq!(m.header.id, 0x1234);
        assert!(!m.header.response);
        assert_eq!(m.name, "db.corp.example", "0x20 case does not matter");
        assert_eq!((m.qtype, m.qclass, m.question_end), (1, 1, q.len()));
        // The answer: same question, one A record with a compressed owner name.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 77, 2, 3]);
        let m = parse(&a).unwrap();
        assert!(m.header.response);
        assert_eq!(
            m.answers,
            [Answer {
                name: "db.corp.example".into(),
                rtype: 1,
                ttl: 60,
                data: "10.77.2.3".into()
            }]
        );
        // In EVE, Suricata's version 3 shape.
        let eve = serde_json::to_value(m.eve(4)).unwrap();
        assert_eq!(
            eve,
            serde_json::json!({
                "version": 3, "type": "response", "tx_id": 4, "id": 0x1234, "flags": "8180",
                "qr": true, "rd": true, "ra": true, "opcode": 0, "rcode": "NOERROR",
                "queries": [{"rrname": "db.corp.example", "rrtype": "A"}],
                "answers": [{"rrname": "db.corp.example", "rrtype": "A", "ttl": 60, "rdata": "10.77.2.3"}],
            })
        );
    }

    #[test]
    fn dns_over_tcp_is_recognized_by_its_first_bytes() {
        let q = query(9, "a.example", 1);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        assert!(starts_like_tcp_query(&framed));
        assert!(!starts_like_tcp_query(&framed[..7]), "too short to tell");
        assert!(!starts_like_tcp_query(&q), "no length prefix");
        assert!(!starts_like_tcp_query(b"GET / HTTP/1.1\r\n"));
        let mut response = framed.clone();
        response[4] |= 0x80;
        assert!(!starts_like_tcp_query(&response));
    }

    #[test]
    fn refused_repeats_the_question() {
        let q = query(7, "evil.example", 28);
        let m = parse(&q).unwrap();
        let r = refused(&q, &m);
        let back = parse(&r).unwrap();
        assert_eq!(back.header.id, 7);
        assert!(back.header.response);
        assert_eq!(back.header.rcode, 5);
        assert_eq!(back.name, "evil.example");
        assert!(back.answers.is_empty());
    }

    #[test]
    fn hostile_messages_are_errors() {
        let q = query(1, "a.example", 1);
        for cut in 0..q.len() {
            assert!(parse(&q[..cut]).is_err(), "cut at {cut}");
        }
        // A pointer to itself, and one forward.
        let mut looped = q[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&looped), Err(DnsError::PointerLoop));
        let mut fwd = q[..12].to_vec();
        fwd.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 1, b'a', 0]);
        assert_eq!(parse(&fwd), Err(DnsError::PointerLoop));
        // A pointer into the header (no name is there).
        let mut into_header = q[..12].to_vec();
        into_header.extend_from_slice(&[1, b'x', 0xc0, 4, 0, 1, 0, 1]);
        assert_eq!(parse(&into_header), Err(DnsError::PointerLoop));
        // A label with a dot in it, and a name longer than 255 bytes.
        let mut dotted = q[..12].to_vec();
        dotted.extend_from_slice(&[3, b'a', b'.', b'b', 0, 0, 1, 0, 1]);
        assert_eq!(parse(&dotted), Err(DnsError::Unprintable));
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(parse(&query(1, &long, 1)), Err(DnsError::BadName));
        // Two questions, and answer counts the message cannot hold.
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(parse(&two), Err(DnsError::Questions(2)));
        let mut many = q.clone();
        many[6] = 0xff;
        assert_eq!(parse(&many), Err(DnsError::Truncated));
    }
}
