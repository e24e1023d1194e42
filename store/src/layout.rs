//! Where everything is in etcd, under one prefix (`/eastwall/` by default):
//!
//! | key | what | who writes |
//! |---|---|---|
//! | `config/registry`, `config/workloads/<name>`, `config/policy` | the configuration ([`crate::snapshot`]) | admins (`eastwall apply`) |
//! | `config/version` | the version in force: number, hash, author, time, message ([`crate::history::Version`]) | admins, last in every apply |
//! | `versions/<version>` | that version's record | admins |
//! | `history/<version>/put/<key>`, `history/<version>/delete/<key>` | what that version changed | admins |
//! | `lock` | an apply in progress (leased) | admins |
//! | `nodes/<node>/status` | what a node enforces (leased: it expires with the node) | that node only |
//!
//! Nodes may read `config/` and write `nodes/<their name>/`; nothing else (etcd roles).

/// The default prefix.
pub const DEFAULT_PREFIX: &str = "/eastwall/";

/// The keys of one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// The keys under `prefix` (a trailing `/` is added if missing).
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// The prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where configuration values are (`key` relative to it is a [`crate::Snapshot`] key).
    pub fn config(&self) -> String {
        format!("{}config/", self.prefix)
    }

    /// The key of configuration value `key`.
    pub fn config_key(&self, key: &str) -> String {
        format!("{}config/{key}", self.prefix)
    }

    /// The version in force.
    pub fn version(&self) -> String {
        self.config_key(VERSION)
    }

    /// Where history is.
    pub fn history(&self) -> String {
        format!("{}history/", self.prefix)
    }

    /// Where the records of every version are.
    pub fn versions(&self) -> String {
        format!("{}versions/", self.prefix)
    }

    /// Version `v`'s record.
    pub fn version_of(&self, v: u64) -> String {
        format!("{}versions/{v:012}", self.prefix)
    }

    /// Where version `v`'s history is.
    pub fn history_of(&self, v: u64) -> String {
        format!("{}history/{v:012}/", self.prefix)
    }

    /// The apply lock.
    pub fn lock(&self) -> String {
        format!("{}lock", self.prefix)
    }

    /// Where nodes report.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// Node `node`'s status.
    pub fn status(&self, node: &str) -> String {
        format!("{}nodes/{node}/status", self.prefix)
    }

    /// How messages name the store's configuration keys (`etcd:/eastwall/config/`).
    pub fn source(&self) -> String {
        format!("etcd:{}", self.config())
    }
}

/// The key (relative to `config/`) of the version record, not part of a snapshot.
pub const VERSION: &str = "version";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_one_prefix() {
        let k = Keys::new("/corp");
        assert_eq!(k.prefix(), "/corp/");
        assert_eq!(k.config_key("workloads/web"), "/corp/config/workloads/web");
        assert_eq!(k.version(), "/corp/config/version");
        assert_eq!(k.history_of(7), "/corp/history/000000000007/");
        assert_eq!(k.version_of(7), "/corp/versions/000000000007");
        assert_eq!(k.status("hostA"), "/corp/nodes/hostA/status");
        assert_eq!(k.source(), "etcd:/corp/config/");
        assert_eq!(Keys::default().lock(), "/eastwall/lock");
    }
}
