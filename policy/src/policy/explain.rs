//! `explain`: the decision on a flow with every rule evaluated on the way and why it did or
//! did not match, for `eastwall policy explain` and for people reading flow logs.
//!
//! It runs the very evaluation `decide` runs (with a recording [`Trace`]), over all rules
//! so that port mismatches are reported too; the decision is therefore always `decide`'s.

use std::fmt::{self, Write as _};

use super::l7::{HttpField, L7Outcome, Unevaluable};
use super::selector::{Criterion, NameSet, Selector};
use super::{
    Action, Decision, Endpoint, Flow, L7, Mode, Policy, Protocol, Rule, RuleRef, Side, Trace,
};

/// The decision on a flow and how it was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The decision, identical to [`Policy::decide`]'s.
    pub decision: Decision,
    /// Every rule evaluated, in order, up to the deciding one.
    pub steps: Vec<Step>,
}

/// One rule as evaluated for an [`Explanation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The rule.
    pub rule: RuleRef,
    /// Its action.
    pub action: Action,
    /// Its mode.
    pub mode: Mode,
    /// What came of it.
    pub outcome: StepOutcome,
}

/// What came of evaluating one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The rule did not match; the reason names the first criterion that failed.
    NoMatch(String),
    /// The rule was not evaluated (it uses `group` and a user's groups are unknown).
    Skipped(String),
    /// Connection time: an allow rule whose L7 conditions are checked on each request or
    /// handshake later.
    Pending(String),
    /// The rule matched: a monitor rule records what it would do, an enforce rule decides.
    /// The note says why, when that is not obvious (fail closed, connection time).
    Matched(Option<String>),
}

pub(super) fn explain(policy: &Policy, flow: &Flow<'_>) -> Explanation {
    let mut rec = Recorder {
        flow,
        steps: Vec::new(),
        note: None,
    };
    let decision = policy.evaluate(flow, 0..policy.rules.len(), &mut rec);
    Explanation {
        decision,
        steps: rec.steps,
    }
}

struct Recorder<'f, 'a> {
    flow: &'f Flow<'a>,
    steps: Vec<Step>,
    /// A note from the L7 outcome for the `matched` call that follows it.
    note: Option<String>,
}

impl Recorder<'_, '_> {
    fn push(&mut self, r: &Rule, outcome: StepOutcome) {
        self.steps.push(Step {
            rule: r.rref.clone(),
            action: r.action,
            mode: r.mode,
            outcome,
        });
    }
}

impl Trace for Recorder<'_, '_> {
    const CHECKS_PORTS: bool = true;

    fn port_mismatch(&mut self, r: &Rule) {
        let listed = r
            .ports
            .as_deref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let f = self.flow;
        let what = match f.proto {
            Protocol::Tcp => format!("port {}", f.dst_port),
            Protocol::Udp | Protocol::Sctp => format!("{} port {}", f.proto, f.dst_port),
            Protocol::Icmp { kind, code } | Protocol::Icmpv6 { kind, code } => {
                format!("{} type {kind} code {code}", f.proto)
            }
            Protocol::Other(n) => format!("protocol {n}"),
        };
        self.push(
            r,
            StepOutcome::NoMatch(format!("{what} is not in [{listed}]")),
        );
    }

    fn groups_unknown(&mut self, r: &Rule) {
        let unknown = [&self.flow.src, &self.flow.dst]
            .into_iter()
            .filter(|ep| ep.groups_unknown())
            .filter_map(|ep| ep.user)
            .map(|u| format!("`{u}`"))
            .collect::<Vec<_>>()
            .join(" and ");
        let reason = format!(
            "the groups of user {unknown} are unknown and the rule uses `group` (fail closed)"
        );
        self.push(r, StepOutcome::Skipped(reason));
    }

    fn selector_mismatch(&mut self, r: &Rule, side: Side, c: Criterion) {
        let (sel, ep) = match side {
            Side::From => (&r.from, &self.flow.src),
            Side::To => (&r.to, &self.flow.dst),
        };
        let reason = format!("{}: {}", side.as_str(), criterion_reason(sel, ep, c));
        self.push(r, StepOutcome::NoMatch(reason));
    }

    fn l7_outcome(&mut self, r: &Rule, outcome: L7Outcome) {
        let allow = r.action == Action::Allow;
        match outcome {
            L7Outcome::Match => self.note = None,
            L7Outcome::NoMatch => {
                let reason = format!("to: {}", l7_mismatch(r, &self.flow.l7));
                self.push(r, StepOutcome::NoMatch(reason));
            }
            L7Outcome::Unevaluable(u) if allow => {
                let reason = format!(
                    "to: {}; an allow rule with L7 conditions does not match it",
                    unevaluable(u)
                );
                self.push(r, StepOutcome::NoMatch(reason));
            }
            L7Outcome::Unevaluable(u) => {
                self.note = Some(format!(
                    "{}; a deny rule with L7 conditions matches it (fail closed)",
                    unevaluable(u)
                ));
            }
            L7Outcome::Pending if allow => self.push(
                r,
                StepOutcome::Pending(
                    "connection time: its L7 conditions are checked on each HTTP request, TLS handshake or DNS query"
                        .to_owned(),
                ),
            ),
            L7Outcome::Pending => {
                self.note = Some(
                    "connection time: it denies opaque traffic (fail closed); HTTP requests, TLS handshakes and DNS queries are checked against its L7 conditions"
                        .to_owned(),
                );
            }
        }
    }

    fn matched(&mut self, r: &Rule) {
        let note = self.note.take();
        self.push(r, StepOutcome::Matched(note));
    }

    fn matched_beyond(&mut self, r: &Rule) {
        let mut note = String::from(
            "connection time: reached by requests or handshakes that the L7 rules above let pass",
        );
        if let Some(n) = self.note.take() {
            let _ = write!(note, "; {n}");
        }
        self.push(r, StepOutcome::Matched(Some(note)));
    }
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.into_iter().collect();
    format!("[{}]", v.join(", "))
}

fn names(set: Option<&NameSet>) -> String {
    list(set.into_iter().flat_map(NameSet::iter))
}

/// Why `ep` fails criterion `c` of `sel`.
fn criterion_reason(sel: &Selector, ep: &Endpoint<'_>, c: Criterion) -> String {
    let no_workload = || format!("{} is no registry workload", ep.addr);
    let attr = |what: &str, have: Option<&str>, want: Option<&NameSet>| match (ep.workload, have) {
        (None, _) => format!(
            "{}, the rule wants {what} one of {}",
            no_workload(),
            names(want)
        ),
        (Some(w), None) => format!(
            "workload `{}` has no {what}, the rule wants one of {}",
            w.name,
            names(want)
        ),
        (Some(_), Some(v)) => format!("{what} is `{v}`, the rule wants one of {}", names(want)),
    };
    match c {
        Criterion::Workload => attr(
            "workload",
            ep.workload.map(|w| w.name.as_str()),
            sel.workload.as_ref(),
        ),
        Criterion::App => attr(
            "app",
            ep.workload.and_then(|w| w.app.as_deref()),
            sel.app.as_ref(),
        ),
        Criterion::Zone => attr(
            "zone",
            ep.workload.and_then(|w| w.zone.as_deref()),
            sel.zone.as_ref(),
        ),
        Criterion::Label(i) => {
            let (k, v) = sel.labels.get(i).map_or(("", ""), |(k, v)| (&**k, &**v));
            match ep.workload {
                None => format!("{}, the rule wants label `{k}: {v}`", no_workload()),
                Some(w) => match w.labels.get(k) {
                    None => format!(
                        "workload `{}` has no label `{k}`, the rule wants `{v}`",
                        w.name
                    ),
                    Some(have) => format!("label `{k}` is `{have}`, the rule wants `{v}`"),
                },
            }
        }
        Criterion::Cidr => {
            let nets: Vec<String> = sel.cidr.iter().flatten().map(ToString::to_string).collect();
            format!(
                "address {} is not in {}",
                ep.addr.to_canonical(),
                list(nets.iter().map(String::as_str))
            )
        }
        Criterion::Spiffe => match ep.identity {
            None => format!(
                "no proven identity, the rule wants spiffe one of {}",
                names(sel.spiffe.as_ref())
            ),
            Some(id) => format!(
                "identity `{id}` is not one of {}",
                names(sel.spiffe.as_ref())
            ),
        },
        Criterion::SpiffePrefix => {
            let prefixes = list(sel.spiffe_prefix.iter().flatten().map(|p| &**p));
            match ep.identity {
                None => {
                    format!("no proven identity, the rule wants spiffePrefix one of {prefixes}")
                }
                Some(id) => format!("identity `{id}` starts with none of {prefixes}"),
            }
        }
        Criterion::User => match ep.user {
            None => format!(
                "no user, the rule wants user one of {}",
                names(sel.user.as_ref())
            ),
            Some(u) => format!("user `{u}` is not one of {}", names(sel.user.as_ref())),
        },
        Criterion::Group => match (ep.user, ep.groups) {
            (None, _) => format!(
                "no user, the rule wants group one of {}",
                names(sel.group.as_ref())
            ),
            (Some(u), None) => format!("the groups of user `{u}` are unknown"),
            (Some(u), Some(gs)) => format!(
                "user `{u}` is in groups {}, none of {}",
                list(gs.iter().map(String::as_str)),
                names(sel.group.as_ref())
            ),
        },
        Criterion::Not => "it matches the rule's `not` selector".to_owned(),
    }
}

fn unevaluable(u: Unevaluable) -> &'static str {
    match u {
        Unevaluable::Opaque => "opaque bytes cannot carry the rule's L7 conditions",
        Unevaluable::NoTlsCondition => {
            "TLS traffic cannot be checked against the rule's conditions (it has no `tls`)"
        }
        Unevaluable::NoHttpCondition => {
            "plain HTTP cannot be checked against the rule's conditions (it has no `http`)"
        }
        Unevaluable::NoDnsCondition => {
            "a DNS query cannot be checked against the rule's conditions (it has no `dns`)"
        }
        Unevaluable::NoSni => "the TLS ClientHello has no SNI to check against `tls.sni`",
    }
}

/// Why the L7 facts fail the rule's conditions (the outcome was `NoMatch`).
fn l7_mismatch(r: &Rule, l7: &L7<'_>) -> String {
    let Some(c) = &r.l7 else {
        return "no L7 conditions".to_owned();
    };
    match *l7 {
        L7::Tls { sni } => {
            let pats: Vec<String> = c
                .tls
                .iter()
                .flat_map(|t| t.sni.iter().flatten())
                .map(|p| p.as_str())
                .collect();
            format!(
                "SNI `{}` matches no `tls.sni` pattern {}",
                sni.unwrap_or(""),
                list(pats.iter().map(String::as_str))
            )
        }
        L7::Dns { name } => {
            let pats: Vec<String> = c
                .dns
                .iter()
                .flat_map(|d| d.names.iter().flatten())
                .map(|p| p.as_str())
                .collect();
            format!(
                "query name `{name}` matches no `dns.names` pattern {}",
                list(pats.iter().map(String::as_str))
            )
        }
        L7::Http(req) => {
            let deny = r.action == Action::Deny;
            let entries = c.http.as_deref().unwrap_or(&[]);
            let mut out = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                let n = i + 1;
                let why = match e.first_mismatch(req, deny) {
                    None => continue,
                    Some(HttpField::Method) => {
                        let want = list(e.methods.iter().flatten().map(|m| &**m));
                        format!(
                            "method `{}` is not one of {want} of http entry {n}",
                            req.method
                        )
                    }
                    Some(HttpField::Path) => {
                        format!(
                            "path `{}` matches no `paths` pattern of http entry {n}",
                            req.path
                        )
                    }
                    Some(HttpField::Host) => match req.host {
                        None => format!(
                            "the request has no host, which `hosts` of http entry {n} needs"
                        ),
                        Some(h) => {
                            format!("host `{h}` matches no `hosts` pattern of http entry {n}")
                        }
                    },
                    Some(HttpField::Header(j)) => {
                        let (name, pattern) = match e.headers.get(j) {
                            Some((name, p)) => (name.as_str(), &*p.0),
                            None => ("", ""),
                        };
                        if req.headers.contains_key(name) {
                            format!(
                                "header `{name}` has no value matching `{pattern}` of http entry {n}"
                            )
                        } else {
                            format!(
                                "header `{name}` is missing, which http entry {n} wants as `{pattern}`"
                            )
                        }
                    }
                };
                out.push(why);
            }
            out.join("; ")
        }
        L7::Unknown | L7::Opaque => "the L7 conditions do not hold".to_owned(),
    }
}

fn rule_name(r: &RuleRef) -> String {
    format!("`{}` (section {})", r.id, r.section)
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.decision;
        match (d.needs_l7, d.action, &d.rule) {
            (false, a, Some(r)) => write!(f, "verdict: {a} by rule {}", rule_name(r))?,
            (false, _, None) => {
                f.write_str("verdict: deny by default (no enforce rule matched)")?
            }
            (true, Action::Allow, r) => {
                f.write_str(
                    "verdict: depends on the protocol and the requests: the node inspects the traffic and decides each HTTP request, TLS handshake or DNS query",
                )?;
                if let Some(r) = r {
                    write!(f, "; rule {} may allow", rule_name(r))?;
                }
            }
            (true, Action::Deny, r) => {
                f.write_str(
                    "verdict: deny for every protocol and request; opaque traffic is denied ",
                )?;
                match r {
                    Some(r) => write!(f, "by rule {}", rule_name(r))?,
                    None => f.write_str("by default")?,
                }
            }
        }
        if let Some(ids) = &d.ids {
            write!(f, "\nIDS profile: {ids}")?;
        }
        for m in &d.monitored {
            write!(
                f,
                "\nmonitor: rule {} would {}",
                rule_name(&m.rule),
                m.action
            )?;
        }
        if self.steps.is_empty() {
            return f.write_str("\nno rules were evaluated");
        }
        f.write_str("\nrules in order:")?;
        for (i, s) in self.steps.iter().enumerate() {
            let mode = match s.mode {
                Mode::Monitor => ", monitor",
                Mode::Enforce => "",
            };
            write!(
                f,
                "\n  {}. {}/{} ({}{mode}): ",
                i + 1,
                s.rule.section,
                s.rule.id,
                s.action
            )?;
            match &s.outcome {
                StepOutcome::NoMatch(why) => write!(f, "no match: {why}")?,
                StepOutcome::Skipped(why) => write!(f, "skipped: {why}")?,
                StepOutcome::Pending(why) => write!(f, "pending: {why}")?,
                StepOutcome::Matched(note) => {
                    match s.mode {
                        Mode::Monitor => write!(f, "monitor: would {}", s.action)?,
                        Mode::Enforce => f.write_str("match")?,
                    }
                    if let Some(n) = note {
                        write!(f, " ({n})")?;
                    }
                }
            }
        }
        Ok(())
    }
}
