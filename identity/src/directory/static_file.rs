//! A directory held in memory: users and all of their groups, as read from a directory file
//! (`kind: Directory`), for the demo and for sites without LDAP.
//!
//! The file format (its checks, nested groups and their cycles, located errors) belongs to
//! `eastwall_policy::parse_directory`, with the other files users write; this is only what
//! the directory is at run time.

use std::collections::BTreeMap;

use super::{DirectoryError, GroupDirectory, Groups};

/// Users and their groups known in advance; answers from memory.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    users: BTreeMap<String, Groups>,
}

impl StaticDirectory {
    /// A directory from user -> every group the user is in; nested groups must already be
    /// resolved (as `eastwall_policy::parse_directory` returns them), none are followed here.
    pub fn from_users<U, G>(users: impl IntoIterator<Item = (U, G)>) -> StaticDirectory
    where
        U: Into<String>,
        G: IntoIterator,
        G::Item: Into<String>,
    {
        StaticDirectory {
            users: users
                .into_iter()
                .map(|(u, gs)| (u.into(), Groups::new(gs.into_iter().map(Into::into), None)))
                .collect(),
        }
    }

    /// The user names, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl GroupDirectory for StaticDirectory {
    async fn groups(&self, user: &str) -> Result<Groups, DirectoryError> {
        self.users
            .get(user)
            .cloned()
            .ok_or_else(|| DirectoryError::UnknownUser {
                user: user.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(g: &Groups) -> Vec<&str> {
        g.iter().collect()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn builds_from_users() {
        let d = StaticDirectory::from_users([("alice", ["finance"]), ("bob", ["hr"])]);
        let g = block_on(d.groups("bob")).unwrap();
        assert_eq!(names(&g), ["hr"]);
    }

    #[test]
    fn answers_from_resolved_groups() {
        // The shape `parse_directory` returns: every group, inherited ones included.
        let d = StaticDirectory::from_users([
            ("carol", vec!["finance-admins", "finance", "staff"]),
            ("alice", vec!["staff", "finance"]),
            ("dave", vec![]),
        ]);
        block_on(async {
            assert_eq!(
                names(&d.groups("alice").await.unwrap()),
                ["finance", "staff"]
            );
            assert_eq!(
                names(&d.groups("carol").await.unwrap()),
                ["finance", "finance-admins", "staff"]
            );
            assert!(d.groups("dave").await.unwrap().is_empty());
            let err = d.groups("mallory").await.unwrap_err();
            assert!(err.is_unknown_user(), "{err}");
        });
        assert_eq!(d.users().collect::<Vec<_>>(), ["alice", "carol", "dave"]);
    }
}
