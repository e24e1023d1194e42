//! Recording spoofing attempts. Capture drops TCP whose source address the arriving workload
//! interface does not route back to (a workload using another's address) and adds
//! (interface, source, destination, port) to a set with a timeout; this task reads the sets
//! and writes one flow record per new entry, so each attempt is recorded at most once per
//! [`nft::SPOOF_MEMORY_SECS`].

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use super::nft::{self, Fam};
use crate::flow::{Direction, EndpointInfo, FlowRecord, PolicyInfo};
use crate::metrics::RuleLabels;
use crate::state::NodeState;

/// One dropped spoofing attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// The workload interface it came from.
    pub interface: String,
    /// The address it claimed.
    pub src: IpAddr,
    /// Where it was going.
    pub dst: SocketAddr,
}

/// Polls the spoofing sets every second until the task is dropped.
pub async fn watch(state: Arc<NodeState>) {
    let mut seen: HashSet<Attempt> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let table = state.capture.table.clone();
        let listed = tokio::task::spawn_blocking(move || list(&table)).await;
        let Ok(Ok(now)) = listed else { continue };
        for a in now.difference(&seen) {
            record(&state, a);
        }
        seen = now;
    }
}

fn list(table: &str) -> anyhow::Result<HashSet<Attempt>> {
    let mut out = HashSet::new();
    for fam in [Fam::V4, Fam::V6] {
        let json = nftables::helper::get_current_ruleset_raw(
            nftables::helper::DEFAULT_NFT,
            ["list", "set", "inet", table, nft::spoof_set(fam)],
        )?;
        out.extend(parse(&serde_json::from_str(&json)?));
    }
    Ok(out)
}

/// Reads the elements of `nft -j list set` output.
pub fn parse(v: &Value) -> Vec<Attempt> {
    let mut out = Vec::new();
    let sets = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("set"));
    for set in sets {
        for e in set["elem"].as_array().into_iter().flatten() {
            // Elements with a timeout are wrapped: {"elem": {"val": {"concat": [...]}, ...}}.
            let concat = e["elem"]["val"]["concat"]
                .as_array()
                .or_else(|| e["concat"].as_array());
            let Some(c) = concat else { continue };
            let (Some(i), Some(s), Some(d), Some(p)) = (
                c.first().and_then(Value::as_str),
                c.get(1).and_then(Value::as_str),
                c.get(2).and_then(Value::as_str),
                c.get(3).and_then(Value::as_u64),
            ) else {
                continue;
            };
            let (Ok(s), Ok(d), Ok(p)) =
                (s.parse::<IpAddr>(), d.parse::<IpAddr>(), u16::try_from(p))
            else {
                continue;
            };
            out.push(Attempt {
                interface: i.to_owned(),
                src: s,
                dst: SocketAddr::new(d, p),
            });
        }
    }
    out
}

fn record(state: &NodeState, a: &Attempt) {
    let rules = state.rules();
    let src_wl = rules.registry.workload_by_addr(a.src);
    let dst_wl = rules.registry.workload_by_addr(a.dst.ip());
    let start = Utc::now();
    let mut rec = FlowRecord::new(
        state.flows.next_id(),
        &state.node_name,
        Direction::Outbound,
        SocketAddr::new(a.src, 0),
        a.dst,
        EndpointInfo::of(src_wl),
        EndpointInfo::of(dst_wl),
        PolicyInfo::denied_because("spoofed-source"),
        start,
    );
    rec.eastwall.error = Some(format!(
        "source address {} does not belong behind interface {} (reverse-path check); dropped",
        a.src, a.interface
    ));
    state
        .metrics
        .denied
        .get_or_create(&RuleLabels {
            direction: "outbound",
            rule: "spoofed-source".into(),
            mode: "enforce",
            action: "deny",
        })
        .inc();
    rec.finish(start, start, "dropped", "spoofed-source");
    state.flows.record(&rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_concatenated_elements() {
        let v: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"set":{"family":"inet","name":"spoofed4","table":"eastwall",
            "type":["ifname","ipv4_addr","ipv4_addr","inet_service"],"flags":["timeout","dynamic"],"timeout":60,
            "elem":[{"elem":{"val":{"concat":["w1","10.77.1.3","10.77.2.2",5432]},"timeout":60,"expires":58}},
                    {"elem":{"val":{"concat":["w1","bogus","10.77.2.2",5432]}}}]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            parse(&v),
            vec![Attempt {
                interface: "w1".into(),
                src: "10.77.1.3".parse().unwrap(),
                dst: "10.77.2.2:5432".parse().unwrap()
            }]
        );
    }
}
