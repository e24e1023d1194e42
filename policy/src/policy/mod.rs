//! The policy file (`kind: Policy`), its compiled form, and `decide`.

mod compile;
mod format;
mod index;
mod selector;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use eastwall_identity::SpiffeId;

use crate::diag::{Diagnostics, Sink};
use crate::registry::{Registry, Workload};
use crate::yaml::{self, DocumentKind};

use self::index::PortIndex;
use self::selector::Selector;

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

/// A TCP connection to decide on.
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    /// The side that connects.
    pub src: Endpoint<'a>,
    /// The side connected to.
    pub dst: Endpoint<'a>,
    /// Destination TCP port.
    pub dst_port: u16,
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
    /// Allow or deny.
    pub action: Action,
    /// The enforce rule that decided; `None` means default deny.
    pub rule: Option<RuleRef>,
    /// Monitor rules that matched before the deciding rule, in evaluation order.
    pub monitored: Vec<MonitorHit>,
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
    pub(crate) action: Action,
    pub(crate) mode: Mode,
    pub(crate) from: Selector,
    pub(crate) to: Selector,
    /// Sorted, non-overlapping inclusive ranges; `None` = every port.
    pub(crate) ports: Option<Box<[(u16, u16)]>>,
    /// Whether `from` or `to` uses `group` (such a rule is skipped while groups are unknown).
    pub(crate) uses_groups: bool,
}

impl Rule {
    fn port_matches(&self, port: u16) -> bool {
        self.ports
            .as_ref()
            .is_none_or(|r| r.iter().any(|&(lo, hi)| lo <= port && port <= hi))
    }
}

/// A validated, compiled policy: ordered rules, default deny.
#[derive(Clone, Debug)]
pub struct Policy {
    name: Option<String>,
    sections: usize,
    rules: Box<[Rule]>,
    /// `None` when the policy is too irregular to index; `decide` then scans.
    index: Option<PortIndex>,
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
        let warnings = sink.finish()?;
        Ok((Policy::from_rules(c.name, c.sections, c.rules), warnings))
    }

    /// A policy with no rules: every flow is denied.
    pub fn deny_all() -> Policy {
        Policy::from_rules(None, 0, Vec::new())
    }

    fn from_rules(name: Option<String>, sections: usize, rules: Vec<Rule>) -> Policy {
        let index = PortIndex::build(&rules);
        Policy {
            name,
            sections,
            rules: rules.into_boxed_slice(),
            index,
        }
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

    /// Decides on `flow`: the first matching enforce rule in file order decides; matching
    /// monitor rules before it are reported; no match is a default deny.
    pub fn decide(&self, flow: &Flow<'_>) -> Decision {
        match &self.index {
            Some(ix) => self.evaluate(flow, ix.candidates(flow.dst_port)),
            None => self.decide_linear(flow),
        }
    }

    /// `decide` without the port index (the reference the index is tested against).
    fn decide_linear(&self, flow: &Flow<'_>) -> Decision {
        let port = flow.dst_port;
        let candidates = (0..self.rules.len()).filter(|&i| self.rules[i].port_matches(port));
        self.evaluate(flow, candidates)
    }

    /// Evaluates the rules at `candidates` (ascending, port already checked) in order.
    fn evaluate(&self, flow: &Flow<'_>, candidates: impl Iterator<Item = usize>) -> Decision {
        let mut monitored = Vec::new();
        for i in candidates {
            let Some(r) = self.rules.get(i) else { continue };
            if r.uses_groups && (flow.src.groups_unknown() || flow.dst.groups_unknown()) {
                continue;
            }
            if !r.from.matches(&flow.src) || !r.to.matches(&flow.dst) {
                continue;
            }
            match r.mode {
                Mode::Monitor => monitored.push(MonitorHit {
                    rule: r.rref.clone(),
                    action: r.action,
                }),
                Mode::Enforce => {
                    return Decision {
                        action: r.action,
                        rule: Some(r.rref.clone()),
                        monitored,
                    };
                }
            }
        }
        Decision {
            action: Action::Deny,
            rule: None,
            monitored,
        }
    }
}

#[cfg(test)]
mod tests;
