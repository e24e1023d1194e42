//! HTTP messages as the node hands them over, and the Suricata buffers built from them.
//!
//! The node parses HTTP with hyper and passes the parts here, with HTTP/1 heads as received
//! (`crate::h1`); the inspector reads HTTP/1 from raw streams itself. Buffers are built on
//! demand: `http.uri` is the request target normalized like libhtp in Suricata (percent
//! decoding of path and query, `\` as `/` in the path, `.`/`..` segments removed and repeated
//! `/` compressed in the path); `http.header` is `Name: value\r\n` per header, names as sent
//! in HTTP/1 and otherwise in their canonical Title-Case (HTTP/2 sends them lower-cased),
//! repeated headers joined with `, ` as libhtp does, and `Cookie` / `Set-Cookie` left out
//! (they have `http.cookie`); `http.header.raw` is HTTP/1's header lines as received.

use crate::compile::Field;
use std::borrow::Cow;

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/0.9 or HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2.
    Http2,
}

impl HttpVersion {
    /// As in a start line (`HTTP/1.1`, `HTTP/2`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
        }
    }
}

/// A request head.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// The request target as on the wire (origin form `/p?q` or absolute form).
    pub uri_raw: &'a [u8],
    /// The authority (HTTP/2 `:authority`, or the host of an absolute-form target), when
    /// known apart from the `Host` header.
    pub host: Option<&'a str>,
    /// Header fields in arrival order, names in any case.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Version.
    pub version: HttpVersion,
    /// HTTP/1: the head exactly as received, start line, header lines and the empty line
    /// that ends them (what [`crate::h1::parse_request`] read); then `headers` carry the names
    /// as sent, and buffers keep them so (`http.header.raw` is its header lines). `None`
    /// (HTTP/2, or heads known only parsed): buffers are rebuilt from `headers`, names in
    /// canonical Title-Case.
    pub raw_head: Option<&'a [u8]>,
}

/// A response head.
#[derive(Debug, Clone, Copy)]
pub struct HttpResponse<'a> {
    /// Status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: &'a str,
    /// Header fields in arrival order.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Version.
    pub version: HttpVersion,
    /// HTTP/1: the head exactly as received (see [`HttpRequest::raw_head`]).
    pub raw_head: Option<&'a [u8]>,
}

/// Joined values of the headers named `name` (case-insensitive), as libhtp merges them.
pub(crate) fn header<'a>(headers: &[(&'a str, &'a [u8])], name: &str) -> Option<Cow<'a, [u8]>> {
    let mut found: Option<Cow<'a, [u8]>> = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case(name) {
            found = Some(match found {
                None => Cow::Borrowed(*v),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(v);
                    Cow::Owned(joined)
                }
            });
        }
    }
    found
}

/// Names whose canonical form is not plain Title-Case.
const CANONICAL_EXCEPTIONS: &[&str] = &[
    "WWW-Authenticate",
    "ETag",
    "TE",
    "DNT",
    "Content-MD5",
    "X-XSS-Protection",
    "X-UA-Compatible",
    "X-ATT-DeviceId",
    "SOAPAction",
];

/// The canonical spelling of a header name: `user-agent` → `User-Agent`.
pub(crate) fn canonical_name(name: &str) -> Cow<'_, str> {
    if let Some(e) = CANONICAL_EXCEPTIONS
        .iter()
        .find(|e| e.eq_ignore_ascii_case(name))
    {
        return Cow::Borrowed(e);
    }
    let mut upper = true;
    let canonical = name.bytes().all(|b| {
        let ok = if upper {
            !b.is_ascii_lowercase()
        } else {
            !b.is_ascii_uppercase()
        };
        upper = b == b'-';
        ok
    });
    if canonical {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The path and query of a request target (absolute form loses scheme and authority).
pub(crate) fn path_and_query(raw: &[u8]) -> &[u8] {
    let lower_starts = |p: &[u8]| raw.len() >= p.len() && raw[..p.len()].eq_ignore_ascii_case(p);
    let after_scheme = if lower_starts(b"http://") {
        7
    } else if lower_starts(b"https://") {
        8
    } else {
        return raw;
    };
    let rest = &raw[after_scheme..];
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(p) => &rest[p..],
        None => b"/",
    }
}

/// The authority of an absolute-form target.
fn authority(raw: &[u8]) -> Option<&[u8]> {
    let lower_starts = |p: &[u8]| raw.len() >= p.len() && raw[..p.len()].eq_ignore_ascii_case(p);
    let after = if lower_starts(b"http://") {
        7
    } else if lower_starts(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &raw[after..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let auth = &rest[..end];
    // Drop userinfo.
    Some(match auth.iter().rposition(|&b| b == b'@') {
        Some(at) => &auth[at + 1..],
        None => auth,
    })
}

/// Decode `%XX` escapes; invalid ones stay as they are.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `http.uri`: the normalized path and query.
pub(crate) fn normalize_uri(raw: &[u8]) -> Vec<u8> {
    let pq = path_and_query(raw);
    let (path, query) = match pq.iter().position(|&b| b == b'?') {
        Some(q) => (&pq[..q], Some(&pq[q..])),
        None => (pq, None),
    };
    // Backslashes, sent or encoded, are path separators.
    let mut decoded = percent_decode(path);
    for b in &mut decoded {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    let mut out = remove_dot_segments(&decoded);
    if let Some(q) = query {
        // The query is percent-decoded too, but its `/` and `.` are data, not segments.
        out.extend_from_slice(&percent_decode(q));
    }
    out
}

/// RFC 3986 5.2.4 on a path, with runs of `/` compressed to one.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let absolute = path.first() == Some(&b'/');
    let trailing = path.ends_with(b"/")
        || path.ends_with(b"/.")
        || path.ends_with(b"/..")
        || path == b"."
        || path == b"..";
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    out
}

/// `http.host`: the host without port, lower-cased.
pub(crate) fn normalize_host(host: &[u8]) -> Vec<u8> {
    let h = trim(host);
    let h = if h.first() == Some(&b'[') {
        match h.iter().position(|&b| b == b']') {
            Some(end) => &h[..=end],
            None => h,
        }
    } else {
        match h.iter().rposition(|&b| b == b':') {
            Some(c) if h[c + 1..].iter().all(u8::is_ascii_digit) => &h[..c],
            _ => h,
        }
    };
    let h = h.strip_suffix(b".").unwrap_or(h);
    h.to_ascii_lowercase()
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A header name as buffers show it: as sent when it was read from the wire, else in its
/// canonical Title-Case.
fn shown_name(name: &str, as_sent: bool) -> Cow<'_, str> {
    if as_sent {
        Cow::Borrowed(name)
    } else {
        canonical_name(name)
    }
}

/// `Name: value\r\n` lines, repeated headers merged into the first occurrence (like
/// libhtp's header table), optionally without one header.
fn header_block(headers: &[(&str, &[u8])], skip: Option<&str>, as_sent: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in headers {
        if name.starts_with(':') || skip.is_some_and(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            continue;
        }
        seen.push(name);
        let value = header(headers, name).unwrap_or_default();
        out.extend_from_slice(shown_name(name, as_sent).as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every header line as received; rebuilt as `name: value\r\n` lines when only the parsed
/// headers are known.
fn raw_header_block<'a>(raw: Option<&'a [u8]>, headers: &[(&str, &[u8])]) -> Cow<'a, [u8]> {
    if let Some(raw) = raw {
        return Cow::Borrowed(crate::h1::after_start_line(raw));
    }
    let mut out = Vec::new();
    for (name, value) in headers {
        if name.starts_with(':') {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

fn header_names(headers: &[(&str, &[u8])], as_sent: bool) -> Vec<u8> {
    let mut out = b"\r\n".to_vec();
    for (name, _) in headers {
        if name.starts_with(':') {
            continue;
        }
        out.extend_from_slice(shown_name(name, as_sent).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The request line as on the wire.
pub(crate) fn request_line(req: &HttpRequest<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.method.len() + req.uri_raw.len() + 10);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri_raw);
    out.push(b' ');
    out.extend_from_slice(req.version.as_str().as_bytes());
    out
}

fn response_line(resp: &HttpResponse<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + resp.reason.len());
    out.extend_from_slice(resp.version.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.status.to_string().as_bytes());
    if !resp.reason.is_empty() {
        out.push(b' ');
        out.extend_from_slice(resp.reason.as_bytes());
    }
    out
}

fn start(line: Vec<u8>, headers: &[(&str, &[u8])], as_sent: bool) -> Vec<u8> {
    let mut out = line;
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&header_block(headers, None, as_sent));
    out.extend_from_slice(b"\r\n");
    out
}

/// A message head as received (as `http.start` builds it when the caller had only the
/// parsed headers).
fn head<'a>(line: Vec<u8>, raw: Option<&'a [u8]>, headers: &[(&str, &[u8])]) -> Cow<'a, [u8]> {
    match raw {
        Some(raw) => Cow::Borrowed(raw),
        None => Cow::Owned(start(line, headers, false)),
    }
}

/// The host a request names: authority, else the `Host` header, else an absolute target's.
pub(crate) fn request_host<'a>(req: &HttpRequest<'a>) -> Option<Cow<'a, [u8]>> {
    if let Some(h) = req.host {
        return Some(Cow::Borrowed(h.as_bytes()));
    }
    if let Some(h) = header(req.headers, "host") {
        return Some(h);
    }
    authority(req.uri_raw).map(Cow::Borrowed)
}

/// A request buffer; `None` when the request does not have it (rules on it cannot match).
pub(crate) fn request_field<'a>(req: &HttpRequest<'a>, field: Field) -> Option<Cow<'a, [u8]>> {
    let h = |name: &str| header(req.headers, name);
    let as_sent = req.raw_head.is_some();
    Some(match field {
        Field::Method => Cow::Borrowed(req.method.as_bytes()),
        Field::Uri => Cow::Owned(normalize_uri(req.uri_raw)),
        Field::UriRaw => Cow::Borrowed(req.uri_raw),
        Field::RequestLine => Cow::Owned(request_line(req)),
        Field::ReqHeader => Cow::Owned(header_block(req.headers, Some("cookie"), as_sent)),
        Field::ReqHeaderRaw => raw_header_block(req.raw_head, req.headers),
        Field::ReqHeaderNames => Cow::Owned(header_names(req.headers, as_sent)),
        Field::ReqCookie => h("cookie")?,
        Field::UserAgent => h("user-agent")?,
        Field::Host => Cow::Owned(normalize_host(&request_host(req)?)),
        Field::HostRaw => match req.host {
            Some(a) => Cow::Borrowed(a.as_bytes()),
            None => h("host")?,
        },
        Field::Accept => h("accept")?,
        Field::AcceptEnc => h("accept-encoding")?,
        Field::AcceptLang => h("accept-language")?,
        Field::ReqConnection => h("connection")?,
        Field::ReqContentType => h("content-type")?,
        Field::ReqContentLen => h("content-length")?,
        Field::Referer => h("referer")?,
        Field::ReqProtocol => Cow::Borrowed(req.version.as_str().as_bytes()),
        Field::ReqStart => Cow::Owned(start(request_line(req), req.headers, as_sent)),
        Field::ReqHead => head(request_line(req), req.raw_head, req.headers),
        _ => return None,
    })
}

/// A response buffer; `None` when the response does not have it.
pub(crate) fn response_field<'a>(resp: &HttpResponse<'a>, field: Field) -> Option<Cow<'a, [u8]>> {
    let h = |name: &str| header(resp.headers, name);
    let as_sent = resp.raw_head.is_some();
    Some(match field {
        Field::StatCode => Cow::Owned(resp.status.to_string().into_bytes()),
        Field::StatMsg => Cow::Borrowed(resp.reason.as_bytes()),
        Field::ResponseLine => Cow::Owned(response_line(resp)),
        Field::RespHeader => Cow::Owned(header_block(resp.headers, Some("set-cookie"), as_sent)),
        Field::RespHeaderRaw => raw_header_block(resp.raw_head, resp.headers),
        Field::RespHeaderNames => Cow::Owned(header_names(resp.headers, as_sent)),
        Field::RespCookie => h("set-cookie")?,
        Field::RespConnection => h("connection")?,
        Field::RespContentType => h("content-type")?,
        Field::RespContentLen => h("content-length")?,
        Field::RespProtocol => Cow::Borrowed(resp.version.as_str().as_bytes()),
        Field::RespStart => Cow::Owned(start(response_line(resp), resp.headers, as_sent)),
        Field::RespHead => head(response_line(resp), resp.raw_head, resp.headers),
        Field::Location => h("location")?,
        Field::Server => h("server")?,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_normalization() {
        let n = |s: &str| String::from_utf8(normalize_uri(s.as_bytes())).unwrap();
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/%61%2e%2E/x"), "/a../x");
        assert_eq!(n("/a/%2e%2e/b"), "/b");
        assert_eq!(n("/a%2Fb"), "/a/b");
        assert_eq!(n("/a\\..\\b"), "/b");
        assert_eq!(n("/x/../../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/p?q=%2e%2e/../x"), "/p?q=../../x");
        assert_eq!(n("/s?q=1;DROP%20TABLE"), "/s?q=1;DROP TABLE");
        assert_eq!(n("/bad%zz%4"), "/bad%zz%4");
        assert_eq!(n("http://Example.com:8080/a/b?c"), "/a/b?c");
        assert_eq!(n("http://example.com"), "/");
        assert_eq!(n("/dir/"), "/dir/");
        assert_eq!(n("/dir/."), "/dir/");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("user-agent"), "User-Agent");
        assert_eq!(canonical_name("USER-AGENT"), "User-Agent");
        assert_eq!(canonical_name("Content-Type"), "Content-Type");
        assert_eq!(canonical_name("etag"), "ETag");
        assert_eq!(canonical_name("x-forwarded-for"), "X-Forwarded-For");
    }

    #[test]
    fn buffers() {
        let headers: &[(&str, &[u8])] = &[
            ("host", b"Example.COM:8080"),
            ("user-agent", b"curl/8"),
            ("cookie", b"a=b"),
            ("accept", b"x"),
            ("Accept", b"y"),
        ];
        let req = HttpRequest {
            method: "GET",
            uri_raw: b"/a/../b?x=1",
            host: None,
            headers,
            version: HttpVersion::Http11,
            raw_head: None,
        };
        let f =
            |field| request_field(&req, field).map(|c| String::from_utf8(c.into_owned()).unwrap());
        assert_eq!(f(Field::Uri).unwrap(), "/b?x=1");
        assert_eq!(f(Field::Host).unwrap(), "example.com");
        assert_eq!(f(Field::HostRaw).unwrap(), "Example.COM:8080");
        assert_eq!(f(Field::RequestLine).unwrap(), "GET /a/../b?x=1 HTTP/1.1");
        assert_eq!(
            f(Field::ReqHeader).unwrap(),
            "Host: Example.COM:8080\r\nUser-Agent: curl/8\r\nAccept: x, y\r\n"
        );
        assert_eq!(
            f(Field::ReqHeaderNames).unwrap(),
            "\r\nHost\r\nUser-Agent\r\nCookie\r\nAccept\r\nAccept\r\n\r\n"
        );
        assert_eq!(f(Field::ReqCookie).unwrap(), "a=b");
        assert_eq!(f(Field::Referer), None);
        assert!(
            f(Field::ReqStart)
                .unwrap()
                .ends_with("Cookie: a=b\r\nAccept: x, y\r\n\r\n")
        );
        // Without the head as received, the head is `http.start`'s.
        assert_eq!(f(Field::ReqHead), f(Field::ReqStart));
        let raw = b"GET /a/../b?x=1  HTTP/1.1\nHost:Example.COM:8080\nuser-agent:  curl/8\n\n";
        let as_sent = HttpRequest {
            raw_head: Some(raw),
            ..req
        };
        assert_eq!(
            request_field(&as_sent, Field::ReqHead).unwrap().as_ref(),
            raw
        );
        assert_eq!(
            request_field(&as_sent, Field::ReqHeaderRaw)
                .unwrap()
                .as_ref(),
            b"Host:Example.COM:8080\nuser-agent:  curl/8\n\n"
        );
        let resp = HttpResponse {
            status: 404,
            reason: "Not Found",
            headers: &[("server", b"nginx"), ("set-cookie", b"s=1")],
            version: HttpVersion::Http11,
            raw_head: None,
        };
        let g = |field| {
            response_field(&resp, field).map(|c| String::from_utf8(c.into_owned()).unwrap())
        };
        assert_eq!(g(Field::StatCode).unwrap(), "404");
        assert_eq!(g(Field::ResponseLine).unwrap(), "HTTP/1.1 404 Not Found");
        assert_eq!(g(Field::RespHeader).unwrap(), "Server: nginx\r\n");
        assert_eq!(g(Field::RespCookie).unwrap(), "s=1");
        assert_eq!(normalize_host(b"[::1]:80"), b"[::1]");
        assert_eq!(normalize_host(b"Host.example."), b"host.example");
    }
}
