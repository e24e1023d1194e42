//! Warnings about rules that can never match: selectors no registry workload satisfies,
//! `not` excluding everything, and rules shadowed by an earlier enforce rule.
//!
//! Every test here is conservative: a warning is given only when the rule is certainly dead
//! (against the registry given, for the registry-based ones). Coverage is shown criterion by
//! criterion, set inclusion for names, CIDR containment, prefixes, port ranges and L7
//! patterns; when unsure, there is no warning.

use std::net::IpAddr;

use super::index::ProtoIndex;
use super::l7::{DnsCondition, HttpEntry, L7Conditions, TlsCondition};
use super::selector::{NameSet, Selector};
use super::transport::Transports;
use super::{Action, Mode, Protocol, Rule, Side};
use crate::diag::Sink;
use crate::registry::{Registry, Workload};

/// Pairs of rules compared for shadowing at most; beyond that the analysis stops with a
/// warning, so a pathological policy cannot make loading slow.
const MAX_COMPARISONS: u64 = 20_000_000;

/// Adds the never-match and shadowing warnings for `rules` (in file order).
pub(crate) fn check(sink: &mut Sink<'_>, rules: &[Rule], index: &ProtoIndex, reg: &Registry) {
    let mut comparisons: u64 = 0;
    let mut stopped = false;
    for (i, b) in rules.iter().enumerate() {
        if let Some(why) = never_matches(b, reg) {
            sink.warning(
                b.pos,
                format!("rule `{}` can never match: {why}", b.rref.id),
            );
            continue;
        }
        if stopped {
            continue;
        }
        let mut shadow = None;
        let mut each = |a: usize| {
            comparisons += 1;
            rules.get(a).filter(|a| covers(a, b))
        };
        // A covering rule matches every protocol and port of `b`: it is listed in the index
        // of `b`'s first port (rules without `ports`, for `b` without any).
        let indexed = match b.ports.as_deref() {
            None => index.of(Protocol::Tcp).map(|ix| (ix, None)),
            Some(t) => t
                .first_port()
                .and_then(|(proto, lo)| index.of(proto).map(|ix| (ix, Some(lo)))),
        };
        match indexed {
            Some((ix, first)) => {
                let earlier: Box<dyn Iterator<Item = usize>> = match first {
                    Some(lo) => Box::new(ix.candidates(lo)),
                    None => Box::new(ix.any_port()),
                };
                for a in earlier.take_while(|&a| a < i) {
                    if let Some(r) = each(a) {
                        shadow = Some(r);
                        break;
                    }
                }
            }
            None => {
                for a in 0..i {
                    if let Some(r) = each(a) {
                        shadow = Some(r);
                        break;
                    }
                }
            }
        }
        if let Some(a) = shadow {
            sink.warning(
                b.pos,
                format!(
                    "rule `{}` can never match: rule `{}` (at {}) matches every flow it does",
                    b.rref.id, a.rref.id, a.pos
                ),
            );
        }
        if comparisons > MAX_COMPARISONS {
            stopped = true;
            sink.warning(
                b.pos,
                format!(
                    "shadowed-rule analysis stopped here after {comparisons} comparisons; later rules are not checked"
                ),
            );
        }
    }
}

/// Why `r` can never match, if that is certain.
fn never_matches(r: &Rule, reg: &Registry) -> Option<String> {
    for (side, sel) in [(Side::From, &r.from), (Side::To, &r.to)] {
        if let Some(why) = selector_empty(sel, reg) {
            return Some(format!("{}: {why}", side.as_str()));
        }
    }
    None
}

/// One registry criterion of a selector, for the conflict test.
enum WorkloadCriterion<'s> {
    Workload(&'s NameSet),
    App(&'s NameSet),
    Zone(&'s NameSet),
    Label(&'s str, &'s str),
}

impl WorkloadCriterion<'_> {
    fn holds(&self, w: &Workload) -> bool {
        match self {
            WorkloadCriterion::Workload(s) => s.contains(&w.name),
            WorkloadCriterion::App(s) => w.app.as_deref().is_some_and(|a| s.contains(a)),
            WorkloadCriterion::Zone(s) => w.zone.as_deref().is_some_and(|z| s.contains(z)),
            WorkloadCriterion::Label(k, v) => w.labels.get(*k).is_some_and(|have| have == v),
        }
    }

    fn describe(&self) -> String {
        let (what, s) = match self {
            WorkloadCriterion::Workload(s) => ("workload", s),
            WorkloadCriterion::App(s) => ("app", s),
            WorkloadCriterion::Zone(s) => ("zone", s),
            WorkloadCriterion::Label(k, v) => return format!("label `{k}: {v}`"),
        };
        let v: Vec<&str> = s.iter().collect();
        match v.as_slice() {
            [one] => format!("{what} `{one}`"),
            many => format!("{what} one of [{}]", many.join(", ")),
        }
    }
}

/// Why no endpoint can satisfy `sel`, if that is certain.
fn selector_empty(sel: &Selector, reg: &Registry) -> Option<String> {
    // `not` excluding everything the other criteria select (registry-independent).
    if let Some(not) = &sel.not
        && not.covers(&sel.without_not())
    {
        return Some("its `not` excludes everything its other criteria select".to_owned());
    }
    if reg.is_empty() || !sel.needs_workload() {
        return None;
    }
    let mut crit: Vec<WorkloadCriterion<'_>> = Vec::new();
    crit.extend(sel.workload.as_ref().map(WorkloadCriterion::Workload));
    crit.extend(sel.app.as_ref().map(WorkloadCriterion::App));
    crit.extend(sel.zone.as_ref().map(WorkloadCriterion::Zone));
    for (k, v) in sel.labels.iter() {
        crit.push(WorkloadCriterion::Label(k, v));
    }
    let ws = reg.workloads();
    // A criterion no workload has alone is already a warning of its own (unknown name).
    if crit.iter().any(|c| !ws.iter().any(|w| c.holds(w))) {
        return None;
    }
    let selected: Vec<&Workload> = ws
        .iter()
        .filter(|w| crit.iter().all(|c| c.holds(w)))
        .collect();
    if selected.is_empty() {
        for (i, a) in crit.iter().enumerate() {
            for b in &crit[i + 1..] {
                if !ws.iter().any(|w| a.holds(w) && b.holds(w)) {
                    return Some(format!(
                        "no registry workload has both {} and {}",
                        a.describe(),
                        b.describe()
                    ));
                }
            }
        }
        let all: Vec<String> = crit.iter().map(WorkloadCriterion::describe).collect();
        return Some(format!(
            "no registry workload has all of {}",
            all.join(", ")
        ));
    }
    if let Some(nets) = &sel.cidr {
        let inside = |a: &IpAddr| nets.iter().any(|n| n.contains(&a.to_canonical()));
        if !selected.iter().any(|w| w.addresses.iter().any(inside)) {
            let mut names: Vec<&str> = selected.iter().map(|w| w.name.as_str()).take(5).collect();
            if selected.len() > 5 {
                names.push("...");
            }
            let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
            return Some(format!(
                "no address of the workloads it selects ({}) is in cidr [{}]",
                names.join(", "),
                nets.join(", ")
            ));
        }
    }
    None
}

/// Whether earlier rule `a` matches every flow, request and handshake later rule `b`
/// matches (so `b` never takes effect). Conservative.
pub(crate) fn covers(a: &Rule, b: &Rule) -> bool {
    a.mode == Mode::Enforce
        // Rules using `group` are skipped while groups are unknown: `a` may be skipped
        // where `b` is not, unless `b` uses groups too.
        && (!a.uses_groups || b.uses_groups)
        && ports_cover(a.ports.as_deref(), b.ports.as_deref())
        && a.from.covers(&b.from)
        && a.to.covers(&b.to)
        && l7_covers(a, b)
}

fn ports_cover(a: Option<&Transports>, b: Option<&Transports>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a.covers(b),
    }
}

/// Which traffic of one kind (TLS handshakes, or HTTP requests) a rule matches.
enum Matched<'r, T: ?Sized> {
    Nothing,
    All,
    /// Those meeting the conditions; `lenient`: a deny rule, which also matches what the
    /// conditions cannot be checked on (no SNI, no host).
    Some(&'r T, bool),
}

fn tls_matched(r: &Rule) -> Matched<'_, TlsCondition> {
    let deny = r.action == Action::Deny;
    match r.l7.as_deref() {
        None => Matched::All,
        Some(L7Conditions { tls: None, .. }) if deny => Matched::All,
        Some(L7Conditions { tls: None, .. }) => Matched::Nothing,
        Some(L7Conditions { tls: Some(t), .. }) if t.sni.is_none() => Matched::All,
        Some(L7Conditions { tls: Some(t), .. }) => Matched::Some(t, deny),
    }
}

fn http_matched(r: &Rule) -> Matched<'_, [HttpEntry]> {
    let deny = r.action == Action::Deny;
    match r.l7.as_deref() {
        None => Matched::All,
        Some(L7Conditions { http: None, .. }) if deny => Matched::All,
        Some(L7Conditions { http: None, .. }) => Matched::Nothing,
        Some(L7Conditions { http: Some(e), .. }) => Matched::Some(&**e, deny),
    }
}

fn dns_matched(r: &Rule) -> Matched<'_, DnsCondition> {
    let deny = r.action == Action::Deny;
    match r.l7.as_deref() {
        None => Matched::All,
        Some(L7Conditions { dns: None, .. }) if deny => Matched::All,
        Some(L7Conditions { dns: None, .. }) => Matched::Nothing,
        Some(L7Conditions { dns: Some(d), .. }) if d.names.is_none() => Matched::All,
        Some(L7Conditions { dns: Some(d), .. }) => Matched::Some(d, deny),
    }
}

fn matched_covers<T: ?Sized>(
    a: Matched<'_, T>,
    b: Matched<'_, T>,
    f: impl Fn(&T, bool, &T, bool) -> bool,
) -> bool {
    match (a, b) {
        (_, Matched::Nothing) | (Matched::All, _) => true,
        (Matched::Nothing, _) | (Matched::Some(..), Matched::All) => false,
        (Matched::Some(a, la), Matched::Some(b, lb)) => f(a, la, b, lb),
    }
}

/// L7 inclusion, per kind of traffic: opaque, TLS, HTTP, DNS queries.
fn l7_covers(a: &Rule, b: &Rule) -> bool {
    // Opaque traffic: a rule without L7 conditions or a deny rule matches it.
    let opaque = |r: &Rule| r.l7.is_none() || r.action == Action::Deny;
    if opaque(b) && !opaque(a) {
        return false;
    }
    let tls = matched_covers(tls_matched(a), tls_matched(b), |ta, la, tb, lb| {
        // `b` matching handshakes without SNI needs `a` to match them too (implied by the
        // opaque test above today: only deny rules are lenient; kept so this stays right
        // on its own).
        (la || !lb)
            && match (&ta.sni, &tb.sni) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(pa), Some(pb)) => pb.iter().all(|p| pa.iter().any(|q| q.covers(p))),
            }
    });
    let dns = matched_covers(dns_matched(a), dns_matched(b), |da, _, db, _| {
        match (&da.names, &db.names) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(pa), Some(pb)) => pb.iter().all(|p| pa.iter().any(|q| q.covers(p))),
        }
    });
    tls && dns
        && matched_covers(http_matched(a), http_matched(b), |ea, la, eb, lb| {
            eb.iter()
                .all(|e| ea.iter().any(|f| entry_covers(f, la, e, lb)))
        })
}

fn entry_covers(a: &HttpEntry, la: bool, b: &HttpEntry, lb: bool) -> bool {
    let methods = match (&a.methods, &b.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ma), Some(mb)) => mb.iter().all(|m| ma.contains(m)),
    };
    let paths = match (&a.paths, &b.paths) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(pa), Some(pb)) => pb.iter().all(|p| pa.iter().any(|q| q.covers(p))),
    };
    let hosts = match (&a.hosts, &b.hosts) {
        (None, _) => true,
        (Some(_), None) => false,
        // A lenient `b` also matches requests without a host; `a` must too.
        (Some(ha), Some(hb)) => (la || !lb) && hb.iter().all(|h| ha.iter().any(|q| q.covers(h))),
    };
    let headers = a
        .headers
        .iter()
        .all(|(name, pa)| b.headers.iter().any(|(n, pb)| n == name && pa.covers(pb)));
    methods && paths && hosts && headers
}
