//! Protocols the node does not proxy, under default deny: ICMP echo only where a rule allows
//! it, the ICMP errors of an allowed flow (path MTU) passing, any other IP protocol dropped
//! unless a rule allows its number, every decision recorded, and all of it dropped while the
//! node is down. Run as root.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eastwall_integration::{Cloud, require_root};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - id: dev-not-prod
          action: deny
          from: {zone: dev}
          to: {zone: prod}
    - name: apps
      rules:
        - id: ping-in-prod
          action: allow
          from: {zone: prod}
          to: {zone: prod}
          ports: [{protocol: ICMP, icmpType: 8}]
        - id: app-to-db-253
          action: allow
          from: {workload: prod-app}
          to: {workload: prod-db}
          ports: [{protocol: 253}]
"#;

const WAIT: Duration = Duration::from_millis(800);

fn cloud() -> Cloud {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "dev-app", "app", "dev"),
            ("hostA", "prod-app", "app", "prod"),
            ("hostA", "cache", "cache", "prod"),
            ("hostB", "prod-db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.start_nodes("");
    c
}

fn ping(c: &Cloud, from: &str, to: &str) -> bool {
    let dst = c.lab.workload(to).addr;
    c.lab.icmp_echo(from, dst, 56, false, WAIT)
}

#[test]
fn icmp_echo_passes_only_where_a_rule_allows_it() {
    let c = cloud();
    assert!(ping(&c, "prod-app", "prod-db"), "across hosts, within prod");
    assert!(ping(&c, "prod-app", "cache"), "same host, within prod");
    assert!(!ping(&c, "dev-app", "prod-db"), "dev to prod");
    assert!(!ping(&c, "dev-app", "prod-app"), "dev to prod, same host");
    // Each decision is a flow record, at both ends of an allowed one.
    let dev = c.lab.workload("dev-app").addr.to_string();
    let denied = c.wait_flow("hostA", |f| f["proto"] == "ICMP" && f["src_ip"] == dev);
    assert_eq!(denied["flow"]["state"], "dropped");
    assert_eq!(denied["eastwall"]["policy"]["rule"], "dev-not-prod");
    assert_eq!(denied["icmp_type"], 8);
    let app = c.lab.workload("prod-app").addr.to_string();
    for host in ["hostA", "hostB"] {
        let f = c.wait_flow(host, |f| {
            f["proto"] == "ICMP"
                && f["src_ip"] == app
                && f["eastwall"]["policy"]["rule"] == "ping-in-prod"
        });
        assert_eq!(f["flow"]["state"], "bypassed");
        assert_eq!(f["flow"]["reason"], "forwarded");
    }
    assert!(
        c.metric(
            "hostA",
            r#"eastwall_policy_decisions_total{direction="outbound",rule="dev-not-prod",mode="enforce",action="deny"}"#
        ) >= 2
    );
}

#[test]
fn another_ip_protocol_is_dropped_unless_a_rule_allows_its_number() {
    let c = cloud();
    assert!(c.lab.raw_delivered("prod-app", "prod-db", 253, WAIT));
    assert!(
        !c.lab.raw_delivered("prod-app", "prod-db", 254, WAIT),
        "no rule for 254"
    );
    assert!(
        !c.lab.raw_delivered("dev-app", "prod-db", 253, WAIT),
        "dev to prod"
    );
    assert!(
        !c.lab.raw_delivered("prod-app", "cache", 253, WAIT),
        "the rule names prod-db"
    );
    let f = c.wait_flow("hostA", |f| f["proto"] == "254");
    assert_eq!(f["eastwall"]["policy"]["rule"], "default-deny");
}

#[test]
fn the_icmp_errors_of_an_allowed_flow_come_back() {
    let c = cloud();
    // prod-db's link has a smaller MTU: hostB answers a larger echo with "fragmentation
    // needed", which must reach prod-app for path MTU discovery to work.
    let db = c.lab.workload("prod-db").clone();
    let out = c
        .lab
        .exec(
            &c.lab.host("hostB").netns,
            &["ip", "link", "set", &db.host_if, "mtu", "1300"],
        )
        .unwrap();
    assert!(out.status.success());
    let app = c.lab.workload("prod-app").netns.clone();
    assert!(!c.lab.icmp_echo("prod-app", db.addr, 1400, true, WAIT));
    let route = c
        .lab
        .exec(&app, &["ip", "route", "get", &db.addr.to_string()])
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("mtu 1300"),
        "prod-app learned no path MTU: {route}"
    );
    // A small one still gets through.
    assert!(c.lab.icmp_echo("prod-app", db.addr, 56, true, WAIT));
}

#[test]
fn a_stopped_node_drops_other_protocols() {
    let mut c = cloud();
    assert!(ping(&c, "prod-app", "cache"));
    let node = c.node("hostA").clone();
    c.lab.stop_node(&node).unwrap();
    assert!(
        !ping(&c, "prod-app", "cache"),
        "ICMP bypassed a stopped node"
    );
    assert!(!c.lab.raw_delivered("prod-app", "prod-db", 253, WAIT));
}
