//! Spoofing attempts. Capture drops TCP and UDP whose source address the arriving workload
//! interface does not route back to (a workload using another's address) and counts every
//! such packet ([`dropped`]); it also adds (interface, source, destination, port) to a set
//! with a timeout, at most [`nft::SPOOF_RECORDS_PER_SEC`] new entries a second. [`list`]
//! reads the sets, and the capture entry point records one flow per new entry, so each
//! attempt is recorded at most once per [`nft::SPOOF_MEMORY_SECS`] and a flood costs a bounded
//! number of records.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::nft::{self, Fam};

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

/// The attempts in the node's spoofing sets now (`nft -j list set`, both families).
pub fn list(table: &str) -> anyhow::Result<HashSet<Attempt>> {
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

/// Packets dropped for a spoofed source since the table was (re)installed (`nft -j list
/// counter`).
pub fn dropped(table: &str) -> anyhow::Result<u64> {
    let json = nftables::helper::get_current_ruleset_raw(
        nftables::helper::DEFAULT_NFT,
        ["list", "counter", "inet", table, nft::SPOOF_COUNTER],
    )?;
    counter_packets(&serde_json::from_str(&json)?)
        .ok_or_else(|| anyhow::anyhow!("no `{}` counter in table {table}", nft::SPOOF_COUNTER))
}

/// The packets of the first counter in `nft -j list counter` output.
pub fn counter_packets(v: &Value) -> Option<u64> {
    v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o.get("counter")?.get("packets")?.as_u64())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_is_read_from_nft_json() {
        let v: Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", "name": "spoofed", "table": "eastwall", "handle": 3, "packets": 20000, "bytes": 560000}}]}"#,
        )
        .unwrap();
        assert_eq!(counter_packets(&v), Some(20_000));
        assert_eq!(counter_packets(&serde_json::json!({"nftables": []})), None);
    }

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
