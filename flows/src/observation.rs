//! What the nodes decided, read back from their EVE records.
//!
//! One [`Observation`] per decision: a connection decided once (`flow` events of L4
//! decisions, TLS and opaque streams, UDP sessions, ICMP and other protocols), each HTTP
//! request (`http` events), each DNS query (`dns` request events). A connection whose
//! requests or queries were decided one by one is not an observation itself: its requests
//! are. A connection recorded by both nodes (the source's outbound record and the
//! destination's inbound one) counts once, as the destination saw it (it proved the source's
//! identity). Records are read defensively: a line that is not a record eastwall writes is
//! skipped with its location and reason, never a panic; other event types (alerts, stats) are
//! ignored.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The pairing maps hold one entry per connection (millions): a fast hasher, seeded per
/// process.
type Fast = foldhash::fast::RandomState;
use std::net::IpAddr;

use eastwall_policy::Protocol;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
}

impl Verdict {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// One end of an observed decision, as the node knew it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Side {
    /// Its address.
    pub addr: IpAddr,
    /// Its registry workload, app and zone, if any.
    pub workload: Option<String>,
    /// The workload's app.
    pub app: Option<String>,
    /// The workload's zone.
    pub zone: Option<String>,
    /// Its SPIFFE identity, as recorded.
    pub identity: Option<String>,
    /// The user it acted for.
    pub user: Option<String>,
    /// The user's groups the decision used (`None`: no user, or unknown).
    pub groups: Option<Vec<String>>,
}

/// What the node knew of the application protocol when it decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordedL7 {
    /// Nothing: decided at connection time on L4 facts.
    None,
    /// A stream inspected and found neither HTTP nor TLS.
    Opaque,
    /// A TLS ClientHello.
    Tls {
        /// Its server name, if it sent one.
        sni: Option<String>,
    },
    /// One HTTP request.
    Http {
        /// Its method.
        method: String,
        /// Its host, without a port.
        host: Option<String>,
        /// Its path, normalized, without the query.
        path: String,
    },
    /// One DNS query.
    Dns {
        /// The name asked, lower case, without the final dot.
        name: String,
    },
}

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// When it was recorded (RFC 3339, the node's clock); for an aggregate, its first.
    pub time: String,
    /// For an aggregate of many decisions, when the last was recorded.
    pub last: Option<String>,
    /// The node that recorded it.
    pub node: String,
    /// The source.
    pub src: Side,
    /// The destination.
    pub dest: Side,
    /// The IP protocol.
    pub proto: Protocol,
    /// The destination port (0 without ports).
    pub port: u16,
    /// The application facts.
    pub l7: RecordedL7,
    /// What the node decided.
    pub verdict: Verdict,
    /// The rule that decided (`default-deny` when none).
    pub rule: String,
    /// How many decisions it stands for (an aggregate record stands for many).
    pub count: u64,
    /// Bytes both ways (connections; 0 for requests and queries).
    pub bytes: u64,
    /// Where it was read (`FILE:LINE`).
    pub from: String,
    /// The source port (0 without ports).
    pub src_port: u16,
    /// Recorded by the destination's node (inbound), or by the source's.
    pub inbound: bool,
}

impl Observation {
    /// Whether it is a connection decided as a whole (not a request or a query on it).
    fn whole(&self) -> bool {
        !matches!(self.l7, RecordedL7::Http { .. } | RecordedL7::Dns { .. })
    }

    fn conn(&self) -> Conn {
        (self.src.addr, self.src_port, self.dest.addr, self.port)
    }

    fn key(&self) -> ConnKey {
        ConnKey {
            conn: self.conn(),
            proto: self.proto.number(),
            l7: self.l7.clone(),
        }
    }
}

/// Observations read from EVE records, and what could not be read.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// The observations, deduplicated by [`Observations::finish`].
    pub list: Vec<Observation>,
    /// Lines skipped, with their location and why.
    pub problems: Vec<String>,
    /// Records read (every JSON line, whatever its type).
    pub records: u64,
    /// Inbound records per connection, to drop the outbound record of the same connection.
    seen: HashMap<ConnKey, (bool, usize), Fast>,
    /// Connections whose requests or queries were decided one by one.
    per_request: HashSet<Conn, Fast>,
    /// Where the observation of each connection decided as a whole is in `list`.
    whole_at: HashMap<Conn, usize, Fast>,
}

/// A connection: source address and port, destination address and port.
type Conn = (IpAddr, u16, IpAddr, u16);

/// A connection (or a request on it) as both nodes record it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    conn: Conn,
    proto: u8,
    l7: RecordedL7,
}

/// Longest line read (a record is far smaller; anything longer is not one of ours).
pub const MAX_LINE_BYTES: usize = 256 * 1024;

impl Observations {
    /// Reads the EVE records of `text` (JSON lines) named `source` in problems.
    pub fn read(&mut self, source: &str, text: &str) {
        // Lines are parsed in blocks, each block on every core, then taken in order (the
        // pairing of records depends on their order).
        const BLOCK: usize = 64 * 1024;
        // Room for every line at once: growing a list and maps of millions costs more than
        // filling them.
        let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
        self.list.reserve(lines);
        self.seen.reserve(lines);
        self.whole_at.reserve(lines);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut lines = text.lines().enumerate().peekable();
        while lines.peek().is_some() {
            let block: Vec<(usize, &str)> = lines.by_ref().take(BLOCK).collect();
            let per = block.len().div_ceil(threads).max(1);
            let parsed: Vec<Vec<(usize, Parsed)>> = if block.len() < 4096 || threads == 1 {
                vec![
                    block
                        .iter()
                        .map(|(i, l)| (*i, parse_line(source, *i, l)))
                        .collect(),
                ]
            } else {
                std::thread::scope(|scope| {
                    let workers: Vec<_> = block
                        .chunks(per)
                        .map(|chunk| {
                            scope.spawn(move || {
                                chunk
                                    .iter()
                                    .map(|(i, l)| (*i, parse_line(source, *i, l)))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect()
                })
            };
            for (i, p) in parsed.into_iter().flatten() {
                self.take(source, i, p);
            }
        }
    }

    fn take(&mut self, source: &str, i: usize, p: Parsed) {
        match p {
            Parsed::Blank => {}
            Parsed::TooLong(n) => {
                self.records += 1;
                self.problems.push(format!(
                    "{source}:{}: a line of {n} bytes is not a record",
                    i + 1
                ));
            }
            Parsed::Line(Ok(Observed::One(o))) => {
                self.records += 1;
                self.push(*o);
            }
            Parsed::Line(Ok(Observed::PerRequest(conn))) => {
                self.records += 1;
                // Its requests are the observations, whichever node's record of the
                // connection came first.
                self.per_request.insert(conn);
                if let Some(i) = self.whole_at.remove(&conn) {
                    self.remove_at(i);
                }
            }
            Parsed::Line(Ok(Observed::Nothing)) => self.records += 1,
            Parsed::Line(Err(why)) => {
                self.records += 1;
                self.problems.push(format!("{source}:{}: {why}", i + 1));
            }
        }
    }

    /// Drops the observation at `i` (a connection decided request by request after all),
    /// moving the last one into its place.
    fn remove_at(&mut self, i: usize) {
        let gone = self.list.swap_remove(i);
        if self.seen.get(&gone.key()).is_some_and(|(_, at)| *at == i) {
            self.seen.remove(&gone.key());
        }
        let last = self.list.len();
        if let Some(moved) = self.list.get(i) {
            if let Some(entry) = self.seen.get_mut(&moved.key())
                && entry.1 == last
            {
                entry.1 = i;
            }
            if let Some(at) = self.whole_at.get_mut(&moved.conn())
                && *at == last
            {
                *at = i;
            }
        }
    }

    /// Adds `o`, keeping one record per connection: the inbound one when both nodes wrote it.
    fn push(&mut self, o: Observation) {
        if o.whole() && self.per_request.contains(&o.conn()) {
            return;
        }
        // Without a source port (ICMP, other protocols) records cannot be paired.
        if o.src_port == 0 {
            self.list.push(o);
            return;
        }
        let key = o.key();
        match self.seen.get(&key).copied() {
            Some((true, _)) if !o.inbound => {}
            Some((false, i)) if o.inbound => {
                self.list[i] = o;
                self.seen.insert(key, (true, i));
            }
            _ => {
                let i = self.list.len();
                if o.whole() {
                    self.whole_at.insert(o.conn(), i);
                }
                self.seen.insert(key, (o.inbound, i));
                self.list.push(o);
            }
        }
    }
}

/// One line, parsed.
enum Parsed {
    Blank,
    TooLong(usize),
    Line(Result<Observed, String>),
}

fn parse_line(source: &str, i: usize, line: &str) -> Parsed {
    if line.trim().is_empty() {
        Parsed::Blank
    } else if line.len() > MAX_LINE_BYTES {
        Parsed::TooLong(line.len())
    } else {
        Parsed::Line(observation_of(line, &format!("{source}:{}", i + 1)))
    }
}

/// What one record is.
enum Observed {
    /// One observation.
    One(Box<Observation>),
    /// A connection whose requests or queries are the observations.
    PerRequest(Conn),
    /// Nothing to replay (an alert, a DNS response, ...).
    Nothing,
}

// What replay and recommend read of a record, typed: borrowed where the JSON allows, every
// other field skipped unread (five times faster than a generic JSON value).

#[derive(Deserialize, Default)]
struct Raw<'a> {
    #[serde(borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    src_ip: Option<Cow<'a, str>>,
    #[serde(default)]
    src_port: Option<u64>,
    #[serde(borrow, default)]
    dest_ip: Option<Cow<'a, str>>,
    #[serde(default)]
    dest_port: Option<u64>,
    #[serde(borrow, default)]
    proto: Option<Cow<'a, str>>,
    #[serde(default)]
    icmp_type: Option<u64>,
    #[serde(default)]
    icmp_code: Option<u64>,
    #[serde(borrow, default)]
    app_proto: Option<Cow<'a, str>>,
    #[serde(default)]
    flow: Option<RawFlow>,
    #[serde(borrow, default)]
    http: Option<RawHttp<'a>>,
    #[serde(borrow, default)]
    dns: Option<RawDns<'a>>,
    #[serde(borrow, default)]
    tls: Option<RawTls<'a>>,
    #[serde(borrow, default)]
    eastwall: Option<RawEastwall<'a>>,
}

#[derive(Deserialize, Default)]
struct RawFlow {
    #[serde(default)]
    bytes_toserver: Option<u64>,
    #[serde(default)]
    bytes_toclient: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawHttp<'a> {
    #[serde(borrow, default)]
    http_method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    normalized_path: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    hostname: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct RawDns<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    queries: Option<Vec<RawQuery<'a>>>,
}

#[derive(Deserialize, Default)]
struct RawQuery<'a> {
    #[serde(borrow, default)]
    rrname: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct RawTls<'a> {
    #[serde(borrow, default)]
    sni: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct RawEastwall<'a> {
    #[serde(borrow, default)]
    node: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    direction: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    src: Option<RawEnd<'a>>,
    #[serde(borrow, default)]
    dest: Option<RawEnd<'a>>,
    #[serde(borrow, default)]
    policy: Option<RawPolicy<'a>>,
    #[serde(borrow, default)]
    normalized_path: Option<Cow<'a, str>>,
    #[serde(default)]
    aggregate: Option<RawAggregate>,
    #[serde(default)]
    http_requests: Option<IgnoredAny>,
    #[serde(default)]
    dns_queries: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct RawEnd<'a> {
    #[serde(borrow, default)]
    workload: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    app: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    zone: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    identity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    groups: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize, Default)]
struct RawPolicy<'a> {
    #[serde(borrow, default)]
    verdict: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct RawAggregate {
    #[serde(default)]
    flows: Option<u64>,
}

fn owned(c: &Option<Cow<'_, str>>) -> Option<String> {
    c.as_deref().map(str::to_owned)
}

fn side(addr: &Option<Cow<'_, str>>, e: Option<&RawEnd<'_>>, field: &str) -> Result<Side, String> {
    let addr: IpAddr = addr
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no valid `{field}`"))?;
    let none = RawEnd::default();
    let e = e.unwrap_or(&none);
    Ok(Side {
        addr,
        workload: owned(&e.workload),
        app: owned(&e.app),
        zone: owned(&e.zone),
        identity: owned(&e.identity),
        user: owned(&e.user),
        groups: e
            .groups
            .as_ref()
            .map(|g| g.iter().map(|x| x.to_string()).collect()),
    })
}

/// The protocol of an EVE `proto` (and ICMP type/code).
fn protocol(r: &Raw<'_>) -> Result<Protocol, String> {
    let kind = r.icmp_type.unwrap_or(0) as u8;
    let code = r.icmp_code.unwrap_or(0) as u8;
    Ok(match r.proto.as_deref() {
        Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        Some("ICMP") => Protocol::Icmp { kind, code },
        Some("IPv6-ICMP") => Protocol::Icmpv6 { kind, code },
        Some(n) => match n.parse::<u8>() {
            Ok(n) => Protocol::Other(n),
            Err(_) => return Err(format!("unknown proto `{n}`")),
        },
        None => return Err("no `proto`".to_owned()),
    })
}

fn verdict(p: Option<&RawPolicy<'_>>) -> Result<(Verdict, String), String> {
    let verdict = match p.and_then(|p| p.verdict.as_deref()) {
        Some("allow") => Verdict::Allow,
        Some("deny") => Verdict::Deny,
        other => {
            return Err(format!(
                "policy verdict {other:?} is neither allow nor deny"
            ));
        }
    };
    let rule = p.and_then(|p| owned(&p.rule)).ok_or("no policy rule")?;
    Ok((verdict, rule))
}

/// The observation the record `line` stands for.
fn observation_of(line: &str, at: &str) -> Result<Observed, String> {
    let r: Raw<'_> = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => return Err(format!("not JSON: {e}")),
        Err(e) => return Err(format!("not an eastwall record: {e}")),
    };
    let event = r.event_type.as_deref().unwrap_or_default();
    let Some(e) = &r.eastwall else {
        return Ok(Observed::Nothing);
    };
    if !matches!(event, "flow" | "http" | "dns") {
        return Ok(Observed::Nothing);
    }
    let port_of = |p: Option<u64>| p.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    let addr = |a: &Option<Cow<'_, str>>| a.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
    let l7 = match event {
        "http" => {
            let none = RawHttp::default();
            let h = r.http.as_ref().unwrap_or(&none);
            let method = owned(&h.http_method).ok_or("an http event without http_method")?;
            // Earlier nodes wrote the normalized path in the `http` object.
            let path = owned(&e.normalized_path)
                .or_else(|| owned(&h.normalized_path))
                .or_else(|| h.url.as_deref().map(path_of))
                .ok_or("an http event without url")?;
            RecordedL7::Http {
                method,
                host: h.hostname.as_deref().map(strip_port),
                path,
            }
        }
        "dns" => {
            let Some(d) = &r.dns else {
                return Ok(Observed::Nothing);
            };
            if d.kind.as_deref() != Some("request") {
                return Ok(Observed::Nothing);
            }
            let name = d
                .queries
                .as_ref()
                .and_then(|q| q.first())
                .and_then(|q| q.rrname.as_deref())
                .ok_or("a dns request without a query")?;
            RecordedL7::Dns {
                name: name.trim_end_matches('.').to_ascii_lowercase(),
            }
        }
        _ => {
            // Decided per request or per query: those are the observations.
            if e.http_requests.is_some() || e.dns_queries.is_some() {
                return Ok(match (addr(&r.src_ip), addr(&r.dest_ip)) {
                    (Some(s), Some(d)) => {
                        Observed::PerRequest((s, port_of(r.src_port), d, port_of(r.dest_port)))
                    }
                    _ => Observed::Nothing,
                });
            }
            match r.app_proto.as_deref() {
                None => RecordedL7::None,
                Some("tls") => RecordedL7::Tls {
                    sni: r.tls.as_ref().and_then(|t| owned(&t.sni)),
                },
                Some(_) => RecordedL7::Opaque,
            }
        }
    };
    let (verdict, rule) = verdict(e.policy.as_ref())?;
    let proto = protocol(&r)?;
    let port = if proto.has_ports() {
        r.dest_port
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("no valid `dest_port`")?
    } else {
        0
    };
    let flow = r.flow.as_ref();
    Ok(Observed::One(Box::new(Observation {
        time: owned(&r.timestamp).ok_or("no timestamp")?,
        last: None,
        node: owned(&e.node).unwrap_or_default(),
        src: side(&r.src_ip, e.src.as_ref(), "src_ip")?,
        dest: side(&r.dest_ip, e.dest.as_ref(), "dest_ip")?,
        proto,
        port,
        l7,
        verdict,
        rule,
        count: e
            .aggregate
            .as_ref()
            .and_then(|a| a.flows)
            .unwrap_or(1)
            .max(1),
        bytes: flow
            .and_then(|f| f.bytes_toserver)
            .unwrap_or(0)
            .saturating_add(flow.and_then(|f| f.bytes_toclient).unwrap_or(0)),
        from: at.to_owned(),
        src_port: port_of(r.src_port),
        inbound: e.direction.as_deref() == Some("inbound"),
    })))
}

/// The path of a request target (no query, no scheme and authority).
fn path_of(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or("");
    let path = match no_query.find("://") {
        Some(i) => {
            let rest = &no_query[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => no_query,
    };
    eastwall_policy::normalize_path(path).unwrap_or_else(|_| path.to_owned())
}

fn strip_port(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h.to_owned(),
        _ => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) const FLOW_OUT: &str = r#"{"timestamp":"2026-12-05T10:00:00.000000+0000","flow_id":1,"event_type":"flow","src_ip":"10.0.1.2","src_port":40000,"dest_ip":"10.0.2.2","dest_port":5432,"proto":"TCP","flow":{"bytes_toserver":10,"bytes_toclient":20,"start":"x","end":"y","age":0,"state":"closed","reason":"closed","alerted":false},"eastwall":{"node":"hostA","direction":"outbound","src":{"workload":"web","app":"web","zone":"prod","node":"hostA","identity":"spiffe://corp.example/wl/web"},"dest":{"workload":"db","app":"db","zone":"prod","node":"hostB","identity":"spiffe://corp.example/wl/db"},"policy":{"verdict":"allow","rule":"web-to-db","mode":"enforce","monitor":[]},"duration_ms":3}}"#;

    #[test]
    fn a_connection_decided_per_request_is_its_requests_whichever_node_comes_first() {
        // The source node decided the connection (to be decided per request), the
        // destination decided its requests; read in either order.
        let out = FLOW_OUT.replace("\"dest_port\":5432", "\"dest_port\":443");
        let inb = out
            .replace("\"direction\":\"outbound\"", "\"direction\":\"inbound\"")
            .replace(
                "\"duration_ms\":3",
                "\"duration_ms\":3,\"http_requests\":{\"requests\":1,\"denied\":0}",
            );
        let req = r#"{"timestamp":"t","event_type":"http","src_ip":"10.0.1.2","src_port":40000,"dest_ip":"10.0.2.2","dest_port":443,"proto":"TCP","http":{"url":"/x","http_method":"GET"},"eastwall":{"node":"hostB","direction":"inbound","src":{},"dest":{},"policy":{"verdict":"allow","rule":"r"}}}"#;
        for order in [[out.as_str(), &inb, req], [&inb, req, &out]] {
            let mut o = Observations::default();
            o.read("a.json", order[0]);
            o.read("b.json", &format!("{}\n{}", order[1], order[2]));
            assert_eq!(o.list.len(), 1, "{:?}", o.list);
            assert!(matches!(o.list[0].l7, RecordedL7::Http { .. }));
        }
    }

    #[test]
    fn many_connections_interleaved_keep_their_places() {
        // 6,000 connections (blocks parsed on every core) recorded by the source; then the
        // even ones turn out decided per request, and the destination's records of the odd
        // ones replace the source's.
        const N: usize = 6_000;
        let out = |p: usize| FLOW_OUT.replace("40000", &(20_000 + p).to_string());
        let mut o = Observations::default();
        let first: Vec<String> = (0..N).map(out).collect();
        o.read("a.json", &first.join("\n"));
        let mut second = Vec::new();
        for p in 0..N {
            if p % 2 == 0 {
                second.push(out(p).replace(
                    "\"duration_ms\":3",
                    "\"duration_ms\":3,\"http_requests\":{\"requests\":1,\"denied\":0}",
                ));
            } else {
                second.push(
                    out(p)
                        .replace("\"direction\":\"outbound\"", "\"direction\":\"inbound\"")
                        .replace(
                            "\"node\":\"hostA\",\"direction\"",
                            "\"node\":\"hostB\",\"direction\"",
                        ),
                );
            }
        }
        o.read("b.json", &second.join("\n"));
        assert_eq!(o.list.len(), N / 2);
        assert_eq!(o.records, 2 * N as u64);
        let mut ports: Vec<u16> = o.list.iter().map(|x| x.src_port).collect();
        ports.sort_unstable();
        assert_eq!(
            ports,
            (0..N)
                .filter(|p| p % 2 == 1)
                .map(|p| 20_000 + p as u16)
                .collect::<Vec<u16>>()
        );
        assert!(o.list.iter().all(|x| x.node == "hostB"));
    }

    #[test]
    fn records_become_observations_once_per_connection() {
        let inbound = FLOW_OUT
            .replace("\"direction\":\"outbound\"", "\"direction\":\"inbound\"")
            .replace(
                "\"node\":\"hostA\",\"direction\"",
                "\"node\":\"hostB\",\"direction\"",
            );
        let mut o = Observations::default();
        o.read("a.json", FLOW_OUT);
        o.read("b.json", &inbound);
        // Another connection, denied, as an aggregate of 7.
        let denied = FLOW_OUT
            .replace("40000", "40001")
            .replace(
                "\"verdict\":\"allow\",\"rule\":\"web-to-db\"",
                "\"verdict\":\"deny\",\"rule\":\"default-deny\"",
            )
            .replace(
                "\"duration_ms\":3",
                "\"duration_ms\":3,\"aggregate\":{\"flows\":7,\"first\":\"a\",\"last\":\"b\"}",
            );
        o.read("a.json", &denied);
        assert_eq!(o.records, 3);
        assert!(o.problems.is_empty(), "{:?}", o.problems);
        assert_eq!(o.list.len(), 2);
        assert_eq!(o.list[0].node, "hostB", "the destination's record stays");
        assert_eq!(o.list[0].from, "b.json:1");
        assert_eq!(o.list[0].bytes, 30);
        assert_eq!(o.list[0].src.app.as_deref(), Some("web"));
        assert_eq!((o.list[1].verdict, o.list[1].count), (Verdict::Deny, 7));
    }

    #[test]
    fn requests_and_queries_are_observations_and_their_connection_is_not() {
        let conn = FLOW_OUT.replace(
            "\"duration_ms\":3",
            "\"duration_ms\":3,\"http_requests\":{\"requests\":2,\"denied\":1}",
        );
        let http = r#"{"timestamp":"t","flow_id":1,"event_type":"http","src_ip":"10.0.1.2","src_port":40000,"dest_ip":"10.0.2.2","dest_port":8080,"proto":"TCP","app_proto":"http","http":{"hostname":"api.corp:8080","url":"/api/accounts/17?x=1","http_method":"GET","protocol":"HTTP/1.1"},"eastwall":{"node":"hostB","direction":"inbound","src":{"workload":"web"},"dest":{"workload":"db"},"policy":{"verdict":"allow","rule":"r","mode":"enforce","monitor":[]}}}"#;
        let dns = r#"{"timestamp":"t","flow_id":2,"event_type":"dns","src_ip":"10.0.1.2","src_port":5353,"dest_ip":"10.0.2.2","dest_port":53,"proto":"UDP","dns":{"version":3,"type":"request","queries":[{"rrname":"API.Corp.Example.","rrtype":"A"}]},"eastwall":{"node":"hostB","direction":"inbound","src":{},"dest":{},"policy":{"verdict":"deny","rule":"default-deny","mode":"enforce","monitor":[]}}}"#;
        let answer = dns.replace("\"type\":\"request\"", "\"type\":\"response\"");
        let mut o = Observations::default();
        o.read("e.json", &[conn.as_str(), http, dns, &answer].join("\n"));
        assert!(o.problems.is_empty(), "{:?}", o.problems);
        assert_eq!(o.list.len(), 2);
        assert_eq!(
            o.list[0].l7,
            RecordedL7::Http {
                method: "GET".into(),
                host: Some("api.corp".into()),
                path: "/api/accounts/17".into()
            }
        );
        assert_eq!(
            o.list[1].l7,
            RecordedL7::Dns {
                name: "api.corp.example".into()
            }
        );
        assert_eq!((o.list[1].proto, o.list[1].port), (Protocol::Udp, 53));
    }

    #[test]
    fn bad_lines_are_skipped_with_their_location() {
        let mut o = Observations::default();
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_LINE_BYTES));
        let bad_verdict = FLOW_OUT.replace("\"verdict\":\"allow\"", "\"verdict\":\"maybe\"");
        let bad_ip = FLOW_OUT.replace("10.0.1.2", "not-an-ip");
        let bad_port = FLOW_OUT.replace("5432", "70000");
        let alert = r#"{"event_type":"alert","eastwall":{}}"#;
        let text = [
            "garbage",
            &huge,
            &bad_verdict,
            &bad_ip,
            &bad_port,
            alert,
            "[1,2]",
            "",
            FLOW_OUT,
        ]
        .join("\n");
        o.read("f.json", &text);
        assert_eq!(o.list.len(), 1);
        assert_eq!(o.records, 8);
        let p = o.problems.join("\n");
        for expected in [
            "f.json:1: not JSON",
            "f.json:2: a line of",
            "f.json:3: policy verdict",
            "f.json:4: no valid `src_ip`",
            "f.json:5: no valid `dest_port`",
        ] {
            assert!(p.contains(expected), "{expected}: {p}");
        }
    }
}
