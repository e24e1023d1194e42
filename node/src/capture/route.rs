//! Policy routing for TPROXY: packets carrying the capture mark are delivered locally, for
//! IPv4 and IPv6 (`ip rule add fwmark MARK lookup TABLE`, `ip route add local ANY dev lo
//! table TABLE`). Uses Debian's iproute2 `ip`, the same tool operators use to inspect it.

use std::process::Command;

use anyhow::{Context, bail};

/// One address family's commands.
const FAMILIES: [(&str, &str); 2] = [("-4", "0.0.0.0/0"), ("-6", "::/0")];

/// Installs the rule and route for both families; idempotent.
pub fn install(mark: u32, table: u32) -> anyhow::Result<()> {
    let (mark, table) = (format!("{mark:#x}"), table.to_string());
    for (fam, any) in FAMILIES {
        let v6 = fam == "-6";
        let rules = ip(&[fam, "rule", "show", "table", &table])?;
        if !rules.contains("fwmark")
            && let Err(e) = run(&[fam, "rule", "add", "fwmark", &mark, "lookup", &table])
        {
            // A host without IPv6 cannot capture it either; IPv4 must work.
            if v6 {
                tracing::warn!("IPv6 policy routing unavailable: {e:#}");
                continue;
            }
            return Err(e);
        }
        if let Err(e) = run(&[
            fam, "route", "replace", "local", any, "dev", "lo", "table", &table,
        ]) {
            if v6 {
                tracing::warn!("IPv6 local route unavailable: {e:#}");
                continue;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Removes the rule and route; missing pieces are not an error.
pub fn remove(mark: u32, table: u32) -> anyhow::Result<()> {
    let (mark, table) = (format!("{mark:#x}"), table.to_string());
    for (fam, any) in FAMILIES {
        let _ = run(&[
            fam, "route", "del", "local", any, "dev", "lo", "table", &table,
        ]);
        while run(&[fam, "rule", "del", "fwmark", &mark, "lookup", &table]).is_ok() {}
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    ip(args).map(|_| ())
}
