//! Payload keywords compiled for matching, and the matcher that runs them over one buffer.
//!
//! The matcher follows Suricata's content inspection: keywords are tried in rule order;
//! `distance`/`within`, `pcre … R`, `isdataat …,relative` and relative `byte_*` keywords are
//! placed after the end of the previous match; when a relative keyword fails, the previous
//! `content` or `pcre` is tried at its next occurrence (backtracking), within a step budget
//! like Suricata's inspection recursion limit so that hostile buffers cannot make it slow.

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
        regex: regex::bytes::Regex,
        relative: bool,
        negated: bool,
    },
    IsDataAt(IsDataAt),
    Bsize(SizeCmp),
    ByteTest(ByteTest),
    ByteJump(ByteJump),
}

impl CItem {
    fn is_relative(&self) -> bool {
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
            } => {
                !relative && (regex.as_str().starts_with('^') || regex.as_str().starts_with("\\A"))
            }
            CItem::IsDataAt(d) => !d.relative,
            CItem::ByteTest(t) => !t.relative,
            CItem::ByteJump(j) => !j.relative,
            CItem::Bsize(_) => true,
        }
    }
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
    let mut budget = STEP_BUDGET;
    match_from(items, 0, buf, 0, &mut budget)
}

fn match_from(items: &[CItem], i: usize, buf: &[u8], prev_end: usize, budget: &mut u32) -> bool {
    let Some(item) = items.get(i) else {
        return true;
    };
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    // Trying another occurrence only helps when the next keyword depends on this one's end.
    let retry = items.get(i + 1).is_some_and(CItem::is_relative);
    match item {
        CItem::Content(c) => {
            let Some((start, end)) = c.window(prev_end, buf.len()) else {
                return c.negated && match_from(items, i + 1, buf, prev_end, budget);
            };
            if c.negated {
                let found = if c.endswith {
                    buf.len() >= c.pattern.len()
                        && buf.len() - c.pattern.len() >= start
                        && c.is_at(buf, buf.len() - c.pattern.len())
                } else {
                    c.searcher.find(buf, start, end).is_some()
                };
                return !found && match_from(items, i + 1, buf, prev_end, budget);
            }
            if c.endswith {
                let at = buf.len() - c.pattern.len();
                return end == buf.len()
                    && at >= start
                    && c.is_at(buf, at)
                    && match_from(items, i + 1, buf, buf.len(), budget);
            }
            let mut from = start;
            while let Some(at) = c.searcher.find(buf, from, end) {
                if match_from(items, i + 1, buf, at + c.pattern.len(), budget) {
                    return true;
                }
                if !retry || *budget == 0 {
                    return false;
                }
                *budget -= 1;
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
                return !regex.is_match(hay) && match_from(items, i + 1, buf, prev_end, budget);
            }
            let mut from = 0;
            while from <= hay.len() {
                let Some(m) = regex.find_at(hay, from) else {
                    return false;
                };
                if match_from(items, i + 1, buf, base + m.end(), budget) {
                    return true;
                }
                if !retry || *budget == 0 {
                    return false;
                }
                *budget -= 1;
                from = m.start() + 1;
            }
            false
        }
        CItem::IsDataAt(d) => {
            // As Suricata: relative asks for `n` more bytes after the previous match,
            // absolute for a byte at offset `n`.
            let present = if d.relative {
                prev_end as u64 + u64::from(d.offset) <= buf.len() as u64
            } else {
                u64::from(d.offset) < buf.len() as u64
            };
            present != d.negated && match_from(items, i + 1, buf, prev_end, budget)
        }
        CItem::Bsize(cmp) => {
            cmp.matches(buf.len() as u64) && match_from(items, i + 1, buf, prev_end, budget)
        }
        CItem::ByteTest(t) => {
            byte_test(t, buf, prev_end) && match_from(items, i + 1, buf, prev_end, budget)
        }
        CItem::ByteJump(j) => match byte_jump(j, buf, prev_end) {
            Some(to) => match_from(items, i + 1, buf, to, budget),
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

fn byte_test(t: &ByteTest, buf: &[u8], prev_end: usize) -> bool {
    let at = if t.relative {
        prev_end as i64 + i64::from(t.offset)
    } else {
        i64::from(t.offset)
    };
    let Some(mut v) = read_number(buf, at, t.nbytes, t.format) else {
        return false;
    };
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
    r != t.negated
}

fn byte_jump(j: &ByteJump, buf: &[u8], prev_end: usize) -> Option<usize> {
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
    (0..=buf.len() as i64).contains(&to).then_some(to as usize)
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
