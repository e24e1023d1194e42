//! Planning a connection, pure: no I/O, no clock, no async runtime. Given the rules in force,
//! this node's facts and how a connection arrived, [`identify`] says who is on each end, and
//! [`plan()`] decides: refusals that need no policy (an unknown source, a tunnel stream for a
//! workload this node does not host, an identity that does not own its address, ...), then
//! the policy, then where the allowed bytes go. The same function plans a connection at
//! capture, at the tunnel's destination, each HTTP request and TLS handshake at L7, and each
//! live connection again after a reload.

use std::net::SocketAddr;

use eastwall_identity::SpiffeId;
use eastwall_policy::{Action, Endpoint, Flow, L7, Registry, Workload};

use super::{DenyReason, End, Ends, Entry, Here, Plan, Route, Verdict};
use crate::rules::Rules;
use crate::tunnel::pool::PoolKey;

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
    entry: Entry,
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
        Entry::Outbound => local_user.or_else(|| {
            src_wl
                .filter(|_| tunnel)
                .map(|w| w.identity.clone())
        }),
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
                        && src_id.is_some()
                        && node_address(reg, w).is_some())
            })
            .map(|w| w.identity.clone()),
    };
    Ends {
        entry,
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

/// Decides a connection (`l7` is [`L7::Unknown`] at connection time) or one of its requests,
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
        dst_port: ends.dst.addr.port(),
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
        Entry::Inbound if here.has_tunnel() && src_wl.is_some() => {
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
    let (Entry::Outbound, Some(port), Some(src_id), Some(dst)) =
        (&ends.entry, here.tunnel_port, &ends.src.identity, dst_wl)
    else {
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
