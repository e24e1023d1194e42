//! The netfilter queues of the protocols the node does not proxy (ICMP, SCTP, GRE, ...).
//!
//! The node's nft table marks the first packet of each new flow of those protocols
//! ([`QUEUE_MARK_OUT`] from the workloads, [`QUEUE_MARK_IN`] to them) and lets it go on; a
//! chain in the `filter` table's forward hook hands marked packets to the node's queues
//! (`capture.packetQueue`, and the next number). That step is an `xt` NFQUEUE target, added
//! with Debian's `iptables-nft`: kernels built without nftables' own `queue` expression
//! (`CONFIG_NFT_QUEUE`, as on this project's machines) still have it. A queue without a
//! reader drops (no `--queue-bypass`), so a stopped node fails closed for these protocols
//! too; only `remove` (`eastwall node cleanup`) takes the chain away.

use std::process::Command;

use anyhow::{Context, bail};

use crate::config::CaptureSpec;

/// Mark of a new flow's first packet from a workload, to be decided on queue
/// `packetQueue`. Never the capture mark, whose policy routing delivers locally.
pub const QUEUE_MARK_OUT: u32 = 0x1e57_0003;

/// Mark of a new flow's first packet to a workload, decided on queue `packetQueue + 1`.
pub const QUEUE_MARK_IN: u32 = 0x1e57_0004;

/// The tools, per address family.
const TOOLS: [&str; 2] = ["iptables-nft", "ip6tables-nft"];

/// The chain's name: the node's table name, in the upper case iptables chains use.
fn chain(spec: &CaptureSpec) -> String {
    let mut c = spec.table.to_ascii_uppercase();
    c.truncate(28);
    c
}

/// The chain's rules: each mark to its queue.
fn rules(spec: &CaptureSpec) -> [[String; 8]; 2] {
    let rule = |mark: u32, queue: u16| {
        [
            "-m".into(),
            "mark".into(),
            "--mark".into(),
            format!("{mark:#x}"),
            "-j".into(),
            "NFQUEUE".into(),
            "--queue-num".into(),
            queue.to_string(),
        ]
    };
    [
        rule(QUEUE_MARK_OUT, spec.packet_queue),
        rule(QUEUE_MARK_IN, spec.packet_queue + 1),
    ]
}

/// Creates (or refills) the chain and its jump from `FORWARD`, for IPv4 and IPv6; idempotent.
pub fn install(spec: &CaptureSpec) -> anyhow::Result<()> {
    let chain = chain(spec);
    for tool in TOOLS {
        let v6 = tool.starts_with("ip6");
        let done = (|| -> anyhow::Result<()> {
            if run(tool, &["-w", "-t", "filter", "-F", &chain]).is_err() {
                run(tool, &["-w", "-t", "filter", "-N", &chain])?;
            }
            for r in rules(spec) {
                let mut args = vec!["-w", "-t", "filter", "-A", &chain];
                args.extend(r.iter().map(String::as_str));
                run(tool, &args)?;
            }
            if run(tool, &["-w", "-t", "filter", "-C", "FORWARD", "-j", &chain]).is_err() {
                run(
                    tool,
                    &["-w", "-t", "filter", "-I", "FORWARD", "1", "-j", &chain],
                )?;
            }
            Ok(())
        })();
        match done {
            Ok(()) => {}
            // A host without IPv6 forwarding rules cannot carry IPv6 either; IPv4 must work.
            Err(e) if v6 => tracing::warn!("IPv6 packet queue unavailable: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the jump and the chain; missing pieces are not an error.
pub fn remove(spec: &CaptureSpec) -> anyhow::Result<()> {
    let chain = chain(spec);
    for tool in TOOLS {
        while run(tool, &["-w", "-t", "filter", "-D", "FORWARD", "-j", &chain]).is_ok() {}
        let _ = run(tool, &["-w", "-t", "filter", "-F", &chain]);
        let _ = run(tool, &["-w", "-t", "filter", "-X", &chain]);
    }
    Ok(())
}

fn run(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running `{tool}` (Debian: iptables)"))?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mark_goes_to_its_queue() {
        let spec = CaptureSpec {
            packet_queue: 200,
            table: "eastwall-test".into(),
            ..CaptureSpec::default()
        };
        assert_eq!(chain(&spec), "EASTWALL-TEST");
        let [out, inb] = rules(&spec);
        assert_eq!(
            out.join(" "),
            "-m mark --mark 0x1e570003 -j NFQUEUE --queue-num 200"
        );
        assert_eq!(
            inb.join(" "),
            "-m mark --mark 0x1e570004 -j NFQUEUE --queue-num 201"
        );
        assert!(!out.iter().any(|a| a.contains("bypass")));
    }
}
