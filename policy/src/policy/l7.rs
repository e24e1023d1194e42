//! L7 facts (what the node knows of the application protocol) and the compiled `http`,
//! `tls` and `dns` conditions of a rule's `to`.
//!
//! A rule with L7 conditions never matches traffic whose protocol cannot carry them: an
//! allow rule then does not match, a deny rule does (fail closed). Opaque bytes carry none;
//! TLS carries only `tls`; plain HTTP only `http`; a DNS query only `dns`; a ClientHello
//! without SNI cannot be checked against `tls.sni`, nor a request without a host against
//! `hosts`.

use http::{HeaderMap, HeaderName};

use super::pattern::{NamePattern, PathPattern, ValuePattern};

/// What the node knows about the application protocol of the traffic being decided.
#[derive(Clone, Copy, Debug, Default)]
pub enum L7<'a> {
    /// Connection time: nothing inspected yet.
    #[default]
    Unknown,
    /// The stream is neither HTTP nor TLS (or could not be recognized).
    Opaque,
    /// A TLS ClientHello, with its server name if it sent one.
    Tls {
        /// The SNI server name, if the ClientHello carries one.
        sni: Option<&'a str>,
    },
    /// One HTTP request (HTTP/1.x request on a keep-alive connection, or HTTP/2 stream).
    Http(&'a HttpRequestFacts<'a>),
    /// One DNS query, with the name it asks: lower case, without the final dot.
    Dns {
        /// The question's name.
        name: &'a str,
    },
}

/// The parts of one HTTP request that rules can test.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequestFacts<'a> {
    /// The method, as sent (compared case-sensitively, RFC 9110).
    pub method: &'a str,
    /// The host (URI authority or `Host` header) without its port, if the request has one.
    pub host: Option<&'a str>,
    /// The path normalized with [`crate::normalize_path`] (no query).
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The compiled `http`, `tls` and `dns` conditions of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct L7Conditions {
    /// `to.http`: a request matches if any entry matches; `None` when not given.
    pub(crate) http: Option<Box<[HttpEntry]>>,
    /// `to.tls`; `None` when not given.
    pub(crate) tls: Option<TlsCondition>,
    /// `to.dns`; `None` when not given.
    pub(crate) dns: Option<DnsCondition>,
}

/// `to.dns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DnsCondition {
    /// `names` patterns; `None`: any query.
    pub(crate) names: Option<Box<[NamePattern]>>,
}

/// One entry of `to.http`: every given field must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpEntry {
    pub(crate) methods: Option<Box<[Box<str>]>>,
    pub(crate) paths: Option<Box<[PathPattern]>>,
    pub(crate) hosts: Option<Box<[NamePattern]>>,
    /// Header name (lower-case) and the pattern one of its values must match.
    pub(crate) headers: Box<[(HeaderName, ValuePattern)]>,
}

/// `to.tls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsCondition {
    /// `sni` patterns; `None`: any TLS handshake.
    pub(crate) sni: Option<Box<[NamePattern]>>,
}

/// Why a rule's L7 conditions cannot be evaluated on some traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unevaluable {
    /// Opaque bytes: no L7 condition can be checked.
    Opaque,
    /// TLS against a rule without a `tls` condition.
    NoTlsCondition,
    /// Plain HTTP against a rule without `http` conditions.
    NoHttpCondition,
    /// A DNS query against a rule without a `dns` condition.
    NoDnsCondition,
    /// A ClientHello without SNI against `tls.sni`.
    NoSni,
}

/// The L7 part of a rule evaluated on some traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L7Outcome {
    /// The conditions hold.
    Match,
    /// They do not hold.
    NoMatch,
    /// They cannot be evaluated: an allow rule does not match, a deny rule does.
    Unevaluable(Unevaluable),
    /// Connection time ([`L7::Unknown`]): decided per request or handshake later.
    Pending,
}

/// The first field of an HTTP entry that a request fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpField {
    Method,
    Path,
    /// The request has a host that matches no pattern, or (allow rules) has none.
    Host,
    /// The header at this index of `headers`.
    Header(usize),
}

impl L7Conditions {
    /// Evaluates the conditions on `l7`; `deny` says whether the rule denies (a deny entry
    /// treats a missing host as matching `hosts`, failing closed).
    pub(crate) fn evaluate(&self, l7: &L7<'_>, deny: bool) -> L7Outcome {
        match *l7 {
            L7::Unknown => L7Outcome::Pending,
            L7::Opaque => L7Outcome::Unevaluable(Unevaluable::Opaque),
            L7::Tls { sni } => match &self.tls {
                None => L7Outcome::Unevaluable(Unevaluable::NoTlsCondition),
                Some(t) => match (&t.sni, sni) {
                    (None, _) => L7Outcome::Match,
                    (Some(_), None) => L7Outcome::Unevaluable(Unevaluable::NoSni),
                    (Some(pats), Some(name)) if pats.iter().any(|p| p.matches(name)) => {
                        L7Outcome::Match
                    }
                    (Some(_), Some(_)) => L7Outcome::NoMatch,
                },
            },
            L7::Http(req) => match &self.http {
                None => L7Outcome::Unevaluable(Unevaluable::NoHttpCondition),
                Some(entries)
                    if entries
                        .iter()
                        .any(|e| e.first_mismatch(req, deny).is_none()) =>
                {
                    L7Outcome::Match
                }
                Some(_) => L7Outcome::NoMatch,
            },
            L7::Dns { name } => match &self.dns {
                None => L7Outcome::Unevaluable(Unevaluable::NoDnsCondition),
                Some(DnsCondition { names: None }) => L7Outcome::Match,
                Some(DnsCondition { names: Some(p) }) if p.iter().any(|p| p.matches(name)) => {
                    L7Outcome::Match
                }
                Some(_) => L7Outcome::NoMatch,
            },
        }
    }
}

impl HttpEntry {
    /// The first field `req` fails, or `None` when the entry matches.
    pub(crate) fn first_mismatch(
        &self,
        req: &HttpRequestFacts<'_>,
        deny: bool,
    ) -> Option<HttpField> {
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| **m == *req.method)
        {
            return Some(HttpField::Method);
        }
        if let Some(paths) = &self.paths
            && !paths.iter().any(|p| p.matches(req.path))
        {
            return Some(HttpField::Path);
        }
        if let Some(hosts) = &self.hosts {
            let ok = match req.host {
                Some(h) => hosts.iter().any(|p| p.matches(h)),
                None => deny,
            };
            if !ok {
                return Some(HttpField::Host);
            }
        }
        for (i, (name, pattern)) in self.headers.iter().enumerate() {
            if !req
                .headers
                .get_all(name)
                .iter()
                .any(|v| pattern.matches(v.as_bytes()))
            {
                return Some(HttpField::Header(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        methods: &[&str],
        paths: &[&str],
        hosts: &[&str],
        headers: &[(&str, &str)],
    ) -> HttpEntry {
        fn opt<'s>(v: &[&'s str]) -> Option<Vec<&'s str>> {
            (!v.is_empty()).then(|| v.to_vec())
        }
        HttpEntry {
            methods: opt(methods).map(|v| v.into_iter().map(Box::from).collect()),
            paths: opt(paths).map(|v| v.into_iter().map(PathPattern::new).collect()),
            hosts: opt(hosts).map(|v| v.into_iter().map(NamePattern::new).collect()),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        ValuePattern((*v).into()),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn http_entry_fields_are_anded() {
        let e = entry(
            &["GET", "POST"],
            &["/api/*"],
            &["finance.corp.example", "*.finance.corp.example"],
            &[("x-env", "prod")],
        );
        let mut headers = HeaderMap::new();
        headers.append("x-env", "staging".parse().unwrap());
        headers.append("X-Env", "prod".parse().unwrap());
        let req = |method, host, path| HttpRequestFacts {
            method,
            host,
            path,
            headers: &headers,
        };
        let fin = Some("finance.corp.example");
        #[rustfmt::skip]
        let cases: &[(HttpRequestFacts<'_>, bool, Option<HttpField>)] = &[
            (req("GET", fin, "/api/x"), false, None),
            (req("POST", Some("eu.finance.corp.example"), "/api/"), false, None),
            (req("get", fin, "/api/x"), false, Some(HttpField::Method)),
            (req("DELETE", fin, "/api/x"), false, Some(HttpField::Method)),
            (req("GET", fin, "/admin"), false, Some(HttpField::Path)),
            (req("GET", Some("hr.corp.example"), "/api/x"), false, Some(HttpField::Host)),
            // No host: an allow entry fails, a deny entry counts `hosts` as met.
            (req("GET", None, "/api/x"), false, Some(HttpField::Host)),
            (req("GET", None, "/api/x"), true, None),
        ];
        for (r, deny, want) in cases {
            assert_eq!(e.first_mismatch(r, *deny), *want, "{r:?}");
        }
        let empty = HeaderMap::new();
        let r = HttpRequestFacts {
            method: "GET",
            host: fin,
            path: "/api/x",
            headers: &empty,
        };
        assert_eq!(e.first_mismatch(&r, false), Some(HttpField::Header(0)));
        // An entry without fields matches every request.
        assert_eq!(entry(&[], &[], &[], &[]).first_mismatch(&r, false), None);
    }

    #[test]
    fn protocols_that_cannot_carry_the_conditions() {
        let http_only = L7Conditions {
            http: Some(vec![entry(&["GET"], &[], &[], &[])].into()),
            tls: None,
            dns: None,
        };
        let tls_only = L7Conditions {
            http: None,
            tls: Some(TlsCondition {
                sni: Some(vec![NamePattern::new("*.corp.example")].into()),
            }),
            dns: None,
        };
        let any_tls = L7Conditions {
            http: None,
            tls: Some(TlsCondition { sni: None }),
            dns: None,
        };
        let dns_only = L7Conditions {
            http: None,
            tls: None,
            dns: Some(DnsCondition {
                names: Some(vec![NamePattern::new("*.corp.example")].into()),
            }),
        };
        let any_dns = L7Conditions {
            http: None,
            tls: None,
            dns: Some(DnsCondition { names: None }),
        };
        let headers = HeaderMap::new();
        let get = HttpRequestFacts {
            method: "GET",
            host: None,
            path: "/",
            headers: &headers,
        };
        let put = HttpRequestFacts {
            method: "PUT",
            ..get
        };
        use L7Outcome::{Match, NoMatch, Pending, Unevaluable as U};
        use Unevaluable::*;
        #[rustfmt::skip]
        let cases: &[(&L7Conditions, L7<'_>, L7Outcome)] = &[
            (&http_only, L7::Unknown, Pending),
            (&http_only, L7::Opaque, U(Opaque)),
            (&http_only, L7::Tls { sni: Some("a.corp.example") }, U(NoTlsCondition)),
            (&http_only, L7::Http(&get), Match),
            (&http_only, L7::Http(&put), NoMatch),
            (&tls_only, L7::Http(&get), U(NoHttpCondition)),
            (&tls_only, L7::Tls { sni: Some("A.Corp.Example") }, Match),
            (&tls_only, L7::Tls { sni: Some("corp.example") }, NoMatch),
            (&tls_only, L7::Tls { sni: None }, U(NoSni)),
            (&tls_only, L7::Opaque, U(Opaque)),
            (&any_tls, L7::Tls { sni: None }, Match),
            (&any_tls, L7::Dns { name: "db.corp.example" }, U(NoDnsCondition)),
            (&http_only, L7::Dns { name: "db.corp.example" }, U(NoDnsCondition)),
            (&dns_only, L7::Dns { name: "db.corp.example" }, Match),
            (&dns_only, L7::Dns { name: "corp.example" }, NoMatch),
            (&dns_only, L7::Dns { name: "evil.example" }, NoMatch),
            (&dns_only, L7::Http(&get), U(NoHttpCondition)),
            (&dns_only, L7::Tls { sni: Some("db.corp.example") }, U(NoTlsCondition)),
            (&dns_only, L7::Opaque, U(Opaque)),
            (&dns_only, L7::Unknown, Pending),
            (&any_dns, L7::Dns { name: "anything.example" }, Match),
        ];
        for (c, l7, want) in cases {
            assert_eq!(c.evaluate(l7, false), *want, "{l7:?}");
        }
    }
}
