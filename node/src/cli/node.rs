//! `eastwall node`: run the per-host daemon, or remove what it installed.

use clap::Subcommand;
use eastwall_node::config::NodeConfig;
use eastwall_node::{app, capture};

#[derive(Subcommand)]
pub(crate) enum NodeAction {
    /// Remove the node's nftables table and policy routing (stops fail-closed blocking).
    Cleanup,
}

/// Runs the node with the config at `config`, or does `action` with it.
/// Runs the node (or its action) with the config `main` read (it chose the log format).
pub(crate) fn run(
    cfg: anyhow::Result<NodeConfig>,
    action: Option<NodeAction>,
) -> anyhow::Result<()> {
    let cfg = cfg?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match action {
        None => app::run(cfg),
        Some(NodeAction::Cleanup) => capture::remove(&cfg.capture).map(|()| {
            println!(
                "removed nftables table `{}` and its policy routing",
                cfg.capture.table
            );
        }),
    }
}
