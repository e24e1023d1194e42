//! The per-flow inspector: what the node feeds for one TCP connection or UDP session, in
//! arrival order, and the alerts each input produces.
//!
//! A UDP datagram is inspected on its own, as Suricata inspects a packet: positions count
//! from its first byte, `dsize` is its length, nothing carries over to the next datagram, and
//! a rule alerts on every datagram it matches (thresholds are how rules limit that). The
//! client's first datagram is read as a DNS query when either port is 53 (Suricata's
//! detection ports) or the node said the session is DNS; on a DNS session `dns.query` rules
//! run on every client datagram that is a query, as on DNS over TCP.
//!
//! Raw stream bytes are inspected per *message*: the bytes one side sends before the other
//! side sends (a request, a response, a command). A message is matched in windows of
//! [`Limits::stream_window`] bytes from its start (offsets and depths count from the start
//! of the message; longer messages continue in overlapping windows where only rules not tied
//! to the message start apply), up to [`Limits::stream_depth`] bytes per direction. Each
//! direction keeps the last [`Engine::stream_tail`] bytes of its stream between its messages,
//! and the first window of a message starts with them: rules not tied to the message start
//! see a direction's stream as contiguous, whatever the other side says in between (an echo
//! of every keystroke cannot split a pattern), while a match must use some new byte, so old
//! bytes never match twice. A rule whose match cannot be undone by more data (no negation,
//! `endswith`, `dsize`, …) alerts as soon as it matches; the others are decided when the
//! message ends (the other side speaks, or [`FlowInspector::stream_end`]). So feeding the
//! same bytes split differently gives the same alerts. HTTP, TLS and DNS rules are decided
//! on the parsed messages. On an HTTP/1 flow whose heads the caller does not hand over (a
//! raw TCP connection the node relays), the inspector frames HTTP/1 from the stream itself
//! (`crate::h1`, the framing the node's L7 layer uses for heads as received).

use crate::compile::{
    BitCond, BitOp, CFlowint, CFlowintTarget, CPhase, CRule, CondId, Engine, Field, Phase, RuleId,
    RuleMask,
};
use crate::decode::{self, BodyDecoder, DecodeEvent};
use crate::dns::{self, DnsFramer};
use crate::fingerprint::{self, ServerHello};
use crate::h1::{self, Framer, Method, Role};
use crate::http::{self, HttpRequest, HttpResponse, HttpVersion};
use crate::mail::{self, MailReader};
use crate::payload;
use crate::rule::{
    Dir, FlowintOp, Protocol, RuleAction, StreamSide, StreamSize, Transform, Transport, XbitOp,
};
use crate::threshold::Limit;
use crate::tls::{self, LeafFacts, ServerHandshake};
use eastwall_wire::sniff::{ClientHello, ClientHelloError, Sniff, Sniffed, Sniffer, is_grease};
use sha2::Digest;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A point in time given by the caller (the crate has no clock): time since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// From time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        Timestamp(since_epoch)
    }

    /// From whole seconds since the Unix epoch.
    pub fn from_secs(secs: u64) -> Self {
        Timestamp(Duration::from_secs(secs))
    }

    /// Time since the Unix epoch.
    pub fn since_epoch(self) -> Duration {
        self.0
    }
}

/// The application protocol the node detected on the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AppProto {
    /// Not (yet) known: only rules of no application protocol (`tcp`, `udp`, `ip`) apply.
    #[default]
    Unknown,
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
    /// TLS.
    Tls,
    /// DNS (the inspector reads the queries from the client's stream or datagrams).
    Dns,
    /// SMTP (recognised by the client's first command).
    Smtp,
    /// FTP's control connection (recognised by the client's first command).
    Ftp,
}

impl AppProto {
    /// As EVE writes `app_proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            AppProto::Unknown => "failed",
            AppProto::Http1 => "http",
            AppProto::Http2 => "http2",
            AppProto::Tls => "tls",
            AppProto::Dns => "dns",
            AppProto::Smtp => "smtp",
            AppProto::Ftp => "ftp",
        }
    }

    fn is(self, p: Protocol) -> bool {
        match p {
            Protocol::Tcp | Protocol::Udp | Protocol::Ip => true,
            Protocol::Http => matches!(self, AppProto::Http1 | AppProto::Http2),
            Protocol::Http1 => self == AppProto::Http1,
            Protocol::Http2 => self == AppProto::Http2,
            Protocol::Tls => self == AppProto::Tls,
            Protocol::Dns => self == AppProto::Dns,
            Protocol::Smtp => self == AppProto::Smtp,
            Protocol::Ftp => self == AppProto::Ftp,
        }
    }
}

/// The endpoints of a flow: `src` opened the connection to `dst`, or sent the first datagram
/// of the UDP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowMeta {
    /// The client.
    pub src: SocketAddr,
    /// The server.
    pub dst: SocketAddr,
}

/// The HTTP transaction an alert belongs to, as EVE's `http` object shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSummary {
    /// Host, normalized.
    pub hostname: Option<String>,
    /// Request target as sent.
    pub url: String,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Method.
    pub method: String,
    /// `HTTP/1.1`, …
    pub protocol: String,
    /// Response status, once known.
    pub status: Option<u16>,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The rule's action (the node decides what to do with it).
    pub action: RuleAction,
    /// Generator id (1 for text rules).
    pub gid: u32,
    /// Signature id.
    pub sid: u32,
    /// Revision.
    pub rev: u32,
    /// The rule's `msg`.
    pub msg: String,
    /// The rule's classtype.
    pub classtype: Option<String>,
    /// The classtype's description (empty when none).
    pub category: String,
    /// Priority: the rule's, else the classtype's, else 3.
    pub severity: u8,
    /// The rule's metadata pairs.
    pub metadata: Vec<(String, String)>,
    /// Direction of the data that matched.
    pub dir: Dir,
    /// The transaction (HTTP request number, DNS query number) when not a raw-stream alert.
    pub tx_id: Option<u64>,
    /// The flow's application protocol when the alert was raised.
    pub app_proto: AppProto,
    /// The flow's transport (EVE `proto`).
    pub transport: Transport,
    /// When.
    pub timestamp: Timestamp,
    /// The HTTP transaction, for HTTP alerts.
    pub http: Option<HttpSummary>,
    /// The TLS SNI, for TLS alerts.
    pub tls_sni: Option<String>,
    /// The DNS query name, for DNS alerts.
    pub dns_query: Option<String>,
}

/// Something the inspector noticed that is no rule's match (EVE `anomaly`): how a body was
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// What.
    pub event: DecodeEvent,
    /// Direction of the data.
    pub dir: Dir,
    /// The HTTP transaction.
    pub tx_id: Option<u64>,
    /// When.
    pub timestamp: Timestamp,
    /// The HTTP transaction, as alerts show it.
    pub http: Option<HttpSummary>,
}

/// What one input produced. Empty (no allocation) when nothing matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Alerts, in rule evaluation order.
    pub alerts: Vec<Alert>,
    /// Anomalies noticed.
    pub anomalies: Vec<Anomaly>,
}

impl Verdict {
    /// Whether a matching rule asks to drop or reject the traffic.
    pub fn blocks(&self) -> bool {
        self.alerts
            .iter()
            .any(|a| matches!(a.action, RuleAction::Drop | RuleAction::Reject))
    }

    /// Whether nothing matched and nothing was noticed.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.anomalies.is_empty()
    }
}

/// Whether a raw-stream rule matches `buf` with a match that uses a byte at or after `fresh`.
fn stream_matches(r: &CRule, buf: &[u8], fresh: usize) -> bool {
    let Some(p) = r.phase(Phase::Stream) else {
        return false;
    };
    p.buffers.iter().all(|b| {
        if b.field != Field::Stream {
            return false;
        }
        if b.transforms.is_empty() {
            payload::matches_new(&b.items, buf, fresh)
        } else {
            // Such rules look back at nothing (`fresh` is 0); the parser gives raw-stream
            // buffers no transforms anyway.
            payload::matches(&b.items, &apply_transforms(buf, &b.transforms))
        }
    })
}

/// The decoder of a body whose head has `headers`, and the anomaly its codings are.
fn body_coding(headers: &[(&str, &[u8])]) -> (Option<Box<BodyDecoder>>, Option<DecodeEvent>) {
    let Some(value) = http::header(headers, "content-encoding") else {
        return (None, None);
    };
    let (layers, too_many) = decode::codings(std::iter::once(&*value));
    (
        (layers > 0).then(|| Box::new(BodyDecoder::new(layers))),
        too_many.then_some(DecodeEvent::TooManyEncodingLayers),
    )
}

/// Minimum growth of a buffer before monotone rules are checked again.
const MIN_RECHECK: usize = 64;

/// Raw-stream state of one direction.
#[derive(Debug, Default)]
struct DirState {
    /// The current window of the current message; between messages, the direction's tail
    /// (its last [`Engine::stream_tail`] bytes).
    window: Vec<u8>,
    /// Leading bytes of `window` that an earlier window inspected: the tail before the
    /// message, or the overlap of a continued message. Matches must go beyond them.
    old: usize,
    /// The window continues a message (the message start is not in it).
    continued: bool,
    /// Bytes of the current message (saturating: past any `dsize` a rule can name).
    msg_len: u32,
    /// Bytes inspected in this direction.
    total: u64,
    in_message: bool,
    /// Rules whose pattern occurs in the window.
    candidates: Vec<RuleId>,
    /// Rules that matched in the window.
    matched: Vec<RuleId>,
    /// Rules that alerted in this direction.
    fired: Vec<RuleId>,
    /// Window length when monotone rules were last checked.
    checked_len: usize,
}

/// A request or response body being collected.
#[derive(Debug, Default)]
struct Body {
    /// Its content codings being undone (`Content-Encoding`), if any.
    coding: Option<Box<BodyDecoder>>,
    buf: Vec<u8>,
    seen: bool,
    ended: bool,
    candidates: Vec<RuleId>,
    matched: Vec<RuleId>,
    checked_len: usize,
}

/// One HTTP transaction.
#[derive(Debug, Default)]
struct Tx {
    id: u64,
    /// Rules that matched every phase so far and wait for a later one.
    pending: Vec<RuleId>,
    /// The engine's conditions (head phases of rules decided late) its heads met, sorted.
    met: Vec<CondId>,
    fired: Vec<RuleId>,
    req_body: Body,
    resp_body: Body,
    /// The response head was seen.
    response: bool,
    summary: HttpSummary,
    /// A mail attachment (SMTP), not an HTTP exchange.
    mail: bool,
    /// What of the request body is files (`file.data` of `http` rules).
    files: RequestFiles,
}

/// The files a request uploads, as Suricata 7's HTTP parser makes them: the `filename` parts
/// of a `multipart/form-data` body; the whole body of any other POST or PUT; none for other
/// methods.
#[derive(Debug, Default)]
enum RequestFiles {
    #[default]
    None,
    Whole,
    /// Multipart, with this boundary.
    Form(Vec<u8>),
}

impl RequestFiles {
    fn of(req: &HttpRequest<'_>) -> RequestFiles {
        if !(req.method.eq_ignore_ascii_case("POST") || req.method.eq_ignore_ascii_case("PUT")) {
            return RequestFiles::None;
        }
        http::header(req.headers, "content-type")
            .and_then(|ct| mail::form_boundary(&ct))
            .map_or(RequestFiles::Whole, RequestFiles::Form)
    }

    /// The files in `body` (as much of it as came).
    fn in_body<'a>(&self, body: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            RequestFiles::None => Vec::new(),
            RequestFiles::Whole => vec![body],
            RequestFiles::Form(boundary) => mail::form_files(body, boundary),
        }
    }
}

impl Tx {
    /// Its final response came (an interim `1xx` other than `101` is followed by another).
    fn answered(&self) -> bool {
        self.response
            && !self
                .summary
                .status
                .is_some_and(|s| (100..200).contains(&s) && s != 101)
    }
}

/// HTTP/1 read from a raw stream: each direction's framer, and the transactions whose
/// requests were pipelined ahead of the responses to them.
#[derive(Debug)]
struct Http1Reader {
    framers: [Framer; 2],
    /// Transactions older than the open one (the newest request), oldest first: each
    /// response belongs to the oldest (at most [`MAX_PIPELINED`]).
    waiting: VecDeque<Box<Tx>>,
}

/// Requests a client may have sent ahead of their responses that are still told apart
/// (libhtp keeps up to 1,024 transactions a flow; pipelining clients send a few).
const MAX_PIPELINED: usize = 64;

/// The flowbits and `flowint` integers of a flow (boxed: most flows have none).
#[derive(Debug, Default)]
struct FlowVars {
    bits: Vec<u64>,
    /// By number; `None`: not set.
    ints: Vec<Option<u32>>,
}

/// Per-flow state. Feed it the flow's inputs in arrival order.
#[derive(Debug)]
pub struct FlowInspector {
    engine: Arc<Engine>,
    flow: FlowMeta,
    transport: Transport,
    app: AppProto,
    /// UDP: a datagram went in this direction (`flow:established` once both did).
    seen: [bool; 2],
    /// UDP: the client's first datagram was looked at for DNS.
    detected: bool,
    /// A `pass` rule matched: the flow is no longer inspected.
    passed: bool,
    /// Its flowbits and `flowint` integers, from the first that a rule sets.
    vars: Option<Box<FlowVars>>,
    dirs: [DirState; 2],
    /// Direction of the message in progress.
    speaking: Option<Dir>,
    tx: Option<Box<Tx>>,
    next_tx: u32,
    tls_seen: bool,
    /// The TLS version of each direction's hello, once read (`tls.version`; 0: none).
    tls_version: [u16; 2],
    /// TCP: bytes each direction sent (`stream_size`).
    sent: [u32; 2],
    /// What is followed of a TLS connection, allocated when first needed.
    tls: Option<Box<TlsState>>,
    /// The client's first bytes, read for a TLS ClientHello: on a TCP flow the node did not
    /// name, and on TLS flows whose hello rules read.
    detecting: Option<Box<(Sniffer, Vec<u8>)>>,
    /// Whether the flow's protocol is known or given up on.
    detect_done: bool,
    /// The engine's rules this flow's profile uses (`None`: all).
    only: Option<Arc<[u64]>>,
    dns: Option<Box<DnsFramer>>,
    next_dns: u32,
    /// SMTP: the client's stream read for mail (when rules read attachments).
    mail: Option<Box<MailReader>>,
    /// SMTP and FTP: the commands and replies watched for a switch to TLS.
    upgrade: Option<Box<UpgradeWatch>>,
    /// HTTP/1 framed from the raw stream, each direction (HTTP/1 flows whose heads the
    /// caller does not hand over).
    http1: Option<Box<Http1Reader>>,
    /// The caller hands HTTP heads over itself ([`FlowInspector::http_request`]): the stream
    /// is not read for them.
    http_given: bool,
}

/// What the inspector follows of a TLS connection.
#[derive(Debug, Default)]
struct TlsState {
    /// The server's handshake being read for its hello and certificates (TLS flows with
    /// such rules).
    server: ServerHandshake,
    /// Each direction's records, walked to where encrypted application data starts: on a
    /// flow that starts like TLS, while raw-stream rules apply, until the bytes stop looking
    /// like records.
    walk: Option<[tls::RecordWalk; 2]>,
    /// The server answered with a handshake record: application data from then on is the
    /// encrypted connection (before, it could be a client's early data).
    server_handshake: bool,
    /// Encrypted application data started: the raw stream is no longer inspected.
    encrypted: bool,
}

/// SMTP's `STARTTLS` and FTP's `AUTH TLS` (RFC 3207, RFC 4217): the client asks, the server
/// agrees (`220`, `234`), and both directions speak TLS after the server's reply line. Only
/// the start of each line is kept, in place: a command or a reply code is all it needs.
#[derive(Debug, Default)]
struct UpgradeWatch {
    /// The first bytes of each direction's line in progress, and its length so far.
    head: [[u8; UPGRADE_LINE_HEAD]; 2],
    len: [usize; 2],
    /// The client asked for TLS: the server's answer decides.
    asked: bool,
}

/// Bytes of a line's start kept: `AUTH TLS-C` and a few spaces.
const UPGRADE_LINE_HEAD: usize = 16;

impl UpgradeWatch {
    /// Reads `bytes` of `dir` on a flow of `app`; `Some(at)`: the server agreed to TLS with
    /// the line that ends at `at`.
    fn feed(&mut self, app: AppProto, dir: Dir, bytes: &[u8]) -> Option<usize> {
        let d = dir.index();
        let mut start = 0;
        while start < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[start..]).map(|i| start + i + 1);
            let piece = &bytes[start..end.unwrap_or(bytes.len())];
            let kept = self.len[d].min(UPGRADE_LINE_HEAD);
            let take = piece.len().min(UPGRADE_LINE_HEAD - kept);
            self.head[d][kept..kept + take].copy_from_slice(&piece[..take]);
            self.len[d] = self.len[d].saturating_add(piece.len());
            let Some(end) = end else {
                break;
            };
            let line = self.head[d];
            let whole = self.len[d] <= UPGRADE_LINE_HEAD;
            let agreed = self.line(app, dir, &line[..self.len[d].min(UPGRADE_LINE_HEAD)], whole);
            self.len[d] = 0;
            if agreed {
                return Some(end);
            }
            start = end;
        }
        None
    }

    /// One complete line (its start, and whether that is all of it): whether it is the
    /// server's agreement to an upgrade the client asked for.
    fn line(&mut self, app: AppProto, dir: Dir, line: &[u8], whole: bool) -> bool {
        let text = line.trim_ascii_end();
        match dir {
            Dir::ToServer => {
                let asks = match app {
                    AppProto::Smtp => whole && text.eq_ignore_ascii_case(b"STARTTLS"),
                    AppProto::Ftp => {
                        text.len() >= 8
                            && (text[..8].eq_ignore_ascii_case(b"AUTH TLS")
                                || text[..8].eq_ignore_ascii_case(b"AUTH SSL"))
                    }
                    _ => false,
                };
                // Another command after it (a pipelining client) leaves the question open.
                self.asked |= asks;
                false
            }
            Dir::ToClient => {
                // Only the last line of a reply (`220 …`, not `220-…`) answers.
                if !self.asked || text.len() < 3 || text.get(3).is_some_and(|&b| b == b'-') {
                    return false;
                }
                self.asked = false;
                let go = match app {
                    AppProto::Smtp => b"220",
                    _ => b"234",
                };
                &text[..3] == go
            }
        }
    }
}

/// The longest HTTP/1 head read from a raw stream (libhtp's default `request-body-limit`
/// aside, Suricata's headers limit is in this range too).
const MAX_HTTP_HEAD: usize = 64 * 1024;

/// Where a rule's buffers come from at one evaluation.
trait Source {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>>;
}

struct RequestSource<'a, 'b>(&'b HttpRequest<'a>);

impl Source for RequestSource<'_, '_> {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>> {
        http::request_field(self.0, field)
    }
}

struct ResponseSource<'a, 'b>(&'b HttpResponse<'a>);

impl Source for ResponseSource<'_, '_> {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>> {
        http::response_field(self.0, field)
    }
}

/// The client's hello (`None`: TLS whose hello could not be read). The fingerprints are
/// computed when a rule asks.
struct ClientSource<'a>(Option<&'a ClientHello>);

impl Source for ClientSource<'_> {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>> {
        let hello = self.0?;
        let owned = |s: String| Some(Cow::Owned(s.into_bytes()));
        match field {
            // As sent (Suricata's `tls.sni`), valid DNS name or not.
            Field::Sni => hello
                .sni_raw
                .as_deref()
                .or(hello.sni.as_deref().map(str::as_bytes))
                .map(Cow::Borrowed),
            Field::Ja3String => owned(fingerprint::ja3(hello)),
            Field::Ja3Hash => owned(fingerprint::md5_hex(&fingerprint::ja3(hello))),
            Field::Ja4Hash => owned(fingerprint::ja4(hello)),
            _ => None,
        }
    }
}

/// The server's flight: its hello, one certificate of the chain (none on TLS 1.3), and
/// the leaf's facts.
struct ServerSource<'a> {
    hello: Option<&'a ServerHello>,
    facts: &'a LeafFacts,
    cert: Option<&'a [u8]>,
}

impl Source for ServerSource<'_> {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>> {
        let f = self.facts;
        let owned = |s: String| Some(Cow::Owned(s.into_bytes()));
        match field {
            Field::Cert => self.cert.map(Cow::Borrowed),
            Field::CertSubject => f.subject.as_deref().map(Cow::Borrowed),
            Field::CertIssuer => f.issuer.as_deref().map(Cow::Borrowed),
            Field::CertSerial => f.serial.as_deref().map(Cow::Borrowed),
            Field::CertFingerprint => f.fingerprint.as_deref().map(Cow::Borrowed),
            Field::Ja3sString => owned(fingerprint::ja3s(self.hello?)),
            Field::Ja3sHash => owned(fingerprint::md5_hex(&fingerprint::ja3s(self.hello?))),
            _ => None,
        }
    }
}

/// A request body and one of the files in it.
struct BodyFile<'a> {
    body: Option<&'a [u8]>,
    file: &'a [u8],
}

impl Source for BodyFile<'_> {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>> {
        match field {
            Field::ReqBody => self.body.map(Cow::Borrowed),
            Field::ReqFile => Some(Cow::Borrowed(self.file)),
            _ => None,
        }
    }
}

struct OneField<'a>(Field, Option<&'a [u8]>);

impl Source for OneField<'_> {
    fn get(&self, field: Field) -> Option<Cow<'_, [u8]>> {
        if field == self.0 {
            self.1.map(Cow::Borrowed)
        } else {
            None
        }
    }
}

/// Buffers built once per evaluation, with transforms applied.
struct Buffers<'s, S: Source> {
    source: &'s S,
    cache: Vec<(Field, Vec<Transform>, Option<Vec<u8>>)>,
    plain: Vec<(Field, Option<Cow<'s, [u8]>>)>,
}

impl<'s, S: Source> Buffers<'s, S> {
    fn new(source: &'s S) -> Self {
        Buffers {
            source,
            cache: Vec::new(),
            plain: Vec::new(),
        }
    }

    fn plain(&mut self, field: Field) -> Option<&[u8]> {
        let i = match self.plain.iter().position(|(f, _)| *f == field) {
            Some(i) => i,
            None => {
                self.plain.push((field, self.source.get(field)));
                self.plain.len() - 1
            }
        };
        self.plain[i].1.as_deref()
    }

    fn get(&mut self, field: Field, transforms: &[Transform]) -> Option<&[u8]> {
        if transforms.is_empty() {
            return self.plain(field);
        }
        let i = match self
            .cache
            .iter()
            .position(|(f, t, _)| *f == field && t == transforms)
        {
            Some(i) => i,
            None => {
                let v = self.plain(field).map(|b| apply_transforms(b, transforms));
                self.cache.push((field, transforms.to_vec(), v));
                self.cache.len() - 1
            }
        };
        self.cache[i].2.as_deref()
    }
}

pub(crate) fn apply_transforms(buf: &[u8], transforms: &[Transform]) -> Vec<u8> {
    let mut cur = buf.to_vec();
    for t in transforms {
        cur = match t {
            Transform::DotPrefix => {
                let mut v = Vec::with_capacity(cur.len() + 1);
                v.push(b'.');
                v.extend_from_slice(&cur);
                v
            }
            Transform::ToLowercase => cur.to_ascii_lowercase(),
            Transform::ToUppercase => cur.to_ascii_uppercase(),
            Transform::StripWhitespace => cur
                .into_iter()
                .filter(|b| !b.is_ascii_whitespace())
                .collect(),
            Transform::CompressWhitespace => {
                let mut v = Vec::with_capacity(cur.len());
                for b in cur {
                    if b.is_ascii_whitespace() {
                        if v.last().is_some_and(|l: &u8| l.is_ascii_whitespace()) {
                            continue;
                        }
                        v.push(b' ');
                    } else {
                        v.push(b);
                    }
                }
                v
            }
            Transform::UrlDecode => {
                let mut v = Vec::with_capacity(cur.len());
                let mut i = 0;
                while i < cur.len() {
                    let hexv = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                    match (cur[i], hexv(cur.get(i + 1)), hexv(cur.get(i + 2))) {
                        (b'%', Some(h), Some(l)) => {
                            v.push((h << 4 | l) as u8);
                            i += 3;
                            continue;
                        }
                        (b'+', _, _) => v.push(b' '),
                        (b, _, _) => v.push(b),
                    }
                    i += 1;
                }
                v
            }
            Transform::HeaderLowercase => {
                let mut v = Vec::with_capacity(cur.len());
                let mut in_name = true;
                for b in cur {
                    if in_name {
                        if b == b':' {
                            in_name = false;
                        }
                        v.push(b.to_ascii_lowercase());
                    } else {
                        if b == b'\n' {
                            in_name = true;
                        }
                        v.push(b);
                    }
                }
                v
            }
            Transform::StripPseudoHeaders => {
                let mut v = Vec::with_capacity(cur.len());
                for line in cur.split_inclusive(|&b| b == b'\n') {
                    if line.first() != Some(&b':') {
                        v.extend_from_slice(line);
                    }
                }
                v
            }
            // The raw digests, as Suricata passes them on.
            Transform::ToMd5 => md5::Md5::digest(&cur).to_vec(),
            Transform::ToSha1 => sha1::Sha1::digest(&cur).to_vec(),
            Transform::ToSha256 => sha2::Sha256::digest(&cur).to_vec(),
        };
    }
    cur
}

/// Whether every buffer of `p` is present and matches.
fn phase_matches<S: Source>(p: &CPhase, bufs: &mut Buffers<'_, S>) -> bool {
    p.buffers
        .iter()
        .all(|b| match bufs.get(b.field, &b.transforms) {
            Some(data) => payload::matches(&b.items, data),
            None => false,
        })
}

fn insert_sorted(v: &mut Vec<RuleId>, id: RuleId) {
    if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

fn contains(v: &[RuleId], id: RuleId) -> bool {
    v.binary_search(&id).is_ok()
}

/// Candidates ∪ always, sorted and deduplicated, into `out`.
/// The rules of `index` to evaluate on `bufs`: those whose prefilter pattern occurs in
/// their buffer, and those always checked, in evaluation order.
fn candidates<S: Source>(
    index: &crate::compile::PhaseIndex,
    bufs: &mut Buffers<'_, S>,
) -> Vec<RuleId> {
    let mut hits = Vec::new();
    for pf in &index.prefilters {
        if let Some(b) = bufs.get(pf.field, &pf.transforms) {
            pf.scan(b, &mut hits);
        }
    }
    let mut list = Vec::new();
    merge(&hits, &index.always, &mut list);
    list
}

fn merge(candidates: &[RuleId], always: &[RuleId], out: &mut Vec<RuleId>) {
    out.clear();
    out.extend_from_slice(candidates);
    out.extend_from_slice(always);
    out.sort_unstable();
    out.dedup();
}

/// Scan the bytes added to `buf` since `old_len` (with enough of the old bytes for patterns
/// that straddle) and add the rules found to `candidates`; says whether any is new.
fn scan_new(
    prefilters: &[crate::compile::Prefilter],
    buf: &[u8],
    old_len: usize,
    candidates: &mut Vec<RuleId>,
) -> bool {
    let mut hits = Vec::new();
    for pf in prefilters {
        // Transformed buffers are scanned whole when checked.
        if pf.transforms.is_empty() {
            let from = old_len.saturating_sub(pf.max_len.saturating_sub(1));
            pf.scan(&buf[from..], &mut hits);
        }
    }
    let mut fresh = false;
    for h in hits {
        if let Err(pos) = candidates.binary_search(&h) {
            candidates.insert(pos, h);
            fresh = true;
        }
    }
    fresh
}

/// Rules already found are checked again once the buffer grew by a quarter (at least
/// [`MIN_RECHECK`] bytes): tiny chunks cannot make checking quadratic, and every rule is
/// checked when the buffer is complete anyway.
fn recheck_due(len: usize, checked_len: usize) -> bool {
    checked_len == 0 || len - checked_len.min(len) >= MIN_RECHECK.max(checked_len / 4)
}

/// Client commands that name a flow's protocol (Suricata's detection patterns).
const COMMANDS: [(&[u8], AppProto); 17] = [
    (b"GET ", AppProto::Http1),
    (b"POST ", AppProto::Http1),
    (b"HEAD ", AppProto::Http1),
    (b"PUT ", AppProto::Http1),
    (b"DELETE ", AppProto::Http1),
    (b"OPTIONS ", AppProto::Http1),
    (b"PATCH ", AppProto::Http1),
    (b"CONNECT ", AppProto::Http1),
    (b"TRACE ", AppProto::Http1),
    (b"EHLO", AppProto::Smtp),
    (b"HELO", AppProto::Smtp),
    (b"QUIT", AppProto::Smtp),
    (b"USER ", AppProto::Ftp),
    (b"PASS ", AppProto::Ftp),
    (b"PORT ", AppProto::Ftp),
    (b"AUTH SSL", AppProto::Ftp),
    (b"AUTH TLS", AppProto::Ftp),
];

/// The longest of them.
const COMMAND_PREFIX: usize = 8;

/// An HTTP/1 head's version from its minor number.
fn http1_version(minor: u8) -> HttpVersion {
    if minor == 0 {
        HttpVersion::Http10
    } else {
        HttpVersion::Http11
    }
}

/// The version a ClientHello asks for, as Suricata reads it: the first version of its
/// `supported_versions` Suricata knows (GREASE and noise skipped), else `legacy_version`.
fn client_version(hello: &ClientHello) -> u16 {
    hello
        .supported_versions
        .iter()
        .copied()
        .find(|v| !is_grease(*v) && tls_version_known(*v))
        .unwrap_or(hello.legacy_version)
}

/// SSL 3.0 to TLS 1.3 and the drafts of TLS 1.3 (0x7fNN, and Facebook's 0xfbNN).
fn tls_version_known(v: u16) -> bool {
    (0x0300..=0x0304).contains(&v) || v >> 8 == 0x7f || v >> 8 == 0xfb
}

/// Whether a hello's version is the one `tls.version` names (1.3 covers its drafts).
fn same_tls_version(want: u16, seen: u16) -> bool {
    want == seen || (want == 0x0304 && (seen >> 8 == 0x7f || seen >> 8 == 0xfb))
}

/// When during a buffer's life rules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// More data may come: only rules that more data cannot undo.
    Partial,
    /// The buffer is complete.
    Complete,
}

impl FlowInspector {
    /// A new TCP connection.
    pub fn new(engine: Arc<Engine>, flow: FlowMeta) -> Self {
        FlowInspector {
            engine,
            flow,
            transport: Transport::Tcp,
            app: AppProto::Unknown,
            seen: [false; 2],
            detected: false,
            passed: false,
            vars: None,
            dirs: [DirState::default(), DirState::default()],
            speaking: None,
            tx: None,
            next_tx: 0,
            tls_seen: false,
            tls_version: [0; 2],
            sent: [0; 2],
            tls: None,
            detecting: None,
            detect_done: false,
            only: None,
            dns: None,
            next_dns: 0,
            mail: None,
            upgrade: None,
            http1: None,
            http_given: false,
        }
    }

    /// A new UDP session: feed it with [`FlowInspector::datagram`].
    pub fn new_udp(engine: Arc<Engine>, flow: FlowMeta) -> Self {
        FlowInspector {
            transport: Transport::Udp,
            ..FlowInspector::new(engine, flow)
        }
    }

    /// This inspector with only the rules of `mask` (a profile's selection of the shared
    /// engine): the others are never evaluated, as if the engine did not hold them.
    pub fn only(mut self, mask: &RuleMask) -> Self {
        self.only = Some(mask.bits.clone());
        self
    }

    /// The application protocol, once the node has detected it (call before feeding its
    /// bytes when possible). On UDP only [`AppProto::Dns`] means something (DNS on a port
    /// other than 53).
    pub fn set_app_proto(&mut self, p: AppProto) {
        self.app = p;
    }

    /// The flow's endpoints.
    pub fn flow(&self) -> FlowMeta {
        self.flow
    }

    /// The flow's transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The application protocol (as set, or detected on UDP).
    pub fn app_proto(&self) -> AppProto {
        self.app
    }

    /// Whether a `pass` rule matched (nothing more is inspected).
    pub fn is_passed(&self) -> bool {
        self.passed
    }

    /// Raw bytes of one direction of a TCP connection, in order (nothing on UDP).
    pub fn stream(&mut self, dir: Dir, bytes: &[u8], now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        if self.passed || bytes.is_empty() || self.transport != Transport::Tcp {
            return v;
        }
        // The server's go-ahead to TLS splits its bytes: the reply is SMTP or FTP, what
        // follows is TLS. The client's commands are watched once its protocol is known.
        let upgrade = match dir {
            Dir::ToClient => self.watch_upgrade(dir, bytes),
            Dir::ToServer => None,
        };
        // A command cut across reads is kept by the detection until whole: once it names
        // SMTP or FTP, the watch reads it too.
        let kept = match (dir, self.app, self.detecting.as_deref()) {
            (Dir::ToServer, AppProto::Unknown, Some((_, prefix)))
                if prefix.first() != Some(&tls::HANDSHAKE) =>
            {
                Some(prefix.clone())
            }
            _ => None,
        };
        match upgrade {
            Some(at) => {
                self.stream_part(dir, &bytes[..at], now, &mut v);
                self.start_tls();
                self.stream_part(dir, &bytes[at..], now, &mut v);
            }
            None => self.stream_part(dir, bytes, now, &mut v),
        }
        if dir == Dir::ToServer {
            if let Some(kept) = kept {
                self.watch_upgrade(dir, &kept);
            }
            self.watch_upgrade(dir, bytes);
        }
        v
    }

    /// Feeds SMTP and FTP flows' bytes to their [`UpgradeWatch`].
    fn watch_upgrade(&mut self, dir: Dir, bytes: &[u8]) -> Option<usize> {
        if !matches!(self.app, AppProto::Smtp | AppProto::Ftp) || self.passed {
            return None;
        }
        self.upgrade
            .get_or_insert_with(Box::default)
            .feed(self.app, dir, bytes)
    }

    /// The server agreed to `STARTTLS` or `AUTH TLS`: from here on the flow is TLS both
    /// ways, as after Suricata's protocol upgrade. The client's next bytes are read for its
    /// hello and the server's for its handshake (TLS rules apply), and the raw stream is
    /// inspected until encrypted application data starts.
    fn start_tls(&mut self) {
        self.upgrade = None;
        self.mail = None;
        self.app = AppProto::Tls;
        self.detect_done = false;
        self.detecting = None;
        let walk = self.engine.stream.iter().any(|s| !s.is_empty());
        let state = self.tls.get_or_insert_with(Box::default);
        if walk {
            state.walk = Some(Default::default());
        }
    }

    /// [`FlowInspector::stream`] for bytes of one protocol.
    fn stream_part(&mut self, dir: Dir, bytes: &[u8], now: Timestamp, v: &mut Verdict) {
        if self.passed || bytes.is_empty() {
            return;
        }
        if self.speaking == Some(dir.reverse()) {
            self.end_message(dir.reverse(), now, v);
        }
        let d = dir.index();
        let flow_start = self.sent == [0, 0];
        self.sent[d] = self.sent[d].saturating_add(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.speaking = Some(dir);
        if dir == Dir::ToServer && !self.detect_done {
            // The first bytes a detection kept belong to HTTP/1's first request if that is
            // what they turn out to start.
            let kept = match self.app {
                AppProto::Unknown => self.detecting.as_ref().map(|d| d.1.clone()),
                _ => None,
            };
            self.detect(bytes, now, v);
            if let Some(kept) = kept.filter(|_| self.app == AppProto::Http1) {
                self.http1_stream(dir, Some(&kept), now, v);
            }
        }
        if self.app == AppProto::Dns && dir == Dir::ToServer {
            self.dns_stream(bytes, now, v);
        }
        if self.app == AppProto::Smtp && dir == Dir::ToServer && self.engine.reads_mail {
            self.mail_stream(bytes, now, v);
        }
        if self.app == AppProto::Tls && dir == Dir::ToClient {
            self.tls_server_stream(bytes, now, v);
        }
        if self.app == AppProto::Http1 && !self.http_given && self.engine.reads_http {
            self.http1_stream(dir, Some(bytes), now, v);
        }
        if self.passed {
            return;
        }
        let bytes = match self.encryption_starts(dir, bytes, flow_start) {
            Some(at) => &bytes[..at],
            None => bytes,
        };
        if !self.engine.stream[dir.index()].is_empty() && !bytes.is_empty() {
            self.stream_data(dir, bytes, now, v);
        }
    }

    /// Where encrypted application data starts in `bytes`, on a flow that starts like TLS
    /// (the client's first byte is a handshake record's): from there on the raw stream is
    /// not inspected, as Suricata 7 does by default (`encryption-handling: default`: TLS
    /// keywords still apply, plain `content` no longer does). Application data counts once
    /// the server answered with a handshake record; bytes that stop looking like TLS
    /// records keep the whole stream inspected.
    fn encryption_starts(&mut self, dir: Dir, bytes: &[u8], flow_start: bool) -> Option<usize> {
        if flow_start
            && dir == Dir::ToServer
            && bytes.first() == Some(&tls::HANDSHAKE)
            && matches!(self.app, AppProto::Unknown | AppProto::Tls)
            && self.engine.stream.iter().any(|s| !s.is_empty())
        {
            self.tls.get_or_insert_with(Box::default).walk = Some(Default::default());
        }
        let state = self.tls.as_deref_mut()?;
        if state.encrypted {
            return Some(0);
        }
        let walk = state.walk.as_mut()?;
        let mut starts = None;
        let server_handshake = &mut state.server_handshake;
        walk[dir.index()].walk(bytes, |at, kind| {
            if dir == Dir::ToClient && kind == tls::HANDSHAKE {
                *server_handshake = true;
            }
            if kind == tls::APPLICATION_DATA && *server_handshake {
                starts = Some(at);
                return false;
            }
            true
        });
        if starts.is_some() {
            state.encrypted = true;
            state.walk = None;
        } else if walk.iter().any(tls::RecordWalk::is_lost) {
            state.walk = None;
        }
        starts
    }

    /// The end of one direction (FIN): rules that need the whole message are decided, and
    /// the direction's tail is released (no more bytes come to continue it).
    pub fn stream_end(&mut self, dir: Dir, now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        if !self.passed {
            self.end_message(dir, now, &mut v);
            if self.speaking == Some(dir) {
                self.speaking = None;
            }
            if self.http1.is_some() {
                self.http1_stream(dir, None, now, &mut v);
            }
        }
        self.dirs[dir.index()].window = Vec::new();
        v
    }

    /// The flow is over: both directions end and the open HTTP transaction is completed.
    pub fn close(&mut self, now: Timestamp) -> Verdict {
        let mut v = self.stream_end(Dir::ToServer, now);
        let other = self.stream_end(Dir::ToClient, now);
        v.alerts.extend(other.alerts);
        v.anomalies.extend(other.anomalies);
        if !self.passed {
            if let Some(reader) = self.http1.take() {
                self.finish_waiting(reader.waiting, now, &mut v);
            }
            self.finish_tx(now, &mut v);
        }
        v
    }

    /// A request head (HTTP/1 or HTTP/2) the caller parsed; starts a new transaction. From
    /// then on the caller hands every HTTP message over, and the stream is not read for them.
    pub fn http_request(&mut self, req: &HttpRequest<'_>, now: Timestamp) -> Verdict {
        self.http_given = true;
        self.http1 = None;
        let mut v = Verdict::default();
        self.request_head(req, now, &mut v);
        v
    }

    fn request_head(&mut self, req: &HttpRequest<'_>, now: Timestamp, v: &mut Verdict) {
        if self.passed {
            return;
        }
        self.finish_tx(now, v);
        let id = u64::from(self.next_tx);
        self.next_tx = self.next_tx.saturating_add(1);
        let summary = HttpSummary {
            hostname: http::request_host(req)
                .map(|h| String::from_utf8_lossy(&http::normalize_host(&h)).into_owned()),
            url: String::from_utf8_lossy(req.uri_raw).into_owned(),
            user_agent: http::header(req.headers, "user-agent")
                .map(|u| String::from_utf8_lossy(&u).into_owned()),
            method: req.method.to_string(),
            protocol: req.version.as_str().to_string(),
            status: None,
        };
        let (coding, anomaly) = body_coding(req.headers);
        self.tx = Some(Box::new(Tx {
            id,
            summary,
            req_body: Body {
                coding,
                ..Body::default()
            },
            files: RequestFiles::of(req),
            ..Tx::default()
        }));
        if let Some(event) = anomaly {
            self.anomaly(event, Dir::ToServer, now, v);
        }
        let src = RequestSource(req);
        self.tx_phase(Phase::Request, &src, Dir::ToServer, now, v);
    }

    /// A chunk of the current request's body; `end` on the last one.
    pub fn http_request_body(&mut self, chunk: &[u8], end: bool, now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        if !self.passed {
            self.body(Phase::RequestBody, chunk, end, now, &mut v);
        }
        v
    }

    /// The response head of the current transaction, as the caller parsed it.
    pub fn http_response(&mut self, resp: &HttpResponse<'_>, now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        self.response_head(resp, now, &mut v);
        v
    }

    fn response_head(&mut self, resp: &HttpResponse<'_>, now: Timestamp, v: &mut Verdict) {
        if self.passed || self.tx.is_none() {
            return;
        }
        self.end_body(Phase::RequestBody, now, v);
        let (coding, anomaly) = body_coding(resp.headers);
        if let Some(tx) = &mut self.tx {
            tx.response = true;
            tx.summary.status = Some(resp.status);
            tx.resp_body.coding = coding;
        }
        if let Some(event) = anomaly {
            self.anomaly(event, Dir::ToClient, now, v);
        }
        let src = ResponseSource(resp);
        self.tx_phase(Phase::Response, &src, Dir::ToClient, now, v);
    }

    /// HTTP/1 from the raw stream of `dir`: `bytes`, or its end (`None`). Each head, as
    /// received, and each body go where the caller's would.
    fn http1_stream(&mut self, dir: Dir, bytes: Option<&[u8]>, now: Timestamp, v: &mut Verdict) {
        let mut reader = self.http1.take().unwrap_or_else(|| {
            Box::new(Http1Reader {
                framers: [
                    Framer::new(Role::Request, MAX_HTTP_HEAD),
                    Framer::new(Role::Response, MAX_HTTP_HEAD),
                ],
                waiting: VecDeque::new(),
            })
        });
        let Http1Reader { framers, waiting } = &mut *reader;
        // Whether the server is between responses (nothing of one is in progress).
        let answered = framers[Dir::ToClient.index()].between_messages();
        let mut methods = Vec::new();
        let mut on = |e: h1::Event<'_>| match e {
            h1::Event::Head(head) => match dir {
                Dir::ToServer => {
                    if let Some(h) = h1::parse_request(&head) {
                        methods.push(Method::of(h.method.as_bytes()));
                        let req = HttpRequest {
                            method: h.method,
                            uri_raw: h.target.as_bytes(),
                            host: None,
                            headers: &h.headers,
                            version: http1_version(h.minor),
                            raw_head: Some(&head),
                        };
                        // A request sent before the open transaction's response (or its
                        // end): that transaction waits for it.
                        let unanswered = self
                            .tx
                            .as_ref()
                            .is_some_and(|t| !t.mail && (!t.answered() || !answered));
                        if unanswered && waiting.len() < MAX_PIPELINED {
                            self.end_body(Phase::RequestBody, now, v);
                            waiting.extend(self.tx.take());
                        }
                        self.request_head(&req, now, v);
                    }
                }
                Dir::ToClient => {
                    if let Some(h) = h1::parse_response(&head) {
                        let resp = HttpResponse {
                            status: h.status,
                            reason: h.reason,
                            headers: &h.headers,
                            version: http1_version(h.minor),
                            raw_head: Some(&head),
                        };
                        // The oldest transaction is answered; one already answered is over.
                        if waiting.front().is_some_and(|t| t.answered())
                            && let Some(tx) = waiting.pop_front()
                        {
                            self.with_tx(tx, |s| s.finish_tx(now, v));
                        }
                        self.on_answered(waiting, |s| s.response_head(&resp, now, v));
                    }
                }
            },
            h1::Event::Body { data, end } if !self.passed => match dir {
                Dir::ToServer => self.body(Phase::RequestBody, data, end, now, v),
                Dir::ToClient => self.on_answered(waiting, |s| {
                    s.body(Phase::ResponseBody, data, end, now, v);
                }),
            },
            h1::Event::Body { .. } | h1::Event::Stopped(_) => {}
        };
        let framer = &mut framers[dir.index()];
        match bytes {
            Some(b) => framer.push(b, &mut on),
            None => framer.end(&mut on),
        }
        for m in methods {
            framers[Dir::ToClient.index()].expect_response_to(m);
        }
        if self.passed {
            return;
        }
        if framers.iter().all(Framer::stopped) {
            self.finish_waiting(reader.waiting, now, v);
        } else {
            self.http1 = Some(reader);
        }
    }

    /// Runs `f` with `tx` as the open transaction, then makes the open one open again;
    /// returns `tx` unless `f` finished it.
    fn with_tx(&mut self, tx: Box<Tx>, f: impl FnOnce(&mut Self)) -> Option<Box<Tx>> {
        let open = self.tx.replace(tx);
        f(self);
        std::mem::replace(&mut self.tx, open)
    }

    /// Runs `f` with the transaction being answered open: the oldest waiting one, else the
    /// open one.
    fn on_answered(&mut self, waiting: &mut VecDeque<Box<Tx>>, f: impl FnOnce(&mut Self)) {
        match waiting.pop_front() {
            Some(tx) => {
                if let Some(tx) = self.with_tx(tx, f) {
                    waiting.push_front(tx);
                }
            }
            None => f(self),
        }
    }

    /// Completes the transactions still waiting for their responses (the flow or its HTTP
    /// is over), oldest first.
    fn finish_waiting(&mut self, waiting: VecDeque<Box<Tx>>, now: Timestamp, v: &mut Verdict) {
        for tx in waiting {
            self.with_tx(tx, |s| s.finish_tx(now, v));
        }
    }

    /// A chunk of the current response's body; `end` on the last one.
    pub fn http_response_body(&mut self, chunk: &[u8], end: bool, now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        if !self.passed {
            self.body(Phase::ResponseBody, chunk, end, now, &mut v);
        }
        v
    }

    /// The client's TLS ClientHello (once per flow), read by the caller; `None` when the
    /// flow is TLS but its hello could not be read. The inspector reads the hello from the
    /// client's first bytes itself when it is not given one before them.
    pub fn tls_client_hello(&mut self, hello: Option<&ClientHello>, now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        if self.passed || self.tls_seen {
            return v;
        }
        self.tls_seen = true;
        self.app = AppProto::Tls;
        self.tls_version[Dir::ToServer.index()] = hello.map_or(0, client_version);
        let src = ClientSource(hello);
        let sni = hello.and_then(|h| {
            h.sni_raw
                .as_deref()
                .map(|raw| String::from_utf8_lossy(raw).into_owned())
                .or_else(|| h.sni.clone())
        });
        self.single_phase(Phase::Tls, &src, None, now, &mut v, |a| {
            a.tls_sni = sni.clone()
        });
        v
    }

    /// The client's first bytes of a TCP flow: a TLS ClientHello makes a flow the node named
    /// no protocol for a TLS flow, as Suricata's protocol detection does, so that TLS rules
    /// (the hello's fields, the server's certificates) apply whether or not the node read the
    /// handshake itself; on a TLS flow the hello is read for the rules. Only when the engine
    /// has such rules; the first bytes are kept only while they may be a ClientHello (at
    /// most the sniffer's window).
    fn detect(&mut self, bytes: &[u8], now: Timestamp, v: &mut Verdict) {
        let tcp = self.transport == Transport::Tcp;
        let tls = matches!(self.app, AppProto::Unknown | AppProto::Tls)
            && !self.tls_seen
            && tcp
            && self.engine.reads_tls;
        let commands = self.app == AppProto::Unknown
            && tcp
            && (self.engine.reads_commands
                || self.engine.reads_http
                || self.engine.follows_tls_upgrades);
        // A TLS record starts with its handshake type (22): anything else is not TLS, decided
        // on the first byte without keeping any.
        let first = self
            .detecting
            .as_ref()
            .and_then(|d| d.1.first().copied())
            .or(bytes.first().copied());
        if first.is_some_and(|b| b != 22) {
            if commands {
                self.detect_command(bytes);
            } else {
                self.detect_done = true;
                self.detecting = None;
            }
            return;
        }
        if !tls {
            self.detect_done = true;
            self.detecting = None;
            return;
        }
        let (sniffer, prefix) = &mut **self.detecting.get_or_insert_with(Box::default);
        let room = eastwall_wire::sniff::MAX_SNIFF.saturating_sub(prefix.len());
        prefix.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let hello = match sniffer.sniff(prefix) {
            Sniff::NeedMore if room > bytes.len() => return,
            Sniff::NeedMore => None,
            Sniff::Done(Sniffed::Tls(hello)) => Some(Some(*hello)),
            // A name the node would not take is still what the client sent.
            Sniff::Done(Sniffed::TlsUnreadable(ClientHelloError::InvalidServerName(hello))) => {
                Some(Some(*hello))
            }
            Sniff::Done(Sniffed::TlsUnreadable(_)) => Some(None),
            Sniff::Done(_) => None,
        };
        self.detect_done = true;
        self.detecting = None;
        if let Some(hello) = hello {
            let seen = self.tls_client_hello(hello.as_ref(), now);
            v.alerts.extend(seen.alerts);
        }
    }

    /// SMTP and FTP by the client's first command, as Suricata's protocol detection
    /// recognises them (any port, case-insensitive): at most [`COMMAND_PREFIX`] bytes are
    /// kept, and only while they may still start one.
    fn detect_command(&mut self, bytes: &[u8]) {
        // Decided on a copy of the first bytes: only an undecided prefix is kept (a read that
        // ends inside a command), so most flows allocate nothing here.
        let mut head = [0u8; COMMAND_PREFIX];
        let kept = self.detecting.as_ref().map_or(&[][..], |d| &d.1[..]);
        let n = kept.len().min(COMMAND_PREFIX);
        head[..n].copy_from_slice(&kept[..n]);
        let more = bytes.len().min(COMMAND_PREFIX - n);
        head[n..n + more].copy_from_slice(&bytes[..more]);
        let head = &head[..n + more];
        let engine = &self.engine;
        let read = |app: AppProto| match app {
            AppProto::Http1 => engine.reads_http,
            _ => engine.reads_commands || engine.follows_tls_upgrades,
        };
        let mut wanted = COMMANDS.iter().filter(|(_, app)| read(*app));
        let found = wanted.clone().find(|(cmd, _)| {
            head.len() >= cmd.len() && head[..cmd.len()].eq_ignore_ascii_case(cmd)
        });
        let possible = wanted.any(|(cmd, _)| {
            let n = head.len().min(cmd.len());
            head[..n].eq_ignore_ascii_case(&cmd[..n])
        });
        if let Some((_, app)) = found {
            self.app = *app;
        } else if possible && head.len() < COMMAND_PREFIX {
            let (_, prefix) = &mut **self.detecting.get_or_insert_with(Box::default);
            prefix.clear();
            prefix.extend_from_slice(head);
            return;
        }
        self.detect_done = true;
        self.detecting = None;
    }

    /// The server's handshake bytes: its version as soon as its hello is read; once the
    /// clear part of the handshake is over, its flight is matched by the `ja3s.*`,
    /// `tls.cert_*` and `tls.certs` rules (each certificate of the chain in turn for
    /// `tls.certs`; the leaf's facts for the others), once per flow.
    fn tls_server_stream(&mut self, bytes: &[u8], now: Timestamp, v: &mut Verdict) {
        if !self.engine.reads_tls {
            return;
        }
        let reader = &mut self.tls.get_or_insert_with(Box::default).server;
        let seen = reader.push(bytes);
        if let Some(hello) = reader.hello() {
            self.tls_version[Dir::ToClient.index()] = hello.version();
        }
        let tls::Seen::Flight(flight) = seen else {
            return;
        };
        let engine = Arc::clone(&self.engine);
        let index = engine.phase(Phase::TlsServer);
        if index.is_empty() {
            return;
        }
        let facts = flight
            .certs
            .first()
            .map(|leaf| LeafFacts::of(leaf))
            .unwrap_or_default();
        let certs: Vec<Option<&[u8]>> = if flight.certs.is_empty() {
            vec![None]
        } else {
            flight.certs.iter().map(|c| Some(c.as_slice())).collect()
        };
        let mut fired: Vec<RuleId> = Vec::new();
        for cert in certs {
            let src = ServerSource {
                hello: flight.hello.as_ref(),
                facts: &facts,
                cert,
            };
            let mut bufs = Buffers::new(&src);
            let list = candidates(index, &mut bufs);
            for &id in &list {
                let r = &engine.rules[id as usize];
                let dir = r.dir.unwrap_or(Dir::ToClient);
                if contains(&fired, id)
                    || !self.applies(r, dir, now)
                    || !self.buffers_match(r, Phase::TlsServer, &mut bufs)
                {
                    continue;
                }
                insert_sorted(&mut fired, id);
                self.matched(r, dir, None, true, now, v, |_| {});
                if self.passed {
                    return;
                }
            }
        }
    }

    /// The payload of one UDP datagram (empty ones too: rules without content see them),
    /// inspected on its own. In prevent mode a verdict that [`Verdict::blocks`] means the
    /// datagram must not be forwarded. Nothing on TCP.
    pub fn datagram(&mut self, dir: Dir, payload: &[u8], now: Timestamp) -> Verdict {
        let mut v = Verdict::default();
        if self.passed || self.transport != Transport::Udp {
            return v;
        }
        // As in Suricata, the datagram that makes the session two-way is established itself.
        self.seen[dir.index()] = true;
        if dir == Dir::ToServer {
            let name = match self.app {
                AppProto::Dns => dns::query_name(payload),
                AppProto::Unknown if !self.detected => {
                    self.detected = true;
                    let port53 = self.flow.src.port() == 53 || self.flow.dst.port() == 53;
                    let name = dns::query_name(payload).filter(|_| port53);
                    if name.is_some() {
                        self.app = AppProto::Dns;
                    }
                    name
                }
                _ => None,
            };
            if let Some(name) = name {
                self.dns_query(name, now, &mut v);
                if self.passed {
                    return v;
                }
            }
        }
        let engine = Arc::clone(&self.engine);
        let index = &engine.datagram[dir.index()];
        if index.is_empty() {
            return v;
        }
        let mut hits = Vec::new();
        for pf in &index.prefilters {
            pf.scan(payload, &mut hits);
        }
        let mut list = Vec::new();
        merge(&hits, &index.always, &mut list);
        for &id in &list {
            let r = &engine.rules[id as usize];
            if r.dsize
                .is_some_and(|cmp| !cmp.matches(payload.len() as u64))
                || !self.applies(r, dir, now)
                || !stream_matches(r, payload, 0)
            {
                continue;
            }
            // Each datagram is a scope of its own: Suricata alerts per packet.
            self.matched(r, dir, None, true, now, &mut v, |_| {});
            if self.passed {
                break;
            }
        }
        v
    }

    // ---- raw stream ----

    fn stream_data(&mut self, dir: Dir, bytes: &[u8], now: Timestamp, v: &mut Verdict) {
        let limits = self.engine.limits;
        let d = dir.index();
        let left = limits.stream_depth.saturating_sub(self.dirs[d].total);
        if left == 0 {
            return;
        }
        let mut rest = &bytes[..bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX))];
        let window_cap = limits.stream_window.max(1);
        // A new message starts with the direction's tail in its window; the patterns there
        // are looked for again with the new bytes (they may complete a rule now).
        let mut scan_from = None;
        let ds = &mut self.dirs[d];
        if !ds.in_message {
            ds.in_message = true;
            ds.old = ds.window.len();
            ds.continued = false;
            scan_from = Some(0);
        }
        while !rest.is_empty() {
            let ds = &mut self.dirs[d];
            let take = (window_cap - ds.window.len().min(window_cap)).min(rest.len());
            let old_len = scan_from.take().unwrap_or(ds.window.len());
            ds.window.extend_from_slice(&rest[..take]);
            ds.msg_len = ds
                .msg_len
                .saturating_add(u32::try_from(take).unwrap_or(u32::MAX));
            ds.total += take as u64;
            rest = &rest[take..];
            let fresh = scan_new(
                &self.engine.stream[d].prefilters,
                &ds.window,
                old_len,
                &mut ds.candidates,
            );
            if ds.window.len() >= window_cap {
                self.check_window(dir, Moment::Complete, now, v);
                self.next_window(dir);
            } else if fresh || recheck_due(ds.window.len(), ds.checked_len) {
                self.check_window(dir, Moment::Partial, now, v);
            }
            if self.passed {
                return;
            }
        }
        if self.dirs[d].total >= limits.stream_depth {
            // Depth reached: decide what is left and stop inspecting this direction.
            self.end_message(dir, now, v);
            self.dirs[d].window = Vec::new();
        }
    }

    /// Continue a long message in a new window that repeats the end of the last one.
    fn next_window(&mut self, dir: Dir) {
        let overlap = self.engine.limits.stream_overlap;
        let ds = &mut self.dirs[dir.index()];
        let keep = overlap.min(ds.window.len() / 2);
        let drop = ds.window.len() - keep;
        ds.window.drain(..drop);
        ds.old = keep;
        ds.continued = true;
        ds.matched.clear();
        ds.candidates.clear();
        let index = &self.engine.stream[dir.index()];
        for pf in &index.prefilters {
            pf.scan(&ds.window, &mut ds.candidates);
        }
        ds.candidates.sort_unstable();
        ds.candidates.dedup();
        ds.checked_len = ds.window.len();
    }

    fn end_message(&mut self, dir: Dir, now: Timestamp, v: &mut Verdict) {
        let d = dir.index();
        if !self.dirs[d].in_message {
            return;
        }
        // A window of old bytes only (a long message that ended where a window did) was
        // decided when the previous window filled.
        if self.dirs[d].window.len() > self.dirs[d].old {
            self.check_window(dir, Moment::Complete, now, v);
        }
        let tail = self.engine.stream_tail[d];
        let ds = &mut self.dirs[d];
        // Keep only the tail, in an allocation of its size; release the rest.
        let from = ds.window.len() - tail.min(ds.window.len());
        ds.window = ds.window[from..].to_vec();
        ds.candidates = Vec::new();
        ds.matched = Vec::new();
        ds.old = 0;
        ds.continued = false;
        ds.msg_len = 0;
        ds.checked_len = 0;
        ds.in_message = false;
    }

    fn check_window(&mut self, dir: Dir, moment: Moment, now: Timestamp, v: &mut Verdict) {
        let d = dir.index();
        let engine = Arc::clone(&self.engine);
        let mut list = Vec::new();
        merge(
            &self.dirs[d].candidates,
            &engine.stream[d].always,
            &mut list,
        );
        let window = std::mem::take(&mut self.dirs[d].window);
        self.dirs[d].checked_len = window.len();
        let (old, continued) = (self.dirs[d].old, self.dirs[d].continued);
        let msg_len = u64::from(self.dirs[d].msg_len);
        for &id in &list {
            let r = &engine.rules[id as usize];
            let ds = &self.dirs[d];
            if contains(&ds.matched, id)
                || (moment == Moment::Partial && r.needs_end)
                || (r.anchored && continued)
                || (contains(&ds.fired, id) && r.writes.is_empty())
            {
                continue;
            }
            if let Some(cmp) = r.dsize
                && !cmp.matches(msg_len)
            {
                continue;
            }
            if !self.applies(r, dir, now) {
                continue;
            }
            // The rule sees the old bytes it can need (none when tied to the message), and
            // a match must reach the new ones.
            let from = old - old.min(r.lookback);
            if !stream_matches(r, &window[from..], old - from) {
                continue;
            }
            insert_sorted(&mut self.dirs[d].matched, id);
            let first = !contains(&self.dirs[d].fired, id);
            if first {
                insert_sorted(&mut self.dirs[d].fired, id);
            }
            self.matched(r, dir, None, first, now, v, |_| {});
            if self.passed {
                break;
            }
        }
        self.dirs[d].window = window;
    }

    // ---- transactions ----

    /// Evaluate a head phase (request or response) of the current transaction.
    fn tx_phase<S: Source>(
        &mut self,
        phase: Phase,
        src: &S,
        data_dir: Dir,
        now: Timestamp,
        v: &mut Verdict,
    ) {
        let engine = Arc::clone(&self.engine);
        let index = engine.phase(phase);
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        let mut bufs = Buffers::new(src);
        for c in candidates(engine.conditions_at(phase), &mut bufs) {
            if phase_matches(&engine.conditions[c as usize], &mut bufs) {
                insert_sorted(&mut tx.met, c);
            }
        }
        let list = candidates(index, &mut bufs);
        let mut pending = Vec::new();
        for &id in &list {
            let r = &engine.rules[id as usize];
            let waiting = contains(&tx.pending, id);
            if !(waiting || r.enters(phase, &tx.met)) || contains(&tx.fired, id) {
                continue;
            }
            let dir = r.dir.unwrap_or(data_dir);
            if !self.applies(r, dir, now) || !self.buffers_match(r, phase, &mut bufs) {
                continue;
            }
            if r.last_phase() == phase {
                insert_sorted(&mut tx.fired, id);
                let tx_id = tx.id;
                let summary = &tx.summary;
                self.matched(r, dir, Some(tx_id), true, now, v, |a| {
                    a.http = Some(summary.clone())
                });
                if self.passed {
                    break;
                }
            } else {
                pending.push(id);
            }
        }
        // Rules waiting for a later phase that this one does not concern stay waiting.
        for &id in &tx.pending {
            if engine.rules[id as usize].phase(phase).is_none() {
                pending.push(id);
            }
        }
        pending.sort_unstable();
        pending.dedup();
        tx.pending = pending;
        self.tx = Some(tx);
    }

    fn body(&mut self, phase: Phase, chunk: &[u8], end: bool, now: Timestamp, v: &mut Verdict) {
        let engine = Arc::clone(&self.engine);
        let limit = if phase == Phase::RequestBody {
            engine.limits.request_body_limit
        } else {
            engine.limits.response_body_limit
        };
        let index = engine.phase(phase);
        let Some(tx) = &mut self.tx else {
            return;
        };
        if phase == Phase::RequestBody && tx.response {
            // The response started: the request body is over.
            return;
        }
        let body = if phase == Phase::RequestBody {
            &mut tx.req_body
        } else {
            &mut tx.resp_body
        };
        if body.ended {
            return;
        }
        body.seen |= !chunk.is_empty();
        if !index.is_empty() {
            let old_len = body.buf.len();
            let room = limit.saturating_sub(old_len);
            let mut bomb = None;
            let decoded;
            let chunk = match &mut body.coding {
                Some(coding) => {
                    let d = coding.push(chunk, end, room);
                    bomb = d.bomb;
                    decoded = d.bytes;
                    &decoded[..]
                }
                None => chunk,
            };
            let keep = chunk.len().min(room);
            body.buf.extend_from_slice(&chunk[..keep]);
            let fresh = scan_new(&index.prefilters, &body.buf, old_len, &mut body.candidates);
            let full = body.buf.len() >= limit;
            let recheck = fresh || recheck_due(body.buf.len(), body.checked_len);
            if let Some(event) = bomb {
                let dir = if phase == Phase::RequestBody {
                    Dir::ToServer
                } else {
                    Dir::ToClient
                };
                self.anomaly(event, dir, now, v);
            }
            if end || full {
                self.end_body(phase, now, v);
                return;
            }
            if recheck {
                self.check_body(phase, Moment::Partial, now, v);
            }
        } else if end {
            body.ended = true;
        }
    }

    fn end_body(&mut self, phase: Phase, now: Timestamp, v: &mut Verdict) {
        let Some(tx) = &mut self.tx else {
            return;
        };
        let body = if phase == Phase::RequestBody {
            &tx.req_body
        } else {
            &tx.resp_body
        };
        if body.ended {
            return;
        }
        self.check_body(phase, Moment::Complete, now, v);
        let engine = Arc::clone(&self.engine);
        if let Some(tx) = &mut self.tx {
            let body = if phase == Phase::RequestBody {
                &mut tx.req_body
            } else {
                &mut tx.resp_body
            };
            body.ended = true;
            let matched = std::mem::take(&mut body.matched);
            body.buf = Vec::new();
            body.candidates = Vec::new();
            // Rules waiting on this phase move on only if they matched it.
            tx.pending.retain(|&id| {
                engine.rules[id as usize].phase(phase).is_none() || contains(&matched, id)
            });
        }
    }

    fn check_body(&mut self, phase: Phase, moment: Moment, now: Timestamp, v: &mut Verdict) {
        let engine = Arc::clone(&self.engine);
        let index = engine.phase(phase);
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        let field = if phase == Phase::RequestBody {
            Field::ReqBody
        } else {
            Field::RespBody
        };
        let data_dir = if phase == Phase::RequestBody {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let mut body = std::mem::take(if phase == Phase::RequestBody {
            &mut tx.req_body
        } else {
            &mut tx.resp_body
        });
        body.checked_len = body.buf.len();
        let seen = body.seen.then_some(body.buf.as_slice());
        let src = OneField(field, seen);
        let mut bufs = Buffers::new(&src);
        // The files of a request, each a buffer set of its own (the body's prefilter scan
        // found their patterns: they are parts of it).
        let files = match (phase, seen) {
            (Phase::RequestBody, Some(b)) if engine.reads_request_files => tx.files.in_body(b),
            _ => Vec::new(),
        };
        let file_srcs: Vec<BodyFile<'_>> = files
            .iter()
            .map(|&file| BodyFile { body: seen, file })
            .collect();
        let mut file_bufs: Vec<Buffers<'_, BodyFile<'_>>> =
            file_srcs.iter().map(Buffers::new).collect();
        let mut hits = body.candidates.clone();
        // Patterns in transformed body buffers are looked for on the whole body (or file).
        for pf in index
            .prefilters
            .iter()
            .filter(|pf| !pf.transforms.is_empty())
        {
            if pf.field == Field::ReqFile {
                for fb in &mut file_bufs {
                    if let Some(b) = fb.get(pf.field, &pf.transforms) {
                        pf.scan(b, &mut hits);
                    }
                }
            } else if let Some(b) = bufs.get(pf.field, &pf.transforms) {
                pf.scan(b, &mut hits);
            }
        }
        let mut list = Vec::new();
        merge(&hits, &index.always, &mut list);
        for &id in &list {
            let r = &engine.rules[id as usize];
            if contains(&body.matched, id)
                || contains(&tx.fired, id)
                || !(contains(&tx.pending, id) || r.enters(phase, &tx.met))
                || (moment == Moment::Partial && r.needs_end)
            {
                continue;
            }
            let dir = r.dir.unwrap_or(data_dir);
            if !self.applies(r, dir, now) {
                continue;
            }
            let found = if r.reads_files() {
                file_bufs
                    .iter_mut()
                    .any(|fb| self.buffers_match(r, phase, fb))
            } else {
                self.buffers_match(r, phase, &mut bufs)
            };
            if !found {
                continue;
            }
            insert_sorted(&mut body.matched, id);
            if r.last_phase() == phase {
                insert_sorted(&mut tx.fired, id);
                let summary = (!tx.mail).then_some(&tx.summary);
                self.matched(r, dir, Some(tx.id), true, now, v, |a| {
                    a.http = summary.cloned()
                });
                if self.passed {
                    break;
                }
            } else {
                insert_sorted(&mut tx.pending, id);
            }
        }
        *(if phase == Phase::RequestBody {
            &mut tx.req_body
        } else {
            &mut tx.resp_body
        }) = body;
        self.tx = Some(tx);
    }

    /// Complete the open transaction: bodies end, waiting rules are dropped.
    fn finish_tx(&mut self, now: Timestamp, v: &mut Verdict) {
        if self.tx.is_none() {
            return;
        }
        self.end_body(Phase::RequestBody, now, v);
        if self.tx.as_ref().is_some_and(|t| t.response) {
            self.end_body(Phase::ResponseBody, now, v);
        }
        self.tx = None;
    }

    /// SMTP: each attachment of each mail the client sends is a transaction whose
    /// `file.data` the rules read.
    fn mail_stream(&mut self, bytes: &[u8], now: Timestamp, v: &mut Verdict) {
        let limits = self.engine.limits;
        let max_message = usize::try_from(limits.stream_depth).unwrap_or(usize::MAX);
        let messages = self
            .mail
            .get_or_insert_with(Box::default)
            .push(bytes, max_message);
        for message in messages {
            for file in mail::attachments(&message, limits.request_body_limit) {
                self.finish_tx(now, v);
                let id = u64::from(self.next_tx);
                self.next_tx = self.next_tx.saturating_add(1);
                self.tx = Some(Box::new(Tx {
                    id,
                    mail: true,
                    ..Tx::default()
                }));
                self.body(Phase::RequestBody, &file, true, now, v);
                self.finish_tx(now, v);
                if self.passed {
                    return;
                }
            }
        }
    }

    // ---- TLS, DNS ----

    fn dns_stream(&mut self, bytes: &[u8], now: Timestamp, v: &mut Verdict) {
        let mut names = Vec::new();
        self.dns
            .get_or_insert_with(Box::default)
            .feed(bytes, |n| names.push(n));
        for name in names {
            self.dns_query(name, now, v);
            if self.passed {
                break;
            }
        }
    }

    /// One DNS query (a transaction), named `name`.
    fn dns_query(&mut self, name: Vec<u8>, now: Timestamp, v: &mut Verdict) {
        let tx = u64::from(self.next_dns);
        self.next_dns = self.next_dns.saturating_add(1);
        let src = OneField(Field::DnsQuery, Some(&name));
        let text = String::from_utf8_lossy(&name).into_owned();
        self.single_phase(Phase::Dns, &src, Some(tx), now, v, |a| {
            a.dns_query = Some(text.clone())
        });
    }

    /// A phase that is a whole transaction by itself (TLS ClientHello, DNS query).
    fn single_phase<S: Source>(
        &mut self,
        phase: Phase,
        src: &S,
        tx: Option<u64>,
        now: Timestamp,
        v: &mut Verdict,
        decorate: impl Fn(&mut Alert),
    ) {
        let engine = Arc::clone(&self.engine);
        let index = engine.phase(phase);
        if index.is_empty() {
            return;
        }
        let mut bufs = Buffers::new(src);
        let list = candidates(index, &mut bufs);
        for &id in &list {
            let r = &engine.rules[id as usize];
            let dir = r.dir.unwrap_or(Dir::ToServer);
            if !self.applies(r, dir, now) || !self.buffers_match(r, phase, &mut bufs) {
                continue;
            }
            self.matched(r, dir, tx, true, now, v, &decorate);
            if self.passed {
                break;
            }
        }
    }

    // ---- shared ----

    /// Transport, protocol, direction, header and flowbit tests of a rule for data in `dir`.
    fn applies(&self, r: &CRule, dir: Dir, now: Timestamp) -> bool {
        if r.dir.is_some_and(|d| d != dir) || r.transport.is_some_and(|t| t != self.transport) {
            return false;
        }
        if let Some(only) = &self.only
            && !RuleMask::keeps(only, r.id)
        {
            return false;
        }
        // A TCP connection is established before the node sees a byte of it.
        if r.established && self.transport == Transport::Udp && !(self.seen[0] && self.seen[1]) {
            return false;
        }
        if let Some(p) = r.app
            && !self.app.is(p)
        {
            return false;
        }
        if !r.header_matches(dir, self.flow.src, self.flow.dst) {
            return false;
        }
        if let Some(want) = r.tls_version
            && !same_tls_version(want, self.tls_version[dir.index()])
        {
            return false;
        }
        if let Some(size) = r.stream_size
            && !self.stream_size_holds(size)
        {
            return false;
        }
        if !r.xbits.is_empty() && !self.xbits_hold(r, dir, now) {
            return false;
        }
        if !r
            .ints
            .iter()
            .filter(|f| !f.op.changes())
            .all(|f| self.int_holds(f))
        {
            return false;
        }
        r.reads.iter().all(|c| match c {
            BitCond::IsSet { bits, all } => {
                if *all {
                    bits.iter().all(|b| self.bit(*b))
                } else {
                    bits.iter().any(|b| self.bit(*b))
                }
            }
            BitCond::IsNotSet { bits, all } => {
                if *all {
                    bits.iter().all(|b| !self.bit(*b))
                } else {
                    bits.iter().any(|b| !self.bit(*b))
                }
            }
        })
    }

    /// The rule's `xbits` tests, for data flowing in `dir`.
    fn xbits_hold(&self, r: &CRule, dir: Dir, now: Timestamp) -> bool {
        let (src, dst) = self.addresses(dir);
        let secs = now.since_epoch().as_secs();
        r.xbits.iter().all(|x| {
            let set = || self.engine.xbits.is_set(x.bit, x.track, src, dst, secs);
            match x.op {
                XbitOp::IsSet => set(),
                XbitOp::IsNotSet => !set(),
                XbitOp::Set | XbitOp::Unset | XbitOp::Toggle => true,
            }
        })
    }

    /// The source and destination addresses of data flowing in `dir`.
    fn addresses(&self, dir: Dir) -> (std::net::IpAddr, std::net::IpAddr) {
        match dir {
            Dir::ToServer => (self.flow.src.ip(), self.flow.dst.ip()),
            Dir::ToClient => (self.flow.dst.ip(), self.flow.src.ip()),
        }
    }

    /// `stream_size`: sizes in sequence space (the SYN counts one). Its rules are decided
    /// when the message ends, so the data's own direction counts to the end of its message
    /// (as Suricata counts a message sent in one segment, and whatever way it was cut), the
    /// other direction as far as it went.
    fn stream_size_holds(&self, size: StreamSize) -> bool {
        if self.transport != Transport::Tcp {
            return false;
        }
        let sent = |d: Dir| size.cmp.matches(u64::from(self.sent[d.index()]) + 1);
        let (client, server) = (sent(Dir::ToServer), sent(Dir::ToClient));
        match size.side {
            StreamSide::Client => client,
            StreamSide::Server => server,
            StreamSide::Both => client && server,
            StreamSide::Either => client || server,
        }
    }

    fn buffers_match<S: Source>(&self, r: &CRule, phase: Phase, bufs: &mut Buffers<'_, S>) -> bool {
        r.phase(phase).is_some_and(|p| phase_matches(p, bufs))
    }

    /// A `flowint` integer's value, if set.
    fn int(&self, v: u16) -> Option<u32> {
        self.vars
            .as_ref()
            .and_then(|vars| vars.ints.get(usize::from(v)).copied().flatten())
    }

    /// The other operand of a `flowint` command: another integer counts 0 while not set,
    /// as in Suricata.
    fn int_operand(&self, f: &CFlowint) -> u32 {
        match f.target {
            CFlowintTarget::Value(n) => n,
            CFlowintTarget::Var(v) => self.int(v).unwrap_or(0),
            CFlowintTarget::None => 0,
        }
    }

    /// Whether a `flowint` test holds (a comparison of an integer not set is false).
    fn int_holds(&self, f: &CFlowint) -> bool {
        let other = self.int_operand(f);
        match (f.op, self.int(f.var)) {
            (FlowintOp::IsSet, own) => own.is_some(),
            (FlowintOp::NotSet, own) => own.is_none(),
            (_, None) => false,
            (FlowintOp::Lt, Some(x)) => x < other,
            (FlowintOp::Le, Some(x)) => x <= other,
            (FlowintOp::Eq, Some(x)) => x == other,
            (FlowintOp::Ne, Some(x)) => x != other,
            (FlowintOp::Ge, Some(x)) => x >= other,
            (FlowintOp::Gt, Some(x)) => x > other,
            (FlowintOp::Set | FlowintOp::Add | FlowintOp::Sub, Some(_)) => false,
        }
    }

    /// A `flowint` change of a rule that matched: 32-bit arithmetic that wraps, as Suricata's.
    fn change_int(&mut self, f: &CFlowint) {
        let other = self.int_operand(f);
        let new = match (f.op, self.int(f.var)) {
            (FlowintOp::Set, _) | (FlowintOp::Add, None) => other,
            (FlowintOp::Add, Some(x)) => x.wrapping_add(other),
            (FlowintOp::Sub, Some(x)) => x.wrapping_sub(other),
            _ => return,
        };
        let count = self.engine.flowint_count;
        let vars = self.vars.get_or_insert_default();
        if vars.ints.is_empty() {
            vars.ints = vec![None; count];
        }
        if let Some(slot) = vars.ints.get_mut(usize::from(f.var)) {
            *slot = Some(new);
        }
    }

    fn bit(&self, b: u16) -> bool {
        let (w, m) = (usize::from(b) / 64, 1u64 << (b % 64));
        self.vars
            .as_ref()
            .and_then(|vars| vars.bits.get(w))
            .is_some_and(|x| x & m != 0)
    }

    fn write_bit(&mut self, op: BitOp) {
        let (b, f): (u16, fn(u64, u64) -> u64) = match op {
            BitOp::Set(b) => (b, |x, m| x | m),
            BitOp::Unset(b) => (b, |x, m| x & !m),
            BitOp::Toggle(b) => (b, |x, m| x ^ m),
        };
        let words = self.engine.flowbit_count.div_ceil(64);
        let vars = self.vars.get_or_insert_default();
        if vars.bits.is_empty() {
            vars.bits = vec![0; words];
        }
        let (w, m) = (usize::from(b) / 64, 1u64 << (b % 64));
        if let Some(x) = vars.bits.get_mut(w) {
            *x = f(*x, m);
        }
    }

    /// Records `event` of the open transaction.
    fn anomaly(&self, event: DecodeEvent, dir: Dir, now: Timestamp, v: &mut Verdict) {
        v.anomalies.push(Anomaly {
            event,
            dir,
            tx_id: self.tx.as_ref().map(|t| t.id),
            timestamp: now,
            http: self.tx.as_ref().map(|t| t.summary.clone()),
        });
    }

    /// A rule matched: flowbits change, and it alerts (once per scope, subject to
    /// thresholds) unless it is `noalert`.
    #[allow(clippy::too_many_arguments)]
    fn matched(
        &mut self,
        r: &CRule,
        dir: Dir,
        tx: Option<u64>,
        first_in_scope: bool,
        now: Timestamp,
        v: &mut Verdict,
        decorate: impl Fn(&mut Alert),
    ) {
        for w in &r.writes {
            self.write_bit(*w);
        }
        for f in r.ints.iter().filter(|f| f.op.changes()) {
            self.change_int(f);
        }
        let secs = now.since_epoch().as_secs();
        for x in &r.xbits {
            let ends = self.addresses(dir);
            self.engine
                .xbits
                .apply(x.op, x.bit, x.track, x.expire, ends, secs);
        }
        if r.info.action == RuleAction::Pass {
            self.passed = true;
        }
        if r.noalert || !first_in_scope {
            return;
        }
        let (from, to) = self.addresses(dir);
        let limits = [
            r.threshold.map(Limit::Threshold),
            r.detection_filter.map(Limit::DetectionFilter),
        ];
        for l in limits.into_iter().flatten() {
            if !self
                .engine
                .thresholds
                .allow(r.info.gid, r.info.sid, l, from, to, secs)
            {
                return;
            }
        }
        let info = &r.info;
        let mut alert = Alert {
            action: info.action,
            gid: info.gid,
            sid: info.sid,
            rev: info.rev,
            msg: info.msg.clone(),
            classtype: info.classtype.clone(),
            category: info.category.clone(),
            severity: info.severity,
            metadata: info.metadata.clone(),
            dir,
            tx_id: tx,
            app_proto: self.app,
            transport: self.transport,
            timestamp: now,
            http: None,
            tls_sni: None,
            dns_query: None,
        };
        decorate(&mut alert);
        v.alerts.push(alert);
    }
}

#[cfg(test)]
mod tests;
