//! What the console's pages show, from values (pure): the topology (workloads of the registry,
//! the collector's per-edge aggregates folded to one edge per pair, port and outcome) and the
//! rules with their hits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use eastwall_flows::edge::{Edge, EdgeEnd};
use eastwall_policy::{Policy, Registry};
use serde::Serialize;
use serde_json::{Value, json};

/// Sets of users, groups, methods and paths kept per edge at most.
const MAX_LISTED: usize = 20;
/// The pseudo-workload of ends outside the registry.
pub const OUTSIDE: &str = "(outside)";

/// What became of the traffic on an edge, as the map colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Allowed, but a monitor rule would deny it (what enforcing would break).
    Monitor,
    /// Denied.
    Deny,
    /// An IDS signature matched.
    Alert,
}

impl Outcome {
    /// The outcome of an aggregate.
    pub fn of(e: &Edge) -> Outcome {
        match e.verdict.as_str() {
            "alert" => Outcome::Alert,
            "allow" if !e.monitor.is_empty() => Outcome::Monitor,
            "allow" => Outcome::Allow,
            _ => Outcome::Deny,
        }
    }
}

/// One edge of the map: a pair of workloads, a port and an outcome, with what the
/// aggregates say of it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MapEdge {
    /// Source workload (or [`OUTSIDE`]).
    pub src: String,
    /// Destination workload (or [`OUTSIDE`]).
    pub dst: String,
    /// Protocol.
    pub proto: String,
    /// Port.
    pub port: u16,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Deciding rules (signatures for alerts).
    pub rules: BTreeSet<String>,
    /// Monitor rules that would deny.
    pub monitors: BTreeSet<String>,
    /// Source identities seen.
    pub identities: BTreeSet<String>,
    /// Users seen.
    pub users: BTreeSet<String>,
    /// Their groups.
    pub groups: BTreeSet<String>,
    /// `METHOD /path/prefix` seen.
    pub requests: BTreeSet<String>,
    /// Decisions.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
    /// First seen.
    pub first: String,
    /// Last seen.
    pub last: String,
}

fn put(set: &mut BTreeSet<String>, v: &str) {
    if !v.is_empty() && set.len() < MAX_LISTED {
        set.insert(v.to_owned());
    }
}

/// The workload an end names: its workload, else the registry's owner of its identity,
/// else [`OUTSIDE`].
fn workload_of<'r>(
    end: &'r EdgeEnd,
    registry: &'r Registry,
    by_identity: &HashMap<&str, &'r str>,
) -> &'r str {
    if !end.workload.is_empty() && registry.workload(&end.workload).is_some() {
        return &end.workload;
    }
    by_identity
        .get(end.identity.as_str())
        .copied()
        .unwrap_or(OUTSIDE)
}

/// The map: every workload of the registry and the edges between them.
pub fn topology(registry: &Registry, edges: &[Edge]) -> Value {
    let mut by_identity: HashMap<&str, &str> = HashMap::new();
    for w in registry.workloads() {
        by_identity
            .entry(w.identity.as_str())
            .or_insert(w.name.as_str());
    }
    let mut folded: BTreeMap<(String, String, String, u16, Outcome), MapEdge> = BTreeMap::new();
    for e in edges {
        let src = workload_of(&e.src, registry, &by_identity);
        let dst = workload_of(&e.dest, registry, &by_identity);
        let outcome = Outcome::of(e);
        let m = folded
            .entry((
                src.to_owned(),
                dst.to_owned(),
                e.proto.clone(),
                e.port,
                outcome,
            ))
            .or_insert_with(|| MapEdge {
                src: src.to_owned(),
                dst: dst.to_owned(),
                proto: e.proto.clone(),
                port: e.port,
                outcome: Some(outcome),
                first: e.first.clone(),
                last: e.last.clone(),
                ..MapEdge::default()
            });
        put(&mut m.rules, &e.rule);
        put(&mut m.monitors, &e.monitor);
        put(&mut m.identities, &e.src.identity);
        put(&mut m.users, &e.src.user);
        for g in e.src.groups.split(',') {
            put(&mut m.groups, g);
        }
        if !e.method.is_empty() {
            put(&mut m.requests, &format!("{} {}", e.method, e.path_prefix));
        }
        m.count = m.count.saturating_add(e.count);
        m.bytes = m.bytes.saturating_add(e.bytes);
        // RFC 3339 in UTC with one format: text order is time order.
        if e.first < m.first {
            m.first = e.first.clone();
        }
        if e.last > m.last {
            m.last = e.last.clone();
        }
    }
    let workloads: Vec<Value> = registry
        .workloads()
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "app": w.app.as_deref().unwrap_or(""),
                "zone": w.zone.as_deref().unwrap_or(""),
                "node": w.node,
                "identity": w.identity.to_string(),
                "user": w.user,
                "labels": w.labels,
                "addresses": w.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let edges: Vec<MapEdge> = folded.into_values().collect();
    json!({
        "trustDomain": registry.trust_domain(),
        "workloads": workloads,
        "edges": edges,
    })
}

/// The policy's rules in file order with their hits over the aggregates: decisions they made,
/// and for monitor rules, what they would have denied.
pub fn rules(policy: &Policy, edges: &[Edge]) -> Value {
    let mut hits: HashMap<&str, (u64, &str)> = HashMap::new();
    for e in edges {
        for rule in [&e.rule, &e.monitor] {
            if rule.is_empty() {
                continue;
            }
            let h = hits.entry(rule.as_str()).or_insert((0, ""));
            h.0 = h.0.saturating_add(e.count);
            if e.last.as_str() > h.1 {
                h.1 = &e.last;
            }
        }
    }
    let default_deny = hits.get("default-deny").map_or(0, |h| h.0);
    let mut never = 0;
    let list: Vec<Value> = policy
        .rules()
        .map(|r| {
            let (n, last) = hits.get(&*r.rule.id).copied().unwrap_or((0, ""));
            if n == 0 {
                never += 1;
            }
            json!({
                "section": &*r.rule.section,
                "id": &*r.rule.id,
                "action": r.action.to_string(),
                "mode": r.mode.to_string(),
                "line": r.line,
                "ports": r.ports,
                "l7": r.l7,
                "hits": n,
                "lastHit": last,
            })
        })
        .collect();
    json!({
        "rules": list,
        "neverMatched": never,
        "defaultDenied": default_deny,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: lab.example
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
  workloads:
    - {name: web, node: hostA, addresses: [10.1.0.2], app: shop, zone: dev}
    - {name: db, node: hostA, addresses: [10.1.0.3], app: shop, zone: prod}
";

    const POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: shop
      rules:
        - id: web-db
          action: allow
          from: {workload: web}
          to: {workload: db}
          ports: [5432]
        - id: watch-dev-prod
          mode: monitor
          action: deny
          from: {zone: dev}
          to: {zone: prod}
        - id: unused
          action: allow
          from: {workload: db}
          to: {workload: web}
";

    fn edge(
        src: &str,
        dst_identity: &str,
        verdict: &str,
        rule: &str,
        monitor: &str,
        n: u64,
    ) -> Edge {
        Edge {
            src: EdgeEnd {
                workload: src.into(),
                user: "alice".into(),
                groups: "finance,vdi".into(),
                ..EdgeEnd::default()
            },
            dest: EdgeEnd {
                identity: dst_identity.into(),
                ..EdgeEnd::default()
            },
            proto: "TCP".into(),
            port: 5432,
            verdict: verdict.into(),
            rule: rule.into(),
            monitor: monitor.into(),
            count: n,
            bytes: n * 10,
            first: format!("2026-12-0{n}T00:00:00Z"),
            last: format!("2026-12-0{n}T01:00:00Z"),
            ..Edge::default()
        }
    }

    #[test]
    fn edges_fold_by_pair_port_and_outcome_and_ends_map_to_workloads() {
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let db = "spiffe://lab.example/wl/db";
        let t = topology(
            &reg,
            &[
                edge("web", db, "allow", "web-db", "watch-dev-prod", 2),
                edge("web", db, "allow", "web-db", "watch-dev-prod", 3),
                edge("web", db, "deny", "default-deny", "", 1),
                edge("", db, "alert", "sid 2001", "", 1),
                edge("nobody", "spiffe://other/x", "deny", "default-deny", "", 4),
            ],
        );
        assert_eq!(t["workloads"].as_array().unwrap().len(), 2);
        let edges = t["edges"].as_array().unwrap();
        let find = |src: &str, outcome: &str| {
            edges
                .iter()
                .find(|e| e["src"] == src && e["outcome"] == outcome)
                .unwrap_or_else(|| panic!("{src} {outcome}: {edges:?}"))
        };
        let m = find("web", "monitor");
        assert_eq!(
            (m["dst"].as_str(), m["count"].as_u64()),
            (Some("db"), Some(5))
        );
        assert_eq!(m["first"], "2026-12-02T00:00:00Z");
        assert_eq!(m["last"], "2026-12-03T01:00:00Z");
        assert_eq!(m["groups"], json!(["finance", "vdi"]));
        assert_eq!(find("web", "deny")["rules"], json!(["default-deny"]));
        assert_eq!(find(OUTSIDE, "alert")["dst"], "db");
        assert_eq!(find(OUTSIDE, "deny")["dst"], OUTSIDE);
        assert_eq!(edges.len(), 4);
    }

    #[test]
    fn rules_with_hits_and_those_never_matched() {
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let (policy, _) = Policy::parse("p.yaml", POLICY, &reg).unwrap();
        let db = "spiffe://lab.example/wl/db";
        let r = rules(
            &policy,
            &[
                edge("web", db, "allow", "web-db", "watch-dev-prod", 2),
                edge("web", db, "deny", "default-deny", "", 7),
            ],
        );
        let list = r["rules"].as_array().unwrap();
        assert_eq!(list[0]["id"], "web-db");
        assert_eq!(list[0]["hits"], 2);
        assert_eq!(list[0]["line"], 7);
        assert_eq!(list[1]["mode"], "monitor");
        assert_eq!(list[1]["hits"], 2);
        assert_eq!(list[2]["hits"], 0);
        assert_eq!(r["neverMatched"], 1);
        assert_eq!(r["defaultDenied"], 7);
    }
}
