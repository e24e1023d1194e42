//! The collector's per-edge aggregates (`GET /v1/edges`) as values, and the observations
//! they stand for, so that a recommendation over weeks reads thousands of edges instead of
//! millions of records.
//!
//! An edge is every decision of one day with the same ends (as the node named them), protocol,
//! port, verdict, rule and L7 facts. What an aggregate keeps of each is what a recommendation
//! needs: an end outside the registry keeps its address; an HTTP path keeps its pattern
//! ([`path_pattern`]: `/api/accounts/17` → `/api/accounts/*`), so a rule recommended from
//! edges allows at least what one recommended from the records would.

use std::net::IpAddr;

use eastwall_policy::{Protocol, Registry};
use serde::{Deserialize, Serialize};

use crate::observation::{Observation, RecordedL7, Side, Verdict};

/// One per-edge aggregate, as the collector answers it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Edge {
    /// The source.
    pub src: EdgeEnd,
    /// The destination (no identity, user or groups).
    pub dest: EdgeEnd,
    /// `TCP`, `UDP`, `ICMP`, ...
    pub proto: String,
    /// The destination port (0 without ports).
    pub port: u16,
    /// The ICMP type (ICMP and ICMPv6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// `allow`, `deny` or `alert`.
    pub verdict: String,
    /// The deciding rule (`sid N` for an alert).
    pub rule: String,
    /// A monitor rule that would have denied it (empty: none).
    pub monitor: String,
    /// The HTTP method (empty: not a request).
    pub method: String,
    /// The request path's pattern ([`path_pattern`]; empty: not a request).
    pub path_prefix: String,
    /// The DNS name queried (empty: not a query).
    pub dns: String,
    /// Connections whose requests or queries were decided one by one (each of those is an
    /// edge of its own).
    pub per_request: bool,
    /// Decisions.
    pub count: u64,
    /// Bytes both ways.
    pub bytes: u64,
    /// First seen (RFC 3339).
    pub first: String,
    /// Last seen (RFC 3339).
    pub last: String,
}

/// One end of an [`Edge`]; empty strings are unknown.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct EdgeEnd {
    /// Registry workload.
    pub workload: String,
    /// App.
    pub app: String,
    /// Zone.
    pub zone: String,
    /// SPIFFE identity.
    pub identity: String,
    /// The user it acted for.
    pub user: String,
    /// The user's groups, sorted, joined by commas.
    pub groups: String,
    /// Its address, kept when it is no registry workload.
    pub addr: String,
}

/// Segments of a path an aggregate keeps at most.
const PATH_SEGMENTS: usize = 2;

/// What an aggregate keeps of a request path: its segments up to a variable one (a number, a
/// UUID, an id-like token) or the first [`PATH_SEGMENTS`], then `/*` when it went on
/// (`/api/accounts/17` → `/api/accounts/*`, `/api/v1/users` → `/api/v1/*`, `/health` →
/// `/health`). As a policy path pattern it matches the path it came from.
pub fn path_pattern(path: &str) -> String {
    let mut kept = String::new();
    let mut segments = path.split('/').skip(1).peekable();
    let mut taken = 0;
    while let Some(seg) = segments.next() {
        if taken == PATH_SEGMENTS || crate::recommend::is_variable(seg) || seg.contains('*') {
            return format!("{kept}/*");
        }
        // The last segment empty (`/api/`): the pattern `/api/*` covers it.
        if seg.is_empty() && segments.peek().is_none() && taken > 0 {
            return format!("{kept}/*");
        }
        kept.push('/');
        kept.push_str(seg);
        taken += 1;
    }
    if kept.is_empty() {
        "/".to_owned()
    } else {
        kept
    }
}

impl Edge {
    /// The observation this edge stands for, its ends named by their recorded workload's
    /// address in `registry` (or by their recorded address); `None` for what is no decision
    /// (an alert, a connection whose requests are the decisions); an error says why it cannot
    /// be placed.
    pub fn observation(&self, registry: &Registry) -> Result<Option<Observation>, String> {
        let verdict = match self.verdict.as_str() {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            _ => return Ok(None),
        };
        if self.per_request {
            return Ok(None);
        }
        let proto = protocol(&self.proto, self.icmp_type)?;
        let l7 = if !self.method.is_empty() {
            RecordedL7::Http {
                method: self.method.clone(),
                host: None,
                path: self.path_prefix.clone(),
            }
        } else if !self.dns.is_empty() {
            RecordedL7::Dns {
                name: self.dns.clone(),
            }
        } else {
            RecordedL7::None
        };
        Ok(Some(Observation {
            time: self.first.clone(),
            last: Some(self.last.clone()),
            node: String::new(),
            src: side(&self.src, registry)?,
            dest: side(&self.dest, registry)?,
            proto,
            port: if proto.has_ports() { self.port } else { 0 },
            l7,
            verdict,
            rule: self.rule.clone(),
            count: self.count,
            bytes: self.bytes,
            from: "the collector's aggregates".to_owned(),
            src_port: 0,
            inbound: true,
        }))
    }
}

/// The observations `edges` stand for, and why some could not be placed (each reason once,
/// with the decisions it leaves out).
pub fn observations(edges: &[Edge], registry: &Registry) -> (Vec<Observation>, Vec<String>) {
    let mut out = Vec::with_capacity(edges.len());
    let mut problems: std::collections::BTreeMap<String, u64> = Default::default();
    for e in edges {
        match e.observation(registry) {
            Ok(Some(o)) => out.push(o),
            Ok(None) => {}
            Err(why) => *problems.entry(why).or_default() += e.count,
        }
    }
    let problems = problems
        .into_iter()
        .map(|(why, n)| format!("{why}: {n} decisions left out"))
        .collect();
    (out, problems)
}

fn side(e: &EdgeEnd, registry: &Registry) -> Result<Side, String> {
    let addr: IpAddr = if e.workload.is_empty() {
        e.addr
            .parse()
            .map_err(|_| format!("an end with neither workload nor address ({:?})", e.addr))?
    } else {
        let w = registry
            .workload(&e.workload)
            .ok_or_else(|| format!("workload `{}` is not in the registry", e.workload))?;
        *w.addresses
            .first()
            .ok_or_else(|| format!("workload `{}` has no address", e.workload))?
    };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(Side {
        addr,
        workload: text(&e.workload),
        app: text(&e.app),
        zone: text(&e.zone),
        identity: text(&e.identity),
        user: text(&e.user),
        groups: (!e.user.is_empty()).then(|| {
            e.groups
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        }),
    })
}

/// The protocol of an edge's `proto`, as EVE names it.
fn protocol(name: &str, icmp_type: Option<u8>) -> Result<Protocol, String> {
    let kind = icmp_type.unwrap_or(0);
    Ok(match name {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        "ICMP" => Protocol::Icmp { kind, code: 0 },
        "IPv6-ICMP" => Protocol::Icmpv6 { kind, code: 0 },
        n => Protocol::Other(
            n.parse()
                .map_err(|_| format!("unknown protocol `{n}` in an edge"))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_path_keeps_its_pattern() {
        for (path, pattern) in [
            ("/", "/"),
            ("/health", "/health"),
            ("/api/", "/api/*"),
            ("/api/accounts", "/api/accounts"),
            ("/api/accounts/17", "/api/accounts/*"),
            ("/api/accounts/17/statements", "/api/accounts/*"),
            ("/api/v1/users", "/api/v1/*"),
            ("/17", "/*"),
            (
                "/files/3f2a9c1e-7b7d-4c1e-9a51-0e4a2b8c9d10/raw",
                "/files/*",
            ),
        ] {
            assert_eq!(path_pattern(path), pattern, "{path}");
        }
    }
}
