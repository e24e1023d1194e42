//! Validation and compilation of the L7 conditions of `to`: `http` entries (methods, paths,
//! hosts, headers), `tls.sni` and `dns.names`.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::format::{DnsDoc, HeadersDoc, HttpEntryDoc, SelectorDoc, TlsDoc};
use super::l7::{DnsCondition, HttpEntry, L7Conditions, TlsCondition};
use super::pattern::{NamePattern, PathPattern, ValuePattern};
use crate::diag::{Pos, Sink};
use crate::path::normalize_path;

/// Longest path pattern accepted.
const MAX_PATH_PATTERN: usize = 2048;

/// Reports `http`/`tls`/`dns` where they are not allowed: in `from` (`where_` = "from") or under
/// `not` anywhere.
pub(crate) fn reject_l7(sink: &mut Sink<'_>, s: &SelectorDoc, where_: &str) {
    let hint = if where_ == "from" {
        "they test what is sent to the destination, so they belong at the top level of `to`"
    } else {
        "write a deny rule with these conditions instead"
    };
    if let Some(h) = &s.http {
        sink.error(
            h.referenced,
            format!("`http` is not allowed in `{where_}`: {hint}"),
        );
    }
    if let Some(t) = &s.tls {
        sink.error(
            t.referenced,
            format!("`tls` is not allowed in `{where_}`: {hint}"),
        );
    }
    if let Some(d) = &s.dns {
        sink.error(
            d.referenced,
            format!("`dns` is not allowed in `{where_}`: {hint}"),
        );
    }
}

/// Compiles the `http`, `tls` and `dns` of a `to` selector; `None` when it has none.
pub(crate) fn compile_l7(sink: &mut Sink<'_>, to: &SelectorDoc) -> Option<L7Conditions> {
    if to.http.is_none() && to.tls.is_none() && to.dns.is_none() {
        return None;
    }
    let http = to.http.as_ref().map(|h| {
        if h.value.is_empty() {
            sink.error(
                h.referenced,
                "empty `http` list would match no request; give at least one entry (`{}` matches every request)",
            );
        }
        h.value
            .iter()
            .map(|e| compile_http_entry(sink, &e.value))
            .collect::<Vec<_>>()
            .into_boxed_slice()
    });
    let tls = to.tls.as_ref().map(|t| compile_tls(sink, &t.value));
    let dns = to.dns.as_ref().map(|d| compile_dns(sink, &d.value));
    Some(L7Conditions { http, tls, dns })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn empty_list(sink: &mut Sink<'_>, at: Pos, field: &str) {
    sink.error(
        at,
        format!("empty `{field}` list (it would match nothing); omit the field to match any"),
    );
}

fn compile_http_entry(sink: &mut Sink<'_>, e: &HttpEntryDoc) -> HttpEntry {
    let methods = e.methods.as_ref().map(|m| {
        if m.items.is_empty() {
            empty_list(sink, m.at, "methods");
        }
        let mut out: Vec<Box<str>> = Vec::with_capacity(m.items.len());
        for (text, at) in &m.items {
            if text.is_empty() || !text.bytes().all(is_tchar) {
                sink.error(
                    *at,
                    format!(
                        "invalid method `{}`: a method is a token of letters, digits and !#$%&'*+-.^_`|~",
                        text.escape_debug()
                    ),
                );
                continue;
            }
            if text.bytes().any(|b| b.is_ascii_lowercase()) {
                sink.warning(
                    *at,
                    format!(
                        "method `{text}` is not upper case: methods are case-sensitive, so it matches only requests that send `{text}` (did you mean `{}`?)",
                        text.to_ascii_uppercase()
                    ),
                );
            }
            if !out.iter().any(|m| **m == **text) {
                out.push(text.as_str().into());
            }
        }
        out.into_boxed_slice()
    });
    let paths = e.paths.as_ref().map(|p| {
        if p.items.is_empty() {
            empty_list(sink, p.at, "paths");
        }
        p.items
            .iter()
            .filter_map(|(text, at)| compile_path(sink, text, *at))
            .collect::<Vec<_>>()
            .into_boxed_slice()
    });
    let hosts = e.hosts.as_ref().map(|h| {
        if h.items.is_empty() {
            empty_list(sink, h.at, "hosts");
        }
        h.items
            .iter()
            .filter_map(|(text, at)| compile_name(sink, text, *at, NameField::Host))
            .collect::<Vec<_>>()
            .into_boxed_slice()
    });
    let headers = e
        .headers
        .as_ref()
        .map(|h| compile_headers(sink, h))
        .unwrap_or_default();
    HttpEntry {
        methods,
        paths,
        hosts,
        headers,
    }
}

/// A `paths` pattern: starts with `/`, no query, in normalized form (requests are compared
/// normalized, so anything else could never match), `**` only as a whole segment.
fn compile_path(sink: &mut Sink<'_>, text: &str, at: Pos) -> Option<PathPattern> {
    let bad = |sink: &mut Sink<'_>, why: String| {
        sink.error(
            at,
            format!("invalid path pattern `{}`: {why}", text.escape_debug()),
        );
        None
    };
    if text.len() > MAX_PATH_PATTERN {
        return bad(sink, format!("longer than {MAX_PATH_PATTERN} bytes"));
    }
    if !text.starts_with('/') {
        return bad(sink, "it must start with `/`".to_owned());
    }
    if text.contains(['?', '#']) {
        return bad(
            sink,
            "paths are compared without the query string; remove `?` and what follows".to_owned(),
        );
    }
    match normalize_path(text) {
        Err(e) => return bad(sink, e.to_string()),
        Ok(n) if n != text => {
            return bad(
                sink,
                format!(
                    "requests are compared by their normalized path, so this could never match; write `{n}`"
                ),
            );
        }
        Ok(_) => {}
    }
    if text.split('/').any(|seg| seg.contains("**") && seg != "**") {
        return bad(
            sink,
            "`**` must be a whole path segment (`/a/**/b`); use `*` within a segment".to_owned(),
        );
    }
    Some(PathPattern::new(text))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameField {
    Host,
    Sni,
    Dns,
}

/// A DNS name of letters, digits, `-` and `_`, labels of 1-63, at most 253 in all.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// A `hosts`, `tls.sni` or `dns.names` pattern: a name or `*.name`; hosts may also be IP
/// literals.
fn compile_name(sink: &mut Sink<'_>, text: &str, at: Pos, field: NameField) -> Option<NamePattern> {
    let what = match field {
        NameField::Host => "host",
        NameField::Sni => "SNI",
        NameField::Dns => "DNS name",
    };
    let bad = |sink: &mut Sink<'_>, why: &str| {
        sink.error(
            at,
            format!("invalid {what} pattern `{}`: {why}", text.escape_debug()),
        );
        None
    };
    if text == "*" {
        return bad(sink, "omit the field to match any name");
    }
    let is_ip = text.parse::<Ipv4Addr>().is_ok()
        || text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .is_some_and(|t| t.parse::<Ipv6Addr>().is_ok());
    if is_ip {
        match field {
            NameField::Sni => return bad(sink, "SNI never carries an IP address (RFC 6066)"),
            NameField::Dns => {
                return bad(
                    sink,
                    "a query asks for a name; reverse lookups ask for `*.in-addr.arpa` names",
                );
            }
            NameField::Host => {}
        }
        return Some(NamePattern::new(text));
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return bad(sink, "write an IPv6 host in brackets, e.g. `[fd00::1]`");
    }
    if text.ends_with('.') {
        return bad(
            sink,
            "remove the trailing `.` (names are compared without it)",
        );
    }
    let name = text.strip_prefix("*.").unwrap_or(text);
    if name.contains('*') {
        return bad(
            sink,
            "a wildcard is allowed only as a whole first label (`*.corp.example`)",
        );
    }
    if field == NameField::Host && name.contains(':') {
        return bad(sink, "hosts are compared without the port; remove `:port`");
    }
    if !is_dns_name(name) {
        return bad(
            sink,
            "expected a DNS name of letters, digits, `-` and `_` (labels of 1-63 characters), or `*.` and one",
        );
    }
    Some(NamePattern::new(text))
}

fn compile_headers(
    sink: &mut Sink<'_>,
    h: &Spanned<HeadersDoc>,
) -> Box<[(HeaderName, ValuePattern)]> {
    if h.value.0.is_empty() {
        sink.error(
            h.referenced,
            "empty `headers` map; omit the field to match any headers",
        );
    }
    let mut out: Vec<(HeaderName, ValuePattern)> = Vec::with_capacity(h.value.0.len());
    for (name, value) in &h.value.0 {
        let at = Pos::from(name.referenced);
        let Ok(hn) = HeaderName::from_bytes(name.value.as_bytes()) else {
            sink.error(
                at,
                format!(
                    "invalid header name `{}`: use a token of letters, digits and !#$%&'*+-.^_`|~",
                    name.value.escape_debug()
                ),
            );
            continue;
        };
        if out.iter().any(|(n, _)| *n == hn) {
            sink.error(
                at,
                format!("header `{hn}` is given twice (names are case-insensitive)"),
            );
            continue;
        }
        if hn == http::header::HOST {
            sink.warning(
                at,
                "match the host with `hosts`: it also covers HTTP/2, where the host is not a `host` header",
            );
        }
        let v = &value.value.0;
        let vat = Pos::from(value.referenced);
        if HeaderValue::from_str(v).is_err() {
            sink.error(
                vat,
                format!(
                    "invalid header value pattern `{}`: use visible ASCII characters and spaces",
                    v.escape_debug()
                ),
            );
            continue;
        }
        if v.starts_with([' ', '\t']) || v.ends_with([' ', '\t']) {
            sink.error(
                vat,
                format!(
                    "header value pattern `{v}` starts or ends with a space, which field values never do"
                ),
            );
            continue;
        }
        out.push((hn, ValuePattern(v.as_str().into())));
    }
    out.into_boxed_slice()
}

fn compile_tls(sink: &mut Sink<'_>, t: &TlsDoc) -> TlsCondition {
    let sni = t.sni.as_ref().map(|s| {
        if s.items.is_empty() {
            empty_list(sink, s.at, "sni");
        }
        s.items
            .iter()
            .filter_map(|(text, at)| compile_name(sink, text, *at, NameField::Sni))
            .collect::<Vec<_>>()
            .into_boxed_slice()
    });
    TlsCondition { sni }
}

fn compile_dns(sink: &mut Sink<'_>, d: &DnsDoc) -> DnsCondition {
    let names = d.names.as_ref().map(|n| {
        if n.items.is_empty() {
            empty_list(sink, n.at, "names");
        }
        n.items
            .iter()
            .filter_map(|(text, at)| compile_name(sink, text, *at, NameField::Dns))
            .collect::<Vec<_>>()
            .into_boxed_slice()
    });
    DnsCondition { names }
}
