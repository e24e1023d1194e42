//! The patterns of L7 conditions, compiled: request paths (exact, prefix, glob), host and
//! SNI names (exact or `*.suffix`), and header values (exact or `*` glob).
//!
//! Every matcher runs in time linear in the text times the (small) pattern, never
//! backtracks exponentially, and allocates nothing: request paths and header values come
//! from the network.

/// `*` glob over bytes: `*` matches any run of bytes (including none); everything else is
/// literal. Greedy leftmost matching of the literal pieces is exact for this language.
pub(crate) fn star_match(pattern: &str, text: &[u8]) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first.as_bytes()) else {
        return false;
    };
    let mut pieces = pieces.peekable();
    if pieces.peek().is_none() {
        // No `*` at all: exact.
        return rest.is_empty();
    }
    while let Some(piece) = pieces.next() {
        let piece = piece.as_bytes();
        if pieces.peek().is_none() {
            // The last piece is anchored at the end.
            return rest.len() >= piece.len() && rest.ends_with(piece);
        }
        if piece.is_empty() {
            continue;
        }
        match find(rest, piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One element of a path glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathSegment {
    /// A segment glob: `*` matches within the segment.
    One(Box<str>),
    /// `**`: zero or more whole segments.
    Any,
}

/// A compiled `paths` entry. Requests are compared by their normalized path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathPattern {
    /// No `*`: the path must be exactly this.
    Exact(Box<str>),
    /// One trailing `*` and no other: the path starts with this (deeper `/` included).
    Prefix(Box<str>),
    /// Any other use of `*`: `*` within one segment, `**` across segments. The segments
    /// after the leading `/`; a trailing `**` was compiled to `*` then `**` (at least one
    /// segment: `/api/**` matches `/api/` and below, like `/api/*`, not `/api`).
    Glob {
        /// What the pattern says, for messages and coverage.
        text: Box<str>,
        /// The segments, in order.
        segments: Box<[PathSegment]>,
    },
}

impl PathPattern {
    /// Compiles a validated pattern (starts with `/`, normalized, `**` only as a whole
    /// segment).
    pub(crate) fn new(text: &str) -> PathPattern {
        let stars = text.bytes().filter(|&b| b == b'*').count();
        if stars == 0 {
            return PathPattern::Exact(text.into());
        }
        if stars == 1 && text.ends_with('*') {
            return PathPattern::Prefix(text.trim_end_matches('*').into());
        }
        let mut segments: Vec<PathSegment> = text
            .strip_prefix('/')
            .unwrap_or(text)
            .split('/')
            .map(|s| {
                if s == "**" {
                    PathSegment::Any
                } else {
                    PathSegment::One(s.into())
                }
            })
            .collect();
        if segments.last() == Some(&PathSegment::Any) {
            segments.pop();
            segments.push(PathSegment::One("*".into()));
            segments.push(PathSegment::Any);
        }
        PathPattern::Glob {
            text: text.into(),
            segments: segments.into_boxed_slice(),
        }
    }

    /// Whether the normalized `path` matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(s) => **s == *path,
            PathPattern::Prefix(p) => path.starts_with(&**p),
            PathPattern::Glob { segments, .. } => match path.strip_prefix('/') {
                Some(rest) => glob_segments(segments, rest),
                None => false,
            },
        }
    }

    /// The text every matching path starts with.
    fn literal_prefix(&self) -> &str {
        match self {
            PathPattern::Exact(s) | PathPattern::Prefix(s) => s,
            PathPattern::Glob { text, .. } => text.split('*').next().unwrap_or(""),
        }
    }

    /// Whether every path `other` matches, `self` matches too (conservative: `false` when
    /// unsure).
    pub(crate) fn covers(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (PathPattern::Prefix(p), b) => b.literal_prefix().starts_with(&**p),
            (a, PathPattern::Exact(s)) => a.matches(s),
            _ => false,
        }
    }
}

/// Matches path segments (the path after its leading `/`, split at `/`) against a glob,
/// with `Any` matching zero or more segments. The classic wildcard algorithm with one
/// backtracking point (the last `Any`): O(segments × pattern), no allocation.
fn glob_segments(pattern: &[PathSegment], path: &str) -> bool {
    // `cursor` is the byte offset where the next segment starts; `None` once all are used.
    let next = |from: usize| -> (&str, Option<usize>) {
        let rest = &path[from..];
        match rest.find('/') {
            Some(i) => (&rest[..i], Some(from + i + 1)),
            None => (rest, None),
        }
    };
    let mut p = 0;
    let mut cursor = Some(0);
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(at) = cursor {
        let (segment, after) = next(at);
        match pattern.get(p) {
            Some(PathSegment::Any) => {
                backtrack = Some((p, at));
                p += 1;
                continue;
            }
            Some(PathSegment::One(g)) if star_match(g, segment.as_bytes()) => {
                p += 1;
                cursor = after;
                continue;
            }
            _ => {}
        }
        // Let the last `**` take one more segment and retry from there.
        let Some((star, from)) = backtrack else {
            return false;
        };
        let (_, skipped) = next(from);
        if let Some(s) = skipped {
            backtrack = Some((star, s));
        }
        // When the `**` took the last segment, what follows it must match nothing.
        p = star + 1;
        cursor = skipped;
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|s| *s == PathSegment::Any)
}

/// A host or SNI pattern: exact, or `*.suffix` (one or more labels before the suffix).
/// Stored lower-case; compared ASCII-case-insensitively, ignoring one trailing `.`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NamePattern {
    /// The name, lower-case.
    Exact(Box<str>),
    /// `.suffix`, lower-case, with its leading dot.
    Wildcard(Box<str>),
}

impl NamePattern {
    /// Compiles a validated pattern.
    pub(crate) fn new(text: &str) -> NamePattern {
        let t = text.to_ascii_lowercase();
        match t.strip_prefix('*') {
            Some(suffix) => NamePattern::Wildcard(suffix.into()),
            None => NamePattern::Exact(t.into()),
        }
    }

    /// The pattern as written (lower-case).
    pub(crate) fn as_str(&self) -> String {
        match self {
            NamePattern::Exact(s) => s.to_string(),
            NamePattern::Wildcard(s) => format!("*{s}"),
        }
    }

    /// Whether `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            NamePattern::Exact(s) => s.eq_ignore_ascii_case(name),
            NamePattern::Wildcard(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Whether every name `other` matches, `self` matches too.
    pub(crate) fn covers(&self, other: &NamePattern) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (a, NamePattern::Exact(n)) => a.matches(n),
            (NamePattern::Wildcard(a), NamePattern::Wildcard(b)) => b.ends_with(&**a),
            _ => false,
        }
    }
}

/// A header value pattern: exact bytes, or a `*` glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValuePattern(pub(crate) Box<str>);

impl ValuePattern {
    /// Whether one header value matches.
    pub(crate) fn matches(&self, value: &[u8]) -> bool {
        star_match(&self.0, value)
    }

    /// Whether every value `other` matches, `self` matches too.
    pub(crate) fn covers(&self, other: &ValuePattern) -> bool {
        self == other
            || &*self.0 == "*"
            || (!other.0.contains('*') && self.matches(other.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_glob() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            ("prod", "prod", true), ("prod", "prod2", false), ("prod", "pro", false),
            ("", "", true), ("", "x", false),
            ("*", "", true), ("*", "anything/at all", true),
            ("prod-*", "prod-eu", true), ("prod-*", "prod-", true), ("prod-*", "pre-eu", false),
            ("*-eu", "prod-eu", true), ("*-eu", "prod-us", false),
            ("a*b*c", "abc", true), ("a*b*c", "aXbYc", true), ("a*b*c", "aXcYb", false),
            ("a*b*c", "abcbc", true), ("a*a", "a", false), ("a*a", "aa", true),
            ("**", "x", true), ("*x*", "axb", true), ("*x*", "ab", false),
        ];
        for &(p, t, want) in cases {
            assert_eq!(star_match(p, t.as_bytes()), want, "{p} vs {t}");
        }
        // Linear on hostile input: many stars against a long non-matching text.
        let p = "*a*a*a*a*a*a*a*a*a*a*b";
        let t = "a".repeat(100_000);
        assert!(!star_match(p, t.as_bytes()));
    }

    #[test]
    fn path_patterns() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            // Exact.
            ("/api/users", "/api/users", true),
            ("/api/users", "/api/users/", false),
            ("/api/users", "/api/user", false),
            // A single trailing `*`: prefix, deeper `/` included.
            ("/api/*", "/api/", true),
            ("/api/*", "/api/x", true),
            ("/api/*", "/api/x/y/z", true),
            ("/api/*", "/api", false),
            ("/api/*", "/apix", false),
            ("/api*", "/api", true),
            ("/api*", "/apix/y", true),
            ("/*", "/", true),
            // `*` within one segment.
            ("/api/*/users", "/api/v1/users", true),
            ("/api/*/users", "/api/v1/x/users", false),
            ("/api/*/users", "/api/users", false),
            ("/api/v*/users/*", "/api/v2/users/7", true),
            ("/api/v*/users/*", "/api/v2/users/7/x", false),
            ("/api/v*/users/*", "/api/v2/users/", true),
            ("/*.json/*", "/a.json/b", true),
            ("/*.json/*", "/a.jsonx/b", false),
            // `**` across segments: zero or more in the middle, one or more at the end.
            ("/api/**/edit", "/api/edit", true),
            ("/api/**/edit", "/api/a/edit", true),
            ("/api/**/edit", "/api/a/b/c/edit", true),
            ("/api/**/edit", "/api/a/b/c/edit/x", false),
            ("/api/**/edit", "/api/a/b/editx", false),
            ("/api/**", "/api/", true),
            ("/api/**", "/api/a/b", true),
            ("/api/**", "/api", false),
            ("/**/secret", "/secret", true),
            ("/**/secret", "/a/b/secret", true),
            // A `;` in the last segment, or in any segment followed by others.
            ("/**/*;*", "/a/..;/admin", false),
            ("/**/*;*", "/a/x;y", true),
            ("/**/*;*/**", "/a/..;/admin", true),
            ("/**/*;*/**", "/a/b", false),
            ("/**/a/**/b", "/x/a/y/z/b", true),
            ("/**/a/**/b", "/x/a/y/z/c", false),
            ("/**/a/*/b", "/a/a/x/b", true),
            ("/a/**/b/**", "/a/b/c", true),
            ("/a/**/b/**", "/a/x/b/c/d", true),
            ("/a/**/b/**", "/a/x/b", false),
            // Globs are segment-aware: `%2F` is not a separator.
            ("/files/*/raw", "/files/a%2Fb/raw", true),
            ("/files/*/*/raw", "/files/a%2Fb/raw", false),
            // Not a path.
            ("/**/x", "*", false),
        ];
        for &(p, path, want) in cases {
            assert_eq!(PathPattern::new(p).matches(path), want, "{p} vs {path}");
        }
        assert!(matches!(PathPattern::new("/a"), PathPattern::Exact(_)));
        assert!(matches!(PathPattern::new("/a/*"), PathPattern::Prefix(_)));
        assert!(matches!(
            PathPattern::new("/a/**"),
            PathPattern::Glob { .. }
        ));
        assert!(matches!(
            PathPattern::new("/*/a*"),
            PathPattern::Glob { .. }
        ));
    }

    #[test]
    fn path_glob_is_bounded_on_hostile_paths() {
        let p = PathPattern::new("/**/a/**/a/**/a/**/a/**/b");
        let path = "/a".repeat(20_000);
        let start = std::time::Instant::now();
        assert!(!p.matches(&path));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn path_coverage() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            ("/api/*", "/api/users", true),
            ("/api/*", "/api/v1/*", true),
            ("/api/*", "/api/*/users", true),
            ("/api/*", "/api/**/x", true),
            ("/api/*", "/api", false),
            ("/api/*", "/ap*", false),
            ("/a*", "/api/*", true),
            ("/api/*/users", "/api/v1/users", true),
            ("/api/*/users", "/api/v1/x", false),
            ("/api/*/users", "/api/v*/users", false),
            ("/api/**/x", "/api/**/x", true),
            ("/api/users", "/api/users", true),
            ("/api/users", "/api/*", false),
        ];
        for &(a, b, want) in cases {
            assert_eq!(
                PathPattern::new(a).covers(&PathPattern::new(b)),
                want,
                "{a} covers {b}"
            );
        }
    }

    #[test]
    fn name_patterns() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            ("finance.corp.example", "finance.corp.example", true),
            ("finance.corp.example", "FINANCE.Corp.Example", true),
            ("finance.corp.example", "finance.corp.example.", true),
            ("finance.corp.example", "x.finance.corp.example", false),
            ("*.corp.example", "finance.corp.example", true),
            ("*.corp.example", "a.b.corp.example", true),
            ("*.corp.example", "A.CORP.EXAMPLE.", true),
            ("*.corp.example", "corp.example", false),
            ("*.corp.example", ".corp.example", false),
            ("*.corp.example", "evilcorp.example", false),
            ("*.corp.example", "é.corp.example", true),
            ("*.Corp.Example", "x.corp.example", true),
        ];
        for &(p, n, want) in cases {
            assert_eq!(NamePattern::new(p).matches(n), want, "{p} vs {n}");
        }
        #[rustfmt::skip]
        let covers: &[(&str, &str, bool)] = &[
            ("*.corp.example", "finance.corp.example", true),
            ("*.corp.example", "*.finance.corp.example", true),
            ("*.corp.example", "*.corp.example", true),
            ("*.corp.example", "corp.example", false),
            ("*.finance.corp.example", "*.corp.example", false),
            ("a.example", "A.example", true),
            ("a.example", "*.example", false),
        ];
        for &(a, b, want) in covers {
            assert_eq!(
                NamePattern::new(a).covers(&NamePattern::new(b)),
                want,
                "{a} covers {b}"
            );
        }
    }

    #[test]
    fn value_patterns() {
        let v = |s: &str| ValuePattern(s.into());
        assert!(v("prod").matches(b"prod"));
        assert!(!v("prod").matches(b"Prod"));
        assert!(v("prod-*").matches(b"prod-\xff"));
        assert!(v("*").covers(&v("x*")));
        assert!(v("prod-*").covers(&v("prod-eu")));
        assert!(!v("prod-*").covers(&v("prod*")));
        assert!(v("a*").covers(&v("a*")));
        assert!(!v("prod").covers(&v("prod*")));
    }
}
