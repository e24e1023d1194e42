//! `content` strings: `"abc|0d 0a|def"` with `\"`, `\\`, `\;`, `\:` escapes.

/// Why a content string does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ContentError {
    /// Not in double quotes.
    #[error("content must be a quoted string")]
    Unquoted,
    /// `""`.
    #[error("empty content")]
    Empty,
    /// A `|` section that is not pairs of hex digits.
    #[error("invalid hex byte in content at character {0}")]
    Hex(usize),
    /// A `|` section without its closing `|`.
    #[error("unterminated hex section in content")]
    UnterminatedHex,
    /// A backslash before something other than `"`, `\`, `;`, `:`, `|`.
    #[error("invalid escape in content at character {0}")]
    Escape(usize),
    /// A `"` inside the string that is not escaped.
    #[error("unescaped quote in content")]
    Quote,
}

/// Strip the quotes of a value, returning the inside.
pub(crate) fn unquote(value: &str) -> Option<&str> {
    let v = value.trim();
    v.strip_prefix('"')?.strip_suffix('"')
}

/// Decode a quoted content string into bytes.
pub(crate) fn decode(value: &str) -> Result<Vec<u8>, ContentError> {
    let inner = unquote(value).ok_or(ContentError::Unquoted)?;
    let mut out = Vec::with_capacity(inner.len());
    let bytes = inner.as_bytes();
    let mut i = 0;
    let mut in_hex = false;
    let mut nibble: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if in_hex {
            match b {
                b'|' => {
                    if nibble.is_some() {
                        return Err(ContentError::Hex(i));
                    }
                    in_hex = false;
                }
                b' ' | b'\t' => {
                    if nibble.is_some() {
                        return Err(ContentError::Hex(i));
                    }
                }
                _ => {
                    let v = (b as char).to_digit(16).ok_or(ContentError::Hex(i))? as u8;
                    match nibble.take() {
                        Some(hi) => out.push(hi << 4 | v),
                        None => nibble = Some(v),
                    }
                }
            }
            i += 1;
            continue;
        }
        match b {
            b'|' => in_hex = true,
            b'\\' => {
                let next = *bytes.get(i + 1).ok_or(ContentError::Escape(i))?;
                if !matches!(next, b'"' | b'\\' | b';' | b':' | b'|') {
                    return Err(ContentError::Escape(i));
                }
                out.push(next);
                i += 1;
            }
            b'"' => return Err(ContentError::Quote),
            _ => out.push(b),
        }
        i += 1;
    }
    if in_hex {
        return Err(ContentError::UnterminatedHex);
    }
    if out.is_empty() {
        return Err(ContentError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode(r#""abc""#).unwrap(), b"abc");
        assert_eq!(decode(r#""a|0d 0A|b""#).unwrap(), b"a\r\nb");
        assert_eq!(decode(r#""|41|""#).unwrap(), b"A");
        assert_eq!(decode(r#""a\;b\"c\\""#).unwrap(), b"a;b\"c\\");
        assert_eq!(decode(r#""|4142|""#).unwrap(), b"AB");
    }

    #[test]
    fn rejects() {
        assert_eq!(decode("abc"), Err(ContentError::Unquoted));
        assert_eq!(decode(r#""""#), Err(ContentError::Empty));
        assert_eq!(decode(r#""|4|""#), Err(ContentError::Hex(2)));
        assert_eq!(decode(r#""|zz|""#), Err(ContentError::Hex(1)));
        assert_eq!(decode(r#""|41""#), Err(ContentError::UnterminatedHex));
        assert_eq!(decode(r#""a\nb""#), Err(ContentError::Escape(1)));
        assert_eq!(decode(r#""a"b""#), Err(ContentError::Quote));
    }
}
