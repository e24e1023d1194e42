//! Users' groups for decisions: a static file, or LDAP / Active Directory behind a cache,
//! configured in the node config's `directory` section. A lookup that fails (unknown user,
//! directory down past its grace period, timeout) yields *unknown* groups, and the policy
//! then matches no rule that mentions groups (fail closed).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use eastwall_identity::directory::{GroupMembership, LdapConfig, Nesting};
use eastwall_identity::{
    CacheConfig, CachedDirectory, GroupDirectory, LdapDirectory, StaticDirectory,
};
use tracing::debug;

use crate::config::{DirectorySpec, LdapSpec};

/// A configured directory.
pub(crate) enum Directory {
    /// From a file.
    Static(StaticDirectory),
    /// LDAP behind the cache.
    Ldap(Box<CachedDirectory<LdapDirectory>>),
}

impl Directory {
    /// Builds the directory `spec` describes; relative paths are resolved against `base`; the
    /// connections to an LDAP server carry `own_mark` (never captured by the node itself).
    /// Must run inside the tokio runtime (the LDAP client starts a task).
    pub(crate) fn build(
        spec: &DirectorySpec,
        base: &Path,
        own_mark: u32,
    ) -> anyhow::Result<Directory> {
        match (&spec.file, &spec.ldap) {
            (Some(f), None) => {
                let path = base.join(f);
                let file = path.display().to_string();
                let text = crate::config::read_file(&path)?;
                let users = eastwall_policy::parse_directory(&file, &text)
                    .map_err(|d| anyhow::anyhow!("{d}"))?;
                Ok(Directory::Static(StaticDirectory::from_users(users)))
            }
            (None, Some(l)) => {
                let ldap = ldap_directory(
                    l,
                    base,
                    Duration::from_millis(spec.lookup_timeout_ms),
                    Some(own_mark),
                )?;
                let cache = CacheConfig {
                    refresh: Duration::from_secs(spec.refresh_secs.max(1)),
                    grace: Duration::from_secs(spec.grace_secs),
                    lookup_timeout: Duration::from_millis(spec.lookup_timeout_ms),
                    ..CacheConfig::default()
                };
                Ok(Directory::Ldap(Box::new(CachedDirectory::new(ldap, cache))))
            }
            _ => anyhow::bail!("`directory` takes exactly one of `file` and `ldap`"),
        }
    }

    /// The user's groups, or `None` when they are unknown (fail closed).
    pub(crate) async fn groups(&self, user: &str) -> Option<Vec<String>> {
        let r = match self {
            Directory::Static(d) => d.groups(user).await,
            Directory::Ldap(d) => d.groups(user).await,
        };
        match r {
            Ok(g) => Some(g.iter().map(str::to_owned).collect()),
            Err(e) => {
                debug!(user, %e, "groups unknown");
                None
            }
        }
    }
}

/// The LDAP client `l` describes: relative paths resolved against `base`, each operation
/// bounded by `timeout`, connections marked with `mark`. Must run inside the tokio runtime.
pub(crate) fn ldap_directory(
    l: &LdapSpec,
    base: &Path,
    timeout: Duration,
    mark: Option<u32>,
) -> anyhow::Result<LdapDirectory> {
    let mut c = LdapConfig::new(l.url.clone(), l.user_base.clone());
    c.starttls = l.starttls;
    c.ca_file = l.ca_file.as_ref().map(|p| base.join(p));
    c.insecure_skip_verify = l.insecure_skip_verify;
    c.bind_dn = l.bind_dn.clone();
    c.bind_password_file = l.bind_password_file.as_ref().map(|p| base.join(p));
    c.user_filter = l.user_filter.clone();
    c.timeout = timeout;
    c.socket_mark = mark;
    let group_base = || {
        l.group_base
            .clone()
            .context("`groupBase` is required with this membership mode")
    };
    c.membership = match l.membership.as_str() {
        "memberOf" => GroupMembership::MemberOfAttribute {
            attribute: "memberOf".into(),
        },
        "member" => GroupMembership::GroupsByMemberDn {
            base: group_base()?,
            filter: "(objectClass=groupOfNames)".into(),
            attribute: "member".into(),
        },
        "uniqueMember" => GroupMembership::GroupsByMemberDn {
            base: group_base()?,
            filter: "(objectClass=groupOfUniqueNames)".into(),
            attribute: "uniqueMember".into(),
        },
        "memberUid" => GroupMembership::GroupsByMemberName {
            base: group_base()?,
            filter: "(objectClass=posixGroup)".into(),
            attribute: "memberUid".into(),
        },
        other => anyhow::bail!(
            "unknown membership mode `{other}` (memberOf, member, uniqueMember, memberUid)"
        ),
    };
    c.nesting = if l.in_chain {
        Nesting::InChain
    } else if l.nesting_depth > 0 {
        Nesting::Recursive {
            max_depth: l.nesting_depth,
        }
    } else {
        Nesting::None
    };
    LdapDirectory::new(c, eastwall_certs::crypto_provider())
        .map_err(|e| anyhow::anyhow!("LDAP directory: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_directory_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("directory.yaml"),
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [finance-admins]\n    bob: [hr]\n    carol: []\n    dave: [hr]\n  groups:\n    finance-admins: {memberOf: [finance]}\n",
        )
        .unwrap();
        let spec = |file: &str| DirectorySpec {
            file: Some(file.into()),
            ldap: None,
            refresh_secs: 60,
            grace_secs: 600,
            lookup_timeout_ms: 2000,
        };
        let Directory::Static(d) =
            Directory::build(&spec("directory.yaml"), dir.path(), 0).unwrap()
        else {
            panic!("a file gives a static directory");
        };
        assert_eq!(d.users().count(), 4);
        let missing = Directory::build(&spec("missing.yaml"), dir.path(), 0);
        let e = missing.err().expect("missing file").to_string();
        assert!(
            e.contains("missing.yaml") && e.contains("cannot read"),
            "{e}"
        );
        // The policy crate's located diagnostics come through as they are.
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  gropus: {}\n",
        )
        .unwrap();
        let e = Directory::build(&spec("bad.yaml"), dir.path(), 0)
            .err()
            .expect("bad file")
            .to_string();
        assert!(e.contains("bad.yaml:4:3:") && e.contains("gropus"), "{e}");
    }
}
