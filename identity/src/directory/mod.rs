//! Users and their groups: the [`GroupDirectory`] trait and its implementations.
//!
//! A policy rule such as "members of `finance` may use the finance app" needs the groups of a
//! user at decision time. The node asks a [`GroupDirectory`] for them:
//!
//! ```text
//! user name -> CachedDirectory (moka: refresh, one query in flight per user, stale grace)
//!                 -> LdapDirectory  (ldap3: bind, user search, group search, nesting)
//!                 or StaticDirectory (users -> all their groups, from a directory file)
//!           <- Groups (sorted names + the user's DN) or DirectoryError
//! ```
//!
//! Any error means "this user is in no group": callers fail closed. An error says whether the
//! directory answered that the user does not exist ([`DirectoryError::is_unknown_user`]) or
//! could not answer at all ([`DirectoryError::is_unavailable`]).

mod cache;
mod filter;
mod ldap;
mod static_file;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use cache::{CacheConfig, CachedDirectory, DirectoryMetrics, MetricsSnapshot};
pub use filter::{FilterTemplate, FilterTemplateError, escape_filter_value};
pub use ldap::{GroupMembership, LdapConfig, LdapConfigError, LdapDirectory, Nesting, Security};
pub use static_file::StaticDirectory;

/// A source of group memberships for user names (LDAP, Active Directory, a static file).
pub trait GroupDirectory: Send + Sync {
    /// The groups `user` belongs to, directly or through nested groups.
    ///
    /// `Err` means the user matches no group rule; the error tells why.
    fn groups(&self, user: &str) -> impl Future<Output = Result<Groups, DirectoryError>> + Send;
}

/// A shared directory is a directory (the node holds one behind an `Arc`).
impl<D: GroupDirectory + ?Sized> GroupDirectory for Arc<D> {
    fn groups(&self, user: &str) -> impl Future<Output = Result<Groups, DirectoryError>> + Send {
        (**self).groups(user)
    }
}

/// The groups of one user: a sorted set of group names, plus the user's DN when known.
///
/// Cheap to clone (shared).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Groups {
    names: Arc<BTreeSet<String>>,
    dn: Option<Arc<str>>,
}

impl Groups {
    /// Groups from names; `dn` is the user's distinguished name if the directory has one.
    pub fn new(names: impl IntoIterator<Item = String>, dn: Option<String>) -> Groups {
        Groups {
            names: Arc::new(names.into_iter().collect()),
            dn: dn.map(Arc::from),
        }
    }

    /// Whether the user is in the group `name` (exact, case-sensitive match).
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The group names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The group names as a set.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// How many groups.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the user is in no group.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The user's distinguished name in the directory, if it has one.
    pub fn dn(&self) -> Option<&str> {
        self.dn.as_deref()
    }
}

/// Why a directory gave no groups for a user. Every variant means "no groups" to policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The directory answered: it has no such user.
    #[error("unknown user {user:?}")]
    UnknownUser {
        /// The user name asked for.
        user: String,
    },
    /// The directory could not be reached, refused the service account, or failed a search.
    #[error("directory unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for the log.
        reason: String,
    },
    /// The TLS handshake with the directory failed (for example its certificate is not signed
    /// by the configured CA).
    #[error("TLS with the directory {url} failed: {reason}")]
    Tls {
        /// The directory URL.
        url: String,
        /// What the TLS layer reported.
        reason: String,
    },
    /// The lookup did not finish within the configured timeout.
    #[error("directory lookup timed out after {after:?}")]
    Timeout {
        /// The configured lookup timeout.
        after: Duration,
    },
    /// The user is in more groups than the configured cap; the answer is refused rather than
    /// truncated, since a truncated list could wrongly satisfy a negated group rule.
    #[error("user {user:?} is in more than {limit} groups")]
    TooManyGroups {
        /// The user name asked for.
        user: String,
        /// The configured cap.
        limit: usize,
    },
    /// The directory answered something that cannot be used (several entries for one user,
    /// a malformed entry).
    #[error("unusable directory answer: {reason}")]
    InvalidResponse {
        /// What was wrong with it.
        reason: String,
    },
}

impl DirectoryError {
    /// Whether the directory answered that the user does not exist (a definite answer).
    pub fn is_unknown_user(&self) -> bool {
        matches!(self, DirectoryError::UnknownUser { .. })
    }

    /// Whether the directory could not give a definite answer (down, slow, TLS, bad answer).
    pub fn is_unavailable(&self) -> bool {
        !self.is_unknown_user()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_sorted_and_deduplicated() {
        let g = Groups::new(
            ["hr".to_owned(), "finance".to_owned(), "hr".to_owned()],
            Some("uid=bob,dc=example,dc=org".to_owned()),
        );
        assert_eq!(g.iter().collect::<Vec<_>>(), ["finance", "hr"]);
        assert!(g.contains("hr"));
        assert!(!g.contains("HR"));
        assert_eq!(g.len(), 2);
        assert_eq!(g.dn(), Some("uid=bob,dc=example,dc=org"));
    }

    #[test]
    fn unknown_user_is_told_apart_from_unavailable() {
        let unknown = DirectoryError::UnknownUser { user: "x".into() };
        assert!(unknown.is_unknown_user() && !unknown.is_unavailable());
        let down = DirectoryError::Timeout {
            after: Duration::from_secs(1),
        };
        assert!(down.is_unavailable() && !down.is_unknown_user());
    }
}
