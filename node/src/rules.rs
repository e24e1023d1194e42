//! The registry and policy a node decides with, loaded and validated together so they are
//! consistent; the node keeps the set in force behind one swappable pointer (`arc_swap`).

use std::path::Path;

use eastwall_policy::{Diagnostics, Policy, Registry};
use tracing::warn;

use crate::config::read_file;

/// Diagnostics a node writes to its log for one load; `eastwall policy check` lists them all.
const LOGGED: usize = 20;

/// The registry and policy a node decides with, loaded together so they are consistent.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Which workloads exist and where.
    pub(crate) registry: Registry,
    /// The compiled policy.
    pub(crate) policy: Policy,
    /// The central store's version these rules are (from the state folder's files).
    pub(crate) stored: Option<StoredVersion>,
    /// `sha256:<hex>` of the registry and policy texts: which files are in force.
    pub(crate) files_hash: String,
}

/// A version of the central store, as the node's state files carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredVersion {
    /// Its number.
    pub(crate) version: u64,
    /// Its hash.
    pub(crate) hash: String,
}

/// The first line of a policy file the node wrote from the central store.
const STORED_MARK: &str = "# eastwall-store: version ";

impl StoredVersion {
    /// The line that marks a policy file as version `self` of the store.
    pub(crate) fn mark(&self) -> String {
        format!("{STORED_MARK}{} {}\n", self.version, self.hash)
    }

    /// The version a policy text is marked with, if any.
    pub(crate) fn of(policy_text: &str) -> Option<StoredVersion> {
        let rest = policy_text.lines().next()?.strip_prefix(STORED_MARK)?;
        let (n, hash) = rest.split_once(' ')?;
        Some(StoredVersion {
            version: n.parse().ok()?,
            hash: hash.trim().to_owned(),
        })
    }
}

impl Rules {
    /// Loads and validates the registry and policy files; warnings are returned beside them.
    pub(crate) fn load(
        registry_path: &Path,
        policy_path: &Path,
    ) -> anyhow::Result<(Rules, Diagnostics)> {
        let (rtext, ptext) = read_pair(registry_path, policy_path)?;
        let registry = Registry::parse(&registry_path.display().to_string(), &rtext)
            .map_err(|d| anyhow::anyhow!("{}", first_of(&d)))?;
        let (policy, warnings) =
            Policy::parse(&policy_path.display().to_string(), &ptext, &registry)
                .map_err(|d| anyhow::anyhow!("{}", first_of(&d)))?;
        let stored = StoredVersion::of(&ptext);
        Ok((
            Rules {
                registry,
                policy,
                stored,
                files_hash: files_hash(&rtext, &ptext),
            },
            warnings,
        ))
    }
}

/// `sha256:<hex>` of a registry and a policy text.
pub(crate) fn files_hash(registry: &str, policy: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for text in [registry, policy] {
        ctx.update(&(text.len() as u64).to_be_bytes());
        ctx.update(text.as_bytes());
    }
    let hex: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Reads the registry and the policy. Files the node wrote from the central store carry
/// their version on their first line: both must be of one version (the node replaces them
/// one after the other), else they are read again.
fn read_pair(registry_path: &Path, policy_path: &Path) -> anyhow::Result<(String, String)> {
    let mut tries = 0;
    loop {
        let rtext = read_file(registry_path)?;
        let ptext = read_file(policy_path)?;
        let (r, p) = (StoredVersion::of(&rtext), StoredVersion::of(&ptext));
        if r == p {
            return Ok((rtext, ptext));
        }
        tries += 1;
        if tries == 50 {
            anyhow::bail!(
                "{} and {} are of different versions of the central store",
                registry_path.display(),
                policy_path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Logs the first warnings of a load and how many more there are (a large policy may have
/// thousands: logging them all would hold up the node at every reload).
pub(crate) fn log_warnings(warnings: &Diagnostics) {
    for w in warnings.iter().take(LOGGED) {
        warn!("{w}");
    }
    let more = warnings.iter().count().saturating_sub(LOGGED);
    if more > 0 {
        warn!("... and {more} more warnings (`eastwall policy check` lists them all)");
    }
}

/// The first diagnostics, one per line, and how many more there are.
fn first_of(d: &Diagnostics) -> String {
    let mut lines: Vec<String> = d.iter().take(LOGGED).map(ToString::to_string).collect();
    let more = d.iter().count().saturating_sub(LOGGED);
    if more > 0 {
        lines.push(format!(
            "... and {more} more (`eastwall policy check` lists them all)"
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_marked_with_its_store_version_says_so() {
        let v = StoredVersion {
            version: 7,
            hash: "sha256:ab".into(),
        };
        let text = format!("{}apiVersion: eastwall.dev/v1\n", v.mark());
        assert_eq!(StoredVersion::of(&text), Some(v));
        assert_eq!(StoredVersion::of("apiVersion: eastwall.dev/v1\n"), None);
        assert_eq!(StoredVersion::of("# eastwall-store: version x y\n"), None);
    }
}
