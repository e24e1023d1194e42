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
}

impl Rules {
    /// Loads and validates the registry and policy files; warnings are returned beside them.
    pub(crate) fn load(
        registry_path: &Path,
        policy_path: &Path,
    ) -> anyhow::Result<(Rules, Diagnostics)> {
        let rtext = read_file(registry_path)?;
        let registry = Registry::parse(&registry_path.display().to_string(), &rtext)
            .map_err(|d| anyhow::anyhow!("{}", first_of(&d)))?;
        let ptext = read_file(policy_path)?;
        let (policy, warnings) =
            Policy::parse(&policy_path.display().to_string(), &ptext, &registry)
                .map_err(|d| anyhow::anyhow!("{}", first_of(&d)))?;
        Ok((Rules { registry, policy }, warnings))
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
