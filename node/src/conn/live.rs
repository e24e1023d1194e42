//! The connections a node has allowed and is relaying now, with what they were decided on, so
//! that a new policy or registry can decide them again and end the ones it no longer allows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Ends, Pipeline};

struct Entry {
    /// Both ends, as identified when the connection was allowed.
    ends: Ends,
    /// Whether this node decides it at L7 (else it is carried as bytes, and a policy that
    /// now wants L7 facts for it revokes it: it cannot be inspected from the middle).
    inspected: bool,
    revoke: CancellationToken,
    /// Set by the re-check that revoked it: the rule that now denies it.
    revoked_by: Mutex<Option<String>>,
}

/// The table of live connections.
#[derive(Default)]
pub(crate) struct LiveConnections {
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
    pub(crate) fn register(&self, ends: Ends, inspected: bool) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = std::sync::Arc::new(Entry {
            ends,
            inspected,
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

    /// Ends every live connection (they end as revoked, by `why`); returns how many.
    pub(crate) fn end_all(&self, why: &str) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for e in conns.values() {
            *e.revoked_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
            e.revoke.cancel();
        }
        conns.len()
    }

    /// How many connections are live.
    pub(crate) fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Plans every live connection again with the rules now in force and revokes the ones they
/// deny; returns how many were revoked.
pub(crate) async fn recheck(pipeline: &Pipeline) -> usize {
    let entries: Vec<std::sync::Arc<Entry>> = pipeline
        .carrier
        .live
        .conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let mut revoked = 0;
    for e in entries {
        let mut ends = e.ends.clone();
        // Groups as the directory says now.
        pipeline.fill_groups(&mut ends).await;
        let plan = super::plan(
            &pipeline.rules(),
            &pipeline.here,
            &ends,
            super::at_start(ends.proto),
        );
        let cannot_inspect = plan.needs_l7 && !e.inspected;
        if !plan.allows() || cannot_inspect {
            let rule = plan.rule_code();
            info!(direction = ends.direction().as_str(), src = %ends.src.addr, dst = %ends.dst.addr, rule, "connection revoked by the new policy");
            let why = if plan.allows() {
                format!("{rule} (needs L7 inspection now)")
            } else {
                rule.to_owned()
            };
            *e.revoked_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            e.revoke.cancel();
            revoked += 1;
        }
    }
    revoked
}
