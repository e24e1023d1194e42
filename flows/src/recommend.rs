//! Recommend: a policy that allows what was observed allowed, written as a team would.
//!
//! - Ends are named by what the registry says of their address: `{app, zone}` (or the
//!   workload, when it has no app); an address outside the registry by itself (`cidr`).
//! - A source that acts for a user (a VDI desktop, a local user) is named by a directory
//!   group all its observed users share, the most specific one (held by the fewest observed
//!   users): a finance group reaches the finance app, not a list of desktops. Without a
//!   shared group, by the users.
//! - Ports are merged per edge and protocol; an edge decided request by request (every
//!   observation on that port an HTTP request) gets `http` conditions: the methods seen and
//!   the paths generalized (`/api/accounts/17` → `/api/accounts/*`; many siblings → their
//!   parent); DNS queries get `dns` names (three or more under one parent → `*.parent`).
//! - Only allowed decisions are recommended: what was denied stays denied by default deny.
//! - Each rule carries its evidence in a comment: decisions, bytes, first and last seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use eastwall_policy::{Protocol, Registry};

use crate::observation::{Observation, RecordedL7, Side, Verdict};

/// What to recommend.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only edges from or to this app.
    pub app: Option<String>,
    /// Only edges from or to this zone.
    pub zone: Option<String>,
    /// Every rule in `mode: monitor`, to watch before enforcing.
    pub monitor: bool,
}

/// The recommended policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// The policy document (YAML with comments).
    pub yaml: String,
    /// Rules in it.
    pub rules: usize,
    /// Allowed decisions it stands for.
    pub covered: u64,
}

/// Who a rule names at one end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Who {
    Group(String),
    Users(BTreeSet<String>),
    App { app: String, zone: Option<String> },
    Workload(String),
    Addr(IpAddr),
}

/// Evidence of one port of an edge.
#[derive(Clone, Debug, Default)]
struct Evidence {
    count: u64,
    bytes: u64,
    first: String,
    last: String,
    /// Every observation an HTTP request; then the methods and paths.
    http_only: bool,
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
    /// Every observation a DNS query; then the names.
    dns_only: bool,
    names: BTreeSet<String>,
}

impl Evidence {
    fn add(&mut self, o: &Observation) {
        let last = o.last.as_ref().unwrap_or(&o.time);
        if self.count == 0 {
            self.http_only = true;
            self.dns_only = true;
            self.first = o.time.clone();
            self.last = last.clone();
        }
        self.count += o.count;
        self.bytes += o.bytes;
        if o.time < self.first {
            self.first = o.time.clone();
        }
        if *last > self.last {
            self.last = last.clone();
        }
        match &o.l7 {
            RecordedL7::Http { method, path, .. } => {
                self.dns_only = false;
                self.methods.insert(method.clone());
                self.paths.insert(path.clone());
            }
            RecordedL7::Dns { name } => {
                self.http_only = false;
                self.names.insert(name.clone());
            }
            _ => {
                self.http_only = false;
                self.dns_only = false;
            }
        }
    }

    fn merge(&mut self, other: &Evidence) {
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.count += other.count;
        self.bytes += other.bytes;
        self.first = self.first.clone().min(other.first.clone());
        self.last = self.last.clone().max(other.last.clone());
    }
}

/// The protocol and port a rule's `ports` entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Port {
    proto: u8,
    port: u16,
    icmp_type: Option<u8>,
}

impl Port {
    fn of(o: &Observation) -> Port {
        let icmp_type = match o.proto {
            Protocol::Icmp { kind, .. } | Protocol::Icmpv6 { kind, .. } => Some(kind),
            _ => None,
        };
        Port {
            proto: o.proto.number(),
            port: o.port,
            icmp_type,
        }
    }

    fn yaml(&self) -> String {
        let name = Protocol::from_number(self.proto).name();
        match (self.proto, self.icmp_type) {
            (6, _) => self.port.to_string(),
            (17 | 132, _) => format!("{{port: {}, protocol: {name}}}", self.port),
            (_, Some(t)) => format!("{{protocol: {name}, icmpType: {t}}}"),
            _ => format!("{{protocol: {name}}}"),
        }
    }
}

/// The recommended policy for the allowed decisions among `observations`, named with
/// `registry`.
pub fn recommend(
    observations: &[Observation],
    registry: &Registry,
    opts: &Options,
) -> Recommendation {
    let allowed: Vec<&Observation> = observations
        .iter()
        .filter(|o| o.verdict == Verdict::Allow && in_scope(o, registry, opts))
        .collect();
    // How many observed users hold each group: the fewer, the more specific.
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in &allowed {
        if let (Some(u), Some(gs)) = (&o.src.user, &o.src.groups) {
            for g in gs {
                holders.entry(g).or_default().insert(u);
            }
        }
    }
    // Users' sources first gathered per destination and port, to find their shared group.
    let mut edges: BTreeMap<(Who, Who), BTreeMap<Port, Evidence>> = BTreeMap::new();
    let mut by_users: BTreeMap<(Who, Port), Vec<&Observation>> = BTreeMap::new();
    for o in &allowed {
        let dst = who(&o.dest, registry);
        if o.src.user.is_some() {
            by_users.entry((dst, Port::of(o))).or_default().push(o);
        } else {
            edges
                .entry((who(&o.src, registry), dst))
                .or_default()
                .entry(Port::of(o))
                .or_default()
                .add(o);
        }
    }
    for ((dst, port), obs) in by_users {
        let src = shared_group(&obs, &holders);
        let ev = edges
            .entry((src, dst))
            .or_default()
            .entry(port)
            .or_default();
        for o in obs {
            ev.add(o);
        }
    }

    let mut yaml = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Policy\nmetadata: {name: recommended}\nspec:\n  sections:\n",
    );
    let mut ids = BTreeSet::new();
    let mut rules = 0;
    let mut covered = 0;
    // One section per destination.
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((src, dst), ports) in &edges {
        // Plain ports in one rule; each port decided request by request in its own.
        let (l7, plain): (Vec<_>, Vec<_>) =
            ports.iter().partition(|(_, e)| e.http_only || e.dns_only);
        let mut groups: Vec<(Vec<Port>, Evidence, String)> = Vec::new();
        if !plain.is_empty() {
            let mut ev = Evidence::default();
            for (_, e) in &plain {
                ev.merge(e);
            }
            groups.push((plain.iter().map(|(p, _)| **p).collect(), ev, String::new()));
        }
        for (p, e) in l7 {
            groups.push((vec![*p], e.clone(), l7_conditions(e)));
        }
        for (ports, ev, conditions) in groups {
            let id = unique_id(&mut ids, &format!("{}-to-{}", slug(src), slug(dst)));
            let mut r = String::new();
            let _ = writeln!(
                r,
                "        # evidence: {} decisions, {} bytes, first {}, last {}",
                ev.count, ev.bytes, ev.first, ev.last
            );
            let _ = writeln!(r, "        - id: {id}");
            let _ = writeln!(r, "          action: allow");
            if opts.monitor {
                let _ = writeln!(r, "          mode: monitor");
            }
            let _ = writeln!(r, "          from: {}", selector(src, ""));
            let _ = writeln!(r, "          to: {}", selector(dst, &conditions));
            let list: Vec<String> = ports.iter().map(Port::yaml).collect();
            let _ = writeln!(r, "          ports: [{}]", list.join(", "));
            sections.entry(section_of(dst)).or_default().push(r);
            rules += 1;
            covered += ev.count;
        }
    }
    for (name, rs) in sections {
        let _ = writeln!(yaml, "    - name: {name}\n      rules:");
        for r in rs {
            yaml.push_str(&r);
        }
    }
    if rules == 0 {
        yaml.push_str("    - name: nothing-observed\n      rules: []\n");
    }
    Recommendation {
        yaml,
        rules,
        covered,
    }
}

fn in_scope(o: &Observation, registry: &Registry, opts: &Options) -> bool {
    let facts = |s: &Side| {
        registry
            .workload_by_addr(s.addr)
            .map(|w| (w.app.clone(), w.zone.clone()))
            .unwrap_or_default()
    };
    let (sa, sz) = facts(&o.src);
    let (da, dz) = facts(&o.dest);
    let app_ok = opts
        .app
        .as_ref()
        .is_none_or(|a| sa.as_ref() == Some(a) || da.as_ref() == Some(a));
    let zone_ok = opts
        .zone
        .as_ref()
        .is_none_or(|z| sz.as_ref() == Some(z) || dz.as_ref() == Some(z));
    app_ok && zone_ok
}

/// An end named by the registry's facts about its address.
fn who(s: &Side, registry: &Registry) -> Who {
    match registry.workload_by_addr(s.addr) {
        Some(w) => match &w.app {
            Some(app) => Who::App {
                app: app.clone(),
                zone: w.zone.clone(),
            },
            None => Who::Workload(w.name.clone()),
        },
        None => Who::Addr(s.addr),
    }
}

/// The most specific group every user of `obs` is in; else the users themselves.
fn shared_group(obs: &[&Observation], holders: &BTreeMap<&str, BTreeSet<&str>>) -> Who {
    let mut shared: Option<BTreeSet<&str>> = None;
    let mut users = BTreeSet::new();
    for o in obs {
        if let Some(u) = &o.src.user {
            users.insert(u.clone());
        }
        let gs: BTreeSet<&str> = o.src.groups.iter().flatten().map(String::as_str).collect();
        shared = Some(match shared {
            None => gs,
            Some(s) => s.intersection(&gs).copied().collect(),
        });
    }
    shared
        .unwrap_or_default()
        .into_iter()
        .min_by_key(|g| (holders.get(g).map_or(0, BTreeSet::len), *g))
        .map_or(Who::Users(users), |g| Who::Group(g.to_owned()))
}

fn selector(w: &Who, conditions: &str) -> String {
    let base = match w {
        Who::Group(g) => format!("group: {}", quote(g)),
        Who::Users(us) => format!(
            "user: [{}]",
            us.iter().map(|u| quote(u)).collect::<Vec<_>>().join(", ")
        ),
        Who::App { app, zone: Some(z) } => format!("app: {}, zone: {}", quote(app), quote(z)),
        Who::App { app, zone: None } => format!("app: {}", quote(app)),
        Who::Workload(n) => format!("workload: {}", quote(n)),
        Who::Addr(a) => format!("cidr: {}", quote(&a.to_string())),
    };
    format!("{{{base}{conditions}}}")
}

fn l7_conditions(e: &Evidence) -> String {
    if e.http_only {
        let methods: Vec<String> = e.methods.iter().map(|m| quote(m)).collect();
        let paths: Vec<String> = generalize_paths(&e.paths)
            .iter()
            .map(|p| quote(p))
            .collect();
        format!(
            ", http: [{{methods: [{}], paths: [{}]}}]",
            methods.join(", "),
            paths.join(", ")
        )
    } else {
        let names: Vec<String> = generalize_names(&e.names)
            .iter()
            .map(|n| quote(n))
            .collect();
        format!(", dns: {{names: [{}]}}", names.join(", "))
    }
}

/// Whether a path segment names one thing among many: a number, a UUID, a long hex or
/// mixed letters-and-digits token.
pub(crate) fn is_variable(seg: &str) -> bool {
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    let hex = seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (digits > 0 && digits == seg.len())
        || (hex && seg.len() >= 8 && digits > 0)
        || (digits >= 3 && seg.len() >= 6)
}

/// Most distinct children a parent keeps before they become `parent/*`.
const MAX_SIBLINGS: usize = 5;

/// Paths generalized: variable segments end the path with `*` (`/api/accounts/17` →
/// `/api/accounts/*`); more than [`MAX_SIBLINGS`] paths under one parent become `parent/*`.
pub fn generalize_paths(paths: &BTreeSet<String>) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for p in paths {
        let mut kept = String::new();
        let mut cut = false;
        for seg in p.split('/').skip(1) {
            if is_variable(seg) || seg.contains('*') {
                cut = true;
                break;
            }
            kept.push('/');
            kept.push_str(seg);
        }
        out.insert(if cut {
            format!("{kept}/*")
        } else if kept.is_empty() {
            "/".to_owned()
        } else {
            kept
        });
    }
    // Crowded parents.
    let mut children: BTreeMap<String, usize> = BTreeMap::new();
    for p in &out {
        if let Some((parent, _)) = p.trim_end_matches("/*").rsplit_once('/') {
            *children.entry(parent.to_owned()).or_default() += 1;
        }
    }
    let crowded: Vec<String> = children
        .into_iter()
        .filter(|(_, n)| *n > MAX_SIBLINGS)
        .map(|(p, _)| p)
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for p in out {
        match crowded.iter().find(|c| p.starts_with(&format!("{c}/"))) {
            Some(c) => done.insert(format!("{c}/*")),
            None => done.insert(p),
        };
    }
    // A prefix `a/*` covers `a/b` and `a/b/*`.
    let prefixes: Vec<String> = done
        .iter()
        .filter_map(|p| p.strip_suffix("/*").map(|s| format!("{s}/")))
        .collect();
    done.iter()
        .filter(|p| {
            !prefixes
                .iter()
                .any(|pre| p.starts_with(pre.as_str()) && **p != format!("{pre}*"))
        })
        .cloned()
        .collect()
}

/// Names generalized: three or more under one parent domain become `*.parent`.
pub fn generalize_names(names: &BTreeSet<String>) -> Vec<String> {
    let mut by_parent: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        if let Some((_, parent)) = n.split_once('.')
            && parent.contains('.')
        {
            *by_parent.entry(parent).or_default() += 1;
        }
    }
    let mut out = BTreeSet::new();
    for n in names {
        match n.split_once('.') {
            Some((_, parent)) if by_parent.get(parent).is_some_and(|c| *c >= 3) => {
                out.insert(format!("*.{parent}"))
            }
            _ => out.insert(n.clone()),
        };
    }
    out.into_iter().collect()
}

fn slug(w: &Who) -> String {
    let raw = match w {
        Who::Group(g) => format!("group-{g}"),
        Who::Users(us) => format!("users-{}", us.iter().next().cloned().unwrap_or_default()),
        Who::App { app, zone: Some(z) } => format!("{app}-{z}"),
        Who::App { app, zone: None } => app.clone(),
        Who::Workload(n) => n.clone(),
        Who::Addr(a) => format!("ip-{a}"),
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn section_of(dst: &Who) -> String {
    match dst {
        Who::App { app, .. } => slug(&Who::App {
            app: app.clone(),
            zone: None,
        }),
        Who::Workload(_) | Who::Group(_) | Who::Users(_) => "workloads".to_owned(),
        Who::Addr(_) => "outside-the-registry".to_owned(),
    }
}

fn unique_id(ids: &mut BTreeSet<String>, base: &str) -> String {
    let mut id = base.to_owned();
    let mut n = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// A YAML double-quoted string (JSON's quoting is valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::observation::Observations;
    use crate::replay;
    use eastwall_policy::Policy;

    const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.77.0.1]}
  workloads:
    - {name: web-1, node: hostA, addresses: [10.0.1.2], app: web, zone: prod}
    - {name: web-2, node: hostA, addresses: [10.0.1.3], app: web, zone: prod}
    - {name: desk-alice, node: hostA, addresses: [10.0.1.5], app: desktop, zone: corp, user: alice}
    - {name: desk-carol, node: hostA, addresses: [10.0.1.6], app: desktop, zone: corp, user: carol}
    - {name: db, node: hostA, addresses: [10.0.2.2], app: db, zone: prod}
    - {name: finance-api, node: hostA, addresses: [10.0.2.4], app: finance-api, zone: corp}
    - {name: dns, node: hostA, addresses: [10.0.2.53], app: dns, zone: prod}
";

    fn rec(src: &str, dst: &str, port: u16, proto: &str, verdict: &str, extra: &str) -> String {
        format!(
            r#"{{"timestamp":"2026-12-05T10:00:0{}Z","event_type":"flow","src_ip":"{src}","src_port":{},"dest_ip":"{dst}","dest_port":{port},"proto":"{proto}","flow":{{"bytes_toserver":100,"bytes_toclient":100}},"eastwall":{{"node":"hostA","direction":"outbound","src":{{}},"dest":{{}},"policy":{{"verdict":"{verdict}","rule":"observe-all"}}}}{extra}}}"#,
            port % 10,
            30000 + port,
        )
    }

    fn http(
        src: &str,
        user: &str,
        groups: &str,
        method: &str,
        path: &str,
        verdict: &str,
    ) -> String {
        format!(
            r#"{{"timestamp":"2026-12-05T11:00:00Z","event_type":"http","src_ip":"{src}","src_port":41000,"dest_ip":"10.0.2.4","dest_port":443,"proto":"TCP","http":{{"url":"{path}","http_method":"{method}"}},"eastwall":{{"node":"hostA","direction":"inbound","src":{{"user":"{user}","groups":{groups}}},"dest":{{}},"policy":{{"verdict":"{verdict}","rule":"observe-all"}}}}}}"#
        )
    }

    fn dns(name: &str) -> String {
        format!(
            r#"{{"timestamp":"2026-12-05T12:00:00Z","event_type":"dns","src_ip":"10.0.1.2","src_port":5353,"dest_ip":"10.0.2.53","dest_port":53,"proto":"UDP","dns":{{"type":"request","queries":[{{"rrname":"{name}"}}]}},"eastwall":{{"node":"hostA","direction":"inbound","src":{{}},"dest":{{}},"policy":{{"verdict":"allow","rule":"observe-all"}}}}}}"#
        )
    }

    fn traffic() -> Vec<Observation> {
        let mut lines = vec![
            rec("10.0.1.2", "10.0.2.2", 5432, "TCP", "allow", ""),
            rec("10.0.1.3", "10.0.2.2", 5432, "TCP", "allow", ""),
            rec("10.0.1.3", "10.0.2.2", 6432, "TCP", "allow", ""),
            rec("10.0.1.2", "10.0.2.2", 514, "UDP", "allow", ""),
            rec("10.0.1.2", "10.0.2.2", 0, "ICMP", "allow", "")
                .replace("\"proto\":\"ICMP\"", "\"proto\":\"ICMP\",\"icmp_type\":8"),
            rec("192.168.9.9", "10.0.2.2", 22, "TCP", "allow", ""),
            // Denied: stays denied.
            rec("10.0.2.2", "10.0.1.2", 8080, "TCP", "deny", ""),
            http(
                "10.0.1.5",
                "alice",
                r#"["finance","finance-admins","staff"]"#,
                "GET",
                "/api/accounts/17",
                "allow",
            ),
            http(
                "10.0.1.5",
                "alice",
                r#"["finance","finance-admins","staff"]"#,
                "POST",
                "/api/transfers",
                "allow",
            ),
            http(
                "10.0.1.6",
                "carol",
                r#"["finance","staff"]"#,
                "GET",
                "/api/accounts/99",
                "allow",
            ),
        ];
        for n in [
            "a.corp.example",
            "b.corp.example",
            "c.corp.example",
            "x.other.example",
        ] {
            lines.push(dns(n));
        }
        let mut o = Observations::default();
        o.read("eve.json", &lines.join("\n"));
        assert!(o.problems.is_empty(), "{:?}", o.problems);
        o.list
    }

    #[test]
    fn the_recommendation_passes_check_and_replays_to_what_happened() {
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let obs = traffic();
        let r = recommend(&obs, &reg, &Options::default());
        let (policy, _) = Policy::parse("recommended.yaml", &r.yaml, &reg)
            .unwrap_or_else(|d| panic!("{d}\n{}", r.yaml));
        // Allowed stays allowed, denied stays denied.
        let replayed = replay::replay(&obs, &reg, &policy);
        assert_eq!(
            replayed.unchanged, replayed.decisions,
            "{replayed}\n{}",
            r.yaml
        );
        let y = &r.yaml;
        for expected in [
            "from: {app: \"web\", zone: \"prod\"}",
            "to: {app: \"db\", zone: \"prod\"}",
            "5432, 6432, {port: 514, protocol: UDP}",
            "{port: 514, protocol: UDP}",
            "{protocol: ICMP, icmpType: 8}",
            "from: {cidr: \"192.168.9.9\"}",
            // Alice and carol share finance and staff; finance is held by both too, staff
            // also: the tie goes to the name; finance-admins is alice's alone.
            "from: {group: \"finance\"}",
            "methods: [\"GET\", \"POST\"]",
            "paths: [\"/api/accounts/*\", \"/api/transfers\"]",
            "names: [\"*.corp.example\", \"x.other.example\"]",
            "# evidence: 5 decisions, 1000 bytes",
        ] {
            assert!(y.contains(expected), "{expected}\n{y}");
        }
        assert!(!y.contains("8080"), "{y}");
        assert!(!y.contains("desk-alice"), "{y}");
        // Scoped to an app, and as monitor rules.
        let only = recommend(
            &obs,
            &reg,
            &Options {
                app: Some("finance-api".into()),
                monitor: true,
                ..Options::default()
            },
        );
        assert_eq!(only.rules, 1, "{}", only.yaml);
        assert!(only.yaml.contains("mode: monitor"));
        Policy::parse("only.yaml", &only.yaml, &reg).unwrap();
    }

    #[test]
    fn paths_and_names_are_generalized() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            generalize_paths(&set(&[
                "/api/accounts/17",
                "/api/accounts/18/statements",
                "/api/users/3f2b9c1e-aaaa-bbbb-cccc-0123456789ab",
                "/health",
                "/"
            ])),
            ["/", "/api/accounts/*", "/api/users/*", "/health"]
        );
        let many: Vec<String> = (0..8).map(|i| format!("/static/file{i}.css")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(generalize_paths(&set(&many)), ["/static/*"]);
        assert_eq!(
            generalize_names(&set(&[
                "a.x.example",
                "b.x.example",
                "x.example",
                "c.x.example"
            ])),
            ["*.x.example", "x.example"]
        );
    }
}
