//! Tests of policy parsing, validation and `decide`.

use super::*;

const REGISTRY: &str = include_str!("../../testdata/registry.yaml");
const POLICY: &str = include_str!("../../testdata/policy.yaml");

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
    let flow = Flow {
        src: Endpoint::lookup(reg, ip(src)),
        dst: Endpoint::lookup(reg, ip(dst)),
        dst_port: port,
    };
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

#[test]
fn parses_example() {
    let reg = registry();
    let p = parse_ok(POLICY, &reg);
    assert_eq!(p.name(), Some("corp"));
    assert_eq!(p.rule_count(), 5);
    assert_eq!(p.section_count(), 2);
    assert!(p.index.is_some());
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
    let d = Policy::deny_all().decide(&Flow {
        src: Endpoint::lookup(&reg, ip(WEB_DEV)),
        dst: Endpoint::lookup(&reg, ip(WEB_DEV)),
        dst_port: 1,
    });
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
            "p.yaml:7:41: empty `ports` list (it would match nothing); omit the field to match all ports",
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

/// Generates a random but valid policy over the example registry's names.
fn random_policy(rng: &mut Rng, rules: usize) -> String {
    let zones = ["dev", "test", "prod"];
    let apps = ["web", "api", "db"];
    let mut out = String::from("  sections:\n    - name: gen\n      rules:\n");
    for i in 0..rules {
        let sel = |rng: &mut Rng| -> String {
            match rng.below(6) {
                0 => String::new(),
                1 => format!("zone: {}", rng.pick(&zones)),
                2 => format!("app: [{}, {}]", rng.pick(&apps), rng.pick(&apps)),
                3 => format!("not: {{zone: {}}}", rng.pick(&zones)),
                4 => "cidr: [10.99.1.0/24, 10.200.0.0/16]".to_owned(),
                _ => format!("labels: {{tier: {}}}", rng.pick(&["frontend", "backend"])),
            }
        };
        let from = sel(rng);
        let to = sel(rng);
        let ports = match rng.below(4) {
            0 => String::new(),
            1 => format!(", ports: [{}]", 1 + rng.below(100)),
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

#[test]
fn index_agrees_with_linear_scan() {
    let reg = registry();
    let addrs = [
        WEB_DEV, API_DEV, WEB_TEST, WEB_PROD, DB_PROD, DB_PROD_V6, OUTSIDE, STRANGER,
    ];
    let mut rng = Rng(7);
    for round in 0..20 {
        let n = 1 + rng.below(60) as usize;
        let text = doc(&random_policy(&mut rng, n));
        let p = parse_ok(&text, &reg);
        assert!(p.index.is_some());
        for _ in 0..500 {
            let port = match rng.below(3) {
                0 => rng.below(300) as u16,
                1 => 1 + rng.below(65535) as u16,
                _ => u16::MAX,
            };
            // `decide` asserts indexed == linear.
            let d = decide(&p, &reg, rng.pick(&addrs), rng.pick(&addrs), port);
            if let Some(r) = &d.rule {
                assert!(p.rules.iter().any(|x| x.rref == *r), "round {round}");
            }
        }
    }
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
    let ix = p.index.as_ref().unwrap();
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
