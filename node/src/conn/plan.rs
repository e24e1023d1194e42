//! Planning a connection, pure: no I/O, no clock, no async runtime. Given the rules in force,
//! this node's facts and how a connection arrived, [`identify`] says who is on each end, and
//! [`plan()`] decides: refusals that need no policy (an unknown source, a tunnel stream for a
//! workload this node does not host, an identity that does not own its address, ...), then
//! the policy, then where the allowed bytes go. The same function plans a connection at
//! capture, at the tunnel's destination, each HTTP request and TLS handshake at L7, and each
//! live connection again after a reload.

use std::net::SocketAddr;

use eastwall_identity::SpiffeId;
use eastwall_policy::{Action, Endpoint, Flow, L7, Protocol, Registry, Workload};

use super::{DenyReason, End, Ends, Entry, Here, Plan, Route, Verdict};
use crate::rules::Rules;
use crate::tunnel::pool::PoolKey;

/// Whether connections of `proto` cross between nodes in the tunnel (TCP and UDP); the other
/// protocols are routed in plaintext and decided by address at both ends.
pub(crate) fn tunnelled(proto: Protocol) -> bool {
    matches!(proto, Protocol::Tcp | Protocol::Udp)
}

/// The `localUsers` workload (the host's own processes) whose connection this is, when the
/// kernel must be asked which local user owns its socket.
pub(crate) fn wants_socket_owner<'r>(
    rules: &'r Rules,
    here: &Here,
    entry: &Entry,
    src: SocketAddr,
) -> Option<&'r Workload> {
    let w = rules.registry.workload_by_addr(src.ip())?;
    (*entry == Entry::Outbound && w.local_users && w.node == here.node).then_some(w)
}

/// Who is on each end of a connection that arrived by `entry` from `src` to `dst`: the
/// identities that count, and where they come from. `local_user` is the identity of the
/// local user who owns an outbound connection's socket (see [`wants_socket_owner`]). Groups
/// are left unknown: they come from the directory (`Pipeline::fill_groups`).
pub(crate) fn identify(
    rules: &Rules,
    here: &Here,
    (entry, proto): (Entry, Protocol),
    src: SocketAddr,
    dst: SocketAddr,
    local_user: Option<SpiffeId>,
) -> Ends {
    let reg = &rules.registry;
    let src_wl = reg.workload_by_addr(src.ip());
    let dst_wl = reg.workload_by_addr(dst.ip());
    let tunnel = here.has_tunnel();
    let src_id = match &entry {
        // Proven by the certificate.
        Entry::Tunnel { peer, .. } => Some(peer.clone()),
        // The kernel told who the local user is; otherwise this node holds the source
        // workload's certificate (with the tunnel).
        Entry::Outbound => {
            local_user.or_else(|| src_wl.filter(|_| tunnel).map(|w| w.identity.clone()))
        }
        Entry::Inbound => None,
    };
    // A destination identity counts only where it will be proven: by the tunnel's handshake
    // (this end's certificate, or the source node's when it opens a stream here), or because
    // the workload is this node's own.
    let dst_id = match &entry {
        Entry::Tunnel { .. } => dst_wl.map(|w| w.identity.clone()),
        _ if !tunnel => None,
        _ => dst_wl
            .filter(|w| {
                w.node == here.node
                    || (entry == Entry::Outbound
                        && tunnelled(proto)
                        && src_id.is_some()
                        && node_address(reg, w).is_some())
            })
            .map(|w| w.identity.clone()),
    };
    Ends {
        entry,
        proto,
        src: End {
            identity: src_id,
            ..End::at(src)
        },
        dst: End {
            identity: dst_id,
            ..End::at(dst)
        },
    }
}

/// What is known of the application protocol when a connection of `proto` starts: nothing
/// yet for TCP and UDP (L7 rules may decide per request, handshake or DNS query later); the
/// other protocols carry no L7 facts the node reads, so rules with L7 conditions decide on
/// them as on opaque bytes.
pub(crate) fn at_start(proto: Protocol) -> L7<'static> {
    match proto {
        Protocol::Tcp | Protocol::Udp => L7::Unknown,
        _ => L7::Opaque,
    }
}

/// Decides a connection (`l7` is [`at_start`] at connection time) or one of its requests,
/// and routes it.
pub(crate) fn plan(rules: &Rules, here: &Here, ends: &Ends, l7: L7<'_>) -> Plan {
    let reg = &rules.registry;
    let src_wl = reg.workload_by_addr(ends.src.addr.ip());
    let dst_wl = reg.workload_by_addr(ends.dst.addr.ip());
    if let Some(refusal) = refusal(here, ends, src_wl, dst_wl) {
        return refusal;
    }
    let decision = rules.policy.decide(&Flow {
        src: endpoint(&ends.src, src_wl),
        dst: endpoint(&ends.dst, dst_wl),
        proto: ends.proto,
        dst_port: if ends.proto.has_ports() {
            ends.dst.addr.port()
        } else {
            0
        },
        l7,
    });
    let verdict = match (decision.action, decision.rule) {
        (Action::Allow, Some(rule)) => Verdict::Allow {
            rule,
            ids: decision.ids,
        },
        (Action::Deny, Some(rule)) => Verdict::Deny(DenyReason::Rule(rule)),
        // An allow always names its rule; without one, fail closed.
        (_, None) => Verdict::Deny(DenyReason::DefaultDeny),
    };
    let mut plan = Plan {
        verdict,
        needs_l7: decision.needs_l7,
        monitored: decision.monitored,
        route: Route::Direct,
        why: None,
    };
    if plan.allows() {
        match route(reg, here, ends, dst_wl) {
            Ok(r) => plan.route = r,
            Err(reason) => {
                plan.verdict = Verdict::Deny(reason);
                plan.needs_l7 = false;
            }
        }
    }
    plan
}

/// The refusals that need no policy: the entry point says who may arrive there.
fn refusal(
    here: &Here,
    ends: &Ends,
    src_wl: Option<&Workload>,
    dst_wl: Option<&Workload>,
) -> Option<Plan> {
    match &ends.entry {
        // Outbound capture sees only this host's workloads; anything else is unknown here.
        Entry::Outbound if src_wl.is_none_or(|w| w.node != here.node) => {
            Some(Plan::refuse(DenyReason::UnknownSource, None))
        }
        // With the tunnel on, mesh workloads reach this host only through it: a plaintext
        // connection claiming a mesh workload's address bypassed (or spoofed) its node.
        Entry::Inbound if here.has_tunnel() && tunnelled(ends.proto) && src_wl.is_some() => {
            Some(Plan::refuse(DenyReason::MeshSourceWithoutTunnel, None))
        }
        Entry::Tunnel { peer, asked } => {
            let Some(w) = dst_wl.filter(|w| w.node == here.node) else {
                return Some(Plan::refuse(
                    DenyReason::DestinationNotHosted,
                    Some(format!(
                        "{} is not a workload of node {}",
                        ends.dst.addr, here.node
                    )),
                ));
            };
            // The connection was set up to reach one identity; a stream on it may not reach
            // another workload.
            if asked
                .as_deref()
                .is_some_and(|sni| sni != eastwall_certs::sni_for(&w.identity))
            {
                return Some(Plan::refuse(
                    DenyReason::DestinationIdentityMismatch,
                    Some(format!(
                        "this connection was opened for another identity than {}",
                        w.identity
                    )),
                ));
            }
            if src_wl.is_none_or(|w| !w.owns_identity(peer)) {
                let claimed = src_wl.map_or("no workload".to_owned(), |w| {
                    format!("{} ({})", w.name, w.identity)
                });
                return Some(Plan::refuse(
                    DenyReason::IdentityMismatch,
                    Some(format!(
                        "peer proved {peer} but claims source {} which belongs to {claimed}",
                        ends.src.addr.ip()
                    )),
                ));
            }
            None
        }
        _ => None,
    }
}

/// Where an allowed connection goes: through the tunnel when it left a workload of this node
/// for a workload of another node and this node runs the tunnel; otherwise straight on.
fn route(
    reg: &Registry,
    here: &Here,
    ends: &Ends,
    dst_wl: Option<&Workload>,
) -> Result<Route, DenyReason> {
    let (Entry::Outbound, Some(port), Some(src_id), Some(dst), true) = (
        &ends.entry,
        here.tunnel_port,
        &ends.src.identity,
        dst_wl,
        tunnelled(ends.proto),
    ) else {
        return Ok(Route::Direct);
    };
    if dst.node == here.node {
        return Ok(Route::Direct);
    }
    let node = node_address(reg, dst).ok_or(DenyReason::DestinationNodeHasNoAddress)?;
    Ok(Route::Tunnel(PoolKey {
        src: src_id.clone(),
        node: SocketAddr::new(node, port),
        dst: dst.identity.clone(),
    }))
}

/// The address the tunnel reaches `w`'s node at.
fn node_address(reg: &Registry, w: &Workload) -> Option<std::net::IpAddr> {
    reg.node(&w.node).and_then(|n| n.addresses.first().copied())
}

/// An end as the policy sees it.
fn endpoint<'a>(end: &'a End, workload: Option<&'a Workload>) -> Endpoint<'a> {
    Endpoint {
        addr: end.addr.ip(),
        workload,
        identity: end.identity.as_ref(),
        user: end.user(),
        groups: end.groups.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Verdict;
    use eastwall_policy::{HttpRequestFacts, Policy};

    const REGISTRY: &str = r#"
apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
    - {name: hostB, addresses: [10.0.0.2]}
    - {name: hostC, addresses: []}
  workloads:
    - {name: host-a, node: hostA, addresses: [10.0.0.1], localUsers: true}
    - {name: web, node: hostA, addresses: [10.1.0.2], app: web, zone: prod}
    - {name: dev, node: hostA, addresses: [10.1.0.3], app: web, zone: dev}
    - {name: api, node: hostA, addresses: [10.1.0.4], app: api, zone: prod}
    - {name: desk, node: hostA, addresses: [10.1.0.5], app: vdi, zone: prod, user: alice}
    - {name: db, node: hostB, addresses: [10.2.0.2], app: db, zone: prod}
    - {name: pay, node: hostB, addresses: [10.2.0.3], app: pay, zone: prod}
    - {name: orphan, node: hostC, addresses: [10.3.0.2], app: db, zone: prod}
"#;

    const POLICY: &str = r#"
apiVersion: eastwall.dev/v1
kind: Policy
spec:
  idsProfiles:
    - {name: guard, mode: prevent}
  sections:
    - name: zones
      rules:
        - {id: dev-not-prod, action: deny, from: {zone: dev}, to: {zone: prod}}
    - name: audit
      rules:
        - {id: audit-web-db, mode: monitor, action: deny, from: {app: web}, to: {app: db}}
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432], ids: guard}
        - {id: web-to-api, action: allow, from: {app: web}, to: {app: api}, ports: [8080]}
        - {id: api-l7, action: allow, from: {app: web}, to: {app: api, http: [{methods: [GET], paths: ["/v1/*"]}]}, ports: [9000]}
        - {id: proven-web-to-pay, action: allow, from: {spiffe: "spiffe://corp.example/wl/web"}, to: {app: pay}, ports: [443]}
        - {id: finance-to-db, action: allow, from: {group: finance}, to: {app: db}, ports: [6000]}
        - {id: alice-to-db, action: allow, from: {user: alice}, to: {app: db}, ports: [7000]}
        - {id: web-out, action: allow, from: {app: web}, to: {cidr: 192.0.2.0/24}, ports: [443]}
        - {id: inbound-admin, action: allow, from: {cidr: 198.51.100.0/24}, to: {app: api}, ports: [22]}
"#;

    fn rules() -> Rules {
        let registry = Registry::parse("registry.yaml", REGISTRY).unwrap();
        let (policy, _) = Policy::parse("policy.yaml", POLICY, &registry).unwrap();
        Rules {
            registry,
            policy,
            stored: None,
            files_hash: String::new(),
        }
    }

    fn here(node: &str, tunnel: bool) -> Here {
        Here {
            node: node.to_owned(),
            tunnel_port: tunnel.then_some(15008),
        }
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn wl(name: &str) -> SpiffeId {
        id(&format!("spiffe://corp.example/wl/{name}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tunnel(peer: &str, asked: Option<&str>) -> Entry {
        Entry::Tunnel {
            peer: id(peer),
            asked: asked.map(|s| eastwall_certs::sni_for(&id(s))),
        }
    }

    /// What a row expects of the plan.
    #[derive(Debug, PartialEq)]
    enum Want {
        Allow(&'static str, Route),
        Deny(DenyReason),
    }

    fn rule(id: &str) -> DenyReason {
        let r = rules();
        let p = plan(
            &r,
            &here("hostA", true),
            &identify(
                &r,
                &here("hostA", true),
                (Entry::Outbound, Protocol::Tcp),
                sa("10.1.0.3:1"),
                sa("10.1.0.2:1"),
                None,
            ),
            L7::Unknown,
        );
        match p.verdict {
            Verdict::Deny(DenyReason::Rule(r)) if &*r.id == id => DenyReason::Rule(r),
            other => panic!("{id}: {other:?}"),
        }
    }

    fn to_hostb(src: &str, dst: &str) -> Route {
        Route::Tunnel(PoolKey {
            src: wl(src),
            node: sa("10.0.0.2:15008"),
            dst: wl(dst),
        })
    }

    #[test]
    fn every_deny_reason_and_route() {
        let r = rules();
        let (a, a_plain, b) = (
            here("hostA", true),
            here("hostA", false),
            here("hostB", true),
        );
        let web_to_db = Want::Allow("web-to-db", to_hostb("web", "db"));
        // (what, node, entry, src, dst, want)
        let rows: Vec<(&str, &Here, Entry, &str, &str, Want)> = vec![
            // Routes.
            (
                "remote workload: through the tunnel",
                &a,
                Entry::Outbound,
                "10.1.0.2:40000",
                "10.2.0.2:5432",
                web_to_db,
            ),
            (
                "same host: straight on",
                &a,
                Entry::Outbound,
                "10.1.0.2:40000",
                "10.1.0.4:8080",
                Want::Allow("web-to-api", Route::Direct),
            ),
            (
                "outside the mesh: straight on",
                &a,
                Entry::Outbound,
                "10.1.0.2:40000",
                "192.0.2.9:443",
                Want::Allow("web-out", Route::Direct),
            ),
            (
                "no tunnel: straight on, by address",
                &a_plain,
                Entry::Outbound,
                "10.1.0.2:40000",
                "10.2.0.2:5432",
                Want::Allow("web-to-db", Route::Direct),
            ),
            (
                "tunnel destination: to the local workload",
                &b,
                tunnel(
                    "spiffe://corp.example/wl/web",
                    Some("spiffe://corp.example/wl/db"),
                ),
                "10.1.0.2:40000",
                "10.2.0.2:5432",
                Want::Allow("web-to-db", Route::Direct),
            ),
            (
                "plaintext inbound from outside the mesh",
                &a,
                Entry::Inbound,
                "198.51.100.7:40000",
                "10.1.0.4:22",
                Want::Allow("inbound-admin", Route::Direct),
            ),
            // Refusals before the policy.
            (
                "outbound from an address not of this node",
                &a,
                Entry::Outbound,
                "10.2.0.2:40000",
                "10.1.0.4:8080",
                Want::Deny(DenyReason::UnknownSource),
            ),
            (
                "outbound from an unknown address",
                &a,
                Entry::Outbound,
                "10.9.9.9:40000",
                "10.1.0.4:8080",
                Want::Deny(DenyReason::UnknownSource),
            ),
            (
                "plaintext from a mesh workload",
                &a,
                Entry::Inbound,
                "10.2.0.2:40000",
                "10.1.0.4:8080",
                Want::Deny(DenyReason::MeshSourceWithoutTunnel),
            ),
            (
                "tunnel stream for a workload of another node",
                &a,
                tunnel("spiffe://corp.example/wl/db", None),
                "10.2.0.2:40000",
                "10.2.0.3:443",
                Want::Deny(DenyReason::DestinationNotHosted),
            ),
            (
                "tunnel stream for an unknown address",
                &b,
                tunnel("spiffe://corp.example/wl/web", None),
                "10.1.0.2:40000",
                "10.9.9.9:443",
                Want::Deny(DenyReason::DestinationNotHosted),
            ),
            (
                "connection opened for another identity",
                &b,
                tunnel(
                    "spiffe://corp.example/wl/web",
                    Some("spiffe://corp.example/wl/db"),
                ),
                "10.1.0.2:40000",
                "10.2.0.3:443",
                Want::Deny(DenyReason::DestinationIdentityMismatch),
            ),
            (
                "proven identity does not own the source",
                &b,
                tunnel("spiffe://corp.example/wl/dev", None),
                "10.1.0.2:40000",
                "10.2.0.2:5432",
                Want::Deny(DenyReason::IdentityMismatch),
            ),
            (
                "source address of no workload",
                &b,
                tunnel("spiffe://corp.example/wl/web", None),
                "10.9.9.9:40000",
                "10.2.0.2:5432",
                Want::Deny(DenyReason::IdentityMismatch),
            ),
            (
                "destination node without an address",
                &a,
                Entry::Outbound,
                "10.1.0.2:40000",
                "10.3.0.2:5432",
                Want::Deny(DenyReason::DestinationNodeHasNoAddress),
            ),
            // The policy.
            (
                "a deny rule",
                &a,
                Entry::Outbound,
                "10.1.0.3:40000",
                "10.2.0.2:5432",
                Want::Deny(rule("dev-not-prod")),
            ),
            (
                "no rule: default deny",
                &a,
                Entry::Outbound,
                "10.1.0.2:40000",
                "10.2.0.2:22",
                Want::Deny(DenyReason::DefaultDeny),
            ),
            (
                "a proven identity",
                &b,
                tunnel("spiffe://corp.example/wl/web", None),
                "10.1.0.2:40000",
                "10.2.0.3:443",
                Want::Allow("proven-web-to-pay", Route::Direct),
            ),
            (
                "an identity not proven (no tunnel)",
                &a_plain,
                Entry::Outbound,
                "10.1.0.2:40000",
                "10.2.0.3:443",
                Want::Deny(DenyReason::DefaultDeny),
            ),
            (
                "a workload's user",
                &a,
                Entry::Outbound,
                "10.1.0.5:40000",
                "10.2.0.2:7000",
                Want::Allow(
                    "alice-to-db",
                    Route::Tunnel(PoolKey {
                        src: id("spiffe://corp.example/user/alice/wl/desk"),
                        node: sa("10.0.0.2:15008"),
                        dst: wl("db"),
                    }),
                ),
            ),
        ];
        for (what, node, entry, src, dst, want) in rows {
            let ends = identify(&r, node, (entry, Protocol::Tcp), sa(src), sa(dst), None);
            let p = plan(&r, node, &ends, L7::Unknown);
            let got = match &p.verdict {
                Verdict::Allow { rule, .. } => Want::Allow(
                    Box::leak(rule.id.to_string().into_boxed_str()),
                    p.route.clone(),
                ),
                Verdict::Deny(reason) => Want::Deny(reason.clone()),
            };
            assert_eq!(got, want, "{what}: {p:?}");
            // Refusals before the policy say why in words; the tunnel answers with them.
            if let Verdict::Deny(reason) = &p.verdict {
                let words = p.refusal_words();
                assert!(!words.is_empty(), "{what}");
                match reason {
                    DenyReason::Rule(_) | DenyReason::DefaultDeny => {
                        assert_eq!(words, format!("denied by rule {}", reason.code()), "{what}")
                    }
                    DenyReason::DestinationNotHosted
                    | DenyReason::DestinationIdentityMismatch
                    | DenyReason::IdentityMismatch => assert!(p.why.is_some(), "{what}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn the_ids_profile_and_monitor_rules_travel_with_the_plan() {
        let r = rules();
        let a = here("hostA", true);
        let ends = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.2.0.2:5432"),
            None,
        );
        let p = plan(&r, &a, &ends, L7::Unknown);
        assert_eq!(p.ids_profile(), Some("guard"));
        let monitored: Vec<&str> = p.monitored.iter().map(|m| &*m.rule.id).collect();
        assert_eq!(monitored, ["audit-web-db"]);
        // A route failure after an allow keeps what the monitor rules saw.
        let ends = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.3.0.2:5432"),
            None,
        );
        let p = plan(&r, &a, &ends, L7::Unknown);
        assert_eq!(p.denial(), Some(&DenyReason::DestinationNodeHasNoAddress));
        assert_eq!(p.monitored.len(), 1);
    }

    #[test]
    fn l7_rules_are_decided_here_at_the_last_node_and_per_request() {
        let r = rules();
        let (a, b) = (here("hostA", true), here("hostB", true));
        // Same host: this node is the last one, it inspects.
        let ends = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.1.0.4:9000"),
            None,
        );
        let p = plan(&r, &a, &ends, L7::Unknown);
        assert!(p.needs_l7 && p.inspects_here(), "{p:?}");
        let request = |method: &str, path: &str| {
            let headers = http::HeaderMap::new();
            let facts = HttpRequestFacts {
                method,
                host: None,
                path,
                headers: &headers,
            };
            plan(&r, &a, &ends, L7::Http(&facts))
        };
        assert!(request("GET", "/v1/x").allows());
        assert_eq!(
            request("DELETE", "/v1/x").denial(),
            Some(&DenyReason::DefaultDeny)
        );
        assert!(
            plan(&r, &a, &ends, L7::Opaque).denial().is_some(),
            "an L7 allow rule does not match opaque bytes"
        );
        // Through the tunnel, the destination inspects: not the source.
        let mut r2 = rules();
        r2.registry = Registry::parse(
            "registry.yaml",
            &REGISTRY.replace("{name: api, node: hostA", "{name: api, node: hostB"),
        )
        .unwrap();
        let ends = identify(
            &r2,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.1.0.4:9000"),
            None,
        );
        let p = plan(&r2, &a, &ends, L7::Unknown);
        assert!(p.needs_l7 && !p.inspects_here(), "{p:?}");
        assert!(matches!(p.route, Route::Tunnel(_)));
        let ends = identify(
            &r2,
            &b,
            (tunnel("spiffe://corp.example/wl/web", None), Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.1.0.4:9000"),
            None,
        );
        assert!(plan(&r2, &b, &ends, L7::Unknown).inspects_here());
    }

    #[test]
    fn who_is_on_each_end() {
        let r = rules();
        let (a, a_plain) = (here("hostA", true), here("hostA", false));
        // With the tunnel: this node holds its workload's identity, and the destination's
        // is the one the tunnel will prove.
        let e = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.2.0.2:5432"),
            None,
        );
        assert_eq!(e.src.identity, Some(wl("web")));
        assert_eq!(e.dst.identity, Some(wl("db")));
        // ... but not where nothing will prove it (a node without an address).
        let e = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.3.0.2:5432"),
            None,
        );
        assert_eq!(e.dst.identity, None);
        // Without the tunnel nothing is proven.
        let e = identify(
            &r,
            &a_plain,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.2:1"),
            sa("10.1.0.4:8080"),
            None,
        );
        assert_eq!((e.src.identity, e.dst.identity), (None, None));
        // Plaintext inbound: the source proves nothing; a local destination is ours.
        let e = identify(
            &r,
            &a,
            (Entry::Inbound, Protocol::Tcp),
            sa("198.51.100.7:1"),
            sa("10.1.0.4:22"),
            None,
        );
        assert_eq!((e.src.identity, e.dst.identity), (None, Some(wl("api"))));
        // A user-bound workload acts for its user.
        let e = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            sa("10.1.0.5:1"),
            sa("10.2.0.2:7000"),
            None,
        );
        assert_eq!(e.src.user(), Some("alice"));
        // The host's own processes: the socket's owner, when the kernel says.
        let host = sa("10.0.0.1:1");
        let w = wants_socket_owner(&r, &a, &Entry::Outbound, host).expect("localUsers");
        let bob = w.user_identity("bob").unwrap();
        let e = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            host,
            sa("10.2.0.2:6000"),
            Some(bob.clone()),
        );
        assert_eq!(
            (e.src.identity.as_ref(), e.src.user()),
            (Some(&bob), Some("bob"))
        );
        assert!(wants_socket_owner(&r, &a, &Entry::Inbound, host).is_none());
        assert!(wants_socket_owner(&r, &here("hostB", true), &Entry::Outbound, host).is_none());
        assert!(wants_socket_owner(&r, &a, &Entry::Outbound, sa("10.1.0.2:1")).is_none());
    }

    #[test]
    fn groups_decide_only_when_known() {
        let r = rules();
        let a = here("hostA", true);
        let host = sa("10.0.0.1:1");
        let bob = id("spiffe://corp.example/user/bob/wl/host-a");
        let mut e = identify(
            &r,
            &a,
            (Entry::Outbound, Protocol::Tcp),
            host,
            sa("10.2.0.2:6000"),
            Some(bob),
        );
        assert_eq!(
            plan(&r, &a, &e, L7::Unknown).denial(),
            Some(&DenyReason::DefaultDeny),
            "groups unknown: fail closed"
        );
        e.src.groups = Some(vec!["finance".into()]);
        assert!(plan(&r, &a, &e, L7::Unknown).allows());
        e.src.groups = Some(vec!["hr".into()]);
        assert!(!plan(&r, &a, &e, L7::Unknown).allows());
    }

    #[test]
    fn refusals_answer_the_tunnel_and_name_the_record() {
        use eastwall_wire::eve::FlowReason;
        use eastwall_wire::header::Status;
        let table = [
            (
                DenyReason::DestinationNotHosted,
                Status::UnknownDestination,
                FlowReason::Denied,
                "destination-not-hosted",
            ),
            (
                DenyReason::DestinationIdentityMismatch,
                Status::UnknownDestination,
                FlowReason::Denied,
                "destination-identity-mismatch",
            ),
            (
                DenyReason::IdentityMismatch,
                Status::IdentityMismatch,
                FlowReason::Denied,
                "identity-mismatch",
            ),
            (
                DenyReason::BadTunnelHeader,
                Status::BadHeader,
                FlowReason::BadTunnelHeader,
                "bad-tunnel-header",
            ),
            (
                DenyReason::TunnelHandshakeRefused,
                Status::Denied,
                FlowReason::TunnelHandshakeRefused,
                "tunnel-handshake-refused",
            ),
            (
                DenyReason::SpoofedSource,
                Status::Denied,
                FlowReason::SpoofedSource,
                "spoofed-source",
            ),
            (
                DenyReason::DefaultDeny,
                Status::Denied,
                FlowReason::Denied,
                "default-deny",
            ),
            (
                DenyReason::UnknownSource,
                Status::Denied,
                FlowReason::Denied,
                "unknown-source",
            ),
            (
                DenyReason::MeshSourceWithoutTunnel,
                Status::Denied,
                FlowReason::Denied,
                "mesh-source-without-tunnel",
            ),
            (
                DenyReason::DestinationNodeHasNoAddress,
                Status::Denied,
                FlowReason::Denied,
                "destination-node-has-no-address",
            ),
            (
                DenyReason::BadRequestTarget,
                Status::Denied,
                FlowReason::Denied,
                "bad-request-target",
            ),
        ];
        for (reason, status, flow, code) in table {
            assert_eq!(reason.tunnel_status(), status, "{code}");
            assert_eq!(reason.flow_reason(), flow, "{code}");
            assert_eq!(reason.code(), code);
            assert_eq!(reason.section(), None);
        }
        let r = rule("dev-not-prod");
        assert_eq!((r.code(), r.section()), ("dev-not-prod", Some("zones")));
    }
}
