//! Tests of L7 conditions, IDS profiles, `check` warnings and `explain`.

use http::HeaderMap;

use super::*;

const REGISTRY: &str = include_str!("../../testdata/registry-finance.yaml");
const POLICY: &str = include_str!("../../testdata/policy-l7.yaml");

const ALICE: &str = "10.50.1.10";
const BOB: &str = "10.50.1.11";
const FINANCE_API: &str = "10.50.2.10";
const HR_APP: &str = "10.50.2.20";
const PROXY: &str = "10.50.2.30";

fn registry() -> Registry {
    Registry::parse("registry.yaml", REGISTRY).unwrap()
}

fn parse(text: &str, reg: &Registry) -> (Policy, Vec<String>) {
    match Policy::parse("p.yaml", text, reg) {
        Ok((p, w)) => (p, w.iter().map(ToString::to_string).collect()),
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match Policy::parse("p.yaml", text, &Registry::empty()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

/// A policy with one section holding `rules` (YAML flow mappings, one per line).
fn rules(rules: &[&str]) -> String {
    let mut s = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n    - name: s\n      rules:\n",
    );
    for r in rules {
        s.push_str(&format!("        - {{{r}}}\n"));
    }
    s
}

/// The groups each user of the finance registry is in.
fn groups_of(user: &str) -> Option<Vec<String>> {
    match user {
        "alice" => Some(vec!["finance".into()]),
        "bob" => Some(vec!["hr".into()]),
        _ => None,
    }
}

/// The traffic in a test row.
#[derive(Clone, Copy, Debug)]
enum Traffic<'a> {
    Connect,
    Opaque,
    Tls(Option<&'a str>),
    /// Method, host, raw target.
    Http(&'a str, Option<&'a str>, &'a str),
    /// A DNS query for this name.
    Dns(&'a str),
}

/// Decides `src -> dst:port` with users and groups from the registry and `groups_of`,
/// asserting that the index, the linear scan and `explain` agree.
fn decide_l7(
    p: &Policy,
    reg: &Registry,
    src: &str,
    dst: &str,
    port: u16,
    t: Traffic<'_>,
) -> Decision {
    decide_with_headers(p, reg, (src, dst, port), t, &HeaderMap::new())
}

fn decide_with_headers(
    p: &Policy,
    reg: &Registry,
    (src, dst, port): (&str, &str, u16),
    t: Traffic<'_>,
    headers: &HeaderMap,
) -> Decision {
    // Users come from the registry (a desktop bound to a user), groups from `groups_of`.
    let ep = |addr: &str| -> (IpAddr, Option<String>) {
        let a: IpAddr = addr.parse().unwrap();
        (a, reg.workload_by_addr(a).and_then(|w| w.user.clone()))
    };
    let (sa, su) = ep(src);
    let (da, du) = ep(dst);
    let sg = su.as_deref().and_then(groups_of);
    let dg = du.as_deref().and_then(groups_of);
    let path;
    let facts;
    let l7 = match t {
        Traffic::Connect => L7::Unknown,
        Traffic::Opaque => L7::Opaque,
        Traffic::Tls(sni) => L7::Tls { sni },
        Traffic::Dns(name) => L7::Dns { name },
        Traffic::Http(method, host, target) => {
            path = crate::normalize_path(target).unwrap();
            facts = HttpRequestFacts {
                method,
                host,
                path: &path,
                headers,
            };
            L7::Http(&facts)
        }
    };
    let flow = Flow::new(
        Endpoint::lookup(reg, sa).with_user(su.as_deref(), sg.as_deref()),
        Endpoint::lookup(reg, da).with_user(du.as_deref(), dg.as_deref()),
        port,
    )
    .with_l7(l7);
    let d = p.decide(&flow);
    assert_eq!(d, p.decide_linear(&flow), "index and linear scan disagree");
    assert_eq!(d, p.explain(&flow).decision, "explain and decide disagree");
    d
}

/// `(src, dst, port, traffic, rule id, allowed, needs_l7)`.
type Row<'a> = (&'a str, &'a str, u16, Traffic<'a>, &'a str, bool, bool);

fn check_rows(p: &Policy, reg: &Registry, rows: &[Row<'_>]) {
    for &(src, dst, port, t, rule, allowed, needs) in rows {
        let d = decide_l7(p, reg, src, dst, port, t);
        assert_eq!(
            (d.rule_id(), d.is_allowed(), d.needs_l7),
            (rule, allowed, needs),
            "{src} -> {dst}:{port} {t:?}"
        );
    }
}

#[test]
fn finance_scene() {
    let reg = registry();
    let (p, warnings) = parse(POLICY, &reg);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(p.has_l7_rules());
    let fin = Some("finance.corp.example");
    use Traffic::*;
    #[rustfmt::skip]
    check_rows(&p, &reg, &[
        // Connection time: alice (finance) may be allowed some requests, so the node must
        // inspect; bob (hr) can get nothing from the finance API: refused at once, naming
        // the rule opaque traffic hits.
        (ALICE, FINANCE_API, 8443, Connect, "finance-api", true, true),
        (BOB, FINANCE_API, 8443, Connect, "block-admin-paths", false, true),
        // Port 80 has no allow rule; the emergency rule still decides for opaque traffic.
        (ALICE, FINANCE_API, 80, Connect, "block-admin-paths", false, true),
        // Per request: GET and POST under /api/ are allowed, everything else is not.
        (ALICE, FINANCE_API, 8443, Http("GET", fin, "/api/accounts"), "finance-api", true, false),
        (ALICE, FINANCE_API, 8443, Http("POST", fin, "/api/transfers/7?x=1"), "finance-api", true, false),
        (ALICE, FINANCE_API, 8443, Http("GET", Some("EU.Finance.Corp.Example"), "/api/"), "finance-api", true, false),
        (ALICE, FINANCE_API, 8443, Http("DELETE", fin, "/api/accounts/1"), "finance-api-nothing-else", false, false),
        (ALICE, FINANCE_API, 8443, Http("get", fin, "/api/accounts"), "finance-api-nothing-else", false, false),
        (ALICE, FINANCE_API, 8443, Http("GET", fin, "/api"), "finance-api-nothing-else", false, false),
        (ALICE, FINANCE_API, 8443, Http("GET", Some("hr.corp.example"), "/api/x"), "finance-api-nothing-else", false, false),
        (ALICE, FINANCE_API, 8443, Http("GET", None, "/api/x"), "finance-api-nothing-else", false, false),
        // Normalization: what the server would see is what is decided.
        (ALICE, FINANCE_API, 8443, Http("GET", fin, "/api/../admin/users"), "block-admin-paths", false, false),
        (ALICE, FINANCE_API, 8443, Http("GET", fin, "/api/%2E%2E/admin/"), "block-admin-paths", false, false),
        (ALICE, FINANCE_API, 8443, Http("GET", fin, "//api//x"), "finance-api", true, false),
        // hr is denied every request.
        (BOB, FINANCE_API, 8443, Http("GET", fin, "/api/accounts"), "finance-api-nothing-else", false, false),
        // An L7 deny rule denies what cannot carry its conditions (fail closed), so TLS
        // and opaque streams to the finance API are denied by the emergency rule.
        (ALICE, FINANCE_API, 8443, Tls(fin), "block-admin-paths", false, false),
        (ALICE, FINANCE_API, 8443, Opaque, "block-admin-paths", false, false),
        // TLS rules: SNI exact and wildcard; no SNI, plain HTTP and opaque never match an
        // allow rule with a `tls` condition.
        (ALICE, PROXY, 443, Connect, "only-corp-sni", true, true),
        (ALICE, PROXY, 443, Tls(Some("git.corp.example")), "only-corp-sni", true, false),
        (ALICE, PROXY, 443, Tls(Some("API.partner.example")), "only-corp-sni", true, false),
        (ALICE, PROXY, 443, Tls(Some("evil.example")), "default-deny", false, false),
        (ALICE, PROXY, 443, Tls(Some("corp.example")), "default-deny", false, false),
        (ALICE, PROXY, 443, Tls(None), "default-deny", false, false),
        (ALICE, PROXY, 443, Http("GET", Some("git.corp.example"), "/"), "default-deny", false, false),
        (ALICE, PROXY, 443, Opaque, "default-deny", false, false),
        // L4 rules decide at connection time, as before.
        (BOB, HR_APP, 443, Connect, "hr-uses-hr-app", true, false),
        (BOB, HR_APP, 443, Http("DELETE", None, "/x"), "hr-uses-hr-app", true, false),
        (ALICE, HR_APP, 443, Connect, "default-deny", false, false),
    ]);
    // The IDS profile travels with the deciding allow rule, not with provisional decisions.
    let get = decide_l7(
        &p,
        &reg,
        ALICE,
        FINANCE_API,
        8443,
        Http("GET", fin, "/api/x"),
    );
    assert_eq!(get.ids.as_deref(), Some("web-strict"));
    let connect = decide_l7(&p, &reg, ALICE, FINANCE_API, 8443, Connect);
    assert_eq!(connect.ids, None);
    let tls = decide_l7(&p, &reg, ALICE, PROXY, 443, Tls(Some("a.corp.example")));
    assert_eq!(tls.ids, None);
    assert_eq!(
        p.ids_profiles(),
        [IdsProfile {
            name: "web-strict".into(),
            mode: IdsMode::Prevent,
            classtypes: vec!["web-application-attack".into(), "attempted-admin".into()],
            max_severity: Some(2),
            sids: vec![],
            exclude_sids: vec![2012345],
        }]
    );
}

#[test]
fn headers_match_any_value() {
    let reg = Registry::empty();
    let (p, _) = parse(
        &rules(&[
            "id: prod-only, action: allow, to: {http: [{headers: {X-Env: prod, x-client: \"app-*\"}}]}",
        ]),
        &reg,
    );
    let mut h = HeaderMap::new();
    h.append("x-env", "staging".parse().unwrap());
    h.append("x-env", "prod".parse().unwrap());
    h.append("x-client", "app-7".parse().unwrap());
    let get = Traffic::Http("GET", None, "/");
    let d = decide_with_headers(&p, &reg, ("10.0.0.1", "10.0.0.2", 80), get, &h);
    assert_eq!(d.rule_id(), "prod-only");
    h.remove("x-client");
    h.append("x-client", "cli-7".parse().unwrap());
    let d = decide_with_headers(&p, &reg, ("10.0.0.1", "10.0.0.2", 80), get, &h);
    assert_eq!(d.rule_id(), "default-deny");
}

/// The table of what an L7 rule does with each kind of traffic (docs/POLICY.md).
#[test]
fn l7_rules_on_each_protocol() {
    let reg = Registry::empty();
    let http = "http: [{methods: [GET]}]";
    let tls = "tls: {sni: [a.example]}";
    let both = format!("{http}, {tls}");
    let any_tls = "tls: {}";
    let any_http = "http: [{}]";
    let dns = "dns: {names: [\"*.corp.example\"]}";
    let any_dns = "dns: {}";
    let tls_dns = "tls: {sni: [a.example]}, dns: {names: [a.example]}";
    use Traffic::*;
    let get = Http("GET", Some("a.example"), "/");
    let put = Http("PUT", Some("a.example"), "/");
    // (to conditions, traffic, allow rule matches, deny rule matches)
    #[rustfmt::skip]
    let table: &[(&str, Traffic<'_>, bool, bool)] = &[
        (http, Opaque, false, true),
        (http, Tls(Some("a.example")), false, true),
        (http, get, true, true),
        (http, put, false, false),
        (tls, Opaque, false, true),
        (tls, Tls(Some("a.example")), true, true),
        (tls, Tls(Some("b.example")), false, false),
        (tls, Tls(None), false, true),
        (tls, get, false, true),
        (&both, get, true, true),
        (&both, put, false, false),
        (&both, Tls(Some("a.example")), true, true),
        (&both, Tls(None), false, true),
        (&both, Opaque, false, true),
        (any_tls, Tls(None), true, true),
        (any_tls, get, false, true),
        (any_http, put, true, true),
        (any_http, Tls(None), false, true),
        (dns, Dns("db.corp.example"), true, true),
        (dns, Dns("corp.example"), false, false),
        (dns, Dns("db.corp.example.evil.example"), false, false),
        (dns, Opaque, false, true),
        (dns, get, false, true),
        (dns, Tls(Some("db.corp.example")), false, true),
        (http, Dns("a.example"), false, true),
        (tls, Dns("a.example"), false, true),
        (any_dns, Dns("anything.example"), true, true),
        (tls_dns, Dns("a.example"), true, true),
        (tls_dns, Tls(Some("a.example")), true, true),
        (tls_dns, Dns("b.example"), false, false),
    ];
    for &(cond, t, allow, deny) in table {
        for (action, want) in [("allow", allow), ("deny", deny)] {
            for mode in ["enforce", "monitor"] {
                let (p, _) = parse(
                    &rules(&[&format!(
                        "id: r, action: {action}, mode: {mode}, to: {{{cond}}}"
                    )]),
                    &reg,
                );
                let d = decide_l7(&p, &reg, "10.0.0.1", "10.0.0.2", 443, t);
                let matched = match mode {
                    "enforce" => d.rule_id() == "r",
                    _ => d.monitored.iter().any(|m| &*m.rule.id == "r"),
                };
                assert_eq!(matched, want, "{action} {mode} {cond} on {t:?}");
            }
        }
    }
}

#[test]
fn connection_time_decisions() {
    let reg = Registry::empty();
    use Traffic::*;
    // (rules, expected (rule, allowed, needs_l7), monitored) at connection time.
    type Case<'a> = (&'a [&'a str], (&'a str, bool, bool), &'a [&'a str]);
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        // No L7 rule: final, as before.
        (&["id: a, action: allow"], ("a", true, false), &[]),
        // An L4 rule before any L7 rule decides for good.
        (&["id: a, action: deny", "id: h, action: allow, to: {http: [{}]}"], ("a", false, false), &[]),
        // An L7 allow rule: inspect.
        (&["id: h, action: allow, to: {http: [{}]}"], ("h", true, true), &[]),
        // An L7 deny rule then an L4 allow: inspect (requests may pass the deny rule);
        // the provisional rule is the first that may allow.
        (&["id: d, action: deny, to: {http: [{paths: [/admin/*]}]}", "id: a, action: allow"], ("a", true, true), &[]),
        // Only denies reachable: refuse at once, naming the rule opaque traffic hits.
        (&["id: d, action: deny, to: {http: [{}]}", "id: e, action: deny"], ("d", false, true), &[]),
        (&["id: d, action: deny, to: {http: [{}]}"], ("d", false, true), &[]),
        (&["id: h, action: deny, mode: monitor, to: {tls: {}}"], ("default-deny", false, true), &["h"]),
        // A monitor L7 rule before an L4 allow: the node inspects to record monitor hits.
        (&["id: m, action: allow, mode: monitor, to: {http: [{}]}", "id: a, action: allow"], ("a", true, true), &[]),
        // An L7 allow behind an L4 deny is unreachable.
        (&["id: m, action: allow, mode: monitor, to: {http: [{}]}", "id: e, action: deny", "id: h, action: allow, to: {http: [{}]}"], ("e", false, true), &[]),
        // Rules whose L4 part does not match are not counted.
        (&["id: h, action: allow, to: {cidr: 10.9.0.0/16, http: [{}]}", "id: a, action: deny"], ("a", false, false), &[]),
        (&["id: h, action: allow, to: {http: [{}]}, ports: [80]", "id: a, action: deny"], ("a", false, false), &[]),
    ];
    for (rs, (rule, allowed, needs), monitored) in cases {
        let (p, _) = parse(&rules(rs), &reg);
        let d = decide_l7(&p, &reg, "10.0.0.1", "10.0.0.2", 443, Connect);
        let mon: Vec<&str> = d.monitored.iter().map(|m| &*m.rule.id).collect();
        assert_eq!(
            (d.rule_id(), d.is_allowed(), d.needs_l7, mon.as_slice()),
            (*rule, *allowed, *needs, *monitored),
            "{rs:?}"
        );
    }
}

#[test]
fn l7_validation_errors_are_located() {
    #[rustfmt::skip]
    let cases: &[(&str, &[&str])] = &[
        ("id: r, action: allow, from: {http: [{}]}, to: {not: {tls: {}}}", &[
            "p.yaml:7:47: `http` is not allowed in `from`: they test what is sent to the destination, so they belong at the top level of `to`",
            "p.yaml:7:70: `tls` is not allowed in `not`: write a deny rule with these conditions instead",
        ]),
        ("id: r, action: allow, to: {http: []}", &[
            "p.yaml:7:45: empty `http` list would match no request; give at least one entry (`{}` matches every request)",
        ]),
        ("id: r, action: allow, to: {http: [{methods: [GET, \"G T\", \"\"], paths: []}]}", &[
            "p.yaml:7:62: invalid method `G T`: a method is a token of letters, digits and !#$%&'*+-.^_`|~",
            "p.yaml:7:69: invalid method ``: a method is a token of letters, digits and !#$%&'*+-.^_`|~",
            "p.yaml:7:81: empty `paths` list (it would match nothing); omit the field to match any",
        ]),
        ("id: r, action: allow, to: {http: [{paths: [api/*, \"/a?b=1\", /a/../b, /a//b, \"/%7e\", /a**/b, /a/**x, /a%zz]}]}", &[
            "p.yaml:7:55: invalid path pattern `api/*`: it must start with `/`",
            "p.yaml:7:62: invalid path pattern `/a?b=1`: paths are compared without the query string; remove `?` and what follows",
            "p.yaml:7:72: invalid path pattern `/a/../b`: requests are compared by their normalized path, so this could never match; write `/b`",
            "p.yaml:7:81: invalid path pattern `/a//b`: requests are compared by their normalized path, so this could never match; write `/a/b`",
            "p.yaml:7:88: invalid path pattern `/%7e`: requests are compared by their normalized path, so this could never match; write `/~`",
            "p.yaml:7:96: invalid path pattern `/a**/b`: `**` must be a whole path segment (`/a/**/b`); use `*` within a segment",
            "p.yaml:7:104: invalid path pattern `/a/**x`: `**` must be a whole path segment (`/a/**/b`); use `*` within a segment",
            "p.yaml:7:112: invalid path pattern `/a%zz`: invalid percent-escape at byte 2",
        ]),
        ("id: r, action: allow, to: {http: [{hosts: [\"*\", \"a.example:8443\", \"*.*.example\", \"a.example.\", \"fd00::1\", \"a b\"]}]}", &[
            "p.yaml:7:55: invalid host pattern `*`: omit the field to match any name",
            "p.yaml:7:60: invalid host pattern `a.example:8443`: hosts are compared without the port; remove `:port`",
            "p.yaml:7:78: invalid host pattern `*.*.example`: a wildcard is allowed only as a whole first label (`*.corp.example`)",
            "p.yaml:7:93: invalid host pattern `a.example.`: remove the trailing `.` (names are compared without it)",
            "p.yaml:7:107: invalid host pattern `fd00::1`: write an IPv6 host in brackets, e.g. `[fd00::1]`",
            "p.yaml:7:118: invalid host pattern `a b`: expected a DNS name of letters, digits, `-` and `_` (labels of 1-63 characters), or `*.` and one",
        ]),
        ("id: r, action: allow, to: {http: [{headers: {}}, {headers: {\"x y\": a, X-A: b, x-a: c, x-b: \"\\u0001\", x-c: \" a\"}}]}", &[
            "p.yaml:7:56: empty `headers` map; omit the field to match any headers",
            "p.yaml:7:72: invalid header name `x y`: use a token of letters, digits and !#$%&'*+-.^_`|~",
            "p.yaml:7:90: header `x-a` is given twice (names are case-insensitive)",
            "p.yaml:7:103: invalid header value pattern `\\u{1}`: use visible ASCII characters and spaces",
            "p.yaml:7:118: header value pattern ` a` starts or ends with a space, which field values never do",
        ]),
        ("id: r, action: allow, to: {tls: {sni: [10.0.0.1, \"*.x\", \"\"]}}", &[
            "p.yaml:7:51: invalid SNI pattern `10.0.0.1`: SNI never carries an IP address (RFC 6066)",
            "p.yaml:7:68: invalid SNI pattern ``: expected a DNS name of letters, digits, `-` and `_` (labels of 1-63 characters), or `*.` and one",
        ]),
        ("id: r, action: allow, to: {tls: {sni: []}}", &[
            "p.yaml:7:50: empty `sni` list (it would match nothing); omit the field to match any",
        ]),
        ("id: r, action: allow, from: {dns: {}}, to: {dns: {}}", &[
            "p.yaml:7:46: `dns` is not allowed in `from`: they test what is sent to the destination, so they belong at the top level of `to`",
        ]),
        ("id: r, action: allow, to: {dns: {names: [10.0.0.1, \"a.example.\", \"*.*.x\"]}}", &[
            "p.yaml:7:53: invalid DNS name pattern `10.0.0.1`: a query asks for a name; reverse lookups ask for `*.in-addr.arpa` names",
            "p.yaml:7:63: invalid DNS name pattern `a.example.`: remove the trailing `.` (names are compared without it)",
            "p.yaml:7:77: invalid DNS name pattern `*.*.x`: a wildcard is allowed only as a whole first label (`*.corp.example`)",
        ]),
        ("id: r, action: allow, to: {dns: {names: []}}", &[
            "p.yaml:7:52: empty `names` list (it would match nothing); omit the field to match any",
        ]),
        ("id: r, action: deny, ids: web", &[
            "p.yaml:7:38: `ids` is only for allow rules: it names the IDS profile that inspects what the rule allows",
        ]),
        ("id: r, action: allow, ids: web", &[
            "p.yaml:7:39: no IDS profile named `web` (no profiles are defined in `spec.idsProfiles`)",
        ]),
    ];
    let mut failed = false;
    for (rule, want) in cases {
        let got = errors(&rules(&[rule]));
        if got != *want {
            failed = true;
            eprintln!("for {rule}:");
            for g in &got {
                eprintln!("    {g:?},");
            }
        }
    }
    assert!(!failed);
    // Unknown fields in L7 conditions are errors too.
    let e = errors(&rules(&[
        "id: r, action: allow, to: {http: [{method: [GET]}]}",
    ]));
    assert!(
        e[0].starts_with("p.yaml:7:") && e[0].contains("method"),
        "{e:?}"
    );
    let e = errors(&rules(&["id: r, action: allow, to: {tls: {server: a}}"]));
    assert!(e[0].contains("server"), "{e:?}");
}

#[test]
fn ids_profile_errors_and_warnings() {
    let head = "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  idsProfiles:\n";
    let text = format!(
        "{head}{}",
        concat!(
            "    - {name: a, mode: block, maxSeverity: 5, sids: [0, 4294967296], excludeSids: []}\n",
            "    - {name: a}\n",
            "    - {name: \"-b\", classtypes: [\"web attack\"]}\n",
            "    - {name: c, classtypes: []}\n",
        )
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml:5:14: warning: no rule uses IDS profile `a`",
            "p.yaml:5:23: invalid IDS mode `block` (expected detect or prevent)",
            "p.yaml:5:43: maxSeverity 5 is out of range (1, the most severe, to 4)",
            "p.yaml:5:53: sid 0 is out of range (1-4294967295)",
            "p.yaml:5:56: sid 4294967296 is out of range (1-4294967295)",
            "p.yaml:5:82: empty `excludeSids` list; omit the field instead",
            "p.yaml:6:14: duplicate IDS profile name `a` (first at 5:14)",
            "p.yaml:7:14: invalid IDS profile name `-b`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
            "p.yaml:7:33: invalid classtype `web attack`: use letters, digits, `-` and `_` (e.g. web-application-attack)",
            "p.yaml:8:14: warning: no rule uses IDS profile `c`",
            "p.yaml:8:29: empty `classtypes` list (it would select nothing); omit the field to select all",
        ]
    );
    let text = format!(
        "{head}{}",
        concat!(
            "    - {name: used, sids: [5, 6], excludeSids: [6]}\n",
            "    - {name: unused}\n",
            "  sections:\n",
            "    - name: s\n",
            "      rules:\n",
            "        - {id: r, action: allow, mode: monitor, ids: used}\n",
            "        - {id: q, action: allow, to: {http: [{methods: [get]}]}}\n",
            "        - {id: h, action: allow, to: {http: [{headers: {Host: a}}]}}\n",
        )
    );
    let (p, w) = parse(&text, &Registry::empty());
    assert_eq!(
        w,
        [
            "p.yaml:5:47: warning: sid 6 is both in `sids` and in `excludeSids`; it is excluded",
            "p.yaml:6:14: warning: no rule uses IDS profile `unused`",
            "p.yaml:10:54: warning: a monitor rule never decides, so its IDS profile applies only once it is enforced",
            "p.yaml:11:57: warning: method `get` is not upper case: methods are case-sensitive, so it matches only requests that send `get` (did you mean `GET`?)",
            "p.yaml:12:57: warning: match the host with `hosts`: it also covers HTTP/2, where the host is not a `host` header",
        ]
    );
    assert_eq!(p.ids_profiles().len(), 2);
    assert_eq!(p.ids_profiles()[0].mode, IdsMode::Detect);
    assert_eq!(p.ids_profiles()[0].sids, [5, 6]);
}

/// Each never-match and shadowing warning, and rule pairs that must not warn.
#[test]
fn dead_rule_warnings() {
    let reg = registry();
    // (rules, expected warnings); rule i is on line 7 + i.
    #[rustfmt::skip]
    let cases: &[(&[&str], &[&str])] = &[
        // Shadowing: L4 inclusion field by field.
        (&["id: a, action: deny, from: {zone: prod}", "id: b, action: allow, from: {zone: prod, app: vdi}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, from: {app: [vdi, hr-app]}, ports: [\"80-89\", \"90-99\"]", "id: b, action: allow, from: {app: vdi}, ports: [\"85-95\"]"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, from: {cidr: 10.0.0.0/8}", "id: b, action: deny, from: {cidr: [10.50.0.0/16, 10.1.2.3]}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, from: {spiffePrefix: \"spiffe://corp.example/user/\"}", "id: b, action: allow, from: {spiffe: spiffe://corp.example/user/alice/wl/alice-desktop}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: deny, from: {user: [alice, bob]}", "id: b, action: allow, from: {user: alice, zone: prod}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: deny, from: {not: {app: vdi}}", "id: b, action: deny, from: {not: {app: [vdi, hr-app]}}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        // An earlier rule without L7 conditions covers a later L7 rule with the same L4 part.
        (&["id: a, action: allow, to: {app: finance-api}", "id: b, action: deny, to: {app: finance-api, http: [{paths: [/admin/*]}]}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        // L7 inclusion.
        (&["id: a, action: allow, to: {http: [{methods: [GET, POST], paths: [/api/*]}]}", "id: b, action: allow, to: {http: [{methods: [GET], paths: [/api/v1/*, /api/x]}]}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, to: {tls: {sni: [\"*.corp.example\"]}}", "id: b, action: allow, to: {tls: {sni: [a.corp.example, \"*.eu.corp.example\"]}}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: deny, to: {http: [{headers: {x-env: \"*\"}}]}", "id: b, action: deny, to: {http: [{headers: {x-env: prod, x-b: c}}]}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        // A deny L7 rule covers opaque traffic and TLS too; a later http-only allow is dead.
        (&["id: a, action: deny, to: {http: [{}]}", "id: b, action: allow, to: {http: [{methods: [GET]}]}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        // Not shadowed: an allow L7 rule does not cover opaque traffic a later L4 rule matches.
        (&["id: a, action: allow, to: {http: [{}]}", "id: b, action: deny"], &[]),
        // Not shadowed: an L7 allow rule does not cover a later L7 deny (it matches TLS).
        (&["id: a, action: allow, to: {http: [{}]}", "id: b, action: deny, to: {http: [{methods: [GET]}]}"], &[]),
        // Host patterns cover; an allow entry's hosts miss host-less requests that a deny
        // entry with the same hosts matches.
        (&["id: a, action: allow, to: {http: [{hosts: [a.example]}], tls: {}}", "id: b, action: allow, to: {http: [{hosts: [a.example], methods: [GET]}]}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, to: {http: [{hosts: [a.example]}]}", "id: b, action: deny, to: {http: [{hosts: [a.example]}]}"], &[]),
        // Not shadowed: SNI-less handshakes match a deny `tls.sni` rule but not an allow one.
        (&["id: a, action: deny, to: {tls: {sni: [a.example]}}", "id: b, action: deny, to: {tls: {sni: [a.example]}}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, to: {tls: {sni: [a.example]}}", "id: b, action: deny, to: {tls: {sni: [a.example]}, http: [{}]}"], &[]),
        // DNS names cover; a `dns` allow rule does not cover a later `tls` rule.
        (&["id: a, action: allow, to: {dns: {names: [\"*.corp.example\"]}}", "id: b, action: allow, to: {dns: {names: [db.corp.example]}}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: allow, to: {dns: {}}", "id: b, action: allow, to: {tls: {}}"], &[]),
        (&["id: a, action: allow, to: {dns: {names: [db.corp.example]}}", "id: b, action: allow, to: {dns: {names: [\"*.corp.example\"]}}"], &[]),
        // Monitor rules never shadow; a monitor rule can be shadowed.
        (&["id: a, action: deny, mode: monitor", "id: b, action: allow"], &[]),
        (&["id: a, action: deny", "id: b, action: allow, mode: monitor, ports: [22]"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        // Groups: a rule using `group` is skipped while groups are unknown.
        (&["id: a, action: deny, from: {group: hr}", "id: b, action: allow, from: {group: hr, zone: prod}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: deny, from: {not: {group: hr}}", "id: b, action: allow, from: {zone: prod, not: {group: hr}}"],
         &["p.yaml:8:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"]),
        (&["id: a, action: deny, from: {not: {group: hr}}", "id: b, action: allow, from: {zone: prod}"], &[]),
        // Not shadowed: partial overlaps.
        (&["id: a, action: deny, from: {app: vdi}, ports: [80]", "id: b, action: allow, from: {app: vdi}, ports: [80, 81]"], &[]),
        (&["id: a, action: deny, from: {cidr: 10.50.1.0/24}", "id: b, action: allow, from: {cidr: 10.50.0.0/16}"], &[]),
        (&["id: a, action: deny, from: {not: {app: [vdi, hr-app]}}", "id: b, action: deny, from: {not: {app: vdi}}"], &[]),
        (&["id: a, action: allow, to: {http: [{paths: [/api/*/x]}]}", "id: b, action: allow, to: {http: [{paths: [/api/v*/x]}]}"], &[]),
        // Never match: criteria no registry workload has together; cidr outside the
        // selected workloads; `not` excluding everything.
        (&["id: a, action: allow, from: {app: vdi, zone: prod, labels: {tier: backend}}"],
         &["p.yaml:7:16: warning: rule `a` can never match: from: no registry workload has both app `vdi` and label `tier: backend`"]),
        (&["id: a, action: allow, to: {workload: [alice-desktop, bob-desktop], app: [finance-api, hr-app]}"],
         &["p.yaml:7:16: warning: rule `a` can never match: to: no registry workload has both workload one of [alice-desktop, bob-desktop] and app one of [finance-api, hr-app]"]),
        (&["id: a, action: allow, to: {app: finance-api, cidr: 10.50.1.0/24}"],
         &["p.yaml:7:16: warning: rule `a` can never match: to: no address of the workloads it selects (finance-api) is in cidr [10.50.1.0/24]"]),
        (&["id: a, action: allow, from: {app: vdi, not: {app: [vdi, hr-app]}}"],
         &["p.yaml:7:16: warning: rule `a` can never match: from: its `not` excludes everything its other criteria select"]),
        // A never-matching rule is reported once, not also as shadowed.
        (&["id: a, action: allow", "id: b, action: allow, to: {app: finance-api, cidr: 10.50.1.0/24}"],
         &["p.yaml:8:16: warning: rule `b` can never match: to: no address of the workloads it selects (finance-api) is in cidr [10.50.1.0/24]"]),
        // Fine: possible combinations.
        (&["id: a, action: allow, from: {app: vdi, zone: prod, cidr: 10.50.1.0/24}"], &[]),
        (&["id: a, action: allow, from: {zone: prod, not: {app: vdi}}"], &[]),
    ];
    let mut failed = false;
    for (rs, want) in cases {
        let (_, w) = parse(&rules(rs), &reg);
        if w != *want {
            failed = true;
            eprintln!("for {rs:?}:\n  got  {w:?}\n  want {want:?}");
        }
    }
    assert!(!failed);
    // The first covering rule is named, across sections.
    let text = concat!(
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n",
        "    - name: one\n      rules:\n",
        "        - {id: a, action: deny, ports: [22]}\n",
        "        - {id: a2, action: deny}\n",
        "    - name: two\n      rules:\n",
        "        - {id: b, action: allow, ports: [22]}\n",
    );
    let (_, w) = parse(text, &reg);
    assert_eq!(
        w,
        [
            "p.yaml:11:16: warning: rule `b` can never match: rule `a` (at 7:16) matches every flow it does"
        ]
    );
}

#[test]
fn explain_says_why() {
    let reg = registry();
    let (p, _) = parse(POLICY, &reg);
    let fin = Some("finance.corp.example");
    use Traffic::*;
    // (src, dst, port, traffic, verdict line, steps)
    type Case<'a> = (&'a str, &'a str, u16, Traffic<'a>, &'a str, &'a [&'a str]);
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        (ALICE, FINANCE_API, 8443, Http("DELETE", fin, "/api/x"),
         "verdict: deny by rule `finance-api-nothing-else` (section application)", &[
            "1. emergency/block-admin-paths (deny): no match: to: path `/api/x` matches no `paths` pattern of http entry 1",
            "2. application/finance-api (allow): no match: to: method `DELETE` is not one of [GET, POST] of http entry 1",
            "3. application/finance-api-nothing-else (deny): match",
        ]),
        (ALICE, FINANCE_API, 8443, Http("GET", fin, "/api/x"),
         "verdict: allow by rule `finance-api` (section application)\nIDS profile: web-strict", &[
            "1. emergency/block-admin-paths (deny): no match: to: path `/api/x` matches no `paths` pattern of http entry 1",
            "2. application/finance-api (allow): match",
        ]),
        (ALICE, FINANCE_API, 8443, Http("GET", None, "/api/x"),
         "verdict: deny by rule `finance-api-nothing-else` (section application)", &[
            "1. emergency/block-admin-paths (deny): no match: to: path `/api/x` matches no `paths` pattern of http entry 1",
            "2. application/finance-api (allow): no match: to: the request has no host, which `hosts` of http entry 1 needs",
            "3. application/finance-api-nothing-else (deny): match",
        ]),
        (BOB, FINANCE_API, 8443, Http("GET", fin, "/api/x"),
         "verdict: deny by rule `finance-api-nothing-else` (section application)", &[
            "1. emergency/block-admin-paths (deny): no match: to: path `/api/x` matches no `paths` pattern of http entry 1",
            "2. application/finance-api (allow): no match: from: user `bob` is in groups [hr], none of [finance]",
            "3. application/finance-api-nothing-else (deny): match",
        ]),
        (ALICE, FINANCE_API, 8443, Opaque,
         "verdict: deny by rule `block-admin-paths` (section emergency)", &[
            "1. emergency/block-admin-paths (deny): match (opaque bytes cannot carry the rule's L7 conditions; a deny rule with L7 conditions matches it (fail closed))",
        ]),
        (ALICE, FINANCE_API, 8443, Connect,
         "verdict: depends on the protocol and the requests: the node inspects the traffic and decides each HTTP request, TLS handshake or DNS query; rule `finance-api` (section application) may allow", &[
            "1. emergency/block-admin-paths (deny): match (connection time: it denies opaque traffic (fail closed); HTTP requests, TLS handshakes and DNS queries are checked against its L7 conditions)",
            "2. application/finance-api (allow): pending: connection time: its L7 conditions are checked on each HTTP request, TLS handshake or DNS query",
        ]),
        (BOB, FINANCE_API, 8443, Connect,
         "verdict: deny for every protocol and request; opaque traffic is denied by rule `block-admin-paths` (section emergency)", &[
            "1. emergency/block-admin-paths (deny): match (connection time: it denies opaque traffic (fail closed); HTTP requests, TLS handshakes and DNS queries are checked against its L7 conditions)",
            "2. application/finance-api (allow): no match: from: user `bob` is in groups [hr], none of [finance]",
            "3. application/finance-api-nothing-else (deny): match (connection time: reached by requests or handshakes that the L7 rules above let pass)",
        ]),
        (ALICE, PROXY, 443, Tls(Some("evil.example")),
         "verdict: deny by default (no enforce rule matched)", &[
            "1. emergency/block-admin-paths (deny): no match: to: app is `proxy`, the rule wants one of [finance-api]",
            "2. application/finance-api (allow): no match: port 443 is not in [8443]",
            "3. application/finance-api-nothing-else (deny): no match: to: app is `proxy`, the rule wants one of [finance-api]",
            "4. application/only-corp-sni (allow): no match: to: SNI `evil.example` matches no `tls.sni` pattern [*.corp.example, api.partner.example]",
            "5. application/hr-uses-hr-app (allow): no match: from: user `alice` is in groups [finance], none of [hr]",
        ]),
        (ALICE, PROXY, 443, Tls(None),
         "verdict: deny by default (no enforce rule matched)", &[
            "1. emergency/block-admin-paths (deny): no match: to: app is `proxy`, the rule wants one of [finance-api]",
            "2. application/finance-api (allow): no match: port 443 is not in [8443]",
            "3. application/finance-api-nothing-else (deny): no match: to: app is `proxy`, the rule wants one of [finance-api]",
            "4. application/only-corp-sni (allow): no match: to: the TLS ClientHello has no SNI to check against `tls.sni`; an allow rule with L7 conditions does not match it",
            "5. application/hr-uses-hr-app (allow): no match: from: user `alice` is in groups [finance], none of [hr]",
        ]),
        ("192.0.2.1", PROXY, 443, Http("GET", None, "/"),
         "verdict: deny by default (no enforce rule matched)", &[
            "1. emergency/block-admin-paths (deny): no match: to: app is `proxy`, the rule wants one of [finance-api]",
            "2. application/finance-api (allow): no match: port 443 is not in [8443]",
            "3. application/finance-api-nothing-else (deny): no match: to: app is `proxy`, the rule wants one of [finance-api]",
            "4. application/only-corp-sni (allow): no match: to: plain HTTP cannot be checked against the rule's conditions (it has no `http`); an allow rule with L7 conditions does not match it",
            "5. application/hr-uses-hr-app (allow): no match: from: no user, the rule wants group one of [hr]",
        ]),
    ];
    for (src, dst, port, t, verdict, steps) in cases {
        let want = format!(
            "{verdict}\nrules in order:\n{}",
            steps
                .iter()
                .map(|s| format!("  {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let text = explain_text(&p, &reg, (src, dst, *port), *t);
        assert_eq!(text, want, "{src} -> {dst}:{port} {t:?}");
    }
}

fn explain_text(
    p: &Policy,
    reg: &Registry,
    (src, dst, port): (&str, &str, u16),
    t: Traffic<'_>,
) -> String {
    let sa: IpAddr = src.parse().unwrap();
    let da: IpAddr = dst.parse().unwrap();
    let su = reg.workload_by_addr(sa).and_then(|w| w.user.clone());
    let sg = su.as_deref().and_then(groups_of);
    let headers = HeaderMap::new();
    let path;
    let facts;
    let l7 = match t {
        Traffic::Connect => L7::Unknown,
        Traffic::Opaque => L7::Opaque,
        Traffic::Tls(sni) => L7::Tls { sni },
        Traffic::Dns(name) => L7::Dns { name },
        Traffic::Http(method, host, target) => {
            path = crate::normalize_path(target).unwrap();
            facts = HttpRequestFacts {
                method,
                host,
                path: &path,
                headers: &headers,
            };
            L7::Http(&facts)
        }
    };
    let flow = Flow::new(
        Endpoint::lookup(reg, sa).with_user(su.as_deref(), sg.as_deref()),
        Endpoint::lookup(reg, da),
        port,
    )
    .with_l7(l7);
    p.explain(&flow).to_string()
}

#[test]
fn explain_l4_reasons() {
    let reg =
        crate::Registry::parse("r.yaml", include_str!("../../testdata/registry.yaml")).unwrap();
    let (p, _) = parse(
        &rules(&[
            "id: w, action: allow, from: {workload: web-prod}",
            "id: z, action: allow, from: {zone: prod}, ports: [5432, \"8000-8080\"]",
            "id: l, action: allow, from: {labels: {tier: backend}}",
            "id: l2, action: allow, from: {labels: {pci: \"no\"}}",
            "id: c, action: allow, from: {cidr: [10.0.0.0/16]}",
            "id: s, action: allow, from: {spiffe: spiffe://corp.example/wl/web-prod}",
            "id: sp, action: allow, from: {spiffePrefix: spiffe://corp.example/zone/}",
            "id: u, action: allow, from: {user: alice}",
            "id: g, action: allow, from: {group: finance}",
            "id: n, action: deny, mode: monitor, from: {not: {zone: prod}}",
            "id: o, action: allow, to: {app: db, labels: {tier: frontend}}",
        ]),
        &reg,
    );
    let src: IpAddr = "10.99.1.2".parse().unwrap(); // web-dev
    let dst: IpAddr = "10.99.2.3".parse().unwrap(); // db-prod
    let id = SpiffeId::parse("spiffe://corp.example/wl/web-dev").unwrap();
    let groups = vec!["hr".to_owned()];
    let flow = Flow::new(
        Endpoint::lookup(&reg, src)
            .with_identity(Some(&id))
            .with_user(Some("bob"), Some(&groups)),
        Endpoint::lookup(&reg, dst),
        22,
    );
    let e = p.explain(&flow);
    assert_eq!(e.decision, p.decide(&flow));
    let reasons: Vec<String> = e
        .steps
        .iter()
        .map(|s| match &s.outcome {
            StepOutcome::NoMatch(r) => r.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "from: workload is `web-dev`, the rule wants one of [web-prod]",
            "port 22 is not in [5432, 8000-8080]",
            "from: label `tier` is `frontend`, the rule wants `backend`",
            "from: workload `web-dev` has no label `pci`, the rule wants `no`",
            "from: address 10.99.1.2 is not in [10.0.0.0/16]",
            "from: identity `spiffe://corp.example/wl/web-dev` is not one of [spiffe://corp.example/wl/web-prod]",
            "from: identity `spiffe://corp.example/wl/web-dev` starts with none of [spiffe://corp.example/zone/]",
            "from: user `bob` is not one of [alice]",
            "from: user `bob` is in groups [hr], none of [finance]",
            "Matched(None)",
            "to: label `tier` is `backend`, the rule wants `frontend`",
        ]
    );
    assert_eq!(e.steps[9].mode, Mode::Monitor);
    assert!(
        e.to_string()
            .contains("\nmonitor: rule `n` (section s) would deny\n"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("  10. s/n (deny, monitor): monitor: would deny"),
        "{e}"
    );
    // An unknown address, unknown groups, `not`.
    let (p, _) = parse(
        &rules(&[
            "id: a, action: allow, from: {app: web}",
            "id: g, action: allow, from: {group: finance}",
            "id: n, action: allow, to: {not: {zone: prod}}",
            "id: i, action: allow, to: {spiffe: spiffe://corp.example/wl/db-prod}",
        ]),
        &reg,
    );
    let stranger: IpAddr = "192.0.2.7".parse().unwrap();
    let flow = Flow::new(
        Endpoint::lookup(&reg, stranger).with_user(Some("carol"), None),
        Endpoint::lookup(&reg, dst),
        1,
    );
    let text = p.explain(&flow).to_string();
    assert_eq!(
        text,
        concat!(
            "verdict: deny by default (no enforce rule matched)\n",
            "rules in order:\n",
            "  1. s/a (allow): no match: from: 192.0.2.7 is no registry workload, the rule wants app one of [web]\n",
            "  2. s/g (allow): skipped: the groups of user `carol` are unknown and the rule uses `group` (fail closed)\n",
            "  3. s/n (allow): no match: to: it matches the rule's `not` selector\n",
            "  4. s/i (allow): no match: to: no proven identity, the rule wants spiffe one of [spiffe://corp.example/wl/db-prod]",
        )
    );
    assert_eq!(
        Policy::deny_all().explain(&flow).to_string(),
        "verdict: deny by default (no enforce rule matched)\nno rules were evaluated"
    );
}

#[test]
fn normalize_path_is_what_rules_see() {
    // Paths with encoded separators never match a pattern's `/`.
    let reg = Registry::empty();
    let (p, _) = parse(
        &rules(&[
            "id: d, action: deny, to: {http: [{paths: [\"/admin/*\"]}]}",
            "id: a, action: allow",
        ]),
        &reg,
    );
    use Traffic::*;
    for (target, rule) in [
        ("/admin/x", "d"),
        ("/ADMIN/x", "a"),
        ("/%61dmin/x", "d"),
        ("/x/../admin/", "d"),
        ("/admin%2Fx", "a"),
        ("http://h/admin/x?y", "d"),
    ] {
        let d = decide_l7(
            &p,
            &reg,
            "10.0.0.1",
            "10.0.0.2",
            80,
            Http("GET", None, target),
        );
        assert_eq!(d.rule_id(), rule, "{target}");
    }
}
