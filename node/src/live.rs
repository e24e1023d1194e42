//! The connections a node has allowed and is relaying now, with what they were decided on, so
//! that a new policy or registry can decide them again and end the ones it no longer allows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use eastwall_identity::SpiffeId;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::flow::Direction;
use crate::proxy;
use crate::state::NodeState;

/// What an allowed connection was decided on.
#[derive(Debug, Clone)]
pub(crate) struct Decided {
    /// Which side of the node the decision was made for.
    pub(crate) direction: Direction,
    /// The connecting side's address.
    pub(crate) src: SocketAddr,
    /// Its identity: proven by the tunnel's certificate, or held by this node.
    pub(crate) src_id: Option<SpiffeId>,
    /// The side connected to.
    pub(crate) dst: SocketAddr,
    /// Its identity, proven or to be proven by the tunnel.
    pub(crate) dst_id: Option<SpiffeId>,
    /// Whether this node inspects it at L7 (else it is relayed as bytes, and a policy that
    /// now wants L7 facts for it revokes it: it cannot be inspected from the middle).
    pub(crate) inspected: bool,
}

struct Entry {
    decided: Decided,
    revoke: CancellationToken,
    /// Set by the re-check that revoked it: the rule that now denies it.
    revoked_by: Mutex<Option<String>>,
}

/// The table of live connections.
#[derive(Default)]
pub struct LiveConnections {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, std::sync::Arc<Entry>>>,
}

/// A connection's place in the table: removed when dropped.
pub(crate) struct Registration<'a> {
    table: &'a LiveConnections,
    id: u64,
    entry: std::sync::Arc<Entry>,
}

impl Registration<'_> {
    /// Completes when a re-check revokes the connection.
    pub(crate) async fn revoked(&self) {
        self.entry.revoke.cancelled().await
    }

    /// The rule that revoked the connection, if one did.
    pub(crate) fn revoked_by(&self) -> Option<String> {
        self.entry
            .revoked_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.table
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl LiveConnections {
    /// Enters an allowed connection for as long as the registration lives.
    pub(crate) fn register(&self, decided: Decided) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = std::sync::Arc::new(Entry {
            decided,
            revoke: CancellationToken::new(),
            revoked_by: Mutex::new(None),
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, entry.clone());
        Registration {
            table: self,
            id,
            entry,
        }
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides every live connection again with the rules now in force and revokes the ones they
/// deny; returns how many were revoked.
pub(crate) async fn recheck(state: &NodeState) -> usize {
    let entries: Vec<std::sync::Arc<Entry>> = state
        .live
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let mut revoked = 0;
    for e in entries {
        let d = &e.decided;
        let rules = state.rules();
        let src_wl = rules.registry.workload_by_addr(d.src.ip());
        let dst_wl = rules.registry.workload_by_addr(d.dst.ip());
        let (decision, _) = proxy::evaluate(
            state,
            (d.src, src_wl, d.src_id.as_ref()),
            (d.dst, dst_wl, d.dst_id.as_ref()),
            eastwall_policy::L7::Unknown,
        )
        .await;
        let cannot_inspect = decision.policy.l7_pending && !d.inspected;
        if !decision.policy.allows() || cannot_inspect {
            info!(direction = d.direction.as_str(), src = %d.src, dst = %d.dst, rule = %decision.policy.rule, "connection revoked by the new policy");
            let why = if decision.policy.allows() {
                format!("{} (needs L7 inspection now)", decision.policy.rule)
            } else {
                decision.policy.rule.clone()
            };
            *e.revoked_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            e.revoke.cancel();
            revoked += 1;
        }
    }
    revoked
}
