//! HTTP request paths: the normalization the node applies to every request before it is
//! decided and forwarded, so that what the policy decided is what the server sees.
//!
//! `normalize_path` follows RFC 3986 section 6.2.2: percent-escapes of unreserved
//! characters are decoded, the remaining escapes are upper-cased, dot segments are removed
//! (section 5.2.4) — after merging repeated `/`, so `/a//../b` is `/b`, not `/a/b`.
//! Characters that may not appear in a path are percent-encoded, so the result is always
//! plain ASCII in one canonical spelling. `%2F` (`/`) and `%5C` (`\`) stay encoded: they are
//! part of a segment and never match a `/` in a pattern.

use thiserror::Error;

/// Why a request target is not a path the node will decide on (the node answers 400).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PathError {
    /// The target is empty.
    #[error("the request target is empty")]
    Empty,
    /// Neither origin-form (`/path`), absolute-form (`http://host/path`) nor `*`.
    #[error("the request target does not start with `/` and is not an absolute URI")]
    NotAPath,
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-escape at byte {offset}")]
    InvalidEscape {
        /// Byte offset of the `%` in the target.
        offset: usize,
    },
    /// A NUL byte, literal or as `%00` (servers written in C would cut the path there).
    #[error("NUL byte at byte {offset}")]
    Nul {
        /// Byte offset in the target.
        offset: usize,
    },
    /// A control character or a space, which a request target cannot contain.
    #[error("control character or space at byte {offset}")]
    ControlCharacter {
        /// Byte offset in the target.
        offset: usize,
    },
}

/// Normalizes a request target (`/a/./b?q`, `http://host/a`, `*`) to the path the policy
/// compares: no query or fragment, unreserved escapes decoded, other escapes upper-case,
/// characters outside the path alphabet percent-encoded, repeated `/` merged, dot segments
/// removed. `*` (the `OPTIONS *` target) is returned as is; it matches no path pattern.
pub fn normalize_path(raw_target: &str) -> Result<String, PathError> {
    if raw_target.is_empty() {
        return Err(PathError::Empty);
    }
    if raw_target == "*" {
        return Ok("*".to_owned());
    }
    let (start, path) = match split_absolute_form(raw_target) {
        Some((start, path)) => (start, path),
        None if raw_target.starts_with('/') => (0, raw_target),
        None => return Err(PathError::NotAPath),
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = &path[..end];
    let decoded = canonical_escapes(path, start)?;
    Ok(remove_dot_segments(&decoded))
}

/// For an absolute-form target (`scheme://authority/path`), the offset of its path and the
/// path (`/` when it has none).
fn split_absolute_form(t: &str) -> Option<(usize, &str)> {
    let colon = t.find("://")?;
    let scheme = &t[..colon];
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let after = colon + 3;
    let rest = &t[after..];
    match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some((after + i, &rest[i..])),
        _ => Some((t.len(), "/")),
    }
}

/// RFC 3986 `unreserved`: what percent-decoding may turn back into a character.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters kept literally in a normalized path: `pchar` without escapes, and `/`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Decodes unreserved escapes, upper-cases the others, encodes what may not stand
/// literally, and merges repeated `/`. `base` is the offset of `path` in the target.
fn canonical_escapes(path: &str, base: usize) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let offset = base + i;
        match c {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::InvalidEscape { offset });
                };
                let v = hi << 4 | lo;
                if v == 0 {
                    return Err(PathError::Nul { offset });
                }
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    push_escape(&mut out, v);
                }
                i += 3;
                continue;
            }
            0 => return Err(PathError::Nul { offset }),
            0x01..=0x20 | 0x7f => return Err(PathError::ControlCharacter { offset }),
            b'/' if out.ends_with('/') => {}
            c if is_path_char(c) => out.push(char::from(c)),
            // `"`, `<`, `\`, `{`, non-ASCII bytes...: one canonical spelling, encoded.
            c => push_escape(&mut out, c),
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 5.2.4 on a path that starts with `/` and has no repeated `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            s => {
                out.push('/');
                out.push_str(s);
                continue;
            }
        }
        // A final `.` or `..` leaves the path at a directory: `/a/b/..` is `/a/`.
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/api/users", "/api/users"),
            ("/api/users?id=1&x=/..", "/api/users"),
            ("/a#frag", "/a"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/..", "/"),
            ("//a///b//", "/a/b/"),
            ("/a//../b", "/b"),
            ("/api/%2e%2E/admin", "/admin"),
            ("/%2e/x", "/x"),
            ("/%41%7a%2D%5f%7E%30", "/Az-_~0"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            ("/a%5cb", "/a%5Cb"),
            ("/a\\b", "/a%5Cb"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a|b{c}\"", "/a%7Cb%7Bc%7D%22"),
            ("/a;x=1/b:c@d!$&'()*+,=", "/a;x=1/b:c@d!$&'()*+,="),
            ("/..;/admin", "/..;/admin"),
            ("/a/%20b", "/a/%20b"),
            ("http://finance.corp.example/api/x?y", "/api/x"),
            ("https://h:8443", "/"),
            ("http://h?q", "/"),
            ("HTTP://h/a/../b", "/b"),
            ("*", "*"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(*want), "{raw}");
            // Idempotent: a normalized path normalizes to itself.
            assert_eq!(normalize_path(want).as_deref(), Ok(*want), "{want}");
        }
    }

    #[test]
    fn rejects() {
        #[rustfmt::skip]
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("api/x", PathError::NotAPath),
            ("finance.corp.example:443", PathError::NotAPath),
            ("1http://h/a", PathError::NotAPath),
            ("/a%2", PathError::InvalidEscape { offset: 2 }),
            ("/a%zz", PathError::InvalidEscape { offset: 2 }),
            ("/a%", PathError::InvalidEscape { offset: 2 }),
            ("/a%00b", PathError::Nul { offset: 2 }),
            ("/a\0", PathError::Nul { offset: 2 }),
            ("/a b", PathError::ControlCharacter { offset: 2 }),
            ("/a\tb", PathError::ControlCharacter { offset: 2 }),
            ("/a\u{7f}", PathError::ControlCharacter { offset: 2 }),
            ("http://h/x%0", PathError::InvalidEscape { offset: 10 }),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_ref(), Err(want), "{raw:?}");
        }
        // Everything after the path is ignored, including what would be invalid there.
        assert_eq!(normalize_path("/a?%zz\0").as_deref(), Ok("/a"));
        assert_eq!(
            PathError::InvalidEscape { offset: 3 }.to_string(),
            "invalid percent-escape at byte 3"
        );
    }

    #[test]
    fn output_alphabet_and_idempotence_on_all_short_inputs() {
        // Every target of up to 3 characters from an alphabet that exercises each branch.
        let alphabet = ['/', '.', '%', '2', 'e', 'F', 'a', '?', ' ', '\\', 'é'];
        let mut inputs = vec![String::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for s in &inputs {
                for c in alphabet {
                    next.push(format!("{s}{c}"));
                }
            }
            inputs.extend(next);
        }
        for raw in inputs.iter().map(|s| format!("/{s}")) {
            let Ok(n) = normalize_path(&raw) else {
                continue;
            };
            assert!(n.starts_with('/'), "{raw:?} -> {n:?}");
            assert!(!n.contains("//"), "{raw:?} -> {n:?}");
            assert!(
                n.bytes().all(|b| is_path_char(b) || b == b'%'),
                "{raw:?} -> {n:?}"
            );
            assert!(
                !n.split('/').any(|s| s == "." || s == ".."),
                "{raw:?} -> {n:?}"
            );
            assert_eq!(normalize_path(&n).as_ref(), Ok(&n), "{raw:?}");
        }
    }
}
