//! The capture entry point: accept a connection the kernel handed to a transparent listener,
//! find who is on each end, plan it, and refuse it with a reset or carry it (straight on, or
//! through the tunnel; with L7 rules in play, through the L7 layer). Also records the
//! spoofing attempts capture dropped before any listener saw them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eastwall_identity::SpiffeId;
use eastwall_policy::{Protocol, Workload};
use eastwall_wire::eve::Direction;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::capture::socket;
use crate::capture::spoof::{self, Attempt};
use crate::conn::carry::{Prelude, TcpDownstream};
use crate::conn::record::{FlowGuard, policy_info, registry_endpoint};
use crate::conn::{
    DenyReason, Entry, Outcome, Pipeline, Plan, Route, Shortage, at_start, budget, identify,
    wants_socket_owner,
};
use crate::telemetry::metrics::{DirLabels, ResultLabels};

/// Accepts captured connections on `listener` until the task is dropped; `entry` says which
/// listener it is ([`Entry::Outbound`] or [`Entry::Inbound`]).
pub(crate) async fn serve(listener: TcpListener, entry: Entry, pipeline: Arc<Pipeline>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (pipeline, entry) = (pipeline.clone(), entry.clone());
                tokio::spawn(async move { accepted(stream, peer, entry, &pipeline).await });
            }
            Err(e) => {
                // Running out of descriptors must not end the listener; the connection waits
                // in the backlog, and the node says it is degraded.
                if budget::out_of_descriptors(&e) {
                    pipeline.budgets.refused(Shortage::Descriptors, None);
                }
                warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accepted(client: TcpStream, peer: SocketAddr, entry: Entry, pipeline: &Arc<Pipeline>) {
    let accepted_at = SystemTime::now();
    // TPROXY keeps the original destination as the accepted socket's local address.
    let orig_dst = match client.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(%e, "captured connection without a local address");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let telemetry = &pipeline.telemetry;
    telemetry
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: entry.direction().as_str(),
        })
        .inc();
    let rules = pipeline.rules();
    let here = &pipeline.here;
    // The host's own processes (`localUsers`): the socket's owner acts with that user's
    // identity.
    let local_user = match wants_socket_owner(&rules, here, &entry, peer) {
        Some(w) => local_user(pipeline, w, peer, orig_dst).await,
        None => None,
    };
    let mut ends = identify(
        &rules,
        here,
        (entry, Protocol::Tcp),
        peer,
        orig_dst,
        local_user,
    );
    pipeline.fill_groups(&mut ends).await;
    let plan = pipeline.plan(&ends, at_start(Protocol::Tcp));
    let mut guard = FlowGuard::new(telemetry, &here.node, &rules, &ends, &plan).since(accepted_at);
    drop(rules);

    if let Some(reason) = plan.denial() {
        debug!(%peer, %orig_dst, rule = reason.code(), "denied");
        socket::reset(client);
        guard.finish(Outcome::Refused(reason.clone()));
        return;
    }
    let _slot = match pipeline.room_for(&ends, &mut guard) {
        Ok(slot) => slot,
        Err(reason) => {
            socket::reset(client);
            guard.finish(Outcome::Refused(reason));
            return;
        }
    };
    let carrier = &pipeline.carrier;
    let outcome = match &plan.route {
        // Rules with L7 conditions apply and this node is the last on the path: decide per
        // request (handshake, stream) here.
        Route::Direct if plan.inspects_here() => {
            let down = TcpDownstream(client);
            // Boxed: the L7 layer's state is large, and only its connections need room for it.
            Box::pin(crate::l7::serve(
                down,
                bytes::Bytes::new(),
                &ends,
                pipeline,
                &mut guard,
            ))
            .await
        }
        Route::Direct => {
            let down = TcpDownstream(client);
            let profile = plan.ids_profile();
            carrier
                .direct(down, &ends, profile, Prelude::default(), false, &mut guard)
                .await
        }
        // Through the tunnel the destination decides whatever needs L7 facts.
        Route::Tunnel(key) => carrier.tunnel(client, &ends, key, &mut guard).await,
    };
    guard.finish(outcome);
}

/// The identity of the local user who owns the connection `peer -> orig_dst` of the host
/// workload `w`; `None` (the host workload, no user: `user` and `group` rules do not match)
/// when the kernel or NSS cannot say.
async fn local_user(
    pipeline: &Pipeline,
    w: &Workload,
    peer: SocketAddr,
    orig_dst: SocketAddr,
) -> Option<SpiffeId> {
    let looked_up = tokio::task::spawn_blocking(move || {
        let owner = eastwall_identity::tcp_socket_owner(peer, orig_dst)?;
        owner
            .map(|o| eastwall_identity::user_name(o.uid).map(|n| (o.uid, n)))
            .transpose()
    })
    .await;
    let result = match looked_up {
        Ok(Ok(Some((_, Some(name))))) => w
            .user_identity(&name)
            .ok_or_else(|| format!("user name `{name}` cannot be part of a SPIFFE ID")),
        Ok(Ok(Some((uid, None)))) => Err(format!("uid {uid} has no user name")),
        Ok(Ok(None)) => Err("no owner found for the socket".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let label = if result.is_ok() { "ok" } else { "unknown" };
    pipeline
        .telemetry
        .metrics
        .local_user_lookups
        .get_or_create(&ResultLabels { result: label })
        .inc();
    result
        .inspect_err(|why| debug!(%peer, %orig_dst, why, "local user unknown"))
        .ok()
}

/// Records the spoofing attempts capture dropped (polling its sets every second) until the
/// task is dropped: one flow record per attempt and per `nft::SPOOF_MEMORY_SECS`.
pub(crate) async fn watch_spoofing(pipeline: Arc<Pipeline>, table: String) {
    let mut seen: HashSet<Attempt> = HashSet::new();
    let mut counted = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let metrics = &pipeline.telemetry.metrics;
    loop {
        tick.tick().await;
        let table = table.clone();
        let read =
            tokio::task::spawn_blocking(move || (spoof::dropped(&table), spoof::list(&table)))
                .await;
        let Ok((dropped, listed)) = read else {
            continue;
        };
        if let Ok(now) = dropped {
            // The counter starts again when capture is reinstalled.
            let new = if now >= counted { now - counted } else { now };
            metrics.spoofed_packets.inc_by(new);
            counted = now;
        }
        let Ok(now) = listed else { continue };
        for a in now.difference(&seen) {
            spoofed(&pipeline, a);
        }
        seen = now;
    }
}

fn spoofed(pipeline: &Pipeline, a: &Attempt) {
    let rules = pipeline.rules();
    let reg = &rules.registry;
    let reason = DenyReason::SpoofedSource;
    let mut guard = FlowGuard::at(
        &pipeline.telemetry,
        &pipeline.here.node,
        Direction::Outbound,
        (
            SocketAddr::new(a.src, 0),
            registry_endpoint(reg.workload_by_addr(a.src)),
        ),
        (a.dst, registry_endpoint(reg.workload_by_addr(a.dst.ip()))),
        policy_info(&Plan::refuse(reason.clone(), None)),
    );
    guard.error = Some(format!(
        "source address {} does not belong behind interface {} (reverse-path check); dropped",
        a.src, a.interface
    ));
    guard.finish(Outcome::Dropped(reason));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Ends;
    use crate::conn::carry::{Carrier, TcpDownstream};
    use crate::tunnel::pool::PoolKey;

    use crate::front::future_size::{of4 as size4, of5 as size5};

    /// Each captured connection is one task, alive as long as the connection: its future is
    /// the per-connection state the node holds while relaying (issue 20: at most 4 KiB per
    /// connection at L4). Parts only some connections need (the L7 layer, a directory
    /// lookup, a tunnel dial, a local user's certificate) are boxed where they start, so they
    /// cost nothing to the others; a large argument or buffer kept across an `.await` shows
    /// here first.
    #[test]
    fn a_captured_connection_holds_at_most_4_kib_while_relaying() {
        let task = size4::<_, _, _, &'static Arc<Pipeline>, _>(accepted);
        let tunnel = size5::<
            &'static Carrier,
            TcpStream,
            &'static Ends,
            &'static PoolKey,
            &'static mut FlowGuard,
            _,
        >(Carrier::tunnel);
        let l7 = size5::<
            TcpDownstream,
            bytes::Bytes,
            &'static Ends,
            &'static Arc<Pipeline>,
            &'static mut FlowGuard,
            _,
        >(crate::l7::serve::<TcpDownstream>);
        eprintln!("connection task {task} bytes (tunnel part {tunnel}); L7 part (boxed) {l7}");
        assert!(task <= 4096, "a captured connection's task is {task} bytes");
        assert!(
            tunnel < task,
            "the tunnel is carried inside the connection's task"
        );
        // The L7 part is on the heap beside hyper's buffers (16 KiB budget in all).
        assert!(l7 <= 8192, "the L7 part is {l7} bytes");
    }
}
