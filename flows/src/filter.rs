//! Which records to show (`eastwall observe`, the collector's queries): by either end
//! (workload, app, zone, identity, user, group, address), verdict, rule, protocol, port,
//! HTTP method and path, event type, node and time. Every given criterion must hold; an end
//! criterion given several times holds if any does.

use std::net::IpAddr;

use crate::record::{End, Row};

/// One criterion on an end of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndIs {
    /// The workload of that name, or any workload of that app (a bare name).
    Named(String),
    /// The workload.
    Workload(String),
    /// The app.
    App(String),
    /// The zone.
    Zone(String),
    /// The identity (exactly, or as a prefix ending in `/` or `*`).
    Identity(String),
    /// The user.
    User(String),
    /// A group of its user.
    Group(String),
    /// The address.
    Ip(IpAddr),
}

impl EndIs {
    /// Parses `KIND:VALUE` (`app:db`, `zone:prod`, `workload:web`, `identity:spiffe://...`,
    /// `user:alice`, `group:finance`, `ip:10.0.0.1`), or a bare name or address.
    pub fn parse(s: &str) -> Result<EndIs, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(EndIs::Ip(ip));
        }
        // `identity:spiffe://...` holds a `:` of its own: split at the first.
        let Some((kind, value)) = s.split_once(':').filter(|(k, _)| !k.contains('/')) else {
            return if s.is_empty() {
                Err("an empty end".to_owned())
            } else {
                Ok(EndIs::Named(s.to_owned()))
            };
        };
        let v = value.to_owned();
        Ok(match kind {
            "workload" => EndIs::Workload(v),
            "app" => EndIs::App(v),
            "zone" => EndIs::Zone(v),
            "identity" | "spiffe" => EndIs::Identity(v),
            "user" => EndIs::User(v),
            "group" => EndIs::Group(v),
            "ip" => EndIs::Ip(
                value
                    .parse()
                    .map_err(|_| format!("`{value}` is not an IP address"))?,
            ),
            _ => {
                return Err(format!(
                    "`{kind}`: an end is workload:, app:, zone:, identity:, user:, group: or ip: (or a bare name or address)"
                ));
            }
        })
    }

    fn holds(&self, e: &End) -> bool {
        let is = |f: &Option<String>, v: &str| f.as_deref() == Some(v);
        match self {
            EndIs::Named(n) => is(&e.workload, n) || is(&e.app, n),
            EndIs::Workload(n) => is(&e.workload, n),
            EndIs::App(n) => is(&e.app, n),
            EndIs::Zone(n) => is(&e.zone, n),
            EndIs::Identity(id) => {
                e.identity
                    .as_deref()
                    .is_some_and(|i| match id.strip_suffix('*') {
                        Some(prefix) => i.starts_with(prefix),
                        None if id.ends_with('/') => i.starts_with(id.as_str()),
                        None => i == id,
                    })
            }
            EndIs::User(u) => is(&e.user, u),
            EndIs::Group(g) => e.groups.iter().any(|x| x == g),
            EndIs::Ip(ip) => e.ip == Some(*ip),
        }
    }
}

/// What to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// The source is one of these (any).
    pub from: Vec<EndIs>,
    /// The destination is one of these (any).
    pub to: Vec<EndIs>,
    /// `allow` or `deny`.
    pub verdict: Option<String>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// `TCP`, `UDP`, ... (any case).
    pub proto: Option<String>,
    /// The destination port.
    pub port: Option<u16>,
    /// The HTTP method.
    pub method: Option<String>,
    /// The HTTP path starts with this.
    pub path: Option<String>,
    /// The event types (any; none: every type).
    pub event_types: Vec<String>,
    /// The node that wrote it.
    pub node: Option<String>,
    /// Written at or after (µs since 1970).
    pub since_us: Option<i64>,
    /// Written before (µs since 1970).
    pub until_us: Option<i64>,
}

impl Filter {
    /// Whether `r` is kept.
    pub fn matches(&self, r: &Row) -> bool {
        let opt = |want: &Option<String>, got: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| got.as_deref() == Some(w.as_str()))
        };
        (self.from.is_empty() || self.from.iter().any(|f| f.holds(&r.src)))
            && (self.to.is_empty() || self.to.iter().any(|t| t.holds(&r.dest)))
            && opt(&self.verdict, &r.verdict)
            && opt(&self.rule, &r.rule)
            && opt(&self.method, &r.method)
            && self
                .proto
                .as_ref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&r.proto))
            && self.port.is_none_or(|p| p == r.port)
            && self
                .path
                .as_ref()
                .is_none_or(|p| r.path.as_deref().is_some_and(|x| x.starts_with(p.as_str())))
            && (self.event_types.is_empty() || self.event_types.contains(&r.event_type))
            && self.node.as_ref().is_none_or(|n| *n == r.node)
            && self.since_us.is_none_or(|t| r.time_us >= t)
            && self.until_us.is_none_or(|t| r.time_us < t)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::row_of;

    fn row(json: &str) -> Row {
        row_of(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn every_criterion_must_hold() {
        let r = row(
            r#"{"timestamp":"2026-12-05T10:00:00Z","event_type":"http","src_ip":"10.0.1.5","dest_ip":"10.0.2.4","dest_port":443,"proto":"TCP","http":{"url":"/api/accounts/7?x","http_method":"GET"},"eastwall":{"node":"hostB","src":{"workload":"desk-alice","app":"desktop","zone":"corp","user":"alice","groups":["finance"],"identity":"spiffe://corp.example/user/alice/wl/desk-alice"},"dest":{"workload":"finance-api","app":"finance-api"},"policy":{"verdict":"allow","rule":"finance"}}}"#,
        );
        let f = |from: &[&str], to: &[&str]| Filter {
            from: from.iter().map(|s| EndIs::parse(s).unwrap()).collect(),
            to: to.iter().map(|s| EndIs::parse(s).unwrap()).collect(),
            ..Filter::default()
        };
        for (filter, keep) in [
            (f(&[], &[]), true),
            (f(&["desk-alice"], &["finance-api"]), true),
            (f(&["desktop"], &["app:finance-api"]), true),
            (f(&["group:finance"], &[]), true),
            (f(&["group:hr"], &[]), false),
            (f(&["group:hr", "user:alice"], &[]), true),
            (f(&["zone:prod"], &[]), false),
            (f(&["identity:spiffe://corp.example/user/"], &[]), true),
            (
                f(
                    &["identity:spiffe://corp.example/user/alice/wl/desk-alice"],
                    &[],
                ),
                true,
            ),
            (f(&["identity:spiffe://corp.example/wl/*"], &[]), false),
            (f(&["10.0.1.5"], &["ip:10.0.2.4"]), true),
            (f(&[], &["desk-alice"]), false),
        ] {
            assert_eq!(filter.matches(&r), keep, "{filter:?}");
        }
        let t = |g: &dyn Fn(&mut Filter)| {
            let mut x = Filter::default();
            g(&mut x);
            x.matches(&r)
        };
        assert!(t(&|x| x.verdict = Some("allow".into())));
        assert!(!t(&|x| x.verdict = Some("deny".into())));
        assert!(t(&|x| x.proto = Some("tcp".into())));
        assert!(t(&|x| x.port = Some(443)));
        assert!(!t(&|x| x.port = Some(80)));
        assert!(t(&|x| x.path = Some("/api/".into())));
        assert!(!t(&|x| x.path = Some("/admin".into())));
        assert!(t(&|x| x.method = Some("GET".into())));
        assert!(t(&|x| x.event_types = vec!["flow".into(), "http".into()]));
        assert!(!t(&|x| x.event_types = vec!["flow".into()]));
        assert!(t(&|x| x.since_us = Some(r.time_us)));
        assert!(!t(&|x| x.until_us = Some(r.time_us)));
        assert!(t(&|x| x.node = Some("hostB".into())));
        assert!(EndIs::parse("colour:red").is_err());
        assert!(EndIs::parse("ip:nope").is_err());
    }
}
