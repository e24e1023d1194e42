//! Payload keywords compiled for matching, and the matcher that runs them over one buffer.
//!
//! The matcher follows Suricata's content inspection: keywords are tried in rule order;
//! `distance`/`within`, `pcre … R`, `isdataat …,relative` and relative `byte_*` keywords are
//! placed after the end of the previous match; when a relative keyword fails, the previous
//! `content` or `pcre` is tried at its next occurrence (backtracking), within a step budget
//! like Suricata's inspection recursion limit so that hostile buffers cannot make it slow.
//!
//! A raw-stream buffer may start with bytes an earlier window already inspected (the
//! direction's tail before a message, the overlap of a long message): [`matches_new`] then
//! accepts only matches that use a byte after them, so old data cannot match twice.

use crate::rule::parse::MAX_VARS;
use crate::rule::pcre::Expr;
use crate::rule::{
    Base64, ByteExtract, ByteJump, ByteOp, ByteTest, Content, Endian, IsDataAt, MatchItem,
    NumberFormat, SizeCmp, VarRefs,
};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, Input, MatchKind};
use memchr::memmem;

/// Steps one rule may take on one buffer (Suricata's `inspection-recursion-limit` is 3000).
pub(crate) const STEP_BUDGET: u32 = 3000;

/// Finds one pattern, case-sensitively or not.
#[derive(Debug, Clone)]
pub(crate) enum Searcher {
    Exact(Box<memmem::Finder<'static>>),
    Caseless(AhoCorasick),
}

impl Searcher {
    fn new(pattern: &[u8], nocase: bool) -> Option<Searcher> {
        if nocase && pattern.iter().any(u8::is_ascii_alphabetic) {
            // One pattern: the contiguous NFA is a few hundred bytes where the DFA
            // `build` picks for so small a set is several KiB, and with 30,000 caseless
            // contents in ET Open that is most of the engine. The search runs on the same
            // prefilter either way.
            AhoCorasickBuilder::new()
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build([pattern])
                .ok()
                .map(Searcher::Caseless)
        } else {
            Some(Searcher::Exact(Box::new(
                memmem::Finder::new(pattern).into_owned(),
            )))
        }
    }

    /// Start of the first occurrence entirely within `hay[start..end]`.
    fn find(&self, hay: &[u8], start: usize, end: usize) -> Option<usize> {
        if start > end || end > hay.len() {
            return None;
        }
        match self {
            Searcher::Exact(f) => f.find(&hay[start..end]).map(|p| p + start),
            Searcher::Caseless(ac) => ac.find(Input::new(hay).span(start..end)).map(|m| m.start()),
        }
    }
}

/// A compiled `content`.
#[derive(Debug, Clone)]
pub(crate) struct CContent {
    pub(crate) pattern: Vec<u8>,
    pub(crate) nocase: bool,
    searcher: Searcher,
    negated: bool,
    offset: u32,
    depth: Option<u32>,
    distance: i32,
    within: Option<u32>,
    relative: bool,
    endswith: bool,
    fast_pattern: Option<Option<(u16, u16)>>,
    vars: VarRefs,
}

impl CContent {
    /// The bytes a prefilter may look for, and whether the rule writer chose them.
    pub(crate) fn prefilter_pattern(&self) -> Option<(Vec<u8>, bool)> {
        if self.negated {
            return None;
        }
        Some(match self.fast_pattern {
            Some(Some((off, len))) => (
                self.pattern
                    .get(usize::from(off)..usize::from(off) + usize::from(len))?
                    .to_vec(),
                true,
            ),
            Some(None) => (self.pattern.clone(), true),
            None => (self.pattern.clone(), false),
        })
    }

    /// Whether the bytes at `at` are the pattern.
    fn is_at(&self, hay: &[u8], at: usize) -> bool {
        let Some(slice) = hay.get(at..at + self.pattern.len()) else {
            return false;
        };
        if self.nocase {
            slice.eq_ignore_ascii_case(&self.pattern)
        } else {
            slice == self.pattern.as_slice()
        }
    }

    /// The window `[start, end)` the match must lie in, or `None` when it cannot fit; the
    /// positions given by variables take their values from `vars`.
    fn window(&self, prev_end: usize, len: usize, vars: &Vars) -> Option<(usize, usize)> {
        let v = &self.vars;
        let distance = v.distance.map_or(i64::from(self.distance), |i| {
            i64::try_from(vars.get(i)).unwrap_or(i64::MAX)
        });
        let within = v
            .within
            .map_or(self.within.map(u64::from), |i| Some(vars.get(i)));
        let offset = v.offset.map_or(u64::from(self.offset), |i| vars.get(i));
        let depth = v
            .depth
            .map_or(self.depth.map(u64::from), |i| Some(vars.get(i)));
        let (start, end) = if self.relative {
            let start = (prev_end as i64).saturating_add(distance).max(0) as u64;
            let end = match within {
                Some(w) => (prev_end as i64)
                    .saturating_add(distance)
                    .saturating_add(i64::try_from(w).unwrap_or(i64::MAX))
                    .max(0) as u64,
                None => len as u64,
            };
            (start, end)
        } else {
            let end = match depth {
                Some(d) => offset.saturating_add(d),
                None => len as u64,
            };
            (offset, end)
        };
        let end = end.min(len as u64) as usize;
        let start = start.min(len as u64) as usize;
        (start + self.pattern.len() <= end).then_some((start, end))
    }
}

/// A compiled payload keyword.
#[derive(Debug, Clone)]
pub(crate) enum CItem {
    Content(CContent),
    Pcre {
        regex: Expr,
        relative: bool,
        negated: bool,
    },
    IsDataAt(IsDataAt),
    Bsize(SizeCmp),
    ByteTest(ByteTest),
    ByteJump(ByteJump),
    ByteExtract(ByteExtract),
    Base64(Box<CBase64>),
}

/// The values of a rule's `byte_extract` variables during one search.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vars([u64; MAX_VARS as usize]);

impl Vars {
    fn get(&self, i: u8) -> u64 {
        self.0.get(usize::from(i)).copied().unwrap_or(0)
    }
}

/// A compiled `base64_decode` with its `base64_data` keywords.
#[derive(Debug, Clone)]
pub(crate) struct CBase64 {
    bytes: Option<u32>,
    offset: u32,
    relative: bool,
    items: Vec<CItem>,
}

impl CBase64 {
    /// The `base64_data` keywords.
    pub(crate) fn items(&self) -> &[CItem] {
        &self.items
    }
}

/// Bytes `base64_decode` gives at most (Suricata's limit).
const BASE64_MAX: usize = 64 * 1024;

impl CItem {
    pub(crate) fn is_relative(&self) -> bool {
        match self {
            CItem::Content(c) => c.relative,
            CItem::Pcre { relative, .. } => *relative,
            CItem::IsDataAt(d) => d.relative,
            CItem::ByteTest(t) => t.relative,
            CItem::ByteJump(j) => j.relative,
            CItem::ByteExtract(x) => x.relative,
            CItem::Base64(b) => b.relative,
            CItem::Bsize(_) => false,
        }
    }

    /// Whether the item has a position fixed relative to the buffer start.
    pub(crate) fn is_anchored(&self) -> bool {
        match self {
            CItem::Content(c) => {
                !c.relative && (c.offset > 0 || c.depth.is_some() || c.vars.offset.is_some())
            }
            CItem::Pcre {
                regex, relative, ..
            } => !relative && starts_anchored(regex),
            CItem::IsDataAt(d) => !d.relative,
            CItem::ByteTest(t) => !t.relative,
            // `from_beginning` jumps from the buffer start.
            CItem::ByteJump(j) => !j.relative || j.from_beginning,
            CItem::ByteExtract(x) => !x.relative,
            CItem::Base64(b) => !b.relative,
            CItem::Bsize(_) => true,
        }
    }

    /// Whether a match of the item needs bytes to be there (a negation needs none).
    fn is_evidence(&self) -> bool {
        match self {
            CItem::Content(c) => !c.negated,
            CItem::Pcre { negated, .. } => !negated,
            CItem::IsDataAt(d) => !d.negated,
            CItem::ByteTest(_) | CItem::ByteJump(_) | CItem::ByteExtract(_) | CItem::Base64(_) => {
                true
            }
            CItem::Bsize(_) => false,
        }
    }

    /// Whether the item moves the position relative keywords after it start from.
    fn places(&self) -> bool {
        match self {
            CItem::Content(c) => !c.negated,
            CItem::Pcre { negated, .. } => !negated,
            CItem::ByteJump(_) | CItem::ByteExtract(_) => true,
            CItem::IsDataAt(_) | CItem::ByteTest(_) | CItem::Bsize(_) | CItem::Base64(_) => false,
        }
    }
}

fn starts_anchored(regex: &Expr) -> bool {
    regex.as_str().starts_with('^') || regex.as_str().starts_with("\\A")
}

/// Whether the items are tied to the buffer start: a keyword with an absolute position, or
/// a relative one with nothing before it to be relative to (it counts from the start).
pub(crate) fn anchored(items: &[CItem]) -> bool {
    let mut placed = false;
    for item in items {
        if item.is_anchored() || (item.is_relative() && !placed) {
            return true;
        }
        placed |= item.places();
    }
    false
}

/// The most bytes one match of the items can cover, from its first byte to its last;
/// `None` when unbounded. Only for items that are not [`anchored`].
///
/// A keyword searched for anywhere starts a chain, and the relative keywords after it extend
/// the chain by at most `|distance| + within` (content), the expression's longest match
/// (`^`-anchored relative pcre), `offset` (isdataat), `|offset| + bytes` (byte_test). Two
/// chains are unbounded (nothing ties them together), and so are a relative content without
/// `within`, an unanchored relative pcre, a byte_jump, and a pcre whose matches are not
/// bounded. Negations searched for anywhere need no bytes and do not count.
pub(crate) fn match_span(items: &[CItem]) -> Option<usize> {
    let mut chains = 0u32;
    let mut span = 0usize;
    for item in items {
        if !item.is_relative() {
            if !item.is_evidence() {
                continue;
            }
            chains += 1;
            if chains > 1 {
                return None;
            }
            span = match item {
                CItem::Content(c) => c.pattern.len(),
                CItem::Pcre { regex, .. } => regex_max_len(regex)?,
                // Absolute isdataat and byte_* keywords are anchored.
                _ => return None,
            };
            continue;
        }
        let add = match item {
            // Positions from variables are not known in advance.
            CItem::Content(c) if c.vars.any() => return None,
            CItem::ByteTest(t) if t.vars.any() || t.nbytes == 0 => return None,
            CItem::IsDataAt(d) if d.vars.any() => return None,
            CItem::Content(c) => c.distance.unsigned_abs() as usize + c.within? as usize,
            CItem::Pcre { regex, .. } if starts_anchored(regex) => regex_max_len(regex)?,
            CItem::Pcre { .. } | CItem::ByteJump(_) | CItem::Base64(_) => return None,
            CItem::IsDataAt(d) => d.offset as usize,
            CItem::ByteTest(t) => t.offset.unsigned_abs() as usize + usize::from(t.nbytes),
            CItem::ByteExtract(x) => x.offset.unsigned_abs() as usize + usize::from(x.nbytes),
            CItem::Bsize(_) => 0,
        };
        span = span.checked_add(add)?;
    }
    Some(span)
}

/// The longest match of an expression in bytes, when bounded (never known for a
/// backtracking one).
fn regex_max_len(regex: &Expr) -> Option<usize> {
    if regex.backtracks() {
        return None;
    }
    // Case folding, `s` and `m` do not change match lengths, so the builder's flags (not
    // in the text) do not matter here.
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(regex.as_str())
        .ok()?
        .properties()
        .maximum_len()
}

/// Compile the payload keywords of one buffer.
pub(crate) fn compile(items: &[MatchItem]) -> Option<Vec<CItem>> {
    items
        .iter()
        .map(|item| {
            Some(match item {
                MatchItem::Content(c) => CItem::Content(compile_content(c)?),
                MatchItem::Pcre(p) => CItem::Pcre {
                    regex: p.regex.clone(),
                    relative: p.relative,
                    negated: p.negated,
                },
                MatchItem::IsDataAt(d) => CItem::IsDataAt(*d),
                MatchItem::Bsize(b) => CItem::Bsize(*b),
                MatchItem::ByteTest(t) => CItem::ByteTest(*t),
                MatchItem::ByteJump(j) => CItem::ByteJump(*j),
                MatchItem::ByteExtract(x) => CItem::ByteExtract(*x),
                MatchItem::Base64(b) => CItem::Base64(Box::new(compile_base64(b)?)),
            })
        })
        .collect()
}

fn compile_base64(b: &Base64) -> Option<CBase64> {
    Some(CBase64 {
        bytes: b.bytes,
        offset: b.offset,
        relative: b.relative,
        items: compile(&b.items)?,
    })
}

fn compile_content(c: &Content) -> Option<CContent> {
    let (offset, depth) = if c.startswith {
        (0, Some(c.pattern.len() as u32))
    } else {
        (c.offset.unwrap_or(0), c.depth)
    };
    Some(CContent {
        searcher: Searcher::new(&c.pattern, c.nocase)?,
        pattern: c.pattern.clone(),
        nocase: c.nocase,
        negated: c.negated,
        offset,
        depth,
        distance: c.distance.unwrap_or(0),
        within: c.within,
        relative: c.is_relative(),
        endswith: c.endswith,
        fast_pattern: c.fast_pattern,
        vars: c.vars,
    })
}

/// Whether the compiled items match `buf`.
pub(crate) fn matches(items: &[CItem], buf: &[u8]) -> bool {
    matches_new(items, buf, 0)
}

/// Whether the compiled items match `buf` with a match that uses a byte at or after
/// `fresh` (the bytes before it were inspected already). Items that need no bytes at all
/// (only negations) are decided on the whole buffer.
pub(crate) fn matches_new(items: &[CItem], buf: &[u8], fresh: usize) -> bool {
    let fresh = if items.iter().any(CItem::is_evidence) {
        fresh
    } else {
        0
    };
    let mut s = Search {
        budget: STEP_BUDGET,
        fresh,
        vars: Vars::default(),
    };
    match_from(items, 0, buf, 0, 0, &mut s)
}

/// A search in progress.
struct Search {
    budget: u32,
    /// Where the new bytes start (0: every byte is new).
    fresh: usize,
    /// The `byte_extract` variables of the keywords matched so far.
    vars: Vars,
}

impl Search {
    /// Whether a match that reaches up to `reach` (exclusive) would still be old.
    fn short(&self, reach: usize) -> bool {
        self.fresh > 0 && reach <= self.fresh
    }
}

/// Match `items[i..]` after a match whose previous keyword ended at `prev_end` and whose
/// keywords so far needed the bytes up to `reach` (exclusive).
fn match_from(
    items: &[CItem],
    i: usize,
    buf: &[u8],
    prev_end: usize,
    reach: usize,
    s: &mut Search,
) -> bool {
    let Some(item) = items.get(i) else {
        return !s.short(reach);
    };
    if s.budget == 0 {
        return false;
    }
    s.budget -= 1;
    // Trying another occurrence helps when the next keyword depends on this one's end, or
    // when the match so far uses only old bytes and a later occurrence may not.
    let relative_next = items.get(i + 1).is_some_and(CItem::is_relative);
    let retry = |s: &Search, reach: usize| relative_next || s.short(reach);
    match item {
        CItem::Content(c) => {
            let Some((start, end)) = c.window(prev_end, buf.len(), &s.vars) else {
                return c.negated && match_from(items, i + 1, buf, prev_end, reach, s);
            };
            if c.negated {
                let found = if c.endswith {
                    buf.len() >= c.pattern.len()
                        && buf.len() - c.pattern.len() >= start
                        && c.is_at(buf, buf.len() - c.pattern.len())
                } else {
                    c.searcher.find(buf, start, end).is_some()
                };
                return !found && match_from(items, i + 1, buf, prev_end, reach, s);
            }
            if c.endswith {
                let at = buf.len() - c.pattern.len();
                return end == buf.len()
                    && at >= start
                    && c.is_at(buf, at)
                    && match_from(items, i + 1, buf, buf.len(), buf.len(), s);
            }
            let mut from = start;
            // When no later keyword needs bytes, this occurrence must reach the new ones:
            // skip the old occurrences without trying them one by one.
            if s.short(reach) && !items[i + 1..].iter().any(CItem::is_evidence) {
                from = from.max((s.fresh + 1).saturating_sub(c.pattern.len()));
            }
            while let Some(at) = c.searcher.find(buf, from, end) {
                let at_end = at + c.pattern.len();
                let reach = reach.max(at_end);
                if match_from(items, i + 1, buf, at_end, reach, s) {
                    return true;
                }
                if !retry(s, reach) || s.budget == 0 {
                    return false;
                }
                s.budget -= 1;
                from = at + 1;
            }
            false
        }
        CItem::Pcre {
            regex,
            relative,
            negated,
        } => {
            let base = if *relative {
                prev_end.min(buf.len())
            } else {
                0
            };
            let hay = &buf[base..];
            if *negated {
                return !regex.is_match(hay) && match_from(items, i + 1, buf, prev_end, reach, s);
            }
            let mut from = 0;
            while from <= hay.len() {
                let Some(m) = regex.find_at(hay, from) else {
                    return false;
                };
                let reach = reach.max(base + m.end);
                if match_from(items, i + 1, buf, base + m.end, reach, s) {
                    return true;
                }
                if !retry(s, reach) || s.budget == 0 {
                    return false;
                }
                s.budget -= 1;
                from = m.start + 1;
            }
            false
        }
        CItem::IsDataAt(d) => {
            let d = &IsDataAt {
                offset: d.vars.offset.map_or(d.offset, |i| {
                    u32::try_from(s.vars.get(i)).unwrap_or(u32::MAX)
                }),
                ..*d
            };
            // As Suricata: relative asks for `n` more bytes after the previous match,
            // absolute for a byte at offset `n`.
            let (present, needs) = if d.relative {
                let to = prev_end as u64 + u64::from(d.offset);
                (to <= buf.len() as u64, to)
            } else {
                (
                    u64::from(d.offset) < buf.len() as u64,
                    u64::from(d.offset) + 1,
                )
            };
            // Data that is there counts towards the match; data that must be absent does not.
            let reach = if d.negated {
                reach
            } else {
                reach.max(usize::try_from(needs).unwrap_or(usize::MAX))
            };
            present != d.negated && match_from(items, i + 1, buf, prev_end, reach, s)
        }
        CItem::Bsize(cmp) => {
            cmp.matches(buf.len() as u64) && match_from(items, i + 1, buf, prev_end, reach, s)
        }
        CItem::ByteTest(t) => match byte_test(&resolve_test(t, &s.vars), buf, prev_end) {
            Some(read_end) => match_from(items, i + 1, buf, prev_end, reach.max(read_end), s),
            None => false,
        },
        CItem::ByteJump(j) => match byte_jump(&resolve_jump(j, &s.vars), buf, prev_end) {
            Some((read_end, to)) => {
                match_from(items, i + 1, buf, to, reach.max(read_end).max(to), s)
            }
            None => false,
        },
        CItem::ByteExtract(x) => match byte_extract(x, buf, prev_end) {
            Some((read_end, value)) => {
                let n = s.vars.0.len();
                s.vars.0[usize::from(x.var) % n] = value;
                match_from(items, i + 1, buf, read_end, reach.max(read_end), s)
            }
            None => false,
        },
        CItem::Base64(b) => {
            let start = if b.relative { prev_end } else { 0 };
            let start = start.saturating_add(b.offset as usize);
            let Some(src) = buf.get(start..) else {
                return false;
            };
            let src = match b.bytes {
                Some(n) => &src[..src.len().min(n as usize)],
                None => src,
            };
            // Decoding costs like a search of its bytes.
            let cost = u32::try_from(src.len() / 256).unwrap_or(u32::MAX);
            s.budget = s.budget.saturating_sub(cost);
            let (decoded, used) = base64_decode(src);
            // As Suricata: nothing decoded, no match; else the keywords of base64_data.
            !decoded.is_empty()
                && matches(&b.items, &decoded)
                && match_from(items, i + 1, buf, prev_end, reach.max(start + used), s)
        }
    }
}

/// Base64 as Suricata 7's `base64_decode` reads it (RFC 4648 mode, checked against
/// Suricata 7.0.10): 4-character blocks, `=` as padding inside a block; the first character
/// outside the alphabet ends the data; a partial block at the end gives its whole bytes
/// (two or three characters: one or two bytes). A single character gives its byte only
/// before a character that ends the data: at the end of a buffer still growing, the next
/// character would change it. Returns the bytes and the characters read.
fn base64_decode(src: &[u8]) -> (Vec<u8>, usize) {
    fn value(c: u8) -> Option<u8> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    }
    let mut out = Vec::with_capacity((src.len() / 4 * 3).min(BASE64_MAX));
    let (mut block, mut n, mut padding) = ([0u8; 4], 0usize, 0usize);
    let mut invalid = false;
    let mut used = 0;
    let push = |out: &mut Vec<u8>, block: &[u8; 4], take: usize| {
        let bytes = [
            block[0] << 2 | block[1] >> 4,
            block[1] << 4 | block[2] >> 2,
            block[2] << 6 | block[3],
        ];
        let room = BASE64_MAX - out.len();
        out.extend_from_slice(&bytes[..take.min(room)]);
    };
    for &c in src {
        if out.len() >= BASE64_MAX {
            break;
        }
        let v = match value(c) {
            Some(v) => v,
            None if c == b'=' => {
                padding += 1;
                0
            }
            None => {
                invalid = true;
                break;
            }
        };
        block[n] = v;
        n += 1;
        used += 1;
        if n == 4 {
            push(&mut out, &block, 3usize.saturating_sub(padding));
            (block, n, padding) = ([0; 4], 0, 0);
        }
    }
    if n > 1 || (invalid && n == 1) {
        // One or two characters give one byte, three give two.
        push(&mut out, &block, if n == 3 { 2 } else { 1 });
    }
    (out, used)
}

/// A variable's value as an offset (clamped).
fn var_i32(vars: &Vars, i: u8) -> i32 {
    i32::try_from(vars.get(i)).unwrap_or(i32::MAX)
}

fn resolve_test(t: &ByteTest, vars: &Vars) -> ByteTest {
    ByteTest {
        offset: t.vars.offset.map_or(t.offset, |i| var_i32(vars, i)),
        value: t.vars.value.map_or(t.value, |i| vars.get(i)),
        ..*t
    }
}

fn resolve_jump(j: &ByteJump, vars: &Vars) -> ByteJump {
    ByteJump {
        offset: j.vars.offset.map_or(j.offset, |i| var_i32(vars, i)),
        ..*j
    }
}

/// `byte_extract`: where its bytes end, and the value (masked, multiplied, aligned).
fn byte_extract(x: &ByteExtract, buf: &[u8], prev_end: usize) -> Option<(usize, u64)> {
    let at = if x.relative {
        prev_end as i64 + i64::from(x.offset)
    } else {
        i64::from(x.offset)
    };
    let v = read_masked(buf, at, x.nbytes, x.format, x.bitmask)?;
    let mut v = v.checked_mul(u64::from(x.multiplier))?;
    let align = u64::from(x.align.max(1));
    if v % align != 0 {
        v = v.checked_add(align - v % align)?;
    }
    // `read_number` succeeded, so `at` is in the buffer.
    Some((at as usize + usize::from(x.nbytes), v))
}

/// [`read_number`], then the `bitmask` applied and shifted down, as Suricata does.
fn read_masked(
    buf: &[u8],
    at: i64,
    nbytes: u8,
    format: NumberFormat,
    bitmask: Option<u64>,
) -> Option<u64> {
    let mut v = read_number(buf, at, nbytes, format)?;
    if let Some(mask) = bitmask {
        v &= mask;
        if mask != 0 {
            v >>= mask.trailing_zeros();
        }
    }
    Some(v)
}

/// Read `nbytes` at `at` as the keyword's number format.
fn read_number(buf: &[u8], at: i64, nbytes: u8, format: NumberFormat) -> Option<u64> {
    if at < 0 {
        return None;
    }
    let at = at as usize;
    let bytes = buf.get(at..at.checked_add(usize::from(nbytes))?)?;
    match format {
        NumberFormat::Binary(endian) => {
            let mut v: u64 = 0;
            match endian {
                Endian::Big => {
                    for &b in bytes {
                        v = (v << 8) | u64::from(b);
                    }
                }
                Endian::Little => {
                    for &b in bytes.iter().rev() {
                        v = (v << 8) | u64::from(b);
                    }
                }
            }
            Some(v)
        }
        NumberFormat::String(base) => {
            // Leading digits only, like strtoull on a bounded copy.
            let text = std::str::from_utf8(bytes).ok()?;
            let digits: &str = {
                let end = text
                    .char_indices()
                    .find(|(_, c)| !c.is_digit(base))
                    .map_or(text.len(), |(i, _)| i);
                &text[..end]
            };
            if digits.is_empty() {
                return None;
            }
            u64::from_str_radix(digits, base).ok()
        }
    }
}

/// Whether the test holds; `Some(end of the bytes read)` when it does.
fn byte_test(t: &ByteTest, buf: &[u8], prev_end: usize) -> Option<usize> {
    let at = if t.relative {
        prev_end as i64 + i64::from(t.offset)
    } else {
        i64::from(t.offset)
    };
    // 0 bytes of text: the rest of the buffer (more than 23 digits overflow anyway).
    let nbytes = match t.nbytes {
        0 => u8::try_from(buf.len().saturating_sub(usize::try_from(at).ok()?).min(23)).ok()?,
        n => n,
    };
    let v = read_masked(buf, at, nbytes, t.format, t.bitmask)?;
    let r = match t.op {
        ByteOp::Lt => v < t.value,
        ByteOp::Gt => v > t.value,
        ByteOp::Eq => v == t.value,
        ByteOp::Le => v <= t.value,
        ByteOp::Ge => v >= t.value,
        ByteOp::And => v & t.value != 0,
        ByteOp::Xor => v ^ t.value != 0,
    };
    // `read_number` succeeded, so `at` is in the buffer.
    (r != t.negated).then_some(at as usize + usize::from(nbytes))
}

/// Where the jump lands; `Some((end of the bytes read, landing))`.
fn byte_jump(j: &ByteJump, buf: &[u8], prev_end: usize) -> Option<(usize, usize)> {
    let at = if j.relative {
        prev_end as i64 + i64::from(j.offset)
    } else {
        i64::from(j.offset)
    };
    let v = read_masked(buf, at, j.nbytes, j.format, j.bitmask)?;
    let mut v = v.checked_mul(u64::from(j.multiplier))? as i64;
    if j.align && v % 4 != 0 {
        v += 4 - v % 4;
    }
    let base = if j.from_beginning {
        0
    } else if j.from_end {
        buf.len() as i64
    } else {
        at + i64::from(j.nbytes)
    };
    let to = base.checked_add(v)?.checked_add(i64::from(j.post_offset))?;
    // Jumping outside the buffer fails the rule, as in Suricata.
    let read_end = at as usize + usize::from(j.nbytes);
    (0..=buf.len() as i64)
        .contains(&to)
        .then_some((read_end, to as usize))
}

/// Whether a buffer's items can stop matching when more data is appended (so they are
/// decided only when the buffer is complete).
pub(crate) fn depends_on_end(items: &[CItem]) -> bool {
    items.iter().enumerate().any(|(i, item)| match item {
        CItem::Content(c) => c.negated || c.endswith,
        CItem::Pcre { regex, negated, .. } => {
            *negated
                || regex.as_str().contains(r"\z")
                || regex.as_str().contains('$')
                // A negative lookahead can stop matching when more data comes.
                || regex.as_str().contains("(?!")
                // A greedy match grows with the data, which moves what follows it.
                || items.get(i + 1).is_some_and(CItem::is_relative)
        }
        CItem::IsDataAt(d) => d.negated,
        CItem::Bsize(_) => true,
        CItem::ByteJump(j) => j.from_end,
        // The rest of a buffer still growing is not its value yet.
        CItem::ByteTest(t) => t.nbytes == 0,
        CItem::ByteExtract(_) => false,
        // Decoding a longer prefix only adds bytes at the end of the decoded ones.
        CItem::Base64(b) => depends_on_end(&b.items),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::parse_rules;

    /// Items of the first buffer of a one-rule text.
    fn items(opts: &str) -> Vec<CItem> {
        let p = parse_rules(
            "t",
            &format!("alert tcp any any -> any any ({opts} sid:1;)"),
        );
        assert!(p.errors.is_empty() && p.skipped.is_empty(), "{p:?}");
        compile(&p.rules[0].buffers[0].items).unwrap()
    }

    fn m(opts: &str, buf: &[u8]) -> bool {
        matches(&items(opts), buf)
    }

    #[test]
    fn content_positions() {
        assert!(m(r#"content:"abc";"#, b"xxabcxx"));
        assert!(!m(r#"content:"ABC";"#, b"xxabcxx"));
        assert!(m(r#"content:"ABC"; nocase;"#, b"xxabcxx"));
        assert!(m(r#"content:"abc"; offset:2; depth:3;"#, b"xxabcxx"));
        assert!(!m(r#"content:"abc"; offset:3;"#, b"xxabcxx"));
        assert!(!m(r#"content:"abc"; depth:4;"#, b"xxabcxx"));
        assert!(m(r#"content:"xx"; startswith;"#, b"xxabc"));
        assert!(!m(r#"content:"ab"; startswith;"#, b"xxabc"));
        assert!(m(r#"content:"bc"; endswith;"#, b"xxabc"));
        assert!(!m(r#"content:"ab"; endswith;"#, b"xxabc"));
        assert!(m(
            r#"content:"GET"; depth:3; content:"HTTP"; distance:0;"#,
            b"GET / HTTP/1.1"
        ));
    }

    #[test]
    fn relative_and_backtracking() {
        // The first `a` is followed by `x`, the second by `b`: backtracking finds it.
        assert!(m(
            r#"content:"a"; content:"b"; distance:0; within:1;"#,
            b"axab"
        ));
        assert!(!m(
            r#"content:"a"; content:"b"; distance:0; within:1;"#,
            b"axax"
        ));
        assert!(m(r#"content:"a"; content:"b"; distance:2;"#, b"a--b"));
        assert!(!m(r#"content:"a"; content:"b"; distance:3;"#, b"a--b"));
        assert!(m(
            r#"content:"bc"; content:"ab"; distance:-3; within:2;"#,
            b"abc"
        ));
        assert!(m(r#"content:"a"; pcre:"/^b+c/R";"#, b"xa abbc"));
        assert!(m(r#"content:"a"; pcre:"/^b+c/R";"#, b"xaxabbc"));
        assert!(!m(r#"content:"a"; pcre:"/^b+c/R";"#, b"xaxa bbc"));
    }

    #[test]
    fn negation_and_isdataat() {
        assert!(m(r#"content:"a"; content:!"b"; within:2;"#, b"a--b"));
        assert!(!m(
            r#"content:"a"; content:!"b"; distance:0; within:2;"#,
            b"a-b"
        ));
        assert!(m(
            r#"content:"a"; content:!"b"; distance:0; within:2;"#,
            b"a-b a--"
        ));
        assert!(m(r#"content:"a"; isdataat:2,relative;"#, b"a12"));
        assert!(!m(r#"content:"a"; isdataat:2,relative;"#, b"a1"));
        assert!(m(r#"content:"a"; isdataat:!2,relative;"#, b"a1"));
        assert!(m(r#"isdataat:2;"#, b"abc"));
        assert!(!m(r#"isdataat:3;"#, b"abc"));
        assert!(m(r#"content:"a"; pcre:!"/zz/";"#, b"a1"));
        assert!(!m(r#"content:"a"; pcre:!"/zz/";"#, b"azz"));
    }

    #[test]
    fn base64_decode_and_data() {
        let cases: &[(&str, &[u8], bool)] = &[
            (
                r#"content:"q="; base64_decode:relative; base64_data; content:"test";"#,
                b"x?q=dGVzdA==",
                true,
            ),
            (
                r#"base64_decode; base64_data; content:"test"; startswith;"#,
                b"dGVzdA==",
                true,
            ),
            // The space is not base64: decoding stops there ("xx" gives one byte).
            (
                r#"base64_decode; base64_data; content:"test";"#,
                b"xx dGVzdA==",
                false,
            ),
            (
                r#"base64_decode:offset 3; base64_data; content:"test";"#,
                b"xx dGVzdA==",
                true,
            ),
            (
                r#"base64_decode:bytes 4; base64_data; content:"tes"; bsize:3;"#,
                b"dGVzdA==",
                true,
            ),
            (
                r#"base64_decode:bytes 4; base64_data; content:"test";"#,
                b"dGVzdA==",
                false,
            ),
            // A partial block gives its whole bytes, at the end or before a character that
            // is not base64; a lone character only before such a character.
            (
                r#"base64_decode; base64_data; content:"test"; bsize:4;"#,
                b"dGVzdA",
                true,
            ),
            (
                r#"base64_decode; base64_data; content:"test";"#,
                b"dGVzdA&more",
                true,
            ),
            (
                r#"base64_decode; base64_data; content:"tes"; bsize:3;"#,
                b"dGVzd",
                true,
            ),
            (
                r#"base64_decode; base64_data; content:"test"; bsize:4;"#,
                b"dGVzd&",
                true,
            ),
            // Nothing decoded: no match, even without base64_data keywords.
            (r#"base64_decode;"#, b"&&&", false),
            (r#"base64_decode;"#, b"QQ==", true),
            // A relative decode tries the next occurrence of what it follows.
            (
                r#"content:"q="; base64_decode:relative; base64_data; content:"test";"#,
                b"q=AAAA q=dGVzdA==",
                true,
            ),
            // Keywords after base64_data in another buffer's place: the raw bytes again.
            (
                r#"base64_decode; base64_data; content:"test"; pkt_data; content:"dGVz"; startswith;"#,
                b"dGVzdA==",
                true,
            ),
        ];
        for (opts, buf, want) in cases {
            assert_eq!(
                m(opts, buf),
                *want,
                "{opts} on {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn byte_test_of_the_rest_of_the_buffer() {
        let cases: &[(&str, &[u8], bool)] = &[
            (r#"byte_test:0,>,100,0,string,dec;"#, b"250", true),
            (r#"byte_test:0,>,100,0,string,dec;"#, b"99", false),
            (r#"byte_test:0,=,0,0,string,dec;"#, b"0", true),
            (r#"byte_test:0,=,0,0,string,dec;"#, b"", false),
            (r#"byte_test:0,=,12,0,string,dec;"#, b"12ab", true),
            (
                r#"content:"n="; byte_test:0,=,42,0,relative,string,dec;"#,
                b"n=42",
                true,
            ),
            // Too many digits for a number: no match.
            (
                r#"byte_test:0,>,0,0,string,dec;"#,
                b"123456789012345678901234",
                false,
            ),
        ];
        for (opts, buf, want) in cases {
            assert_eq!(m(opts, buf), *want, "{opts} on {buf:?}");
        }
        // Raw, 0 bytes is still an error.
        let p = parse_rules(
            "t",
            "alert tcp any any -> any any (byte_test:0,=,0,0; sid:1;)",
        );
        assert!(
            p.errors[0].to_string().contains("reads 1 to 8 bytes"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn byte_extract_variables() {
        let cases: &[(&str, &[u8], bool)] = &[
            // A length read from the buffer bounds the next content.
            (
                r#"byte_extract:1,0,len; content:"X"; distance:0; within:len;"#,
                b"\x03abX",
                true,
            ),
            (
                r#"byte_extract:1,0,len; content:"X"; distance:0; within:len;"#,
                b"\x02abX",
                false,
            ),
            // As an absolute offset, read as decimal text.
            (
                r#"byte_extract:2,0,off,string,dec; content:"Z"; offset:off;"#,
                b"05xxxxZ",
                true,
            ),
            (
                r#"byte_extract:2,0,off,string,dec; content:"Z"; offset:off;"#,
                b"07xxxxZ",
                false,
            ),
            // As a byte_test value, and the read moves the relative position.
            (
                r#"byte_extract:1,0,v; byte_test:1,=,v,0,relative;"#,
                b"\x05\x05",
                true,
            ),
            (
                r#"byte_extract:1,0,v; byte_test:1,=,v,0,relative;"#,
                b"\x05\x06",
                false,
            ),
            (
                r#"byte_extract:1,0,n; isdataat:n,relative;"#,
                b"\x03abc",
                true,
            ),
            (
                r#"byte_extract:1,0,n; isdataat:n,relative;"#,
                b"\x04abc",
                false,
            ),
            (
                r#"byte_extract:1,0,o; byte_jump:1,o; content:"Q"; distance:0; within:1;"#,
                b"\x02\x00\x01?Q",
                true,
            ),
            // Multiplier and alignment.
            (
                r#"byte_extract:1,0,n,multiplier 3,align 4; isdataat:!n,relative; isdataat:11,relative;"#,
                b"\x03abcdefghijklmnop",
                false,
            ),
            (
                r#"byte_extract:1,0,n,multiplier 3,align 4; isdataat:n,relative; isdataat:!13,relative;"#,
                b"\x03abcdefghijkl",
                true,
            ),
            // Nothing to read: no match.
            (r#"byte_extract:4,0,n; isdataat:n;"#, b"ab", false),
            // The value of the occurrence the match uses.
            (
                r#"content:"L="; byte_extract:1,0,n,relative,string,dec; content:"!"; distance:n; within:1;"#,
                b"L=5abcde! L=2ab!",
                true,
            ),
        ];
        for (opts, buf, want) in cases {
            assert_eq!(m(opts, buf), *want, "{opts} on {buf:?}");
        }
        for (opts, what) in [
            (
                r#"content:"a"; within:n;"#,
                "unknown byte_extract variable `n`",
            ),
            (
                r#"byte_extract:1,0,n; byte_extract:1,1,n;"#,
                "defined twice",
            ),
            (r#"byte_extract:1,0,9n;"#, "invalid byte_extract name"),
            (r#"byte_extract:1,0,n,align 3;"#, "align must be 2 or 4"),
        ] {
            let p = parse_rules(
                "t",
                &format!("alert tcp any any -> any any ({opts} sid:1;)"),
            );
            assert!(
                p.errors[0].to_string().contains(what),
                "{opts}: {:?}",
                p.errors
            );
        }
    }

    #[test]
    fn bytes_keywords() {
        assert!(m(
            r#"content:"L"; byte_test:2,>,255,0,relative;"#,
            b"L\x01\x00"
        ));
        assert!(!m(
            r#"content:"L"; byte_test:2,>,256,0,relative;"#,
            b"L\x01\x00"
        ));
        assert!(m(
            r#"content:"L"; byte_test:2,=,1,0,relative,little;"#,
            b"L\x01\x00"
        ));
        assert!(m(
            r#"content:"n="; byte_test:3,>=,100,0,relative,string,dec;"#,
            b"n=123"
        ));
        assert!(!m(
            r#"content:"n="; byte_test:3,>=,200,0,relative,string,dec;"#,
            b"n=123"
        ));
        assert!(m(
            r#"content:"L"; byte_test:1,&,0x80,0,relative;"#,
            b"L\x81"
        ));
        assert!(m(
            r#"content:"L"; byte_test:1,!&,0x80,0,relative;"#,
            b"L\x01"
        ));
        // Jump over a 2-byte length and its payload, then find `Z` right there.
        assert!(m(
            r#"content:"L"; byte_jump:2,0,relative; content:"Z"; within:1;"#,
            b"L\x00\x03abcZ"
        ));
        assert!(!m(
            r#"content:"L"; byte_jump:2,0,relative; content:"Z"; within:1;"#,
            b"L\x00\x02abcZ"
        ));
        assert!(!m(
            r#"content:"L"; byte_jump:2,0,relative;"#,
            b"L\x00\x09ab"
        ));
        assert!(m(r#"bsize:3;"#, b"abc"));
        assert!(!m(r#"bsize:>3;"#, b"abc"));
    }

    #[test]
    fn budget_bounds_backtracking() {
        // Many `a`s, each followed by a failing relative chain: bounded, no match.
        let buf = vec![b'a'; 200_000];
        let it = items(r#"content:"a"; content:"a"; distance:0; content:"b"; distance:0;"#);
        let t = std::time::Instant::now();
        assert!(!matches(&it, &buf));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn matches_must_use_new_bytes() {
        let new = |opts: &str, buf: &[u8], fresh: usize| matches_new(&items(opts), buf, fresh);
        // Only old occurrences: no; a new one, or one across the boundary: yes.
        assert!(!new(r#"content:"abc";"#, b"abcxyz", 3));
        assert!(new(r#"content:"abc";"#, b"abcabc", 3));
        assert!(new(r#"content:"abc";"#, b"xabc", 2));
        let chain = r#"content:"a"; content:"b"; distance:0; within:2;"#;
        assert!(!new(chain, b"abx", 2));
        assert!(new(chain, b"ab", 1));
        assert!(new(chain, b"abxab", 3));
        // Bytes that must be there count; bytes that must be absent do not.
        assert!(new(
            r#"content:"L"; byte_test:1,>,5,0,relative;"#,
            b"L\x09",
            1
        ));
        assert!(new(r#"content:"a"; isdataat:2,relative;"#, b"a12", 2));
        assert!(!new(r#"content:"a"; isdataat:1,relative;"#, b"a12", 2));
        assert!(!new(r#"content:"a"; content:!"z";"#, b"ab", 1));
        assert!(new(r#"content:"a"; content:!"z";"#, b"aba", 2));
        // A rule of negations only needs no bytes: it is decided on the whole buffer.
        assert!(new(r#"content:!"z";"#, b"ab", 1));
        assert!(!new(r#"content:!"z";"#, b"zb", 1));
        // Independent keywords: one of them new is enough, found past many old ones.
        let mut buf = b"ab".repeat(1000);
        buf.push(b'b');
        assert!(new(r#"content:"a"; content:"b";"#, &buf, 2000));
        buf.pop();
        buf.push(b'x');
        assert!(!new(r#"content:"a"; content:"b";"#, &buf, 2000));
        // An expression whose first match is old, and a later one new.
        assert!(new(r#"pcre:"/a[0-9]+/";"#, b"a1 a2", 3));
        assert!(!new(r#"pcre:"/a[0-9]+/";"#, b"a1 a2 ", 5));
    }

    #[test]
    fn anchoring_and_spans() {
        assert!(anchored(&items(r#"content:"a"; depth:3;"#)));
        assert!(anchored(&items(r#"content:"a"; offset:1;"#)));
        assert!(anchored(&items(r#"pcre:"/^a/";"#)));
        assert!(anchored(&items(r#"isdataat:3;"#)));
        // A relative keyword with nothing before it counts from the start.
        assert!(anchored(&items(r#"content:"a"; distance:2;"#)));
        assert!(anchored(&items(
            r#"content:!"z"; content:"a"; distance:0;"#
        )));
        assert!(anchored(&items(
            r#"content:"a"; byte_jump:1,0,relative,from_beginning;"#
        )));
        assert!(!anchored(&items(
            r#"content:"a"; content:"b"; distance:2;"#
        )));
        assert!(!anchored(&items(r#"content:"a"; pcre:"/^b/R";"#)));

        let span = |opts: &str| match_span(&items(opts));
        assert_eq!(span(r#"content:"abc";"#), Some(3));
        assert_eq!(span(r#"content:"abc"; content:!"z";"#), Some(3));
        assert_eq!(
            span(r#"content:"abc"; content:"d"; distance:-2; within:4;"#),
            Some(9)
        );
        assert_eq!(
            span(r#"content:"a"; isdataat:4,relative; byte_test:2,=,1,-3,relative;"#),
            Some(10)
        );
        assert_eq!(span(r#"pcre:"/a(bc|d){2}/";"#), Some(5));
        assert_eq!(span(r#"content:"a"; pcre:"/^b{3}/R";"#), Some(4));
        assert_eq!(span(r#"content:"a"; pcre:"/b{3}/R";"#), None);
        assert_eq!(span(r#"pcre:"/a+/";"#), None);
        assert_eq!(span(r#"content:"a"; content:"b";"#), None);
        assert_eq!(span(r#"content:"a"; content:"b"; distance:0;"#), None);
        assert_eq!(
            span(r#"content:"a"; byte_jump:1,0,relative; content:"b"; within:1;"#),
            None
        );
    }

    #[test]
    fn end_dependence() {
        assert!(!depends_on_end(&items(
            r#"content:"a"; content:"b"; distance:0;"#
        )));
        assert!(depends_on_end(&items(r#"content:"a"; content:!"b";"#)));
        assert!(depends_on_end(&items(r#"content:"a"; endswith;"#)));
        assert!(depends_on_end(&items(r#"pcre:"/a$/";"#)));
        assert!(depends_on_end(&items(
            r#"pcre:"/a.*/"; content:"b"; distance:0;"#
        )));
        assert!(!depends_on_end(&items(r#"pcre:"/a.*/"; content:"b";"#)));
    }
}
