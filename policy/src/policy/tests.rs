//! Tests of policy parsing, validation and `decide`.

use super::*;

const REGISTRY: &str = include_str!("../../testdata/registry.yaml");
const POLICY: &str = include_str!("../../testdata/policy.yaml");
const POLICY_IDENTITY: &str = include_str!("../../testdata/policy-identity.yaml");

fn registry() -> Registry {
    Registry::parse("registry.yaml", REGISTRY).unwrap()
}

/// A policy document with `body` under `spec:`.
fn doc(body: &str) -> String {
    format!("apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n{body}")
}

fn parse_ok(text: &str, reg: &Registry) -> Policy {
    match Policy::parse("p.yaml", text, reg) {
        Ok((p, w)) => {
            assert!(w.is_empty(), "unexpected warnings:\n{w}");
            p
        }
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// All diagnostics (errors and warnings) as strings, for a policy that must fail.
fn errors(text: &str, reg: &Registry) -> Vec<String> {
    match Policy::parse("p.yaml", text, reg) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

fn warnings(text: &str, reg: &Registry) -> Vec<String> {
    match Policy::parse("p.yaml", text, reg) {
        Ok((_, w)) => w.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn decide(p: &Policy, reg: &Registry, src: &str, dst: &str, port: u16) -> Decision {
    let flow = Flow::new(
        Endpoint::lookup(reg, ip(src)),
        Endpoint::lookup(reg, ip(dst)),
        port,
    );
    let d = p.decide(&flow);
    assert_eq!(d, p.decide_linear(&flow), "index and linear scan disagree");
    d
}

/// Like [`decide`], with proven identities (`None`: not proven).
fn decide_ids(
    p: &Policy,
    reg: &Registry,
    (src, src_id): (&str, Option<&str>),
    (dst, dst_id): (&str, Option<&str>),
    port: u16,
) -> Decision {
    let src_id = src_id.map(|s| SpiffeId::parse(s).unwrap());
    let dst_id = dst_id.map(|s| SpiffeId::parse(s).unwrap());
    let flow = Flow::new(
        Endpoint::lookup(reg, ip(src)).with_identity(src_id.as_ref()),
        Endpoint::lookup(reg, ip(dst)).with_identity(dst_id.as_ref()),
        port,
    );
    let d = p.decide(&flow);
    assert_eq!(d, p.decide_linear(&flow), "index and linear scan disagree");
    d
}

/// Asserts each `(src, dst, port, rule id, allowed, monitored ids)` row.
/// `(src, dst, port, deciding rule id, allowed, monitored rule ids)`.
type Row<'a> = (&'a str, &'a str, u16, &'a str, bool, &'a [&'a str]);

fn check_table(p: &Policy, reg: &Registry, rows: &[Row<'_>]) {
    for &(src, dst, port, rule, allowed, monitored) in rows {
        let d = decide(p, reg, src, dst, port);
        let mon: Vec<&str> = d.monitored.iter().map(|m| &*m.rule.id).collect();
        assert_eq!(
            (d.rule_id(), d.is_allowed(), mon.as_slice()),
            (rule, allowed, monitored),
            "{src} -> {dst}:{port}"
        );
    }
}

const WEB_DEV: &str = "10.99.1.2";
const API_DEV: &str = "10.99.1.3";
const WEB_TEST: &str = "10.99.3.2";
const WEB_PROD: &str = "10.99.2.2";
const DB_PROD: &str = "10.99.2.3";
const DB_PROD_V6: &str = "fd00:99::1:3";
const OUTSIDE: &str = "10.200.1.1";
const OUTSIDE_V6: &str = "fd00:200::5";
const STRANGER: &str = "192.0.2.9";
const PAY1: &str = "10.99.2.10";
const PAY2: &str = "10.99.2.11";

const PAYMENTS_ID: &str = "spiffe://corp.example/zone/prod/payments";
const WEB_PROD_ID: &str = "spiffe://corp.example/wl/web-prod";
const DB_PROD_ID: &str = "spiffe://corp.example/wl/db-prod";
const API_DEV_ID: &str = "spiffe://corp.example/wl/api-dev";

#[test]
fn parses_example() {
    let reg = registry();
    let p = parse_ok(POLICY, &reg);
    assert_eq!(p.name(), Some("corp"));
    assert_eq!(p.rule_count(), 5);
    assert_eq!(p.section_count(), 2);
    assert!(p.index.of(Protocol::Tcp).is_some());
}

#[test]
fn decide_example_policy() {
    let reg = registry();
    let p = parse_ok(POLICY, &reg);
    #[rustfmt::skip]
    check_table(&p, &reg, &[
        // Zones come first: dev never reaches prod, whatever the app rules say.
        (WEB_DEV, DB_PROD, 5432, "dev-not-prod", false, &[]),
        (API_DEV, WEB_PROD, 443, "dev-not-prod", false, &[]),
        // App rules, with ports.
        (WEB_PROD, DB_PROD, 5432, "web-to-db", true, &[]),
        (WEB_PROD, DB_PROD, 5433, "default-deny", false, &[]),
        (WEB_DEV, API_DEV, 8000, "web-to-api", true, &[]),
        (WEB_DEV, API_DEV, 8080, "web-to-api", true, &[]),
        (WEB_DEV, API_DEV, 8081, "default-deny", false, &[]),
        (WEB_DEV, API_DEV, 7999, "default-deny", false, &[]),
        (WEB_DEV, API_DEV, 9090, "web-to-api", true, &[]),
        // Negation: prod web is excluded from web-to-api.
        (WEB_PROD, API_DEV, 8000, "default-deny", false, &[]),
        // Monitor rules are reported and evaluation goes on.
        (WEB_TEST, DB_PROD, 5432, "web-to-db", true, &["watch-test-to-prod"]),
        (WEB_TEST, WEB_PROD, 80, "default-deny", false, &["watch-test-to-prod"]),
        // Addresses outside the registry match only cidr (and not).
        (OUTSIDE, DB_PROD, 22, "pci-admin", true, &[]),
        (OUTSIDE, API_DEV, 22, "default-deny", false, &[]),
        (OUTSIDE, API_DEV, 8080, "default-deny", false, &[]),
        (STRANGER, DB_PROD, 22, "default-deny", false, &[]),
        // IPv6, and IPv4-mapped IPv6 as seen on dual-stack sockets.
        (OUTSIDE_V6, DB_PROD_V6, 22, "pci-admin", true, &[]),
        (OUTSIDE_V6, DB_PROD, 22, "pci-admin", true, &[]),
        ("::ffff:10.200.1.1", "::ffff:10.99.2.3", 22, "pci-admin", true, &[]),
        (WEB_PROD, DB_PROD_V6, 5432, "web-to-db", true, &[]),
    ]);
    let d = decide(&p, &reg, WEB_TEST, DB_PROD, 5432);
    assert_eq!(
        d.monitored,
        [MonitorHit {
            rule: RuleRef {
                id: "watch-test-to-prod".into(),
                section: "zones".into()
            },
            action: Action::Deny
        }]
    );
    assert_eq!(d.rule.as_ref().map(|r| &*r.section), Some("apps"));
}

#[test]
fn decide_selector_semantics() {
    let reg = registry();
    let p = parse_ok(
        &doc(concat!(
            "  sections:\n",
            "    - name: s\n",
            "      rules:\n",
            "        - {id: watch-any-ssh, action: allow, mode: monitor, ports: [22]}\n",
            "        - {id: by-name, action: allow, from: {workload: [web-dev, web-test]}, to: {workload: db-prod}}\n",
            "        - {id: labels-and, action: allow, from: {labels: {tier: frontend, pci: \"yes\"}}, to: {app: db}}\n",
            "        - {id: not-known-zone, action: deny, from: {not: {zone: [dev, test, prod]}}, to: {zone: prod}, ports: [5432]}\n",
            "        - {id: not-nested, action: allow, from: {zone: dev, not: {app: web, not: {labels: {tier: frontend}}}}, to: {app: api}}\n",
            "        - {id: cidr-host, action: allow, from: {cidr: 192.0.2.9}, to: {cidr: \"10.99.0.0/16\"}}\n",
            "        - {id: any-to-web, action: allow, to: {app: web}, ports: [\"80\", 443]}\n",
            "        - {id: deny-rest-mon, action: deny, mode: monitor}\n",
        )),
        &reg,
    );
    #[rustfmt::skip]
    check_table(&p, &reg, &[
        // workload list is OR; both endpoints must match.
        (WEB_DEV, DB_PROD, 1, "by-name", true, &["deny-rest-mon"][..0]),
        (WEB_TEST, DB_PROD, 1, "by-name", true, &[]),
        (WEB_PROD, DB_PROD, 2, "labels-and", true, &[]),
        // labels: every key must match (web-dev lacks pci: yes).
        (WEB_DEV, "10.99.2.3", 22, "by-name", true, &["watch-any-ssh"]),
        // not: an unknown source has no zone, so `not: {zone: ...}` matches it.
        ("10.1.1.1", DB_PROD, 5432, "not-known-zone", false, &[]),
        ("10.1.1.1", DB_PROD, 5433, "default-deny", false, &["deny-rest-mon"]),
        // nested not: dev web (frontend) is allowed to api; nothing else in dev is web.
        (WEB_DEV, API_DEV, 1, "not-nested", true, &[]),
        (API_DEV, API_DEV, 1, "not-nested", true, &[]),
        // cidr with a bare address; unknown source, known destination by address.
        (STRANGER, API_DEV, 9, "cidr-host", true, &[]),
        (STRANGER, "10.98.0.1", 9, "default-deny", false, &["deny-rest-mon"]),
        // ports as strings and numbers; unknown sources match a rule without `from`.
        ("192.0.2.10", WEB_TEST, 80, "any-to-web", true, &[]),
        ("2001:db8::1", WEB_TEST, 443, "any-to-web", true, &[]),
        ("2001:db8::1", WEB_TEST, 444, "default-deny", false, &["deny-rest-mon"]),
        ("2001:db8::1", "2001:db8::2", 22, "default-deny", false, &["watch-any-ssh", "deny-rest-mon"]),
    ]);
}

/// `(src, src identity, dst, dst identity, port, deciding rule id, allowed)`.
type IdRow<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    u16,
    &'a str,
    bool,
);

#[test]
fn decide_spiffe_selectors() {
    let reg = registry();
    let p = parse_ok(
        &doc(concat!(
            "  sections:\n",
            "    - name: guard\n",
            "      rules:\n",
            "        - {id: only-payments-to-db, action: deny, from: {not: {spiffe: spiffe://corp.example/zone/prod/payments}}, to: {app: db}}\n",
            "    - name: allow\n",
            "      rules:\n",
            "        - {id: payments-db, action: allow, from: {spiffe: spiffe://corp.example/zone/prod/payments}, to: {app: db}, ports: [5432]}\n",
            "        - {id: prod-prefix, action: allow, from: {spiffePrefix: [\"spiffe://corp.example/zone/prod/\", spiffe://corp.example/wl/db-]}, to: {zone: prod}}\n",
            "        - {id: to-proven-api, action: allow, to: {spiffe: [spiffe://corp.example/wl/api-dev, spiffe://corp.example/wl/web-dev]}}\n",
            "        - {id: proven-and-zone, action: allow, from: {zone: prod, spiffePrefix: spiffe://corp.example/wl/}, to: {cidr: 192.0.2.0/24}}\n",
        )),
        &reg,
    );
    let other_td = "spiffe://other.example/zone/prod/payments";
    #[rustfmt::skip]
    let rows: &[IdRow<'_>] = &[
        // The proven identity decides, not the address.
        (PAY1, Some(PAYMENTS_ID), DB_PROD, None, 5432, "payments-db", true),
        (PAY2, Some(PAYMENTS_ID), DB_PROD_V6, None, 5432, "payments-db", true),
        (STRANGER, Some(PAYMENTS_ID), DB_PROD, None, 5432, "payments-db", true),
        // Unproven: the registry's identity for the address is not used, so `spiffe` does
        // not match and `not: {spiffe: ...}` does.
        (PAY1, None, DB_PROD, None, 5432, "only-payments-to-db", false),
        (WEB_PROD, Some(WEB_PROD_ID), DB_PROD, None, 5432, "only-payments-to-db", false),
        (PAY1, Some(other_td), DB_PROD, None, 5432, "only-payments-to-db", false),
        (PAY1, Some("spiffe://corp.example/zone/prod/payments-x"), DB_PROD, None, 5432, "only-payments-to-db", false),
        // Prefixes: a whole-segment prefix (trailing `/`) and a partial-segment one.
        (PAY2, Some(PAYMENTS_ID), DB_PROD, None, 5433, "prod-prefix", true),
        (PAY1, Some(PAYMENTS_ID), WEB_PROD, None, 443, "prod-prefix", true),
        (DB_PROD, Some(DB_PROD_ID), PAY1, None, 443, "prod-prefix", true),
        (DB_PROD, None, PAY1, None, 443, "default-deny", false),
        (API_DEV, Some(API_DEV_ID), PAY1, None, 443, "default-deny", false),
        (PAY1, Some("spiffe://corp.example/zone/production/x"), WEB_PROD, None, 443, "default-deny", false),
        (PAY1, Some("spiffe://corp.example/zone/prod"), WEB_PROD, None, 443, "default-deny", false),
        // Destination identity, exact list (OR).
        (STRANGER, None, API_DEV, Some(API_DEV_ID), 8080, "to-proven-api", true),
        (STRANGER, None, WEB_DEV, Some("spiffe://corp.example/wl/web-dev"), 80, "to-proven-api", true),
        (STRANGER, None, API_DEV, None, 8080, "default-deny", false),
        (STRANGER, None, API_DEV, Some(WEB_PROD_ID), 8080, "default-deny", false),
        // Identity criteria AND registry criteria.
        (WEB_PROD, Some(WEB_PROD_ID), STRANGER, None, 1, "proven-and-zone", true),
        (WEB_DEV, Some("spiffe://corp.example/wl/web-dev"), STRANGER, None, 1, "default-deny", false),
        (STRANGER, Some(WEB_PROD_ID), STRANGER, None, 1, "default-deny", false),
    ];
    for &(src, src_id, dst, dst_id, port, rule, allowed) in rows {
        let d = decide_ids(&p, &reg, (src, src_id), (dst, dst_id), port);
        assert_eq!(
            (d.rule_id(), d.is_allowed()),
            (rule, allowed),
            "{src} ({src_id:?}) -> {dst} ({dst_id:?}):{port}"
        );
    }
    // `Endpoint::lookup` never fills the identity from the registry.
    assert!(Endpoint::lookup(&reg, ip(PAY1)).identity.is_none());
}

#[test]
fn decide_identity_example_policy() {
    let reg = registry();
    let p = parse_ok(POLICY_IDENTITY, &reg);
    assert_eq!(p.name(), Some("db-by-identity"));
    #[rustfmt::skip]
    let rows: &[IdRow<'_>] = &[
        (PAY1, Some(PAYMENTS_ID), DB_PROD, None, 5432, "payments-to-db", true),
        (PAY2, Some(PAYMENTS_ID), DB_PROD, None, 5432, "payments-to-db", true),
        (PAY1, None, DB_PROD, None, 5432, "only-payments-to-db", false),
        (WEB_PROD, Some(WEB_PROD_ID), DB_PROD, None, 5432, "only-payments-to-db", false),
        (PAY1, Some(PAYMENTS_ID), WEB_PROD, None, 443, "prod-services", true),
        (PAY1, Some(PAYMENTS_ID), WEB_PROD, None, 80, "default-deny", false),
        (WEB_PROD, Some(WEB_PROD_ID), PAY1, None, 443, "default-deny", false),
    ];
    for &(src, src_id, dst, dst_id, port, rule, allowed) in rows {
        let d = decide_ids(&p, &reg, (src, src_id), (dst, dst_id), port);
        assert_eq!(
            (d.rule_id(), d.is_allowed()),
            (rule, allowed),
            "{src} -> {dst}:{port}"
        );
    }
}

#[test]
fn spiffe_errors_are_located() {
    let reg = Registry::empty();
    #[rustfmt::skip]
    let cases: &[(String, &[&str])] = &[
        (one_rule("id: r, action: allow, from: {spiffe: [http://x/y, \"spiffe://corp.example/a//b\", spiffe://Corp/x]}"), &[
            "p.yaml:7:50: invalid SPIFFE ID `http://x/y`: a SPIFFE ID starts with `spiffe://`",
            "p.yaml:7:62: invalid SPIFFE ID `spiffe://corp.example/a//b`: a path segment is empty",
            "p.yaml:7:92: invalid SPIFFE ID `spiffe://Corp/x`: the trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (found 'C')",
        ]),
        (one_rule("id: r, action: allow, to: {spiffePrefix: [corp.example/, spiffe://corp.example, \"spiffe://corp.example/a b\", spiffe://corp.example/x//, spiffe://corp.example/../]}"), &[
            "p.yaml:7:54: invalid SPIFFE ID prefix `corp.example/`: it must start with `spiffe://`",
            "p.yaml:7:69: invalid SPIFFE ID prefix `spiffe://corp.example`: give the whole trust domain and a `/` (e.g. `spiffe://corp.example/`), so that it cannot match another trust domain",
            "p.yaml:7:92: invalid SPIFFE ID prefix `spiffe://corp.example/a b`: a path segment may hold only letters, digits, `.`, `-` and `_` (found ' ')",
            "p.yaml:7:121: invalid SPIFFE ID prefix `spiffe://corp.example/x//`: a path segment is empty",
            "p.yaml:7:148: invalid SPIFFE ID prefix `spiffe://corp.example/../`: a path segment may not be `.` or `..`",
        ]),
        (one_rule("id: r, action: deny, from: {spiffe: [], spiffePrefix: []}, to: {not: {spiffe: nope}}"), &[
            "p.yaml:7:48: empty `spiffe` list (it would match nothing); omit the field to match any",
            "p.yaml:7:66: empty `spiffePrefix` list (it would match nothing); omit the field to match any",
            "p.yaml:7:90: invalid SPIFFE ID `nope`: a SPIFFE ID starts with `spiffe://`",
        ]),
    ];
    for (text, want) in cases {
        assert_eq!(errors(text, &reg), *want, "for:\n{text}");
    }
    // A misspelt key is an unknown field.
    let e = errors(
        &one_rule("id: r, action: allow, from: {spiffe_prefix: spiffe://a/}"),
        &reg,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("p.yaml:7:41: ") && e[0].contains("spiffe_prefix"),
        "{e:?}"
    );
}

#[test]
fn spiffe_warnings() {
    let text = one_rule(concat!(
        "id: r, action: allow, from: {spiffe: [spiffe://corp.example/wl/ghost, spiffe://corp.example/node/hostA, ",
        "spiffe://corp.example/wl/web-dev, spiffe://other.example/zone/prod/payments]}, ",
        "to: {spiffePrefix: [spiffe://corp.example/team/, spiffe://corp.example/wl/, spiffe://corp.example/zone/prod/pay]}",
    ));
    #[rustfmt::skip]
    assert_eq!(warnings(&text, &registry()), [
        "p.yaml:7:50: warning: no registry workload has identity `spiffe://corp.example/wl/ghost`",
        "p.yaml:7:82: warning: `spiffe://corp.example/node/hostA` is the identity of node `hostA`, which no registry workload has",
        "p.yaml:7:150: warning: no registry workload has identity `spiffe://other.example/zone/prod/payments`",
        "p.yaml:7:215: warning: no registry workload identity starts with `spiffe://corp.example/team/`",
    ]);
    // Without a registry there is nothing to compare with.
    assert!(warnings(&text, &Registry::empty()).is_empty());
}

#[test]
fn api_dev_nested_not_detail() {
    // Spelled out: `not: {app: web, not: {labels: {tier: frontend}}}` excludes web
    // workloads that are not frontend; api-dev is not web, so it is not excluded.
    let reg = registry();
    let api_dev = reg.workload("api-dev").unwrap();
    let sel = Selector {
        not: Some(Box::new(Selector {
            app: Some(selector::NameSet::new(vec!["web".into()])),
            ..Selector::default()
        })),
        ..Selector::default()
    };
    let ep = Endpoint {
        addr: ip(API_DEV),
        workload: Some(api_dev),
        identity: None,
        user: None,
        groups: None,
    };
    assert!(sel.matches(&ep));
}

#[test]
fn plain_scalar_names() {
    let text = "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  nodes: [{name: h}]\n  workloads:\n    - {name: a, node: h, addresses: [10.0.0.1], zone: 5}\n";
    let reg = Registry::parse("r", text).unwrap();
    for sel in ["zone: 5", "zone: [5]", "zone: \"5\""] {
        let p = parse_ok(
            &one_rule(&format!("id: r, action: allow, from: {{{sel}}}")),
            &reg,
        );
        assert_eq!(
            decide(&p, &reg, "10.0.0.1", "10.0.0.2", 1).rule_id(),
            "r",
            "{sel}"
        );
    }
}

#[test]
fn empty_policies_deny_everything() {
    let reg = registry();
    for text in [
        doc("  sections: []\n"),
        doc("  {}\n"),
        doc("  sections:\n    - name: empty\n"),
    ] {
        let p = parse_ok(&text, &reg);
        assert_eq!(p.rule_count(), 0);
        let d = decide(&p, &reg, WEB_DEV, API_DEV, 80);
        assert_eq!(
            (d.rule_id(), d.action, &d.rule),
            ("default-deny", Action::Deny, &None)
        );
    }
    let d = Policy::deny_all().decide(&Flow::new(
        Endpoint::lookup(&reg, ip(WEB_DEV)),
        Endpoint::lookup(&reg, ip(WEB_DEV)),
        1,
    ));
    assert!(!d.is_allowed());
    assert!(d.monitored.is_empty());
    assert_eq!(Policy::deny_all().rule_count(), 0);
}

#[test]
fn display_of_enums() {
    assert_eq!(Action::Allow.to_string(), "allow");
    assert_eq!(Action::Deny.as_str(), "deny");
    assert_eq!(Mode::Enforce.as_str(), "enforce");
    assert_eq!(Mode::Monitor.to_string(), "monitor");
    assert_eq!(Mode::default(), Mode::Enforce);
}

#[test]
fn policy_is_send_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Decision>();
}

/// One rule in a section, for error tests: `rule` is the YAML flow mapping body.
fn one_rule(rule: &str) -> String {
    doc(&format!(
        "  sections:\n    - name: s\n      rules:\n        - {{{rule}}}\n"
    ))
}

#[test]
fn validation_errors_are_located() {
    let reg = Registry::empty();
    #[rustfmt::skip]
    let cases: &[(String, &[&str])] = &[
        (one_rule("id: r, action: allow, ports: [0, 65536, 80]"), &[
            "p.yaml:7:42: port 0 is out of range (1-65535)",
            "p.yaml:7:45: port 65536 is out of range (1-65535)",
        ]),
        (one_rule("id: r, action: allow, ports: [-1, \"0-5\", \"80-70000\"]"), &[
            "p.yaml:7:42: port -1 is out of range (1-65535)",
            "p.yaml:7:46: port `0-5` is out of range (1-65535)",
            "p.yaml:7:53: port `80-70000` is out of range (1-65535)",
        ]),
        (one_rule("id: r, action: allow, ports: [\"9000-8000\", \"80-\", \"a-b\", \"http\", \" \"]"), &[
            "p.yaml:7:42: port range `9000-8000` is reversed: 9000 is greater than 8000",
            "p.yaml:7:55: invalid port `80-` (expected 1-65535 or a range string like \"8000-8080\")",
            "p.yaml:7:62: invalid port `a-b` (expected 1-65535 or a range string like \"8000-8080\")",
            "p.yaml:7:69: invalid port `http` (expected 1-65535 or a range string like \"8000-8080\")",
            "p.yaml:7:77: invalid port ` ` (expected 1-65535 or a range string like \"8000-8080\")",
        ]),
        (one_rule("id: r, action: allow, ports: [\"8000-8080\", 8080, 20, \"10-30\", 25]"), &[
            "p.yaml:7:55: port ranges 8000-8080 and 8080 overlap",
            "p.yaml:7:65: port ranges 20 and 10-30 overlap",
            "p.yaml:7:74: port ranges 10-30 and 25 overlap",
        ]),
        (one_rule("id: r, action: allow, ports: []"), &[
            "p.yaml:7:41: empty `ports` list (it would match nothing); omit the field to match every protocol and port",
        ]),
        (one_rule("id: r, action: permit, mode: audit"), &[
            "p.yaml:7:27: invalid action `permit` (expected allow or deny)",
            "p.yaml:7:41: invalid mode `audit` (expected enforce or monitor)",
        ]),
        (one_rule("id: r, action: deny, to: {cidr: [10.0.0.0/33, fe80::/10, \"10.0.0\", ::1]}"), &[
            "p.yaml:7:45: invalid CIDR `10.0.0.0/33` (expected an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/16)",
            "p.yaml:7:69: invalid CIDR `10.0.0` (expected an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/16)",
        ]),
        (one_rule("id: r, action: deny, from: {not: {}}, to: {zone: [], labels: {}}"), &[
            "p.yaml:7:45: empty `not: {}` would match nothing; give at least one criterion",
            "p.yaml:7:61: empty `zone` list (it would match nothing); omit the field to match any",
            "p.yaml:7:73: empty `labels` map; omit the field to match any",
        ]),
        (one_rule("id: -r, action: deny, from: {app: \"bad name\"}"), &[
            "p.yaml:7:16: invalid rule id `-r`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
            "p.yaml:7:46: invalid app name `bad name`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
        ]),
        (doc(concat!(
            "  sections:\n",
            "    - name: a\n",
            "      rules:\n",
            "        - id: x\n",
            "          action: allow\n",
            "    - name: b\n",
            "      rules:\n",
            "        - id: x\n",
            "          action: deny\n",
            "    - name: a\n",
        )), &[
            "p.yaml:11:15: duplicate rule id `x` (first at 7:15)",
            "p.yaml:13:13: duplicate section name `a` (first at 5:13)",
        ]),
    ];
    for (text, want) in cases {
        assert_eq!(errors(text, &reg), *want, "for:\n{text}");
    }
}

#[test]
fn shape_errors_are_located() {
    let reg = Registry::empty();
    // Unknown selector key: exactly one error, pointing at the key.
    let e = errors(&one_rule("id: r, action: allow, from: {zonee: dev}"), &reg);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("p.yaml:7:41: "), "{e:?}");
    assert!(e[0].contains("zonee"), "{e:?}");
    // Unknown rule field.
    let e = errors(&one_rule("id: r, action: allow, port: [80]"), &reg);
    assert!(
        e[0].starts_with("p.yaml:7:34: ") && e[0].contains("port"),
        "{e:?}"
    );
    // Missing required field.
    let e = errors(&one_rule("id: r"), &reg);
    assert!(
        e[0].starts_with("p.yaml:7:") && e[0].contains("action"),
        "{e:?}"
    );
    // Wrong type.
    let e = errors(&one_rule("id: r, action: allow, ports: [1.5]"), &reg);
    assert!(e[0].starts_with("p.yaml:7:"), "{e:?}");
    let e = errors(
        &one_rule("id: r, action: allow, from: {zone: {a: b}}"),
        &reg,
    );
    assert!(e[0].starts_with("p.yaml:7:"), "{e:?}");
    // Header.
    assert_eq!(
        errors(
            "apiVersion: eastwall.dev/v1\nkind: Registry\nspec: {}\n",
            &reg
        ),
        ["p.yaml:2:7: expected kind `Policy`, found `Registry`"]
    );
    assert_eq!(
        errors("apiVersion: eastwall/v1\nkind: Policy\nspec: {}\n", &reg),
        ["p.yaml:1:13: unsupported apiVersion `eastwall/v1` (expected `eastwall.dev/v1`)"]
    );
    for e in errors(
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec: {sections: [}\n",
        &reg,
    ) {
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn all_errors_of_a_file_are_reported() {
    let reg = registry();
    let text = doc(concat!(
        "  sections:\n",
        "    - name: s\n",
        "      rules:\n",
        "        - {id: a, action: allow, ports: [0]}\n",
        "        - {id: b, action: allow, to: {cidr: nope, app: nothing}}\n",
        "        - {id: a, action: allow}\n",
    ));
    assert_eq!(
        errors(&text, &reg),
        [
            "p.yaml:7:42: port 0 is out of range (1-65535)",
            "p.yaml:8:45: invalid CIDR `nope` (expected an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/16)",
            "p.yaml:8:56: warning: no registry workload has app `nothing`",
            "p.yaml:9:16: duplicate rule id `a` (first at 7:16)",
        ]
    );
}

#[test]
fn warnings_for_names_the_registry_lacks() {
    let text = one_rule(
        "id: r, action: allow, from: {workload: [web-dev, ghost], zone: staging}, to: {app: dbx, labels: {tier: gold}, cidr: 10.0.0.1/8}",
    );
    #[rustfmt::skip]
    assert_eq!(warnings(&text, &registry()), [
        "p.yaml:7:61: warning: no registry workload is named `ghost`",
        "p.yaml:7:75: warning: no registry workload has zone `staging`",
        "p.yaml:7:95: warning: no registry workload has app `dbx`",
        "p.yaml:7:108: warning: no registry workload has label `tier: gold`",
        "p.yaml:7:128: warning: CIDR `10.0.0.1/8` has host bits set; it means 10.0.0.0/8",
    ]);
    // Without a registry only the CIDR warning remains.
    assert_eq!(warnings(&text, &Registry::empty()).len(), 1);
    // The example policy is clean against the example registry.
    assert!(warnings(POLICY, &registry()).is_empty());
}

/// A small deterministic PRNG (splitmix64) so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Generates a random but valid policy over the example registry's names, with L7
/// conditions on some rules.
fn random_policy(rng: &mut Rng, rules: usize) -> String {
    let zones = ["dev", "test", "prod"];
    let apps = ["web", "api", "db"];
    let mut out = String::from("  sections:\n    - name: gen\n      rules:\n");
    for i in 0..rules {
        let sel = |rng: &mut Rng| -> String {
            match rng.below(11) {
                0 => String::new(),
                1 => format!("zone: {}", rng.pick(&zones)),
                2 => format!("app: [{}, {}]", rng.pick(&apps), rng.pick(&apps)),
                3 => format!("not: {{zone: {}}}", rng.pick(&zones)),
                4 => "cidr: [10.99.1.0/24, 10.200.0.0/16]".to_owned(),
                5 => format!("spiffe: {}", rng.pick(&[PAYMENTS_ID, WEB_PROD_ID])),
                6 => format!(
                    "spiffePrefix: [{}]",
                    rng.pick(&[
                        "spiffe://corp.example/zone/",
                        "spiffe://corp.example/wl/web-"
                    ])
                ),
                7 => format!("not: {{spiffe: [{PAYMENTS_ID}, {DB_PROD_ID}]}}"),
                8 => format!("group: [{}]", rng.pick(&["finance", "hr"])),
                9 => format!("not: {{group: {}}}", rng.pick(&["finance", "hr"])),
                _ => format!("labels: {{tier: {}}}", rng.pick(&["frontend", "backend"])),
            }
        };
        let from = sel(rng);
        let mut to = sel(rng);
        if rng.below(2) == 0 {
            let l7 = random_l7(rng);
            to = if to.is_empty() {
                l7
            } else {
                format!("{to}, {l7}")
            };
        }
        let ports = match rng.below(7) {
            0 => String::new(),
            1 => format!(", ports: [{}]", 1 + rng.below(100)),
            4 => format!(
                ", ports: [{{port: {}, protocol: UDP}}, {}]",
                1 + rng.below(100),
                1 + rng.below(100)
            ),
            5 => ", ports: [{protocol: UDP}, {protocol: ICMP, icmpType: 8}]".to_owned(),
            6 => {
                let lo = 1 + rng.below(90);
                format!(
                    ", ports: [{{port: \"{lo}-{}\", protocol: UDP}}, {{protocol: 47}}, {{protocol: ICMP}}]",
                    lo + 5
                )
            }
            2 => {
                let lo = 1 + rng.below(90);
                format!(
                    ", ports: [\"{lo}-{}\", {}]",
                    lo + rng.below(10),
                    200 + rng.below(50)
                )
            }
            _ => ", ports: [\"1-65535\"]".to_owned(),
        };
        let action = if rng.below(2) == 0 { "allow" } else { "deny" };
        let mode = if rng.below(4) == 0 {
            "monitor"
        } else {
            "enforce"
        };
        out.push_str(&format!(
            "        - {{id: r{i}, action: {action}, mode: {mode}, from: {{{from}}}, to: {{{to}}}{ports}}}\n"
        ));
    }
    out
}

/// Random `http` and/or `tls` conditions.
fn random_l7(rng: &mut Rng) -> String {
    let entry = |rng: &mut Rng| -> String {
        let mut fields = Vec::new();
        if rng.below(2) == 0 {
            fields.push(format!(
                "methods: [{}, {}]",
                rng.pick(&["GET", "POST", "DELETE"]),
                rng.pick(&["GET", "POST"])
            ));
        }
        if rng.below(2) == 0 {
            fields.push(format!(
                "paths: [\"{}\"]",
                rng.pick(&["/api/*", "/api/v1/x", "/admin/*", "/**/x", "/api/*/x", "/*"])
            ));
        }
        if rng.below(3) == 0 {
            fields.push(format!(
                "hosts: [\"{}\"]",
                rng.pick(&["a.example", "*.example", "b.example"])
            ));
        }
        if rng.below(4) == 0 {
            fields.push(format!(
                "headers: {{x-env: \"{}\"}}",
                rng.pick(&["prod", "p*", "*"])
            ));
        }
        format!("{{{}}}", fields.join(", "))
    };
    let http = |rng: &mut Rng| -> String {
        let n = 1 + rng.below(2);
        let entries: Vec<String> = (0..n).map(|_| entry(rng)).collect();
        format!("http: [{}]", entries.join(", "))
    };
    let tls = |rng: &mut Rng| -> String {
        match rng.below(3) {
            0 => "tls: {}".to_owned(),
            _ => format!(
                "tls: {{sni: [\"{}\"]}}",
                rng.pick(&["a.example", "*.example", "b.other"])
            ),
        }
    };
    match rng.below(4) {
        0 | 1 => http(rng),
        2 => tls(rng),
        _ => format!("{}, {}", http(rng), tls(rng)),
    }
}

#[test]
fn index_agrees_with_linear_scan() {
    let reg = registry();
    let addrs = [
        WEB_DEV, API_DEV, WEB_TEST, WEB_PROD, DB_PROD, DB_PROD_V6, OUTSIDE, STRANGER, PAY1,
    ];
    // "" = no proven identity.
    let ids = ["", "", PAYMENTS_ID, WEB_PROD_ID, DB_PROD_ID, API_DEV_ID];
    let finance = vec!["finance".to_owned()];
    let hr = vec!["hr".to_owned()];
    let mut headers = http::HeaderMap::new();
    headers.insert("x-env", http::HeaderValue::from_static("prod"));
    let no_headers = http::HeaderMap::new();
    let mut rng = Rng(7);
    let mut decided_l7 = 0;
    let mut dead_total = 0;
    for round in 0..30 {
        let n = 1 + rng.below(60) as usize;
        let text = doc(&random_policy(&mut rng, n));
        let (p, warnings) = match Policy::parse("p.yaml", &text, &reg) {
            Ok(ok) => ok,
            Err(e) => panic!("generated policy rejected:\n{e}\n{text}"),
        };
        assert!(p.index.of(Protocol::Tcp).is_some() && p.index.of(Protocol::Udp).is_some());
        // Rules `check` calls dead: they must never decide nor be recorded on final
        // decisions (the shadowing test must be conservative).
        let dead: Vec<String> = warnings
            .iter()
            .filter_map(|w| {
                let m = w.message.strip_prefix("rule `")?;
                let (id, rest) = m.split_once('`')?;
                rest.starts_with(" can never match").then(|| id.to_owned())
            })
            .collect();
        dead_total += dead.len();
        for _ in 0..500 {
            let port = match rng.below(3) {
                0 => rng.below(300) as u16,
                1 => 1 + rng.below(65535) as u16,
                _ => u16::MAX,
            };
            let mut id = || {
                let id = rng.pick(&ids);
                (!id.is_empty()).then_some(id)
            };
            let (src_id, dst_id) = (id(), id());
            let src_id = src_id.map(|s| SpiffeId::parse(s).unwrap());
            let dst_id = dst_id.map(|s| SpiffeId::parse(s).unwrap());
            let (user, groups): (Option<&str>, Option<&[String]>) = match rng.below(4) {
                0 => (None, None),
                1 => (Some("alice"), Some(&finance)),
                2 => (Some("bob"), Some(&hr)),
                _ => (Some("carol"), None),
            };
            let path = rng
                .pick(&["/api/v1/x", "/admin/a", "/x", "/api/", "/"])
                .to_owned();
            let facts = HttpRequestFacts {
                method: rng.pick(&["GET", "POST", "DELETE"]),
                host: [Some("a.example"), Some("x.example"), None][rng.below(3) as usize],
                path: &path,
                headers: if rng.below(2) == 0 {
                    &headers
                } else {
                    &no_headers
                },
            };
            let l7 = match rng.below(6) {
                0 | 1 => L7::Unknown,
                2 => L7::Opaque,
                3 => L7::Tls {
                    sni: [Some("a.example"), Some("b.other"), None][rng.below(3) as usize],
                },
                _ => L7::Http(&facts),
            };
            let flow = Flow::new(
                Endpoint::lookup(&reg, ip(rng.pick(&addrs)))
                    .with_identity(src_id.as_ref())
                    .with_user(user, groups),
                Endpoint::lookup(&reg, ip(rng.pick(&addrs))).with_identity(dst_id.as_ref()),
                port,
            )
            .with_l7(l7)
            .with_protocol(match rng.below(6) {
                0 => Protocol::Udp,
                1 => Protocol::Icmp {
                    kind: [0, 8][rng.below(2) as usize],
                    code: 0,
                },
                2 => Protocol::Other(47),
                _ => Protocol::Tcp,
            });
            let d = p.decide(&flow);
            assert_eq!(d, p.decide_linear(&flow), "index and linear scan disagree");
            let e = p.explain(&flow);
            assert_eq!(e.decision, d, "explain disagrees, round {round}");
            if let Some(r) = &d.rule {
                assert!(p.rules.iter().any(|x| x.rref == *r), "round {round}");
            }
            if !matches!(l7, L7::Unknown) {
                assert!(!d.needs_l7);
                decided_l7 += usize::from(d.rule.is_some());
                for hit in d.rule.iter().chain(d.monitored.iter().map(|m| &m.rule)) {
                    assert!(
                        !dead.iter().any(|x| **x == *hit.id),
                        "rule `{}` was called dead but matched {flow:?}\n{warnings}\n{text}",
                        hit.id
                    );
                }
            }
        }
    }
    // Both checks must have had something to check.
    assert!(decided_l7 > 1000, "{decided_l7}");
    assert!(dead_total > 20, "{dead_total}");
    eprintln!("{decided_l7} final decisions by a rule, {dead_total} dead rules");
}

#[test]
fn many_rules_are_indexed() {
    let mut body = String::from("  sections:\n    - name: big\n      rules:\n");
    for i in 0..10_000u32 {
        let port = 1 + (i % 60_000);
        body.push_str(&format!(
            "        - {{id: r{i}, action: allow, from: {{cidr: 10.0.0.0/8}}, ports: [{port}]}}\n"
        ));
    }
    let (p, _) = Policy::parse("big.yaml", &doc(&body), &Registry::empty()).unwrap();
    assert_eq!(p.rule_count(), 10_000);
    let ix = p.index.of(Protocol::Tcp).unwrap();
    assert_eq!(ix.candidates(5000).count(), 1);
    let reg = Registry::empty();
    let d = decide(&p, &reg, "10.1.2.3", "10.9.9.9", 5000);
    assert_eq!(d.rule_id(), "r4999");
    assert_eq!(
        decide(&p, &reg, "11.1.2.3", "10.9.9.9", 5000).rule_id(),
        "default-deny"
    );
}

#[test]
fn hostile_inputs_do_not_panic() {
    let reg = registry();
    let deep_not = {
        let mut s = String::from("zone: dev");
        for _ in 0..200 {
            s = format!("not: {{{s}}}");
        }
        one_rule(&format!("id: r, action: deny, from: {{{s}}}"))
    };
    let inputs = [
        String::new(),
        "\0\u{1}".to_owned(),
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_owned(),
        "a: &a [*a]".to_owned(),
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec: {sections: [{name: s, rules: [{id: r, action: allow, ports: [99999999999999999999999999]}]}]}\n".to_owned(),
        "apiVersion: eastwall.dev/v1\nkind: Policy\n---\napiVersion: eastwall.dev/v1\n".to_owned(),
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections: !!binary aGVsbG8=\n".to_owned(),
        deep_not,
        "x".repeat(crate::MAX_FILE_BYTES + 1),
    ];
    for text in &inputs {
        let r = Policy::parse("h.yaml", text, &reg);
        assert!(r.is_err(), "accepted {:?}", &text[..text.len().min(80)]);
        let _ = Registry::parse("h.yaml", text);
        let _ = crate::document_kind("h.yaml", text);
    }
}

#[test]
fn docs_examples_are_valid() {
    const DOCS: &str = include_str!("../../../docs/POLICY.md");
    let blocks: Vec<&str> = DOCS
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml))
        .collect();
    assert!(blocks.len() >= 5, "{}", blocks.len());
    let reg_text = blocks
        .iter()
        .find(|b| b.contains("kind: Registry"))
        .unwrap();
    let reg = Registry::parse("POLICY.md", reg_text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg.trust_domain(), "corp.example");
    for b in blocks.iter().filter(|b| b.contains("kind: Policy")) {
        if let Err(e) = Policy::parse("POLICY.md", b, &reg) {
            panic!("docs example rejected:\n{e}\n{b}");
        }
    }
}

/// The finance-versus-HR example: group rules, user rules, negation, and fail-closed when a
/// user's groups are unknown.
#[test]
fn decide_user_and_group_selectors() {
    let text = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: identity-firewall
      rules:
        - id: contractors-never
          action: deny
          from: {group: contractors}
        - id: finance-api
          action: allow
          from: {group: [finance, finance-admins]}
          ports: [443]
        - id: not-hr-metrics
          action: allow
          from: {not: {group: hr}}
          ports: [9100]
        - id: alice-ssh
          action: allow
          from: {user: alice}
          ports: [22]
"#;
    let (p, _) = Policy::parse("p.yaml", text, &Registry::empty()).unwrap();
    let g = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (finance, hr, both) = (g(&["finance"]), g(&["hr"]), g(&["contractors", "finance"]));
    let dst = Endpoint {
        addr: ip("10.0.0.9"),
        workload: None,
        identity: None,
        user: None,
        groups: None,
    };
    let decide = |user: Option<&str>, groups: Option<&[String]>, port: u16| {
        let src = Endpoint {
            addr: ip("10.0.0.1"),
            workload: None,
            identity: None,
            user,
            groups,
        };
        p.decide(&Flow::new(src, dst, port)).rule_id().to_owned()
    };
    type Case<'a> = (Option<&'a str>, Option<&'a [String]>, u16, &'a str);
    let table: &[Case<'_>] = &[
        (Some("alice"), Some(&finance), 443, "finance-api"),
        (Some("bob"), Some(&hr), 443, "default-deny"),
        (Some("carol"), Some(&both), 443, "contractors-never"),
        (Some("bob"), Some(&hr), 9100, "default-deny"),
        (Some("alice"), Some(&finance), 9100, "not-hr-metrics"),
        // A workload without a user is "not in hr".
        (None, None, 9100, "not-hr-metrics"),
        (None, None, 443, "default-deny"),
        // Groups unknown: no rule that mentions groups matches, negated or not, deny or allow;
        // rules on the user alone still do.
        (Some("alice"), None, 443, "default-deny"),
        (Some("alice"), None, 9100, "default-deny"),
        (Some("alice"), None, 22, "alice-ssh"),
        (Some("bob"), Some(&hr), 22, "default-deny"),
    ];
    for (user, groups, port, want) in table {
        assert_eq!(
            decide(*user, *groups, *port),
            *want,
            "{user:?} {groups:?} :{port}"
        );
    }
}

#[test]
fn empty_user_and_group_lists_are_errors() {
    let text = "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n    - name: s\n      rules:\n        - id: a\n          action: allow\n          from: {user: [], group: \"\"}\n";
    let errs = Policy::parse("p.yaml", text, &Registry::empty())
        .unwrap_err()
        .to_string();
    assert!(errs.contains("p.yaml:9:24: empty `user` list"), "{errs}");
    assert!(errs.contains("empty group name"), "{errs}");
}

/// The parts of a rule from a small vocabulary: from, to selector, L7, ports, action, mode.
type SmallRule = [&'static str; 6];

fn small_rule(rng: &mut Rng) -> SmallRule {
    const SELECTORS: &[&str] = &[
        "",
        "zone: prod",
        "app: web",
        "zone: prod, app: web",
        "app: [web, db]",
        "not: {zone: dev}",
        "not: {zone: [dev, test]}",
        "zone: prod, not: {app: db}",
        "cidr: 10.99.0.0/16",
        "cidr: [10.99.2.0/24, 10.200.0.0/16]",
        "group: finance",
        "not: {group: finance}",
        "spiffePrefix: \"spiffe://corp.example/zone/\"",
        "spiffe: spiffe://corp.example/zone/prod/payments",
    ];
    [
        rng.pick(SELECTORS),
        rng.pick(SELECTORS),
        rng.pick(&[
            "",
            "",
            "http: [{}]",
            "http: [{methods: [GET]}]",
            "http: [{methods: [GET, POST], paths: [\"/api/*\"]}]",
            "http: [{paths: [\"/api/v1/x\", \"/admin/*\"]}]",
            "http: [{hosts: [a.example]}]",
            "http: [{hosts: [\"*.example\"], headers: {x-env: \"p*\"}}]",
            "tls: {}",
            "tls: {sni: [\"*.example\"]}",
            "tls: {sni: [a.example]}",
            "http: [{methods: [GET]}], tls: {sni: [a.example]}",
            "http: [{}], tls: {}",
        ]),
        rng.pick(&[
            "",
            ", ports: [80]",
            ", ports: [22, 80]",
            ", ports: [\"1-100\"]",
        ]),
        rng.pick(&["allow", "deny"]),
        rng.pick(&["enforce", "enforce", "monitor"]),
    ]
}

fn small_rule_yaml(id: &str, [from, to, l7, ports, action, mode]: SmallRule) -> String {
    let to = match (to, l7) {
        (t, "") => t.to_owned(),
        ("", l) => l.to_owned(),
        (t, l) => format!("{t}, {l}"),
    };
    format!(
        "        - {{id: {id}, action: {action}, mode: {mode}, from: {{{from}}}, to: {{{to}}}{ports}}}\n"
    )
}

/// Whether rule `r` alone matches `flow` (decides it, or records a monitor hit).
fn rule_matches(r: &Rule, flow: &Flow<'_>) -> bool {
    let p = Policy::from_rules(None, 1, vec![r.clone()]);
    let d = p.decide(flow);
    d.rule.as_ref() == Some(&r.rref) || d.monitored.iter().any(|m| m.rule == r.rref)
}

/// `check::covers` must never claim coverage that a flow or request disproves.
#[test]
fn coverage_claims_hold_on_random_flows() {
    let reg = registry();
    let addrs = [WEB_DEV, API_DEV, WEB_PROD, DB_PROD, OUTSIDE, STRANGER, PAY1];
    let ids = ["", PAYMENTS_ID, WEB_PROD_ID];
    let finance = vec!["finance".to_owned()];
    let mut headers = http::HeaderMap::new();
    headers.insert("x-env", http::HeaderValue::from_static("prod"));
    let mut rng = Rng(11);
    let mut claims = 0;
    for _ in 0..6000 {
        // `b` shares each part with `a` half of the time, so coverage is frequent.
        let a = small_rule(&mut rng);
        let mut b = small_rule(&mut rng);
        for (pb, pa) in b.iter_mut().zip(a) {
            if rng.below(2) == 0 {
                *pb = pa;
            }
        }
        let text = doc(&format!(
            "  sections:\n    - name: s\n      rules:\n{}{}",
            small_rule_yaml("a", a),
            small_rule_yaml("b", b)
        ));
        let Ok((p, _)) = Policy::parse("p.yaml", &text, &reg) else {
            panic!("generated policy rejected:\n{text}");
        };
        let (a, b) = (&p.rules[0], &p.rules[1]);
        if !check::covers(a, b) {
            continue;
        }
        claims += 1;
        for _ in 0..200 {
            let id = SpiffeId::parse(rng.pick(&ids)).ok();
            let path = rng
                .pick(&["/api/v1/x", "/admin/a", "/x", "/api/"])
                .to_owned();
            let empty = http::HeaderMap::new();
            let facts = HttpRequestFacts {
                method: rng.pick(&["GET", "POST", "DELETE"]),
                host: [Some("a.example"), Some("x.example"), None][rng.below(3) as usize],
                path: &path,
                headers: if rng.below(2) == 0 { &headers } else { &empty },
            };
            let l7 = match rng.below(4) {
                0 => L7::Opaque,
                1 => L7::Tls {
                    sni: [Some("a.example"), Some("b.other"), None][rng.below(3) as usize],
                },
                _ => L7::Http(&facts),
            };
            let (user, groups): (Option<&str>, Option<&[String]>) = match rng.below(3) {
                0 => (None, None),
                1 => (Some("alice"), Some(&finance)),
                _ => (Some("carol"), None),
            };
            let flow = Flow::new(
                Endpoint::lookup(&reg, ip(rng.pick(&addrs)))
                    .with_identity(id.as_ref())
                    .with_user(user, groups),
                Endpoint::lookup(&reg, ip(rng.pick(&addrs))),
                [80, 22, 5432, 8080][rng.below(4) as usize],
            )
            .with_l7(l7);
            if rule_matches(b, &flow) {
                assert!(
                    rule_matches(a, &flow),
                    "`a` claimed to cover `b` but misses {flow:?}\n{text}"
                );
            }
        }
    }
    assert!(claims > 300, "{claims}");
    eprintln!("{claims} coverage claims checked");
}

fn decide_proto(
    p: &Policy,
    reg: &Registry,
    src: &str,
    dst: &str,
    proto: Protocol,
    port: u16,
) -> Decision {
    let flow = Flow::new(
        Endpoint::lookup(reg, ip(src)),
        Endpoint::lookup(reg, ip(dst)),
        port,
    )
    .with_protocol(proto);
    let d = p.decide(&flow);
    assert_eq!(d, p.decide_linear(&flow), "index and linear scan disagree");
    assert_eq!(p.explain(&flow).decision, d, "explain disagrees");
    d
}

#[test]
fn protocols_and_ports_in_the_networkpolicy_habit() {
    let reg = Registry::empty();
    let rules = [
        "{id: dns, action: allow, ports: [{port: 53, protocol: UDP}, {port: 53, protocol: tcp}]}",
        "{id: web, action: allow, ports: [443, \"8000-8080\", {port: 9000, endPort: 9010}]}",
        "{id: ping, action: allow, ports: [{protocol: ICMP, icmpType: 8}, {protocol: ICMPv6, icmpType: 128, icmpCode: 0}]}",
        "{id: gre, action: allow, ports: [{protocol: 47}, {protocol: SCTP, port: 9}]}",
        "{id: syslog, action: allow, ports: [{protocol: UDP, port: \"514-515\"}]}",
        "{id: everything-to-x, action: allow, to: {cidr: 10.9.0.0/16}}",
    ];
    let mut text = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n    - name: s\n      rules:\n",
    );
    for r in rules {
        text.push_str(&format!("        - {r}\n"));
    }
    let p = parse_ok(&text, &reg);
    let at = |proto, port| decide_proto(&p, &reg, "10.0.0.1", "10.1.0.1", proto, port);
    let rule = |d: Decision| d.rule.map(|r| r.id.to_string());
    let icmp = |kind, code| Protocol::Icmp { kind, code };
    assert_eq!(rule(at(Protocol::Udp, 53)).as_deref(), Some("dns"));
    assert_eq!(rule(at(Protocol::Tcp, 53)).as_deref(), Some("dns"));
    // A port without a protocol is TCP, as before.
    assert_eq!(rule(at(Protocol::Tcp, 443)).as_deref(), Some("web"));
    assert_eq!(rule(at(Protocol::Udp, 443)), None);
    assert_eq!(rule(at(Protocol::Tcp, 9005)).as_deref(), Some("web"));
    assert_eq!(rule(at(Protocol::Tcp, 9011)), None);
    assert_eq!(rule(at(Protocol::Udp, 515)).as_deref(), Some("syslog"));
    assert_eq!(rule(at(icmp(8, 0), 0)).as_deref(), Some("ping"));
    assert_eq!(
        rule(at(icmp(0, 0), 0)),
        None,
        "an echo reply is not a request"
    );
    assert_eq!(
        rule(at(Protocol::Icmpv6 { kind: 128, code: 0 }, 0)).as_deref(),
        Some("ping")
    );
    assert_eq!(rule(at(Protocol::Icmpv6 { kind: 128, code: 1 }, 0)), None);
    assert_eq!(rule(at(Protocol::Other(47), 0)).as_deref(), Some("gre"));
    assert_eq!(rule(at(Protocol::Sctp, 9)).as_deref(), Some("gre"));
    assert_eq!(rule(at(Protocol::Other(50), 0)), None, "ESP is not allowed");
    // A rule without `ports` matches every protocol.
    for proto in [
        Protocol::Tcp,
        Protocol::Udp,
        icmp(3, 4),
        Protocol::Other(50),
    ] {
        let d = decide_proto(&p, &reg, "10.0.0.1", "10.9.0.1", proto, 7);
        assert_eq!(rule(d).as_deref(), Some("everything-to-x"), "{proto}");
    }
}

#[test]
fn protocol_errors_are_located() {
    let reg = Registry::empty();
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("ports: [{protocol: FOO}]", "unknown protocol `FOO` (TCP, UDP, SCTP, ICMP, ICMPv6, or a protocol number 0-255)"),
        ("ports: [{protocol: 300}]", "protocol 300 is out of range"),
        ("ports: [{protocol: ICMP, port: 8}]", "ICMP has no ports: remove `port`/`endPort`"),
        ("ports: [{protocol: 47, port: 8}]", "47 has no ports"),
        ("ports: [{protocol: UDP, icmpType: 8}]", "`icmpType`/`icmpCode` apply to ICMP, not to UDP"),
        ("ports: [{protocol: ICMP, icmpCode: 0}]", "`icmpCode` needs `icmpType`"),
        ("ports: [{protocol: ICMP, icmpType: 256}]", "`icmpType` 256 is out of range (0-255)"),
        ("ports: [{endPort: 5}]", "`endPort` needs `port`"),
        ("ports: [{port: \"1-2\", endPort: 5}]", "with `endPort`, `port` is a number"),
        ("ports: [{port: 5, endPort: 3}]", "`endPort` 3 is lower than `port` 5"),
        ("ports: [{port: 0, protocol: UDP}]", "port 0 is out of range (1-65535)"),
        ("ports: [{protocol: 47}, {protocol: GRE}]", "unknown protocol `GRE`"),
        ("ports: [{protocol: 47}, {protocol: 47}]", "protocol 47 is listed twice"),
        ("ports: [{protocol: UDP}, {port: 53, protocol: UDP}]", "port ranges every port and 53 overlap"),
        ("ports: [{protocol: ICMP}, {protocol: ICMP, icmpType: 8}]", "ICMP messages listed twice"),
        ("ports: [{prot: UDP}]", "unknown field `prot`"),
    ];
    for (ports, want) in cases {
        let e = errors(&one_rule(&format!("id: r, action: allow, {ports}")), &reg);
        assert!(
            e.iter()
                .any(|m| m.starts_with("p.yaml:7:") && m.contains(want)),
            "{ports}: want {want:?}, got {e:?}"
        );
    }
}

#[test]
fn shadowing_and_explain_know_protocols() {
    let reg = Registry::empty();
    let mut text = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n    - name: s\n      rules:\n",
    );
    for r in [
        "{id: all-udp, action: allow, ports: [{protocol: UDP}]}",
        "{id: dns-udp, action: allow, ports: [{port: 53, protocol: UDP}]}",
        "{id: dns-tcp, action: allow, ports: [53]}",
        "{id: icmp, action: allow, ports: [{protocol: ICMP}]}",
        "{id: ping, action: allow, ports: [{protocol: ICMP, icmpType: 8}]}",
    ] {
        text.push_str(&format!("        - {r}\n"));
    }
    let text = text.as_str();
    let w = warnings(text, &reg);
    let dead: Vec<&str> = w
        .iter()
        .filter_map(|m| m.split("rule `").nth(1)?.split('`').next())
        .collect();
    assert_eq!(dead, ["dns-udp", "ping"], "{w:?}");
    let (p, _) = Policy::parse("p.yaml", text, &reg).unwrap();
    let flow = Flow::new(
        Endpoint::lookup(&reg, ip("10.0.0.1")),
        Endpoint::lookup(&reg, ip("10.0.0.2")),
        53,
    )
    .with_protocol(Protocol::Udp);
    let e = p.explain(&flow).to_string();
    assert!(e.contains("all-udp"), "{e}");
    let flow = flow.with_protocol(Protocol::Tcp);
    let e = p.explain(&flow).to_string();
    assert!(e.contains("port 53 is not in [*/udp]"), "{e}");
    let flow = flow.with_protocol(Protocol::Other(47));
    let e = p.explain(&flow).to_string();
    assert!(e.contains("protocol 47 is not in [53]"), "{e}");
}
