//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), validated as the SPIFFE ID specification says.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("a SPIFFE ID starts with `spiffe://`")]
    Scheme,
    /// The trust domain is empty.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain holds a character outside `[a-z0-9.-_]`.
    #[error(
        "the trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (found {0:?})"
    )]
    TrustDomainChar(char),
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("a path segment is empty")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("a path segment may not be `.` or `..`")]
    DotSegment,
    /// A path segment holds a character outside `[A-Za-z0-9.-_]`.
    #[error("a path segment may hold only letters, digits, `.`, `-` and `_` (found {0:?})")]
    PathChar(char),
    /// The ID is longer than 2048 bytes.
    #[error("a SPIFFE ID is at most 2048 bytes long")]
    TooLong,
}

/// A validated SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    // Byte offset where the path starts (len of `spiffe://` + trust domain).
    path_at: usize,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if let Some(c) = td.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(SpiffeIdError::TrustDomainChar(c));
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(SpiffeIdError::EmptySegment);
                }
                if seg == "." || seg == ".." {
                    return Err(SpiffeIdError::DotSegment);
                }
                if let Some(c) = seg
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(SpiffeIdError::PathChar(c));
                }
            }
        }
        Ok(SpiffeId {
            uri: s.to_owned(),
            path_at: SCHEME.len() + td.len(),
        })
    }

    /// The trust domain, e.g. `corp.example`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.path_at]
    }

    /// The path, e.g. `/ns/prod/wl/db`; empty for the trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.uri[self.path_at..]
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The user an identity acts for: the segment after a leading `/user/` in the path
    /// (`spiffe://corp/user/alice/wl/desktop-7` acts for `alice`), as eastwall issues them for
    /// workloads bound to a user.
    pub fn user(&self) -> Option<&str> {
        let rest = self.path().strip_prefix("/user/")?;
        Some(rest.split('/').next().unwrap_or(rest)).filter(|u| !u.is_empty())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        let id = SpiffeId::parse("spiffe://corp.example/zone/prod/wl/db").unwrap();
        assert_eq!(id.trust_domain(), "corp.example");
        assert_eq!(id.path(), "/zone/prod/wl/db");
        let td = SpiffeId::parse("spiffe://corp.example").unwrap();
        assert_eq!(td.path(), "");
        assert_eq!(td.user(), None);
        let u = SpiffeId::parse("spiffe://corp.example/user/alice/wl/desktop-7").unwrap();
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(
            SpiffeId::parse("spiffe://corp.example/user/bob")
                .unwrap()
                .user(),
            Some("bob")
        );
        assert_eq!(
            SpiffeId::parse("spiffe://corp.example/wl/user")
                .unwrap()
                .user(),
            None
        );
    }

    #[test]
    fn invalid_ids() {
        use SpiffeIdError::*;
        let cases = [
            ("http://corp/x", Scheme),
            ("spiffe:///x", EmptyTrustDomain),
            ("spiffe://Corp/x", TrustDomainChar('C')),
            ("spiffe://corp//x", EmptySegment),
            ("spiffe://corp/x/", EmptySegment),
            ("spiffe://corp/./x", DotSegment),
            ("spiffe://corp/../x", DotSegment),
            ("spiffe://corp/x y", PathChar(' ')),
            ("spiffe://corp/x?q", PathChar('?')),
        ];
        for (s, want) in cases {
            assert_eq!(SpiffeId::parse(s), Err(want), "{s}");
        }
        let long = format!("spiffe://corp/{}", "a".repeat(2100));
        assert_eq!(SpiffeId::parse(&long), Err(TooLong));
    }
}
