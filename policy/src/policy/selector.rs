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

impl Selector {
    /// Whether `ep` satisfies every given criterion.
    pub(crate) fn matches(&self, ep: &Endpoint<'_>) -> bool {
        let w = ep.workload;
        if let Some(set) = &self.workload
            && !w.is_some_and(|w| set.contains(&w.name))
        {
            return false;
        }
        if let Some(set) = &self.app
            && !w
                .and_then(|w| w.app.as_deref())
                .is_some_and(|a| set.contains(a))
        {
            return false;
        }
        if let Some(set) = &self.zone
            && !w
                .and_then(|w| w.zone.as_deref())
                .is_some_and(|z| set.contains(z))
        {
            return false;
        }
        if !self.labels.is_empty() {
            let Some(w) = w else { return false };
            if !self
                .labels
                .iter()
                .all(|(k, v)| w.labels.get(&**k).is_some_and(|have| have.as_str() == &**v))
            {
                return false;
            }
        }
        if let Some(nets) = &self.cidr {
            // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; match them as IPv4.
            let addr = ep.addr.to_canonical();
            if !nets.iter().any(|n| n.contains(&addr)) {
                return false;
            }
        }
        if let Some(set) = &self.spiffe
            && !ep.identity.is_some_and(|id| set.contains(id.as_str()))
        {
            return false;
        }
        if let Some(prefixes) = &self.spiffe_prefix
            && !ep
                .identity
                .is_some_and(|id| prefixes.iter().any(|p| id.as_str().starts_with(&**p)))
        {
            return false;
        }
        if let Some(set) = &self.user
            && !ep.user.is_some_and(|u| set.contains(u))
        {
            return false;
        }
        if let Some(set) = &self.group
            && !ep
                .groups
                .is_some_and(|gs| gs.iter().any(|g| set.contains(g)))
        {
            return false;
        }
        if let Some(not) = &self.not
            && not.matches(ep)
        {
            return false;
        }
        true
    }

    /// Whether a `group` criterion appears anywhere in this selector (negations included).
    pub(crate) fn uses_groups(&self) -> bool {
        self.group.is_some() || self.not.as_ref().is_some_and(|n| n.uses_groups())
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
