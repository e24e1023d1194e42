//! `pcre:"/expr/flags"` translated to the `regex` crate (bytes, no Unicode, linear time).
//!
//! The translator walks the PCRE syntax and writes an equivalent `regex` expression: every
//! literal that is not alphanumeric is written as `\x{HH}` (so PCRE's looser escaping and
//! the `regex` crate's set operators inside classes cannot change meaning), PCRE-only
//! escapes (`\h`, `\R`, `\e`, octal, `\Q…\E`, …) are expanded, and extended mode (`x`) is
//! applied here because the two engines treat whitespace in classes differently.
//!
//! Backreferences, lookahead, lookbehind and atomic groups, which no linear-time engine can
//! express, are compiled with `fancy-regex`, a backtracking engine, under a budget of
//! [`BACKTRACK_LIMIT`] backtracking steps per search (like Suricata's `pcre.match-limit`): a
//! search that exceeds it does not match. Everything else stays on the linear-time `regex`
//! crate. What neither expresses (possessive quantifiers, recursion, conditionals, `\G`,
//! `\K`, backtracking verbs) is reported as unsupported and the rule is skipped.

use super::Buffer;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

/// Compiled programs larger than this are refused (bounds memory per expression).
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache per expression and thread.
pub(crate) const REGEX_DFA_LIMIT: usize = 1 << 20;
/// Longer expressions are refused before translation.
const MAX_PATTERN_LEN: usize = 8 * 1024;
/// Groups nested deeper than this are refused.
const MAX_GROUP_DEPTH: usize = 64;

/// Backtracking steps one search of a backtracking expression may take.
pub(crate) const BACKTRACK_LIMIT: usize = 10_000;

/// A `pcre`: on the linear-time engine where it can be, else on the backtracking one, which
/// reads bytes as the Latin-1 characters they are (so every byte is one character and
/// positions map back one to one).
///
/// Checked when the rule is read (a rule that cannot compile is skipped then), and compiled
/// the first time a buffer reaches it: most rules' prefilter patterns never occur, and a
/// compiled expression holds tens of KiB (linear: ET Open's 3,722 hold about 140 MiB) to a few
/// MiB (backtracking: ET Open's 317 would hold about 760 MiB). Every copy of the rule (both
/// directions, every profile) shares one compilation.
#[derive(Debug, Clone)]
pub struct Expr(Arc<Lazy>);

#[derive(Debug)]
struct Lazy {
    text: String,
    flags: EngineFlags,
    backtracks: bool,
    compiled: OnceLock<Option<Compiled>>,
}

/// What both engines are told besides the text.
#[derive(Debug, Clone, Copy)]
struct EngineFlags {
    caseless: bool,
    dotall: bool,
    multiline: bool,
    ungreedy: bool,
}

#[derive(Debug)]
enum Compiled {
    /// The `regex` crate: linear time.
    Linear(regex::bytes::Regex),
    /// `fancy-regex`, within [`BACKTRACK_LIMIT`].
    Backtracking(fancy_regex::Regex),
}

impl Lazy {
    fn build(&self) -> Result<Compiled, PcreIssue> {
        let f = self.flags;
        if !self.backtracks {
            return linear(&self.text, f).map(Compiled::Linear);
        }
        fancy_regex::RegexBuilder::new(&self.text)
            .case_insensitive(f.caseless)
            .dot_matches_new_line(f.dotall)
            .multi_line(f.multiline)
            .backtrack_limit(BACKTRACK_LIMIT)
            .delegate_size_limit(REGEX_SIZE_LIMIT)
            .delegate_dfa_size_limit(REGEX_DFA_LIMIT)
            .build()
            .map(Compiled::Backtracking)
            .map_err(|e| PcreIssue::Unsupported(format!("backtracking expression: {e}")))
    }
}

impl Expr {
    /// A checked expression, not compiled yet.
    fn checked(text: String, flags: EngineFlags, backtracks: bool) -> Result<Expr, PcreIssue> {
        let lazy = Lazy {
            text,
            flags,
            backtracks,
            compiled: OnceLock::new(),
        };
        // Checked now, then dropped.
        lazy.build()?;
        Ok(Expr(Arc::new(lazy)))
    }

    fn compiled(&self) -> Option<&Compiled> {
        self.0.compiled.get_or_init(|| self.0.build().ok()).as_ref()
    }

    /// Whether it has been compiled (a buffer reached it).
    pub fn is_compiled(&self) -> bool {
        self.0.compiled.get().is_some()
    }

    /// Which expression this is: copies share it.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The translated expression's text.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// Whether it matches somewhere in `hay`.
    pub fn is_match(&self, hay: &[u8]) -> bool {
        self.find_at(hay, 0).is_some()
    }

    /// The first match starting at or after `from`, as byte positions in `hay`.
    pub fn find_at(&self, hay: &[u8], from: usize) -> Option<std::ops::Range<usize>> {
        match self.compiled()? {
            Compiled::Linear(r) => r.find_at(hay, from).map(|m| m.range()),
            Compiled::Backtracking(r) => {
                if let Ok(text) = std::str::from_utf8(hay)
                    && hay.is_ascii()
                {
                    // One byte, one character: positions are the same.
                    return r
                        .find_from_pos(text, from)
                        .ok()
                        .flatten()
                        .map(|m| m.range());
                }
                let text: String = hay.iter().map(|&b| char::from(b)).collect();
                // Bytes from 0x80 take two in the text.
                let to_text = |i: usize| i + hay[..i].iter().filter(|b| **b >= 0x80).count();
                let to_hay = |t: usize| text[..t].chars().count();
                let m = r
                    .find_from_pos(&text, to_text(from.min(hay.len())))
                    .ok()??;
                Some(to_hay(m.start())..to_hay(m.end()))
            }
        }
    }

    /// Whether it needs the backtracking engine.
    pub fn backtracks(&self) -> bool {
        self.0.backtracks
    }
}

/// Why a `pcre` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PcreIssue {
    /// Valid PCRE using a construct the `regex` crate lacks: skip the rule.
    Unsupported(String),
    /// Not a valid `pcre` value: a rule error.
    Invalid(String),
}

/// A translated `pcre` keyword.
#[derive(Debug, Clone)]
pub(crate) struct Translated {
    pub(crate) regex: Expr,
    pub(crate) relative: bool,
    pub(crate) buffer: Option<Buffer>,
    pub(crate) end_anchored: bool,
}

struct Flags {
    caseless: bool,
    dotall: bool,
    multiline: bool,
    extended: bool,
    anchored: bool,
    dollar_endonly: bool,
    ungreedy: bool,
}

/// Translate the inside of `pcre:"…"` (quotes removed, `!` handled by the caller).
pub(crate) fn translate(value: &str) -> Result<Translated, PcreIssue> {
    let invalid = |m: &str| PcreIssue::Invalid(m.to_string());
    if value.len() > MAX_PATTERN_LEN {
        return Err(PcreIssue::Unsupported(
            "expression longer than 8 KiB".into(),
        ));
    }
    let body = value
        .strip_prefix('/')
        .ok_or_else(|| invalid("pcre must start with `/`"))?;
    let end = body
        .rfind('/')
        .ok_or_else(|| invalid("pcre must end with `/` and flags"))?;
    let (pattern, flag_text) = (&body[..end], &body[end + 1..]);
    let mut flags = Flags {
        caseless: false,
        dotall: false,
        multiline: false,
        extended: false,
        anchored: false,
        dollar_endonly: false,
        ungreedy: false,
    };
    let mut relative = false;
    let mut buffer = None;
    for f in flag_text.chars() {
        match f {
            'i' => flags.caseless = true,
            's' => flags.dotall = true,
            'm' => flags.multiline = true,
            'x' => flags.extended = true,
            'A' => flags.anchored = true,
            'E' => flags.dollar_endonly = true,
            'G' => flags.ungreedy = true,
            'R' => relative = true,
            // Match-limit overrides and rawbytes change nothing for a linear-time engine.
            'O' | 'B' => {}
            'U' => buffer = Some(Buffer::HttpUri),
            'I' => buffer = Some(Buffer::HttpUriRaw),
            'P' => buffer = Some(Buffer::HttpRequestBody),
            'Q' => buffer = Some(Buffer::FileData),
            'H' => buffer = Some(Buffer::HttpHeader),
            'D' => buffer = Some(Buffer::HttpHeaderRaw),
            'M' => buffer = Some(Buffer::HttpMethod),
            'C' | 'K' => buffer = Some(Buffer::HttpCookie),
            'S' => buffer = Some(Buffer::HttpStatCode),
            'Y' => buffer = Some(Buffer::HttpStatMsg),
            'V' => buffer = Some(Buffer::HttpUserAgent),
            'W' => buffer = Some(Buffer::HttpHost),
            'Z' => buffer = Some(Buffer::HttpHostRaw),
            other => return Err(PcreIssue::Invalid(format!("unknown pcre flag `{other}`"))),
        }
    }
    let mut backtracks = false;
    let (expr, end_anchored) = translate_pattern(pattern, &flags, &mut backtracks, false)?;
    let engine_flags = EngineFlags {
        caseless: flags.caseless,
        dotall: flags.dotall,
        multiline: flags.multiline,
        ungreedy: flags.ungreedy,
    };
    let regex = if backtracks {
        // Again for the backtracking engine, which reads text: classes spelled out in ASCII
        // (its `\w`, `\d`, `\s` and `\b` would be Unicode's, wider than PCRE's).
        let (expr, _) = translate_pattern(pattern, &flags, &mut backtracks, true)?;
        let expr = if flags.ungreedy {
            format!("(?U){expr}")
        } else {
            expr
        };
        Expr::checked(expr, engine_flags, true)?
    } else {
        Expr::checked(expr, engine_flags, false)?
    };
    Ok(Translated {
        regex,
        relative,
        buffer,
        end_anchored,
    })
}

/// `expr` on the linear-time engine.
fn linear(expr: &str, flags: EngineFlags) -> Result<regex::bytes::Regex, PcreIssue> {
    regex::bytes::RegexBuilder::new(expr)
        .unicode(false)
        .case_insensitive(flags.caseless)
        .dot_matches_new_line(flags.dotall)
        .multi_line(flags.multiline)
        .swap_greed(flags.ungreedy)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .nest_limit(MAX_GROUP_DEPTH as u32 * 2)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                PcreIssue::Unsupported("expression too large when compiled".into())
            }
            other => PcreIssue::Invalid(format!(
                "pcre does not translate: {}",
                other.to_string().lines().last().unwrap_or("")
            )),
        })
}

fn unsupported(what: &str) -> PcreIssue {
    PcreIssue::Unsupported(what.to_string())
}

fn push_byte(out: &mut String, b: u8) {
    if b.is_ascii_alphanumeric() || b == b'_' {
        out.push(b as char);
    } else {
        let _ = write!(out, "\\x{b:02X}");
    }
}

/// An escape that stands for one byte (`\n`, `\x41`, `\101`, `\cA`, an escaped symbol).
/// Returns the byte and how many pattern bytes after the backslash it used.
fn single_byte_escape(
    p: &[u8],
    i: usize,
    in_class: bool,
) -> Result<Option<(u8, usize)>, PcreIssue> {
    let Some(&c) = p.get(i) else {
        return Err(PcreIssue::Invalid("pattern ends with `\\`".into()));
    };
    let simple = match c {
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'f' => Some(0x0c),
        b'a' => Some(0x07),
        b'e' => Some(0x1b),
        b'b' if in_class => Some(0x08),
        _ => None,
    };
    if let Some(b) = simple {
        return Ok(Some((b, 1)));
    }
    match c {
        b'x' => {
            if p.get(i + 1) == Some(&b'{') {
                let close = p[i + 2..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or_else(|| PcreIssue::Invalid("unterminated \\x{".into()))?;
                let hex = std::str::from_utf8(&p[i + 2..i + 2 + close]).unwrap_or("");
                let v = u32::from_str_radix(hex, 16)
                    .map_err(|_| PcreIssue::Invalid("invalid \\x{..}".into()))?;
                if v > 0xff {
                    return Err(unsupported("code point above \\xff"));
                }
                return Ok(Some((v as u8, close + 3)));
            }
            let mut v = 0u8;
            let mut n = 0;
            while n < 2 {
                match p.get(i + 1 + n).and_then(|&b| (b as char).to_digit(16)) {
                    Some(d) => v = v * 16 + d as u8,
                    None => break,
                }
                n += 1;
            }
            Ok(Some((v, n + 1)))
        }
        b'0' => {
            // `\0` followed by up to two more octal digits.
            let mut v = 0u32;
            let mut n = 0;
            while n < 2 {
                match p.get(i + 1 + n) {
                    Some(&d @ b'0'..=b'7') => v = v * 8 + u32::from(d - b'0'),
                    _ => break,
                }
                n += 1;
            }
            Ok(Some((v as u8, n + 1)))
        }
        b'1'..=b'9' => {
            // In a class, or when three octal digits follow, it is an octal byte; outside,
            // PCRE reads `\1`..`\9` as backreferences.
            let digits: Vec<u8> = p[i..]
                .iter()
                .take(3)
                .take_while(|b| (b'0'..=b'7').contains(b))
                .copied()
                .collect();
            if in_class || digits.len() == 3 {
                if digits.is_empty() {
                    return Err(PcreIssue::Invalid("invalid octal escape".into()));
                }
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if v > 0xff {
                    return Err(PcreIssue::Invalid("octal escape above \\377".into()));
                }
                return Ok(Some((v as u8, digits.len())));
            }
            Err(unsupported("backreference"))
        }
        b'c' => {
            let x = *p
                .get(i + 1)
                .ok_or_else(|| PcreIssue::Invalid("\\c at end".into()))?;
            Ok(Some((x.to_ascii_uppercase() ^ 0x40, 2)))
        }
        b'o' => {
            if p.get(i + 1) != Some(&b'{') {
                return Err(PcreIssue::Invalid("\\o needs braces".into()));
            }
            let close = p[i + 2..]
                .iter()
                .position(|&b| b == b'}')
                .ok_or_else(|| PcreIssue::Invalid("unterminated \\o{".into()))?;
            let oct = std::str::from_utf8(&p[i + 2..i + 2 + close]).unwrap_or("");
            let v = u32::from_str_radix(oct, 8)
                .map_err(|_| PcreIssue::Invalid("invalid \\o{..}".into()))?;
            if v > 0xff {
                return Err(unsupported("code point above \\xff"));
            }
            Ok(Some((v as u8, close + 3)))
        }
        c if !c.is_ascii_alphanumeric() => Ok(Some((c, 1))),
        _ => Ok(None),
    }
}

/// Class contents for PCRE's multi-byte escapes (used inside and outside classes).
fn class_escape(c: u8) -> Option<&'static str> {
    Some(match c {
        b'd' => r"0-9",
        b'w' => r"0-9A-Za-z_",
        b's' => r"\t\n\x0B\x0C\r ",
        b'h' => r"\t \xA0",
        b'v' => r"\n\x0B\x0C\r\x85",
        _ => return None,
    })
}

fn negated_class_escape(c: u8) -> Option<u8> {
    match c {
        b'D' => Some(b'd'),
        b'W' => Some(b'w'),
        b'S' => Some(b's'),
        b'H' => Some(b'h'),
        b'V' => Some(b'v'),
        _ => None,
    }
}

/// Translate the expression; also says whether it can only match at the buffer's end, and
/// sets `backtracks` when it needs the backtracking engine.
fn translate_pattern(
    pattern: &str,
    flags: &Flags,
    backtracks: &mut bool,
    text: bool,
) -> Result<(String, bool), PcreIssue> {
    let p = pattern.as_bytes();
    let mut out = String::with_capacity(p.len() * 2);
    let mut end_anchored = false;
    // Capturing groups opened so far (for relative backreferences).
    let mut groups = 0usize;
    if flags.anchored {
        out.push_str(r"\A(?:");
    }
    // Extended mode can be switched by inline flags; track it per group.
    let mut extended_stack = vec![flags.extended];
    let mut i = 0;
    while i < p.len() {
        let extended = *extended_stack.last().unwrap_or(&false);
        let c = p[i];
        if extended
            && (c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' || c == 0x0b || c == 0x0c)
        {
            i += 1;
            continue;
        }
        if extended && c == b'#' {
            while i < p.len() && p[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        match c {
            b'\\' => {
                i += 1;
                let Some(&e) = p.get(i) else {
                    return Err(PcreIssue::Invalid("pattern ends with `\\`".into()));
                };
                match e {
                    b'd' | b'w' | b's' if text => {
                        let _ = write!(out, "[{}]", class_escape(e).unwrap_or(""));
                        i += 1;
                    }
                    b'D' | b'W' | b'S' if text => {
                        let base = negated_class_escape(e).and_then(class_escape).unwrap_or("");
                        let _ = write!(out, "[^{base}]");
                        i += 1;
                    }
                    // PCRE's word boundary is ASCII's: spelled with lookaround.
                    b'b' if text => {
                        out.push_str(
                            r"(?:(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])|(?<![0-9A-Za-z_])(?=[0-9A-Za-z_]))",
                        );
                        i += 1;
                    }
                    b'B' if text => {
                        out.push_str(
                            r"(?:(?<=[0-9A-Za-z_])(?=[0-9A-Za-z_])|(?<![0-9A-Za-z_])(?![0-9A-Za-z_]))",
                        );
                        i += 1;
                    }
                    b'd' | b'w' | b's' | b'D' | b'W' | b'S' | b'b' | b'B' | b'A' | b'z' => {
                        out.push('\\');
                        out.push(e as char);
                        i += 1;
                    }
                    b'h' | b'v' => {
                        let _ = write!(out, "[{}]", class_escape(e).unwrap_or(""));
                        i += 1;
                    }
                    b'H' | b'V' => {
                        let base = negated_class_escape(e).and_then(class_escape).unwrap_or("");
                        let _ = write!(out, "[^{base}]");
                        i += 1;
                    }
                    b'N' => {
                        out.push_str(r"[^\n]");
                        i += 1;
                    }
                    b'R' => {
                        out.push_str(r"(?:\r\n|[\n\x0B\x0C\r\x85])");
                        i += 1;
                    }
                    b'Z' => {
                        out.push_str(r"(?:\n?\z)");
                        end_anchored = true;
                        i += 1;
                    }
                    b'Q' => {
                        i += 1;
                        while i < p.len() {
                            if p[i] == b'\\' && p.get(i + 1) == Some(&b'E') {
                                i += 2;
                                break;
                            }
                            push_byte(&mut out, p[i]);
                            i += 1;
                        }
                    }
                    b'E' => i += 1,
                    b'1'..=b'9' if !is_octal_escape(p, i) => {
                        let n = p[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                        let group = std::str::from_utf8(&p[i..i + n]).unwrap_or("0");
                        let _ = write!(out, "\\k<{group}>");
                        *backtracks = true;
                        i += n;
                    }
                    b'g' | b'k' => {
                        let (reference, used) = backreference(p, i, groups)?;
                        let _ = write!(out, "\\k<{reference}>");
                        *backtracks = true;
                        i += used;
                    }
                    b'G' => return Err(unsupported("\\G")),
                    b'K' => return Err(unsupported("\\K")),
                    b'X' => return Err(unsupported("\\X")),
                    b'C' => return Err(unsupported("\\C")),
                    b'p' | b'P' => return Err(unsupported("Unicode property")),
                    _ => match single_byte_escape(p, i, false)? {
                        Some((b, used)) => {
                            push_byte(&mut out, b);
                            i += used;
                        }
                        None => {
                            return Err(PcreIssue::Invalid(format!(
                                "unknown escape `\\{}`",
                                e as char
                            )));
                        }
                    },
                }
            }
            b'[' => {
                i = translate_class(p, i, &mut out)?;
            }
            b'(' => {
                let rest = &p[i + 1..];
                if extended_stack.len() > MAX_GROUP_DEPTH {
                    return Err(unsupported("groups nested too deeply"));
                }
                if rest.first() == Some(&b'*') {
                    return Err(unsupported("backtracking verb"));
                }
                if rest.first() != Some(&b'?') {
                    out.push('(');
                    extended_stack.push(extended);
                    groups += 1;
                    i += 1;
                    continue;
                }
                let rest = &rest[1..];
                match rest.first() {
                    Some(b':') => {
                        out.push_str("(?:");
                        extended_stack.push(extended);
                        i += 3;
                    }
                    Some(b'=') | Some(b'!') | Some(b'>') => {
                        // Lookahead, negative lookahead, atomic group.
                        let _ = write!(out, "(?{}", rest[0] as char);
                        extended_stack.push(extended);
                        *backtracks = true;
                        i += 3;
                    }
                    Some(b'<') if matches!(rest.get(1), Some(b'=') | Some(b'!')) => {
                        let _ = write!(out, "(?<{}", rest[1] as char);
                        extended_stack.push(extended);
                        *backtracks = true;
                        i += 4;
                    }
                    Some(b'|') => return Err(unsupported("branch reset group")),
                    Some(b'(') => return Err(unsupported("conditional group")),
                    Some(b'R') | Some(b'&') | Some(b'+') | Some(b'0'..=b'9') => {
                        return Err(unsupported("recursion"));
                    }
                    Some(b'-') if matches!(rest.get(1), Some(b'0'..=b'9')) => {
                        return Err(unsupported("recursion"));
                    }
                    Some(b'#') => {
                        // Comment group.
                        let close = rest
                            .iter()
                            .position(|&b| b == b')')
                            .ok_or_else(|| PcreIssue::Invalid("unterminated comment".into()))?;
                        i += 2 + close + 1;
                    }
                    Some(b'P') if rest.get(1) == Some(&b'<') => {
                        let (name, used) = group_name(&rest[2..], b'>')?;
                        let _ = write!(out, "(?P<{name}>");
                        extended_stack.push(extended);
                        groups += 1;
                        i += 2 + 2 + used;
                    }
                    Some(b'P') if rest.get(1) == Some(&b'=') => {
                        // `(?P=name)`: a backreference.
                        let (name, used) = group_name(&rest[2..], b')')?;
                        let _ = write!(out, "\\k<{name}>");
                        *backtracks = true;
                        i += 2 + 2 + used;
                    }
                    Some(b'P') => return Err(unsupported("recursion")),
                    Some(b'<') => {
                        let (name, used) = group_name(&rest[1..], b'>')?;
                        let _ = write!(out, "(?P<{name}>");
                        extended_stack.push(extended);
                        groups += 1;
                        i += 2 + 1 + used;
                    }
                    Some(b'\'') => {
                        let (name, used) = group_name(&rest[1..], b'\'')?;
                        let _ = write!(out, "(?P<{name}>");
                        extended_stack.push(extended);
                        groups += 1;
                        i += 2 + 1 + used;
                    }
                    _ => {
                        // Inline flags: `(?i)`, `(?i-s:…)`.
                        let mut j = 0;
                        let mut on = true;
                        let mut text = String::new();
                        let mut ext = extended;
                        while let Some(&f) = rest.get(j) {
                            match f {
                                b'i' | b's' | b'm' | b'U' => text.push(f as char),
                                b'x' => ext = on,
                                b'J' | b'n' => return Err(unsupported("inline flag")),
                                b'-' => {
                                    on = false;
                                    text.push('-');
                                }
                                b')' | b':' => break,
                                _ => {
                                    return Err(PcreIssue::Invalid("invalid group".into()));
                                }
                            }
                            j += 1;
                        }
                        let text = text.trim_end_matches('-');
                        match rest.get(j) {
                            Some(b')') => {
                                if !text.is_empty() {
                                    let _ = write!(out, "(?{text})");
                                }
                                if let Some(top) = extended_stack.last_mut() {
                                    *top = ext;
                                }
                            }
                            Some(b':') => {
                                if text.is_empty() {
                                    out.push_str("(?:");
                                } else {
                                    let _ = write!(out, "(?{text}:");
                                }
                                extended_stack.push(ext);
                            }
                            _ => return Err(PcreIssue::Invalid("unterminated group".into())),
                        }
                        i += 2 + j + 1;
                    }
                }
            }
            b')' => {
                if extended_stack.len() <= 1 {
                    return Err(PcreIssue::Invalid("unmatched `)`".into()));
                }
                extended_stack.pop();
                out.push(')');
                i += 1;
            }
            b'$' => {
                if flags.multiline {
                    out.push('$');
                } else {
                    end_anchored = true;
                    if flags.dollar_endonly {
                        out.push_str(r"\z");
                    } else {
                        // PCRE's `$` also matches before a final newline.
                        out.push_str(r"(?:\n?\z)");
                    }
                }
                i += 1;
            }
            b'^' | b'.' | b'|' => {
                out.push(c as char);
                i += 1;
            }
            b'*' | b'+' | b'?' => {
                out.push(c as char);
                i += 1;
                i = quantifier_suffix(p, i, &mut out)?;
            }
            b'{' => match counted_quantifier(p, i) {
                Some(end) => {
                    out.push_str(std::str::from_utf8(&p[i..end]).unwrap_or(""));
                    i = quantifier_suffix(p, end, &mut out)?;
                }
                None => {
                    push_byte(&mut out, b'{');
                    i += 1;
                }
            },
            _ => {
                push_byte(&mut out, c);
                i += 1;
            }
        }
    }
    if extended_stack.len() != 1 {
        return Err(PcreIssue::Invalid("unclosed group".into()));
    }
    if flags.anchored {
        out.push(')');
    }
    Ok((out, end_anchored))
}

/// Whether `\` then `p[i..]` is an octal byte (three octal digits) rather than a
/// backreference.
fn is_octal_escape(p: &[u8], i: usize) -> bool {
    p[i..]
        .iter()
        .take(3)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .count()
        == 3
}

/// A backreference `\g` / `\k` at `p[i]` (`\g1`, `\g{1}`, `\g{-1}`, `\g{name}`,
/// `\k<name>`, `\k'name'`, `\k{name}`): the group (number or name) and the pattern bytes
/// it used after the backslash. `groups` is how many capturing groups opened before it.
fn backreference(p: &[u8], i: usize, groups: usize) -> Result<(String, usize), PcreIssue> {
    let kind = p[i];
    let (open, close) = match p.get(i + 1) {
        Some(b'{') => (b'{', b'}'),
        Some(b'<') if kind == b'k' => (b'<', b'>'),
        Some(b'\'') if kind == b'k' => (b'\'', b'\''),
        Some(d) if kind == b'g' && (d.is_ascii_digit() || *d == b'-') => {
            let n = p[i + 1..]
                .iter()
                .enumerate()
                .take_while(|(j, b)| b.is_ascii_digit() || (*j == 0 && **b == b'-'))
                .count();
            let text = std::str::from_utf8(&p[i + 1..i + 1 + n]).unwrap_or("");
            return Ok((group_number(text, groups)?, 1 + n));
        }
        _ => return Err(PcreIssue::Invalid("invalid backreference".into())),
    };
    let _ = open;
    let end = p[i + 2..]
        .iter()
        .position(|&b| b == close)
        .ok_or_else(|| PcreIssue::Invalid("unterminated backreference".into()))?;
    let text = std::str::from_utf8(&p[i + 2..i + 2 + end]).unwrap_or("");
    let reference = if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        group_number(text, groups)?
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        text.to_owned()
    } else {
        return Err(PcreIssue::Invalid("invalid backreference".into()));
    };
    Ok((reference, 2 + end + 1))
}

/// The absolute group of a numbered backreference (`-1`: the last group opened).
fn group_number(text: &str, groups: usize) -> Result<String, PcreIssue> {
    let invalid = || PcreIssue::Invalid(format!("invalid backreference `{text}`"));
    match text.strip_prefix('-') {
        Some(rel) => {
            let back: usize = rel.parse().map_err(|_| invalid())?;
            if back == 0 || back > groups {
                return Err(invalid());
            }
            Ok((groups + 1 - back).to_string())
        }
        None => {
            let n: usize = text.parse().map_err(|_| invalid())?;
            if n == 0 {
                return Err(invalid());
            }
            Ok(n.to_string())
        }
    }
}

/// After a quantifier: a lazy `?` is kept, a possessive `+` is unsupported.
fn quantifier_suffix(p: &[u8], i: usize, out: &mut String) -> Result<usize, PcreIssue> {
    match p.get(i) {
        Some(b'+') if is_quantifier_end(p, i) => Err(unsupported("possessive quantifier")),
        Some(b'?') if is_quantifier_end(p, i) => {
            out.push('?');
            Ok(i + 1)
        }
        _ => Ok(i),
    }
}

/// Whether the byte before `i` ended a quantifier (so `+`/`?` at `i` modifies it).
fn is_quantifier_end(p: &[u8], i: usize) -> bool {
    i > 0 && matches!(p[i - 1], b'*' | b'+' | b'?' | b'}') && !(i >= 2 && p[i - 2] == b'\\')
}

/// `{n}`, `{n,}`, `{n,m}` starting at `i`: the end index, or `None` when PCRE reads the
/// brace literally.
fn counted_quantifier(p: &[u8], i: usize) -> Option<usize> {
    let close = p[i..].iter().position(|&b| b == b'}')? + i;
    let inner = std::str::from_utf8(&p[i + 1..close]).ok()?;
    let (a, b) = match inner.split_once(',') {
        Some((a, b)) => (a, Some(b)),
        None => (inner, None),
    };
    let num = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match b {
        None => num(a),
        Some(b) => num(a) && (b.is_empty() || num(b)),
    };
    ok.then_some(close + 1)
}

fn group_name(rest: &[u8], close: u8) -> Result<(String, usize), PcreIssue> {
    let end = rest
        .iter()
        .position(|&b| b == close)
        .ok_or_else(|| PcreIssue::Invalid("unterminated group name".into()))?;
    let name = std::str::from_utf8(&rest[..end]).unwrap_or("");
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(PcreIssue::Invalid("invalid group name".into()));
    }
    Ok((name.to_string(), end + 1))
}

/// Translate a character class starting at `p[start] == b'['`; returns the index after it.
fn translate_class(p: &[u8], start: usize, out: &mut String) -> Result<usize, PcreIssue> {
    let mut i = start + 1;
    out.push('[');
    if p.get(i) == Some(&b'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    let mut items = 0usize;
    // The previous single byte, for ranges.
    let mut prev_single: Option<u8> = None;
    loop {
        let Some(&c) = p.get(i) else {
            return Err(PcreIssue::Invalid("unterminated character class".into()));
        };
        if c == b']' && !first {
            i += 1;
            break;
        }
        first = false;
        // POSIX class.
        if c == b'['
            && p.get(i + 1) == Some(&b':')
            && let Some(len) = p[i + 2..].windows(2).position(|w| w == b":]")
        {
            let name = std::str::from_utf8(&p[i + 2..i + 2 + len]).unwrap_or("");
            let (neg, base) = match name.strip_prefix('^') {
                Some(b) => (true, b),
                None => (false, name),
            };
            const KNOWN: &[&str] = &[
                "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print",
                "punct", "space", "upper", "word", "xdigit",
            ];
            if !KNOWN.contains(&base) {
                return Err(PcreIssue::Invalid(format!("unknown POSIX class `{name}`")));
            }
            let _ = write!(out, "[:{}{base}:]", if neg { "^" } else { "" });
            i += 2 + len + 2;
            prev_single = None;
            items += 1;
            continue;
        }
        let (single, used): (Option<u8>, usize) = if c == b'\\' {
            let Some(&e) = p.get(i + 1) else {
                return Err(PcreIssue::Invalid("pattern ends with `\\`".into()));
            };
            if let Some(set) = class_escape(e) {
                out.push_str(set);
                (None, 2)
            } else if let Some(base) = negated_class_escape(e) {
                // A negated shorthand inside a class: use a nested negated class.
                let _ = write!(out, "[^{}]", class_escape(base).unwrap_or(""));
                (None, 2)
            } else if e == b'Q' {
                let mut j = i + 2;
                while j < p.len() {
                    if p[j] == b'\\' && p.get(j + 1) == Some(&b'E') {
                        j += 2;
                        break;
                    }
                    push_byte(out, p[j]);
                    j += 1;
                }
                i = j;
                prev_single = None;
                items += 1;
                continue;
            } else if e == b'E' {
                i += 2;
                continue;
            } else if e == b'p' || e == b'P' {
                return Err(unsupported("Unicode property"));
            } else {
                match single_byte_escape(p, i + 1, true)? {
                    Some((b, used)) => (Some(b), used + 1),
                    None => {
                        return Err(PcreIssue::Invalid(format!(
                            "unknown escape `\\{}` in class",
                            e as char
                        )));
                    }
                }
            }
        } else {
            (Some(c), 1)
        };
        // A range `a-b`: `-` after a single byte, followed by something other than `]`.
        if let Some(lo) = single {
            if p.get(i + used) == Some(&b'-') && p.get(i + used + 1).is_some_and(|&n| n != b']') {
                let j = i + used + 1;
                let (hi, used_hi) = if p[j] == b'\\' {
                    match single_byte_escape(p, j + 1, true)? {
                        Some((b, u)) => (b, u + 1),
                        None => {
                            return Err(PcreIssue::Invalid("invalid range in class".into()));
                        }
                    }
                } else if p[j] == b'[' && p.get(j + 1) == Some(&b':') {
                    // `a-[:digit:]`: the `-` is literal.
                    push_byte(out, lo);
                    push_byte(out, b'-');
                    i = j;
                    prev_single = None;
                    items += 1;
                    continue;
                } else {
                    (p[j], 1)
                };
                if hi < lo {
                    return Err(PcreIssue::Invalid("range out of order in class".into()));
                }
                push_byte(out, lo);
                out.push('-');
                push_byte(out, hi);
                i = j + used_hi;
                prev_single = None;
                items += 1;
                continue;
            }
            push_byte(out, lo);
        }
        prev_single = single;
        items += 1;
        i += used;
    }
    let _ = prev_single;
    if items == 0 {
        return Err(PcreIssue::Invalid("empty character class".into()));
    }
    out.push(']');
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Expr {
        translate(s).unwrap_or_else(|e| panic!("{s}: {e:?}")).regex
    }

    fn unsupported_of(s: &str) -> String {
        match translate(s) {
            Err(PcreIssue::Unsupported(w)) => w,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn flags_and_buffers() {
        let t = translate("/abc/Ui").unwrap();
        assert_eq!(t.buffer, Some(Buffer::HttpUri));
        assert!(t.regex.is_match(b"xABCx"));
        assert!(translate("/a/R").unwrap().relative);
        assert!(matches!(translate("/a/q"), Err(PcreIssue::Invalid(_))));
        assert!(re("/a.b/s").is_match(b"a\nb"));
        assert!(!re("/a.b/").is_match(b"a\nb"));
        assert!(re("/^b/m").is_match(b"a\nb"));
        assert!(!re("/^b/").is_match(b"a\nb"));
        assert!(re("/b/A").is_match(b"bc"));
        assert!(!re("/b/A").is_match(b"ab"));
        assert!(re("/a b # comment\n c/x").is_match(b"abc"));
        assert!(re("/a[ ]b/x").is_match(b"a b"));
    }

    #[test]
    fn escapes() {
        assert!(re(r"/\x41\x{42}\103\e/").is_match(b"ABC\x1b"));
        assert!(re(r"/a\;b\/c/").is_match(b"a;b/c"));
        assert!(re(r"/\h\R/").is_match(b" \r\n"));
        assert!(re(r"/\Qa.b\E/").is_match(b"a.b"));
        assert!(!re(r"/\Qa.b\E/").is_match(b"axb"));
        assert!(re(r"/\xff\x00/").is_match(b"\xff\x00"));
        assert!(re(r"/\d+\.\d+/").is_match(b"v1.2"));
        assert!(re(r"/\cA/").is_match(b"\x01"));
    }

    #[test]
    fn classes() {
        assert!(re(r"/[[]/").is_match(b"["));
        assert!(re(r"/[]a]/").is_match(b"]"));
        assert!(re(r"/[a-c&&x]/").is_match(b"&"));
        assert!(re(r"/[^\s]+/").is_match(b"x"));
        assert!(re(r"/[\w.-]+@/").is_match(b"a-b.c@"));
        assert!(re(r"/[[:alpha:]]{3}/").is_match(b"abc"));
        assert!(re(r"/[\x00-\x1f]/").is_match(b"\x05"));
        assert!(re(r"/[\b]/").is_match(b"\x08"));
        assert!(re(r"/[\D]/").is_match(b"a"));
        assert!(!re(r"/^[\D]$/").is_match(b"1"));
        assert!(re(r"/[a-]/").is_match(b"-"));
    }

    #[test]
    fn anchors_and_quantifiers() {
        let t = translate("/abc$/").unwrap();
        assert!(t.end_anchored);
        assert!(t.regex.is_match(b"xabc\n"));
        assert!(!t.regex.is_match(b"xabc\nd"));
        assert!(re("/abc$/D").is_match(b"abc"));
        assert!(!re("/abc$/E").is_match(b"abc\n"));
        assert!(re("/a{2}/").is_match(b"aa"));
        assert!(re("/a{x}/").is_match(b"a{x}"));
        assert!(re("/a{,3}/").is_match(b"a{,3}"));
        assert!(re("/a+?b/").is_match(b"aab"));
        assert!(re("/(?i)ab(?-i)c/").is_match(b"ABc"));
        assert!(re("/(?<n>a)(?:b)(?#x)c/").is_match(b"abc"));
    }

    #[test]
    fn unsupported_constructs() {
        assert_eq!(unsupported_of("/a++/"), "possessive quantifier");
        assert_eq!(unsupported_of(r"/\p{L}/"), "Unicode property");
        assert_eq!(unsupported_of(r"/a\Kb/"), "\\K");
        assert_eq!(unsupported_of("/(?(1)a|b)/"), "conditional group");
        assert!(re(r"/a\+\+/").is_match(b"a++"));
        // Linear where it can be.
        assert!(!re(r"/(a)b/").backtracks());
        assert!(matches!(translate(r"/\g{-1}/"), Err(PcreIssue::Invalid(_))));
    }

    #[test]
    fn backreferences_and_lookaround_backtrack() {
        // What PCRE matches: backreferences (numbered, relative, named), lookahead,
        // lookbehind, atomic groups.
        for (expr, yes, no) in [
            (r"/(\w)\1/", &b"xaay"[..], &b"abab"[..]),
            (r"/(['\x22])[a-z]+\1/", b"x='abc'", b"x='abc\x22"),
            (r"/(a)(b)\g{-1}/", b"abb", b"aba"),
            (r"/(a)(b)\g1/", b"aba", b"abb"),
            (r"/(?<q>x)y\k<q>/", b"xyx", b"xyy"),
            (r"/(?P<q>x)y(?P=q)/", b"xyx", b"xyy"),
            (r"/foo(?=bar)/", b"foobar", b"foobaz"),
            (r"/foo(?!bar)/", b"foobaz", b"foobar"),
            (r"/(?<=a)b/", b"ab", b"cb"),
            (r"/(?<!a)b/", b"cb", b"ab"),
            (r"/(?>a+)b/", b"aab", b"aac"),
            (r"/^(?:(?!\x2f\x2e\x2e).)*$/s", b"/a/b", b"/a/../b"),
            (r"/(\d+)-\1/", b"12-12", b"12-13"),
        ] {
            let r = re(expr);
            assert!(r.backtracks(), "{expr}");
            assert!(r.is_match(yes), "{expr} on {yes:?}");
            assert!(!r.is_match(no), "{expr} on {no:?}");
        }
        // Compiled when first used, once for every copy of the rule.
        let r = re(r"/(z)\1/");
        let copy = r.clone();
        assert!(!r.is_compiled());
        assert!(copy.is_match(b"zz"));
        assert!(r.is_compiled());
        // Linear ones too.
        let r = re(r"/ab+c/");
        assert!(!r.backtracks() && !r.is_compiled());
        assert!(r.is_match(b"xabbc") && r.is_compiled());
        // ASCII classes, as PCRE's byte mode: `\w` and `\b` know no Latin-1 letters.
        assert!(!re(r"/(\w)\1/").is_match(b"\xe9\xe9"));
        assert!(re(r"/\bab(?=c)/").is_match(b"\xe9 abc"));
        assert!(re(r"/\bab(?=c)/").is_match(b"\xe9abc"));
        // Flags: caseless backreferences, dot-all, ungreedy, relative positions.
        assert!(re(r"/(a)\1/i").is_match(b"aA"));
        assert!(re(r"/(.)\1/s").is_match(b"\n\n"));
        assert_eq!(re(r"/(a+)(?=b)/").find_at(b"xaab", 0), Some(1..3));
        assert_eq!(re(r"/(a)\1/").find_at(b"aa-aa", 1), Some(3..5));
    }

    #[test]
    fn backtracking_reads_bytes_as_bytes() {
        // Bytes from 0x80 are one character each: positions map back to the buffer's.
        let r = re(r"/(\xff)\1(?=\x00)/");
        assert_eq!(r.find_at(b"\xe9\xff\xff\x00", 0), Some(1..3));
        assert_eq!(r.find_at(b"\xe9\xff\xff\x00", 2), None);
        assert!(re(r"/(.)\1/").is_match(b"\x80\x80"));
        assert!(!re(r"/^(.)\1$/").is_match(b"\xc3\xa9"));
        // A classic catastrophe (2^40 ways to split the a's) stops at the budget and does
        // not match; without it this would not end.
        let r = re(r"/^(a+)+(?=b)/");
        let mut hay = vec![b'a'; 40];
        hay.push(b'c');
        assert!(!r.is_match(&hay));
    }

    #[test]
    fn bounded() {
        // Catastrophic in a backtracking engine, linear here.
        let r = re("/(a+)+$/");
        let hay = vec![b'a'; 100_000];
        let mut bad = hay.clone();
        bad.push(b'!');
        assert!(!r.is_match(&bad));
        // Huge programs are refused rather than built.
        assert!(matches!(
            translate("/(a{1000}){1000}/"),
            Err(PcreIssue::Unsupported(_))
        ));
        assert!(matches!(
            translate(&format!("/{}/", "a".repeat(9000))),
            Err(PcreIssue::Unsupported(_))
        ));
    }
}
