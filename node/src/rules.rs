//! The registry and policy a node decides with, loaded and validated together so they are
//! consistent; the node keeps the set in force behind one swappable pointer (`arc_swap`).

use std::path::Path;

use eastwall_policy::{Diagnostics, Policy, Registry};

use crate::config::read_file;

/// The registry and policy a node decides with, loaded together so they are consistent.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Which workloads exist and where.
    pub(crate) registry: Registry,
    /// The compiled policy.
    pub(crate) policy: Policy,
}

impl Rules {
    /// Loads and validates the registry and policy files; warnings are returned beside them.
    pub(crate) fn load(
        registry_path: &Path,
        policy_path: &Path,
    ) -> anyhow::Result<(Rules, Diagnostics)> {
        let rtext = read_file(registry_path)?;
        let registry = Registry::parse(&registry_path.display().to_string(), &rtext)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        let ptext = read_file(policy_path)?;
        let (policy, warnings) =
            Policy::parse(&policy_path.display().to_string(), &ptext, &registry)
                .map_err(|d| anyhow::anyhow!("{d}"))?;
        Ok((Rules { registry, policy }, warnings))
    }
}
