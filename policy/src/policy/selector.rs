//! Compiled selectors: which endpoints a rule's `from` or `to` matches.

use ipnet::IpNet;

use super::Endpoint;

/// A set of names, sorted for binary search; small sets are scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameSet(Box<[Box<str>]>);

impl NameSet {
    pub(crate) fn new(mut names: Vec<Box<str>>) -> NameSet {
        names.sort();
        names.dedup();
        NameSet(names.into_boxed_slice())
    }

    /// The names, sorted.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(|n| &**n)
    }

    /// Whether every name of `self` is in `other`.
    pub(crate) fn is_subset(&self, other: &NameSet) -> bool {
        self.0.iter().all(|n| other.contains(n))
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        if self.0.len() <= 8 {
            self.0.iter().any(|n| &**n == name)
        } else {
            self.0.binary_search_by(|n| (**n).cmp(name)).is_ok()
        }
    }
}

/// A compiled selector: a conjunction of optional criteria. `Selector::default()` matches
/// every endpoint.
///
/// Criteria about the registry workload (`workload`, `app`, `zone`, `labels`) never match an
/// endpoint without one; identity criteria (`spiffe`, `spiffe_prefix`) never match an
/// endpoint without a proven identity; `user` and `group` never match an endpoint without
/// a user, and `group` not one whose groups are unknown; `cidr` and `not` can match either.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) workload: Option<NameSet>,
    pub(crate) app: Option<NameSet>,
    pub(crate) zone: Option<NameSet>,
    /// Every pair must be present; empty means no label criterion.
    pub(crate) labels: Box<[(Box<str>, Box<str>)]>,
    pub(crate) cidr: Option<Box<[IpNet]>>,
    /// Exact SPIFFE IDs (as strings) the proven identity must be one of.
    pub(crate) spiffe: Option<NameSet>,
    /// Prefixes of which the proven identity must start with one.
    pub(crate) spiffe_prefix: Option<Box<[Box<str>]>>,
    /// User names the endpoint's user must be one of.
    pub(crate) user: Option<NameSet>,
    /// Groups of which the endpoint's user must be in at least one.
    pub(crate) group: Option<NameSet>,
    pub(crate) not: Option<Box<Selector>>,
}

/// A criterion of a selector, named for explanations (the first one an endpoint fails).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Criterion {
    Workload,
    App,
    Zone,
    /// The label at this index of `labels`.
    Label(usize),
    Cidr,
    Spiffe,
    SpiffePrefix,
    User,
    Group,
    Not,
}

impl Selector {
    /// Whether `ep` satisfies every given criterion.
    pub(crate) fn matches(&self, ep: &Endpoint<'_>) -> bool {
        self.first_mismatch(ep).is_none()
    }

    /// The first criterion `ep` fails, in field order; `None` when it matches.
    pub(crate) fn first_mismatch(&self, ep: &Endpoint<'_>) -> Option<Criterion> {
        let w = ep.workload;
        if let Some(set) = &self.workload
            && !w.is_some_and(|w| set.contains(&w.name))
        {
            return Some(Criterion::Workload);
        }
        if let Some(set) = &self.app
            && !w
                .and_then(|w| w.app.as_deref())
                .is_some_and(|a| set.contains(a))
        {
            return Some(Criterion::App);
        }
        if let Some(set) = &self.zone
            && !w
                .and_then(|w| w.zone.as_deref())
                .is_some_and(|z| set.contains(z))
        {
            return Some(Criterion::Zone);
        }
        if let Some(i) = self.labels.iter().position(|(k, v)| {
            w.is_none_or(|w| w.labels.get(&**k).is_none_or(|have| have.as_str() != &**v))
        }) {
            return Some(Criterion::Label(i));
        }
        if let Some(nets) = &self.cidr {
            // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; match them as IPv4.
            let addr = ep.addr.to_canonical();
            if !nets.iter().any(|n| n.contains(&addr)) {
                return Some(Criterion::Cidr);
            }
        }
        if let Some(set) = &self.spiffe
            && !ep.identity.is_some_and(|id| set.contains(id.as_str()))
        {
            return Some(Criterion::Spiffe);
        }
        if let Some(prefixes) = &self.spiffe_prefix
            && !ep
                .identity
                .is_some_and(|id| prefixes.iter().any(|p| id.as_str().starts_with(&**p)))
        {
            return Some(Criterion::SpiffePrefix);
        }
        if let Some(set) = &self.user
            && !ep.user.is_some_and(|u| set.contains(u))
        {
            return Some(Criterion::User);
        }
        if let Some(set) = &self.group
            && !ep
                .groups
                .is_some_and(|gs| gs.iter().any(|g| set.contains(g)))
        {
            return Some(Criterion::Group);
        }
        if let Some(not) = &self.not
            && not.matches(ep)
        {
            return Some(Criterion::Not);
        }
        None
    }

    /// Whether a `group` criterion appears anywhere in this selector (negations included).
    pub(crate) fn uses_groups(&self) -> bool {
        self.group.is_some() || self.not.as_ref().is_some_and(|n| n.uses_groups())
    }

    /// Whether a registry-workload criterion (`workload`, `app`, `zone`, `labels`) is given
    /// at the top level.
    pub(crate) fn needs_workload(&self) -> bool {
        self.workload.is_some()
            || self.app.is_some()
            || self.zone.is_some()
            || !self.labels.is_empty()
    }

    /// Whether every endpoint `other` matches, `self` matches too. Conservative: `false`
    /// whenever inclusion cannot be shown criterion by criterion (the registry is not
    /// consulted, and a `not` is covered only by a `not` that excludes no more).
    pub(crate) fn covers(&self, other: &Selector) -> bool {
        let names = |a: &Option<NameSet>, b: &Option<NameSet>| match (a, b) {
            (None, _) => true,
            (Some(a), Some(b)) => b.is_subset(a),
            (Some(_), None) => false,
        };
        names(&self.workload, &other.workload)
            && names(&self.app, &other.app)
            && names(&self.zone, &other.zone)
            && self.labels.iter().all(|l| other.labels.contains(l))
            && match (&self.cidr, &other.cidr) {
                (None, _) => true,
                (Some(a), Some(b)) => b.iter().all(|n| a.iter().any(|m| m.contains(n))),
                (Some(_), None) => false,
            }
            && names(&self.spiffe, &other.spiffe)
            && match &self.spiffe_prefix {
                None => true,
                Some(prefixes) => {
                    let under = |id: &str| prefixes.iter().any(|p| id.starts_with(&**p));
                    other
                        .spiffe
                        .as_ref()
                        .is_some_and(|ids| ids.iter().all(under))
                        || other
                            .spiffe_prefix
                            .as_ref()
                            .is_some_and(|ps| ps.iter().all(|p| under(p)))
                }
            }
            && names(&self.user, &other.user)
            && names(&self.group, &other.group)
            && match (&self.not, &other.not) {
                (None, _) => true,
                // `other` excludes what its `not` matches; if that includes everything
                // `self`'s `not` matches, whatever `other` keeps, `self` keeps too.
                (Some(a), Some(b)) => b.covers(a),
                (Some(_), None) => false,
            }
    }

    /// This selector without its `not` (the positive criteria).
    pub(crate) fn without_not(&self) -> Selector {
        Selector {
            not: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_set_small_and_large() {
        let small = NameSet::new(vec!["b".into(), "a".into(), "a".into()]);
        assert!(small.contains("a") && small.contains("b") && !small.contains("c"));
        let many: Vec<Box<str>> = (0..100).map(|i| format!("n{i}").into()).collect();
        let large = NameSet::new(many);
        assert!(large.contains("n0") && large.contains("n99") && !large.contains("n100"));
    }

    #[test]
    fn default_matches_everything() {
        let ep = Endpoint {
            addr: "192.0.2.1".parse().unwrap(),
            workload: None,
            identity: None,
            user: None,
            groups: None,
        };
        assert!(Selector::default().matches(&ep));
    }
}
