//! The policy file (`kind: Policy`), its compiled form, and `decide`.

mod check;
mod compile;
mod compile_l7;
mod explain;
mod format;
mod ids;
mod index;
mod l7;
mod pattern;
mod selector;
mod transport;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use eastwall_identity::SpiffeId;

use crate::diag::{Diagnostics, Pos, Sink};
use crate::registry::{Registry, Workload};
use crate::yaml::{self, DocumentKind};

use self::index::ProtoIndex;
use self::l7::{L7Conditions, L7Outcome};
use self::selector::{Criterion, Selector};
use self::transport::Transports;

pub use self::explain::{Explanation, Step, StepOutcome};
pub use self::ids::{IdsMode, IdsProfile};
pub use self::l7::{HttpRequestFacts, L7};
pub use self::transport::Protocol;

/// What a rule does with a flow it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the connection through.
    Allow,
    /// Refuse the connection.
    Deny,
}

impl Action {
    /// `allow` or `deny`, as written in policy files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a rule decides (`enforce`) or only records what it would do (`monitor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The first matching enforce rule decides.
    #[default]
    Enforce,
    /// A matching monitor rule is recorded and evaluation continues.
    Monitor,
}

impl Mode {
    /// `enforce` or `monitor`, as written in policy files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names a rule: its id and the section it is in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// Rule id, unique in the policy.
    pub id: Arc<str>,
    /// Name of the section holding the rule.
    pub section: Arc<str>,
}

/// One rule as listed by [`Policy::rules`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSummary {
    /// Its id and section.
    pub rule: RuleRef,
    /// Allow or deny.
    pub action: Action,
    /// Enforce or monitor.
    pub mode: Mode,
    /// The line of its id in the file.
    pub line: u32,
    /// The protocols and ports it matches (`None`: every one).
    pub ports: Option<String>,
    /// Whether it has `http`, `tls` or `dns` conditions.
    pub l7: bool,
}

/// One side of a connection: its address, its workload if the registry knows the address,
/// and its identity if the node has proven it.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    /// IP address of this side.
    pub addr: IpAddr,
    /// The registry workload with that address, if any.
    pub workload: Option<&'a Workload>,
    /// The SPIFFE ID this side has *proven* (from a verified certificate), if any. Never
    /// fill it from the registry's identity for the address: `spiffe` and `spiffePrefix`
    /// criteria match only this field, and do not match when it is `None`.
    pub identity: Option<&'a SpiffeId>,
    /// The user this side acts for (a workload bound to a user, or a local process's owner).
    pub user: Option<&'a str>,
    /// The user's directory groups: `None` when there is no user or when they are unknown
    /// (the directory could not answer within its grace period). A rule that uses `group`
    /// anywhere never matches an endpoint whose user's groups are unknown (fail closed).
    pub groups: Option<&'a [String]>,
}

impl<'a> Endpoint<'a> {
    /// The endpoint at `addr`, with its workload looked up in `registry` and no proven
    /// identity (set [`Endpoint::identity`], e.g. with [`Endpoint::with_identity`], when the
    /// node has one).
    pub fn lookup(registry: &'a Registry, addr: IpAddr) -> Endpoint<'a> {
        Endpoint {
            addr,
            workload: registry.workload_by_addr(addr),
            identity: None,
            user: None,
            groups: None,
        }
    }

    /// This endpoint with `identity` as its proven identity.
    pub fn with_identity(self, identity: Option<&'a SpiffeId>) -> Endpoint<'a> {
        Endpoint { identity, ..self }
    }

    /// This endpoint acting for `user` with `groups` (`None`: unknown).
    pub fn with_user(self, user: Option<&'a str>, groups: Option<&'a [String]>) -> Endpoint<'a> {
        Endpoint {
            user,
            groups,
            ..self
        }
    }

    /// Whether this side has a user whose groups are unknown.
    fn groups_unknown(&self) -> bool {
        self.user.is_some() && self.groups.is_none()
    }
}

/// A connection (a TCP connection, a UDP session, an ICMP exchange, a flow of another IP
/// protocol), or one request or handshake on it, to decide on.
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    /// The side that connects.
    pub src: Endpoint<'a>,
    /// The side connected to.
    pub dst: Endpoint<'a>,
    /// The IP protocol (TCP unless set).
    pub proto: Protocol,
    /// Destination port (TCP, UDP, SCTP; 0 for protocols without ports).
    pub dst_port: u16,
    /// What is known of the application protocol: [`L7::Unknown`] at connection time.
    pub l7: L7<'a>,
}

impl<'a> Flow<'a> {
    /// A TCP connection from `src` to `dst` on `dst_port`, at connection time.
    pub fn new(src: Endpoint<'a>, dst: Endpoint<'a>, dst_port: u16) -> Flow<'a> {
        Flow {
            src,
            dst,
            proto: Protocol::Tcp,
            dst_port,
            l7: L7::Unknown,
        }
    }

    /// The same flow over `proto` (its port stays; it is 0 for protocols without ports).
    pub fn with_protocol(self, proto: Protocol) -> Flow<'a> {
        let dst_port = if proto.has_ports() { self.dst_port } else { 0 };
        Flow {
            proto,
            dst_port,
            ..self
        }
    }

    /// The same connection with what is now known of its protocol (a request, a handshake).
    pub fn with_l7(self, l7: L7<'a>) -> Flow<'a> {
        Flow { l7, ..self }
    }
}

/// A monitor-mode rule that matched: what it would have done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorHit {
    /// The monitor rule.
    pub rule: RuleRef,
    /// What it would have done if enforced.
    pub action: Action,
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny. With [`Decision::needs_l7`]: whether anything could be allowed.
    pub action: Action,
    /// The enforce rule that decided; `None` means default deny. With
    /// [`Decision::needs_l7`]: for `Allow` the first rule that may allow, for `Deny` the
    /// rule opaque traffic hits.
    pub rule: Option<RuleRef>,
    /// Monitor rules that matched before the deciding rule, in evaluation order (at
    /// connection time with `needs_l7`: those opaque traffic would hit).
    pub monitored: Vec<MonitorHit>,
    /// The IDS profile of the deciding allow rule (none while `needs_l7`).
    pub ids: Option<Arc<str>>,
    /// Only at connection time ([`L7::Unknown`]): a rule with L7 conditions matched before
    /// the deciding rule, so the outcome depends on the protocol and the requests. With
    /// `Allow` the node must inspect and decide again per HTTP request, TLS handshake, or
    /// once as opaque; with `Deny` every outcome is a deny and it may refuse at once.
    pub needs_l7: bool,
}

impl Decision {
    /// The deciding rule's id, or `default-deny` when no enforce rule matched.
    pub fn rule_id(&self) -> &str {
        self.rule.as_ref().map_or("default-deny", |r| &r.id)
    }

    /// Whether the flow is allowed.
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) rref: RuleRef,
    /// Where its id is written, for messages.
    pub(crate) pos: Pos,
    pub(crate) action: Action,
    pub(crate) mode: Mode,
    pub(crate) from: Selector,
    pub(crate) to: Selector,
    /// The protocols and ports it matches; `None` = every protocol and port.
    pub(crate) ports: Option<Box<Transports>>,
    /// Whether `from` or `to` uses `group` (such a rule is skipped while groups are unknown).
    pub(crate) uses_groups: bool,
    /// The `http`/`tls` conditions of `to`, if any.
    pub(crate) l7: Option<Box<L7Conditions>>,
    /// The IDS profile for what the rule allows.
    pub(crate) ids: Option<Arc<str>>,
}

impl Rule {
    fn transport_matches(&self, proto: Protocol, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|t| t.matches(proto, port))
    }
}

/// Which side of a flow a selector is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    From,
    To,
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::From => "from",
            Side::To => "to",
        }
    }
}

/// What `evaluate` reports as it goes: nothing for `decide`, every step for `explain`.
pub(crate) trait Trace {
    /// Whether `evaluate` checks ports itself (all rules are candidates) and reports misses.
    const CHECKS_PORTS: bool = false;
    /// The rule's ports do not include the flow's.
    fn port_mismatch(&mut self, _rule: &Rule) {}
    /// The rule uses `group` and a user's groups are unknown.
    fn groups_unknown(&mut self, _rule: &Rule) {}
    /// A selector criterion failed.
    fn selector_mismatch(&mut self, _rule: &Rule, _side: Side, _c: Criterion) {}
    /// The L4 part matched; this is what the L7 part gave (rules with L7 conditions only).
    fn l7_outcome(&mut self, _rule: &Rule, _outcome: L7Outcome) {}
    /// The rule matched (monitor: recorded; enforce: decides, or at connection time
    /// decides for opaque traffic).
    fn matched(&mut self, _rule: &Rule) {}
    /// Connection time, past the rule deciding for opaque traffic: the rule matches too
    /// and shows whether some protocol could be allowed.
    fn matched_beyond(&mut self, _rule: &Rule) {}
}

impl Trace for () {}

/// A validated, compiled policy: ordered rules, default deny.
#[derive(Clone, Debug)]
pub struct Policy {
    name: Option<String>,
    sections: usize,
    rules: Box<[Rule]>,
    /// Rules by protocol and port; `decide` scans what it does not index.
    index: ProtoIndex,
    ids_profiles: Box<[IdsProfile]>,
}

impl Policy {
    /// Parses, validates and compiles a policy file; `file` is used only in messages.
    ///
    /// `registry` is used only for warnings about names it does not declare (none when it
    /// is empty). Returns the policy and its warnings, or every error (and warning) found.
    pub fn parse(
        file: &str,
        text: &str,
        registry: &Registry,
    ) -> Result<(Policy, Diagnostics), Diagnostics> {
        yaml::expect_kind(file, text, DocumentKind::Policy)?;
        let doc = yaml::parse_yaml(file, text)?;
        let mut sink = Sink::new(file);
        let c = compile::compile(&mut sink, doc, registry);
        let mut p = Policy::from_rules(c.name, c.sections, c.rules);
        p.ids_profiles = c.ids_profiles.into_boxed_slice();
        // Rules with errors were left out: dead-rule warnings would mislead.
        if !sink.has_errors() {
            check::check(&mut sink, &p.rules, &p.index, registry);
        }
        let warnings = sink.finish()?;
        Ok((p, warnings))
    }

    /// A policy with no rules: every flow is denied.
    pub fn deny_all() -> Policy {
        Policy::from_rules(None, 0, Vec::new())
    }

    fn from_rules(name: Option<String>, sections: usize, rules: Vec<Rule>) -> Policy {
        let index = ProtoIndex::build(&rules);
        Policy {
            name,
            sections,
            rules: rules.into_boxed_slice(),
            index,
            ids_profiles: Box::default(),
        }
    }

    /// The IDS profiles the file defines (`spec.idsProfiles`), in file order.
    pub fn ids_profiles(&self) -> &[IdsProfile] {
        &self.ids_profiles
    }

    /// Whether any rule has `http` or `tls` conditions (if none, no decision ever has
    /// `needs_l7`).
    pub fn has_l7_rules(&self) -> bool {
        self.rules.iter().any(|r| r.l7.is_some())
    }

    /// `metadata.name` of the file, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Number of rules, both modes.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of sections.
    pub fn section_count(&self) -> usize {
        self.sections
    }

    /// Every rule in file order, as a list shows it (a console, a report).
    pub fn rules(&self) -> impl Iterator<Item = RuleSummary> + '_ {
        self.rules.iter().map(|r| RuleSummary {
            rule: r.rref.clone(),
            action: r.action,
            mode: r.mode,
            line: r.pos.line,
            ports: r.ports.as_ref().map(|t| t.to_string()),
            l7: r.l7.is_some(),
        })
    }

    /// Decides on `flow`: the first matching enforce rule in file order decides; matching
    /// monitor rules before it are reported; no match is a default deny.
    ///
    /// Each call is independent. At connection time (`flow.l7` is [`L7::Unknown`]) a rule
    /// with L7 conditions whose L4 part matches makes the decision provisional
    /// ([`Decision::needs_l7`]); the node then calls again per HTTP request, per TLS
    /// ClientHello, or once with [`L7::Opaque`].
    pub fn decide(&self, flow: &Flow<'_>) -> Decision {
        match self.index.candidates(flow.proto, flow.dst_port) {
            Some(c) => self.evaluate(flow, c, &mut ()),
            None => self.decide_linear(flow),
        }
    }

    /// `decide` without the port index (the reference the index is tested against, and the
    /// way for what it does not index).
    fn decide_linear(&self, flow: &Flow<'_>) -> Decision {
        let (proto, port) = (flow.proto, flow.dst_port);
        let candidates =
            (0..self.rules.len()).filter(|&i| self.rules[i].transport_matches(proto, port));
        self.evaluate(flow, candidates, &mut ())
    }

    /// Evaluates the rules at `candidates` (ascending; ports already checked unless
    /// `T::CHECKS_PORTS`) in order, reporting each step to `trace`.
    fn evaluate<T: Trace>(
        &self,
        flow: &Flow<'_>,
        candidates: impl Iterator<Item = usize>,
        trace: &mut T,
    ) -> Decision {
        let mut monitored = Vec::new();
        // Connection time only: whether a rule with L7 conditions matched the L4 part, the
        // enforce rule that decides for opaque traffic after that, and the first enforce
        // allow rule that some protocol or request could reach.
        let mut pending = false;
        let mut opaque: Option<&Rule> = None;
        let mut may_allow: Option<&Rule> = None;
        let groups_unknown = flow.src.groups_unknown() || flow.dst.groups_unknown();
        for i in candidates {
            let Some(r) = self.rules.get(i) else { continue };
            if T::CHECKS_PORTS && !r.transport_matches(flow.proto, flow.dst_port) {
                trace.port_mismatch(r);
                continue;
            }
            if r.uses_groups && groups_unknown {
                trace.groups_unknown(r);
                continue;
            }
            if let Some(c) = r.from.first_mismatch(&flow.src) {
                trace.selector_mismatch(r, Side::From, c);
                continue;
            }
            if let Some(c) = r.to.first_mismatch(&flow.dst) {
                trace.selector_mismatch(r, Side::To, c);
                continue;
            }
            if let Some(l7) = &r.l7 {
                let outcome = l7.evaluate(&flow.l7, r.action == Action::Deny);
                trace.l7_outcome(r, outcome);
                let matches = match outcome {
                    L7Outcome::Match => true,
                    L7Outcome::NoMatch => false,
                    L7Outcome::Unevaluable(_) => r.action == Action::Deny,
                    L7Outcome::Pending => {
                        pending = true;
                        if r.mode == Mode::Enforce && r.action == Action::Allow {
                            may_allow.get_or_insert(r);
                            if opaque.is_some() {
                                // Both outcomes are known: nothing later changes them.
                                break;
                            }
                        }
                        // As for opaque traffic: an allow rule does not match, a deny does.
                        r.action == Action::Deny
                    }
                };
                if !matches {
                    continue;
                }
            }
            if opaque.is_some() {
                // Connection time, past the opaque decision: looking only for a possible
                // allow, up to the first enforce rule that matches every protocol.
                trace.matched_beyond(r);
                if r.mode == Mode::Enforce && r.l7.is_none() {
                    if r.action == Action::Allow {
                        may_allow.get_or_insert(r);
                    }
                    break;
                }
                continue;
            }
            trace.matched(r);
            match r.mode {
                Mode::Monitor => monitored.push(MonitorHit {
                    rule: r.rref.clone(),
                    action: r.action,
                }),
                Mode::Enforce if !pending => {
                    return Decision {
                        action: r.action,
                        rule: Some(r.rref.clone()),
                        monitored,
                        ids: r.ids.clone(),
                        needs_l7: false,
                    };
                }
                Mode::Enforce => {
                    opaque = Some(r);
                    if r.l7.is_none() {
                        if r.action == Action::Allow {
                            may_allow.get_or_insert(r);
                        }
                        break;
                    }
                    if may_allow.is_some() {
                        break;
                    }
                }
            }
        }
        if !pending {
            return Decision {
                action: Action::Deny,
                rule: None,
                monitored,
                ids: None,
                needs_l7: false,
            };
        }
        let (action, rule) = match may_allow {
            Some(r) => (Action::Allow, Some(r)),
            None => (Action::Deny, opaque),
        };
        Decision {
            action,
            rule: rule.map(|r| r.rref.clone()),
            monitored,
            ids: None,
            needs_l7: true,
        }
    }

    /// Explains the decision on `flow`: every rule in order up to the deciding one, whether
    /// it matched and, if not, the first criterion that failed. Its decision is exactly
    /// [`Policy::decide`]'s.
    pub fn explain(&self, flow: &Flow<'_>) -> Explanation {
        explain::explain(self, flow)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_l7;
