//! Rules text → [`Rule`]s, [`Skipped`] rules and [`RuleError`]s.

use super::content::{self, unquote};
use super::header::{AddrExpr, PortExpr};
use super::pcre::{self, PcreIssue};
use super::*;

/// Rules longer than this (after joining continuation lines) are refused.
const MAX_RULE_LEN: usize = 64 * 1024;
/// More payload keywords than this in one rule are refused (bounds matching work).
const MAX_ITEMS: usize = 256;

/// The outcome of reading one rules text.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Rules eastwall can evaluate, in text order.
    pub rules: Vec<Rule>,
    /// Well-formed rules that use something eastwall does not implement.
    pub skipped: Vec<Skipped>,
    /// Malformed rules.
    pub errors: Vec<RuleError>,
}

/// Parse one rules text (the contents of a `.rules` file) named `source`.
///
/// Never fails as a whole: each rule is loaded, skipped or reported as an error on its own.
/// Lines starting with `#` are comments (disabled rules); a line ending with `\` continues
/// on the next.
pub fn parse_rules(source: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut idx = 0;
    while idx < lines.len() {
        let first = idx;
        let trimmed = lines[idx].trim();
        idx += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // Join continuation lines, remembering where each piece starts for columns.
        let mut joined = String::new();
        let mut pieces: Vec<(usize, usize)> = Vec::new(); // (offset in joined, line index)
        let mut line_idx = first;
        loop {
            let line = lines[line_idx];
            pieces.push((joined.len(), line_idx));
            let body = line.trim_end();
            match body.strip_suffix('\\') {
                Some(cont) if idx < lines.len() => {
                    joined.push_str(cont);
                    line_idx = idx;
                    idx += 1;
                }
                _ => {
                    joined.push_str(line);
                    break;
                }
            }
        }
        let locate = |at: usize| -> (u32, u32) {
            let (start, li) = pieces
                .iter()
                .rev()
                .find(|(start, _)| *start <= at)
                .copied()
                .unwrap_or((0, first));
            let line = lines[li];
            let within = at.saturating_sub(start).min(line.len());
            let col = line.char_indices().take_while(|(i, _)| *i < within).count();
            (li as u32 + 1, col as u32 + 1)
        };
        let rule_line = first as u32 + 1;
        match parse_rule(&joined) {
            Ok(mut rule) => {
                rule.source = source.to_string();
                rule.line = rule_line;
                out.rules.push(rule);
            }
            Err(Issue::Skip { sid, reason }) => out.skipped.push(Skipped {
                source: source.to_string(),
                line: rule_line,
                sid,
                reason,
            }),
            Err(Issue::Error { at, message }) => {
                let (line, col) = locate(at);
                out.errors.push(RuleError {
                    source: source.to_string(),
                    line,
                    col,
                    message,
                });
            }
        }
    }
    out
}

/// Why one rule did not load.
#[derive(Debug)]
enum Issue {
    /// Malformed, at this byte offset of the rule text.
    Error { at: usize, message: String },
    /// Well-formed but not supported.
    Skip {
        sid: Option<u32>,
        reason: SkipReason,
    },
}

fn err(at: usize, message: impl Into<String>) -> Issue {
    Issue::Error {
        at,
        message: message.into(),
    }
}

/// Next header token starting at `pos`: whitespace-separated, brackets kept together.
fn next_token(text: &str, pos: &mut usize) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    while *pos < bytes.len() && bytes[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
    if *pos >= bytes.len() || bytes[*pos] == b'(' {
        return None;
    }
    let start = *pos;
    let mut depth = 0i32;
    while *pos < bytes.len() {
        match bytes[*pos] {
            b'[' => depth += 1,
            b']' => depth -= 1,
            b'(' if depth <= 0 => break,
            c if c.is_ascii_whitespace() && depth <= 0 => break,
            _ => {}
        }
        *pos += 1;
    }
    Some((start, text[start..*pos].to_string()))
}

/// One `name[:value];` option with the byte offset of its name.
struct Opt<'a> {
    name: &'a str,
    value: Option<&'a str>,
    at: usize,
    value_at: usize,
}

/// Split the inside of the parentheses into options: `;` ends an option unless escaped.
fn split_options(text: &str, base: usize) -> Result<Vec<Opt<'_>>, Issue> {
    let bytes = text.as_bytes();
    let mut opts = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        let mut escaped = false;
        let mut colon = None;
        while i < bytes.len() {
            let b = bytes[i];
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b';' {
                break;
            } else if b == b':' && colon.is_none() {
                colon = Some(i);
            }
            i += 1;
        }
        let end = i;
        i += 1; // past ';' (or the end)
        let (name, value, value_at) = match colon {
            Some(c) => (&text[start..c], Some(text[c + 1..end].trim()), c + 1),
            None => (&text[start..end], None, end),
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(err(base + start, "empty option"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            return Err(err(base + start, format!("invalid option name `{name}`")));
        }
        let value_at =
            base + value_at + text[value_at..end].len() - text[value_at..end].trim_start().len();
        opts.push(Opt {
            name,
            value,
            at: base + start,
            value_at,
        });
    }
    Ok(opts)
}

/// Remove the rule-level escapes `\"`, `\;`, `\\` from a quoted string value.
fn unescape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('"' | ';' | '\\' | ':')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sticky_buffer(name: &str) -> Option<Buffer> {
    Some(match name {
        "pkt_data" => Buffer::Stream,
        "http.uri" => Buffer::HttpUri,
        "http.uri.raw" => Buffer::HttpUriRaw,
        "http.method" => Buffer::HttpMethod,
        "http.request_line" | "http_request_line" => Buffer::HttpRequestLine,
        "http.request_body" => Buffer::HttpRequestBody,
        "http.header" => Buffer::HttpHeader,
        "http.header.raw" => Buffer::HttpHeaderRaw,
        "http.header_names" | "http_header_names" => Buffer::HttpHeaderNames,
        "http.cookie" => Buffer::HttpCookie,
        "http.user_agent" => Buffer::HttpUserAgent,
        "http.host" => Buffer::HttpHost,
        "http.host.raw" => Buffer::HttpHostRaw,
        "http.accept" | "http_accept" => Buffer::HttpAccept,
        "http.accept_enc" | "http_accept_enc" => Buffer::HttpAcceptEnc,
        "http.accept_lang" | "http_accept_lang" => Buffer::HttpAcceptLang,
        "http.connection" | "http_connection" => Buffer::HttpConnection,
        "http.content_type" | "http_content_type" => Buffer::HttpContentType,
        "http.content_len" | "http_content_len" => Buffer::HttpContentLen,
        "http.referer" | "http_referer" => Buffer::HttpReferer,
        "http.protocol" | "http_protocol" => Buffer::HttpProtocol,
        "http.start" | "http_start" => Buffer::HttpStart,
        "http.stat_code" => Buffer::HttpStatCode,
        "http.stat_msg" => Buffer::HttpStatMsg,
        "http.response_line" | "http_response_line" => Buffer::HttpResponseLine,
        "http.location" => Buffer::HttpLocation,
        "http.server" => Buffer::HttpServer,
        "http.response_body" => Buffer::HttpResponseBody,
        "file.data" | "file_data" => Buffer::FileData,
        "tls.sni" | "tls_sni" => Buffer::TlsSni,
        "tls.cert_subject" | "tls_cert_subject" => Buffer::TlsCertSubject,
        "tls.cert_issuer" | "tls_cert_issuer" => Buffer::TlsCertIssuer,
        "tls.cert_serial" | "tls_cert_serial" => Buffer::TlsCertSerial,
        "tls.certs" => Buffer::TlsCerts,
        "tls.cert_fingerprint" | "tls_cert_fingerprint" => Buffer::TlsCertFingerprint,
        "ja3.hash" | "ja3_hash" => Buffer::Ja3Hash,
        "ja3.string" | "ja3_string" => Buffer::Ja3String,
        "ja3s.hash" | "ja3s_hash" => Buffer::Ja3sHash,
        "ja3s.string" | "ja3s_string" => Buffer::Ja3sString,
        "ja4.hash" => Buffer::Ja4Hash,
        "dns.query" | "dns_query" => Buffer::DnsQuery,
        _ => return None,
    })
}

fn content_modifier_buffer(name: &str) -> Option<Buffer> {
    Some(match name {
        "http_uri" => Buffer::HttpUri,
        "http_raw_uri" => Buffer::HttpUriRaw,
        "http_method" => Buffer::HttpMethod,
        "http_client_body" => Buffer::HttpRequestBody,
        "http_header" => Buffer::HttpHeader,
        "http_raw_header" => Buffer::HttpHeaderRaw,
        "http_cookie" | "http_raw_cookie" => Buffer::HttpCookie,
        "http_user_agent" => Buffer::HttpUserAgent,
        "http_host" => Buffer::HttpHost,
        "http_raw_host" => Buffer::HttpHostRaw,
        "http_stat_code" => Buffer::HttpStatCode,
        "http_stat_msg" => Buffer::HttpStatMsg,
        "http_server_body" => Buffer::HttpResponseBody,
        _ => return None,
    })
}

fn transform(name: &str) -> Option<Transform> {
    Some(match name {
        "dotprefix" => Transform::DotPrefix,
        "to_lowercase" => Transform::ToLowercase,
        "to_uppercase" => Transform::ToUppercase,
        "strip_whitespace" => Transform::StripWhitespace,
        "compress_whitespace" => Transform::CompressWhitespace,
        "url_decode" => Transform::UrlDecode,
        "header_lowercase" => Transform::HeaderLowercase,
        "strip_pseudo_headers" => Transform::StripPseudoHeaders,
        "to_md5" => Transform::ToMd5,
        "to_sha1" => Transform::ToSha1,
        "to_sha256" => Transform::ToSha256,
        _ => return None,
    })
}

/// Transforms Suricata has that eastwall does not (so the rule is skipped, not an error).
const UNSUPPORTED_TRANSFORMS: &[&str] = &["pcrexform", "xor", "from_base64", "casechange"];

/// Keywords eastwall accepts without effect on matching, and why.
/// `target` only labels EVE output; `rawbytes` is the default here (no Telnet/HTTP
/// normalization of the raw stream); `tag` asks for logging more packets of the flow,
/// which eastwall does not do; the alert itself is unaffected.
const NO_EFFECT: &[&str] = &["target", "rawbytes", "tag"];

fn parse_u32(v: &str, at: usize, what: &str) -> Result<u32, Issue> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| err(at, format!("{what} must be a number, got `{}`", v.trim())))
}

/// A number, or the number of a `byte_extract` variable defined before (`vars`, in order).
fn num_or_var<T: std::str::FromStr + Default>(
    v: &str,
    at: usize,
    what: &str,
    vars: &[String],
) -> Result<(T, Option<u8>), Issue> {
    let v = v.trim();
    match v.parse::<T>() {
        Ok(n) => Ok((n, None)),
        Err(_) if v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => {
            match vars.iter().position(|name| name == v) {
                Some(i) => Ok((T::default(), u8::try_from(i).ok())),
                None => Err(err(
                    at,
                    format!("{what}: unknown byte_extract variable `{v}`"),
                )),
            }
        }
        Err(_) => Err(err(at, format!("{what} must be a number, got `{v}`"))),
    }
}

/// A number (a variable is not supported there).
fn num_only<T: std::str::FromStr + Default>(
    v: &str,
    at: usize,
    what: &str,
    vars: &[String],
) -> Result<T, Issue> {
    match num_or_var(v, at, what, vars)? {
        (n, None) => Ok(n),
        (_, Some(_)) => Err(Issue::Skip {
            sid: None,
            reason: SkipReason::new(SkipKind::KeywordValue, format!("{what} from a variable")),
        }),
    }
}

fn parse_size_cmp(v: &str, at: usize, what: &str) -> Result<SizeCmp, Issue> {
    let v = v.trim();
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| err(at, format!("invalid {what} value `{v}`")))
    };
    if let Some((a, b)) = v.split_once("<>") {
        let (a, b) = (num(a)?, num(b)?);
        if a >= b {
            return Err(err(at, format!("invalid {what} range `{v}`")));
        }
        return Ok(SizeCmp::Between(a, b));
    }
    if let Some(r) = v.strip_prefix("<=") {
        return Ok(SizeCmp::Le(num(r)?));
    }
    if let Some(r) = v.strip_prefix(">=") {
        return Ok(SizeCmp::Ge(num(r)?));
    }
    if let Some(r) = v.strip_prefix('<') {
        return Ok(SizeCmp::Lt(num(r)?));
    }
    if let Some(r) = v.strip_prefix('>') {
        return Ok(SizeCmp::Gt(num(r)?));
    }
    if let Some(r) = v.strip_prefix('!') {
        return Ok(SizeCmp::Ne(num(r)?));
    }
    if let Some(r) = v.strip_prefix('=') {
        return Ok(SizeCmp::Eq(num(r)?));
    }
    if let Some((a, b)) = v.split_once('-') {
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(err(at, format!("invalid {what} range `{v}`")));
        }
        return Ok(SizeCmp::Between(a.saturating_sub(1), b.saturating_add(1)));
    }
    Ok(SizeCmp::Eq(num(v)?))
}

fn parse_track(v: &str, at: usize) -> Result<Track, Issue> {
    match v.trim() {
        "by_src" => Ok(Track::BySrc),
        "by_dst" => Ok(Track::ByDst),
        "by_both" => Ok(Track::ByBoth),
        "by_rule" => Ok(Track::ByRule),
        "by_flow" => Err(Issue::Skip {
            sid: None,
            reason: SkipReason::new(SkipKind::KeywordValue, "track by_flow"),
        }),
        other => Err(err(at, format!("invalid track `{other}`"))),
    }
}

/// `key value, key value` pairs of `threshold` / `detection_filter`.
fn key_values(v: &str, at: usize) -> Result<Vec<(&str, &str)>, Issue> {
    v.split(',')
        .map(|kv| {
            let kv = kv.trim();
            kv.split_once(char::is_whitespace)
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| err(at, format!("expected `key value`, got `{kv}`")))
        })
        .collect()
}

fn parse_flowbit_name(n: &str, at: usize) -> Result<String, Issue> {
    let n = n.trim();
    if n.is_empty()
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(err(at, format!("invalid flowbit name `{n}`")));
    }
    Ok(n.to_string())
}

fn number_format(flags: &[&str]) -> NumberFormat {
    if flags.contains(&"string") {
        let base = if flags.contains(&"hex") {
            16
        } else if flags.contains(&"oct") {
            8
        } else {
            10
        };
        NumberFormat::String(base)
    } else if flags.contains(&"little") {
        NumberFormat::Binary(Endian::Little)
    } else {
        NumberFormat::Binary(Endian::Big)
    }
}

fn parse_bitmask(flags: &[&str], at: usize) -> Result<Option<u64>, Issue> {
    for f in flags {
        if let Some(m) = f.strip_prefix("bitmask") {
            let m = m.trim();
            let m = m
                .strip_prefix("0x")
                .or_else(|| m.strip_prefix("0X"))
                .unwrap_or(m);
            return u64::from_str_radix(m, 16)
                .map(Some)
                .map_err(|_| err(at, "invalid bitmask"));
        }
    }
    Ok(None)
}

fn check_byte_flags(flags: &[&str], known: &[&str], at: usize) -> Result<(), Issue> {
    for f in flags {
        let word = f.split_whitespace().next().unwrap_or("");
        if word == "dce" {
            return Err(Issue::Skip {
                sid: None,
                reason: SkipReason::new(SkipKind::KeywordValue, "dce byte order"),
            });
        }
        if !known.contains(&word) {
            return Err(err(at, format!("unknown option `{f}`")));
        }
    }
    Ok(())
}

fn parse_byte_test(v: &str, at: usize, vars: &[String]) -> Result<ByteTest, Issue> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() < 4 {
        return Err(err(at, "byte_test needs bytes, operator, value, offset"));
    }
    let nbytes: u8 = num_only(parts[0], at, "byte_test bytes", vars)?;
    let (negated, op_text) = match parts[1].strip_prefix('!') {
        Some(o) => (true, o.trim()),
        None => (false, parts[1]),
    };
    let op = match op_text {
        "<" => ByteOp::Lt,
        ">" => ByteOp::Gt,
        "=" => ByteOp::Eq,
        "<=" => ByteOp::Le,
        ">=" => ByteOp::Ge,
        "&" => ByteOp::And,
        "^" => ByteOp::Xor,
        other => return Err(err(at, format!("invalid byte_test operator `{other}`"))),
    };
    let value_text = parts[2];
    let (value, value_var) = if let Some(h) = value_text
        .strip_prefix("0x")
        .or_else(|| value_text.strip_prefix("0X"))
    {
        (
            u64::from_str_radix(h, 16).map_err(|_| err(at, "invalid byte_test value"))?,
            None,
        )
    } else {
        num_or_var::<u64>(value_text, at, "byte_test value", vars)?
    };
    let (offset, offset_var) = num_or_var::<i32>(parts[3], at, "byte_test offset", vars)?;
    let flags = &parts[4..];
    check_byte_flags(
        flags,
        &[
            "relative", "big", "little", "string", "hex", "dec", "oct", "bitmask",
        ],
        at,
    )?;
    let format = number_format(flags);
    // As text, 0 bytes is the rest of the buffer (ET uses it on `http.content_len`).
    if !(nbytes == 0 && matches!(format, NumberFormat::String(_))) {
        check_width(nbytes, format, at, "byte_test")?;
    }
    Ok(ByteTest {
        nbytes,
        op,
        negated,
        value,
        offset,
        relative: flags.contains(&"relative"),
        format,
        bitmask: parse_bitmask(flags, at)?,
        vars: VarRefs {
            offset: offset_var,
            value: value_var,
            ..VarRefs::default()
        },
    })
}

fn parse_byte_jump(v: &str, at: usize, vars: &[String]) -> Result<ByteJump, Issue> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() < 2 {
        return Err(err(at, "byte_jump needs bytes and offset"));
    }
    let nbytes: u8 = num_only(parts[0], at, "byte_jump bytes", vars)?;
    let (offset, offset_var) = num_or_var::<i32>(parts[1], at, "byte_jump offset", vars)?;
    let flags = &parts[2..];
    check_byte_flags(
        flags,
        &[
            "relative",
            "big",
            "little",
            "string",
            "hex",
            "dec",
            "oct",
            "align",
            "from_beginning",
            "from_end",
            "multiplier",
            "post_offset",
            "bitmask",
        ],
        at,
    )?;
    let format = number_format(flags);
    check_width(nbytes, format, at, "byte_jump")?;
    let mut multiplier = 1;
    let mut post_offset = 0;
    for f in flags {
        if let Some(m) = f.strip_prefix("multiplier") {
            multiplier = parse_u32(m, at, "multiplier")?;
        }
        if let Some(p) = f.strip_prefix("post_offset") {
            post_offset = num_only(p, at, "post_offset", vars)?;
        }
    }
    Ok(ByteJump {
        nbytes,
        offset,
        relative: flags.contains(&"relative"),
        format,
        multiplier,
        align: flags.contains(&"align"),
        from_beginning: flags.contains(&"from_beginning"),
        from_end: flags.contains(&"from_end"),
        post_offset,
        bitmask: parse_bitmask(flags, at)?,
        vars: VarRefs {
            offset: offset_var,
            ..VarRefs::default()
        },
    })
}

/// `byte_extract:<bytes>,<offset>,<name>[,relative][,multiplier N][,big|little]
/// [,string][,hex|dec|oct][,align 2|4][,bitmask V]`; the name is defined for the keywords
/// after it.
fn parse_byte_extract(v: &str, at: usize, vars: &[String]) -> Result<(ByteExtract, String), Issue> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() < 3 {
        return Err(err(at, "byte_extract needs bytes, offset and a name"));
    }
    let nbytes: u8 = num_only(parts[0], at, "byte_extract bytes", vars)?;
    let offset: i32 = num_only(parts[1], at, "byte_extract offset", vars)?;
    let name = parts[2];
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(err(at, format!("invalid byte_extract name `{name}`")));
    }
    let flags = &parts[3..];
    if flags.contains(&"dce") {
        return Err(Issue::Skip {
            sid: None,
            reason: SkipReason::new(SkipKind::KeywordValue, "byte_extract dce"),
        });
    }
    check_byte_flags(
        flags,
        &[
            "relative",
            "big",
            "little",
            "string",
            "hex",
            "dec",
            "oct",
            "align",
            "multiplier",
            "bitmask",
        ],
        at,
    )?;
    let format = number_format(flags);
    check_width(nbytes, format, at, "byte_extract")?;
    let mut multiplier = 1;
    let mut align = 1;
    for f in flags {
        if let Some(m) = f.strip_prefix("multiplier") {
            multiplier = parse_u32(m, at, "multiplier")?;
        }
        if let Some(a) = f.strip_prefix("align") {
            align = match a.trim() {
                "2" => 2,
                "4" => 4,
                other => {
                    return Err(err(
                        at,
                        format!("byte_extract align must be 2 or 4, got `{other}`"),
                    ));
                }
            };
        }
    }
    let var = u8::try_from(vars.len())
        .ok()
        .filter(|n| *n < MAX_VARS)
        .ok_or_else(|| err(at, format!("more than {MAX_VARS} byte_extract variables")))?;
    Ok((
        ByteExtract {
            nbytes,
            offset,
            relative: flags.contains(&"relative"),
            format,
            multiplier,
            align,
            bitmask: parse_bitmask(flags, at)?,
            var,
        },
        name.to_string(),
    ))
}

/// `byte_extract` variables one rule may define (Suricata's limit is the same order).
pub(crate) const MAX_VARS: u8 = 8;

/// The bytes a `byte_*` keyword reads: 1 to 8 raw, 1 to 23 as text.
fn check_width(nbytes: u8, format: NumberFormat, at: usize, kw: &str) -> Result<(), Issue> {
    let max = if matches!(format, NumberFormat::String(_)) {
        23
    } else {
        8
    };
    if nbytes == 0 || nbytes > max {
        return Err(err(at, format!("{kw} reads 1 to {max} bytes")));
    }
    Ok(())
}

/// Where payload keywords go while options are read.
#[derive(Default)]
struct Payload {
    buffers: Vec<BufferMatch>,
    /// The sticky buffer in force and its transforms, resolved to an index on first use.
    sticky: Option<(Buffer, Vec<Transform>, Option<usize>)>,
    /// The last `content`: (buffer index, item index).
    last_content: Option<(usize, usize)>,
    /// The last `content` or `pcre`, for `fast_pattern` checks and relative keywords.
    items: usize,
    /// Where the rule's `base64_decode` is: (buffer index, item index).
    base64: Option<(usize, usize)>,
    /// `base64_data` is the sticky buffer: payload keywords go into the `base64_decode`.
    in_base64: bool,
    /// Names of the `byte_extract` variables, in order of definition.
    vars: Vec<String>,
}

/// The index [`Payload::current`] gives for `base64_data`.
const BASE64_DATA: usize = usize::MAX;

impl Payload {
    fn buffer_index(&mut self, buffer: Buffer, transforms: &[Transform]) -> usize {
        if let Some(i) = self
            .buffers
            .iter()
            .position(|b| b.buffer == buffer && b.transforms == transforms)
        {
            return i;
        }
        self.buffers.push(BufferMatch {
            buffer,
            transforms: transforms.to_vec(),
            items: Vec::new(),
        });
        self.buffers.len() - 1
    }

    /// The buffer payload keywords go to now.
    fn current(&mut self) -> usize {
        if self.in_base64 {
            return BASE64_DATA;
        }
        match self.sticky.take() {
            Some((b, t, Some(i))) => {
                self.sticky = Some((b, t, Some(i)));
                i
            }
            Some((b, t, None)) => {
                let i = self.buffer_index(b, &t);
                self.sticky = Some((b, t, Some(i)));
                i
            }
            None => self.buffer_index(Buffer::Stream, &[]),
        }
    }

    fn push(&mut self, buffer: usize, item: MatchItem, at: usize) -> Result<usize, Issue> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(err(at, format!("more than {MAX_ITEMS} payload keywords")));
        }
        let items = self
            .items_mut(buffer)
            .ok_or_else(|| err(at, "no such buffer"))?;
        items.push(item);
        Ok(items.len() - 1)
    }

    /// The keywords of a buffer, or of `base64_data`.
    fn items_mut(&mut self, buffer: usize) -> Option<&mut Vec<MatchItem>> {
        if buffer != BASE64_DATA {
            return self.buffers.get_mut(buffer).map(|b| &mut b.items);
        }
        let (b, i) = self.base64?;
        match self.buffers.get_mut(b)?.items.get_mut(i)? {
            MatchItem::Base64(d) => Some(&mut d.items),
            _ => None,
        }
    }

    fn last_content_mut(&mut self, at: usize, kw: &str) -> Result<&mut Content, Issue> {
        let (b, i) = self
            .last_content
            .ok_or_else(|| err(at, format!("`{kw}` needs a preceding content")))?;
        match self.items_mut(b).and_then(|items| items.get_mut(i)) {
            Some(MatchItem::Content(c)) => Ok(c),
            _ => Err(err(at, format!("`{kw}` needs a preceding content"))),
        }
    }
}

fn parse_rule(text: &str) -> Result<Rule, Issue> {
    if text.len() > MAX_RULE_LEN {
        return Err(err(0, "rule longer than 64 KiB"));
    }
    let mut pos = 0;
    let mut header = Vec::new();
    while let Some(tok) = next_token(text, &mut pos) {
        header.push(tok);
        if header.len() > 7 {
            break;
        }
    }
    let open = pos;
    if text.as_bytes().get(open) != Some(&b'(') {
        return Err(err(
            open.min(text.len()),
            "expected `(` after the rule header",
        ));
    }
    if header.len() != 7 {
        let at = header.last().map_or(0, |(a, _)| *a);
        return Err(err(
            at,
            format!(
                "rule header needs 7 fields (action protocol src sport direction dst dport), found {}",
                header.len()
            ),
        ));
    }
    let close = text
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| err(open, "missing `)` at the end of the options"))?;
    if !text[close + 1..].trim().is_empty() {
        return Err(err(close + 1, "text after the closing `)`"));
    }
    let opts = split_options(&text[open + 1..close], open + 1)?;

    // The sid first, so that skipped rules can be named.
    let mut sid = None;
    for o in &opts {
        if o.name == "sid" {
            let v = o.value.ok_or_else(|| err(o.at, "sid needs a value"))?;
            sid = Some(parse_u32(v, o.value_at, "sid")?);
        }
    }
    let sid = sid.ok_or_else(|| err(open, "rule has no sid"))?;
    let skip = |kind: SkipKind, what: &str| Issue::Skip {
        sid: Some(sid),
        reason: SkipReason::new(kind, what),
    };
    let with_sid = |issue: Issue| match issue {
        Issue::Skip { reason, .. } => Issue::Skip {
            sid: Some(sid),
            reason,
        },
        e => e,
    };

    let (action_at, action) = &header[0];
    let action = match action.as_str() {
        "alert" => RuleAction::Alert,
        "drop" => RuleAction::Drop,
        "reject" | "rejectsrc" | "rejectdst" | "rejectboth" => RuleAction::Reject,
        "pass" => RuleAction::Pass,
        other => return Err(err(*action_at, format!("unknown action `{other}`"))),
    };
    let (proto_at, proto) = &header[1];
    let protocol = match proto.as_str() {
        // The node hands over TCP streams (so packet-level `tcp-pkt` rules see the stream)
        // and UDP datagrams; `ip` rules see both, and no other IP protocol.
        "tcp" | "tcp-stream" | "tcp-pkt" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "ip" => Some(Protocol::Ip),
        "http" => Some(Protocol::Http),
        "http1" => Some(Protocol::Http1),
        "http2" => Some(Protocol::Http2),
        "tls" => Some(Protocol::Tls),
        "dns" => Some(Protocol::Dns),
        "smtp" => Some(Protocol::Smtp),
        "ftp" => Some(Protocol::Ftp),
        p if p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            None
        }
        other => return Err(err(*proto_at, format!("invalid protocol `{other}`"))),
    };
    let addr = |(at, s): &(usize, String)| {
        AddrExpr::parse(s).map_err(|e| err(*at, format!("invalid address: {e}")))
    };
    let port = |(at, s): &(usize, String)| {
        PortExpr::parse(s).map_err(|e| err(*at, format!("invalid port: {e}")))
    };
    let src = addr(&header[2])?;
    let src_ports = port(&header[3])?;
    let direction = match header[4].1.as_str() {
        "->" => HeaderDirection::Forward,
        "<>" => HeaderDirection::Both,
        other => {
            return Err(err(
                header[4].0,
                format!("invalid direction `{other}` (expected `->` or `<>`)"),
            ));
        }
    };
    let dst = addr(&header[5])?;
    let dst_ports = port(&header[6])?;

    let mut rule = Rule {
        source: String::new(),
        line: 0,
        action,
        protocol: protocol.unwrap_or(Protocol::Tcp),
        transport: protocol.and_then(Protocol::transport),
        src,
        src_ports,
        direction,
        dst,
        dst_ports,
        gid: 1,
        sid,
        rev: 0,
        msg: String::new(),
        classtype: None,
        priority: None,
        metadata: Vec::new(),
        references: Vec::new(),
        flow: FlowOptions::default(),
        buffers: Vec::new(),
        dsize: None,
        flowbits: Vec::new(),
        noalert: false,
        threshold: None,
        detection_filter: None,
        tls_version: None,
        stream_size: None,
        xbits: Vec::new(),
        flowints: Vec::new(),
    };
    // Interpret every option (so that errors are found) before deciding to skip.
    let mut first_skip: Option<Issue> = None;
    let mut payload = Payload::default();
    for o in &opts {
        match interpret(o, &mut rule, &mut payload) {
            Ok(()) => {}
            Err(Issue::Skip { reason, .. }) => {
                if first_skip.is_none() {
                    first_skip = Some(Issue::Skip {
                        sid: Some(sid),
                        reason,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
    if protocol.is_none() {
        return Err(skip(SkipKind::Protocol, proto));
    }
    if let Some(s) = first_skip {
        return Err(with_sid(s));
    }
    rule.buffers = payload
        .buffers
        .into_iter()
        .filter(|b| !b.items.is_empty())
        .collect();
    check_rule(&mut rule, open).map_err(with_sid)?;
    Ok(rule)
}

/// Consistency of buffers, protocol and direction.
fn check_rule(rule: &mut Rule, at: usize) -> Result<(), Issue> {
    let mut app: Option<Protocol> = None;
    let mut uses_stream = false;
    let mut request_only = false;
    let mut response_only = false;
    for b in &rule.buffers {
        match b.buffer.protocol() {
            None => uses_stream = true,
            Some(p) => {
                if app.is_some_and(|a| a != p) {
                    return Err(err(at, "rule mixes buffers of different protocols"));
                }
                app = Some(p);
            }
        }
        match b.buffer.fixed_dir() {
            Some(Dir::ToServer) => request_only = true,
            Some(Dir::ToClient) => response_only = true,
            None => {}
        }
    }
    // `stream_size` is decided where the raw stream is: with app-layer buffers it would be
    // decided on messages whose place in the stream the inspector may not be told.
    if rule.stream_size.is_some() {
        let what = if app.is_some() {
            Some("stream_size with app-layer buffers")
        } else if rule.protocol == Protocol::Udp {
            Some("stream_size on udp")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(Issue::Skip {
                sid: None,
                reason: SkipReason::new(SkipKind::MixedBuffers, what),
            });
        }
        if rule.protocol == Protocol::Ip {
            rule.transport = Some(Transport::Tcp);
        }
    }
    // `tls.version` is TLS state: a transport's rule with it is a TLS rule.
    if rule.tls_version.is_some() {
        match (app, rule.protocol) {
            (None | Some(Protocol::Tls), Protocol::Tcp | Protocol::Ip | Protocol::Tls) => {
                rule.protocol = Protocol::Tls;
                rule.transport = Some(Transport::Tcp);
            }
            _ => return Err(err(at, "`tls.version` in a rule of another protocol")),
        }
    }
    // SMTP rules may read the mail's attachments (`file.data`); nothing else of SMTP or FTP
    // is decoded, so rules on other buffers are not loaded.
    let mail_files = rule.protocol == Protocol::Smtp
        && !uses_stream
        && rule.buffers.iter().all(|b| b.buffer == Buffer::FileData);
    if let (Some(_), Protocol::Smtp | Protocol::Ftp, false) = (app, rule.protocol, mail_files) {
        let what = rule
            .buffers
            .iter()
            .find(|b| b.buffer != Buffer::Stream && b.buffer != Buffer::FileData)
            .map_or("payload with file.data", |b| b.buffer.keyword());
        return Err(Issue::Skip {
            sid: None,
            reason: SkipReason::new(
                SkipKind::KeywordValue,
                format!("{what} in {}", rule.protocol.as_str()),
            ),
        });
    }
    if let Some(p) = app.filter(|_| !mail_files) {
        // A transport's rule takes the app-layer protocol its buffers name. Suricata loads a
        // `udp` rule with HTTP or TLS buffers, which can never match (they run on TCP).
        if rule.protocol == Protocol::Udp && p.transport() == Some(Transport::Tcp) {
            return Err(Issue::Skip {
                sid: None,
                reason: SkipReason::new(SkipKind::Protocol, format!("{} over udp", p.as_str())),
            });
        }
        let fits = matches!(rule.protocol, Protocol::Tcp | Protocol::Udp | Protocol::Ip)
            || rule.protocol == p
            // HTTP buffers in an `http1` or `http2` rule: that version only.
            || (p == Protocol::Http && rule.protocol.is_http());
        if !fits {
            return Err(err(
                at,
                format!(
                    "buffer of another protocol in a `{}` rule",
                    rule.protocol.as_str()
                ),
            ));
        }
        if rule.protocol == Protocol::Ip {
            rule.transport = p.transport();
        }
        if matches!(rule.protocol, Protocol::Tcp | Protocol::Udp | Protocol::Ip) {
            rule.protocol = p;
        }
        if rule.dsize.is_some() {
            return Err(Issue::Skip {
                sid: None,
                reason: SkipReason::new(SkipKind::MixedBuffers, "dsize with app-layer buffers"),
            });
        }
        if uses_stream {
            if p != Protocol::Http {
                return Err(Issue::Skip {
                    sid: None,
                    reason: SkipReason::new(SkipKind::MixedBuffers, "payload with tls/dns buffers"),
                });
            }
            // Payload keywords of an HTTP rule inspect the message head as it was on the
            // wire (start line and headers): what the rule writer saw in the packet.
            for b in &mut rule.buffers {
                if b.buffer == Buffer::Stream {
                    b.buffer = Buffer::HttpHead;
                }
            }
        }
    }
    // As in Suricata, one rule inspects one direction.
    let conflict = (response_only && (request_only || rule.flow.dir == Some(Dir::ToServer)))
        || (request_only && rule.flow.dir == Some(Dir::ToClient));
    if conflict {
        return Err(err(at, "rule mixes keywords with conflicting directions"));
    }
    Ok(())
}

fn interpret(o: &Opt<'_>, rule: &mut Rule, p: &mut Payload) -> Result<(), Issue> {
    let name = o.name;
    let at = o.value_at;
    let value = || {
        o.value
            .ok_or_else(|| err(o.at, format!("`{name}` needs a value")))
    };
    let no_value = || match o.value {
        Some(_) => Err(err(o.at, format!("`{name}` takes no value"))),
        None => Ok(()),
    };
    if let Some(b) = sticky_buffer(name) {
        no_value()?;
        p.in_base64 = false;
        p.sticky = if b == Buffer::Stream {
            None
        } else {
            Some((b, Vec::new(), None))
        };
        return Ok(());
    }
    if let Some(b) = content_modifier_buffer(name) {
        no_value()?;
        let (bi, ii) = p
            .last_content
            .ok_or_else(|| err(o.at, format!("`{name}` needs a preceding content")))?;
        if bi == BASE64_DATA || p.buffers[bi].buffer != Buffer::Stream {
            return Err(err(
                o.at,
                format!("`{name}` after a content of another buffer"),
            ));
        }
        let item = p.buffers[bi].items.remove(ii);
        let target = p.buffer_index(b, &[]);
        p.buffers[target].items.push(item);
        p.last_content = Some((target, p.buffers[target].items.len() - 1));
        return Ok(());
    }
    if let Some(t) = transform(name) {
        no_value()?;
        match &mut p.sticky {
            Some((_, transforms, idx)) => {
                // After payload keywords, a transform starts a new instance of the buffer
                // for the keywords that follow.
                transforms.push(t);
                *idx = None;
            }
            None => {
                return Err(err(
                    o.at,
                    format!("transform `{name}` needs a sticky buffer"),
                ));
            }
        }
        return Ok(());
    }
    if UNSUPPORTED_TRANSFORMS.contains(&name) {
        return Err(Issue::Skip {
            sid: None,
            reason: SkipReason::new(SkipKind::Transform, name),
        });
    }
    if NO_EFFECT.contains(&name) {
        return Ok(());
    }
    match name {
        "msg" => {
            let v = value()?;
            let inner = unquote(v).ok_or_else(|| err(at, "msg must be a quoted string"))?;
            rule.msg = unescape_string(inner);
        }
        "sid" => {}
        "rev" => rule.rev = parse_u32(value()?, at, "rev")?,
        "gid" => rule.gid = parse_u32(value()?, at, "gid")?,
        "classtype" => {
            let v = value()?.trim();
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(at, format!("invalid classtype `{v}`")));
            }
            rule.classtype = Some(v.to_string());
        }
        "priority" => {
            let v = parse_u32(value()?, at, "priority")?;
            if !(1..=255).contains(&v) {
                return Err(err(at, "priority must be 1 to 255"));
            }
            rule.priority = Some(v as u8);
        }
        "metadata" => {
            for kv in value()?.split(',') {
                let kv = kv.trim();
                if kv.is_empty() {
                    continue;
                }
                let (k, v) = kv.split_once(char::is_whitespace).unwrap_or((kv, ""));
                rule.metadata.push((k.to_string(), v.trim().to_string()));
            }
        }
        "reference" => rule.references.push(value()?.trim().to_string()),
        "noalert" => {
            no_value()?;
            rule.noalert = true;
        }
        "flow" => {
            for f in value()?.split(',') {
                match f.trim() {
                    "established" => rule.flow.established = true,
                    "to_server" | "from_client" => rule.flow.dir = Some(Dir::ToServer),
                    "to_client" | "from_server" => rule.flow.dir = Some(Dir::ToClient),
                    // A stateful engine sees established streams; these add nothing.
                    "stateless" | "only_stream" | "no_frag" => {}
                    v @ ("not_established" | "no_stream" | "only_frag") => {
                        return Err(Issue::Skip {
                            sid: None,
                            reason: SkipReason::new(SkipKind::KeywordValue, format!("flow:{v}")),
                        });
                    }
                    other => return Err(err(at, format!("unknown flow option `{other}`"))),
                }
            }
        }
        "flowbits" => {
            let v = value()?;
            let (cmd, arg) = match v.split_once(',') {
                Some((c, a)) => (c.trim(), Some(a.trim())),
                None => (v.trim(), None),
            };
            let arg = || arg.ok_or_else(|| err(at, format!("flowbits:{cmd} needs a name")));
            let expr = |a: &str| -> Result<FlowbitExpr, Issue> {
                let (all, sep) = if a.contains('&') {
                    (true, '&')
                } else {
                    (false, '|')
                };
                if all && a.contains('|') {
                    return Err(err(at, "flowbits mixes `&` and `|`"));
                }
                let names = a
                    .split(sep)
                    .map(|n| parse_flowbit_name(n, at))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(FlowbitExpr { names, all })
            };
            match cmd {
                "noalert" => rule.noalert = true,
                "set" => rule
                    .flowbits
                    .push(Flowbit::Set(parse_flowbit_name(arg()?, at)?)),
                "unset" => rule
                    .flowbits
                    .push(Flowbit::Unset(parse_flowbit_name(arg()?, at)?)),
                "toggle" => rule
                    .flowbits
                    .push(Flowbit::Toggle(parse_flowbit_name(arg()?, at)?)),
                "isset" => rule.flowbits.push(Flowbit::IsSet(expr(arg()?)?)),
                "isnotset" => rule.flowbits.push(Flowbit::IsNotSet(expr(arg()?)?)),
                other => return Err(err(at, format!("unknown flowbits command `{other}`"))),
            }
        }
        "threshold" => {
            let mut kind = None;
            let mut track = None;
            let mut count = None;
            let mut seconds = None;
            for (k, v) in key_values(value()?, at)? {
                match k {
                    "type" => {
                        kind = Some(match v {
                            "limit" => ThresholdKind::Limit,
                            "threshold" => ThresholdKind::Threshold,
                            "both" => ThresholdKind::Both,
                            other => {
                                return Err(err(at, format!("invalid threshold type `{other}`")));
                            }
                        })
                    }
                    "track" => track = Some(parse_track(v, at)?),
                    "count" => count = Some(parse_u32(v, at, "count")?),
                    "seconds" => seconds = Some(parse_u32(v, at, "seconds")?),
                    other => return Err(err(at, format!("unknown threshold option `{other}`"))),
                }
            }
            match (kind, track, count, seconds) {
                (Some(kind), Some(track), Some(count), Some(seconds)) if count > 0 => {
                    rule.threshold = Some(Threshold {
                        kind,
                        track,
                        count,
                        seconds,
                    })
                }
                _ => return Err(err(at, "threshold needs type, track, count > 0, seconds")),
            }
        }
        "detection_filter" => {
            let mut track = None;
            let mut count = None;
            let mut seconds = None;
            for (k, v) in key_values(value()?, at)? {
                match k {
                    "track" => track = Some(parse_track(v, at)?),
                    "count" => count = Some(parse_u32(v, at, "count")?),
                    "seconds" => seconds = Some(parse_u32(v, at, "seconds")?),
                    other => {
                        return Err(err(
                            at,
                            format!("unknown detection_filter option `{other}`"),
                        ));
                    }
                }
            }
            match (track, count, seconds) {
                (Some(track), Some(count), Some(seconds)) if count > 0 => {
                    rule.detection_filter = Some(DetectionFilter {
                        track,
                        count,
                        seconds,
                    })
                }
                _ => return Err(err(at, "detection_filter needs track, count > 0, seconds")),
            }
        }
        "content" => {
            let v = value()?;
            let (negated, v) = match v.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, v),
            };
            let pattern = content::decode(v).map_err(|e| err(at, e.to_string()))?;
            let buf = p.current();
            let ii = p.push(
                buf,
                MatchItem::Content(Content {
                    pattern,
                    nocase: false,
                    negated,
                    offset: None,
                    depth: None,
                    distance: None,
                    within: None,
                    startswith: false,
                    endswith: false,
                    fast_pattern: None,
                    vars: VarRefs::default(),
                }),
                at,
            )?;
            p.last_content = Some((buf, ii));
        }
        "nocase" => {
            no_value()?;
            p.last_content_mut(o.at, name)?.nocase = true;
        }
        "offset" | "depth" => {
            let (n, var) = num_or_var::<u32>(value()?, at, name, &p.vars)?;
            let c = p.last_content_mut(o.at, name)?;
            if c.is_relative() {
                return Err(err(o.at, format!("`{name}` with a relative content")));
            }
            if name == "offset" {
                c.offset = Some(n);
                c.vars.offset = var;
            } else {
                if var.is_none() && (n as usize) < c.pattern.len() {
                    return Err(err(at, "depth is shorter than the content"));
                }
                c.depth = Some(n);
                c.vars.depth = var;
            }
        }
        "distance" | "within" => {
            let v = value()?;
            let c_at = o.at;
            if name == "distance" {
                let (n, var) = num_or_var::<i32>(v, at, name, &p.vars)?;
                let c = p.last_content_mut(c_at, name)?;
                if c.offset.is_some() || c.depth.is_some() {
                    return Err(err(c_at, "`distance` with an absolute content"));
                }
                c.distance = Some(n);
                c.vars.distance = var;
            } else {
                let (n, var) = num_or_var::<u32>(v, at, name, &p.vars)?;
                let c = p.last_content_mut(c_at, name)?;
                if c.offset.is_some() || c.depth.is_some() {
                    return Err(err(c_at, "`within` with an absolute content"));
                }
                if var.is_none() && (n as usize) < c.pattern.len() {
                    return Err(err(at, "within is shorter than the content"));
                }
                c.within = Some(n);
                c.vars.within = var;
            }
        }
        "startswith" => {
            no_value()?;
            let c = p.last_content_mut(o.at, name)?;
            c.startswith = true;
        }
        "endswith" => {
            no_value()?;
            let c = p.last_content_mut(o.at, name)?;
            c.endswith = true;
        }
        "fast_pattern" => {
            let c = p.last_content_mut(o.at, name)?;
            if c.negated {
                return Err(err(o.at, "fast_pattern on a negated content"));
            }
            c.fast_pattern = Some(match o.value.map(str::trim) {
                None | Some("only") => None,
                Some(v) => {
                    let (a, b) = v
                        .split_once(',')
                        .ok_or_else(|| err(at, "fast_pattern takes `only` or `offset,length`"))?;
                    let off: u16 = a
                        .trim()
                        .parse()
                        .map_err(|_| err(at, "invalid fast_pattern"))?;
                    let len: u16 = b
                        .trim()
                        .parse()
                        .map_err(|_| err(at, "invalid fast_pattern"))?;
                    if len == 0 || off as usize + len as usize > c.pattern.len() {
                        return Err(err(at, "fast_pattern slice outside the content"));
                    }
                    Some((off, len))
                }
            });
        }
        "pcre" => {
            let v = value()?;
            let (negated, v) = match v.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, v),
            };
            let inner = unquote(v).ok_or_else(|| err(at, "pcre must be a quoted string"))?;
            let t = pcre::translate(inner).map_err(|e| match e {
                PcreIssue::Unsupported(what) => Issue::Skip {
                    sid: None,
                    reason: SkipReason::new(SkipKind::Pcre, what),
                },
                PcreIssue::Invalid(m) => err(at, m),
            })?;
            let buf = match t.buffer {
                Some(b) => p.buffer_index(b, &[]),
                None => p.current(),
            };
            p.push(
                buf,
                MatchItem::Pcre(Pcre {
                    source: inner.to_string(),
                    regex: t.regex,
                    relative: t.relative,
                    negated,
                    end_anchored: t.end_anchored,
                }),
                at,
            )?;
        }
        "isdataat" => {
            let v = value()?;
            let mut parts = v.split(',').map(str::trim);
            let first = parts.next().unwrap_or("");
            let (negated, n) = match first.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, first),
            };
            let (offset, var) = num_or_var::<u32>(n, at, "isdataat", &p.vars)?;
            let mut relative = false;
            for f in parts {
                match f {
                    "relative" => relative = true,
                    "rawbytes" => {}
                    other => return Err(err(at, format!("unknown isdataat option `{other}`"))),
                }
            }
            let buf = p.current();
            p.push(
                buf,
                MatchItem::IsDataAt(IsDataAt {
                    offset,
                    vars: VarRefs {
                        offset: var,
                        ..VarRefs::default()
                    },
                    relative,
                    negated,
                }),
                at,
            )?;
        }
        "bsize" => {
            let cmp = parse_size_cmp(value()?, at, "bsize")?;
            let buf = p.current();
            p.push(buf, MatchItem::Bsize(cmp), at)?;
        }
        "urilen" => {
            let v = value()?;
            let (cmp_text, kind) = match v.split_once(',') {
                Some((c, k)) => (c, k.trim()),
                None => (v, "norm"),
            };
            let buffer = match kind {
                "norm" => Buffer::HttpUri,
                "raw" => Buffer::HttpUriRaw,
                other => return Err(err(at, format!("invalid urilen option `{other}`"))),
            };
            let cmp = parse_size_cmp(cmp_text, at, "urilen")?;
            let buf = p.buffer_index(buffer, &[]);
            p.push(buf, MatchItem::Bsize(cmp), at)?;
        }
        "dsize" => rule.dsize = Some(parse_size_cmp(value()?, at, "dsize")?),
        "stream_size" => {
            let v = value()?;
            let mut parts = v.split(',').map(str::trim);
            let (Some(side), Some(op), Some(n), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(err(
                    at,
                    format!("stream_size needs `side,op,number`, got `{v}`"),
                ));
            };
            let side = match side {
                "client" => StreamSide::Client,
                "server" => StreamSide::Server,
                "both" => StreamSide::Both,
                "either" => StreamSide::Either,
                other => return Err(err(at, format!("invalid stream_size side `{other}`"))),
            };
            let n: u64 = n
                .parse::<u32>()
                .map_err(|_| err(at, format!("stream_size must be a number, got `{n}`")))?
                .into();
            let cmp = match op {
                "<" => SizeCmp::Lt(n),
                "<=" => SizeCmp::Le(n),
                ">" => SizeCmp::Gt(n),
                ">=" => SizeCmp::Ge(n),
                "=" => SizeCmp::Eq(n),
                "!=" => SizeCmp::Ne(n),
                other => return Err(err(at, format!("invalid stream_size operator `{other}`"))),
            };
            rule.stream_size = Some(StreamSize { side, cmp });
        }
        "xbits" => {
            let v = value()?;
            let parts: Vec<&str> = v.split(',').map(str::trim).collect();
            let op = match parts.first().copied().unwrap_or("") {
                "set" => XbitOp::Set,
                "unset" => XbitOp::Unset,
                "toggle" => XbitOp::Toggle,
                "isset" => XbitOp::IsSet,
                "isnotset" => XbitOp::IsNotSet,
                other => return Err(err(at, format!("invalid xbits command `{other}`"))),
            };
            let name = parse_flowbit_name(parts.get(1).copied().unwrap_or(""), at)?;
            let (mut track, mut expire) = (None, 30);
            for part in &parts[2..] {
                let (k, v) = part.split_once(char::is_whitespace).unwrap_or((part, ""));
                match (k, v.trim()) {
                    ("track", "ip_src") => track = Some(XbitTrack::IpSrc),
                    ("track", "ip_dst") => track = Some(XbitTrack::IpDst),
                    ("track", "ip_pair") => track = Some(XbitTrack::IpPair),
                    ("track", "tx") => {
                        return Err(Issue::Skip {
                            sid: None,
                            reason: SkipReason::new(SkipKind::KeywordValue, "xbits track tx"),
                        });
                    }
                    ("expire", n) => {
                        expire = n
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| err(at, format!("invalid xbits expire `{n}`")))?;
                    }
                    _ => return Err(err(at, format!("invalid xbits option `{part}`"))),
                }
            }
            let track =
                track.ok_or_else(|| err(at, "xbits needs `track ip_src|ip_dst|ip_pair`"))?;
            rule.xbits.push(Xbit {
                op,
                name,
                track,
                expire,
            });
        }
        "flowint" => {
            let v = value()?;
            let parts: Vec<&str> = v.split(',').map(str::trim).collect();
            let name = match parts.first() {
                Some(n) if n.len() > 1 && n.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                    parse_flowbit_name(n, at)?
                }
                _ => return Err(err(at, format!("invalid flowint name in `{v}`"))),
            };
            let op = match parts.get(1).copied().unwrap_or("") {
                "=" => FlowintOp::Set,
                "+" => FlowintOp::Add,
                "-" => FlowintOp::Sub,
                "<" => FlowintOp::Lt,
                "<=" => FlowintOp::Le,
                "==" => FlowintOp::Eq,
                "!=" => FlowintOp::Ne,
                ">=" => FlowintOp::Ge,
                ">" => FlowintOp::Gt,
                "isset" => FlowintOp::IsSet,
                "notset" | "isnotset" => FlowintOp::NotSet,
                other => return Err(err(at, format!("invalid flowint operation `{other}`"))),
            };
            let target = match (op, parts.get(2).copied()) {
                (FlowintOp::IsSet | FlowintOp::NotSet, _) => FlowintTarget::None,
                (_, Some(t)) if t.starts_with(|c: char| c.is_ascii_digit()) => {
                    FlowintTarget::Value(t.parse::<u32>().map_err(|_| {
                        err(
                            at,
                            format!("flowint value `{t}` is not a number up to 4294967295"),
                        )
                    })?)
                }
                (_, Some(t))
                    if t.len() > 1
                        && t.starts_with(|c: char| c.is_ascii_alphabetic())
                        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    FlowintTarget::Var(t.to_string())
                }
                (_, Some(t)) => return Err(err(at, format!("invalid flowint operand `{t}`"))),
                (_, None) => return Err(err(at, format!("flowint `{v}` needs a value"))),
            };
            if parts.len() > 3 {
                return Err(err(at, format!("flowint `{v}` has too many parts")));
            }
            rule.flowints.push(Flowint { name, op, target });
        }
        "base64_decode" => {
            let mut d = Base64 {
                bytes: None,
                offset: 0,
                relative: false,
                items: Vec::new(),
            };
            for part in o.value.unwrap_or("").split(',').map(str::trim) {
                let (k, v) = part.split_once(char::is_whitespace).unwrap_or((part, ""));
                let num = |v: &str| {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| err(at, format!("base64_decode {k} must be a number")))
                };
                match k {
                    "" => {}
                    "bytes" => d.bytes = Some(num(v)?),
                    "offset" => d.offset = num(v)?,
                    "relative" => d.relative = true,
                    other => {
                        return Err(err(at, format!("unknown base64_decode option `{other}`")));
                    }
                }
            }
            if p.base64.is_some() {
                return Err(Issue::Skip {
                    sid: None,
                    reason: SkipReason::new(SkipKind::KeywordValue, "a second base64_decode"),
                });
            }
            let buf = p.current();
            if buf == BASE64_DATA {
                return Err(err(at, "base64_decode in base64_data"));
            }
            let i = p.push(buf, MatchItem::Base64(d), at)?;
            p.base64 = Some((buf, i));
        }
        "base64_data" => {
            no_value()?;
            if p.base64.is_none() {
                return Err(err(o.at, "base64_data needs a base64_decode before it"));
            }
            p.in_base64 = true;
            p.sticky = None;
        }
        "tls.version" => {
            // Suricata's values; 1.3 stands for its drafts too.
            rule.tls_version = Some(match value()?.trim() {
                "1.0" => 0x0301,
                "1.1" => 0x0302,
                "1.2" => 0x0303,
                "1.3" => 0x0304,
                other => return Err(err(at, format!("invalid tls.version `{other}`"))),
            });
        }
        "byte_test" => {
            let t = parse_byte_test(value()?, at, &p.vars)?;
            let buf = p.current();
            p.push(buf, MatchItem::ByteTest(t), at)?;
        }
        "byte_extract" => {
            let (x, name) = parse_byte_extract(value()?, at, &p.vars)?;
            if p.vars.contains(&name) {
                return Err(err(
                    at,
                    format!("byte_extract variable `{name}` defined twice"),
                ));
            }
            let buf = p.current();
            p.push(buf, MatchItem::ByteExtract(x), at)?;
            p.vars.push(name);
        }
        "byte_jump" => {
            let j = parse_byte_jump(value()?, at, &p.vars)?;
            let buf = p.current();
            p.push(buf, MatchItem::ByteJump(j), at)?;
        }
        other => {
            return Err(Issue::Skip {
                sid: None,
                reason: SkipReason::new(SkipKind::Keyword, other),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Rule {
        let p = parse_rules("t.rules", text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        assert_eq!(p.rules.len(), 1);
        p.rules.into_iter().next().unwrap()
    }

    #[test]
    fn full_rule() {
        let r = one(concat!(
            r#"alert http $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"ET TEST \"q\" a\;b"; "#,
            r#"flow:established,to_server; http.method; content:"POST"; http.uri; "#,
            r#"content:"/admin"; startswith; fast_pattern; content:".php"; distance:0; within:40; "#,
            r#"pcre:"/\/admin\/[a-z]+\.php/U"; http.header; content:"x-evil|3a 20|"; nocase; "#,
            r#"reference:url,example.com; classtype:web-application-attack; sid:2000001; rev:3; "#,
            r#"metadata: created_at 2020_01_01, signature_severity Major;)"#
        ));
        assert_eq!(r.action, RuleAction::Alert);
        assert_eq!(r.protocol, Protocol::Http);
        assert_eq!(r.msg, r#"ET TEST "q" a;b"#);
        assert_eq!(r.sid, 2000001);
        assert_eq!(r.rev, 3);
        assert_eq!(r.flow.dir, Some(Dir::ToServer));
        assert_eq!(r.buffers.len(), 3);
        assert_eq!(r.buffers[0].buffer, Buffer::HttpMethod);
        assert_eq!(r.buffers[1].buffer, Buffer::HttpUri);
        assert_eq!(r.buffers[1].items.len(), 3);
        let MatchItem::Content(c) = &r.buffers[1].items[1] else {
            panic!()
        };
        assert_eq!((c.distance, c.within), (Some(0), Some(40)));
        assert_eq!(r.buffers[2].buffer, Buffer::HttpHeader);
        assert_eq!(
            r.metadata,
            vec![
                ("created_at".into(), "2020_01_01".into()),
                ("signature_severity".into(), "Major".into())
            ]
        );
        assert_eq!(r.references, vec!["url,example.com".to_string()]);
    }

    #[test]
    fn protocols_and_transports() {
        use Transport::{Tcp, Udp};
        for (text, protocol, transport) in [
            (
                r#"alert udp $HOME_NET [1024:,!5000] -> any [53,5060:5061] (msg:"u"; flow:established,to_server; content:"INVITE"; depth:6; dsize:>10; sid:1;)"#,
                Protocol::Udp,
                Some(Udp),
            ),
            (
                "alert tcp any any -> any any (sid:1;)",
                Protocol::Tcp,
                Some(Tcp),
            ),
            (
                "alert tcp-pkt any any -> any any (sid:1;)",
                Protocol::Tcp,
                Some(Tcp),
            ),
            (
                r#"alert ip any any -> any any (content:"x"; sid:1;)"#,
                Protocol::Ip,
                None,
            ),
            (
                r#"alert dns any any -> any any (dns.query; content:"x"; sid:1;)"#,
                Protocol::Dns,
                None,
            ),
            // A transport's rule with DNS buffers is a DNS rule on that transport only.
            (
                r#"alert udp any any -> any 53 (dns.query; content:"x"; sid:1;)"#,
                Protocol::Dns,
                Some(Udp),
            ),
            (
                r#"alert tcp any any -> any 53 (dns.query; content:"x"; sid:1;)"#,
                Protocol::Dns,
                Some(Tcp),
            ),
            (
                r#"alert ip any any -> any any (http.uri; content:"x"; sid:1;)"#,
                Protocol::Http,
                Some(Tcp),
            ),
            (
                r#"alert ip any any -> any any (dns.query; content:"x"; sid:1;)"#,
                Protocol::Dns,
                None,
            ),
            (
                r#"alert tls any any -> any any (tls.sni; content:"x"; sid:1;)"#,
                Protocol::Tls,
                Some(Tcp),
            ),
        ] {
            let r = one(text);
            assert_eq!((r.protocol, r.transport), (protocol, transport), "{text}");
        }
        let r = one(
            r#"alert udp $HOME_NET [1024:,!5000] -> any [53,5060:5061] (msg:"u"; flow:established,to_server; content:"INVITE"; depth:6; dsize:>10; sid:1;)"#,
        );
        assert_eq!(r.flow.dir, Some(Dir::ToServer));
        assert!(r.flow.established);
        assert_eq!(r.dsize, Some(SizeCmp::Gt(10)));
        assert_eq!(r.dst_ports.to_string(), "[53,5060:5061]");
        // HTTP and TLS do not run on UDP: such rules never match (Suricata loads them).
        for (text, what) in [
            (
                r#"alert udp any any -> any any (http.uri; content:"a"; sid:1;)"#,
                "protocol not inspected: http over udp",
            ),
            (
                r#"alert udp any any -> any any (tls.sni; content:"a"; sid:2;)"#,
                "protocol not inspected: tls over udp",
            ),
        ] {
            let p = parse_rules("u", text);
            assert!(p.errors.is_empty() && p.rules.is_empty(), "{text}");
            assert_eq!(p.skipped[0].reason.to_string(), what);
        }
        // A header of one application protocol with buffers of another is an error.
        let p = parse_rules(
            "d",
            r#"alert dns any any -> any any (tls.sni; content:"a"; sid:1;)"#,
        );
        assert!(
            p.errors[0]
                .message
                .contains("buffer of another protocol in a `dns` rule"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn legacy_modifiers_move_content() {
        let r = one(
            r#"alert tcp any any -> any any (content:"GET"; http_method; content:"/x"; http_uri; content:"y"; http_uri; distance:0; sid:1;)"#,
        );
        assert_eq!(r.protocol, Protocol::Http);
        assert_eq!(r.buffers.len(), 2);
        assert_eq!(r.buffers[1].buffer, Buffer::HttpUri);
        assert_eq!(r.buffers[1].items.len(), 2);
    }

    #[test]
    fn transforms_and_continuations() {
        let r = one(
            "alert dns any any -> any any (msg:\"x\"; dns.query; dotprefix; \\\n content:\".evil.com\"; endswith; sid:5;)",
        );
        assert_eq!(r.buffers[0].transforms, vec![Transform::DotPrefix]);
        assert_eq!(r.line, 1);
    }

    #[test]
    fn tls_version_and_fingerprint_buffers() {
        let r = one(
            "alert tcp any any -> any any (msg:\"v\"; flow:to_client; tls.version:1.2; content:\"|16 03 03|\"; sid:1;)",
        );
        assert_eq!(
            (r.protocol, r.transport, r.tls_version),
            (Protocol::Tls, Some(Transport::Tcp), Some(0x0303))
        );
        assert_eq!(r.buffers[0].buffer, Buffer::Stream);
        for (kw, buffer, dir) in [
            ("ja3.hash", Buffer::Ja3Hash, Dir::ToServer),
            ("ja3_hash", Buffer::Ja3Hash, Dir::ToServer),
            ("ja3.string", Buffer::Ja3String, Dir::ToServer),
            ("ja4.hash", Buffer::Ja4Hash, Dir::ToServer),
            ("ja3s.hash", Buffer::Ja3sHash, Dir::ToClient),
            ("ja3s.string", Buffer::Ja3sString, Dir::ToClient),
            (
                "tls.cert_fingerprint",
                Buffer::TlsCertFingerprint,
                Dir::ToClient,
            ),
        ] {
            let r = one(&format!(
                "alert tls any any -> any any (msg:\"f\"; {kw}; content:\"x\"; sid:2;)"
            ));
            assert_eq!(r.buffers[0].buffer, buffer, "{kw}");
            assert_eq!(buffer.fixed_dir(), Some(dir), "{kw}");
        }
        for (text, what) in [
            ("tls.version:2.0;", "invalid tls.version `2.0`"),
            (
                "tls.version:1.2; http.uri; content:\"x\";",
                "`tls.version` in a rule of another protocol",
            ),
        ] {
            let p = parse_rules(
                "t.rules",
                &format!("alert tcp any any -> any any (msg:\"e\"; {text} sid:3;)"),
            );
            assert!(p.errors[0].to_string().contains(what), "{:?}", p.errors);
        }
    }

    #[test]
    fn stream_size_values() {
        let r = one(
            "alert tcp any any -> any any (msg:\"s\"; stream_size:server,<,5; content:\"x\"; sid:1;)",
        );
        assert_eq!(
            r.stream_size,
            Some(StreamSize {
                side: StreamSide::Server,
                cmp: SizeCmp::Lt(5)
            })
        );
        let r = one("alert ip any any -> any any (msg:\"s\"; stream_size:either,!=,0; sid:1;)");
        assert_eq!(r.transport, Some(Transport::Tcp));
        option_errors(&[
            ("stream_size:server,<;", "needs `side,op,number`"),
            ("stream_size:sender,<,5;", "invalid stream_size side"),
            ("stream_size:server,~,5;", "invalid stream_size operator"),
            ("stream_size:server,<,-1;", "must be a number"),
        ]);
        let p = parse_rules(
            "s.rules",
            "alert http any any -> any any (msg:\"h\"; stream_size:client,<,9; http.uri; content:\"x\"; sid:3;)",
        );
        assert_eq!(
            p.skipped[0].reason.to_string(),
            "mixes payload and app-layer buffers: stream_size with app-layer buffers"
        );
    }

    /// Each option, in a rule of its own, is an error that says `what`.
    fn option_errors(cases: &[(&str, &str)]) {
        for (opt, what) in cases {
            let p = parse_rules(
                "x.rules",
                &format!("alert tcp any any -> any any (msg:\"e\"; {opt} sid:2;)"),
            );
            assert!(
                p.errors
                    .first()
                    .is_some_and(|e| e.to_string().contains(what)),
                "{opt}: {:?}",
                p.errors
            );
        }
    }

    #[test]
    fn xbits_commands() {
        let r = one(
            "alert tcp any any -> any any (msg:\"x\"; xbits:set, ET.a-b,track ip_pair, expire 15; xbits:isnotset,b, track ip_dst; sid:1;)",
        );
        assert_eq!(
            r.xbits,
            [
                Xbit {
                    op: XbitOp::Set,
                    name: "ET.a-b".into(),
                    track: XbitTrack::IpPair,
                    expire: 15
                },
                Xbit {
                    op: XbitOp::IsNotSet,
                    name: "b".into(),
                    track: XbitTrack::IpDst,
                    expire: 30
                },
            ]
        );
        option_errors(&[
            ("xbits:set,a;", "needs `track"),
            ("xbits:flip,a,track ip_src;", "invalid xbits command"),
            ("xbits:set,a,track ip_src,expire 0;", "invalid xbits expire"),
            ("xbits:set,a b,track ip_src;", "invalid flowbit name"),
            ("xbits:set,a,track host;", "invalid xbits option"),
        ]);
    }

    #[test]
    fn flowint_commands() {
        let r = one(
            "alert tcp any any -> any any (msg:\"x\"; flowint: ET.dll.download, +, 1; flowint:seen,isset; flowint:bb,isnotset; flowint:count,>=,limit; flowint:cc,=,4294967295; sid:1;)",
        );
        let f = |name: &str, op, target| Flowint {
            name: name.into(),
            op,
            target,
        };
        assert_eq!(
            r.flowints,
            [
                f("ET.dll.download", FlowintOp::Add, FlowintTarget::Value(1)),
                f("seen", FlowintOp::IsSet, FlowintTarget::None),
                f("bb", FlowintOp::NotSet, FlowintTarget::None),
                f("count", FlowintOp::Ge, FlowintTarget::Var("limit".into())),
                f("cc", FlowintOp::Set, FlowintTarget::Value(u32::MAX)),
            ]
        );
        assert!(FlowintOp::Sub.changes() && !FlowintOp::Ne.changes());
        option_errors(&[
            ("flowint:aa,+;", "needs a value"),
            ("flowint:count,~,1;", "invalid flowint operation"),
            (
                "flowint:count,=,4294967296;",
                "not a number up to 4294967295",
            ),
            ("flowint:count,=,-1;", "invalid flowint operand"),
            ("flowint:1x,=,1;", "invalid flowint name"),
            ("flowint:count,=,1,2;", "too many parts"),
        ]);
    }

    #[test]
    fn errors_have_line_and_column() {
        let text = "# comment\nalert tcp any any -> any any (msg:\"a\"; content:\"|4|\"; sid:1;)\nalert tcp any any -> any any (msg:\"ok\"; sid:2;)\nbogus\n";
        let p = parse_rules("f.rules", text);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.errors.len(), 2);
        assert_eq!(
            p.errors[0].to_string(),
            "f.rules:2:48: invalid hex byte in content at character 2"
        );
        assert_eq!(p.errors[1].line, 4);
    }

    #[test]
    fn skips_with_reasons() {
        let text = concat!(
            "alert icmp any any -> any any (msg:\"u\"; sid:1;)\n",
            "alert tcp any any -> any any (msg:\"k\"; content:\"a\"; byte_extract:1,0,x,dce; sid:2;)\n",
            "alert tcp any any -> any any (msg:\"p\"; pcre:\"/a++/\"; sid:3;)\n",
            "alert tls any any -> any any (msg:\"m\"; content:\"a\"; tls.sni; content:\"b\"; sid:4;)\n",
        );
        let p = parse_rules("s.rules", text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let reasons: Vec<_> = p
            .skipped
            .iter()
            .map(|s| (s.sid, s.reason.to_string()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (Some(1), "protocol not inspected: icmp".to_string()),
                (
                    Some(2),
                    "unsupported keyword value: byte_extract dce".to_string()
                ),
                (Some(3), "pcre feature: possessive quantifier".to_string()),
                (
                    Some(4),
                    "mixes payload and app-layer buffers: payload with tls/dns buffers".to_string()
                ),
            ]
        );
    }

    #[test]
    fn malformed_rules() {
        for (text, msg) in [
            (
                "alert tcp any any -> any any (msg:\"a\";)",
                "rule has no sid",
            ),
            (
                "alert tcp any any any any (sid:1;)",
                "rule header needs 7 fields",
            ),
            ("alert tcp any any => any any (sid:1;)", "invalid direction"),
            (
                "alert tcp any any -> any any (nocase; sid:1;)",
                "needs a preceding content",
            ),
            (
                "alert tcp any any -> any any (sid:1; flow:sideways;)",
                "unknown flow option",
            ),
            (
                "alert tcp any any -> any any (content:\"ab\"; depth:1; sid:1;)",
                "depth is shorter",
            ),
            (
                "alert tcp any any -> any any (content:\"a\"; offset:1; distance:2; sid:1;)",
                "absolute content",
            ),
            ("alert tcp any any -> any any (sid:1;", "missing `)`"),
            (
                "alert tcp any any -> any any (sid:x;)",
                "sid must be a number",
            ),
            (
                "alert tls any any -> any any (http.uri; content:\"a\"; sid:1;)",
                "another protocol",
            ),
            (
                "alert http any any -> any any (flow:to_client; http.uri; content:\"a\"; sid:1;)",
                "conflicting directions",
            ),
            (
                "alert http any any -> any any (http.uri; content:\"a\"; http.stat_code; content:\"200\"; sid:1;)",
                "conflicting directions",
            ),
        ] {
            let p = parse_rules("m", text);
            assert_eq!(p.errors.len(), 1, "{text}");
            assert!(
                p.errors[0].message.contains(msg),
                "{text}: {}",
                p.errors[0].message
            );
        }
    }

    #[test]
    fn sizes_and_bytes() {
        let r = one(
            r#"alert tcp any any -> any any (dsize:<10; content:"a"; isdataat:!2,relative; byte_test:2,>,0x10,0,relative,little; byte_jump:1,0,relative,multiplier 2,post_offset -1; bsize:3<>9; sid:1;)"#,
        );
        assert_eq!(r.dsize, Some(SizeCmp::Lt(10)));
        assert_eq!(r.buffers[0].items.len(), 5);
        assert_eq!(
            r.buffers[0].items[4],
            MatchItem::Bsize(SizeCmp::Between(3, 9))
        );
    }
}
