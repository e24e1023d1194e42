//! Suricata rules as parsed: the header, the options eastwall understands, and the reasons a
//! rule is skipped or rejected.
//!
//! A rule is read in three steps: [`parse`] splits a rules text into rules (continuation
//! lines, comments) and each rule into header and options; options are interpreted into the
//! types below (content strings in [`content`], PCRE translated to the `regex` crate in
//! [`pcre`]). A rule using a keyword eastwall does not implement is [`Skipped`] with a
//! groupable [`SkipReason`]; a malformed rule is a [`RuleError`] with line and column.
//! Neither stops the rest of the text from loading.

pub(crate) mod content;
pub(crate) mod header;
pub(crate) mod parse;
pub(crate) mod pcre;

pub use self::pcre::Expr;

use std::fmt;

pub use self::header::{AddrExpr, ExprError, PortExpr};
pub use self::parse::{Parsed, parse_rules};

/// What a matching rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleAction {
    /// Record an alert.
    Alert,
    /// Drop the traffic (in prevent mode) and record an alert.
    Drop,
    /// Reset the connection (in prevent mode) and record an alert.
    Reject,
    /// Stop inspecting the flow; nothing is blocked.
    Pass,
}

impl RuleAction {
    /// The word Suricata writes in EVE `alert.action` for an alert from this rule in IDS
    /// mode: drop and reject rules are reported as `blocked` only when the node blocks, so
    /// the engine reports the rule's own word.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Alert => "alert",
            RuleAction::Drop => "drop",
            RuleAction::Reject => "reject",
            RuleAction::Pass => "pass",
        }
    }
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule inspects: the raw payload of a transport, or an application protocol
/// (named in the header, or implied by the rule's buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Any TCP stream (`tcp`, `tcp-stream`, `tcp-pkt`).
    Tcp,
    /// Any UDP datagram (`udp`), each on its own.
    Udp,
    /// TCP streams and UDP datagrams alike (`ip`; other IP protocols are not inspected).
    Ip,
    /// HTTP/1 or HTTP/2 (`http`).
    Http,
    /// HTTP/1 only (`http1`).
    Http1,
    /// HTTP/2 only (`http2`).
    Http2,
    /// TLS (`tls`).
    Tls,
    /// DNS, over UDP or TCP (`dns`).
    Dns,
    /// SMTP (`smtp`): its raw stream.
    Smtp,
    /// FTP's control connection (`ftp`): its raw stream.
    Ftp,
}

impl Protocol {
    /// The header keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Ip => "ip",
            Protocol::Http => "http",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Dns => "dns",
            Protocol::Smtp => "smtp",
            Protocol::Ftp => "ftp",
        }
    }

    /// Whether it is HTTP of any version.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http1 | Protocol::Http2)
    }

    /// The transport rules of this protocol run on, `None` for both.
    pub(crate) fn transport(self) -> Option<Transport> {
        match self {
            Protocol::Tcp
            | Protocol::Http
            | Protocol::Http1
            | Protocol::Http2
            | Protocol::Tls
            | Protocol::Smtp
            | Protocol::Ftp => Some(Transport::Tcp),
            Protocol::Udp => Some(Transport::Udp),
            Protocol::Ip | Protocol::Dns => None,
        }
    }
}

/// The transport of a flow: a TCP connection, or a UDP session (the datagrams between two
/// endpoints, the client being the one that sent the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP: the node feeds the reassembled byte stream of each direction.
    Tcp,
    /// UDP: the node feeds each datagram's payload.
    Udp,
}

impl Transport {
    /// As EVE writes `proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

/// One side of a rule header is matched in which orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderDirection {
    /// `->`: source matches the sender of the data.
    Forward,
    /// `<>`: either orientation.
    Both,
}

/// A direction of a flow, seen from its client: the end that opened the TCP connection, or
/// that sent the first datagram of the UDP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Dir {
    /// The other direction.
    pub fn reverse(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }

    /// `to_server` / `to_client`, as EVE writes `direction`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::ToServer => "to_server",
            Dir::ToClient => "to_client",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Dir::ToServer => 0,
            Dir::ToClient => 1,
        }
    }
}

/// The `flow` keyword.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowOptions {
    /// Only this direction (`to_server`/`from_client`, `to_client`/`from_server`).
    pub dir: Option<Dir>,
    /// `established` was given: always true on the TCP streams eastwall inspects; on UDP,
    /// true once a datagram went each way (the current one counts).
    pub established: bool,
}

/// A buffer a rule's payload keywords inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Buffer {
    /// The raw payload (no sticky buffer): the reassembled byte stream of one direction of
    /// a TCP connection, or one UDP datagram.
    Stream,
    /// `http.uri`: the normalized request target (path and query).
    HttpUri,
    /// `http.uri.raw`: the request target as sent.
    HttpUriRaw,
    /// `http.method`.
    HttpMethod,
    /// `http.request_line`: `GET /x HTTP/1.1`.
    HttpRequestLine,
    /// `http.request_body` / `http_client_body`.
    HttpRequestBody,
    /// `http.header`: `Name: value\r\n` per header, without cookies (direction of the rule).
    HttpHeader,
    /// `http.header.raw`: the headers as received.
    HttpHeaderRaw,
    /// `http.header_names`: `\r\nName\r\nName\r\n\r\n`.
    HttpHeaderNames,
    /// `http.cookie`: the `Cookie` (request) or `Set-Cookie` (response) value.
    HttpCookie,
    /// `http.user_agent`.
    HttpUserAgent,
    /// `http.host`: the host, lower-cased, without port.
    HttpHost,
    /// `http.host.raw`: the `Host` header as sent.
    HttpHostRaw,
    /// `http.accept`.
    HttpAccept,
    /// `http.accept_enc`.
    HttpAcceptEnc,
    /// `http.accept_lang`.
    HttpAcceptLang,
    /// `http.connection`.
    HttpConnection,
    /// `http.content_type` (direction of the rule).
    HttpContentType,
    /// `http.content_len` (direction of the rule).
    HttpContentLen,
    /// `http.referer`.
    HttpReferer,
    /// `http.protocol`: `HTTP/1.1` (direction of the rule).
    HttpProtocol,
    /// `http.start`: start line, headers and the empty line (direction of the rule).
    HttpStart,
    /// Payload keywords of an `http` rule (no sticky buffer): the message head as received,
    /// start line and header lines through the empty line, where Suricata reads them on the
    /// raw stream (direction of the rule).
    HttpHead,
    /// `http.stat_code`.
    HttpStatCode,
    /// `http.stat_msg`.
    HttpStatMsg,
    /// `http.response_line`: `HTTP/1.1 200 OK`.
    HttpResponseLine,
    /// `http.location`.
    HttpLocation,
    /// `http.server`.
    HttpServer,
    /// `http.response_body`.
    HttpResponseBody,
    /// `file.data` / `file_data`: the response body, or the request body in `to_server`
    /// rules.
    FileData,
    /// `tls.sni`.
    TlsSni,
    /// `tls.cert_subject`: the server certificate's subject (`C=US, O=…, CN=…`).
    TlsCertSubject,
    /// `tls.cert_issuer`: its issuer.
    TlsCertIssuer,
    /// `tls.cert_serial`: its serial number (`0A:E1:…`).
    TlsCertSerial,
    /// `tls.certs`: each certificate of the server's chain (DER), one at a time.
    TlsCerts,
    /// `tls.cert_fingerprint`: SHA-1 of the server's certificate (`4a:a3:…`).
    TlsCertFingerprint,
    /// `ja3.hash` / `ja3_hash`: MD5 of the client's JA3 string, lower-case hex.
    Ja3Hash,
    /// `ja3.string`: the client's JA3 string.
    Ja3String,
    /// `ja3s.hash`: MD5 of the server's JA3S string.
    Ja3sHash,
    /// `ja3s.string`: the server's JA3S string.
    Ja3sString,
    /// `ja4.hash`: the client's JA4 fingerprint.
    Ja4Hash,
    /// `dns.query`: the query name, dotted.
    DnsQuery,
}

impl Buffer {
    /// The keyword that selects this buffer.
    pub fn keyword(self) -> &'static str {
        match self {
            Buffer::Stream => "payload",
            Buffer::HttpUri => "http.uri",
            Buffer::HttpUriRaw => "http.uri.raw",
            Buffer::HttpMethod => "http.method",
            Buffer::HttpRequestLine => "http.request_line",
            Buffer::HttpRequestBody => "http.request_body",
            Buffer::HttpHeader => "http.header",
            Buffer::HttpHeaderRaw => "http.header.raw",
            Buffer::HttpHeaderNames => "http.header_names",
            Buffer::HttpCookie => "http.cookie",
            Buffer::HttpUserAgent => "http.user_agent",
            Buffer::HttpHost => "http.host",
            Buffer::HttpHostRaw => "http.host.raw",
            Buffer::HttpAccept => "http.accept",
            Buffer::HttpAcceptEnc => "http.accept_enc",
            Buffer::HttpAcceptLang => "http.accept_lang",
            Buffer::HttpConnection => "http.connection",
            Buffer::HttpContentType => "http.content_type",
            Buffer::HttpContentLen => "http.content_len",
            Buffer::HttpReferer => "http.referer",
            Buffer::HttpProtocol => "http.protocol",
            Buffer::HttpStart => "http.start",
            Buffer::HttpHead => "payload (http head)",
            Buffer::HttpStatCode => "http.stat_code",
            Buffer::HttpStatMsg => "http.stat_msg",
            Buffer::HttpResponseLine => "http.response_line",
            Buffer::HttpLocation => "http.location",
            Buffer::HttpServer => "http.server",
            Buffer::HttpResponseBody => "http.response_body",
            Buffer::FileData => "file.data",
            Buffer::TlsSni => "tls.sni",
            Buffer::TlsCertSubject => "tls.cert_subject",
            Buffer::TlsCertIssuer => "tls.cert_issuer",
            Buffer::TlsCertSerial => "tls.cert_serial",
            Buffer::TlsCerts => "tls.certs",
            Buffer::TlsCertFingerprint => "tls.cert_fingerprint",
            Buffer::Ja3Hash => "ja3.hash",
            Buffer::Ja3String => "ja3.string",
            Buffer::Ja3sHash => "ja3s.hash",
            Buffer::Ja3sString => "ja3s.string",
            Buffer::Ja4Hash => "ja4.hash",
            Buffer::DnsQuery => "dns.query",
        }
    }

    /// The direction a buffer exists in, when it exists in one only.
    pub fn fixed_dir(self) -> Option<Dir> {
        use Buffer::*;
        match self {
            HttpUri | HttpUriRaw | HttpMethod | HttpRequestLine | HttpRequestBody
            | HttpUserAgent | HttpHost | HttpHostRaw | HttpAccept | HttpAcceptEnc
            | HttpAcceptLang | HttpReferer | TlsSni | Ja3Hash | Ja3String | Ja4Hash | DnsQuery => {
                Some(Dir::ToServer)
            }
            HttpStatCode | HttpStatMsg | HttpResponseLine | HttpLocation | HttpServer
            | HttpResponseBody | TlsCertSubject | TlsCertIssuer | TlsCertSerial | TlsCerts
            | TlsCertFingerprint | Ja3sHash | Ja3sString => Some(Dir::ToClient),
            Stream | HttpHeader | HttpHeaderRaw | HttpHeaderNames | HttpCookie | HttpConnection
            | HttpContentType | HttpContentLen | HttpProtocol | HttpStart | HttpHead | FileData => {
                None
            }
        }
    }

    /// The application protocol the buffer belongs to, if any.
    pub(crate) fn protocol(self) -> Option<Protocol> {
        match self {
            Buffer::Stream => None,
            Buffer::TlsSni
            | Buffer::TlsCertSubject
            | Buffer::TlsCertIssuer
            | Buffer::TlsCertSerial
            | Buffer::TlsCerts
            | Buffer::TlsCertFingerprint
            | Buffer::Ja3Hash
            | Buffer::Ja3String
            | Buffer::Ja3sHash
            | Buffer::Ja3sString
            | Buffer::Ja4Hash => Some(Protocol::Tls),
            Buffer::DnsQuery => Some(Protocol::Dns),
            _ => Some(Protocol::Http),
        }
    }
}

/// A transformation applied to a sticky buffer before matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transform {
    /// `dotprefix`: prepend a `.`.
    DotPrefix,
    /// `to_lowercase`.
    ToLowercase,
    /// `to_uppercase`.
    ToUppercase,
    /// `strip_whitespace`: remove all ASCII whitespace.
    StripWhitespace,
    /// `compress_whitespace`: collapse runs of whitespace into one space.
    CompressWhitespace,
    /// `url_decode`: decode `%XX` and `+`.
    UrlDecode,
    /// `header_lowercase`: lower-case header names (`Name:` before each `:`).
    HeaderLowercase,
    /// `strip_pseudo_headers`: remove HTTP/2 `:name` lines.
    StripPseudoHeaders,
    /// `to_md5`: the buffer's MD5 digest (16 raw bytes).
    ToMd5,
    /// `to_sha1`: its SHA-1 digest (20 raw bytes).
    ToSha1,
    /// `to_sha256`: its SHA-256 digest (32 raw bytes).
    ToSha256,
}

/// Where a `content` must be, and how it compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The bytes to find.
    pub pattern: Vec<u8>,
    /// `nocase`: ASCII case-insensitive.
    pub nocase: bool,
    /// `content:!"…"`: the bytes must not be present in the window.
    pub negated: bool,
    /// `offset`: earliest start, from the buffer start.
    pub offset: Option<u32>,
    /// `depth`: the match ends within `offset + depth` bytes of the buffer start.
    pub depth: Option<u32>,
    /// `distance`: earliest start relative to the end of the previous match.
    pub distance: Option<i32>,
    /// `within`: the match ends within `distance + within` bytes of the previous match.
    pub within: Option<u32>,
    /// `startswith`: at the start of the buffer.
    pub startswith: bool,
    /// `endswith`: at the end of the buffer.
    pub endswith: bool,
    /// `fast_pattern` chosen by the rule writer; with `Some((offset, len))` only that slice.
    pub fast_pattern: Option<Option<(u16, u16)>>,
    /// `offset`, `depth`, `distance`, `within` given by `byte_extract` variables.
    pub vars: VarRefs,
}

/// Values given by `byte_extract` variables (their numbers in the rule) instead of numbers:
/// the keyword's own field then holds no value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VarRefs {
    /// `offset` (of a content, `byte_test`, `byte_jump`, `isdataat`).
    pub offset: Option<u8>,
    /// `depth`.
    pub depth: Option<u8>,
    /// `distance`.
    pub distance: Option<u8>,
    /// `within`.
    pub within: Option<u8>,
    /// `byte_test`'s value.
    pub value: Option<u8>,
}

impl VarRefs {
    /// Whether any value comes from a variable.
    pub fn any(&self) -> bool {
        self.offset.is_some()
            || self.depth.is_some()
            || self.distance.is_some()
            || self.within.is_some()
            || self.value.is_some()
    }
}

/// `byte_extract`: a number read from the buffer into a variable of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteExtract {
    /// How many bytes to read.
    pub nbytes: u8,
    /// Where to read, from the buffer start or the previous match.
    pub offset: i32,
    /// Relative to the previous match.
    pub relative: bool,
    /// Number format.
    pub format: NumberFormat,
    /// Multiply the value read.
    pub multiplier: u32,
    /// Round the value up to a multiple of this (1: none; 2 or 4).
    pub align: u8,
    /// Mask applied to the value read.
    pub bitmask: Option<u64>,
    /// The variable's number.
    pub var: u8,
}

impl Content {
    /// Whether the position depends on the previous match.
    pub fn is_relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// A `pcre` translated and compiled.
#[derive(Debug, Clone)]
pub struct Pcre {
    /// The rule's text of the expression (`/…/flags`).
    pub source: String,
    /// The compiled expression.
    pub regex: pcre::Expr,
    /// `R`: the match starts after the previous match.
    pub relative: bool,
    /// `pcre:!"…"`: the expression must not match.
    pub negated: bool,
    /// The expression can only match at the end of the buffer (`$`, `\z`), which makes a
    /// match depend on where the buffer ends.
    pub end_anchored: bool,
}

impl PartialEq for Pcre {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.relative == other.relative
            && self.negated == other.negated
    }
}

/// `N`, `<N`, `>N`, `<=N`, `>=N`, `!N`, `N<>M` (exclusive), `N-M` (inclusive) as used by
/// `bsize`, `dsize` and `urilen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeCmp {
    /// Exactly.
    Eq(u64),
    /// Not equal.
    Ne(u64),
    /// Less than.
    Lt(u64),
    /// At most.
    Le(u64),
    /// More than.
    Gt(u64),
    /// At least.
    Ge(u64),
    /// Strictly between.
    Between(u64, u64),
}

impl SizeCmp {
    /// Whether `n` satisfies the comparison.
    pub fn matches(self, n: u64) -> bool {
        match self {
            SizeCmp::Eq(v) => n == v,
            SizeCmp::Ne(v) => n != v,
            SizeCmp::Lt(v) => n < v,
            SizeCmp::Le(v) => n <= v,
            SizeCmp::Gt(v) => n > v,
            SizeCmp::Ge(v) => n >= v,
            SizeCmp::Between(a, b) => n > a && n < b,
        }
    }
}

/// `isdataat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsDataAt {
    /// The offset that must hold data.
    pub offset: u32,
    /// The offset given by a `byte_extract` variable.
    pub vars: VarRefs,
    /// Relative to the end of the previous match.
    pub relative: bool,
    /// `isdataat:!N`: there must be no data there.
    pub negated: bool,
}

/// Byte order for `byte_test` / `byte_jump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Most significant byte first (default).
    Big,
    /// Least significant byte first.
    Little,
}

/// How `byte_test` / `byte_jump` read a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFormat {
    /// Raw bytes in an [`Endian`] order.
    Binary(Endian),
    /// ASCII digits in this base (8, 10, 16).
    String(u32),
}

/// The operator of `byte_test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOp {
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `=`
    Eq,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `&`: any of the bits set.
    And,
    /// `^`: bitwise xor is non-zero.
    Xor,
}

/// `byte_test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteTest {
    /// How many bytes to read (1-8 raw, 1-23 as text; 0 as text: the rest of the buffer).
    pub nbytes: u8,
    /// The comparison.
    pub op: ByteOp,
    /// `!` before the operator.
    pub negated: bool,
    /// The value compared with.
    pub value: u64,
    /// Where to read, from the buffer start or the previous match.
    pub offset: i32,
    /// Relative to the previous match.
    pub relative: bool,
    /// Number format.
    pub format: NumberFormat,
    /// Mask applied before comparing.
    pub bitmask: Option<u64>,
    /// The value or offset given by `byte_extract` variables.
    pub vars: VarRefs,
}

/// `byte_jump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteJump {
    /// How many bytes to read.
    pub nbytes: u8,
    /// Where to read.
    pub offset: i32,
    /// Relative to the previous match.
    pub relative: bool,
    /// Number format.
    pub format: NumberFormat,
    /// Multiply the value read.
    pub multiplier: u32,
    /// Round up to a multiple of 4.
    pub align: bool,
    /// Jump from the buffer start instead of the end of the bytes read.
    pub from_beginning: bool,
    /// Jump from the buffer end.
    pub from_end: bool,
    /// Added after the jump.
    pub post_offset: i32,
    /// Mask applied to the value read.
    pub bitmask: Option<u64>,
    /// The offset given by a `byte_extract` variable.
    pub vars: VarRefs,
}

/// One payload keyword, in rule order within its buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchItem {
    /// `content`.
    Content(Content),
    /// `pcre`.
    Pcre(Pcre),
    /// `isdataat`.
    IsDataAt(IsDataAt),
    /// `bsize` (and `urilen`, on the URI buffers).
    Bsize(SizeCmp),
    /// `byte_test`.
    ByteTest(ByteTest),
    /// `byte_jump`.
    ByteJump(ByteJump),
    /// `byte_extract`.
    ByteExtract(ByteExtract),
    /// `base64_decode`, and the `base64_data` keywords after it.
    Base64(Base64),
}

/// `base64_decode:[bytes N][, offset N][, relative]` and what `base64_data` matches in the
/// decoded bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Base64 {
    /// `bytes`: at most this many characters are decoded (`None`: to the buffer's end).
    pub bytes: Option<u32>,
    /// `offset`: characters skipped first.
    pub offset: u32,
    /// `relative`: from the end of the previous match.
    pub relative: bool,
    /// The `base64_data` keywords, in rule order.
    pub items: Vec<MatchItem>,
}

/// The payload keywords of one buffer (with its transforms) in a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferMatch {
    /// Which buffer.
    pub buffer: Buffer,
    /// Transforms, in order.
    pub transforms: Vec<Transform>,
    /// The keywords, in rule order.
    pub items: Vec<MatchItem>,
}

/// A `flowbits` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flowbit {
    /// `set,name`.
    Set(String),
    /// `unset,name`.
    Unset(String),
    /// `toggle,name`.
    Toggle(String),
    /// `isset,a|b` (any) or `isset,a&b` (all).
    IsSet(FlowbitExpr),
    /// `isnotset,a|b` (any not set) or `isnotset,a&b` (none set).
    IsNotSet(FlowbitExpr),
}

/// Names tested by `isset` / `isnotset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowbitExpr {
    /// The bit names.
    pub names: Vec<String>,
    /// `&`-joined (all) rather than `|`-joined (any).
    pub all: bool,
}

/// Who a threshold counts (`track`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// Per source address of the matching data.
    BySrc,
    /// Per destination address.
    ByDst,
    /// Per source-destination pair.
    ByBoth,
    /// One counter for the rule.
    ByRule,
}

/// `threshold` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKind {
    /// Alert on the first `count` matches per period.
    Limit,
    /// Alert on every `count`-th match per period.
    Threshold,
    /// Alert once per period after `count` matches.
    Both,
}

/// `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    /// Type.
    pub kind: ThresholdKind,
    /// Counted per.
    pub track: Track,
    /// Count.
    pub count: u32,
    /// Period in seconds.
    pub seconds: u32,
}

/// `detection_filter`: alert on every match after `count` matches in `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionFilter {
    /// Counted per.
    pub track: Track,
    /// Matches before alerting.
    pub count: u32,
    /// Period in seconds.
    pub seconds: u32,
}

/// One rule eastwall can evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The name of the text it came from (a file name).
    pub source: String,
    /// First line of the rule in that text (1-based).
    pub line: u32,
    /// Action.
    pub action: RuleAction,
    /// Protocol.
    pub protocol: Protocol,
    /// The transport the rule applies to; `None` for both (`ip` rules, and `dns` rules
    /// whose header does not name `tcp` or `udp`).
    pub transport: Option<Transport>,
    /// Source addresses.
    pub src: AddrExpr,
    /// Source ports.
    pub src_ports: PortExpr,
    /// `->` or `<>`.
    pub direction: HeaderDirection,
    /// Destination addresses.
    pub dst: AddrExpr,
    /// Destination ports.
    pub dst_ports: PortExpr,
    /// `gid` (1 unless given).
    pub gid: u32,
    /// `sid`.
    pub sid: u32,
    /// `rev` (0 unless given).
    pub rev: u32,
    /// `msg`.
    pub msg: String,
    /// `classtype`.
    pub classtype: Option<String>,
    /// `priority`, overriding the classtype's.
    pub priority: Option<u8>,
    /// `metadata` as key/value pairs, in rule order.
    pub metadata: Vec<(String, String)>,
    /// `reference` values (`type,id`).
    pub references: Vec<String>,
    /// `flow`.
    pub flow: FlowOptions,
    /// Payload keywords per buffer, in order of first use.
    pub buffers: Vec<BufferMatch>,
    /// `dsize`: the size of a UDP datagram's payload, or of the current message of a TCP
    /// stream (see `docs/IDS.md`).
    pub dsize: Option<SizeCmp>,
    /// `flowbits` commands, in rule order.
    pub flowbits: Vec<Flowbit>,
    /// `flowbits:noalert` or `noalert`.
    pub noalert: bool,
    /// `threshold`.
    pub threshold: Option<Threshold>,
    /// `detection_filter`.
    pub detection_filter: Option<DetectionFilter>,
    /// `tls.version`: the TLS version of the data's direction (the client's hello, the
    /// server's), as its number (`0x0303` for 1.2).
    pub tls_version: Option<u16>,
    /// `stream_size`.
    pub stream_size: Option<StreamSize>,
    /// `xbits` commands, in rule order.
    pub xbits: Vec<Xbit>,
    /// `flowint` commands, in rule order.
    pub flowints: Vec<Flowint>,
}

/// `flowint:<name>,<op>[,<value|name>]`: an unsigned 32-bit integer kept per flow, changed
/// when the rule matches (`=`, `+`, `-`) or tested for it to match (the comparisons,
/// `isset`, `notset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flowint {
    /// The integer's name.
    pub name: String,
    /// What to do or test.
    pub op: FlowintOp,
    /// The other operand.
    pub target: FlowintTarget,
}

/// `flowint` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowintOp {
    /// `=`.
    Set,
    /// `+` (on an integer not set yet: set to the value).
    Add,
    /// `-` (on an integer not set yet: nothing).
    Sub,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `>=`.
    Ge,
    /// `>`.
    Gt,
    /// `isset`.
    IsSet,
    /// `notset` (also `isnotset`).
    NotSet,
}

impl FlowintOp {
    /// Whether it changes the integer once the rule matched (else it is a condition).
    pub fn changes(self) -> bool {
        matches!(self, FlowintOp::Set | FlowintOp::Add | FlowintOp::Sub)
    }
}

/// The other operand of a `flowint` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowintTarget {
    /// None (`isset`, `notset`).
    None,
    /// A number.
    Value(u32),
    /// Another integer of the flow (0 while it is not set).
    Var(String),
}

/// `xbits:<op>,<name>,track <ip_src|ip_dst|ip_pair>[,expire <seconds>]`: a bit on a host or
/// a pair of hosts, shared by all flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xbit {
    /// What to do or test.
    pub op: XbitOp,
    /// The bit's name.
    pub name: String,
    /// Whose bit.
    pub track: XbitTrack,
    /// Seconds a set bit lives (Suricata's default is 30).
    pub expire: u32,
}

/// `xbits` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XbitOp {
    /// `set`.
    Set,
    /// `unset`.
    Unset,
    /// `toggle`.
    Toggle,
    /// `isset`.
    IsSet,
    /// `isnotset`.
    IsNotSet,
}

/// Whose bit an `xbits` command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XbitTrack {
    /// The source address of the matching data.
    IpSrc,
    /// Its destination address.
    IpDst,
    /// The two addresses, whichever way the data flows.
    IpPair,
}

/// `stream_size:<side>,<op>,<n>`: how much a TCP connection's sides have sent, counted as
/// Suricata counts sequence space (the SYN is one, then each byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSize {
    /// Whose bytes.
    pub side: StreamSide,
    /// The comparison.
    pub cmp: SizeCmp,
}

/// The sides `stream_size` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSide {
    /// What the client sent.
    Client,
    /// What the server sent.
    Server,
    /// Both must compare true.
    Both,
    /// Either may.
    Either,
}

/// Why a well-formed rule is not loaded: a kind to group by and what exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkipReason {
    /// The kind of reason.
    pub kind: SkipKind,
    /// What exactly (a keyword, a protocol, a PCRE construct), for grouping.
    pub what: String,
}

impl SkipReason {
    pub(crate) fn new(kind: SkipKind, what: impl Into<String>) -> Self {
        SkipReason {
            kind,
            what: what.into(),
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.what)
    }
}

/// Kinds of [`SkipReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SkipKind {
    /// The header names a protocol eastwall does not inspect (it inspects TCP streams and
    /// UDP datagrams, and HTTP, TLS and DNS on them).
    Protocol,
    /// A keyword eastwall does not implement.
    Keyword,
    /// A keyword value eastwall does not implement (e.g. `flow:not_established`).
    KeywordValue,
    /// A transform eastwall does not implement.
    Transform,
    /// A PCRE construct the `regex` crate cannot express (backreferences, lookaround).
    Pcre,
    /// The rule mixes the raw stream with application-layer buffers.
    MixedBuffers,
    /// The rule is disabled for this engine (a variable is undefined, …).
    Unresolved,
}

impl fmt::Display for SkipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipKind::Protocol => "protocol not inspected",
            SkipKind::Keyword => "unsupported keyword",
            SkipKind::KeywordValue => "unsupported keyword value",
            SkipKind::Transform => "unsupported transform",
            SkipKind::Pcre => "pcre feature",
            SkipKind::MixedBuffers => "mixes payload and app-layer buffers",
            SkipKind::Unresolved => "unresolved",
        })
    }
}

/// A well-formed rule that is not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The text's name.
    pub source: String,
    /// First line of the rule.
    pub line: u32,
    /// The rule's sid, when it was read.
    pub sid: Option<u32>,
    /// Why.
    pub reason: SkipReason,
}

/// A malformed rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The text's name.
    pub source: String,
    /// Line (1-based).
    pub line: u32,
    /// Column (1-based, in characters).
    pub col: u32,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.col, self.message
        )
    }
}

// Not `thiserror`: its derive takes a field named `source` for the error's cause.
impl std::error::Error for RuleError {}
