//! What a running node shares between its tasks.

use std::sync::{Arc, RwLock};

use crate::config::{CaptureSpec, Rules};
use crate::flow::FlowLog;
use crate::metrics::Metrics;
use crate::tunnel::Tunnel;

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
    /// The tunnel's client side, when the node runs the tunnel.
    pub tunnel: Option<Tunnel>,
    /// The tunnel's port, UDP and TCP (the same on every node).
    pub tunnel_port: u16,
    /// Where users' groups come from, if anywhere.
    pub directory: Option<crate::directory::Directory>,
    /// Whether capture is installed and the node is serving (what `/healthz` reports).
    pub ready: std::sync::atomic::AtomicBool,
    /// L7 inspection settings.
    pub l7: crate::config::L7Spec,
    /// Certificates of local users' identities, obtained on first use (with the tunnel).
    pub user_certs: Option<Arc<crate::identity::UserCertificates>>,
    /// Allowed connections being relayed, for re-checks when the rules change.
    pub live: crate::live::LiveConnections,
    rules: RwLock<Arc<Rules>>,
    ids: RwLock<Option<Arc<crate::ids::IdsEngines>>>,
}

impl NodeState {
    /// A node deciding with `rules`, without tunnel or directory until they are added.
    pub fn new(
        node_name: String,
        capture: CaptureSpec,
        rules: Rules,
        flows: FlowLog,
        metrics: Metrics,
    ) -> Self {
        metrics.policy_rules.set(rules.policy.rule_count() as i64);
        NodeState {
            node_name,
            capture,
            metrics,
            flows,
            tunnel: None,
            tunnel_port: 0,
            directory: None,
            ready: std::sync::atomic::AtomicBool::new(false),
            live: crate::live::LiveConnections::default(),
            user_certs: None,
            l7: crate::config::L7Spec::default(),
            rules: RwLock::new(Arc::new(rules)),
            ids: RwLock::new(None),
        }
    }

    /// This node with the tunnel's pool, dialing peers on `port`.
    pub fn with_tunnel(self, tunnel: Option<Tunnel>, port: u16) -> Self {
        NodeState {
            tunnel,
            tunnel_port: port,
            ..self
        }
    }

    /// This node with a source of local users' certificates.
    pub fn with_user_certs(
        self,
        user_certs: Option<Arc<crate::identity::UserCertificates>>,
    ) -> Self {
        NodeState { user_certs, ..self }
    }

    /// This node with these L7 settings.
    pub fn with_l7(self, l7: crate::config::L7Spec) -> Self {
        NodeState { l7, ..self }
    }

    /// This node with a directory for users' groups.
    pub fn with_directory(self, directory: Option<crate::directory::Directory>) -> Self {
        NodeState { directory, ..self }
    }

    /// The registry and policy in force; a connection keeps the snapshot it started with.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The IDS engines in force, if the node has IDS rules.
    pub fn ids(&self) -> Option<Arc<crate::ids::IdsEngines>> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `engines` in force for connections decided from now on.
    pub fn replace_ids(&self, engines: Option<Arc<crate::ids::IdsEngines>>) {
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = engines;
    }

    /// Puts `rules` in force for every decision from now on; returns the ones replaced.
    pub fn replace_rules(&self, rules: Rules) -> Arc<Rules> {
        self.metrics
            .policy_rules
            .set(rules.policy.rule_count() as i64);
        std::mem::replace(
            &mut *self.rules.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(rules),
        )
    }
}
