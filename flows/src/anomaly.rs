//! Lateral-movement signals, from the decisions every node records (the collector runs
//! this on what it receives):
//!
//! - **new peer**: a source that has been seen for at least the learning period contacts a
//!   destination (workload or address, protocol and port) it never contacted before;
//! - **denied across zones**: a source is denied reaching other zones at least `threshold`
//!   times within `window`.
//!
//! Each becomes an EVE `anomaly` event with its evidence. Pure: rows in, events out; memory
//! is bounded ([`MAX_TRACKED`] sources and peers; past it, nothing new is learned and
//! [`Detector::saturated`] says so).

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Value, json};

use crate::record::Row;

/// Sources, and source-peer pairs, tracked at most.
pub const MAX_TRACKED: usize = 1_000_000;

/// When to speak up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// A source must have been seen this long (µs) before a new peer is anomalous.
    pub learning_us: i64,
    /// Denials across zones within `window_us` that make an anomaly.
    pub denied_across_zones: usize,
    /// The window (µs).
    pub window_us: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            learning_us: 24 * 3600 * 1_000_000,
            denied_across_zones: 20,
            window_us: 600 * 1_000_000,
        }
    }
}

/// What the detector knows of past traffic.
#[derive(Debug, Default)]
pub struct Detector {
    thresholds: Thresholds,
    first_seen: HashMap<String, i64>,
    peers: HashSet<(String, String)>,
    denials: HashMap<String, VecDeque<i64>>,
    saturated: bool,
}

fn source(r: &Row) -> Option<String> {
    r.src
        .workload
        .clone()
        .or_else(|| r.src.ip.map(|i| i.to_string()))
}

fn peer(r: &Row) -> Option<String> {
    let who = r
        .dest
        .workload
        .clone()
        .or_else(|| r.dest.ip.map(|i| i.to_string()))?;
    Some(format!("{who} {}/{}", r.proto, r.port))
}

impl Detector {
    /// A detector speaking up at `thresholds`.
    pub fn new(thresholds: Thresholds) -> Detector {
        Detector {
            thresholds,
            ..Detector::default()
        }
    }

    /// Whether it stopped learning new sources or peers (at [`MAX_TRACKED`]).
    pub fn saturated(&self) -> bool {
        self.saturated
    }

    /// Learns that `src` contacted `peer` (`dest proto/port`) at `first_us`, from past
    /// aggregates (at start), without speaking up.
    pub fn learn(&mut self, src: &str, peer: &str, first_us: i64) {
        let seen = self.first_seen.entry(src.to_owned()).or_insert(first_us);
        *seen = (*seen).min(first_us);
        if self.peers.len() < MAX_TRACKED {
            self.peers.insert((src.to_owned(), peer.to_owned()));
        }
    }

    /// Looks at one decision; returns the `anomaly` events it makes.
    pub fn observe(&mut self, r: &Row) -> Vec<Value> {
        let mut out = Vec::new();
        let (Some(src), Some(verdict)) = (source(r), r.verdict.as_deref()) else {
            return out;
        };
        if !self.first_seen.contains_key(&src) && self.first_seen.len() >= MAX_TRACKED {
            self.saturated = true;
            return out;
        }
        let since = *self.first_seen.entry(src.clone()).or_insert(r.time_us);
        if let Some(p) = peer(r) {
            let key = (src.clone(), p.clone());
            if !self.peers.contains(&key) {
                if self.peers.len() < MAX_TRACKED {
                    self.peers.insert(key);
                } else {
                    self.saturated = true;
                }
                if r.time_us - since >= self.thresholds.learning_us {
                    out.push(event(
                        r,
                        "new-peer",
                        format!(
                            "{src} contacted {p} for the first time ({verdict} by {})",
                            r.rule.as_deref().unwrap_or("?")
                        ),
                        json!({"seen_since_us": since, "peer": p}),
                    ));
                }
            }
        }
        let across = match (&r.src.zone, &r.dest.zone) {
            (Some(a), Some(b)) => a != b,
            (Some(_), None) => true,
            _ => false,
        };
        if verdict == "deny" && across {
            let window = self.thresholds.window_us;
            let times = self.denials.entry(src.clone()).or_default();
            times.push_back(r.time_us);
            while times.front().is_some_and(|t| r.time_us - t > window) {
                times.pop_front();
            }
            if times.len() >= self.thresholds.denied_across_zones {
                let n = times.len();
                times.clear();
                out.push(event(
                    r,
                    "denied-across-zones",
                    format!(
                        "{src} was denied {n} times reaching other zones within {} s",
                        window / 1_000_000
                    ),
                    json!({"denials": n, "window_s": window / 1_000_000}),
                ));
            }
            if self.denials.len() > MAX_TRACKED {
                self.denials.retain(|_, t| !t.is_empty());
            }
        }
        out
    }
}

fn event(r: &Row, kind: &str, reason: String, evidence: Value) -> Value {
    let ip = |i: Option<std::net::IpAddr>| i.map(|a| a.to_string());
    let mut src = json!({"workload": r.src.workload, "app": r.src.app, "zone": r.src.zone, "identity": r.src.identity});
    if let Some(user) = &r.src.user {
        src["user"] = json!(user);
    }
    json!({
        "timestamp": crate::record::timestamp_of(r.time_us),
        "host": r.node,
        "event_type": "anomaly",
        "src_ip": ip(r.src.ip),
        "dest_ip": ip(r.dest.ip),
        "dest_port": r.port,
        "proto": r.proto,
        // Suricata's `anomaly` object names the event; why, and the evidence, are eastwall's.
        "anomaly": {"type": "eastwall", "event": kind},
        "eastwall": {
            "node": r.node,
            "reason": reason,
            "evidence": evidence,
            "src": src,
            "dest": {"workload": r.dest.workload, "app": r.dest.app, "zone": r.dest.zone},
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::row_of;

    const HOUR: i64 = 3600 * 1_000_000;

    fn row(t_h: i64, src: &str, dst: &str, zone: &str, port: u16, verdict: &str) -> Row {
        let ts = crate::record::timestamp_of(1_796_464_800_000_000 + t_h * HOUR);
        row_of(&serde_json::from_str(&format!(
            r#"{{"timestamp":"{ts}","event_type":"flow","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","dest_port":{port},"proto":"TCP","eastwall":{{"node":"n","src":{{"workload":"{src}","zone":"prod"}},"dest":{{"workload":"{dst}","zone":"{zone}"}},"policy":{{"verdict":"{verdict}","rule":"r"}}}}}}"#
        )).unwrap()).unwrap()
    }

    #[test]
    fn a_new_peer_after_the_learning_period_and_denials_across_zones() {
        let mut d = Detector::new(Thresholds {
            learning_us: 24 * HOUR,
            denied_across_zones: 3,
            window_us: HOUR,
        });
        // Learning: web's usual peers, no noise.
        assert!(
            d.observe(&row(0, "web", "db", "prod", 5432, "allow"))
                .is_empty()
        );
        assert!(
            d.observe(&row(1, "web", "cache", "prod", 6379, "allow"))
                .is_empty()
        );
        // Two days on: the same peers are quiet, a new one speaks up, once.
        assert!(
            d.observe(&row(48, "web", "db", "prod", 5432, "allow"))
                .is_empty()
        );
        let e = d.observe(&row(48, "web", "hr-db", "prod", 5432, "allow"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["event_type"], "anomaly");
        assert_eq!(e[0]["anomaly"]["event"], "new-peer");
        assert!(
            e[0]["eastwall"]["reason"]
                .as_str()
                .unwrap()
                .contains("web contacted hr-db TCP/5432")
        );
        assert!(
            d.observe(&row(49, "web", "hr-db", "prod", 5432, "allow"))
                .is_empty()
        );
        // A new source learns first.
        assert!(
            d.observe(&row(50, "batch", "hr-db", "prod", 5432, "allow"))
                .is_empty()
        );
        // Denied across zones: 3 within an hour speaks up (and starts counting again).
        let mut events = Vec::new();
        for m in 0..4 {
            events.extend(d.observe(&row(60, "web", &format!("dev{m}"), "dev", 22, "deny")));
        }
        let across: Vec<_> = events
            .iter()
            .filter(|e| e["anomaly"]["event"] == "denied-across-zones")
            .collect();
        assert_eq!(across.len(), 1, "{events:?}");
        assert_eq!(across[0]["eastwall"]["evidence"]["denials"], 3);
        // Denials within one zone, or spread over more than the window, do not.
        let mut quiet = Detector::new(Thresholds {
            learning_us: 0,
            denied_across_zones: 3,
            window_us: HOUR,
        });
        for h in [0, 2, 4, 6] {
            let e = quiet.observe(&row(h, "web", "x", "dev", 22, "deny"));
            assert!(
                e.iter()
                    .all(|e| e["anomaly"]["event"] != "denied-across-zones")
            );
        }
        for _ in 0..5 {
            let e = quiet.observe(&row(8, "web", "db", "prod", 22, "deny"));
            assert!(
                e.iter()
                    .all(|e| e["anomaly"]["event"] != "denied-across-zones")
            );
        }
        // What was learned from past aggregates is not new.
        let mut warm = Detector::new(Thresholds::default());
        warm.learn("web", "hr-db TCP/5432", 0);
        assert!(
            warm.observe(&row(100, "web", "hr-db", "prod", 5432, "allow"))
                .is_empty()
        );
    }
}
