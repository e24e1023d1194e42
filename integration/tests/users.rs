//! Users bound to workloads: the certificate carries the user, the destination decides on it.
//! Run as root. (Directory groups are not wired into the node yet: `group` rules fail closed.)
#![allow(clippy::unwrap_used)]

use eastwall_integration::{Cloud, Outcome, TRUST_DOMAIN, require_root};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: identity-firewall
      rules:
        - id: alice-uses-finance
          action: allow
          from: {user: alice}
          to: {app: finance-api}
          ports: [443]
        - id: finance-group-admin
          action: allow
          from: {group: finance}
          to: {app: finance-api}
          ports: [8443]
"#;

#[test]
fn the_user_travels_in_the_certificate_and_the_destination_decides_on_it() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "desk-alice", "desktop", "corp"),
            ("hostA", "desk-bob", "desktop", "corp"),
            ("hostB", "finance-api", "finance-api", "corp"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("finance-api", &[443, 8443]).unwrap();
    // Bind the desktops to their users.
    let mut reg = c.registry().to_owned();
    for (wl, user) in [("desk-alice", "alice"), ("desk-bob", "bob")] {
        let addr = c.lab.workload(wl).addr;
        let line =
            format!("{{name: {wl}, node: hostA, addresses: [{addr}], app: desktop, zone: corp}}");
        assert!(reg.contains(&line));
        reg = reg.replace(&line, &format!("{{name: {wl}, node: hostA, addresses: [{addr}], app: desktop, zone: corp, user: {user}}}"));
    }
    c.start_node_with("hostA", &reg, "");
    c.start_node_with("hostB", &reg, "");

    let alice = c.connect("desk-alice", "finance-api", 443);
    assert!(alice.outcome.reached(), "{:?}", alice.outcome);
    let f = c.flow("hostB", alice.local.unwrap());
    assert_eq!(f["eastwall"]["src"]["user"], "alice", "{f:#}");
    assert_eq!(
        f["eastwall"]["src"]["identity"],
        format!("spiffe://{TRUST_DOMAIN}/user/alice/wl/desk-alice")
    );
    assert_eq!(f["eastwall"]["policy"]["rule"], "alice-uses-finance");

    let bob = c.connect("desk-bob", "finance-api", 443);
    assert_eq!(bob.outcome, Outcome::Reset);
    assert_eq!(
        c.flow("hostA", bob.local.unwrap())["eastwall"]["src"]["user"],
        "bob"
    );

    // No directory is configured, so every user's groups are unknown and group rules never
    // match: fail closed.
    let by_group = c.connect("desk-alice", "finance-api", 8443);
    assert_eq!(by_group.outcome, Outcome::Reset);
    assert_eq!(
        c.flow("hostA", by_group.local.unwrap())["eastwall"]["policy"]["rule"],
        "default-deny"
    );
}

#[test]
fn finance_reaches_the_finance_app_and_hr_does_not() {
    require_root();
    let policy = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: identity-firewall
      rules:
        - id: finance-uses-finance-api
          action: allow
          from: {group: finance}
          to: {app: finance-api}
          ports: [443]
        - id: hr-uses-hr-app
          action: allow
          from: {group: hr}
          to: {app: hr-app}
          ports: [443]
"#;
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "desk-alice", "desktop", "corp"),
            ("hostA", "desk-bob", "desktop", "corp"),
            ("hostB", "finance-api", "finance-api", "corp"),
            ("hostB", "hr-app", "hr-app", "corp"),
        ],
        "",
        policy,
    );
    c.lab.serve("finance-api", &[443]).unwrap();
    c.lab.serve("hr-app", &[443]).unwrap();
    let mut reg = c.registry().to_owned();
    for (wl, user) in [("desk-alice", "alice"), ("desk-bob", "bob")] {
        let addr = c.lab.workload(wl).addr;
        let line =
            format!("{{name: {wl}, node: hostA, addresses: [{addr}], app: desktop, zone: corp}}");
        reg = reg.replace(&line, &format!("{{name: {wl}, node: hostA, addresses: [{addr}], app: desktop, zone: corp, user: {user}}}"));
    }
    // The static directory: alice is in finance-admins, a group inside finance; bob in hr.
    for host in ["hostA", "hostB"] {
        let dir = c.lab.dir().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("directory.yaml"),
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [finance-admins]\n    bob: [hr]\n  groups:\n    finance-admins: {memberOf: [finance]}\n",
        )
        .unwrap();
    }
    c.lab
        .add_node_spec("  directory:\n    file: directory.yaml\n");
    c.start_node_with("hostA", &reg, "");
    c.start_node_with("hostB", &reg, "");

    let alice = c.connect("desk-alice", "finance-api", 443);
    assert!(alice.outcome.reached(), "{:?}", alice.outcome);
    let f = c.flow("hostB", alice.local.unwrap());
    assert_eq!(f["eastwall"]["src"]["user"], "alice");
    assert_eq!(
        f["eastwall"]["src"]["groups"],
        serde_json::json!(["finance", "finance-admins"])
    );
    assert_eq!(f["eastwall"]["policy"]["rule"], "finance-uses-finance-api");
    let bob = c.connect("desk-bob", "finance-api", 443);
    assert_eq!(bob.outcome, Outcome::Reset);
    let f = c.flow("hostA", bob.local.unwrap());
    assert_eq!(f["eastwall"]["src"]["groups"], serde_json::json!(["hr"]));
    assert_eq!(f["eastwall"]["policy"]["rule"], "default-deny");
    assert!(c.connect("desk-bob", "hr-app", 443).outcome.reached());
    assert_eq!(
        c.connect("desk-alice", "hr-app", 443).outcome,
        Outcome::Reset
    );
}
