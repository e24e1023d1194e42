//! HTTP/1 messages framed from one direction's bytes as they arrive: each head exactly as
//! received, then the body, de-chunked. The node's L7 layer uses it to keep the heads hyper
//! parsed as they were on the wire, and the inspector uses it to read HTTP/1 from a raw TCP
//! stream; both therefore cut messages the same way.
//!
//! Framing follows RFC 9112 section 6 the way common servers apply it: a request's body is
//! chunked when its last transfer coding is `chunked`, else `Content-Length` long, else
//! empty; a response has no body after `HEAD`, for 1xx, 204 and 304, switches to opaque bytes
//! after `101` and a 2xx to `CONNECT`, and without a length runs to the end of the connection.
//! Bytes that cannot be HTTP/1 (a head that does not parse, a bad length or chunk size, a head
//! longer than the limit) end the framing: what follows is not read as HTTP.

use std::collections::VecDeque;

/// Which side's bytes a [`Framer`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client's: requests.
    Request,
    /// The server's: responses.
    Response,
}

/// What a [`Framer`] found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A message head as received: start line, header lines, and the empty line that ends it.
    /// Lines before a request that are empty are not part of it.
    Head(Vec<u8>),
    /// Bytes of the current message's body (chunked framing removed); `end` with its last.
    Body {
        /// The bytes.
        data: &'a [u8],
        /// Whether the body is complete.
        end: bool,
    },
    /// The bytes stopped being HTTP/1 here (an upgrade, a tunnel, or bytes that do not
    /// frame); nothing more is read.
    Stopped(Stop),
}

/// Why a [`Framer`] stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The connection switched protocols (`101`, a tunnel after `CONNECT`).
    Switched,
    /// The bytes are not HTTP/1 as the framer reads it (or a head passed the limit).
    NotHttp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// This many data bytes left in the chunk.
    Data(u64),
    /// The line end after a chunk's data.
    DataEnd,
    /// Trailer lines, up to the empty one.
    Trailer,
}

/// The longest chunk-size or trailer line kept while it is incomplete.
const MAX_LINE: usize = 4096;

/// One direction of an HTTP/1 connection, framed as its bytes arrive.
#[derive(Debug)]
pub struct Framer {
    role: Role,
    state: State,
    /// The incomplete head, chunk-size line or trailer line.
    pending: Vec<u8>,
    max_head: usize,
    /// Responses: for each request not answered yet, in order, whether its method was `HEAD`
    /// (no body) or `CONNECT` (a 2xx answer starts a tunnel).
    requests: VecDeque<Method>,
}

/// What a request's method means for its response's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `HEAD`: the response has no body.
    Head,
    /// `CONNECT`: a 2xx response starts a tunnel.
    Connect,
    /// Any other.
    Other,
}

impl Method {
    /// The framing meaning of a method name.
    pub fn of(name: &[u8]) -> Self {
        if name.eq_ignore_ascii_case(b"HEAD") {
            Method::Head
        } else if name.eq_ignore_ascii_case(b"CONNECT") {
            Method::Connect
        } else {
            Method::Other
        }
    }
}

impl Framer {
    /// A framer of `role`'s messages whose heads are at most `max_head` bytes.
    pub fn new(role: Role, max_head: usize) -> Self {
        Framer {
            role,
            state: State::Head,
            pending: Vec::new(),
            max_head,
            requests: VecDeque::new(),
        }
    }

    /// A response framer's next response answers a request with this method (call once per
    /// request sent, in order). Without it a response is framed as answering a `GET`.
    pub fn expect_response_to(&mut self, method: Method) {
        // A client cannot have more requests in flight than this can matter for.
        if self.requests.len() < 1024 {
            self.requests.push_back(method);
        }
    }

    /// Whether the framer stopped reading (nothing more will come of it).
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether the framer is between messages (no head or body under way).
    pub fn between_messages(&self) -> bool {
        self.state == State::Head && self.pending.is_empty()
    }

    /// The end of the direction: a body that runs to the end of the connection is complete.
    pub fn end(&mut self, mut on: impl FnMut(Event<'_>)) {
        if self.state == State::UntilClose {
            on(Event::Body {
                data: &[],
                end: true,
            });
        }
        self.state = State::Stopped;
        self.pending = Vec::new();
    }

    /// Frames `bytes`, the next ones of the direction, calling `on` with what they complete.
    pub fn push(&mut self, mut bytes: &[u8], mut on: impl FnMut(Event<'_>)) {
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return,
                State::UntilClose => {
                    on(Event::Body {
                        data: bytes,
                        end: false,
                    });
                    return;
                }
                State::Head => bytes = self.head(bytes, &mut on),
                State::Length(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    let left = left - n as u64;
                    on(Event::Body {
                        data: &bytes[..n],
                        end: left == 0,
                    });
                    bytes = &bytes[n..];
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                }
                State::Chunked(c) => bytes = self.chunked(c, bytes, &mut on),
            }
        }
    }

    /// Reads head bytes; returns what follows the head when it completed.
    fn head<'b>(&mut self, mut bytes: &'b [u8], on: &mut impl FnMut(Event<'_>)) -> &'b [u8] {
        if self.pending.is_empty() && self.role == Role::Request {
            // Empty lines between requests are skipped (RFC 9112 2.2), as servers do.
            let skip = bytes
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(bytes.len());
            bytes = &bytes[skip..];
            if bytes.is_empty() {
                return bytes;
            }
        }
        // The empty line may start in the bytes kept before: look from a little before them.
        let from = self.pending.len().saturating_sub(3);
        self.pending.extend_from_slice(bytes);
        let Some(end) = head_end(&self.pending, from) else {
            if self.pending.len() > self.max_head {
                self.stop(Stop::NotHttp, on);
            }
            return &[];
        };
        if end > self.max_head {
            self.stop(Stop::NotHttp, on);
            return &[];
        }
        let rest = &bytes[bytes.len() - (self.pending.len() - end)..];
        self.pending.truncate(end);
        let head = std::mem::take(&mut self.pending);
        let next = match self.role {
            Role::Request => request_framing(&head),
            Role::Response => {
                let next = response_framing(&head, self.requests.front().copied());
                if let Some((_, false)) = next {
                    self.requests.pop_front();
                }
                next.map(|(n, _)| n)
            }
        };
        // A head that parses is given even when its framing is not one to follow: the
        // message is real, only where it ends is not known.
        let Some(next) = next else {
            self.stop(Stop::NotHttp, on);
            return &[];
        };
        on(Event::Head(head));
        match next {
            Ok(State::Length(0)) => {
                on(Event::Body {
                    data: &[],
                    end: true,
                });
                self.state = State::Head;
            }
            Ok(state) => self.state = state,
            Err(stop) => {
                self.stop(stop, on);
                return &[];
            }
        }
        rest
    }

    /// Reads chunked body bytes in state `c`; returns what follows the body when it ended.
    fn chunked<'b>(
        &mut self,
        mut c: Chunk,
        mut bytes: &'b [u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> &'b [u8] {
        while !bytes.is_empty() {
            match c {
                Chunk::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    on(Event::Body {
                        data: &bytes[..n],
                        end: false,
                    });
                    bytes = &bytes[n..];
                    c = if left == n as u64 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n as u64)
                    };
                }
                Chunk::Size | Chunk::DataEnd | Chunk::Trailer => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        self.pending.extend_from_slice(bytes);
                        if self.pending.len() > MAX_LINE {
                            self.stop(Stop::NotHttp, on);
                            return &[];
                        }
                        bytes = &[];
                        break;
                    };
                    if self.pending.len() + nl > MAX_LINE {
                        self.stop(Stop::NotHttp, on);
                        return &[];
                    }
                    self.pending.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut self.pending);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    c = match c {
                        Chunk::Size => match chunk_size(line) {
                            Some(0) => Chunk::Trailer,
                            Some(n) => Chunk::Data(n),
                            None => {
                                self.stop(Stop::NotHttp, on);
                                return &[];
                            }
                        },
                        // Lenient as servers are: whatever ends the data's line.
                        Chunk::DataEnd => Chunk::Size,
                        _ if line.is_empty() => {
                            on(Event::Body {
                                data: &[],
                                end: true,
                            });
                            self.state = State::Head;
                            return bytes;
                        }
                        _ => Chunk::Trailer,
                    };
                }
            }
        }
        self.state = State::Chunked(c);
        bytes
    }

    fn stop(&mut self, why: Stop, on: &mut impl FnMut(Event<'_>)) {
        self.state = State::Stopped;
        self.pending = Vec::new();
        on(Event::Stopped(why));
    }
}

/// The end of a head (after its empty line) in `buf`, looking from `from`: a line end
/// followed by a line end, each `\n` or `\r\n`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// A chunk-size line's size (hex, extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let hex = trim(&line[..end]);
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let s = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(s, 16).ok()
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// How a message's body is framed by its headers: `Ok(None)` for no length (the end of the
/// connection), `Err` when the headers contradict themselves.
fn body_length(headers: &[(&str, &[u8])]) -> Result<Option<State>, Stop> {
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides (RFC 9112 6.3, item 4).
            let last = value
                .rsplit(|&b| b == b',')
                .map(trim)
                .find(|c| !c.is_empty());
            chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        } else if name.eq_ignore_ascii_case("content-length") {
            for v in value.split(|&b| b == b',').map(trim) {
                let n = std::str::from_utf8(v)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(Stop::NotHttp)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Stop::NotHttp);
                }
                length = Some(n);
            }
        }
    }
    Ok(match (chunked, length) {
        // Transfer-Encoding overrides Content-Length.
        (Some(true), _) => Some(State::Chunked(Chunk::Size)),
        (Some(false), _) => None,
        (None, Some(n)) => Some(State::Length(n)),
        (None, None) => None,
    })
}

/// Header slots tried first; a head with more is parsed again with room for every line it
/// can hold (one per 3 bytes), so no count of headers stops the reading.
const FIRST_HEADERS: usize = 64;

/// httparse as lenient as servers and libhtp are with what clients and servers send: extra
/// spaces in start lines, folded response headers, a space before a response header's colon;
/// a request header line that is not one is skipped (it stays in the raw head).
fn lenient() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    c
}

/// The framing after a request head; `None` when it is not one.
fn request_framing(head: &[u8]) -> Option<Result<State, Stop>> {
    let req = parse_request(head)?;
    if req.method.eq_ignore_ascii_case("CONNECT") {
        // What follows a CONNECT is the tunnel's, whatever the answer (a refused one closes).
        return Some(Err(Stop::Switched));
    }
    Some(match body_length(&req.headers) {
        Ok(Some(state)) => Ok(state),
        // A request whose coding is not chunked cannot be framed (servers answer 400).
        Ok(None) if has(&req.headers, "transfer-encoding") => Err(Stop::NotHttp),
        // Without a length, no body.
        Ok(None) => Ok(State::Length(0)),
        Err(stop) => Err(stop),
    })
}

/// The framing after a response head, and whether the response was interim (1xx but 101:
/// the final one is still to come); `None` when it is not one.
fn response_framing(head: &[u8], to: Option<Method>) -> Option<(Result<State, Stop>, bool)> {
    let resp = parse_response(head)?;
    let state = match resp.status {
        101 => Err(Stop::Switched),
        100..=199 => return Some((Ok(State::Head), true)),
        200..=299 if to == Some(Method::Connect) => Err(Stop::Switched),
        204 | 304 => Ok(State::Length(0)),
        _ if to == Some(Method::Head) => Ok(State::Length(0)),
        _ => body_length(&resp.headers).map(|s| s.unwrap_or(State::UntilClose)),
    };
    Some((state, false))
}

fn has(headers: &[(&str, &[u8])], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// A request head's parts, read from its bytes as received.
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a str,
    /// The request target as sent.
    pub target: &'a str,
    /// `HTTP/1.x` minor version.
    pub minor: u8,
    /// Header fields in order, names as sent, values without surrounding blanks.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Every header line as received, the empty line that ends them included (Suricata's
    /// `http.header.raw`).
    pub raw_headers: &'a [u8],
}

/// A response head's parts, read from its bytes as received.
#[derive(Debug)]
pub struct ResponseHead<'a> {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'a str,
    /// `HTTP/1.x` minor version.
    pub minor: u8,
    /// Header fields in order, names as sent, values without surrounding blanks.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Every header line as received, the empty line that ends them included.
    pub raw_headers: &'a [u8],
}

/// Reads a request head ([`Event::Head`] of a request framer); `None` when it is not one.
pub fn parse_request(head: &[u8]) -> Option<RequestHead<'_>> {
    with_room(head, request_in)
}

/// `parse` of `head` with room for [`FIRST_HEADERS`] headers, then, when it has more, for
/// every line it can hold.
fn with_room<'b, T>(
    head: &'b [u8],
    parse: impl Fn(&'b [u8], &mut [httparse::Header<'b>]) -> Result<T, httparse::Error>,
) -> Option<T> {
    let mut first = [httparse::EMPTY_HEADER; FIRST_HEADERS];
    match parse(head, &mut first) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut all = vec![httparse::EMPTY_HEADER; head.len() / 3 + 1];
            parse(head, &mut all).ok()
        }
        r => r.ok(),
    }
}

fn request_in<'b>(
    head: &'b [u8],
    storage: &mut [httparse::Header<'b>],
) -> Result<RequestHead<'b>, httparse::Error> {
    let mut req = httparse::Request::new(storage);
    if !lenient().parse_request(&mut req, head)?.is_complete() {
        return Err(httparse::Error::Token);
    }
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name, trim(h.value)))
        .collect();
    Ok(RequestHead {
        method: req.method.ok_or(httparse::Error::Token)?,
        target: req.path.ok_or(httparse::Error::Token)?,
        minor: req.version.ok_or(httparse::Error::Version)?,
        headers,
        raw_headers: after_start_line(head),
    })
}

/// Reads a response head ([`Event::Head`] of a response framer); `None` when it is not one.
pub fn parse_response(head: &[u8]) -> Option<ResponseHead<'_>> {
    with_room(head, response_in)
}

fn response_in<'b>(
    head: &'b [u8],
    storage: &mut [httparse::Header<'b>],
) -> Result<ResponseHead<'b>, httparse::Error> {
    let mut resp = httparse::Response::new(storage);
    if !lenient().parse_response(&mut resp, head)?.is_complete() {
        return Err(httparse::Error::Token);
    }
    let headers = resp
        .headers
        .iter()
        .map(|h| (h.name, trim(h.value)))
        .collect();
    Ok(ResponseHead {
        status: resp.code.ok_or(httparse::Error::Status)?,
        reason: resp.reason.unwrap_or(""),
        minor: resp.version.ok_or(httparse::Error::Version)?,
        headers,
        raw_headers: after_start_line(head),
    })
}

/// A head's bytes after its start line: its header lines and the empty line.
pub(crate) fn after_start_line(head: &[u8]) -> &[u8] {
    match memchr::memchr(b'\n', head) {
        Some(nl) => &head[nl + 1..],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Head(String),
        Body(String, bool),
        Stopped(Stop),
    }

    /// Everything `role` frames from `input` cut at every `cut` bytes, with adjacent body
    /// pieces joined (how bodies are cut depends on the reads).
    fn frame(role: Role, methods: &[Method], input: &[u8], cut: usize) -> Vec<Ev> {
        let mut f = Framer::new(role, 1024);
        for m in methods {
            f.expect_response_to(*m);
        }
        let mut out: Vec<Ev> = Vec::new();
        let mut on = |e: Event<'_>| {
            let e = match e {
                Event::Head(h) => Ev::Head(String::from_utf8(h).unwrap()),
                Event::Body { data, end } => {
                    let s = String::from_utf8(data.to_vec()).unwrap();
                    if let Some(Ev::Body(prev, false)) = out.last_mut() {
                        prev.push_str(&s);
                        if end {
                            *out.last_mut().unwrap() = Ev::Body(prev.clone(), true);
                        }
                        return;
                    }
                    Ev::Body(s, end)
                }
                Event::Stopped(s) => Ev::Stopped(s),
            };
            out.push(e);
        };
        for piece in input.chunks(cut.max(1)) {
            f.push(piece, &mut on);
        }
        f.end(&mut on);
        out
    }

    fn head(s: &str) -> Ev {
        Ev::Head(s.to_owned())
    }
    fn body(s: &str, end: bool) -> Ev {
        Ev::Body(s.to_owned(), end)
    }

    #[test]
    fn requests_are_framed_the_same_however_the_bytes_are_cut() {
        let cases: Vec<(&str, Vec<Ev>)> = vec![
            (
                "GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                vec![head("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), body("", true)],
            ),
            (
                // Leading empty lines skipped; LF-only lines kept as sent.
                "\r\n\r\nGET /b HTTP/1.1\nX-A :  b  \n\n",
                vec![head("GET /b HTTP/1.1\nX-A :  b  \n\n"), body("", true)],
            ),
            (
                "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /n HTTP/1.1\r\n\r\n",
                vec![
                    head("POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
                    body("hello", true),
                    head("GET /n HTTP/1.1\r\n\r\n"),
                    body("", true),
                ],
            ),
            (
                // Chunked wins over Content-Length; extensions and trailers skipped.
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                 4;ext=1\r\nabcd\r\n2\r\nef\r\n0\r\nX-T: 1\r\n\r\nGET /z HTTP/1.1\r\n\r\n",
                vec![
                    head(
                        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                    ),
                    body("abcdef", true),
                    head("GET /z HTTP/1.1\r\n\r\n"),
                    body("", true),
                ],
            ),
            (
                // Repeated equal lengths are one length.
                "PUT / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok",
                vec![
                    head("PUT / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n"),
                    body("ok", true),
                ],
            ),
            (
                // The head is real; where its body ends is not known.
                "PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                vec![
                    head("PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"),
                    Ev::Stopped(Stop::NotHttp),
                ],
            ),
            (
                "PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nok",
                vec![
                    head("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
                    Ev::Stopped(Stop::NotHttp),
                ],
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                vec![
                    head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
                    Ev::Stopped(Stop::NotHttp),
                ],
            ),
            (
                "CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01",
                vec![
                    head("CONNECT h:443 HTTP/1.1\r\n\r\n"),
                    Ev::Stopped(Stop::Switched),
                ],
            ),
            (
                "\x16\x03\x01\x00\x05hello\r\n\r\n",
                vec![Ev::Stopped(Stop::NotHttp)],
            ),
        ];
        for (input, want) in cases {
            for cut in [1, 2, 3, 5, 7, input.len()] {
                assert_eq!(
                    frame(Role::Request, &[], input.as_bytes(), cut),
                    want,
                    "{input:?} cut every {cut}"
                );
            }
        }
    }

    #[test]
    fn responses_follow_their_requests() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        let cases: Vec<(&[Method], String, Vec<Ev>)> = vec![
            (
                &[Method::Other],
                format!("{ok}ok"),
                vec![head(ok), body("ok", true)],
            ),
            // HEAD: the length is the one a GET would have had, no body follows.
            (
                &[Method::Head, Method::Other],
                format!("{ok}{ok}ok"),
                vec![head(ok), body("", true), head(ok), body("ok", true)],
            ),
            // Interim responses, then the final one for the same request.
            (
                &[Method::Head],
                format!("HTTP/1.1 100 Continue\r\n\r\n{ok}"),
                vec![
                    head("HTTP/1.1 100 Continue\r\n\r\n"),
                    head(ok),
                    body("", true),
                ],
            ),
            (
                &[Method::Other],
                "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 200 OK\r\n\r\nrest".into(),
                vec![
                    head("HTTP/1.1 204 No Content\r\n\r\n"),
                    body("", true),
                    head("HTTP/1.0 200 OK\r\n\r\n"),
                    body("rest", false),
                    body("", true),
                ],
            ),
            (
                &[Method::Other],
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x01\x05".into(),
                vec![
                    head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
                    Ev::Stopped(Stop::Switched),
                ],
            ),
            (
                &[Method::Connect],
                "HTTP/1.1 200 Connected\r\n\r\n\x16\x03".into(),
                vec![
                    head("HTTP/1.1 200 Connected\r\n\r\n"),
                    Ev::Stopped(Stop::Switched),
                ],
            ),
            (
                &[Method::Other],
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".into(),
                vec![
                    head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                    body("abc", true),
                ],
            ),
        ];
        for (methods, input, want) in cases {
            for cut in [1, 2, 4, input.len()] {
                let got = frame(Role::Response, methods, input.as_bytes(), cut);
                // A body that runs to the close ends as a separate empty piece.
                let got: Vec<Ev> = got
                    .into_iter()
                    .map(|e| match e {
                        Ev::Body(s, true) if s.is_empty() => body("", true),
                        e => e,
                    })
                    .collect();
                let want_joined: Vec<Ev> = want
                    .iter()
                    .map(|e| match e {
                        Ev::Head(h) => head(h),
                        Ev::Body(s, e) => body(s, *e),
                        Ev::Stopped(s) => Ev::Stopped(*s),
                    })
                    .collect();
                if input.ends_with("rest") {
                    // Joined by `frame`: "rest" then the close's empty end.
                    assert_eq!(
                        got.last(),
                        Some(&body("rest", true)),
                        "{input:?} cut every {cut}"
                    );
                    continue;
                }
                assert_eq!(got, want_joined, "{input:?} cut every {cut}");
            }
        }
    }

    #[test]
    fn a_head_longer_than_the_limit_stops_the_framing() {
        let mut f = Framer::new(Role::Request, 64);
        let mut stopped = None;
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        f.push(long.as_bytes(), |e| {
            if let Event::Stopped(s) = e {
                stopped = Some(s);
            }
        });
        assert_eq!(stopped, Some(Stop::NotHttp));
        assert!(f.stopped());
        // What was kept is bounded by the limit and released.
        assert!(f.pending.capacity() == 0);
    }

    #[test]
    fn no_count_of_headers_stops_the_reading() {
        let mut head = b"GET /many HTTP/1.1\r\n".to_vec();
        for i in 0..2000 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 2\r\n\r\n");
        let r = parse_request(&head).unwrap();
        assert_eq!(r.headers.len(), 2001);
        let mut wire = head.clone();
        wire.extend_from_slice(b"okGET /next HTTP/1.1\r\n\r\n");
        let mut f = Framer::new(Role::Request, 64 * 1024);
        let mut heads = 0;
        let mut body = Vec::new();
        f.push(&wire, |e| match e {
            Event::Head(_) => heads += 1,
            Event::Body { data, .. } => body.extend_from_slice(data),
            Event::Stopped(s) => panic!("stopped: {s:?}"),
        });
        assert_eq!((heads, &body[..]), (2, &b"ok"[..]));
    }

    #[test]
    fn heads_are_read_as_sent() {
        let h = b"GET /a?b HTTP/1.1\r\nHost:example.com\r\nuser-AGENT:\tcurl/8  \r\n\r\n";
        let r = parse_request(h).unwrap();
        assert_eq!((r.method, r.target, r.minor), ("GET", "/a?b", 1));
        assert_eq!(
            r.headers,
            vec![
                ("Host", &b"example.com"[..]),
                ("user-AGENT", &b"curl/8"[..])
            ]
        );
        assert_eq!(
            r.raw_headers,
            b"Host:example.com\r\nuser-AGENT:\tcurl/8  \r\n\r\n"
        );
        let r = parse_response(b"HTTP/1.0 404 Not Here\nserver :  x\n\n").unwrap();
        assert_eq!((r.status, r.reason, r.minor), (404, "Not Here", 0));
        assert_eq!(r.headers, vec![("server", &b"x"[..])]);
        assert_eq!(r.raw_headers, b"server :  x\n\n");
        // A request header line that is not one is skipped, and kept in the raw head.
        let r = parse_request(b"GET / HTTP/1.1\r\nX-S : v\r\nA: b\r\n\r\n").unwrap();
        assert_eq!(r.headers, vec![("A", &b"b"[..])]);
        assert_eq!(r.raw_headers, b"X-S : v\r\nA: b\r\n\r\n");
        assert!(parse_request(b"not http\r\n\r\n").is_none());
    }
}
