//! The life of one connection, whatever entry point accepted it (a captured socket, a tunnel
//! stream), as one pipeline of named steps:
//!
//! ```text
//! accept (front::capture, front::tunnel)
//!   -> identify   plan::identify: who is on each end (pure), then their users' groups (I/O)
//!   -> plan       plan::plan: the rules in force, this node's facts, the two ends -> Plan (pure)
//!   -> carry      carry: connect from the client's address, IDS, relay -> Outcome
//!                 (or l7::serve, which plans again per request and carries through here too)
//!   -> record     record::FlowGuard: one EVE flow event and the metrics, exactly once
//! ```
//!
//! The values that flow between the steps are here: the two [`Ends`], the [`Plan`] with its
//! [`Verdict`] and [`Route`], and the [`Outcome`]. Strings appear only where a record is
//! written ([`Outcome::eve`], [`DenyReason::code`]).

pub(crate) mod budget;
pub(crate) mod carry;
pub(crate) mod live;
pub(crate) mod plan;
pub(crate) mod record;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use eastwall_identity::SpiffeId;
use eastwall_policy::{MonitorHit, Protocol, RuleRef};
use eastwall_wire::eve::{Direction, FlowReason, FlowState};
use eastwall_wire::header::Status;

use crate::config::{L7Spec, UdpSpec};
use crate::directory::Directory;
use crate::ids::IdsEngines;
use crate::rules::Rules;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{DirLabels, PolicyLabels};
use crate::tunnel::pool::PoolKey;

use self::record::FlowGuard;

pub(crate) use self::budget::{Budgets, Holder, Shortage, Slot};
pub(crate) use self::carry::Carrier;
pub(crate) use self::plan::{at_start, identify, plan, wants_socket_owner};

/// What planning needs to know of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Here {
    /// The node's name in the registry.
    pub(crate) node: String,
    /// The tunnel's port (the same on every node) when this node runs the tunnel; `None`: no
    /// tunnel, cross-host traffic is relayed in plaintext and decided by address.
    pub(crate) tunnel_port: Option<u16>,
}

impl Here {
    /// Whether this node runs the tunnel (and so proves and checks identities).
    pub(crate) fn has_tunnel(&self) -> bool {
        self.tunnel_port.is_some()
    }
}

/// How a connection reached this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Captured as it left a local workload (or the host's own processes).
    Outbound,
    /// Captured in plaintext on its way to a local workload.
    Inbound,
    /// A tunnel stream from another node.
    Tunnel {
        /// The identity the peer's certificate proved.
        peer: SpiffeId,
        /// The TLS server name the peer asked for: the identity it expects this node to prove.
        asked: Option<String>,
    },
}

impl Entry {
    /// Which side of the node the connection is on.
    pub(crate) fn direction(&self) -> Direction {
        match self {
            Entry::Outbound => Direction::Outbound,
            Entry::Inbound | Entry::Tunnel { .. } => Direction::Inbound,
        }
    }
}

/// One end of a connection, as identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct End {
    /// Address and port.
    pub(crate) addr: SocketAddr,
    /// The identity this end acts with, when it counts: proven by the tunnel's certificate,
    /// held by this node (its own workload, a local user), or to be proven by the tunnel's
    /// handshake. Never one an address merely claims.
    pub(crate) identity: Option<SpiffeId>,
    /// The user's directory groups (`None`: no user, or the directory could not say).
    pub(crate) groups: Option<Vec<String>>,
}

impl End {
    /// An end known by its address only.
    pub(crate) fn at(addr: SocketAddr) -> End {
        End {
            addr,
            identity: None,
            groups: None,
        }
    }

    /// The user this end acts for: the one its identity carries (`…/user/<name>/…`).
    pub(crate) fn user(&self) -> Option<&str> {
        self.identity.as_ref().and_then(SpiffeId::user)
    }
}

/// Both ends of a connection and how it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ends {
    /// The entry point.
    pub(crate) entry: Entry,
    /// The IP protocol: a TCP connection, a UDP session, ...
    pub(crate) proto: Protocol,
    /// The side that connects.
    pub(crate) src: End,
    /// The side connected to.
    pub(crate) dst: End,
}

impl Ends {
    /// Which side of the node the connection is on.
    pub(crate) fn direction(&self) -> Direction {
        self.entry.direction()
    }
}

/// Why a connection (or a request) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DenyReason {
    /// An enforce rule with `action: deny` matched.
    Rule(RuleRef),
    /// No enforce rule matched.
    DefaultDeny,
    /// Outbound capture saw a source that is not a workload of this node.
    UnknownSource,
    /// A plaintext connection claims a mesh workload's address, which the tunnel would carry.
    MeshSourceWithoutTunnel,
    /// The destination's node has no address in the registry to tunnel to.
    DestinationNodeHasNoAddress,
    /// A tunnel stream for an address that is not a workload of this node.
    DestinationNotHosted,
    /// A tunnel stream whose connection was opened for another destination identity.
    DestinationIdentityMismatch,
    /// The peer's proven identity does not own the source address it claims.
    IdentityMismatch,
    /// A tunnel stream whose header could not be read.
    BadTunnelHeader,
    /// A tunnel peer whose TLS handshake was refused.
    TunnelHandshakeRefused,
    /// An HTTP request target that cannot be normalized.
    BadRequestTarget,
    /// A packet whose source address does not belong behind its interface.
    SpoofedSource,
    /// Allowed, but there was no room for it: the source workload's connection budget, or
    /// the node's descriptors.
    Exhausted(Shortage),
}

impl DenyReason {
    /// The rule id, or the reason's code: what records and metrics name.
    pub(crate) fn code(&self) -> &str {
        match self {
            DenyReason::Rule(r) => &r.id,
            DenyReason::DefaultDeny => "default-deny",
            DenyReason::UnknownSource => "unknown-source",
            DenyReason::MeshSourceWithoutTunnel => "mesh-source-without-tunnel",
            DenyReason::DestinationNodeHasNoAddress => "destination-node-has-no-address",
            DenyReason::DestinationNotHosted => "destination-not-hosted",
            DenyReason::DestinationIdentityMismatch => "destination-identity-mismatch",
            DenyReason::IdentityMismatch => "identity-mismatch",
            DenyReason::BadTunnelHeader => "bad-tunnel-header",
            DenyReason::TunnelHandshakeRefused => "tunnel-handshake-refused",
            DenyReason::BadRequestTarget => "bad-request-target",
            DenyReason::SpoofedSource => "spoofed-source",
            DenyReason::Exhausted(s) => s.code(),
        }
    }

    /// The section of the deciding rule.
    pub(crate) fn section(&self) -> Option<&str> {
        match self {
            DenyReason::Rule(r) => Some(&r.section),
            _ => None,
        }
    }

    /// How a tunnel destination answers the refusal.
    pub(crate) fn tunnel_status(&self) -> Status {
        match self {
            DenyReason::DestinationNotHosted | DenyReason::DestinationIdentityMismatch => {
                Status::UnknownDestination
            }
            DenyReason::IdentityMismatch => Status::IdentityMismatch,
            DenyReason::BadTunnelHeader => Status::BadHeader,
            DenyReason::Exhausted(_) => Status::Overloaded,
            _ => Status::Denied,
        }
    }

    /// EVE's reason for a flow refused for this.
    pub(crate) fn flow_reason(&self) -> FlowReason {
        match self {
            DenyReason::BadTunnelHeader => FlowReason::BadTunnelHeader,
            DenyReason::TunnelHandshakeRefused => FlowReason::TunnelHandshakeRefused,
            DenyReason::SpoofedSource => FlowReason::SpoofedSource,
            DenyReason::Exhausted(_) => FlowReason::ResourceLimit,
            _ => FlowReason::Denied,
        }
    }
}

/// What the node does with a connection (or a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it through.
    Allow {
        /// The deciding rule (with pending L7 decisions: the first rule that may allow).
        rule: RuleRef,
        /// The IDS profile that inspects what it carries.
        ids: Option<Arc<str>>,
    },
    /// Refuse it.
    Deny(DenyReason),
}

/// Where an allowed connection goes from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Straight to the original destination, from the client's address: same host, outside
    /// the mesh, or a local workload at the end of the tunnel.
    Direct,
    /// Through the tunnel to the destination's node.
    Tunnel(PoolKey),
}

/// The plan for a connection or a request: what [`plan()`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Allow or deny, and why.
    pub(crate) verdict: Verdict,
    /// Rules with L7 conditions apply: each HTTP request (or the TLS handshake, or the
    /// opaque stream) is decided again by the last node on the path.
    pub(crate) needs_l7: bool,
    /// Monitor rules that matched on the way.
    pub(crate) monitored: Vec<MonitorHit>,
    /// Where the allowed bytes go.
    pub(crate) route: Route,
    /// A refusal made before the policy was asked, in words (for tunnel answers and records).
    pub(crate) why: Option<String>,
}

impl Plan {
    /// A refusal before the policy was asked.
    pub(crate) fn refuse(reason: DenyReason, why: Option<String>) -> Plan {
        Plan {
            verdict: Verdict::Deny(reason),
            needs_l7: false,
            monitored: Vec::new(),
            route: Route::Direct,
            why,
        }
    }

    /// Whether the connection may go on (allowed, or pending L7 decisions that may allow).
    pub(crate) fn allows(&self) -> bool {
        matches!(self.verdict, Verdict::Allow { .. })
    }

    /// Why it is refused, if it is.
    pub(crate) fn denial(&self) -> Option<&DenyReason> {
        match &self.verdict {
            Verdict::Deny(r) => Some(r),
            Verdict::Allow { .. } => None,
        }
    }

    /// The deciding rule's id, or the reason's code.
    pub(crate) fn rule_code(&self) -> &str {
        match &self.verdict {
            Verdict::Allow { rule, .. } => &rule.id,
            Verdict::Deny(r) => r.code(),
        }
    }

    /// The IDS profile that inspects an allowed connection.
    pub(crate) fn ids_profile(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Allow { ids, .. } => ids.as_deref(),
            Verdict::Deny(_) => None,
        }
    }

    /// Whether this node decides per request (handshake, stream) before carrying: L7 rules
    /// apply and it is the last node on the path.
    pub(crate) fn inspects_here(&self) -> bool {
        self.allows() && self.needs_l7 && self.route == Route::Direct
    }

    /// The words of a refusal, for the other side (a tunnel answer).
    pub(crate) fn refusal_words(&self) -> String {
        match (&self.why, self.denial()) {
            (Some(why), _) => why.clone(),
            (None, Some(r)) => format!("denied by rule {}", r.code()),
            (None, None) => String::new(),
        }
    }
}

/// Which hop could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// The server (the original destination, or the local workload).
    Server,
    /// The tunnel to the destination's node.
    Tunnel,
}

/// How a carried connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Both sides closed.
    Closed,
    /// A side failed; both were reset.
    Failed(String),
    /// A newer policy denies it: the rule (both sides were reset).
    Revoked(String),
    /// The IPS stopped it: the signature (both sides were reset).
    Blocked {
        /// Signature id.
        sid: u32,
        /// The rule's message.
        msg: String,
    },
}

/// How a connection's life ended: what its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// This node refused it.
    Refused(DenyReason),
    /// The destination node refused it (its answer is in the record's tunnel part).
    RefusedByDestination,
    /// Allowed, but the next hop could not be reached.
    Unreachable {
        /// Which one.
        hop: Hop,
        /// What went wrong.
        error: String,
    },
    /// Allowed and carried until it ended.
    Ended(Ending),
    /// Dropped: by capture before a listener saw it, or by this node's decision on a
    /// protocol it does not proxy.
    Dropped(DenyReason),
    /// Allowed; the kernel carries its packets (protocols other than TCP and UDP).
    Passed,
}

impl Outcome {
    /// EVE's `flow.state` and `flow.reason`: the one place they are chosen.
    pub(crate) fn eve(&self) -> (FlowState, FlowReason) {
        match self {
            Outcome::Refused(r) => (FlowState::Rejected, r.flow_reason()),
            Outcome::RefusedByDestination => (FlowState::Rejected, FlowReason::DeniedByDestination),
            Outcome::Unreachable {
                hop: Hop::Server, ..
            } => (FlowState::Failed, FlowReason::UpstreamError),
            Outcome::Unreachable {
                hop: Hop::Tunnel, ..
            } => (FlowState::Failed, FlowReason::TunnelError),
            Outcome::Ended(Ending::Closed) => (FlowState::Closed, FlowReason::Shutdown),
            Outcome::Ended(Ending::Failed(_)) => (FlowState::Closed, FlowReason::Error),
            Outcome::Ended(Ending::Revoked(_)) => (FlowState::Closed, FlowReason::Revoked),
            Outcome::Ended(Ending::Blocked { .. }) => (FlowState::Closed, FlowReason::IdsBlocked),
            Outcome::Dropped(r) => (FlowState::Dropped, r.flow_reason()),
            Outcome::Passed => (FlowState::Bypassed, FlowReason::Forwarded),
        }
    }

    /// Whether this node refused the connection (metrics count it as denied).
    pub(crate) fn refused_here(&self) -> bool {
        matches!(self, Outcome::Refused(_) | Outcome::Dropped(_))
    }

    /// The error to record, if the outcome carries one.
    pub(crate) fn error(&self) -> Option<String> {
        match self {
            Outcome::Unreachable { error, .. } | Outcome::Ended(Ending::Failed(error)) => {
                Some(error.clone())
            }
            Outcome::Ended(Ending::Blocked { sid, msg }) => {
                Some(format!("blocked by IDS signature {sid}: {msg}"))
            }
            _ => None,
        }
    }
}

/// Everything a connection's life needs from its node, by concern; entry points, the L7
/// layer and the re-check of live connections share one.
pub(crate) struct Pipeline {
    /// This node's facts.
    pub(crate) here: Here,
    /// The registry and policy in force (hot reload swaps them; a decision takes a snapshot).
    pub(crate) rules: ArcSwap<Rules>,
    /// Where users' groups come from, if anywhere.
    pub(crate) directory: Option<Directory>,
    /// Connecting, inspecting and relaying.
    pub(crate) carrier: Carrier,
    /// Metrics and the EVE log.
    pub(crate) telemetry: Arc<Telemetry>,
    /// L7 inspection settings.
    pub(crate) l7: L7Spec,
    /// UDP session settings.
    pub(crate) udp: UdpSpec,
    /// Connections carried at once, per workload and in all.
    pub(crate) budgets: Arc<Budgets>,
}

impl Pipeline {
    /// The registry and policy in force now.
    pub(crate) fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// The IDS engines in force now.
    pub(crate) fn ids(&self) -> Option<Arc<IdsEngines>> {
        self.carrier.ids.load_full()
    }

    /// Puts `rules` in force for every decision from now on; returns the rules they replace
    /// (for the caller to drop off the async workers: a large policy takes a while to free).
    pub(crate) fn replace_rules(&self, rules: Rules) -> Arc<Rules> {
        show_in_force(&self.telemetry.metrics, &rules);
        self.rules.swap(Arc::new(rules))
    }

    /// Fills in the groups of both ends' users (from the directory; unknown without one, and
    /// then `group` rules cannot match).
    pub(crate) async fn fill_groups(&self, ends: &mut Ends) {
        ends.src.groups = self.groups_of(ends.src.user()).await;
        ends.dst.groups = self.groups_of(ends.dst.user()).await;
    }

    async fn groups_of(&self, user: Option<&str>) -> Option<Vec<String>> {
        match (user, &self.directory) {
            // Boxed: a directory lookup's state is large, and without it every connection's
            // task would keep room for one while it relays (`front::capture` tests).
            (Some(u), Some(d)) => Box::pin(d.groups(u)).await,
            _ => None,
        }
    }

    /// A slot in the connection budgets for the allowed connection between `ends`, or the
    /// refusal to record (the decision is recorded as this refusal, not the rule's allow).
    pub(crate) fn room_for(&self, ends: &Ends, guard: &mut FlowGuard) -> Result<Slot, DenyReason> {
        let holder = match self.rules().registry.workload_by_addr(ends.src.addr.ip()) {
            Some(w) => Holder::Workload(w.name.as_str().into()),
            None => Holder::Address(ends.src.addr.ip()),
        };
        self.budgets.take(holder).map_err(|shortage| {
            let reason = DenyReason::Exhausted(shortage);
            let short = match shortage {
                Shortage::WorkloadBudget => format!(
                    "the source workload holds its whole budget of {} connections",
                    self.budgets.limits().per_workload
                ),
                Shortage::Descriptors => format!(
                    "the node holds its whole budget of {} connections (out of file descriptors)",
                    self.budgets.limits().node
                ),
                Shortage::Stopping => "the node is stopping".to_owned(),
            };
            // The record's decision becomes the refusal: say which rule allowed it.
            let words = format!("allowed by rule {}, but {short}", guard.policy.rule);
            guard.decided(&Plan::refuse(reason.clone(), Some(words.clone())));
            guard.error = Some(words);
            reason
        })
    }

    /// Plans with the rules in force, counting the monitor rules that matched.
    pub(crate) fn plan(&self, ends: &Ends, l7: eastwall_policy::L7<'_>) -> Plan {
        let started = std::time::Instant::now();
        let p = plan(&self.rules(), &self.here, ends, l7);
        self.telemetry
            .metrics
            .decision_seconds
            .get_or_create(&DirLabels {
                direction: ends.direction().as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        record::count_monitored(&self.telemetry, ends.direction(), &p);
        p
    }
}

/// Shows `rules` in the metrics as the rules in force from now.
pub(crate) fn show_in_force(metrics: &crate::telemetry::metrics::Metrics, rules: &Rules) {
    let labels = match &rules.stored {
        Some(v) => PolicyLabels {
            source: "store",
            version: v.version.to_string(),
            hash: v.hash.clone(),
        },
        None => PolicyLabels {
            source: "files",
            version: String::new(),
            hash: rules.files_hash.clone(),
        },
    };
    metrics.policy_in_force(rules.policy.rule_count(), labels);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_eve_state_and_reason() {
        let server = |hop| Outcome::Unreachable {
            hop,
            error: "refused".into(),
        };
        let blocked = Outcome::Ended(Ending::Blocked {
            sid: 7,
            msg: "x".into(),
        });
        let table = [
            (
                Outcome::Refused(DenyReason::DefaultDeny),
                FlowState::Rejected,
                FlowReason::Denied,
                true,
            ),
            (
                Outcome::Refused(DenyReason::BadTunnelHeader),
                FlowState::Rejected,
                FlowReason::BadTunnelHeader,
                true,
            ),
            (
                Outcome::Refused(DenyReason::TunnelHandshakeRefused),
                FlowState::Rejected,
                FlowReason::TunnelHandshakeRefused,
                true,
            ),
            (
                Outcome::RefusedByDestination,
                FlowState::Rejected,
                FlowReason::DeniedByDestination,
                false,
            ),
            (
                server(Hop::Server),
                FlowState::Failed,
                FlowReason::UpstreamError,
                false,
            ),
            (
                server(Hop::Tunnel),
                FlowState::Failed,
                FlowReason::TunnelError,
                false,
            ),
            (
                Outcome::Ended(Ending::Closed),
                FlowState::Closed,
                FlowReason::Shutdown,
                false,
            ),
            (
                Outcome::Ended(Ending::Failed("reset".into())),
                FlowState::Closed,
                FlowReason::Error,
                false,
            ),
            (
                Outcome::Ended(Ending::Revoked("r".into())),
                FlowState::Closed,
                FlowReason::Revoked,
                false,
            ),
            (
                blocked.clone(),
                FlowState::Closed,
                FlowReason::IdsBlocked,
                false,
            ),
            (
                Outcome::Dropped(DenyReason::SpoofedSource),
                FlowState::Dropped,
                FlowReason::SpoofedSource,
                true,
            ),
            (
                Outcome::Dropped(DenyReason::DefaultDeny),
                FlowState::Dropped,
                FlowReason::Denied,
                true,
            ),
            (
                Outcome::Passed,
                FlowState::Bypassed,
                FlowReason::Forwarded,
                false,
            ),
        ];
        for (outcome, state, reason, here) in table {
            assert_eq!(outcome.eve(), (state, reason), "{outcome:?}");
            assert_eq!(outcome.refused_here(), here, "{outcome:?}");
        }
        assert_eq!(
            blocked.error().as_deref(),
            Some("blocked by IDS signature 7: x")
        );
        assert_eq!(server(Hop::Server).error().as_deref(), Some("refused"));
        assert_eq!(Outcome::Ended(Ending::Revoked("r".into())).error(), None);
    }
}
