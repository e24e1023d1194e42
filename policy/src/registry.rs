//! The registry file (`kind: Registry`): which nodes and workloads exist, and their
//! addresses, app, zone, labels and SPIFFE identities.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use eastwall_identity::SpiffeId;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostics, Pos, Sink};
use crate::yaml::{self, DocumentKind, Metadata};

/// A workload: something on a host with addresses (a namespace, container, VM or session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Unique name in the registry.
    pub name: String,
    /// Name of the node (host) it runs on.
    pub node: String,
    /// Its addresses (at least one).
    pub addresses: Vec<IpAddr>,
    /// Application it belongs to.
    pub app: Option<String>,
    /// Zone (environment) it belongs to, e.g. `dev` or `prod`.
    pub zone: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// The SPIFFE ID in its certificates: `identity` from the file, else
    /// `spiffe://<trust domain>/wl/<name>`, or `spiffe://<trust domain>/user/<user>/wl/<name>`
    /// for a workload bound to a user. Replicas may share one identity.
    pub identity: SpiffeId,
    /// The user the workload belongs to (a VDI desktop belongs to alice); the certificate
    /// carries it in the identity's path.
    pub user: Option<String>,
    /// `localUsers: true`: the workload stands for the host's own processes, and each local
    /// user's connections travel with that user's identity
    /// (`spiffe://<trust domain>/user/<user>/wl/<name>`, [`Workload::user_identity`]).
    pub local_users: bool,
}

impl Workload {
    /// The identity local user `user` of this workload acts with, if the workload has
    /// `localUsers` and `user` can be part of a SPIFFE ID.
    pub fn user_identity(&self, user: &str) -> Option<SpiffeId> {
        if !self.local_users || !is_valid_user(user) {
            return None;
        }
        SpiffeId::parse(&format!(
            "spiffe://{}/user/{user}/wl/{}",
            self.identity.trust_domain(),
            self.name
        ))
        .ok()
    }

    /// Whether `id` may speak for this workload: its identity, or with `localUsers` a local
    /// user's identity of it.
    pub fn owns_identity(&self, id: &SpiffeId) -> bool {
        *id == self.identity
            || (self.local_users
                && id
                    .user()
                    .and_then(|u| self.user_identity(u))
                    .is_some_and(|u| u == *id))
    }
}

/// A node (host running an eastwall node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// Unique name in the registry.
    pub name: String,
    /// The host's own addresses.
    pub addresses: Vec<IpAddr>,
    /// The node's own SPIFFE ID, always `spiffe://<trust domain>/node/<name>`.
    pub identity: SpiffeId,
}

/// The trust domain of a registry that does not set `spec.trustDomain`.
pub const DEFAULT_TRUST_DOMAIN: &str = "eastwall.local";

/// Longest trust domain accepted, in bytes (the SPIFFE ID specification's limit).
const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// A validated registry with lookups by name, address and identity.
#[derive(Clone, Debug)]
pub struct Registry {
    name: Option<String>,
    trust_domain: String,
    nodes: Vec<NodeEntry>,
    workloads: Vec<Workload>,
    node_by_name: HashMap<String, usize>,
    workload_by_name: HashMap<String, usize>,
    node_by_addr: HashMap<IpAddr, usize>,
    workload_by_addr: HashMap<IpAddr, usize>,
    node_by_identity: HashMap<SpiffeId, usize>,
    /// Workload indexes per identity, in file order.
    workloads_by_identity: HashMap<SpiffeId, Vec<usize>>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            name: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            nodes: Vec::new(),
            workloads: Vec::new(),
            node_by_name: HashMap::new(),
            workload_by_name: HashMap::new(),
            node_by_addr: HashMap::new(),
            workload_by_addr: HashMap::new(),
            node_by_identity: HashMap::new(),
            workloads_by_identity: HashMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegistryDoc {
    api_version: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: Option<Metadata>,
    spec: RegistrySpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySpec {
    #[serde(default, rename = "trustDomain")]
    trust_domain: Option<Spanned<String>>,
    #[serde(default)]
    nodes: Vec<NodeDoc>,
    #[serde(default)]
    workloads: Vec<WorkloadDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    name: Spanned<String>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadDoc {
    name: Spanned<String>,
    node: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    app: Option<Spanned<String>>,
    #[serde(default)]
    zone: Option<Spanned<String>>,
    #[serde(default)]
    labels: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    identity: Option<Spanned<String>>,
    #[serde(default)]
    user: Option<Spanned<String>>,
    #[serde(default, rename = "localUsers")]
    local_users: Option<Spanned<bool>>,
}

/// Who already owns an address, for the duplicate-address message.
enum Owner {
    Node(usize),
    Workload(usize),
}

impl Registry {
    /// Parses and validates a registry file; `file` is used only in messages.
    ///
    /// On error, returns every problem found in the file.
    pub fn parse(file: &str, text: &str) -> Result<Registry, Diagnostics> {
        yaml::expect_kind(file, text, DocumentKind::Registry)?;
        let doc: RegistryDoc = yaml::parse_yaml(file, text)?;
        let mut sink = Sink::new(file);
        yaml::check_header(&mut sink, &doc.api_version);
        let mut reg = Registry {
            name: yaml::check_metadata(&mut sink, &doc.metadata),
            ..Registry::default()
        };
        // With an invalid trust domain (reported here), identities are derived in the
        // default one so that checking goes on; the registry is rejected anyway.
        let td_ok = match &doc.spec.trust_domain {
            None => true,
            Some(td) => {
                let ok = check_trust_domain(&mut sink, td);
                if ok {
                    reg.trust_domain.clone_from(&td.value);
                }
                ok
            }
        };
        // First declaration of each address: (owner, where).
        let mut addr_seen: HashMap<IpAddr, (Owner, Pos)> = HashMap::new();
        let mut node_pos: Vec<Pos> = Vec::new();

        for n in doc.spec.nodes {
            let at = Pos::from(n.name.referenced);
            yaml::check_name(&mut sink, &n.name, "node name");
            if let Some(&first) = reg.node_by_name.get(&n.name.value) {
                sink.error(
                    at,
                    format!(
                        "duplicate node name `{}` (first at {})",
                        n.name.value, node_pos[first]
                    ),
                );
                continue;
            }
            let idx = reg.nodes.len();
            let mut addresses = Vec::new();
            for a in &n.addresses {
                if let Some(ip) = parse_addr(&mut sink, a)
                    && claim(
                        &mut sink,
                        &mut addr_seen,
                        &reg,
                        ip,
                        Owner::Node(idx),
                        a.referenced.into(),
                        &n.name.value,
                        None,
                    )
                {
                    addresses.push(ip);
                }
            }
            let identity = derived_identity(&reg.trust_domain, "node", &n.name.value);
            reg.node_by_name.insert(n.name.value.clone(), idx);
            reg.node_by_identity.insert(identity.clone(), idx);
            node_pos.push(at);
            reg.nodes.push(NodeEntry {
                name: n.name.value,
                addresses,
                identity,
            });
        }

        let mut wl_pos: Vec<Pos> = Vec::new();
        for w in doc.spec.workloads {
            let at = Pos::from(w.name.referenced);
            yaml::check_name(&mut sink, &w.name, "workload name");
            if let Some(&first) = reg.workload_by_name.get(&w.name.value) {
                let prev = &reg.workloads[first];
                let nodes = if prev.node == w.node.value {
                    format!("both on node {}", prev.node)
                } else {
                    format!("on nodes {} and {}", prev.node, w.node.value)
                };
                sink.error(
                    at,
                    format!(
                        "workload `{}` is declared twice ({nodes}; first at {})",
                        w.name.value, wl_pos[first]
                    ),
                );
                continue;
            }
            if !reg.node_by_name.contains_key(&w.node.value) {
                sink.error(
                    w.node.referenced,
                    format!(
                        "workload `{}` is on node `{}`, which is not declared in spec.nodes",
                        w.name.value, w.node.value
                    ),
                );
            }
            let idx = reg.workloads.len();
            if w.addresses.value.is_empty() {
                sink.error(
                    w.addresses.referenced,
                    format!(
                        "workload `{}` has no addresses (at least one is required)",
                        w.name.value
                    ),
                );
            }
            let mut addresses = Vec::new();
            for a in &w.addresses.value {
                if let Some(ip) = parse_addr(&mut sink, a)
                    && claim(
                        &mut sink,
                        &mut addr_seen,
                        &reg,
                        ip,
                        Owner::Workload(idx),
                        a.referenced.into(),
                        &w.name.value,
                        Some(&w.node.value),
                    )
                {
                    addresses.push(ip);
                }
            }
            if let Some(app) = &w.app {
                yaml::check_name(&mut sink, app, "app");
            }
            if let Some(zone) = &w.zone {
                yaml::check_name(&mut sink, zone, "zone");
            }
            let labels = w.labels.map(|l| {
                if l.value.keys().any(|k| k.is_empty()) {
                    sink.error(l.referenced, "label keys must not be empty");
                }
                l.value
            });
            if let Some(u) = &w.user
                && !is_valid_user(&u.value)
            {
                sink.error(
                    u.referenced,
                    format!(
                        "invalid user name `{}` (1-64 letters, digits, `.`, `-`, `_`; it becomes part of a SPIFFE ID)",
                        u.value.escape_debug()
                    ),
                );
            }
            let identity = match (&w.identity, &w.user) {
                (None, None) => derived_identity(&reg.trust_domain, "wl", &w.name.value),
                (None, Some(u)) => derived_identity(
                    &reg.trust_domain,
                    &format!("user/{}/wl", u.value),
                    &w.name.value,
                ),
                (Some(id), _) => workload_identity(&mut sink, &reg, td_ok, &w.name.value, id)
                    .unwrap_or_else(placeholder_identity),
            };
            // A user-bound workload's certificate must say whose it is, and only such a
            // certificate may.
            if let Some(id) = &w.identity
                && identity.user() != w.user.as_ref().map(|u| u.value.as_str())
            {
                sink.error(
                    id.referenced,
                    match &w.user {
                        Some(u) => format!(
                            "identity `{identity}` of workload `{}` must be under `/user/{}/`, the user it is bound to",
                            w.name.value, u.value
                        ),
                        None => format!(
                            "identity `{identity}` names a user; bind workload `{}` to it with `user:`",
                            w.name.value
                        ),
                    },
                );
            }
            let local_users = w.local_users.as_ref().is_some_and(|l| l.value);
            if let Some(l) = w.local_users.as_ref().filter(|l| l.value) {
                if w.user.is_some() {
                    sink.error(
                        l.referenced,
                        format!(
                            "workload `{}` is bound to one user (`user:`); `localUsers: true` is for the workload that stands for a host's own processes, whose users vary",
                            w.name.value
                        ),
                    );
                } else if w.identity.is_some() {
                    sink.error(
                        l.referenced,
                        format!(
                            "workload `{}` has `localUsers: true`: its users' identities are `spiffe://<trust domain>/user/<user>/wl/{}`; leave `identity` out",
                            w.name.value, w.name.value
                        ),
                    );
                }
                let node_addrs: Vec<IpAddr> = reg
                    .nodes
                    .iter()
                    .filter(|n| n.name == w.node.value)
                    .flat_map(|n| n.addresses.iter().copied())
                    .collect();
                if !addresses.iter().any(|a| node_addrs.contains(a)) {
                    sink.error(
                        l.referenced,
                        format!(
                            "`localUsers: true` is for the workload that stands for the host's own processes: give workload `{}` an address of node `{}`",
                            w.name.value, w.node.value
                        ),
                    );
                }
            }
            reg.workloads_by_identity
                .entry(identity.clone())
                .or_default()
                .push(idx);
            reg.workload_by_name.insert(w.name.value.clone(), idx);
            wl_pos.push(at);
            reg.workloads.push(Workload {
                name: w.name.value,
                node: w.node.value,
                addresses,
                app: w.app.map(|s| s.value),
                zone: w.zone.map(|s| s.value),
                labels: labels.unwrap_or_default(),
                identity,
                user: w.user.map(|u| u.value),
                local_users,
            });
        }

        for (ip, (owner, _)) in addr_seen {
            match owner {
                Owner::Node(i) => reg.node_by_addr.insert(ip, i),
                Owner::Workload(i) => reg.workload_by_addr.insert(ip, i),
            };
        }
        sink.finish()?;
        Ok(reg)
    }

    /// A registry with no nodes and no workloads.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Whether the registry declares nothing.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.workloads.is_empty()
    }

    /// `metadata.name` of the file, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The SPIFFE trust domain of every identity the registry assigns: `spec.trustDomain`,
    /// [`DEFAULT_TRUST_DOMAIN`] when not given.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The workloads whose identity is `id`, in file order (several replicas may share
    /// one identity; none when no workload has it). A hash lookup, not a scan.
    pub fn workloads_by_identity<'a>(
        &'a self,
        id: &SpiffeId,
    ) -> impl Iterator<Item = &'a Workload> + use<'a> {
        self.workloads_by_identity
            .get(id)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|&i| self.workloads.get(i))
    }

    /// The workloads `id` may speak for ([`Workload::owns_identity`]): those with that
    /// identity, or the `localUsers` workload whose local user's identity it is.
    pub fn workloads_owning<'a>(&'a self, id: &SpiffeId) -> Vec<&'a Workload> {
        let mut out: Vec<&Workload> = self.workloads_by_identity(id).collect();
        if let Some(rest) = id.path().strip_prefix("/user/")
            && let Some((_, name)) = rest.split_once("/wl/")
            && let Some(w) = self.workload(name)
            && w.owns_identity(id)
        {
            out.push(w);
        }
        out
    }

    /// The node whose identity (`spiffe://<trust domain>/node/<name>`) is `id`.
    pub fn node_by_identity(&self, id: &SpiffeId) -> Option<&NodeEntry> {
        self.node_by_identity
            .get(id)
            .and_then(|&i| self.nodes.get(i))
    }

    /// The workload that owns `ip` (IPv4-mapped IPv6 addresses match their IPv4 form).
    pub fn workload_by_addr(&self, ip: IpAddr) -> Option<&Workload> {
        self.workload_by_addr
            .get(&ip.to_canonical())
            .and_then(|&i| self.workloads.get(i))
    }

    /// The workload named `name`.
    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workload_by_name
            .get(name)
            .and_then(|&i| self.workloads.get(i))
    }

    /// All workloads in file order.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workloads placed on node `node`, in file order.
    pub fn workloads_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Workload> + 'a {
        self.workloads.iter().filter(move |w| w.node == node)
    }

    /// All nodes in file order.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.node_by_name.get(name).and_then(|&i| self.nodes.get(i))
    }

    /// The node whose own address is `ip` (IPv4-mapped IPv6 addresses match their IPv4 form).
    pub fn node_by_addr(&self, ip: IpAddr) -> Option<&NodeEntry> {
        self.node_by_addr
            .get(&ip.to_canonical())
            .and_then(|&i| self.nodes.get(i))
    }
}

/// Checks `spec.trustDomain`: what may follow `spiffe://` in a SPIFFE ID, at most 255
/// bytes, no path.
fn check_trust_domain(sink: &mut Sink<'_>, td: &Spanned<String>) -> bool {
    let problem = if td.value.contains('/') {
        Some("a trust domain has no `/` (give `corp.example`, not a SPIFFE ID)".to_owned())
    } else if td.value.len() > MAX_TRUST_DOMAIN_BYTES {
        Some(format!(
            "a trust domain is at most {MAX_TRUST_DOMAIN_BYTES} bytes long"
        ))
    } else {
        SpiffeId::parse(&format!("spiffe://{}", td.value))
            .err()
            .map(|e| e.to_string())
    };
    match problem {
        None => true,
        Some(why) => {
            sink.error(
                td.referenced,
                format!("invalid trust domain `{}`: {why}", td.value.escape_debug()),
            );
            false
        }
    }
}

/// Whether `u` can be a user name: a single SPIFFE path segment of at most 64 characters.
fn is_valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u != "."
        && u != ".."
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The identity eastwall assigns: `spiffe://<td>/<kind>/<name>`.
///
/// Valid for every valid trust domain and name; for invalid ones (already reported, so the
/// registry is rejected) a placeholder.
fn derived_identity(td: &str, kind: &str, name: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{td}/{kind}/{name}"))
        .unwrap_or_else(|_| placeholder_identity())
}

/// Stands in for an identity that could not be formed; only ever stored in a registry that
/// is rejected because the reason was reported as an error.
fn placeholder_identity() -> SpiffeId {
    SpiffeId::parse("spiffe://invalid.eastwall.local/invalid")
        .expect("the placeholder is a valid SPIFFE ID")
}

/// Validates an explicit workload `identity`; `None` when an error was reported.
fn workload_identity(
    sink: &mut Sink<'_>,
    reg: &Registry,
    td_ok: bool,
    workload: &str,
    id: &Spanned<String>,
) -> Option<SpiffeId> {
    let parsed = match SpiffeId::parse(&id.value) {
        Ok(p) => p,
        Err(e) => {
            sink.error(
                id.referenced,
                format!(
                    "invalid SPIFFE ID `{}` for workload `{workload}`: {e}",
                    id.value.escape_debug()
                ),
            );
            return None;
        }
    };
    if td_ok && parsed.trust_domain() != reg.trust_domain {
        sink.error(
            id.referenced,
            format!(
                "identity `{parsed}` of workload `{workload}` is not in the registry's trust domain `{}`",
                reg.trust_domain
            ),
        );
        return None;
    }
    if parsed.path().starts_with("/node/") {
        let whose = match reg
            .node_by_identity
            .get(&parsed)
            .and_then(|&i| reg.nodes.get(i))
        {
            Some(n) => format!("is the identity of node `{}`", n.name),
            None => "has the form of a node identity".to_owned(),
        };
        sink.error(
            id.referenced,
            format!(
                "identity `{parsed}` of workload `{workload}` {whose}; `spiffe://{}/node/...` is reserved for nodes",
                parsed.trust_domain()
            ),
        );
        return None;
    }
    // eastwall's own services and people: a workload holding one of these could read every
    // flow record, or pose as the collector or the CA.
    let first = parsed.path().split('/').nth(1).unwrap_or_default();
    if let Some(what) = match first {
        "operator" => Some("operators (who read the flow collector)"),
        "collector" => Some("the flow collector"),
        "ca" => Some("the CA service"),
        _ => None,
    } {
        sink.error(
            id.referenced,
            format!(
                "identity `{parsed}` of workload `{workload}`: `spiffe://{}/{first}...` is reserved for {what}",
                parsed.trust_domain()
            ),
        );
        return None;
    }
    Some(parsed)
}

fn parse_addr(sink: &mut Sink<'_>, a: &Spanned<String>) -> Option<IpAddr> {
    match a.value.trim().parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_canonical()),
        Err(_) => {
            let hint = if a.value.contains('/') {
                " (a single address, not a CIDR)"
            } else {
                ""
            };
            sink.error(
                a.referenced,
                format!("invalid IP address `{}`{hint}", a.value.escape_debug()),
            );
            None
        }
    }
}

/// Records `ip` as owned by `owner`; reports it when someone else already has it.
///
/// One exception: a workload may hold an address of the node it is placed on. Such a
/// workload stands for the host's own processes (captured with `localTraffic`).
#[allow(clippy::too_many_arguments)]
fn claim(
    sink: &mut Sink<'_>,
    seen: &mut HashMap<IpAddr, (Owner, Pos)>,
    reg: &Registry,
    ip: IpAddr,
    owner: Owner,
    at: Pos,
    owner_name: &str,
    workload_node: Option<&str>,
) -> bool {
    if let Some((Owner::Node(i), _)) = seen.get(&ip)
        && workload_node.is_some_and(|n| reg.nodes.get(*i).is_some_and(|node| node.name == n))
    {
        seen.insert(ip, (owner, at));
        return true;
    }
    if let Some((prev, prev_at)) = seen.get(&ip) {
        let prev_name = match prev {
            Owner::Node(i) => format!(
                "node `{}`",
                reg.nodes.get(*i).map_or("?", |n| n.name.as_str())
            ),
            Owner::Workload(i) => format!(
                "workload `{}`",
                reg.workloads.get(*i).map_or("?", |w| w.name.as_str())
            ),
        };
        let this = match owner {
            Owner::Node(_) => format!("node `{owner_name}`"),
            Owner::Workload(_) => format!("workload `{owner_name}`"),
        };
        sink.error(
            at,
            format!("address {ip} of {this} is already used by {prev_name} (at {prev_at})"),
        );
        return false;
    }
    seen.insert(ip, (owner, at));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../testdata/registry.yaml");

    fn errs(text: &str) -> Vec<String> {
        match Registry::parse("r.yaml", text) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn doc(spec: &str) -> String {
        format!("apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n{spec}")
    }

    #[test]
    fn parses_example() {
        let r = Registry::parse("registry.yaml", EXAMPLE).unwrap();
        assert_eq!(r.name(), Some("corp"));
        assert_eq!(r.nodes().len(), 2);
        let w = r.workload("web-dev").unwrap();
        assert_eq!(w.node, "hostA");
        assert_eq!(w.app.as_deref(), Some("web"));
        assert_eq!(w.zone.as_deref(), Some("dev"));
        assert_eq!(w.labels.get("tier").map(String::as_str), Some("frontend"));
        let ip: IpAddr = "10.99.1.2".parse().unwrap();
        assert_eq!(r.workload_by_addr(ip).unwrap().name, "web-dev");
        let mapped: IpAddr = "::ffff:10.99.1.2".parse().unwrap();
        assert_eq!(r.workload_by_addr(mapped).unwrap().name, "web-dev");
        let v6: IpAddr = "fd00:99::1:3".parse().unwrap();
        assert_eq!(r.workload_by_addr(v6).unwrap().name, "db-prod");
        assert_eq!(
            r.node_by_addr("10.99.0.2".parse().unwrap()).unwrap().name,
            "hostB"
        );
        assert!(r.workload_by_addr("10.99.0.2".parse().unwrap()).is_none());
        assert_eq!(r.node("hostA").unwrap().addresses.len(), 2);
        let on_a: Vec<_> = r.workloads_on("hostA").map(|w| w.name.as_str()).collect();
        assert_eq!(on_a, ["web-dev", "api-dev"]);
        assert!(r.workload("nope").is_none());
        assert!(!r.is_empty());
        assert!(Registry::empty().is_empty());
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn identities_of_example() {
        let r = Registry::parse("registry.yaml", EXAMPLE).unwrap();
        assert_eq!(r.trust_domain(), "corp.example");
        // Default workload identity: spiffe://<td>/wl/<name>.
        let web = r.workload("web-dev").unwrap();
        assert_eq!(web.identity.as_str(), "spiffe://corp.example/wl/web-dev");
        // Node identity: spiffe://<td>/node/<name>.
        let host_a = r.node("hostA").unwrap();
        assert_eq!(host_a.identity, id("spiffe://corp.example/node/hostA"));
        assert_eq!(
            r.node_by_identity(&id("spiffe://corp.example/node/hostB"))
                .map(|n| n.name.as_str()),
            Some("hostB")
        );
        assert!(r.node_by_identity(&web.identity).is_none());
        assert!(
            r.node_by_identity(&id("spiffe://eastwall.local/node/hostA"))
                .is_none()
        );
        // Replicas share an explicit identity; lookups return them in file order.
        let payments = id("spiffe://corp.example/zone/prod/payments");
        let names: Vec<_> = r
            .workloads_by_identity(&payments)
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(names, ["payments-1", "payments-2"]);
        let names: Vec<_> = r
            .workloads_by_identity(&web.identity)
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(names, ["web-dev"]);
        assert_eq!(
            r.workloads_by_identity(&id("spiffe://corp.example/wl/nope"))
                .count(),
            0
        );
        // A node identity is not a workload identity.
        assert_eq!(r.workloads_by_identity(&host_a.identity).count(), 0);
        // The iterator does not borrow the key.
        let it = r.workloads_by_identity(&id("spiffe://corp.example/wl/db-prod"));
        assert_eq!(it.count(), 1);
    }

    #[test]
    fn default_trust_domain() {
        assert_eq!(Registry::empty().trust_domain(), DEFAULT_TRUST_DOMAIN);
        assert_eq!(DEFAULT_TRUST_DOMAIN, "eastwall.local");
        let r = Registry::parse(
            "r",
            &doc(concat!(
                "  nodes: [{name: h}]\n",
                "  workloads:\n",
                "    - {name: a, node: h, addresses: [10.0.0.1]}\n",
                "    - {name: b, node: h, addresses: [10.0.0.2], identity: spiffe://eastwall.local/team/x}\n",
                "    - {name: c, node: h, addresses: [10.0.0.3], identity: spiffe://eastwall.local/team/x}\n",
                "    - {name: d, node: h, addresses: [10.0.0.4], identity: spiffe://eastwall.local/wl/a}\n",
            )),
        )
        .unwrap();
        assert_eq!(r.trust_domain(), "eastwall.local");
        assert_eq!(
            r.workload("a").unwrap().identity.as_str(),
            "spiffe://eastwall.local/wl/a"
        );
        assert_eq!(
            r.node("h").unwrap().identity.as_str(),
            "spiffe://eastwall.local/node/h"
        );
        assert_eq!(
            r.workload("b").unwrap().identity.as_str(),
            "spiffe://eastwall.local/team/x"
        );
        let shared: Vec<_> = r
            .workloads_by_identity(&id("spiffe://eastwall.local/team/x"))
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(shared, ["b", "c"]);
        // An explicit identity may equal another workload's default one.
        let a: Vec<_> = r
            .workloads_by_identity(&id("spiffe://eastwall.local/wl/a"))
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(a, ["a", "d"]);
    }

    #[test]
    fn identity_errors_with_locations() {
        let long = "a".repeat(256);
        let long_case = format!("  trustDomain: {long}\n");
        let long_err = format!(
            "r.yaml:4:16: invalid trust domain `{long}`: a trust domain is at most 255 bytes long"
        );
        let cases: &[(&str, &[&str])] = &[
            (
                "  trustDomain: Corp.Example\n",
                &[
                    "r.yaml:4:16: invalid trust domain `Corp.Example`: the trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (found 'C')",
                ],
            ),
            (
                "  trustDomain: spiffe://corp.example\n",
                &[
                    "r.yaml:4:16: invalid trust domain `spiffe://corp.example`: a trust domain has no `/` (give `corp.example`, not a SPIFFE ID)",
                ],
            ),
            (
                "  trustDomain: \"\"\n",
                &["r.yaml:4:16: invalid trust domain ``: the trust domain is empty"],
            ),
            (&long_case, &[&long_err]),
            (
                concat!(
                    "  trustDomain: corp.example\n",
                    "  nodes: [{name: h}]\n",
                    "  workloads:\n",
                    "    - {name: a, node: h, addresses: [10.0.0.1], identity: \"spiffe://corp.example/a b\"}\n",
                    "    - {name: b, node: h, addresses: [10.0.0.2], identity: http://corp.example/b}\n",
                    "    - {name: c, node: h, addresses: [10.0.0.3], identity: spiffe://other.example/c}\n",
                    "    - {name: d, node: h, addresses: [10.0.0.4], identity: spiffe://corp.example/node/h}\n",
                    "    - {name: e, node: h, addresses: [10.0.0.5], identity: spiffe://corp.example/node/ghost}\n",
                    "    - {name: f, node: h, addresses: [10.0.0.6], identity: spiffe://corp.example/nodes/f}\n",
                    "    - {name: g, node: h, addresses: [10.0.0.7], identity: spiffe://corp.example/operator/x}\n",
                    "    - {name: i, node: h, addresses: [10.0.0.8], identity: spiffe://corp.example/collector}\n",
                    "    - {name: j, node: h, addresses: [10.0.0.9], identity: spiffe://corp.example/ca}\n",
                    "    - {name: k, node: h, addresses: [10.0.0.10], identity: spiffe://corp.example/cas/k}\n",
                ),
                &[
                    "r.yaml:7:59: invalid SPIFFE ID `spiffe://corp.example/a b` for workload `a`: a path segment may hold only letters, digits, `.`, `-` and `_` (found ' ')",
                    "r.yaml:8:59: invalid SPIFFE ID `http://corp.example/b` for workload `b`: a SPIFFE ID starts with `spiffe://`",
                    "r.yaml:9:59: identity `spiffe://other.example/c` of workload `c` is not in the registry's trust domain `corp.example`",
                    "r.yaml:10:59: identity `spiffe://corp.example/node/h` of workload `d` is the identity of node `h`; `spiffe://corp.example/node/...` is reserved for nodes",
                    "r.yaml:11:59: identity `spiffe://corp.example/node/ghost` of workload `e` has the form of a node identity; `spiffe://corp.example/node/...` is reserved for nodes",
                    "r.yaml:13:59: identity `spiffe://corp.example/operator/x` of workload `g`: `spiffe://corp.example/operator...` is reserved for operators (who read the flow collector)",
                    "r.yaml:14:59: identity `spiffe://corp.example/collector` of workload `i`: `spiffe://corp.example/collector...` is reserved for the flow collector",
                    "r.yaml:15:59: identity `spiffe://corp.example/ca` of workload `j`: `spiffe://corp.example/ca...` is reserved for the CA service",
                ],
            ),
            (
                // Default trust domain: an identity elsewhere is named against it.
                "  nodes: [{name: h}]\n  workloads:\n    - {name: a, node: h, addresses: [10.0.0.1], identity: spiffe://corp.example/wl/a}\n",
                &[
                    "r.yaml:6:59: identity `spiffe://corp.example/wl/a` of workload `a` is not in the registry's trust domain `eastwall.local`",
                ],
            ),
            (
                // With an invalid trust domain, identities are not compared against it.
                "  trustDomain: Bad\n  nodes: [{name: h}]\n  workloads:\n    - {name: a, node: h, addresses: [10.0.0.1], identity: spiffe://corp.example/wl/a}\n",
                &[
                    "r.yaml:4:16: invalid trust domain `Bad`: the trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (found 'B')",
                ],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(errs(&doc(spec)), *want, "spec:\n{spec}");
        }
        // `identity` is a plain string, not a mapping.
        let e = errs(&doc(
            "  nodes: [{name: h}]\n  workloads:\n    - {name: a, node: h, addresses: [10.0.0.1], identity: {x: 1}}\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("r.yaml:6:"), "{e:?}");
    }

    #[test]
    fn minimal_and_empty_spec() {
        let r = Registry::parse("r", &doc("  nodes: []\n")).unwrap();
        assert!(r.is_empty());
        let r = Registry::parse(
            "r",
            "apiVersion: eastwall.dev/v1\nkind: Registry\nspec: {}\n",
        )
        .unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn local_users_workloads() {
        let text = doc(concat!(
            "  trustDomain: corp.example\n",
            "  nodes:\n    - {name: h, addresses: [10.0.0.1]}\n",
            "  workloads:\n",
            "    - {name: h-procs, node: h, addresses: [10.0.0.1], localUsers: true}\n",
            "    - {name: web, node: h, addresses: [10.0.0.2]}\n",
        ));
        let r = Registry::parse("r.yaml", &text).unwrap();
        let procs = r.workload("h-procs").unwrap();
        assert!(procs.local_users);
        let alice = procs.user_identity("alice").unwrap();
        assert_eq!(
            alice.as_str(),
            "spiffe://corp.example/user/alice/wl/h-procs"
        );
        assert!(procs.owns_identity(&alice) && procs.owns_identity(&procs.identity));
        assert_eq!(r.workloads_owning(&alice).len(), 1);
        let web = r.workload("web").unwrap();
        assert_eq!(web.user_identity("alice"), None);
        let alice_web = SpiffeId::parse("spiffe://corp.example/user/alice/wl/web").unwrap();
        assert!(!web.owns_identity(&alice_web));
        assert!(r.workloads_owning(&alice_web).is_empty());
        assert_eq!(procs.user_identity("not a user"), None);
        let e = errs(&doc(concat!(
            "  nodes:\n    - {name: h, addresses: [10.0.0.1]}\n",
            "  workloads:\n",
            "    - {name: a, node: h, addresses: [10.0.0.5], localUsers: true}\n",
            "    - {name: b, node: h, addresses: [10.0.0.1], localUsers: true, user: bob}\n",
        )));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].contains("give workload `a` an address of node `h`"),
            "{e:#?}"
        );
        assert!(e[1].contains("bound to one user"), "{e:#?}");
    }

    #[test]
    fn user_bound_workloads() {
        let ok = doc(concat!(
            "  trustDomain: corp.example\n  nodes: [{name: h}]\n  workloads:\n",
            "    - {name: desk-7, node: h, addresses: [10.0.0.7], user: alice}\n",
            "    - {name: desk-8, node: h, addresses: [10.0.0.8], user: bob, identity: \"spiffe://corp.example/user/bob/vdi/8\"}\n",
            "    - {name: web, node: h, addresses: [10.0.0.9]}\n",
        ));
        let r = Registry::parse("r.yaml", &ok).unwrap();
        let d7 = r.workload("desk-7").unwrap();
        assert_eq!(d7.user.as_deref(), Some("alice"));
        assert_eq!(
            d7.identity.as_str(),
            "spiffe://corp.example/user/alice/wl/desk-7"
        );
        assert_eq!(d7.identity.user(), Some("alice"));
        assert_eq!(r.workload("desk-8").unwrap().identity.user(), Some("bob"));
        assert_eq!(r.workload("web").unwrap().user, None);

        let bad = doc(concat!(
            "  trustDomain: corp.example\n  nodes: [{name: h}]\n  workloads:\n",
            "    - {name: a, node: h, addresses: [10.0.0.1], user: \"al ice\"}\n",
            "    - {name: b, node: h, addresses: [10.0.0.2], user: bob, identity: \"spiffe://corp.example/user/eve/wl/b\"}\n",
            "    - {name: c, node: h, addresses: [10.0.0.3], identity: \"spiffe://corp.example/user/eve/wl/c\"}\n",
        ));
        let e = errs(&bad);
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("r.yaml:7:55: invalid user name `al ice`"),
            "{e:#?}"
        );
        assert!(e[1].contains("must be under `/user/bob/`"), "{e:#?}");
        assert!(
            e[2].contains("names a user; bind workload `c` to it with `user:`"),
            "{e:#?}"
        );
    }

    #[test]
    fn errors_with_locations() {
        let cases: &[(&str, &[&str])] = &[
            (
                "  nodes:\n    - name: hostA\n    - name: hostA\n",
                &["r.yaml:6:13: duplicate node name `hostA` (first at 5:13)"],
            ),
            (
                concat!(
                    "  nodes:\n    - {name: hostA}\n    - {name: hostB}\n",
                    "  workloads:\n",
                    "    - name: x\n      node: hostA\n      addresses: [10.0.0.1]\n",
                    "    - name: x\n      node: hostB\n      addresses: [10.0.0.2]\n",
                ),
                &[
                    "r.yaml:11:13: workload `x` is declared twice (on nodes hostA and hostB; first at 8:13)",
                ],
            ),
            (
                concat!(
                    "  nodes:\n    - {name: hostA, addresses: [10.0.0.1]}\n    - {name: hostB}\n",
                    "  workloads:\n",
                    "    - {name: a, node: hostB, addresses: [10.0.0.2, 10.0.0.1]}\n",
                    "    - {name: b, node: hostA, addresses: [\"::ffff:10.0.0.2\"]}\n",
                    "    - {name: self, node: hostA, addresses: [10.0.0.1]}\n",
                    "    - {name: self2, node: hostA, addresses: [10.0.0.1]}\n",
                ),
                &[
                    "r.yaml:8:52: address 10.0.0.1 of workload `a` is already used by node `hostA` (at 5:33)",
                    "r.yaml:9:42: address 10.0.0.2 of workload `b` is already used by workload `a` (at 8:42)",
                    "r.yaml:11:46: address 10.0.0.1 of workload `self2` is already used by workload `self` (at 10:45)",
                ],
            ),
            (
                "  workloads:\n    - {name: a, node: ghost, addresses: [10.0.0.1]}\n",
                &[
                    "r.yaml:5:23: workload `a` is on node `ghost`, which is not declared in spec.nodes",
                ],
            ),
            (
                "  nodes: [{name: h}]\n  workloads:\n    - {name: a, node: h, addresses: []}\n",
                &["r.yaml:6:37: workload `a` has no addresses (at least one is required)"],
            ),
            (
                "  nodes: [{name: h, addresses: [10.0.0.300, 10.0.0.0/8]}]\n",
                &[
                    "r.yaml:4:33: invalid IP address `10.0.0.300`",
                    "r.yaml:4:45: invalid IP address `10.0.0.0/8` (a single address, not a CIDR)",
                ],
            ),
            (
                "  nodes: [{name: -bad}, {name: \"a b\"}]\n",
                &[
                    "r.yaml:4:18: invalid node name `-bad`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
                    "r.yaml:4:32: invalid node name `a b`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
                ],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(errs(&doc(spec)), *want, "spec:\n{spec}");
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            errs("apiVersion: eastwall.dev/v2\nkind: Registry\nspec: {}\n"),
            ["r.yaml:1:13: unsupported apiVersion `eastwall.dev/v2` (expected `eastwall.dev/v1`)"]
        );
        assert_eq!(
            errs("apiVersion: eastwall.dev/v1\nkind: Policy\nspec: {}\n"),
            ["r.yaml:2:7: expected kind `Registry`, found `Policy`"]
        );
    }

    #[test]
    fn unknown_field_is_located() {
        let e = errs(&doc(
            "  nodes:\n    - name: h\n      adresses: [10.0.0.1]\n",
        ));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("r.yaml:6:7: "), "{e:?}");
        assert!(e[0].contains("adresses"), "{e:?}");
        let e = errs(&doc("  nodes: []\n  extra: 1\n"));
        assert!(e[0].starts_with("r.yaml:5:3: "), "{e:?}");
    }
}

#[cfg(test)]
mod scalar_tests {
    use super::*;

    #[test]
    fn plain_scalars_become_strings() {
        let r = Registry::parse(
            "r",
            "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  nodes: [{name: h}]\n  workloads:\n    - {name: a, node: h, addresses: [\"::1\", 10.0.0.1], zone: 5, labels: {pci: yes, version: 2, on: true}}\n",
        )
        .unwrap();
        let w = r.workload("a").unwrap();
        assert_eq!(w.zone.as_deref(), Some("5"));
        assert_eq!(w.labels.get("pci").map(String::as_str), Some("yes"));
        assert_eq!(w.labels.get("version").map(String::as_str), Some("2"));
        assert_eq!(w.labels.get("on").map(String::as_str), Some("true"));
    }
}
