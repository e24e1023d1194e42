//! Capture: the nftables table, the policy routing TPROXY needs, and the transparent sockets.
//!
//! `install` is one atomic `nft -j -f -` transaction plus idempotent `ip rule`/`ip route`
//! changes and the packet queue chain (`queue`). The table stays when the node stops, so
//! captured traffic is dropped rather than bypassed (fail closed); only `remove` (`eastwall
//! node cleanup`) takes it away.

mod nfnl;
pub mod nft;
pub mod queue;
pub mod route;
pub mod socket;
pub mod spoof;

use std::net::IpAddr;

use anyhow::Context;

use crate::config::CaptureSpec;

/// Installs (or atomically replaces) the node's capture for this host's workload addresses.
pub fn install(spec: &CaptureSpec, local_addrs: &[IpAddr]) -> anyhow::Result<()> {
    route::install(spec.mark, spec.route_table)?;
    let batch = nft::ruleset(spec, local_addrs);
    nftables::helper::apply_ruleset(&batch)
        .context("applying the nftables table (is nftables installed?)")?;
    queue::install(spec)
}

/// Removes the node's table and policy routing.
pub fn remove(spec: &CaptureSpec) -> anyhow::Result<()> {
    nftables::helper::apply_ruleset(&nft::teardown(&spec.table))
        .context("removing the nftables table")?;
    queue::remove(spec)?;
    route::remove(spec.mark, spec.route_table)
}
