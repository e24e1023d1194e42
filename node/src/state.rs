//! What a running node shares between its tasks.

use std::sync::{Arc, RwLock};

use crate::config::{CaptureSpec, Rules};
use crate::flow::FlowLog;
use crate::metrics::Metrics;
use crate::tunnel::pool::Pool;

/// Shared state of a running node.
pub struct NodeState {
    /// This node's registry name.
    pub node_name: String,
    /// Capture settings (marks, timeouts).
    pub capture: CaptureSpec,
    /// Metrics.
    pub metrics: Metrics,
    /// Flow records.
    pub flows: FlowLog,
    /// The tunnel's connection pool, when the node runs the tunnel.
    pub tunnel: Option<Pool>,
    /// The tunnel's UDP port (the same on every node).
    pub tunnel_port: u16,
    /// Whether capture is installed and the node is serving (what `/healthz` reports).
    pub ready: std::sync::atomic::AtomicBool,
    rules: RwLock<Arc<Rules>>,
}

impl NodeState {
    /// A node deciding with `rules`.
    pub fn new(
        node_name: String,
        capture: CaptureSpec,
        rules: Rules,
        flows: FlowLog,
        tunnel: Option<Pool>,
        tunnel_port: u16,
        metrics: Metrics,
    ) -> Self {
        metrics.policy_rules.set(rules.policy.rule_count() as i64);
        NodeState {
            node_name,
            capture,
            metrics,
            flows,
            tunnel,
            tunnel_port,
            ready: std::sync::atomic::AtomicBool::new(false),
            rules: RwLock::new(Arc::new(rules)),
        }
    }

    /// The registry and policy in force; a connection keeps the snapshot it started with.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts new rules in force for connections accepted from now on.
    pub fn set_rules(&self, rules: Rules) {
        self.metrics
            .policy_rules
            .set(rules.policy.rule_count() as i64);
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }
}
