//! Replay: every observation decided again with a candidate registry and policy, by
//! [`Policy::decide`] (the node's own decision code), and what would change.
//!
//! An observation is decided with what the node knew: both addresses (looked up in the
//! candidate registry), the identities, user and groups it recorded, the protocol and port,
//! and its request or query. One decided at connection time, without L7 facts, that the
//! candidate would decide only on the requests (a rule with `http`, `tls` or `dns` conditions
//! matches first) is *undetermined*: the record does not say what the protocol was.

use std::collections::BTreeMap;

use eastwall_policy::{Endpoint, Flow, HttpRequestFacts, L7, Policy, Registry, SpiffeId};
use http::HeaderMap;

use crate::observation::{Observation, RecordedL7, Side, Verdict};

/// Examples kept per group.
pub const EXAMPLES: usize = 3;

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Decisions replayed (an aggregate counts as its flows).
    pub decisions: u64,
    /// Decided as before.
    pub unchanged: u64,
    /// Allowed before, denied now: what the candidate would break.
    pub newly_denied: Vec<Group>,
    /// Denied before, allowed now.
    pub newly_allowed: Vec<Group>,
    /// Decided on L4 facts before; the candidate needs the protocol, which was not recorded.
    pub undetermined: Vec<Group>,
}

/// Changed decisions of one kind, on one edge, from one rule to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Who talked to whom: `source -> destination PROTO/port` by workload (or address).
    pub edge: String,
    /// The rule that decided before.
    pub before: String,
    /// The rule that decides now (`-` when undetermined).
    pub after: String,
    /// How many decisions.
    pub count: u64,
    /// A few of them: where each was read, and its request or query if any.
    pub examples: Vec<String>,
}

impl Report {
    /// Decisions newly denied.
    pub fn breaks(&self) -> u64 {
        self.newly_denied.iter().map(|g| g.count).sum()
    }
}

/// The candidate's decision of `o`: the verdict and rule, or `None` when undetermined.
pub fn decide(o: &Observation, registry: &Registry, policy: &Policy) -> Option<(Verdict, String)> {
    let src_id = o
        .src
        .identity
        .as_deref()
        .and_then(|s| SpiffeId::parse(s).ok());
    let dst_id = o
        .dest
        .identity
        .as_deref()
        .and_then(|s| SpiffeId::parse(s).ok());
    let src = Endpoint::lookup(registry, o.src.addr)
        .with_identity(src_id.as_ref())
        .with_user(o.src.user.as_deref(), o.src.groups.as_deref());
    let dst = Endpoint::lookup(registry, o.dest.addr)
        .with_identity(dst_id.as_ref())
        .with_user(o.dest.user.as_deref(), o.dest.groups.as_deref());
    let headers = HeaderMap::new();
    let facts;
    let l7 = match &o.l7 {
        RecordedL7::None => L7::Unknown,
        RecordedL7::Opaque => L7::Opaque,
        RecordedL7::Tls { sni } => L7::Tls {
            sni: sni.as_deref(),
        },
        RecordedL7::Http { method, host, path } => {
            facts = HttpRequestFacts {
                method,
                host: host.as_deref(),
                path,
                headers: &headers,
            };
            L7::Http(&facts)
        }
        RecordedL7::Dns { name } => L7::Dns { name },
    };
    let flow = Flow::new(src, dst, o.port)
        .with_protocol(o.proto)
        .with_l7(l7);
    let d = policy.decide(&flow);
    let verdict = if d.is_allowed() {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    // Allowed only if the requests are: not known from a connection-time record.
    if d.needs_l7 && verdict == Verdict::Allow {
        return None;
    }
    Some((verdict, d.rule_id().to_owned()))
}

/// Replays `observations` with the candidate `registry` and `policy`.
pub fn replay(observations: &[Observation], registry: &Registry, policy: &Policy) -> Report {
    type Groups = BTreeMap<(String, String, String), Group>;
    let mut report = Report::default();
    let (mut denied, mut allowed, mut undetermined) = (Groups::new(), Groups::new(), Groups::new());
    for o in observations {
        report.decisions += o.count;
        let now = decide(o, registry, policy);
        let into = match (&now, o.verdict) {
            (Some((v, _)), before) if *v == before => {
                report.unchanged += o.count;
                continue;
            }
            (None, _) => &mut undetermined,
            (Some((Verdict::Deny, _)), _) => &mut denied,
            (Some((Verdict::Allow, _)), _) => &mut allowed,
        };
        let after = now.map_or_else(|| "-".to_owned(), |(_, r)| r);
        let edge = edge(o);
        let g = into
            .entry((edge.clone(), o.rule.clone(), after.clone()))
            .or_insert_with(|| Group {
                edge,
                before: o.rule.clone(),
                after,
                count: 0,
                examples: Vec::new(),
            });
        g.count += o.count;
        if g.examples.len() < EXAMPLES {
            g.examples.push(example(o));
        }
    }
    let by_count = |m: Groups| {
        let mut v: Vec<Group> = m.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.edge.cmp(&b.edge)));
        v
    };
    report.newly_denied = by_count(denied);
    report.newly_allowed = by_count(allowed);
    report.undetermined = by_count(undetermined);
    report
}

fn name(s: &Side) -> String {
    match (&s.workload, &s.user) {
        (Some(w), Some(u)) => format!("{w} ({u})"),
        (Some(w), None) => w.clone(),
        (None, Some(u)) => format!("{} ({u})", s.addr),
        (None, None) => s.addr.to_string(),
    }
}

/// `source -> destination PROTO/port`.
pub fn edge(o: &Observation) -> String {
    let to = if o.proto.has_ports() {
        format!("{}/{}", o.proto, o.port)
    } else {
        o.proto.to_string()
    };
    format!("{} -> {} {to}", name(&o.src), name(&o.dest))
}

fn example(o: &Observation) -> String {
    let what = match &o.l7 {
        RecordedL7::Http { method, path, .. } => format!(" {method} {path}"),
        RecordedL7::Dns { name } => format!(" query {name}"),
        RecordedL7::Tls { sni: Some(s) } => format!(" TLS {s}"),
        _ => String::new(),
    };
    format!("{} {}{what}", o.from, o.time)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} decisions replayed: {} unchanged, {} newly denied, {} newly allowed, {} undetermined",
            self.decisions,
            self.unchanged,
            self.breaks(),
            self.newly_allowed.iter().map(|g| g.count).sum::<u64>(),
            self.undetermined.iter().map(|g| g.count).sum::<u64>(),
        )?;
        for (title, groups) in [
            (
                "NEWLY DENIED (the candidate would break these)",
                &self.newly_denied,
            ),
            ("NEWLY ALLOWED", &self.newly_allowed),
            (
                "UNDETERMINED (decided on L4 before; the candidate decides on requests the records do not have)",
                &self.undetermined,
            ),
        ] {
            if groups.is_empty() {
                continue;
            }
            writeln!(f, "\n{title}:")?;
            for g in groups {
                writeln!(
                    f,
                    "  {:>6}  {}  (rule {} -> {})",
                    g.count, g.edge, g.before, g.after
                )?;
                for e in &g.examples {
                    writeln!(f, "          e.g. {e}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::observation::Observations;

    pub(crate) const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.77.0.1]}
    - {name: hostB, addresses: [10.77.0.2]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2], app: web, zone: prod}
    - {name: desk-alice, node: hostA, addresses: [10.0.1.5], app: desktop, zone: corp, user: alice}
    - {name: db, node: hostB, addresses: [10.0.2.2], app: db, zone: prod}
    - {name: api, node: hostB, addresses: [10.0.2.3], app: api, zone: prod}
";

    fn policy(rules: &str) -> Policy {
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let text = format!(
            "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n    - name: s\n      rules:\n{rules}"
        );
        Policy::parse("p.yaml", &text, &reg).unwrap().0
    }

    fn flow(src: &str, dst: &str, port: u16, verdict: &str, rule: &str) -> String {
        format!(
            r#"{{"timestamp":"t","event_type":"flow","src_ip":"{src}","src_port":40000,"dest_ip":"{dst}","dest_port":{port},"proto":"TCP","flow":{{"bytes_toserver":1,"bytes_toclient":1}},"eastwall":{{"node":"hostB","direction":"inbound","src":{{}},"dest":{{}},"policy":{{"verdict":"{verdict}","rule":"{rule}"}}}}}}"#
        )
    }

    fn http(src: &str, method: &str, url: &str, verdict: &str, rule: &str, groups: &str) -> String {
        format!(
            r#"{{"timestamp":"t","event_type":"http","src_ip":"{src}","src_port":41000,"dest_ip":"10.0.2.3","dest_port":443,"proto":"TCP","http":{{"url":"{url}","http_method":"{method}"}},"eastwall":{{"node":"hostB","direction":"inbound","src":{{"user":"alice","groups":{groups}}},"dest":{{}},"policy":{{"verdict":"{verdict}","rule":"{rule}"}}}}}}"#
        )
    }

    fn observations(lines: &[String]) -> Vec<Observation> {
        let mut o = Observations::default();
        o.read("eve.json", &lines.join("\n"));
        assert!(o.problems.is_empty(), "{:?}", o.problems);
        o.list
    }

    #[test]
    fn a_candidate_is_told_what_it_breaks_and_what_it_opens() {
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let obs = observations(&[
            flow("10.0.1.2", "10.0.2.2", 5432, "allow", "web-to-db"),
            flow("10.0.1.2", "10.0.2.2", 5432, "allow", "web-to-db"),
            flow("10.0.1.2", "10.0.2.3", 8080, "deny", "default-deny"),
            flow("10.0.2.2", "10.0.1.2", 22, "deny", "default-deny"),
        ]);
        // The same policy: nothing changes.
        let same = policy(
            "        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432]}\n",
        );
        let r = replay(&obs, &reg, &same);
        assert_eq!((r.decisions, r.unchanged, r.breaks()), (4, 4, 0));
        // A candidate that moves web to the API and forgets the database.
        let moved = policy(
            "        - {id: web-to-api, action: allow, from: {app: web}, to: {app: api}, ports: [8080]}\n",
        );
        let r = replay(&obs, &reg, &moved);
        assert_eq!(r.breaks(), 2);
        assert_eq!(r.newly_denied.len(), 1);
        let g = &r.newly_denied[0];
        assert_eq!(g.edge, "10.0.1.2 -> 10.0.2.2 TCP/5432");
        assert_eq!(
            (g.before.as_str(), g.after.as_str()),
            ("web-to-db", "default-deny")
        );
        assert_eq!(g.examples.len(), 2);
        assert_eq!(r.newly_allowed.len(), 1);
        assert_eq!(r.newly_allowed[0].after, "web-to-api");
        assert_eq!(r.unchanged, 1);
        let text = r.to_string();
        assert!(text.contains("2 newly denied, 1 newly allowed"), "{text}");
    }

    #[test]
    fn requests_are_decided_one_by_one_with_groups() {
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let obs = observations(&[
            http(
                "10.0.1.5",
                "GET",
                "/api/accounts/17",
                "allow",
                "finance",
                r#"["finance"]"#,
            ),
            http(
                "10.0.1.5",
                "DELETE",
                "/api/accounts/17",
                "deny",
                "default-deny",
                r#"["finance"]"#,
            ),
            // Groups unknown at the time: a group rule cannot match (fail closed).
            http("10.0.1.5", "GET", "/api/x", "deny", "default-deny", "null"),
            flow("10.0.1.2", "10.0.2.3", 443, "deny", "default-deny"),
        ]);
        let p = policy(
            "        - id: finance\n          action: allow\n          from: {group: finance}\n          to: {app: api, http: [{methods: [GET], paths: [\"/api/*\"]}]}\n          ports: [443]\n",
        );
        let r = replay(&obs, &reg, &p);
        assert_eq!((r.unchanged, r.breaks()), (4, 0), "{r}");
        // GET only for another group: alice's GET breaks.
        let hr = policy(
            "        - id: finance\n          action: allow\n          from: {group: hr}\n          to: {app: api, http: [{methods: [GET], paths: [\"/api/*\"]}]}\n          ports: [443]\n",
        );
        let r = replay(&obs, &reg, &hr);
        assert_eq!(r.breaks(), 1);
        assert!(r.newly_denied[0].examples[0].contains("GET /api/accounts/17"));
        // A connection-time record that an L7 rule would now decide per request.
        let l7_for_web = policy(
            "        - id: web-api\n          action: allow\n          from: {app: web}\n          to: {app: api, http: [{methods: [GET]}]}\n          ports: [443]\n",
        );
        let r = replay(&obs, &reg, &l7_for_web);
        assert_eq!(
            r.undetermined.iter().map(|g| g.count).sum::<u64>(),
            1,
            "{r}"
        );
    }
}
