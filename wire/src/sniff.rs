//! Protocol detection on the first bytes a client sends: HTTP/1.x, HTTP/2 with prior
//! knowledge, TLS (with its ClientHello: SNI, ALPN, versions), or opaque TCP.
//!
//! Pure and sans-I/O. The node keeps a [`Sniffer`] per connection and gives it everything the client
//! has sent so far after each read ([`sniff`] is the one-shot form); the answer is
//! [`Sniff::NeedMore`] or a decision. Decisions are stable: once `sniff(p)` is `Done(x)`,
//! every longer input starting with `p` gives `Done(x)` too, and a decision comes at the latest
//! after [`MAX_SNIFF`] bytes. When the client sends nothing (server-first protocols: SMTP,
//! MySQL, SSH banners) or stops early, the node waits at most a configurable time
//! ([`DEFAULT_FIRST_BYTES_WAIT`]) and then takes [`Sniffer::finish`] ([`sniff_final`]).
//!
//! ```text
//! first byte 0x16, then 0x03 0x01..=0x04  -> TLS record: parse_client_hello (reassembled
//!                                            across records) -> Tls | TlsUnreadable
//! "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"       -> Http2
//! token SP target SP "HTTP/1." DIGIT CRLF -> Http1 (LF alone accepted, as servers do)
//! anything else                           -> Opaque (SSLv2 hellos, other TLS records too)
//! ```

use std::time::Duration;

/// Bytes after which [`sniff`] always decides. It holds a ClientHello of [`MAX_CLIENT_HELLO`]
/// bytes with 4 KiB to spare for the headers of a hello split into many records, and a request
/// line more than twice as long as the 8 KiB that common HTTP servers accept (nginx, Apache);
/// the node buffers at most this much per connection while it sniffs.
pub const MAX_SNIFF: usize = 20 * 1024;

/// Largest ClientHello handshake message (4-byte header included) that is read: one maximal
/// TLS record fragment (2^14). Real ones are far smaller: 1.5 KiB from rustls with an
/// X25519MLKEM768 key share, 0.2 to 0.6 KiB from OpenSSL 3.0 and curl.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// How long to wait for a client's first bytes before taking the connection for a
/// server-first protocol (opaque TCP). Client-first protocols send at once; the wait delays
/// every connection of a server-first protocol by this much, and a client slower than this to
/// send its first request is taken for opaque.
pub const DEFAULT_FIRST_BYTES_WAIT: Duration = Duration::from_millis(500);

/// Longest HTTP method accepted; the longest registered one, `UPDATEREDIRECTREF`, has 17.
const MAX_METHOD: usize = 32;

/// The HTTP/2 connection preface a prior-knowledge client starts with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER: usize = 5;
/// Largest TLS record fragment (RFC 8446, 5.1).
const MAX_FRAGMENT: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_GROUPS: u16 = 10;
const EXT_EC_POINT_FORMATS: u16 = 11;
const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What the first bytes of a connection say it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A TLS handshake whose ClientHello was read.
    Tls(Box<ClientHello>),
    /// A TLS handshake record whose ClientHello could not be read (too large, malformed,
    /// incomplete): TLS without SNI or ALPN, so no rule on either matches it.
    TlsUnreadable(ClientHelloError),
    /// Anything else: opaque TCP.
    Opaque,
}

/// The answer of [`sniff`] for the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// A valid beginning of something it can recognise: read more.
    NeedMore,
    /// Decided; more bytes would not change it.
    Done(Sniffed),
}

/// What a TLS ClientHello says (RFC 8446, 4.1.2; RFC 5246, 7.4.1.2). Lists keep the client's
/// order and any GREASE values (RFC 8701), as fingerprints (JA3, JA4) need them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// `legacy_version` (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// The `supported_versions` extension (TLS 1.3 clients), empty without it.
    pub supported_versions: Vec<u16>,
    /// The `server_name` host name: a plausible DNS name, lower-cased.
    pub sni: Option<String>,
    /// The `server_name` host name exactly as sent, valid or not (what an IDS matches).
    pub sni_raw: Option<Vec<u8>>,
    /// Protocols offered by ALPN (`h2`, `http/1.1`, ...), in the client's order.
    pub alpn: Vec<String>,
    /// Offered cipher suites.
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    /// The `supported_groups` extension.
    pub supported_groups: Vec<u16>,
    /// The `signature_algorithms` extension.
    pub signature_algorithms: Vec<u16>,
    /// The `ec_point_formats` extension.
    pub ec_point_formats: Vec<u8>,
}

impl ClientHello {
    /// Highest TLS version offered: from `supported_versions` (GREASE skipped) if present,
    /// else `legacy_version`.
    pub fn max_version(&self) -> u16 {
        self.supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.legacy_version)
    }

    /// What a client with these fields sends: the hello in one TLS handshake record, its
    /// extensions in the order of `extensions` (those without a field here go empty; a
    /// listed `server_name` names `sni_raw`, else `sni`, else `localhost`), random and
    /// session id fixed.
    /// [`parse_client_hello`] reads it back as `self`; test and corpus tools build hellos
    /// with it.
    pub fn to_record(&self) -> Vec<u8> {
        fn vec16(b: &[u8]) -> Vec<u8> {
            let mut v = (b.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(b);
            v
        }
        fn u16s(values: &[u16]) -> Vec<u8> {
            values.iter().flat_map(|v| v.to_be_bytes()).collect()
        }
        let mut block = Vec::new();
        for &kind in &self.extensions {
            let data = match kind {
                EXT_SERVER_NAME => {
                    let name = match (&self.sni_raw, &self.sni) {
                        (Some(raw), _) => raw.as_slice(),
                        (None, Some(sni)) => sni.as_bytes(),
                        (None, None) => b"localhost",
                    };
                    let mut entry = vec![0];
                    entry.extend(vec16(name));
                    vec16(&entry)
                }
                EXT_ALPN => {
                    let mut list = Vec::new();
                    for name in &self.alpn {
                        let bytes: Vec<u8> = name.chars().map(|c| c as u8).collect();
                        list.push(bytes.len() as u8);
                        list.extend(bytes);
                    }
                    vec16(&list)
                }
                EXT_SUPPORTED_VERSIONS => {
                    let list = u16s(&self.supported_versions);
                    let mut v = vec![list.len() as u8];
                    v.extend(list);
                    v
                }
                EXT_SUPPORTED_GROUPS => vec16(&u16s(&self.supported_groups)),
                EXT_SIGNATURE_ALGORITHMS => vec16(&u16s(&self.signature_algorithms)),
                EXT_EC_POINT_FORMATS => {
                    let mut v = vec![self.ec_point_formats.len() as u8];
                    v.extend(&self.ec_point_formats);
                    v
                }
                _ => Vec::new(),
            };
            block.extend(kind.to_be_bytes());
            block.extend(vec16(&data));
        }
        let mut body = self.legacy_version.to_be_bytes().to_vec();
        body.extend([0x5a; 32]);
        body.push(0);
        body.extend(vec16(&u16s(&self.cipher_suites)));
        body.extend([1, 0]);
        if !self.extensions.is_empty() {
            body.extend(vec16(&block));
        }
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let mut record = vec![CONTENT_HANDSHAKE, 3, 1];
        record.extend((msg.len() as u16).to_be_bytes());
        record.extend(msg);
        record
    }
}

/// Why a ClientHello could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientHelloError {
    /// A record is not a handshake record.
    #[error("TLS record of content type {0} where a handshake record (22) was expected")]
    NotHandshake(u8),
    /// A record's version is not 0x0301..=0x0304.
    #[error("TLS record version {0:#06x} is not 0x0301..=0x0304")]
    RecordVersion(u16),
    /// A handshake record with no bytes (forbidden by RFC 8446, 5.1).
    #[error("empty TLS handshake record")]
    EmptyRecord,
    /// A record longer than 2^14 bytes.
    #[error("TLS record of {0} bytes exceeds 2^14")]
    RecordTooLong(usize),
    /// The first handshake message is not a ClientHello.
    #[error("handshake message type {0} is not ClientHello (1)")]
    NotClientHello(u8),
    /// The ClientHello declares more than [`MAX_CLIENT_HELLO`] bytes.
    #[error("ClientHello of {0} bytes exceeds the limit of {MAX_CLIENT_HELLO}")]
    TooLarge(usize),
    /// The ClientHello is not complete within [`MAX_SNIFF`] bytes of records.
    #[error("ClientHello not complete within {MAX_SNIFF} bytes of TLS records")]
    TooFragmented,
    /// The client stopped sending before its ClientHello was complete.
    #[error("the client stopped before its ClientHello was complete")]
    Incomplete,
    /// A field runs past the end of what contains it.
    #[error("ClientHello field {0} runs past its end")]
    Truncated(&'static str),
    /// A field has a length or value the protocol forbids.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// An extension appears twice (RFC 8446, 4.2).
    #[error("ClientHello repeats extension {0}")]
    DuplicateExtension(u16),
    /// The SNI host name is not a plausible DNS name. The hello is read all the same (its
    /// `sni` empty, `sni_raw` the name as sent), for those who only look at it.
    #[error("ClientHello server name is not a DNS host name")]
    InvalidServerName(Box<ClientHello>),
    /// An ALPN protocol name is empty or not printable ASCII.
    #[error("ClientHello ALPN protocol name is empty or not printable ASCII")]
    InvalidAlpn,
}

/// Looks at the first bytes the client sent (all of them so far). Bounded: decides at the
/// latest after [`MAX_SNIFF`] bytes, and looks at no more than that. Each call starts over;
/// a connection that asks after every read uses a [`Sniffer`], which does not.
pub fn sniff(prefix: &[u8]) -> Sniff {
    Sniffer::default().sniff(prefix)
}

/// What the connection is when no more client bytes will be waited for: the wait for the
/// first bytes ran out (a server-first protocol sends nothing) or the client half-closed.
/// An incomplete TLS hello is TLS without SNI; anything else undecided is opaque.
pub fn sniff_final(prefix: &[u8]) -> Sniffed {
    undecided_as_final(prefix, sniff(prefix))
}

fn undecided_as_final(prefix: &[u8], sniffed: Sniff) -> Sniffed {
    match sniffed {
        Sniff::Done(sniffed) => sniffed,
        Sniff::NeedMore if prefix.len() >= 3 && prefix[0] == CONTENT_HANDSHAKE => {
            Sniffed::TlsUnreadable(ClientHelloError::Incomplete)
        }
        Sniff::NeedMore => Sniffed::Opaque,
    }
}

/// [`sniff`] for one connection, asked again after every read: it resumes where the last call
/// stopped, so a client that sends one byte at a time costs O([`MAX_SNIFF`]) in all rather
/// than O(`MAX_SNIFF`²). Each call must get the connection's bytes so far (the previous
/// input and what arrived since); given anything shorter than before, it starts over.
#[derive(Debug, Clone, Default)]
pub struct Sniffer {
    /// Bytes of input seen by the last call.
    seen: usize,
    http: Http1Scan,
    hello: HelloReader,
    decided: Option<Sniffed>,
}

impl Sniffer {
    /// A sniffer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`sniff`] on `prefix`, the connection's bytes so far.
    pub fn sniff(&mut self, prefix: &[u8]) -> Sniff {
        if prefix.len() < self.seen {
            *self = Self::default();
        }
        self.seen = prefix.len();
        if let Some(decided) = &self.decided {
            return Sniff::Done(decided.clone());
        }
        let window = &prefix[..prefix.len().min(MAX_SNIFF)];
        let sniffed = match window.first() {
            None => Sniff::NeedMore,
            Some(&CONTENT_HANDSHAKE) => self.sniff_tls(window),
            Some(_) => self.sniff_http(window),
        };
        if let Sniff::Done(decided) = &sniffed {
            self.decided = Some(decided.clone());
        }
        sniffed
    }

    /// As [`sniff_final`], for the bytes so far.
    pub fn finish(&mut self, prefix: &[u8]) -> Sniffed {
        let sniffed = self.sniff(prefix);
        undecided_as_final(prefix, sniffed)
    }

    /// `window` starts with 0x16: a TLS handshake record if the version bytes agree.
    fn sniff_tls(&mut self, window: &[u8]) -> Sniff {
        match window.get(1..3) {
            Some(&[3, minor]) if (1..=4).contains(&minor) => {}
            Some(_) => return Sniff::Done(Sniffed::Opaque),
            None if window.get(1).is_some_and(|b| *b != 3) => {
                return Sniff::Done(Sniffed::Opaque);
            }
            None => return Sniff::NeedMore,
        }
        match self.hello.read(window) {
            Ok(Some(hello)) => Sniff::Done(Sniffed::Tls(Box::new(hello))),
            Ok(None) => Sniff::NeedMore,
            Err(e) => Sniff::Done(Sniffed::TlsUnreadable(e)),
        }
    }

    /// The HTTP/2 preface, else an HTTP/1 request line, else opaque.
    fn sniff_http(&mut self, window: &[u8]) -> Sniff {
        if window.starts_with(H2_PREFACE) {
            return Sniff::Done(Sniffed::Http2);
        }
        // The preface looks like a request line up to its version; only its end tells.
        let maybe_h2 = H2_PREFACE.starts_with(window);
        match self.http.scan(window) {
            _ if maybe_h2 => Sniff::NeedMore,
            Http1::Complete => Sniff::Done(Sniffed::Http1),
            Http1::Partial if window.len() < MAX_SNIFF => Sniff::NeedMore,
            Http1::Partial | Http1::Invalid => Sniff::Done(Sniffed::Opaque),
        }
    }
}

/// Where a request line `method SP target SP HTTP/1.d (CR)LF` scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Http1 {
    /// Still a valid beginning of one.
    #[default]
    Partial,
    /// A whole request line.
    Complete,
    /// Not a request line.
    Invalid,
}

/// A resumable byte-at-a-time scan of a request line.
#[derive(Debug, Clone, Copy, Default)]
struct Http1Scan {
    /// Bytes consumed.
    pos: usize,
    part: Http1Part,
    outcome: Http1,
}

#[derive(Debug, Clone, Copy)]
enum Http1Part {
    /// In the method, this many bytes long.
    Method(usize),
    /// In the request target, this many bytes long.
    Target(usize),
    /// In the version, this many bytes of `HTTP/1.d` matched.
    Version(usize),
    /// After a CR that must be followed by LF.
    Cr,
}

impl Default for Http1Part {
    fn default() -> Self {
        Self::Method(0)
    }
}

impl Http1Scan {
    fn scan(&mut self, window: &[u8]) -> Http1 {
        const HTTP1: &[u8] = b"HTTP/1.";
        for &b in window.get(self.pos..).unwrap_or_default() {
            if self.outcome != Http1::Partial {
                break;
            }
            self.pos += 1;
            let (part, outcome) = match self.part {
                Http1Part::Method(n) if is_tchar(b) && n < MAX_METHOD => {
                    (Http1Part::Method(n + 1), Http1::Partial)
                }
                Http1Part::Method(n) if b == b' ' && n > 0 => {
                    (Http1Part::Target(0), Http1::Partial)
                }
                Http1Part::Target(n) if is_target_byte(b) => {
                    (Http1Part::Target(n + 1), Http1::Partial)
                }
                Http1Part::Target(n) if b == b' ' && n > 0 => {
                    (Http1Part::Version(0), Http1::Partial)
                }
                Http1Part::Version(i) if i < HTTP1.len() && b == HTTP1[i] => {
                    (Http1Part::Version(i + 1), Http1::Partial)
                }
                Http1Part::Version(i) if i == HTTP1.len() && b.is_ascii_digit() => {
                    (Http1Part::Version(i + 1), Http1::Partial)
                }
                // Servers take a bare LF as the line's end too (RFC 9112, 2.2).
                Http1Part::Version(i) if i > HTTP1.len() && b == b'\r' => {
                    (Http1Part::Cr, Http1::Partial)
                }
                Http1Part::Version(i) if i > HTTP1.len() && b == b'\n' => {
                    (self.part, Http1::Complete)
                }
                Http1Part::Cr if b == b'\n' => (self.part, Http1::Complete),
                _ => (self.part, Http1::Invalid),
            };
            self.part = part;
            self.outcome = outcome;
        }
        self.outcome
    }
}

/// `tchar` of RFC 9110, 5.6.2: the characters of a method name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a request target: visible ASCII, or non-ASCII as lenient servers take it.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Reads a ClientHello from TLS records (as on the wire, starting with the first record's
/// header), reassembling it across records. `Ok(None)`: need more bytes. Looks at no more
/// than [`MAX_SNIFF`] bytes; bytes after the ClientHello are ignored.
pub fn parse_client_hello(bytes: &[u8]) -> Result<Option<ClientHello>, ClientHelloError> {
    HelloReader::default().read(bytes)
}

/// A resumable walk over the records that carry a ClientHello. It copies nothing until the
/// whole message is there, and remembers the records already walked.
#[derive(Debug, Clone, Default)]
struct HelloReader {
    /// Offset of the first record not yet complete.
    pos: usize,
    /// Handshake bytes in the complete records before `pos`.
    have: usize,
    /// The handshake message's first bytes (type, 24-bit length), as far as `have` goes.
    head: [u8; 4],
    /// Where the complete records' fragments are in the input.
    fragments: Vec<std::ops::Range<usize>>,
}

impl HelloReader {
    fn read(&mut self, bytes: &[u8]) -> Result<Option<ClientHello>, ClientHelloError> {
        let window = &bytes[..bytes.len().min(MAX_SNIFF)];
        let need_more = || {
            if window.len() >= MAX_SNIFF {
                Err(ClientHelloError::TooFragmented)
            } else {
                Ok(None)
            }
        };
        if self.pos > window.len() {
            *self = Self::default();
        }
        loop {
            let Some(header) = window.get(self.pos..self.pos + RECORD_HEADER) else {
                check_partial_record_header(&window[self.pos..])?;
                return need_more();
            };
            check_record_header(header)?;
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let start = self.pos + RECORD_HEADER;
            let end = start + len;
            let available = start..end.min(window.len());

            let mut head = self.head;
            for (i, b) in window[available.clone()]
                .iter()
                .take(4usize.saturating_sub(self.have))
                .enumerate()
            {
                head[self.have + i] = *b;
            }
            let have = self.have + available.len();
            if have >= 1 && head[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(ClientHelloError::NotClientHello(head[0]));
            }
            if have >= 4 {
                let total = 4
                    + (usize::from(head[1]) << 16 | usize::from(head[2]) << 8)
                    + usize::from(head[3]);
                if total > MAX_CLIENT_HELLO {
                    return Err(ClientHelloError::TooLarge(total));
                }
                if have >= total {
                    return self.parse(window, available, total).map(Some);
                }
            }
            if end > window.len() {
                return need_more();
            }
            // This record is complete: remember it and go on to the next.
            self.head = head;
            self.have = have;
            self.fragments.push(available);
            self.pos = end;
        }
    }

    /// Joins the first `total` handshake bytes (one borrow if a single record holds them) and
    /// parses the message.
    fn parse(
        &self,
        window: &[u8],
        last: std::ops::Range<usize>,
        total: usize,
    ) -> Result<ClientHello, ClientHelloError> {
        let mut joined: Vec<u8>;
        let message = if self.fragments.is_empty() {
            &window[last.start..last.start + total]
        } else {
            joined = Vec::with_capacity(total);
            for range in self.fragments.iter().chain(std::iter::once(&last)) {
                let fragment = &window[range.clone()];
                let wanted = (total - joined.len()).min(fragment.len());
                joined.extend_from_slice(&fragment[..wanted]);
            }
            &joined
        };
        parse_body(&message[4..])
    }
}

/// Checks a complete record header.
fn check_record_header(header: &[u8]) -> Result<(), ClientHelloError> {
    check_partial_record_header(header)?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    match len {
        0 => Err(ClientHelloError::EmptyRecord),
        len if len > MAX_FRAGMENT => Err(ClientHelloError::RecordTooLong(len)),
        _ => Ok(()),
    }
}

/// Checks what is there of a record header's type and version.
fn check_partial_record_header(header: &[u8]) -> Result<(), ClientHelloError> {
    if let Some(&content) = header.first()
        && content != CONTENT_HANDSHAKE
    {
        return Err(ClientHelloError::NotHandshake(content));
    }
    // The version is judged when both its bytes are there, so that the error names it whole
    // however the bytes arrive.
    match header.get(1..3) {
        Some(&[major, minor]) if major != 3 || !(1..=4).contains(&minor) => {
            Err(ClientHelloError::RecordVersion(u16::from_be_bytes([
                major, minor,
            ])))
        }
        _ => Ok(()),
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHello, ClientHelloError> {
    use ClientHelloError::Malformed;
    let mut r = Reader(body);
    let legacy_version = r.u16("legacy_version")?;
    r.take(32, "random")?;
    if r.vec8("legacy_session_id")?.len() > 32 {
        return Err(Malformed("legacy_session_id longer than 32 bytes"));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed("cipher_suites empty or of odd length"));
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(Malformed("no compression methods"));
    }
    let mut hello = ClientHello {
        legacy_version,
        cipher_suites: u16_list(suites),
        ..ClientHello::default()
    };
    // Clients before TLS 1.2 may end the hello here, without extensions.
    if r.0.is_empty() {
        return Ok(hello);
    }
    let mut extensions = Reader(r.vec16("extensions")?);
    if !r.0.is_empty() {
        return Err(Malformed("bytes after the extensions"));
    }
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension_data")?;
        hello.extensions.push(kind);
        match kind {
            EXT_SERVER_NAME => {
                let raw = server_name(data)?;
                hello.sni = raw.and_then(dns_name);
                hello.sni_raw = raw.map(<[u8]>::to_vec);
            }
            EXT_ALPN => hello.alpn = alpn(data)?,
            EXT_SUPPORTED_VERSIONS => {
                hello.supported_versions =
                    u16_list(whole(data, Reader::vec8, "supported_versions")?)
            }
            EXT_SUPPORTED_GROUPS => {
                hello.supported_groups = u16_list(whole(data, Reader::vec16, "supported_groups")?)
            }
            EXT_SIGNATURE_ALGORITHMS => {
                hello.signature_algorithms =
                    u16_list(whole(data, Reader::vec16, "signature_algorithms")?)
            }
            EXT_EC_POINT_FORMATS => {
                let formats = Reader(data).vec8("ec_point_formats")?;
                if formats.is_empty() || formats.len() + 1 != data.len() {
                    return Err(Malformed("ec_point_formats"));
                }
                hello.ec_point_formats = formats.to_vec();
            }
            _ => {}
        }
    }
    // Repeated extensions are forbidden, and a second SNI is a classic way to show a
    // firewall one name and the server another. Sorting keeps this O(n log n) on a hostile
    // hello with thousands of extensions.
    let mut kinds = hello.extensions.clone();
    kinds.sort_unstable();
    if let Some(pair) = kinds.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(ClientHelloError::DuplicateExtension(pair[0]));
    }
    if hello.sni_raw.is_some() && hello.sni.is_none() {
        return Err(ClientHelloError::InvalidServerName(Box::new(hello)));
    }
    Ok(hello)
}

/// A list of u16 values whose vector is the whole extension: non-empty, even length.
fn whole<'a>(
    data: &'a [u8],
    vector: fn(&mut Reader<'a>, &'static str) -> Result<&'a [u8], ClientHelloError>,
    field: &'static str,
) -> Result<&'a [u8], ClientHelloError> {
    let mut r = Reader(data);
    let list = vector(&mut r, field)?;
    if !r.0.is_empty() || list.is_empty() || list.len() % 2 != 0 {
        return Err(ClientHelloError::Malformed(field));
    }
    Ok(list)
}

fn u16_list(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect()
}

/// The `host_name` of a `server_name` extension (RFC 6066, 3), as sent.
fn server_name(data: &[u8]) -> Result<Option<&[u8]>, ClientHelloError> {
    use ClientHelloError::Malformed;
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("server_name_list")?);
    if !r.0.is_empty() || list.0.is_empty() {
        return Err(Malformed("server_name extension"));
    }
    let mut host = None;
    while !list.0.is_empty() {
        let kind = list.u8("server name type")?;
        let name = list.vec16("server name")?;
        // Only host_name (0) is defined; others are skipped, as the RFC's extensibility asks.
        if kind == 0 {
            if host.is_some() {
                return Err(Malformed("two host names in server_name"));
            }
            host = Some(name);
        }
    }
    Ok(host)
}

/// A plausible DNS host name, lower-cased: 1 to 253 bytes, labels of 1 to 63 letters, digits,
/// `-` (not first or last) or `_`, no trailing dot (RFC 6066), and not an IPv4 literal (its
/// last label all digits), which SNI must not carry. `None` when it is not.
fn dns_name(raw: &[u8]) -> Option<String> {
    let invalid = None;
    if raw.is_empty() || raw.len() > 253 {
        return invalid;
    }
    let mut last_numeric = false;
    for label in raw.split(|b| *b == b'.') {
        let valid = (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            && !label.starts_with(b"-")
            && !label.ends_with(b"-");
        if !valid {
            return invalid;
        }
        last_numeric = label.iter().all(u8::is_ascii_digit);
    }
    if last_numeric {
        return invalid;
    }
    // Checked ASCII above, so this is the name byte for byte.
    Some(
        raw.iter()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect(),
    )
}

/// The protocol names of an ALPN extension (RFC 7301, 3.1).
fn alpn(data: &[u8]) -> Result<Vec<String>, ClientHelloError> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("protocol_name_list")?);
    if !r.0.is_empty() || list.0.is_empty() {
        return Err(ClientHelloError::Malformed(
            "application_layer_protocol_negotiation",
        ));
    }
    let mut names = Vec::new();
    while !list.0.is_empty() {
        let name = list.vec8("protocol name")?;
        if name.is_empty() || !name.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(ClientHelloError::InvalidAlpn);
        }
        names.push(name.iter().map(|b| char::from(*b)).collect());
    }
    Ok(names)
}

/// GREASE values (RFC 8701): 0x?A?A with both bytes equal.
pub fn is_grease(value: u16) -> bool {
    let [hi, lo] = value.to_be_bytes();
    hi == lo && hi & 0x0f == 0x0a
}

/// A cursor over TLS presentation-language fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        if self.0.len() < n {
            return Err(ClientHelloError::Truncated(field));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ClientHelloError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ClientHelloError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of `input` sniffs as NeedMore until the first decision, then as that same
    /// decision; returns the decision for all of `input`.
    /// A [`Sniffer`] fed the growing input answers as [`sniff`] does at every step.
    fn sniff_every_prefix(input: &[u8]) -> Sniff {
        let full = sniff(input);
        let mut decided = None;
        let mut sniffer = Sniffer::new();
        for k in 0..=input.len() {
            let got = sniff(&input[..k]);
            assert_eq!(
                sniffer.sniff(&input[..k]),
                got,
                "sniffer differs at {k} bytes"
            );
            match (&decided, &got) {
                (None, Sniff::NeedMore) => {}
                (None, Sniff::Done(_)) => decided = Some(got.clone()),
                (Some(d), got) => assert_eq!(got, d, "prefix of {k} bytes changed its decision"),
            }
            if got != Sniff::NeedMore {
                assert_eq!(
                    got, full,
                    "prefix of {k} bytes decided differently from the whole"
                );
            }
        }
        full
    }

    #[test]
    fn http_and_opaque_table() {
        use Sniffed::*;
        let need = Sniff::NeedMore;
        let done = Sniff::Done;
        let cases: &[(&[u8], Sniff)] = &[
            (b"", need.clone()),
            (b"G", need.clone()),
            (b"GET / HTTP/1.1", need.clone()),
            (b"GET / HTTP/1.1\r", need.clone()),
            (b"GET / HTTP/1.1\r\n", done(Http1)),
            (b"GET / HTTP/1.0\n", done(Http1)),
            (
                b"GET /index.html?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
                done(Http1),
            ),
            (b"get / HTTP/1.1\r\n", done(Http1)),
            (b"PURGE /cache HTTP/1.1\r\n", done(Http1)),
            (b"M-SEARCH * HTTP/1.1\r\n", done(Http1)),
            (b"CONNECT db.internal:5432 HTTP/1.1\r\n", done(Http1)),
            (b"OPTIONS * HTTP/1.1\r\n", done(Http1)),
            (b"GET http://a.example/x HTTP/1.1\r\n", done(Http1)),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\n", done(Http1)),
            (b"GET  / HTTP/1.1\r\n", done(Opaque)),
            (b" GET / HTTP/1.1\r\n", done(Opaque)),
            (b"GET / HTTP/2.0\r\n", done(Opaque)),
            (b"GET / HTTP/1.x\r\n", done(Opaque)),
            (b"GET / http/1.1\r\n", done(Opaque)),
            (b"GET / HTTP/1.1 \r\n", done(Opaque)),
            (b"GET / HTTP/1.1\rX", done(Opaque)),
            (b"GET /\r\n", done(Opaque)),
            (b"GET /a\tb HTTP/1.1\r\n", done(Opaque)),
            (b"GE(T / HTTP/1.1\r\n", done(Opaque)),
            (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", done(Opaque)),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", done(Opaque)), // PostgreSQL SSLRequest
            (b"*1\r\n$4\r\nPING\r\n", done(Opaque)),             // Redis
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", done(Http2)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
                done(Http2),
            ),
            (b"PRI * HTTP/2.0\r\n", need.clone()),
            (b"PRI * HTTP/2.0\r\n\r\nXX", done(Opaque)),
            (b"PRI * HTTP/1.1\r\n", done(Http1)),
            // TLS record headers that are not a TLS 1.0-1.3 handshake.
            (b"\x16", need.clone()),
            (b"\x16\x03", need.clone()),
            (b"\x16\x03\x01", need.clone()),
            (b"\x16\x04", done(Opaque)),
            (b"\x16\x03\x00\x00\x10", done(Opaque)), // SSL 3.0
            (b"\x16\x03\x05\x00\x10", done(Opaque)),
            (b"\x17\x03\x03\x00\x10", done(Opaque)), // application data
            (b"\x15\x03\x03\x00\x02\x02\x28", done(Opaque)), // alert
            (b"\x80\x2e\x01\x03\x01\x00\x15", done(Opaque)), // SSLv2-style hello
        ];
        for (input, want) in cases {
            assert_eq!(
                &sniff_every_prefix(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn methods_are_tokens_of_bounded_length() {
        let longest = format!("{} / HTTP/1.1\r\n", "X".repeat(MAX_METHOD));
        assert_eq!(sniff(longest.as_bytes()), Sniff::Done(Sniffed::Http1));
        let too_long = "X".repeat(MAX_METHOD + 1);
        assert_eq!(sniff(too_long.as_bytes()), Sniff::Done(Sniffed::Opaque));
        // Decided as soon as the method cannot end in time, not at the space.
        assert_eq!(sniff(&too_long.as_bytes()[..MAX_METHOD]), Sniff::NeedMore);
    }

    #[test]
    fn decided_at_the_latest_after_max_sniff_bytes() {
        let mut long = b"GET /".to_vec();
        long.resize(MAX_SNIFF - 1, b'a');
        assert_eq!(sniff(&long), Sniff::NeedMore);
        long.push(b'a');
        assert_eq!(sniff(&long), Sniff::Done(Sniffed::Opaque));
        // Bytes past the window are not looked at.
        long.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(sniff(&long), Sniff::Done(Sniffed::Opaque));
        let mut h2ish = H2_PREFACE[..10].to_vec();
        h2ish.resize(MAX_SNIFF, b'x');
        assert_ne!(sniff(&h2ish), Sniff::NeedMore);
    }

    #[test]
    fn final_answer_when_the_client_stops_or_the_wait_ends() {
        assert_eq!(sniff_final(b""), Sniffed::Opaque);
        assert_eq!(sniff_final(b"GET / HTTP/1.1"), Sniffed::Opaque);
        assert_eq!(sniff_final(b"PRI * HTTP/2.0"), Sniffed::Opaque);
        assert_eq!(sniff_final(b"GET / HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff_final(b"\x16\x03"), Sniffed::Opaque);
        assert_eq!(
            sniff_final(b"\x16\x03\x01\x02\x00\x01"),
            Sniffed::TlsUnreadable(ClientHelloError::Incomplete)
        );
        let hello = record(&handshake(&body(&[sni_ext(b"a.example")])));
        assert!(
            matches!(sniff_final(&hello), Sniffed::Tls(h) if h.sni.as_deref() == Some("a.example"))
        );
    }

    // ---- hand-built ClientHellos ----

    fn record(fragment: &[u8]) -> Vec<u8> {
        let mut out = vec![CONTENT_HANDSHAKE, 3, 1];
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
        out
    }

    fn handshake(body: &[u8]) -> Vec<u8> {
        let mut out = vec![HANDSHAKE_CLIENT_HELLO];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    fn fixed_part() -> Vec<u8> {
        let mut out = vec![3, 3];
        out.extend_from_slice(&[7; 32]); // random
        out.push(0); // session id
        out.extend_from_slice(&vec16(&[0x13, 0x01, 0x13, 0x02]));
        out.extend_from_slice(&[1, 0]); // compression: null
        out
    }

    fn body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (kind, data) in extensions {
            block.extend_from_slice(&kind.to_be_bytes());
            block.extend_from_slice(&vec16(data));
        }
        let mut out = fixed_part();
        out.extend_from_slice(&vec16(&block));
        out
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&vec16(name));
        (EXT_SERVER_NAME, vec16(&entry))
    }

    fn alpn_ext(names: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for name in names {
            list.push(name.len() as u8);
            list.extend_from_slice(name);
        }
        (EXT_ALPN, vec16(&list))
    }

    /// The handshake bytes of a record stream, framed again into records of `size` bytes.
    fn reframe(records: &[u8], size: usize) -> Vec<u8> {
        let mut message = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let len = usize::from(u16::from_be_bytes([records[pos + 3], records[pos + 4]]));
            message.extend_from_slice(&records[pos + 5..pos + 5 + len]);
            pos += 5 + len;
        }
        message.chunks(size).flat_map(record).collect()
    }

    fn parse(bytes: &[u8]) -> Result<Option<ClientHello>, ClientHelloError> {
        parse_client_hello(bytes)
    }

    #[test]
    fn hellos_read_back_as_written() {
        let full = ClientHello {
            legacy_version: 0x0303,
            supported_versions: vec![0x2a2a, 0x0304, 0x0303],
            sni: Some("api.example.test".into()),
            sni_raw: Some(b"api.example.test".to_vec()),
            alpn: vec!["h2".into(), "http/1.1".into()],
            cipher_suites: vec![0x0a0a, 0x1301, 0xc02f],
            extensions: vec![0x1a1a, 0, 16, 43, 10, 13, 11, 0xff01, 0x4469],
            supported_groups: vec![0x4a4a, 0x1d, 0x17],
            signature_algorithms: vec![0x0403, 0x0804],
            ec_point_formats: vec![0, 1],
        };
        let old = ClientHello {
            legacy_version: 0x0301,
            cipher_suites: vec![0x2f, 0x35],
            ..ClientHello::default()
        };
        let bare = ClientHello {
            extensions: vec![0xff01],
            ..full.clone()
        };
        for hello in [full, old, bare] {
            let got = parse(&hello.to_record()).unwrap().unwrap();
            let expect = ClientHello {
                // Fields of extensions not listed are not sent.
                sni: hello.sni.clone().filter(|_| hello.extensions.contains(&0)),
                sni_raw: hello
                    .sni_raw
                    .clone()
                    .filter(|_| hello.extensions.contains(&0)),
                alpn: if hello.extensions.contains(&16) {
                    hello.alpn.clone()
                } else {
                    vec![]
                },
                supported_versions: if hello.extensions.contains(&43) {
                    hello.supported_versions.clone()
                } else {
                    vec![]
                },
                supported_groups: if hello.extensions.contains(&10) {
                    hello.supported_groups.clone()
                } else {
                    vec![]
                },
                signature_algorithms: if hello.extensions.contains(&13) {
                    hello.signature_algorithms.clone()
                } else {
                    vec![]
                },
                ec_point_formats: if hello.extensions.contains(&11) {
                    hello.ec_point_formats.clone()
                } else {
                    vec![]
                },
                ..hello.clone()
            };
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn hand_built_hello_fields() {
        let hello = record(&handshake(&body(&[
            sni_ext(b"Api.Example.TEST"),
            alpn_ext(&[b"h2", b"http/1.1"]),
            (EXT_SUPPORTED_VERSIONS, vec![4, 0x3a, 0x3a, 3, 4]),
            (EXT_SUPPORTED_GROUPS, vec16(&[0x11, 0xec, 0, 0x1d])),
            (EXT_SIGNATURE_ALGORITHMS, vec16(&[4, 3, 8, 4])),
            (EXT_EC_POINT_FORMATS, vec![1, 0]),
            (0xfe0d, vec![1, 2, 3]), // unknown (ECH): kept in the list, not parsed
        ])));
        let got = parse(&hello).unwrap().unwrap();
        assert_eq!(
            got,
            ClientHello {
                legacy_version: 0x0303,
                supported_versions: vec![0x3a3a, 0x0304],
                sni: Some("api.example.test".into()),
                // As sent: the name is lower-cased in `sni` only.
                sni_raw: Some(b"Api.Example.TEST".to_vec()),
                alpn: vec!["h2".into(), "http/1.1".into()],
                cipher_suites: vec![0x1301, 0x1302],
                extensions: vec![0, 16, 43, 10, 13, 11, 0xfe0d],
                supported_groups: vec![0x11ec, 0x001d],
                signature_algorithms: vec![0x0403, 0x0804],
                ec_point_formats: vec![0],
            }
        );
        assert_eq!(got.max_version(), 0x0304);
        assert_eq!(
            sniff_every_prefix(&hello),
            Sniff::Done(Sniffed::Tls(Box::new(got.clone())))
        );
        for size in [1, 2, 3, 5, 64] {
            let split = reframe(&hello, size);
            assert_eq!(
                sniff_every_prefix(&split),
                Sniff::Done(Sniffed::Tls(Box::new(got.clone()))),
                "records of {size}"
            );
        }
        // Bytes after the hello (a client that does not wait) change nothing.
        let mut more = hello.clone();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(parse(&more).unwrap().unwrap(), got);
    }

    #[test]
    fn hello_without_extensions_is_read() {
        let hello = record(&handshake(&fixed_part()));
        let got = parse(&hello).unwrap().unwrap();
        assert_eq!(got.sni, None);
        assert!(got.extensions.is_empty());
        assert_eq!(got.max_version(), 0x0303);
    }

    #[test]
    fn server_names() {
        let ok: &[(&[u8], &str)] = &[
            (b"Example.COM", "example.com"),
            (b"db", "db"),
            (b"_grpc.svc.example", "_grpc.svc.example"),
            (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
            (b"123abc.example", "123abc.example"),
            (b"1.2.3.x", "1.2.3.x"),
        ];
        for (name, want) in ok {
            let hello = record(&handshake(&body(&[sni_ext(name)])));
            assert_eq!(parse(&hello).unwrap().unwrap().sni.as_deref(), Some(*want));
        }
        let label64 = [b'a'; 64];
        let long = [b"a.".repeat(126).as_slice(), b"ab"].concat(); // 254 bytes
        let bad: &[&[u8]] = &[
            b"",
            b"a..b",
            b".a",
            b"a.example.",
            b"-a.example",
            b"a-.example",
            b"10.0.0.1",
            b"::1",
            b"a b.example",
            b"a\x00.example",
            b"caf\xc3\xa9.example",
            &label64,
            &long,
        ];
        for name in bad {
            let hello = record(&handshake(&body(&[sni_ext(name)])));
            // Refused as a name, and the hello read all the same, the name as sent.
            let Err(ClientHelloError::InvalidServerName(read)) = parse(&hello) else {
                panic!("{:?} accepted", String::from_utf8_lossy(name));
            };
            assert_eq!(
                (read.sni, read.sni_raw.as_deref(), read.cipher_suites.len()),
                (None, Some(*name), 2)
            );
        }
        // Another name type is skipped; the host name is still found.
        let mut list = vec![7];
        list.extend_from_slice(&vec16(b"opaque"));
        list.push(0);
        list.extend_from_slice(&vec16(b"real.example"));
        let hello = record(&handshake(&body(&[(EXT_SERVER_NAME, vec16(&list))])));
        assert_eq!(
            parse(&hello).unwrap().unwrap().sni.as_deref(),
            Some("real.example")
        );
    }

    #[test]
    fn malformed_hellos_are_typed_errors() {
        use ClientHelloError::*;
        let two_names = {
            let mut list = Vec::new();
            for name in [&b"a.example"[..], b"b.example"] {
                list.push(0);
                list.extend_from_slice(&vec16(name));
            }
            body(&[(EXT_SERVER_NAME, vec16(&list))])
        };
        let after_extensions = {
            let mut b = body(&[sni_ext(b"a.example")]);
            b.push(0);
            b
        };
        let mut not_client_hello = handshake(&body(&[]));
        not_client_hello[0] = 2;
        let mut long_session_id = fixed_part();
        long_session_id[34] = 33;
        long_session_id.splice(35..35, [0u8; 33]);
        let cases: Vec<(Vec<u8>, ClientHelloError)> = vec![
            (record(&not_client_hello), NotClientHello(2)),
            (record(&[1, 0, 0x40, 0x01]), TooLarge(4 + 0x4001)),
            (vec![22, 3, 3, 0, 0], EmptyRecord),
            (vec![22, 3, 3, 0x40, 0x01, 1], RecordTooLong(0x4001)),
            (
                [&[22, 3, 1, 0, 2, 1, 0][..], &[20, 3, 3, 0, 1, 1]].concat(),
                NotHandshake(20),
            ),
            (
                [&[22, 3, 1, 0, 2, 1, 0][..], &[22, 2, 0]].concat(),
                RecordVersion(0x0200),
            ),
            // Found by fuzzing: a wrong major version byte alone must not give another error
            // than the whole version does.
            (
                [&[22, 3, 1, 0, 2, 1, 0][..], &[22, 0, 0xc6]].concat(),
                RecordVersion(0x00c6),
            ),
            (
                record(&handshake(&two_names)),
                Malformed("two host names in server_name"),
            ),
            (
                record(&handshake(&body(&[
                    sni_ext(b"a.example"),
                    sni_ext(b"b.example"),
                ]))),
                DuplicateExtension(0),
            ),
            (
                record(&handshake(&body(&[
                    (0x17, vec![]),
                    (0x23, vec![]),
                    (0x17, vec![]),
                ]))),
                DuplicateExtension(0x17),
            ),
            (
                record(&handshake(&after_extensions)),
                Malformed("bytes after the extensions"),
            ),
            (
                record(&handshake(&body(&[alpn_ext(&[b"h2", b""])]))),
                InvalidAlpn,
            ),
            (
                record(&handshake(&body(&[alpn_ext(&[b"h\xff"])]))),
                InvalidAlpn,
            ),
            (
                record(&handshake(&body(&[(EXT_ALPN, vec16(&[]))]))),
                Malformed("application_layer_protocol_negotiation"),
            ),
            (
                record(&handshake(&body(&[(
                    EXT_SUPPORTED_VERSIONS,
                    vec![3, 3, 4, 3],
                )]))),
                Malformed("supported_versions"),
            ),
            (
                record(&handshake(&body(&[(EXT_SERVER_NAME, vec![])]))),
                Truncated("server_name_list"),
            ),
            (
                record(&handshake(&body(&[(EXT_EC_POINT_FORMATS, vec![2, 0])]))),
                Truncated("ec_point_formats"),
            ),
            (
                record(&handshake(&long_session_id)),
                Malformed("legacy_session_id longer than 32 bytes"),
            ),
            (record(&handshake(&[3, 3])), Truncated("random")),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(&bytes), Err(want.clone()), "{bytes:02x?}");
            // The sniffer reports it as unreadable TLS, at the same point for every prefix.
            assert_eq!(
                sniff_every_prefix(&bytes),
                Sniff::Done(Sniffed::TlsUnreadable(want))
            );
        }
    }

    #[test]
    fn a_truncated_hello_is_an_error_at_every_cut() {
        let body = body(&[sni_ext(b"a.example"), alpn_ext(&[b"h2"])]);
        // A message whose declared length ends inside a field. The one cut that is whole is
        // right after the compression methods: a hello without extensions.
        let without_extensions = fixed_part().len();
        for cut in 0..body.len() {
            let result = parse(&record(&handshake(&body[..cut])));
            if cut == without_extensions {
                assert!(result.unwrap().unwrap().extensions.is_empty());
            } else {
                assert!(result.is_err(), "cut at {cut}: {result:?}");
            }
        }
    }

    #[test]
    fn hellos_in_tiny_records_end_at_the_bound() {
        // 1-byte records cost 6 bytes of wire per hello byte: a 4000-byte hello does not fit.
        let padding = (21, vec![0u8; 4000]);
        let hello = record(&handshake(&body(&[sni_ext(b"a.example"), padding])));
        let tiny = reframe(&hello, 1);
        assert!(tiny.len() > MAX_SNIFF);
        assert_eq!(parse(&tiny[..MAX_SNIFF - 1]), Ok(None));
        assert_eq!(parse(&tiny), Err(ClientHelloError::TooFragmented));
        assert_eq!(
            sniff(&tiny),
            Sniff::Done(Sniffed::TlsUnreadable(ClientHelloError::TooFragmented))
        );
        // The same hello in ordinary records is read.
        assert!(parse(&reframe(&hello, 1000)).unwrap().is_some());
        // The largest hello allowed is read; one byte more is refused from its header.
        let max_body = MAX_CLIENT_HELLO - 4;
        let filler = max_body - fixed_part().len() - 2 - 4;
        let biggest = reframe(
            &record(&handshake(&body(&[(21, vec![0; filler])]))),
            1 << 14,
        );
        assert!(parse(&biggest).unwrap().is_some());
        let too_big = reframe(
            &record(&handshake(&body(&[(21, vec![0; filler + 1])]))),
            1 << 14,
        );
        assert_eq!(
            parse(&too_big[..9]),
            Err(ClientHelloError::TooLarge(MAX_CLIENT_HELLO + 1))
        );
    }

    // ---- real ClientHellos ----

    /// The first flight of a rustls client: its ClientHello records.
    fn rustls_hello(
        server_name: &str,
        enable_sni: bool,
        alpn: &[&str],
        versions: &[&'static rustls::SupportedProtocolVersion],
        max_fragment: Option<usize>,
    ) -> Vec<u8> {
        let mut config =
            rustls::ClientConfig::builder_with_provider(eastwall_certs::crypto_provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        config.enable_sni = enable_sni;
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.max_fragment_size = max_fragment;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn rustls_hellos_at_every_split() {
        use rustls::version::{TLS12, TLS13};
        struct Case {
            name: &'static str,
            sni: bool,
            alpn: &'static [&'static str],
            versions: Vec<&'static rustls::SupportedProtocolVersion>,
            fragment: Option<usize>,
            want_versions: &'static [u16],
        }
        let cases = [
            Case {
                name: "api.example.test",
                sni: true,
                alpn: &["h2", "http/1.1"],
                versions: vec![&TLS13, &TLS12],
                fragment: None,
                want_versions: &[0x0304, 0x0303],
            },
            Case {
                name: "api.example.test",
                sni: false,
                alpn: &[],
                versions: vec![&TLS13],
                fragment: None,
                want_versions: &[0x0304],
            },
            Case {
                name: "API.Example.Test",
                sni: true,
                alpn: &[],
                versions: vec![&TLS12],
                fragment: None,
                want_versions: &[0x0303],
            },
            Case {
                name: "grpc.example.test",
                sni: true,
                alpn: &["h2"],
                versions: vec![&TLS13],
                fragment: Some(200),
                want_versions: &[0x0304],
            },
            // 10.0.0.1: rustls sends no SNI for an IP address.
            Case {
                name: "10.0.0.1",
                sni: true,
                alpn: &["http/1.1"],
                versions: vec![&TLS13],
                fragment: None,
                want_versions: &[0x0304],
            },
        ];
        for case in cases {
            let wire = rustls_hello(
                case.name,
                case.sni,
                case.alpn,
                &case.versions,
                case.fragment,
            );
            let hello = parse(&wire).unwrap().expect("a whole ClientHello");
            let want_sni =
                (case.sni && case.name != "10.0.0.1").then(|| case.name.to_ascii_lowercase());
            assert_eq!(hello.sni, want_sni, "{}", case.name);
            assert_eq!(hello.alpn, case.alpn, "{}", case.name);
            assert_eq!(
                hello.supported_versions, case.want_versions,
                "{}",
                case.name
            );
            assert_eq!(hello.legacy_version, 0x0303);
            if case.fragment.is_some() {
                assert!(
                    wire.len() > 2 * 200,
                    "{} bytes: not several records",
                    wire.len()
                );
            }
            if case.versions.contains(&&TLS13) {
                // The node's provider offers the hybrid post-quantum group first.
                assert_eq!(hello.supported_groups.first(), Some(&0x11ec));
            }
            // NeedMore for every proper prefix, then the same answer.
            for k in 0..wire.len() {
                assert_eq!(
                    sniff(&wire[..k]),
                    Sniff::NeedMore,
                    "{} cut at {k}",
                    case.name
                );
            }
            assert_eq!(
                sniff(&wire),
                Sniff::Done(Sniffed::Tls(Box::new(hello.clone())))
            );
            assert_eq!(
                sniff_every_prefix(&reframe(&wire, 97)),
                Sniff::Done(Sniffed::Tls(Box::new(hello)))
            );
        }
    }

    #[test]
    fn captured_hellos_of_other_clients() {
        let fixture = |name: &str| {
            let path = format!("{}/testdata/clienthello/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        struct Case {
            file: &'static str,
            sni: Option<&'static str>,
            alpn: &'static [&'static str],
            max_version: u16,
            records: usize,
        }
        let cases = [
            // openssl s_client -servername Api.Example.test
            Case {
                file: "openssl-sni.bin",
                sni: Some("api.example.test"),
                alpn: &[],
                max_version: 0x0304,
                records: 1,
            },
            // openssl s_client -noservername
            Case {
                file: "openssl-no-sni.bin",
                sni: None,
                alpn: &[],
                max_version: 0x0304,
                records: 1,
            },
            // openssl s_client -tls1_2 -servername legacy.example.test -alpn http/1.1
            Case {
                file: "openssl-tls12.bin",
                sni: Some("legacy.example.test"),
                alpn: &["http/1.1"],
                max_version: 0x0303,
                records: 1,
            },
            // openssl s_client -sess_in (a TLS 1.3 ticket) -max_send_frag 512: two records
            Case {
                file: "openssl-resume-split.bin",
                sni: Some("resume.example.test"),
                alpn: &[],
                max_version: 0x0304,
                records: 2,
            },
            // curl 7.88 https://web.example.test
            Case {
                file: "curl-sni-alpn.bin",
                sni: Some("web.example.test"),
                alpn: &["h2", "http/1.1"],
                max_version: 0x0304,
                records: 1,
            },
        ];
        for case in cases {
            let wire = fixture(case.file);
            let hello = parse(&wire).unwrap().expect(case.file);
            assert_eq!(hello.sni.as_deref(), case.sni, "{}", case.file);
            assert_eq!(hello.alpn, case.alpn, "{}", case.file);
            assert_eq!(hello.max_version(), case.max_version, "{}", case.file);
            assert_eq!(
                reframe(&wire, 1 << 14).len() + 5 * (case.records - 1),
                wire.len(),
                "{}",
                case.file
            );
            if case.file == "openssl-resume-split.bin" {
                // pre_shared_key (41) comes last, as RFC 8446 requires.
                assert_eq!(hello.extensions.last(), Some(&41));
            }
            assert_eq!(
                sniff_every_prefix(&wire),
                Sniff::Done(Sniffed::Tls(Box::new(hello))),
                "{}",
                case.file
            );
        }
    }

    /// Cost of sniffing, printed; run it optimised:
    /// `cargo test -p eastwall-node --release --lib sniff::tests::cost -- --ignored --nocapture`.
    /// The worst case is a client that sends one byte per segment up to MAX_SNIFF, so that the
    /// node sniffs every prefix.
    #[test]
    #[ignore = "measurement, not a check"]
    fn cost() {
        use std::hint::black_box;
        use std::time::Instant;
        fn per_call(name: &str, input: &[u8]) {
            let runs = 20_000;
            let start = Instant::now();
            for _ in 0..runs {
                black_box(sniff(black_box(input)));
            }
            println!(
                "{name}: {:.0} ns per sniff",
                start.elapsed().as_nanos() as f64 / runs as f64
            );
        }
        fn every_prefix(name: &str, input: &[u8]) {
            let start = Instant::now();
            for k in 0..=input.len() {
                black_box(sniff(black_box(&input[..k])));
            }
            let stateless = start.elapsed();
            let start = Instant::now();
            let mut sniffer = Sniffer::new();
            for k in 0..=input.len() {
                black_box(sniffer.sniff(black_box(&input[..k])));
            }
            println!(
                "{name}: all {} prefixes: {:.2} ms with sniff, {:.3} ms with a Sniffer",
                input.len(),
                stateless.as_secs_f64() * 1e3,
                start.elapsed().as_secs_f64() * 1e3,
            );
        }
        per_call(
            "HTTP/1 request line",
            b"GET /api/v1/items?id=42 HTTP/1.1\r\nHost: api\r\n\r\n",
        );
        per_call("HTTP/2 preface", H2_PREFACE);
        let rustls = rustls_hello(
            "api.example.test",
            true,
            &["h2", "http/1.1"],
            &[&rustls::version::TLS13],
            None,
        );
        per_call(
            &format!(
                "rustls ClientHello ({} bytes, X25519MLKEM768)",
                rustls.len()
            ),
            &rustls,
        );
        per_call(
            "rustls ClientHello in 97-byte records",
            &reframe(&rustls, 97),
        );
        let mut target = b"GET /".to_vec();
        target.resize(MAX_SNIFF, b'a');
        every_prefix("worst case HTTP (request target to MAX_SNIFF)", &target);
        let big = record(&handshake(&body(&[
            sni_ext(b"a.example"),
            (21, vec![0u8; 4000]),
        ])));
        every_prefix(
            "worst case TLS (1-byte records to MAX_SNIFF)",
            &reframe(&big, 1)[..MAX_SNIFF],
        );
        every_prefix(
            "large TLS (16 KiB hello in one record)",
            &reframe(
                &record(&handshake(&body(&[(
                    21,
                    vec![0; MAX_CLIENT_HELLO - 4 - 47 - 6],
                )]))),
                1 << 14,
            ),
        );
    }

    #[test]
    fn sniffer_resumes_in_uneven_steps_and_restarts_on_shorter_input() {
        let hello = reframe(
            &rustls_hello("a.example", true, &["h2"], &[&rustls::version::TLS13], None),
            300,
        );
        let inputs: [&[u8]; 3] = [
            b"POST /upload HTTP/1.1\r\nHost: a\r\n\r\n",
            H2_PREFACE,
            &hello,
        ];
        for input in inputs {
            let want = sniff(input);
            for step in [1, 2, 7, 64, 301] {
                let mut sniffer = Sniffer::new();
                let mut got = Sniff::NeedMore;
                let mut end = 0;
                while got == Sniff::NeedMore && end < input.len() {
                    end = (end + step).min(input.len());
                    got = sniffer.sniff(&input[..end]);
                }
                assert_eq!(got, want, "step {step}");
                // Asked again, it keeps its answer.
                assert_eq!(sniffer.sniff(input), want);
            }
        }
        // Another connection's bytes, shorter than before: it starts over.
        let mut sniffer = Sniffer::new();
        assert_eq!(
            sniffer.sniff(b"GET / HTTP/1.1\r\n"),
            Sniff::Done(Sniffed::Http1)
        );
        assert_eq!(sniffer.sniff(b"\x16\x03"), Sniff::NeedMore);
        assert_eq!(
            sniffer.finish(b"\x16\x03\x01\x00"),
            Sniffed::TlsUnreadable(ClientHelloError::Incomplete)
        );
        assert_eq!(Sniffer::new().finish(b""), Sniffed::Opaque);
    }

    #[test]
    fn grease_is_recognised() {
        for v in [0x0a0a, 0x1a1a, 0xfafa] {
            assert!(is_grease(v));
        }
        for v in [0x0303, 0x0a1a, 0x0b0b] {
            assert!(!is_grease(v));
        }
    }
}
