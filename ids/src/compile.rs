//! The compiled engine: rules resolved against variables, grouped by where they are
//! decided (raw TCP stream and UDP datagrams per direction, HTTP request / request body /
//! response / response body, TLS ClientHello, DNS query), with one multi-pattern prefilter
//! (Aho-Corasick) per buffer of each group; and the thresholds shared by all flows.

use crate::class::Classifications;
use crate::payload::{self, CItem};
use crate::rule::{
    Buffer, DetectionFilter, Dir, Flowbit, FlowintOp, FlowintTarget, Protocol, Rule, RuleAction,
    SizeCmp, SkipKind, SkipReason, Skipped, StreamSize, Threshold, Transform, Transport, XbitOp,
    XbitTrack,
};
use crate::threshold::ThresholdTable;
use crate::vars::{IpSet, PortSet, Vars, ip_any, ip_in, port_any, port_in};
use crate::xbits::XbitTable;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Index of a compiled rule in the engine (rules are sorted in evaluation order).
pub(crate) type RuleId = u32;

/// Index of a [`Engine::conditions`] entry.
pub(crate) type CondId = u32;

/// A buffer with its direction resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Field {
    Stream,
    Method,
    Uri,
    UriRaw,
    RequestLine,
    ReqHeader,
    ReqHeaderRaw,
    ReqHeaderNames,
    ReqCookie,
    UserAgent,
    Host,
    HostRaw,
    Accept,
    AcceptEnc,
    AcceptLang,
    ReqConnection,
    ReqContentType,
    ReqContentLen,
    Referer,
    ReqProtocol,
    ReqStart,
    /// The request head as received (payload keywords of an `http` rule).
    ReqHead,
    ReqBody,
    /// `file.data` of a request in an `http` rule: the files it uploads, as Suricata has
    /// them (each part of a `multipart/form-data` body with a `filename`; any other POST's
    /// or PUT's whole body), each inspected on its own.
    ReqFile,
    StatCode,
    StatMsg,
    ResponseLine,
    RespHeader,
    RespHeaderRaw,
    RespHeaderNames,
    RespCookie,
    RespConnection,
    RespContentType,
    RespContentLen,
    RespProtocol,
    RespStart,
    /// The response head as received.
    RespHead,
    Location,
    Server,
    RespBody,
    Sni,
    CertSubject,
    CertIssuer,
    CertSerial,
    /// Each certificate of the chain in turn.
    Cert,
    CertFingerprint,
    Ja3Hash,
    Ja3String,
    Ja4Hash,
    Ja3sHash,
    Ja3sString,
    DnsQuery,
}

impl Field {
    fn of(buffer: Buffer, dir: Dir) -> Field {
        let req = dir == Dir::ToServer;
        let pick = |a: Field, b: Field| if req { a } else { b };
        match buffer {
            Buffer::Stream => Field::Stream,
            Buffer::HttpUri => Field::Uri,
            Buffer::HttpUriRaw => Field::UriRaw,
            Buffer::HttpMethod => Field::Method,
            Buffer::HttpRequestLine => Field::RequestLine,
            Buffer::HttpRequestBody => Field::ReqBody,
            Buffer::HttpHeader => pick(Field::ReqHeader, Field::RespHeader),
            Buffer::HttpHeaderRaw => pick(Field::ReqHeaderRaw, Field::RespHeaderRaw),
            Buffer::HttpHeaderNames => pick(Field::ReqHeaderNames, Field::RespHeaderNames),
            Buffer::HttpCookie => pick(Field::ReqCookie, Field::RespCookie),
            Buffer::HttpUserAgent => Field::UserAgent,
            Buffer::HttpHost => Field::Host,
            Buffer::HttpHostRaw => Field::HostRaw,
            Buffer::HttpAccept => Field::Accept,
            Buffer::HttpAcceptEnc => Field::AcceptEnc,
            Buffer::HttpAcceptLang => Field::AcceptLang,
            Buffer::HttpConnection => pick(Field::ReqConnection, Field::RespConnection),
            Buffer::HttpContentType => pick(Field::ReqContentType, Field::RespContentType),
            Buffer::HttpContentLen => pick(Field::ReqContentLen, Field::RespContentLen),
            Buffer::HttpReferer => Field::Referer,
            Buffer::HttpProtocol => pick(Field::ReqProtocol, Field::RespProtocol),
            Buffer::HttpStart => pick(Field::ReqStart, Field::RespStart),
            Buffer::HttpHead => pick(Field::ReqHead, Field::RespHead),
            Buffer::HttpStatCode => Field::StatCode,
            Buffer::HttpStatMsg => Field::StatMsg,
            Buffer::HttpResponseLine => Field::ResponseLine,
            Buffer::HttpLocation => Field::Location,
            Buffer::HttpServer => Field::Server,
            Buffer::HttpResponseBody => Field::RespBody,
            Buffer::FileData => pick(Field::ReqBody, Field::RespBody),
            Buffer::TlsSni => Field::Sni,
            Buffer::TlsCertSubject => Field::CertSubject,
            Buffer::TlsCertIssuer => Field::CertIssuer,
            Buffer::TlsCertSerial => Field::CertSerial,
            Buffer::TlsCerts => Field::Cert,
            Buffer::TlsCertFingerprint => Field::CertFingerprint,
            Buffer::Ja3Hash => Field::Ja3Hash,
            Buffer::Ja3String => Field::Ja3String,
            Buffer::Ja4Hash => Field::Ja4Hash,
            Buffer::Ja3sHash => Field::Ja3sHash,
            Buffer::Ja3sString => Field::Ja3sString,
            Buffer::DnsQuery => Field::DnsQuery,
        }
    }

    pub(crate) fn phase(self) -> Phase {
        use Field::*;
        match self {
            Stream => Phase::Stream,
            ReqBody | ReqFile => Phase::RequestBody,
            RespBody => Phase::ResponseBody,
            Sni | Ja3Hash | Ja3String | Ja4Hash => Phase::Tls,
            CertSubject | CertIssuer | CertSerial | Cert | CertFingerprint | Ja3sHash
            | Ja3sString => Phase::TlsServer,
            DnsQuery => Phase::Dns,
            StatCode | StatMsg | ResponseLine | RespHeader | RespHeaderRaw | RespHeaderNames
            | RespCookie | RespConnection | RespContentType | RespContentLen | RespProtocol
            | RespStart | RespHead | Location | Server => Phase::Response,
            _ => Phase::Request,
        }
    }
}

/// The points at which rules are decided, in the order they happen for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// The raw payload: a TCP stream's messages, or each UDP datagram.
    Stream,
    Request,
    RequestBody,
    Response,
    ResponseBody,
    Tls,
    /// The server's certificates.
    TlsServer,
    Dns,
}

impl Phase {
    pub(crate) const TX: [Phase; 7] = [
        Phase::Request,
        Phase::RequestBody,
        Phase::Response,
        Phase::ResponseBody,
        Phase::Tls,
        Phase::TlsServer,
        Phase::Dns,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One buffer's compiled keywords.
#[derive(Debug, Clone)]
pub(crate) struct CBuffer {
    pub(crate) field: Field,
    pub(crate) transforms: Vec<Transform>,
    pub(crate) items: Vec<CItem>,
}

/// The buffers a rule inspects at one phase.
#[derive(Debug, Clone)]
pub(crate) struct CPhase {
    pub(crate) phase: Phase,
    pub(crate) buffers: Vec<CBuffer>,
}

/// A flowbit test, on interned bit numbers.
#[derive(Debug, Clone)]
pub(crate) enum BitCond {
    IsSet { bits: Vec<u16>, all: bool },
    IsNotSet { bits: Vec<u16>, all: bool },
}

/// A flowbit change.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BitOp {
    Set(u16),
    Unset(u16),
    Toggle(u16),
}

/// What an alert says about its rule.
#[derive(Debug, Clone)]
pub(crate) struct RuleInfo {
    pub(crate) action: RuleAction,
    pub(crate) gid: u32,
    pub(crate) sid: u32,
    pub(crate) rev: u32,
    pub(crate) msg: String,
    pub(crate) classtype: Option<String>,
    pub(crate) category: String,
    pub(crate) severity: u8,
    pub(crate) metadata: Vec<(String, String)>,
}

/// Addresses and ports of a rule header, resolved.
#[derive(Debug, Clone)]
struct HeaderMatch {
    src: Arc<IpSet>,
    sp: Arc<PortSet>,
    dst: Arc<IpSet>,
    dp: Arc<PortSet>,
    both: bool,
    /// Every address and port: the check is skipped.
    any: bool,
}

impl HeaderMatch {
    fn one_way(&self, from: SocketAddr, to: SocketAddr) -> bool {
        ip_in(&self.src, from.ip())
            && port_in(&self.sp, from.port())
            && ip_in(&self.dst, to.ip())
            && port_in(&self.dp, to.port())
    }

    fn matches(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.any || self.one_way(from, to) || (self.both && self.one_way(to, from))
    }
}

/// A rule ready for matching.
#[derive(Debug, Clone)]
pub(crate) struct CRule {
    /// Its index in the engine (after ordering).
    pub(crate) id: RuleId,
    pub(crate) info: Arc<RuleInfo>,
    /// The application protocol the flow must have (`None`: any).
    pub(crate) app: Option<Protocol>,
    /// The transport the flow must have (`None`: any).
    pub(crate) transport: Option<Transport>,
    /// `flow:established` (it matters on UDP only: see [`crate::rule::FlowOptions`]).
    pub(crate) established: bool,
    /// The direction of the data it alerts on; `None` for raw-stream rules in both.
    pub(crate) dir: Option<Dir>,
    header: HeaderMatch,
    pub(crate) phases: Vec<CPhase>,
    pub(crate) dsize: Option<SizeCmp>,
    /// Decided only when its buffer is complete (negations, `endswith`, `dsize`, …).
    pub(crate) needs_end: bool,
    /// Has keywords fixed to the start of the raw stream message.
    pub(crate) anchored: bool,
    /// Raw stream: how many already inspected bytes before a window's new bytes take part
    /// in its matches (the direction's tail before a message, the overlap of a long one);
    /// 0 for rules tied to the message (anchored, `dsize`).
    pub(crate) lookback: usize,
    pub(crate) reads: Vec<BitCond>,
    pub(crate) writes: Vec<BitOp>,
    pub(crate) noalert: bool,
    pub(crate) threshold: Option<Threshold>,
    pub(crate) detection_filter: Option<DetectionFilter>,
    /// `tls.version`: the version the direction's hello must have.
    pub(crate) tls_version: Option<u16>,
    pub(crate) stream_size: Option<StreamSize>,
    /// `xbits`, their names numbered.
    pub(crate) xbits: Vec<CXbit>,
    /// `flowint` commands, their integers numbered: the tests are conditions, the changes
    /// happen when the rule matches.
    pub(crate) ints: Vec<CFlowint>,
    /// Head phases before `phases` (which then start at the phase with the rule's best
    /// pattern), decided late: the transaction records which of these conditions its heads
    /// met, and the rule enters at its first phase only if they all were (sorted). See
    /// [`late_entry`].
    pub(crate) conditions: Vec<CondId>,
}

/// A `flowint` command with its integers numbered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CFlowint {
    pub(crate) var: u16,
    pub(crate) op: FlowintOp,
    pub(crate) target: CFlowintTarget,
}

/// The other operand of a [`CFlowint`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum CFlowintTarget {
    None,
    Value(u32),
    Var(u16),
}

impl CFlowint {
    /// The integer it reads besides its own, if any.
    fn reads_var(&self) -> Option<u16> {
        match self.target {
            CFlowintTarget::Var(v) => Some(v),
            _ => None,
        }
    }
}

/// An `xbits` command with its bit's number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CXbit {
    pub(crate) op: XbitOp,
    pub(crate) bit: u16,
    pub(crate) track: XbitTrack,
    pub(crate) expire: u32,
}

impl CRule {
    /// Whether the header matches data flowing in `dir` on a flow from `client` to `server`.
    pub(crate) fn header_matches(&self, dir: Dir, client: SocketAddr, server: SocketAddr) -> bool {
        match dir {
            Dir::ToServer => self.header.matches(client, server),
            Dir::ToClient => self.header.matches(server, client),
        }
    }

    /// Whether the rule starts being considered at `phase`, its earlier head phases (if
    /// decided late) among the conditions `met` (sorted).
    pub(crate) fn enters(&self, phase: Phase, met: &[CondId]) -> bool {
        self.first_phase() == phase && self.conditions.iter().all(|c| met.binary_search(c).is_ok())
    }

    /// Whether it reads the files a request uploads ([`Field::ReqFile`]): it is then
    /// matched against each file in turn.
    pub(crate) fn reads_files(&self) -> bool {
        self.phase(Phase::RequestBody)
            .is_some_and(|p| p.buffers.iter().any(|b| b.field == Field::ReqFile))
    }

    pub(crate) fn first_phase(&self) -> Phase {
        self.phases.first().map_or(Phase::Stream, |p| p.phase)
    }

    pub(crate) fn phase(&self, phase: Phase) -> Option<&CPhase> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    pub(crate) fn last_phase(&self) -> Phase {
        self.phases.last().map_or(Phase::Stream, |p| p.phase)
    }
}

/// Rules of one group whose fast pattern is in one buffer.
#[derive(Debug, Clone)]
pub(crate) struct Prefilter {
    pub(crate) field: Field,
    pub(crate) transforms: Vec<Transform>,
    matcher: Matcher,
    /// Rules per pattern id.
    rules: Vec<Vec<RuleId>>,
    pub(crate) max_len: usize,
}

/// What finds a prefilter's patterns.
#[derive(Debug, Clone)]
enum Matcher {
    AhoCorasick(AhoCorasick),
    /// Bulk buffers with the `hyperscan` feature.
    #[cfg(feature = "hyperscan")]
    Hyperscan(Arc<crate::hs::Literals>),
}

impl Prefilter {
    /// Add the rules whose pattern occurs in `hay` (overlapping occurrences included).
    pub(crate) fn scan(&self, hay: &[u8], out: &mut Vec<RuleId>) {
        let mut add = |pattern: usize| {
            if let Some(ids) = self.rules.get(pattern) {
                out.extend_from_slice(ids);
            }
        };
        match &self.matcher {
            Matcher::AhoCorasick(ac) => {
                for m in ac.find_overlapping_iter(hay) {
                    add(m.pattern().as_usize());
                }
            }
            #[cfg(feature = "hyperscan")]
            Matcher::Hyperscan(hs) => hs.each(hay, add),
        }
    }
}

/// The rules decided at one phase: prefilters per buffer, and the rules without a pattern
/// there (always candidates).
#[derive(Debug, Clone, Default)]
pub(crate) struct PhaseIndex {
    pub(crate) prefilters: Vec<Prefilter>,
    pub(crate) always: Vec<RuleId>,
}

impl PhaseIndex {
    pub(crate) fn is_empty(&self) -> bool {
        self.prefilters.is_empty() && self.always.is_empty()
    }
}

/// Limits that bound per-flow memory and work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one raw-stream message kept for matching at once (a message is what one
    /// side sends before the other answers). Longer messages are inspected in windows of
    /// this size that overlap by [`Limits::stream_overlap`].
    pub stream_window: usize,
    /// Bytes the next window repeats from the previous one. Also the most a direction keeps
    /// of its raw stream between messages, so that a pattern sent across several messages
    /// is seen whole (the tail: see [`Engine::stream_tail`]); both are at most half a window.
    pub stream_overlap: usize,
    /// Raw-stream bytes inspected per direction of a flow (like Suricata's
    /// `stream.reassembly.depth`); later bytes are not inspected as raw stream.
    pub stream_depth: u64,
    /// Request body bytes kept for `http.request_body` (like `request-body-limit`).
    pub request_body_limit: usize,
    /// Response body bytes kept for `http.response_body` / `file.data`.
    pub response_body_limit: usize,
    /// Source/destination entries kept for thresholds.
    pub threshold_entries: usize,
    /// Host and host-pair bits kept for `xbits` (a set beyond it is not kept).
    pub xbit_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stream_window: 64 * 1024,
            stream_overlap: 2 * 1024,
            stream_depth: 1024 * 1024,
            request_body_limit: 100 * 1024,
            response_body_limit: 100 * 1024,
            threshold_entries: 65_536,
            xbit_entries: 65_536,
        }
    }
}

/// Which rules an engine holds (an IDS profile).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these classtypes (`None`: all).
    pub classtypes: Option<Vec<String>>,
    /// Only rules at least this severe (1 is most severe; `Some(2)` keeps 1 and 2).
    pub max_severity: Option<u8>,
    /// Only these sids (`None`: all).
    pub sids: Option<Vec<u32>>,
    /// Never these sids.
    pub exclude_sids: Vec<u32>,
}

impl Selection {
    /// Every rule.
    pub fn all() -> Self {
        Selection::default()
    }

    fn keeps(&self, rule: &Rule, severity: u8) -> bool {
        self.keeps_sid(rule.sid, rule.classtype.as_deref(), severity)
    }

    fn keeps_sid(&self, sid: u32, classtype: Option<&str>, severity: u8) -> bool {
        if self.exclude_sids.contains(&sid) {
            return false;
        }
        if let Some(sids) = &self.sids
            && !sids.contains(&sid)
        {
            return false;
        }
        if let Some(max) = self.max_severity
            && severity > max
        {
            return false;
        }
        if let Some(classes) = &self.classtypes {
            match classtype {
                Some(c) if classes.iter().any(|x| x == c) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The rules of an engine that one profile uses: a [`Selection`] applied to an engine built
/// once with every rule, so that profiles share its compiled groups and prefilters instead
/// of each holding an engine of its own ([`FlowInspector::only`]).
///
/// [`FlowInspector::only`]: crate::FlowInspector::only
#[derive(Debug, Clone)]
pub struct RuleMask {
    pub(crate) bits: Arc<[u64]>,
    rules: usize,
}

impl RuleMask {
    /// Rules (distinct gid and sid) it keeps.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Whether it keeps the engine's rule `id`.
    pub(crate) fn keeps(bits: &[u64], id: RuleId) -> bool {
        bits.get(id as usize / 64)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }
}

/// What [`Engine::build`] did with the rules it was given.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Rules in the engine.
    pub loaded: usize,
    /// Rules left out by the [`Selection`].
    pub not_selected: usize,
    /// Rules that could not be resolved (undefined variables, empty address sets, …).
    pub skipped: Vec<Skipped>,
    /// Rules with a classtype the classification table does not know (they get severity 3).
    pub unknown_classtypes: Vec<u32>,
    /// Flowbits tested by some rule but set by none.
    pub flowbits_never_set: Vec<String>,
}

/// Compiled, immutable rules shared by all flows; thresholds are kept inside.
#[derive(Debug)]
pub struct Engine {
    pub(crate) rules: Vec<CRule>,
    /// Raw-stream rules per direction (the rules for TCP).
    pub(crate) stream: [PhaseIndex; 2],
    /// Raw-payload rules for UDP datagrams, per direction.
    pub(crate) datagram: [PhaseIndex; 2],
    /// Bytes of each direction's raw stream kept between its messages: the largest
    /// [`CRule::lookback`] of the direction's rules.
    pub(crate) stream_tail: [usize; 2],
    /// Transaction phases, indexed by `Phase as usize`.
    pub(crate) phases: Vec<PhaseIndex>,
    /// Head phases of rules decided late ([`CRule::conditions`]), each kept once however
    /// many rules share it, and evaluated once per transaction.
    pub(crate) conditions: Vec<CPhase>,
    /// Their prefilters, indexed by `Phase as usize` (ids are [`CondId`]s).
    pub(crate) condition_index: Vec<PhaseIndex>,
    pub(crate) flowbit_count: usize,
    /// How many `flowint` integers the rules name.
    pub(crate) flowint_count: usize,
    pub(crate) limits: Limits,
    pub(crate) thresholds: ThresholdTable,
    pub(crate) xbits: XbitTable,
    /// Some rule reads the TLS handshake: its fields, its certificates, or its version
    /// (`tls.version`, in any phase).
    pub(crate) reads_tls: bool,
    /// Some rule is for SMTP or FTP flows, which the inspector recognises itself.
    pub(crate) reads_commands: bool,
    /// Some rule reads mail attachments (`file.data` in `smtp` rules).
    pub(crate) reads_mail: bool,
    /// Some rule reads HTTP/1: the inspector recognises it on flows the node did not name
    /// and reads it from the raw stream.
    pub(crate) reads_http: bool,
    /// SMTP and FTP flows are recognised for their switch to TLS (`STARTTLS`, `AUTH TLS`):
    /// some rule reads TLS, or the raw stream (which is no longer inspected once encrypted).
    pub(crate) follows_tls_upgrades: bool,
    /// Some rule reads the files requests upload ([`Field::ReqFile`]): only then are request
    /// bodies split into them.
    pub(crate) reads_request_files: bool,
}

impl Engine {
    /// Build an engine from parsed rules with the default [`Limits`].
    pub fn build(
        rules: &[Rule],
        vars: &Vars,
        classes: &Classifications,
        select: &Selection,
    ) -> (Engine, BuildReport) {
        Engine::build_with_limits(rules, vars, classes, select, Limits::default())
    }

    /// Build an engine with explicit limits.
    pub fn build_with_limits(
        rules: &[Rule],
        vars: &Vars,
        classes: &Classifications,
        select: &Selection,
        limits: Limits,
    ) -> (Engine, BuildReport) {
        let mut report = BuildReport::default();
        let mut addr_cache: HashMap<String, Result<Arc<IpSet>, String>> = HashMap::new();
        let mut port_cache: HashMap<String, Result<Arc<PortSet>, String>> = HashMap::new();
        let mut bit_ids: HashMap<String, u16> = HashMap::new();
        let mut xbit_ids: HashMap<String, u16> = HashMap::new();
        let mut int_ids: HashMap<String, u16> = HashMap::new();
        let mut compiled: Vec<CRule> = Vec::new();
        let mut conditions = ConditionTable::default();
        let skip = |report: &mut BuildReport, rule: &Rule, what: String| {
            report.skipped.push(Skipped {
                source: rule.source.clone(),
                line: rule.line,
                sid: Some(rule.sid),
                reason: SkipReason::new(SkipKind::Unresolved, what),
            })
        };
        for rule in rules {
            let (category, severity) = match rule.classtype.as_deref() {
                Some(c) => match classes.get(c) {
                    Some((desc, prio)) => (desc.to_string(), rule.priority.unwrap_or(prio)),
                    None => {
                        report.unknown_classtypes.push(rule.sid);
                        (String::new(), rule.priority.unwrap_or(3))
                    }
                },
                None => (String::new(), rule.priority.unwrap_or(3)),
            };
            if !select.keeps(rule, severity) {
                report.not_selected += 1;
                continue;
            }
            let mut resolve_addr = |e: &crate::rule::AddrExpr| {
                addr_cache
                    .entry(e.to_string())
                    .or_insert_with(|| vars.addresses(e).map(Arc::new).map_err(|e| e.to_string()))
                    .clone()
            };
            let src = resolve_addr(&rule.src);
            let dst = resolve_addr(&rule.dst);
            let mut resolve_port = |e: &crate::rule::PortExpr| {
                port_cache
                    .entry(e.to_string())
                    .or_insert_with(|| vars.ports(e).map(Arc::new).map_err(|e| e.to_string()))
                    .clone()
            };
            let sp = resolve_port(&rule.src_ports);
            let dp = resolve_port(&rule.dst_ports);
            let (src, dst, sp, dp) = match (src, dst, sp, dp) {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
                (a, b, c, d) => {
                    let why = [a.err(), b.err(), c.err(), d.err()]
                        .into_iter()
                        .flatten()
                        .next()
                        .unwrap_or_default();
                    skip(&mut report, rule, why);
                    continue;
                }
            };
            let header = HeaderMatch {
                any: ip_any(&src) && ip_any(&dst) && port_any(&sp) && port_any(&dp),
                src,
                sp,
                dst,
                dp,
                both: rule.direction == crate::rule::HeaderDirection::Both,
            };
            let info = Arc::new(RuleInfo {
                action: rule.action,
                gid: rule.gid,
                sid: rule.sid,
                rev: rule.rev,
                msg: rule.msg.clone(),
                classtype: rule.classtype.clone(),
                category,
                severity,
                metadata: rule.metadata.clone(),
            });
            let mut intern = |name: &str| -> u16 {
                let next = bit_ids.len() as u16;
                *bit_ids.entry(name.to_string()).or_insert(next)
            };
            let mut reads = Vec::new();
            let mut writes = Vec::new();
            for fb in &rule.flowbits {
                match fb {
                    Flowbit::Set(n) => writes.push(BitOp::Set(intern(n))),
                    Flowbit::Unset(n) => writes.push(BitOp::Unset(intern(n))),
                    Flowbit::Toggle(n) => writes.push(BitOp::Toggle(intern(n))),
                    Flowbit::IsSet(e) => reads.push(BitCond::IsSet {
                        bits: e.names.iter().map(|n| intern(n)).collect(),
                        all: e.all,
                    }),
                    Flowbit::IsNotSet(e) => reads.push(BitCond::IsNotSet {
                        bits: e.names.iter().map(|n| intern(n)).collect(),
                        all: e.all,
                    }),
                }
            }
            let xbits: Vec<CXbit> = rule
                .xbits
                .iter()
                .map(|x| {
                    let next = xbit_ids.len() as u16;
                    CXbit {
                        op: x.op,
                        bit: *xbit_ids.entry(x.name.clone()).or_insert(next),
                        track: x.track,
                        expire: x.expire,
                    }
                })
                .collect();
            let mut int_id = |name: &str| -> u16 {
                let next = int_ids.len() as u16;
                *int_ids.entry(name.to_string()).or_insert(next)
            };
            let ints: Vec<CFlowint> = rule
                .flowints
                .iter()
                .map(|f| CFlowint {
                    var: int_id(&f.name),
                    op: f.op,
                    target: match &f.target {
                        FlowintTarget::None => CFlowintTarget::None,
                        FlowintTarget::Value(n) => CFlowintTarget::Value(*n),
                        FlowintTarget::Var(v) => CFlowintTarget::Var(int_id(v)),
                    },
                })
                .collect();
            let tests_ints = ints.iter().any(|i| !i.op.changes());
            let app = match rule.protocol {
                Protocol::Tcp | Protocol::Udp | Protocol::Ip => None,
                p => Some(p),
            };
            for dir in rule_dirs(rule) {
                let Some(mut phases) = compile_phases(rule, dir) else {
                    skip(&mut report, rule, "content that cannot be compiled".into());
                    break;
                };
                // What is decided when a head is seen must not change until the later
                // phase: no flowbits or xbits to test, no stream size or TLS version.
                let timeless = reads.is_empty()
                    && xbits.is_empty()
                    && !tests_ints
                    && rule.stream_size.is_none()
                    && rule.tls_version.is_none()
                    && dir.is_some();
                let late = if timeless { late_entry(&phases) } else { 0 };
                let field_dir = dir.unwrap_or(Dir::ToServer);
                let mut conds: Vec<CondId> = phases
                    .drain(..late)
                    .map(|p| conditions.intern(p, rule, field_dir))
                    .collect();
                conds.sort_unstable();
                conds.dedup();
                // `stream_size` counts the data's own direction to the end of its message.
                let needs_end = rule.dsize.is_some()
                    || rule.stream_size.is_some()
                    || phases.iter().any(|p| {
                        matches!(
                            p.phase,
                            Phase::Stream | Phase::RequestBody | Phase::ResponseBody
                        ) && p.buffers.iter().any(|b| payload::depends_on_end(&b.items))
                    })
                    || reads.iter().any(|r| matches!(r, BitCond::IsNotSet { .. }))
                    // An integer's value may change later in the buffer: tested at its end,
                    // whatever the split.
                    || tests_ints;
                let anchored = phases
                    .iter()
                    .filter(|p| {
                        matches!(
                            p.phase,
                            Phase::Stream | Phase::RequestBody | Phase::ResponseBody
                        )
                    })
                    .flat_map(|p| p.buffers.iter())
                    .any(|b| payload::anchored(&b.items));
                let lookback = stream_lookback(&phases, anchored, rule.dsize.is_some(), &limits);
                compiled.push(CRule {
                    id: 0,
                    info: info.clone(),
                    app,
                    transport: rule.transport,
                    established: rule.flow.established,
                    dir,
                    header: header.clone(),
                    phases,
                    dsize: rule.dsize,
                    needs_end,
                    anchored,
                    lookback,
                    reads: reads.clone(),
                    writes: writes.clone(),
                    noalert: rule.noalert,
                    threshold: rule.threshold,
                    detection_filter: rule.detection_filter,
                    tls_version: rule.tls_version,
                    stream_size: rule.stream_size,
                    xbits: xbits.clone(),
                    ints: ints.clone(),
                    conditions: conds,
                });
            }
        }
        // Bits that some rule clears: tests of them are decided only when a buffer is
        // complete, so that a clear later in the same buffer is seen whatever the split.
        let mut cleared = vec![false; bit_ids.len()];
        let mut set = vec![false; bit_ids.len()];
        for r in &compiled {
            for w in &r.writes {
                match *w {
                    BitOp::Set(b) => set[usize::from(b)] = true,
                    BitOp::Unset(b) | BitOp::Toggle(b) => {
                        cleared[usize::from(b)] = true;
                        set[usize::from(b)] = true;
                    }
                }
            }
        }
        // Likewise rules that set a bit others clear: the bit's final state must not depend
        // on which of them matched first within a buffer.
        let mut sets = vec![false; bit_ids.len()];
        for r in &compiled {
            for w in &r.writes {
                if let BitOp::Set(b) = *w {
                    sets[usize::from(b)] = true;
                }
            }
        }
        for r in &mut compiled {
            let reads_cleared = r.reads.iter().any(|c| match c {
                BitCond::IsSet { bits, .. } => bits.iter().any(|b| cleared[usize::from(*b)]),
                BitCond::IsNotSet { .. } => true,
            });
            let contested = r.writes.iter().any(|w| {
                let (BitOp::Set(b) | BitOp::Unset(b) | BitOp::Toggle(b)) = *w;
                cleared[usize::from(b)] && sets[usize::from(b)]
            });
            if reads_cleared || contested {
                r.needs_end = true;
            }
        }
        let mut names: Vec<(&String, &u16)> = bit_ids.iter().collect();
        names.sort_by_key(|(_, id)| **id);
        for (name, id) in names {
            if !set[usize::from(*id)] {
                report.flowbits_never_set.push(name.clone());
            }
        }
        order_rules(&mut compiled, bit_ids.len(), xbit_ids.len(), int_ids.len());
        for (i, r) in compiled.iter_mut().enumerate() {
            r.id = RuleId::try_from(i).unwrap_or(RuleId::MAX);
        }
        let raw = |t: Transport, d: Dir| index_phase(&compiled, Phase::Stream, Some(d), Some(t));
        let stream = [
            raw(Transport::Tcp, Dir::ToServer),
            raw(Transport::Tcp, Dir::ToClient),
        ];
        let datagram = [
            raw(Transport::Udp, Dir::ToServer),
            raw(Transport::Udp, Dir::ToClient),
        ];
        // Each direction keeps what its rules look back at most.
        let stream_tail = [Dir::ToServer, Dir::ToClient].map(|d| {
            compiled
                .iter()
                .filter(|r| {
                    r.phase(Phase::Stream).is_some()
                        && r.dir.is_none_or(|rd| rd == d)
                        && r.transport != Some(Transport::Udp)
                })
                .map(|r| r.lookback)
                .max()
                .unwrap_or(0)
        });
        let mut phases = vec![PhaseIndex::default(); Phase::Dns.index() + 1];
        for p in Phase::TX {
            phases[p.index()] = index_phase(&compiled, p, None, None);
        }
        let conditions = conditions.phases;
        let mut condition_index = vec![PhaseIndex::default(); Phase::Dns.index() + 1];
        for p in [Phase::Request, Phase::Response] {
            let entries = conditions
                .iter()
                .enumerate()
                .filter(|(_, c)| c.phase == p)
                .map(|(id, c)| (id as CondId, c));
            condition_index[p.index()] = index_entries(entries);
        }
        report.loaded = compiled
            .iter()
            .map(|r| r.info.sid)
            .collect::<std::collections::HashSet<_>>()
            .len();
        let thresholds = ThresholdTable::new(limits.threshold_entries);
        let xbits = XbitTable::new(limits.xbit_entries);
        let reads_tls = !phases[Phase::Tls.index()].is_empty()
            || !phases[Phase::TlsServer.index()].is_empty()
            || compiled.iter().any(|r| r.tls_version.is_some());
        let reads_commands = compiled
            .iter()
            .any(|r| matches!(r.app, Some(Protocol::Smtp | Protocol::Ftp)));
        let reads_http = compiled.iter().any(|r| match r.app {
            Some(Protocol::Http | Protocol::Http1) => true,
            None => [
                Phase::Request,
                Phase::RequestBody,
                Phase::Response,
                Phase::ResponseBody,
            ]
            .into_iter()
            .any(|p| r.phase(p).is_some()),
            _ => false,
        });
        let follows_tls_upgrades = reads_tls || stream.iter().any(|s| !s.is_empty());
        let reads_request_files = compiled.iter().any(CRule::reads_files);
        let reads_mail = compiled
            .iter()
            .any(|r| r.app == Some(Protocol::Smtp) && r.phase(Phase::RequestBody).is_some());
        (
            Engine {
                rules: compiled,
                stream,
                datagram,
                stream_tail,
                phases,
                conditions,
                condition_index,
                flowbit_count: bit_ids.len(),
                flowint_count: int_ids.len(),
                limits,
                thresholds,
                xbits,
                reads_tls,
                reads_commands,
                reads_http,
                reads_mail,
                follows_tls_upgrades,
                reads_request_files,
            },
            report,
        )
    }

    /// The rules of this engine that `select` keeps.
    pub fn select(&self, select: &Selection) -> RuleMask {
        let mut bits = vec![0u64; self.rules.len().div_ceil(64)];
        let mut kept = std::collections::HashSet::new();
        for r in &self.rules {
            let i = &r.info;
            if select.keeps_sid(i.sid, i.classtype.as_deref(), i.severity) {
                bits[r.id as usize / 64] |= 1u64 << (r.id % 64);
                kept.insert((i.gid, i.sid));
            }
        }
        RuleMask {
            bits: bits.into(),
            rules: kept.len(),
        }
    }

    /// How many rules the engine holds.
    pub fn rule_count(&self) -> usize {
        let mut sids: Vec<(u32, u32)> = self
            .rules
            .iter()
            .map(|r| (r.info.gid, r.info.sid))
            .collect();
        sids.sort_unstable();
        sids.dedup();
        sids.len()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of the raw stream in `dir` a flow keeps between messages of that direction, so
    /// that patterns sent across several messages are seen whole (see [`Limits`]).
    pub fn stream_tail(&self, dir: Dir) -> usize {
        self.stream_tail[dir.index()]
    }

    /// How many `pcre` expressions the engine holds, and how many of them are compiled (a
    /// buffer reached them; see [`crate::rule::Expr`]).
    pub fn expressions(&self) -> (usize, usize) {
        let mut seen = std::collections::HashSet::new();
        let mut compiled = 0;
        let mut stack: Vec<&[payload::CItem]> = self
            .rules
            .iter()
            .flat_map(|r| r.phases.iter())
            .chain(&self.conditions)
            .flat_map(|p| p.buffers.iter())
            .map(|b| b.items.as_slice())
            .collect();
        while let Some(items) = stack.pop() {
            for item in items {
                match item {
                    // Copies of a rule share one expression.
                    payload::CItem::Pcre { regex, .. }
                        if seen.insert(regex.id()) && regex.is_compiled() =>
                    {
                        compiled += 1;
                    }
                    payload::CItem::Base64(b) => stack.push(b.items()),
                    _ => {}
                }
            }
        }
        (seen.len(), compiled)
    }

    /// Bytes the engine's Hyperscan databases hold: Hyperscan allocates them itself, so they
    /// are outside what Rust's allocator counts (0 without the `hyperscan` feature).
    pub fn hyperscan_bytes(&self) -> usize {
        self.stream
            .iter()
            .chain(&self.datagram)
            .chain(&self.phases)
            .chain(&self.condition_index)
            .flat_map(|idx| &idx.prefilters)
            .map(|pf| match &pf.matcher {
                Matcher::AhoCorasick(_) => 0,
                #[cfg(feature = "hyperscan")]
                Matcher::Hyperscan(hs) => hs.bytes(),
            })
            .sum()
    }

    /// How rules are grouped: per group, the rules with a pattern per buffer and the rules
    /// checked without one (for diagnostics and tuning).
    pub fn layout(&self) -> String {
        let mut out = String::new();
        let mut group = |name: &str, idx: &PhaseIndex| {
            if idx.is_empty() {
                return;
            }
            out.push_str(&format!("{name}: {} always checked", idx.always.len()));
            for pf in &idx.prefilters {
                out.push_str(&format!(
                    ", {:?}{}: {} patterns for {} rules",
                    pf.field,
                    if pf.transforms.is_empty() {
                        ""
                    } else {
                        "+transforms"
                    },
                    pf.rules.len(),
                    pf.rules.iter().map(Vec::len).sum::<usize>()
                ));
            }
            out.push('\n');
        };
        group("stream to_server", &self.stream[0]);
        group("stream to_client", &self.stream[1]);
        group("datagram to_server", &self.datagram[0]);
        group("datagram to_client", &self.datagram[1]);
        for p in Phase::TX {
            group(&format!("{p:?}"), self.phase(p));
            group(
                &format!("{p:?} conditions of rules decided late"),
                &self.condition_index[p.index()],
            );
        }
        out.push_str(&format!(
            "stream tail: to_server {} bytes, to_client {} bytes\n",
            self.stream_tail[0], self.stream_tail[1]
        ));
        out
    }

    pub(crate) fn phase(&self, p: Phase) -> &PhaseIndex {
        &self.phases[p.index()]
    }

    /// The prefilters of the conditions (of rules decided late) at head phase `p`.
    pub(crate) fn conditions_at(&self, p: Phase) -> &PhaseIndex {
        &self.condition_index[p.index()]
    }
}

/// How far back before a window's new bytes a raw-stream rule looks: one byte less than the
/// longest match it can have ([`payload::match_span`]), so that a match whose last byte is
/// new is seen whole; [`Limits::stream_overlap`] (at most half a window) when its matches
/// are unbounded. Rules tied to the message start or size look at the message only.
fn stream_lookback(phases: &[CPhase], anchored: bool, dsize: bool, limits: &Limits) -> usize {
    let Some(p) = phases.iter().find(|p| p.phase == Phase::Stream) else {
        return 0;
    };
    // Transforms move positions, so old and new bytes cannot be told apart (raw-stream
    // buffers take none today; kept exact should that change).
    if anchored || dsize || p.buffers.iter().any(|b| !b.transforms.is_empty()) {
        return 0;
    }
    let cap = limits.stream_overlap.min(limits.stream_window / 2);
    let span = match p.buffers.as_slice() {
        [] => Some(0),
        [b] => payload::match_span(&b.items),
        _ => None,
    };
    span.map_or(cap, |s| s.saturating_sub(1).min(cap))
}

/// The directions a rule is compiled for: one for most rules; HTTP rules that name neither
/// a direction nor a one-sided buffer are compiled for requests and for responses.
fn rule_dirs(rule: &Rule) -> Vec<Option<Dir>> {
    if let Some(d) = rule.flow.dir {
        return vec![Some(d)];
    }
    // Rules on the raw payload alone see both directions, whatever the protocol (as a
    // Suricata packet rule: `alert dns … (content:…)` looks at responses too).
    let raw_only =
        !rule.buffers.is_empty() && rule.buffers.iter().all(|b| b.buffer == Buffer::Stream);
    match rule.protocol {
        Protocol::Tcp | Protocol::Udp | Protocol::Ip => vec![None],
        Protocol::Tls | Protocol::Dns if raw_only => vec![None],
        // Mail goes to the server; otherwise what they say is their raw stream, both ways.
        Protocol::Smtp if rule.buffers.iter().any(|b| b.buffer == Buffer::FileData) => {
            vec![Some(Dir::ToServer)]
        }
        Protocol::Smtp | Protocol::Ftp => vec![None],
        // The server's certificates are seen toward the client.
        Protocol::Tls
            if rule
                .buffers
                .iter()
                .any(|b| b.buffer.fixed_dir() == Some(Dir::ToClient)) =>
        {
            vec![Some(Dir::ToClient)]
        }
        Protocol::Tls | Protocol::Dns => vec![Some(Dir::ToServer)],
        Protocol::Http | Protocol::Http1 | Protocol::Http2 => {
            let fixed: Vec<Dir> = rule
                .buffers
                .iter()
                .filter_map(|b| b.buffer.fixed_dir())
                .collect();
            // `file.data` without a direction is the response body (request bodies count
            // as file data only in `to_server` rules).
            let file_data = rule.buffers.iter().any(|b| b.buffer == Buffer::FileData);
            if fixed.contains(&Dir::ToClient) || file_data {
                vec![Some(Dir::ToClient)]
            } else if fixed.contains(&Dir::ToServer) {
                vec![Some(Dir::ToServer)]
            } else {
                vec![Some(Dir::ToServer), Some(Dir::ToClient)]
            }
        }
    }
}

fn compile_phases(rule: &Rule, dir: Option<Dir>) -> Option<Vec<CPhase>> {
    let field_dir = dir.unwrap_or(Dir::ToServer);
    let mut phases: Vec<CPhase> = Vec::new();
    for b in &rule.buffers {
        let field = rule_field(rule, b.buffer, field_dir);
        let items = payload::compile(&b.items)?;
        let phase = field.phase();
        let cb = CBuffer {
            field,
            transforms: b.transforms.clone(),
            items,
        };
        match phases.iter_mut().find(|p| p.phase == phase) {
            Some(p) => p.buffers.push(cb),
            None => phases.push(CPhase {
                phase,
                buffers: vec![cb],
            }),
        }
    }
    if phases.is_empty() {
        // A rule without payload keywords is decided at the first data of its protocol.
        let phase = match rule.protocol {
            Protocol::Tcp | Protocol::Udp | Protocol::Ip | Protocol::Smtp | Protocol::Ftp => {
                Phase::Stream
            }
            p if p.is_http() && field_dir == Dir::ToClient => Phase::Response,
            Protocol::Http | Protocol::Http1 | Protocol::Http2 => Phase::Request,
            Protocol::Tls if field_dir == Dir::ToClient => Phase::TlsServer,
            Protocol::Tls => Phase::Tls,
            Protocol::Dns => Phase::Dns,
        };
        phases.push(CPhase {
            phase,
            buffers: Vec::new(),
        });
    }
    phases.sort_by_key(|p| p.phase);
    Some(phases)
}

/// A rule's buffer as the field it reads: `file.data` of an HTTP request is its files, not
/// its body (in an `smtp` rule it is each attachment, which the inspector hands over as a
/// body of its own).
fn rule_field(rule: &Rule, buffer: Buffer, dir: Dir) -> Field {
    match (buffer, dir) {
        (Buffer::FileData, Dir::ToServer) if rule.protocol.is_http() => Field::ReqFile,
        _ => Field::of(buffer, dir),
    }
}

/// Sort rules into evaluation order: `pass` first, then rules that set flowbits (xbits,
/// `flowint` integers) before the rules that test them, then drop, reject, alert; ties by
/// sid.
fn order_rules(rules: &mut [CRule], bits: usize, xbits: usize, ints: usize) {
    // rank(rule) = 1 + the highest rank of a rule writing a bit it reads (flowbits, then
    // xbits numbered after them, then flowint integers).
    let mut rank = vec![0u32; rules.len()];
    let mut writer_rank = vec![0u32; bits + xbits + ints];
    let xbit = |x: &CXbit| bits + usize::from(x.bit);
    let int = |v: u16| bits + xbits + usize::from(v);
    let reads_xbit = |x: &&CXbit| matches!(x.op, XbitOp::IsSet | XbitOp::IsNotSet);
    for _ in 0..8 {
        let mut changed = false;
        for (i, r) in rules.iter().enumerate() {
            let mut need = 0;
            for c in &r.reads {
                let (BitCond::IsSet { bits, .. } | BitCond::IsNotSet { bits, .. }) = c;
                for b in bits {
                    need = need.max(writer_rank[usize::from(*b)] + 1);
                }
            }
            for x in r.xbits.iter().filter(reads_xbit) {
                need = need.max(writer_rank[xbit(x)] + 1);
            }
            for f in &r.ints {
                let own = (!f.op.changes()).then_some(f.var);
                for v in own.into_iter().chain(f.reads_var()) {
                    need = need.max(writer_rank[int(v)] + 1);
                }
            }
            if need > rank[i] {
                rank[i] = need;
                changed = true;
            }
            for w in &r.writes {
                let (BitOp::Set(b) | BitOp::Unset(b) | BitOp::Toggle(b)) = *w;
                if writer_rank[usize::from(b)] < rank[i] {
                    writer_rank[usize::from(b)] = rank[i];
                    changed = true;
                }
            }
            for x in r.xbits.iter().filter(|x| !reads_xbit(x)) {
                if writer_rank[xbit(x)] < rank[i] {
                    writer_rank[xbit(x)] = rank[i];
                    changed = true;
                }
            }
            for c in r.ints.iter().filter(|c| c.op.changes()) {
                if writer_rank[int(c.var)] < rank[i] {
                    writer_rank[int(c.var)] = rank[i];
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let action_rank = |a: RuleAction| match a {
        RuleAction::Pass => 0,
        RuleAction::Drop => 1,
        RuleAction::Reject => 2,
        RuleAction::Alert => 3,
    };
    type Key = (u8, u32, u8, u32, u32);
    let mut keyed: Vec<(Key, CRule)> = rules
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, r)| {
            let pass = u8::from(r.info.action != RuleAction::Pass);
            (
                (
                    pass,
                    rank[i],
                    action_rank(r.info.action),
                    r.info.sid,
                    i as u32,
                ),
                r,
            )
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    for (slot, (_, r)) in rules.iter_mut().zip(keyed) {
        *slot = r;
    }
}

/// Patterns of one buffer while a phase index is built.
struct PatternGroup {
    field: Field,
    transforms: Vec<Transform>,
    patterns: Vec<Vec<u8>>,
    ids: HashMap<Vec<u8>, usize>,
    rules: Vec<Vec<RuleId>>,
}

/// The index of the rules decided at `phase`; for the raw payload, of those that apply to
/// data in `dir` on flows of `transport`.
fn index_phase(
    rules: &[CRule],
    phase: Phase,
    dir: Option<Dir>,
    transport: Option<Transport>,
) -> PhaseIndex {
    let entries = rules.iter().enumerate().filter_map(|(id, r)| {
        let p = r.phase(phase)?;
        if phase == Phase::Stream && r.dir.is_some() && r.dir != dir {
            return None;
        }
        if r.transport.is_some() && transport.is_some() && r.transport != transport {
            return None;
        }
        Some((id as RuleId, p))
    });
    index_entries(entries)
}

/// Prefilters for `entries` (rules, or conditions, with their buffers at one phase), each
/// on its fast pattern; those without one are always checked.
fn index_entries<'a>(entries: impl Iterator<Item = (RuleId, &'a CPhase)>) -> PhaseIndex {
    let mut groups: Vec<PatternGroup> = Vec::new();
    let mut always = Vec::new();
    for (id, p) in entries {
        let Some((field, transforms, pat, _)) = fast_pattern(p) else {
            always.push(id);
            continue;
        };
        // Patterns are matched case-insensitively, so deduplicated that way.
        let key = pat.to_ascii_lowercase();
        let g = match groups
            .iter()
            .position(|g| g.field == field && g.transforms == transforms)
        {
            Some(i) => &mut groups[i],
            None => {
                groups.push(PatternGroup {
                    field,
                    transforms,
                    patterns: Vec::new(),
                    ids: HashMap::new(),
                    rules: Vec::new(),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        let pid = match g.ids.get(&key) {
            Some(&pid) => pid,
            None => {
                g.patterns.push(key.clone());
                g.rules.push(Vec::new());
                g.ids.insert(key, g.patterns.len() - 1);
                g.patterns.len() - 1
            }
        };
        g.rules[pid].push(id);
    }
    let prefilters = groups
        .into_iter()
        .filter_map(|g| {
            let max_len = g.patterns.iter().map(Vec::len).max().unwrap_or(0);
            // Bulk buffers (raw stream, bodies) get a DFA: overlapping search (every pattern
            // that occurs) gains little from the NFA's skip-ahead prefilters, and the DFA is
            // several times faster per byte. Short buffers (URI, host, SNI, …) keep the
            // smaller NFA: with thousands of patterns a DFA costs tens of MB.
            let bulk = matches!(
                g.field,
                Field::Stream | Field::ReqBody | Field::ReqFile | Field::RespBody
            );
            #[cfg(feature = "hyperscan")]
            let hyperscan = bulk
                .then(|| crate::hs::Literals::build(&g.patterns))
                .flatten()
                .map(|hs| Matcher::Hyperscan(Arc::new(hs)));
            #[cfg(not(feature = "hyperscan"))]
            let hyperscan = None;
            let matcher = match hyperscan {
                Some(m) => m,
                None => Matcher::AhoCorasick(
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .kind(bulk.then_some(AhoCorasickKind::DFA))
                        .build(&g.patterns)
                        .ok()?,
                ),
            };
            Some(Prefilter {
                field: g.field,
                transforms: g.transforms,
                matcher,
                rules: g.rules,
                max_len,
            })
        })
        .collect();
    PhaseIndex { prefilters, always }
}

/// The pattern a rule is prefiltered on at a phase: its `fast_pattern` content, else the
/// longest content that must be present; and whether `fast_pattern` chose it.
fn fast_pattern(p: &CPhase) -> Option<(Field, Vec<Transform>, Vec<u8>, bool)> {
    let mut best: Option<(Field, Vec<Transform>, Vec<u8>, bool)> = None;
    for b in &p.buffers {
        for item in &b.items {
            let CItem::Content(c) = item else {
                continue;
            };
            let Some((pattern, chosen)) = c.prefilter_pattern() else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((_, _, bp, was)) => {
                    (chosen && !was) || (chosen == *was && pattern.len() > bp.len())
                }
            };
            if better {
                best = Some((b.field, b.transforms.clone(), pattern, chosen));
            }
        }
    }
    best
}

/// How many of a rule's first phases are decided late ([`CRule::conditions`]): those before
/// the phase with its best pattern (`fast_pattern`, else the longest, as Suricata picks one
/// across all of a rule's buffers), when they are HTTP heads and that phase comes later in
/// the same transaction. Without this, a rule is prefiltered on its first phase's pattern,
/// often weak: ET Open has 910 rules whose request pattern is the method and 380 whose
/// response pattern is the status code, checked on most transactions.
fn late_entry(phases: &[CPhase]) -> usize {
    let best = phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| fast_pattern(p).map(|(_, _, pat, chosen)| (chosen, pat.len(), i)))
        // The earliest of equals: no reason to wait.
        .max_by_key(|&(chosen, len, i)| (chosen, len, std::cmp::Reverse(i)));
    let Some((_, _, k)) = best else {
        return 0;
    };
    let heads = phases[..k]
        .iter()
        .all(|p| matches!(p.phase, Phase::Request | Phase::Response));
    let http = matches!(
        phases[k].phase,
        Phase::RequestBody | Phase::Response | Phase::ResponseBody
    );
    if heads && http { k } else { 0 }
}

/// The conditions of rules decided late, each kept once: rules that test the same head
/// buffers the same way share one (compared as parsed, since compiled keywords are not
/// comparable).
#[derive(Default)]
struct ConditionTable {
    phases: Vec<CPhase>,
    /// Per phase and direction, the conditions with their parsed buffers.
    seen: HashMap<(Phase, Dir), Vec<(CondId, ParsedBuffers)>>,
}

type ParsedBuffers = Vec<crate::rule::BufferMatch>;

impl ConditionTable {
    /// The condition for `phase`, compiled from `rule`'s buffers of that phase.
    fn intern(&mut self, phase: CPhase, rule: &Rule, dir: Dir) -> CondId {
        let parsed: Vec<_> = rule
            .buffers
            .iter()
            .filter(|b| rule_field(rule, b.buffer, dir).phase() == phase.phase)
            .cloned()
            .collect();
        let known = self.seen.entry((phase.phase, dir)).or_default();
        if let Some((id, _)) = known.iter().find(|(_, b)| *b == parsed) {
            return *id;
        }
        let id = self.phases.len() as CondId;
        known.push((id, parsed));
        self.phases.push(phase);
        id
    }
}
