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

use crate::rule::pcre::Expr;
use crate::rule::{
    ByteJump, ByteOp, ByteTest, Content, Endian, IsDataAt, MatchItem, NumberFormat, SizeCmp,
};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
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
            AhoCorasickBuilder::new()
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

    /// The window `[start, end)` the match must lie in, or `None` when it cannot fit.
    fn window(&self, prev_end: usize, len: usize) -> Option<(usize, usize)> {
        let (start, end) = if self.relative {
            let start = (prev_end as i64 + i64::from(self.distance)).max(0) as u64;
            let end = match self.within {
                Some(w) => {
                    (prev_end as i64 + i64::from(self.distance) + i64::from(w)).max(0) as u64
                }
                None => len as u64,
            };
            (start, end)
        } else {
            let start = u64::from(self.offset);
            let end = match self.depth {
                Some(d) => start + u64::from(d),
                None => len as u64,
            };
            (start, end)
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
}

impl CItem {
    pub(crate) fn is_relative(&self) -> bool {
        match self {
            CItem::Content(c) => c.relative,
            CItem::Pcre { relative, .. } => *relative,
            CItem::IsDataAt(d) => d.relative,
            CItem::ByteTest(t) => t.relative,
            CItem::ByteJump(j) => j.relative,
            CItem::Bsize(_) => false,
        }
    }

    /// Whether the item has a position fixed relative to the buffer start.
    pub(crate) fn is_anchored(&self) -> bool {
        match self {
            CItem::Content(c) => !c.relative && (c.offset > 0 || c.depth.is_some()),
            CItem::Pcre {
                regex, relative, ..
            } => !relative && starts_anchored(regex),
            CItem::IsDataAt(d) => !d.relative,
            CItem::ByteTest(t) => !t.relative,
            // `from_beginning` jumps from the buffer start.
            CItem::ByteJump(j) => !j.relative || j.from_beginning,
            CItem::Bsize(_) => true,
        }
    }

    /// Whether a match of the item needs bytes to be there (a negation needs none).
    fn is_evidence(&self) -> bool {
        match self {
            CItem::Content(c) => !c.negated,
            CItem::Pcre { negated, .. } => !negated,
            CItem::IsDataAt(d) => !d.negated,
            CItem::ByteTest(_) | CItem::ByteJump(_) => true,
            CItem::Bsize(_) => false,
        }
    }

    /// Whether the item moves the position relative keywords after it start from.
    fn places(&self) -> bool {
        match self {
            CItem::Content(c) => !c.negated,
            CItem::Pcre { negated, .. } => !negated,
            CItem::ByteJump(_) => true,
            CItem::IsDataAt(_) | CItem::ByteTest(_) | CItem::Bsize(_) => false,
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
            CItem::Content(c) => c.distance.unsigned_abs() as usize + c.within? as usize,
            CItem::Pcre { regex, .. } if starts_anchored(regex) => regex_max_len(regex)?,
            CItem::Pcre { .. } | CItem::ByteJump(_) => return None,
            CItem::IsDataAt(d) => d.offset as usize,
            CItem::ByteTest(t) => t.offset.unsigned_abs() as usize + usize::from(t.nbytes),
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
            })
        })
        .collect()
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
    };
    match_from(items, 0, buf, 0, 0, &mut s)
}

/// A search in progress.
struct Search {
    budget: u32,
    /// Where the new bytes start (0: every byte is new).
    fresh: usize,
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
            let Some((start, end)) = c.window(prev_end, buf.len()) else {
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
        CItem::ByteTest(t) => match byte_test(t, buf, prev_end) {
            Some(read_end) => match_from(items, i + 1, buf, prev_end, reach.max(read_end), s),
            None => false,
        },
        CItem::ByteJump(j) => match byte_jump(j, buf, prev_end) {
            Some((read_end, to)) => {
                match_from(items, i + 1, buf, to, reach.max(read_end).max(to), s)
            }
            None => false,
        },
    }
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
    let mut v = read_number(buf, at, t.nbytes, t.format)?;
    if let Some(mask) = t.bitmask {
        v &= mask;
        if mask != 0 {
            v >>= mask.trailing_zeros();
        }
    }
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
    (r != t.negated).then_some(at as usize + usize::from(t.nbytes))
}

/// Where the jump lands; `Some((end of the bytes read, landing))`.
fn byte_jump(j: &ByteJump, buf: &[u8], prev_end: usize) -> Option<(usize, usize)> {
    let at = if j.relative {
        prev_end as i64 + i64::from(j.offset)
    } else {
        i64::from(j.offset)
    };
    let mut v = read_number(buf, at, j.nbytes, j.format)?;
    if let Some(mask) = j.bitmask {
        v &= mask;
        if mask != 0 {
            v >>= mask.trailing_zeros();
        }
    }
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
        CItem::ByteTest(_) => false,
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
