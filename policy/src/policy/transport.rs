//! Protocols and ports: the IP protocol of a flow ([`Protocol`]), what a rule's `ports`
//! matches ([`Transports`]), its compilation from the file and its coverage test.
//!
//! In the Kubernetes NetworkPolicy habit, `ports` lists TCP ports (`443`, `"8000-8080"`)
//! or, as mappings, `{port: 53, protocol: UDP}`, `{port: 5000, endPort: 5100}`,
//! `{protocol: UDP}` (every UDP port), `{protocol: ICMP, icmpType: 8}`, `{protocol: 47}`.
//! A rule without `ports` matches every protocol and port.

use std::collections::BTreeSet;
use std::fmt;

use serde_saphyr::Spanned;

use super::format::{IntOrText, PortDoc, PortSpecDoc};
use crate::diag::{Pos, Sink};

/// The IP protocol of a flow, with what rules can test of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (6); the port is the flow's destination port.
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP (1), with the message's type and code.
    Icmp {
        /// ICMP type (8: echo request).
        kind: u8,
        /// ICMP code.
        code: u8,
    },
    /// ICMPv6 (58), with the message's type and code.
    Icmpv6 {
        /// ICMPv6 type (128: echo request).
        kind: u8,
        /// ICMPv6 code.
        code: u8,
    },
    /// Any other IP protocol, by number (GRE 47, ESP 50, ...).
    Other(u8),
}

/// IANA protocol numbers eastwall names.
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => TCP,
            Protocol::Udp => UDP,
            Protocol::Sctp => SCTP,
            Protocol::Icmp { .. } => ICMP,
            Protocol::Icmpv6 { .. } => ICMPV6,
            Protocol::Other(n) => n,
        }
    }

    /// Whether the protocol has ports (TCP, UDP, SCTP).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// The protocol of number `n`, for messages of ICMP type and code 0 when it is ICMP.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            TCP => Protocol::Tcp,
            UDP => Protocol::Udp,
            SCTP => Protocol::Sctp,
            ICMP => Protocol::Icmp { kind: 0, code: 0 },
            ICMPV6 => Protocol::Icmpv6 { kind: 0, code: 0 },
            n => Protocol::Other(n),
        }
    }

    /// The name as written in policy files: `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, or the
    /// number.
    pub fn name(self) -> String {
        match self {
            Protocol::Tcp => "TCP".into(),
            Protocol::Udp => "UDP".into(),
            Protocol::Sctp => "SCTP".into(),
            Protocol::Icmp { .. } => "ICMP".into(),
            Protocol::Icmpv6 { .. } => "ICMPv6".into(),
            Protocol::Other(n) => n.to_string(),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// ICMP messages a rule matches: a type (any code, or one) or every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IcmpMatch {
    /// `None`: every type.
    pub(crate) kind: Option<u8>,
    /// `None`: every code of the type.
    pub(crate) code: Option<u8>,
}

impl IcmpMatch {
    fn matches(self, kind: u8, code: u8) -> bool {
        self.kind.is_none_or(|k| k == kind) && self.code.is_none_or(|c| c == code)
    }

    fn covers(self, other: IcmpMatch) -> bool {
        match (self.kind, other.kind) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => {
                a == b
                    && match (self.code, other.code) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(x), Some(y)) => x == y,
                    }
            }
        }
    }
}

/// What a rule's `ports` matches: per protocol. A rule without `ports` has none of this
/// and matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Transports {
    /// TCP port ranges, sorted and disjoint.
    pub(crate) tcp: Box<[(u16, u16)]>,
    /// UDP port ranges, sorted and disjoint.
    pub(crate) udp: Box<[(u16, u16)]>,
    /// SCTP port ranges, sorted and disjoint.
    pub(crate) sctp: Box<[(u16, u16)]>,
    /// ICMP messages.
    pub(crate) icmp: Box<[IcmpMatch]>,
    /// ICMPv6 messages.
    pub(crate) icmpv6: Box<[IcmpMatch]>,
    /// Other IP protocols, matched whole, sorted.
    pub(crate) other: Box<[u8]>,
}

/// Every port of a protocol.
pub(crate) const ALL_PORTS: (u16, u16) = (0, u16::MAX);

impl Transports {
    /// The port ranges of a protocol with ports.
    pub(crate) fn ranges(&self, proto: Protocol) -> &[(u16, u16)] {
        match proto {
            Protocol::Tcp => &self.tcp,
            Protocol::Udp => &self.udp,
            Protocol::Sctp => &self.sctp,
            _ => &[],
        }
    }

    /// Whether a flow of `proto` to `port` matches.
    pub(crate) fn matches(&self, proto: Protocol, port: u16) -> bool {
        let in_ranges = |r: &[(u16, u16)]| r.iter().any(|&(lo, hi)| lo <= port && port <= hi);
        match proto {
            Protocol::Tcp | Protocol::Udp | Protocol::Sctp => in_ranges(self.ranges(proto)),
            Protocol::Icmp { kind, code } => self.icmp.iter().any(|m| m.matches(kind, code)),
            Protocol::Icmpv6 { kind, code } => self.icmpv6.iter().any(|m| m.matches(kind, code)),
            Protocol::Other(n) => self.other.binary_search(&n).is_ok(),
        }
    }

    /// Whether everything `b` matches, `self` matches.
    pub(crate) fn covers(&self, b: &Transports) -> bool {
        ranges_cover(&self.tcp, &b.tcp)
            && ranges_cover(&self.udp, &b.udp)
            && ranges_cover(&self.sctp, &b.sctp)
            && b.icmp
                .iter()
                .all(|m| self.icmp.iter().any(|a| a.covers(*m)))
            && b.icmpv6
                .iter()
                .all(|m| self.icmpv6.iter().any(|a| a.covers(*m)))
            && b.other.iter().all(|p| self.other.binary_search(p).is_ok())
    }

    /// The first protocol with ports this matches, and its lowest port (to find rules that
    /// could cover it in a port index).
    pub(crate) fn first_port(&self) -> Option<(Protocol, u16)> {
        [Protocol::Tcp, Protocol::Udp]
            .into_iter()
            .find_map(|p| self.ranges(p).first().map(|&(lo, _)| (p, lo)))
    }
}

impl fmt::Display for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (name, ranges) in [("", &self.tcp), ("/udp", &self.udp), ("/sctp", &self.sctp)] {
            for &r in ranges.iter() {
                let r = if r == ALL_PORTS {
                    "*".to_owned()
                } else {
                    range_str(r)
                };
                parts.push(format!("{r}{name}"));
            }
        }
        for (name, ms) in [("icmp", &self.icmp), ("icmpv6", &self.icmpv6)] {
            for m in ms.iter() {
                parts.push(match (m.kind, m.code) {
                    (None, _) => name.to_owned(),
                    (Some(k), None) => format!("{name} type {k}"),
                    (Some(k), Some(c)) => format!("{name} type {k} code {c}"),
                });
            }
        }
        for p in self.other.iter() {
            parts.push(format!("protocol {p}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Whether the ranges `a` (sorted, disjoint) include every range of `b`.
pub(crate) fn ranges_cover(a: &[(u16, u16)], b: &[(u16, u16)]) -> bool {
    // Merge adjacent ranges (`80-89, 90-99` covers `85-95`).
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(a.len());
    for &(lo, hi) in a {
        match merged.last_mut() {
            Some(last) if u32::from(last.1) + 1 >= u32::from(lo) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    b.iter()
        .all(|&(lo, hi)| merged.iter().any(|&(l, h)| l <= lo && hi <= h))
}

/// `80` or `80-90`.
pub(crate) fn range_str((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// The flow a protocol name or number in a file names.
fn parse_protocol(t: &IntOrText) -> Result<Protocol, String> {
    const NAMES: &str = "TCP, UDP, SCTP, ICMP, ICMPv6, or a protocol number 0-255";
    match t {
        IntOrText::Int(n) => u8::try_from(*n)
            .map(Protocol::from_number)
            .map_err(|_| format!("protocol {n} is out of range ({NAMES})")),
        IntOrText::Text(s) => match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            "icmp" => Ok(Protocol::Icmp { kind: 0, code: 0 }),
            "icmpv6" | "ipv6-icmp" => Ok(Protocol::Icmpv6 { kind: 0, code: 0 }),
            other => match other.parse::<u8>() {
                Ok(n) => Ok(Protocol::from_number(n)),
                Err(_) => Err(format!("unknown protocol `{}` ({NAMES})", s.escape_debug())),
            },
        },
    }
}

/// A port or range as written: `443`, `"443"`, `"8000-8080"`.
fn parse_range(t: &IntOrText) -> Result<(u16, u16), String> {
    const RANGE_HINT: &str = "expected 1-65535 or a range string like \"8000-8080\"";
    let valid = |n: i128| u16::try_from(n).ok().filter(|&p| p != 0);
    match t {
        IntOrText::Int(n) => valid(*n)
            .map(|p| (p, p))
            .ok_or_else(|| format!("port {n} is out of range (1-65535)")),
        IntOrText::Text(t) => {
            // Decimal digits only; too large for u32 is out of range, not invalid.
            let num = |s: &str| -> Option<i128> {
                let s = s.trim();
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| i128::from(s.parse::<u32>().unwrap_or(u32::MAX)))
            };
            let (lo, hi) = match t.split_once('-') {
                Some((a, b)) => (num(a), num(b)),
                None => (num(t), num(t)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) => match (valid(lo), valid(hi)) {
                    (Some(lo), Some(hi)) if lo > hi => Err(format!(
                        "port range `{t}` is reversed: {lo} is greater than {hi}"
                    )),
                    (Some(lo), Some(hi)) => Ok((lo, hi)),
                    _ => Err(format!("port `{t}` is out of range (1-65535)")),
                },
                _ => Err(format!(
                    "invalid port `{}` ({RANGE_HINT})",
                    t.escape_debug()
                )),
            }
        }
    }
}

/// What one entry of `ports` adds.
enum Entry {
    Ports(Protocol, (u16, u16)),
    Icmp(Protocol, IcmpMatch),
    Whole(u8),
}

/// One entry of `ports` as the flows it matches; errors go to `sink`.
fn entry(sink: &mut Sink<'_>, at: Pos, doc: &PortDoc) -> Option<Entry> {
    let spec = match doc {
        PortDoc::Plain(p) => {
            return parse_range(p)
                .map(|r| Entry::Ports(Protocol::Tcp, r))
                .map_err(|e| sink.error(at, e))
                .ok();
        }
        PortDoc::Spec(s) => s,
    };
    let PortSpecDoc {
        port,
        end_port,
        protocol,
        icmp_type,
        icmp_code,
    } = &**spec;
    let proto = match protocol {
        None => Protocol::Tcp,
        Some(p) => match parse_protocol(p) {
            Ok(p) => p,
            Err(e) => {
                sink.error(at, e);
                return None;
            }
        },
    };
    let byte = |what: &str, n: i128| {
        u8::try_from(n).map_err(|_| format!("`{what}` {n} is out of range (0-255)"))
    };
    if proto.has_ports() {
        if icmp_type.is_some() || icmp_code.is_some() {
            sink.error(
                at,
                format!("`icmpType`/`icmpCode` apply to ICMP, not to {proto}"),
            );
            return None;
        }
        let range = match (port, end_port) {
            (None, None) => Ok(ALL_PORTS),
            (None, Some(_)) => Err("`endPort` needs `port`".to_owned()),
            (Some(p), None) => parse_range(p),
            (Some(IntOrText::Int(lo)), Some(hi)) => {
                match (
                    parse_range(&IntOrText::Int(*lo)),
                    parse_range(&IntOrText::Int(hi.0)),
                ) {
                    (Ok((lo, _)), Ok((hi, _))) if lo > hi => {
                        Err(format!("`endPort` {hi} is lower than `port` {lo}"))
                    }
                    (Ok((lo, _)), Ok((hi, _))) => Ok((lo, hi)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            (Some(IntOrText::Text(_)), Some(_)) => Err(
                "with `endPort`, `port` is a number (or write the range as \"lo-hi\")".to_owned(),
            ),
        };
        return range
            .map(|r| Entry::Ports(proto, r))
            .map_err(|e| sink.error(at, e))
            .ok();
    }
    if port.is_some() || end_port.is_some() {
        sink.error(at, format!("{proto} has no ports: remove `port`/`endPort`"));
        return None;
    }
    match proto {
        Protocol::Icmp { .. } | Protocol::Icmpv6 { .. } => {
            let kind = icmp_type
                .as_ref()
                .map(|t| byte("icmpType", t.0))
                .transpose();
            let code = icmp_code
                .as_ref()
                .map(|c| byte("icmpCode", c.0))
                .transpose();
            match (kind, code) {
                (Ok(None), Ok(Some(_))) => {
                    sink.error(at, "`icmpCode` needs `icmpType`");
                    None
                }
                (Ok(kind), Ok(code)) => Some(Entry::Icmp(proto, IcmpMatch { kind, code })),
                (Err(e), _) | (_, Err(e)) => {
                    sink.error(at, e);
                    None
                }
            }
        }
        _ => {
            if icmp_type.is_some() || icmp_code.is_some() {
                sink.error(
                    at,
                    format!("`icmpType`/`icmpCode` apply to ICMP, not to protocol {proto}"),
                );
                return None;
            }
            Some(Entry::Whole(proto.number()))
        }
    }
}

/// A rule's `ports`, validated: every entry valid, no overlapping ranges of one protocol,
/// nothing listed twice.
pub(crate) fn compile_ports(
    sink: &mut Sink<'_>,
    p: &Spanned<Vec<Spanned<PortDoc>>>,
) -> Option<Transports> {
    if p.value.is_empty() {
        sink.error(
            p.referenced,
            "empty `ports` list (it would match nothing); omit the field to match every protocol and port",
        );
        return None;
    }
    let mut ok = true;
    let mut ranges: [Vec<((u16, u16), Pos)>; 3] = Default::default();
    let mut icmp: [Vec<(IcmpMatch, Pos)>; 2] = Default::default();
    let mut other: BTreeSet<u8> = BTreeSet::new();
    for item in &p.value {
        let at = Pos::from(item.referenced);
        match entry(sink, at, &item.value) {
            None => ok = false,
            Some(Entry::Ports(proto, r)) => {
                let i = match proto {
                    Protocol::Tcp => 0,
                    Protocol::Udp => 1,
                    _ => 2,
                };
                ranges[i].push((r, at));
            }
            Some(Entry::Icmp(proto, m)) => {
                let list = &mut icmp[usize::from(matches!(proto, Protocol::Icmpv6 { .. }))];
                if list
                    .iter()
                    .any(|(have, _)| have.covers(m) || m.covers(*have))
                {
                    sink.error(
                        at,
                        format!("{proto} messages listed twice (or one inside another)"),
                    );
                    ok = false;
                }
                list.push((m, at));
            }
            Some(Entry::Whole(n)) => {
                if !other.insert(n) {
                    sink.error(at, format!("protocol {n} is listed twice"));
                    ok = false;
                }
            }
        }
    }
    let mut sorted: [Box<[(u16, u16)]>; 3] = Default::default();
    for (i, list) in ranges.iter().enumerate() {
        ok &= no_overlaps(sink, list);
        let mut out: Vec<(u16, u16)> = list.iter().map(|(r, _)| *r).collect();
        out.sort_unstable();
        sorted[i] = out.into_boxed_slice();
    }
    if !ok {
        return None;
    }
    let [tcp, udp, sctp] = sorted;
    let [v4, v6] = icmp.map(|l| {
        let mut m: Vec<IcmpMatch> = l.into_iter().map(|(m, _)| m).collect();
        m.sort_unstable();
        m.into_boxed_slice()
    });
    Some(Transports {
        tcp,
        udp,
        sctp,
        icmp: v4,
        icmpv6: v6,
        other: other.into_iter().collect(),
    })
}

/// Reports overlapping ranges of one protocol; whether there were none.
fn no_overlaps(sink: &mut Sink<'_>, ranges: &[((u16, u16), Pos)]) -> bool {
    // Sort by low end; each range is compared with the furthest-reaching one before it,
    // which is the one it must overlap if it overlaps any.
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].0.0, i));
    let mut reach: Option<usize> = None;
    let mut reported = BTreeSet::new();
    let mut ok = true;
    for &i in &order {
        if let Some(j) = reach
            && ranges[i].0.0 <= ranges[j].0.1
        {
            let (first, second) = if j < i { (j, i) } else { (i, j) };
            if reported.insert(second) {
                let show = |r: (u16, u16)| {
                    if r == ALL_PORTS {
                        "every port".to_owned()
                    } else {
                        range_str(r)
                    }
                };
                sink.error(
                    ranges[second].1,
                    format!(
                        "port ranges {} and {} overlap",
                        show(ranges[first].0),
                        show(ranges[second].0)
                    ),
                );
            }
            ok = false;
        }
        if reach.is_none_or(|j| ranges[i].0.1 > ranges[j].0.1) {
            reach = Some(i);
        }
    }
    ok
}
