//! Hot reload of the registry and policy: a valid change takes effect without dropping what
//! stays allowed, live connections it denies are ended within a second, an invalid change is
//! rejected and the rules in force stay. Run as root.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use eastwall_integration::{Cloud, Outcome, require_root};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - id: app-to-db
          action: allow
          from: {app: app}
          to: {app: db}
          ports: [5432]
        - id: app-to-cache
          action: allow
          from: {app: app}
          to: {app: db}
          ports: [6379]
"#;

/// hostA: app (zone prod); hostB: db (zone prod), echo services on 5432 and 6379.
fn cloud() -> Cloud {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "app", "app", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("db", &[5432, 6379]).unwrap();
    c.start_nodes("");
    c
}

/// An open connection from `from` to `to:port` that has read its greeting.
fn open(c: &Cloud, from: &str, to: &str, port: u16) -> BufReader<TcpStream> {
    let dst = c.addr(to, port);
    let netns = c.lab.workload(from).netns.clone();
    let s = eastwall_lab::in_netns(&netns, move || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(2))
    })
    .unwrap()
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("hello from"), "{greeting}");
    r
}

/// Whether the connection still echoes.
fn echoes(r: &mut BufReader<TcpStream>) -> bool {
    if r.get_mut().write_all(b"ping\n").is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(r.read_line(&mut line), Ok(n) if n > 0 && line == "ping\n")
}

/// Waits (up to `within`) until the connection is ended by the peer; returns how long.
fn ended_within(r: &mut BufReader<TcpStream>, within: Duration) -> Duration {
    let start = Instant::now();
    r.get_ref()
        .set_read_timeout(Some(within + Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    match r.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("read {n} bytes from a connection that should have ended"),
    }
    let took = start.elapsed();
    assert!(took <= within, "ended after {took:?}");
    took
}

/// Waits (up to 5 s) until both nodes have applied `n` reloads: each watches its files on
/// its own, and under load one may apply a change a good while after the other.
fn wait_reloaded(c: &Cloud, n: u64) {
    let ok = "eastwall_policy_reloads_total{result=\"ok\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    for host in ["hostA", "hostB"] {
        while c.metric(host, ok) < n {
            assert!(Instant::now() < deadline, "{host} has not reloaded");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write_policy(c: &Cloud, text: &str) {
    for host in ["hostA", "hostB"] {
        let path = c.lab.dir().join(host).join("policy.yaml");
        // Write beside and rename, as a config manager would: readers never see half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

#[test]
fn a_valid_change_revokes_what_it_denies_and_keeps_what_it_allows() {
    let c = cloud();
    let mut db = open(&c, "app", "db", 5432);
    let mut cache = open(&c, "app", "db", 6379);
    assert!(echoes(&mut db) && echoes(&mut cache));
    // The new policy drops app-to-cache.
    let changed = Instant::now();
    write_policy(
        &c,
        &POLICY.replace("          ports: [6379]\n", "          ports: [6380]\n"),
    );
    let took = ended_within(&mut cache, Duration::from_secs(1));
    eprintln!("revoked {took:?} after the write ({:?})", changed.elapsed());
    assert!(
        echoes(&mut db),
        "a connection that stays allowed was dropped"
    );
    // New connections follow the new policy (once both nodes have it).
    wait_reloaded(&c, 1);
    assert_eq!(c.connect("app", "db", 6379).outcome, Outcome::Reset);
    assert!(c.connect("app", "db", 5432).outcome.reached());
    // The records say which rule ended it: the record of whichever node reloaded first
    // (both watch the file; the other sees its tunnel stream end).
    let revoked =
        |f: &serde_json::Value| f["dest_port"] == 6379 && f["flow"]["reason"] == "revoked";
    let f = (0..150)
        .find_map(|_| {
            let found = ["hostA", "hostB"]
                .iter()
                .flat_map(|h| c.flows(h))
                .find(|f| revoked(f));
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            found
        })
        .unwrap_or_else(|| {
            panic!(
                "no revoked record on either node:\n{:#?}\n{:#?}",
                c.flows("hostA"),
                c.flows("hostB")
            )
        });
    assert_eq!(f["eastwall"]["policy"]["rule"], "app-to-cache");
    assert_eq!(f["eastwall"]["revoked_by"], "default-deny");
    assert_eq!(
        c.metric("hostA", "eastwall_policy_reloads_total{result=\"ok\"}"),
        1
    );
    assert_eq!(c.metric("hostA", "eastwall_policy_rules"), 2);
}

#[test]
fn an_invalid_change_is_rejected_and_the_rules_in_force_stay() {
    let c = cloud();
    let mut db = open(&c, "app", "db", 5432);
    write_policy(&c, &POLICY.replace("action: allow", "action: alow"));
    let start = Instant::now();
    while c.metric("hostA", "eastwall_policy_reloads_total{result=\"error\"}") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no rejected reload counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(echoes(&mut db));
    assert!(c.connect("app", "db", 6379).outcome.reached());
    let log = std::fs::read_to_string(c.lab.dir().join("hostA/node.log")).unwrap();
    assert!(
        log.contains("rejected the new registry/policy")
            && log.contains("policy.yaml:8:19: invalid action `alow`"),
        "{log}"
    );
    // A later valid change is taken.
    write_policy(
        &c,
        &POLICY.replace("          ports: [6379]\n", "          ports: [6380]\n"),
    );
    let start = Instant::now();
    while c.connect("app", "db", 6379).outcome.reached() {
        assert!(start.elapsed() < Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_policy_path_that_is_not_a_regular_file_is_rejected_without_stopping_the_node() {
    let c = cloud();
    let mut db = open(&c, "app", "db", 5432);
    // A FIFO in place of the policy: opening it for reading would wait for a writer forever.
    let path = c.lab.dir().join("hostA/policy.yaml");
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let start = Instant::now();
    while c.metric("hostA", "eastwall_policy_reloads_total{result=\"error\"}") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no rejected reload counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The node goes on: live and new connections, and its admin endpoint.
    assert!(echoes(&mut db));
    assert!(c.connect("app", "db", 6379).outcome.reached());
    assert!(c.admin("hostA", "/healthz").contains("ok"));
    let log = std::fs::read_to_string(c.lab.dir().join("hostA/node.log")).unwrap();
    assert!(log.contains("policy.yaml is not a regular file"), "{log}");
    // A regular file again is taken.
    std::fs::remove_file(&path).unwrap();
    write_policy(
        &c,
        &POLICY.replace("          ports: [6379]\n", "          ports: [6380]\n"),
    );
    let start = Instant::now();
    while c.connect("app", "db", 6379).outcome.reached() {
        assert!(start.elapsed() < Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_registry_change_moves_a_workload_between_zones() {
    let policy = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - {id: dev-not-prod, action: deny, from: {zone: dev}, to: {zone: prod}}
    - name: apps
      rules:
        - {id: app-to-db, action: allow, from: {app: app}, to: {app: db}, ports: [5432]}
"#;
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "app", "app", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        policy,
    );
    c.lab.serve("db", &[5432]).unwrap();
    c.start_nodes("");
    let mut live = open(&c, "app", "db", 5432);
    assert!(echoes(&mut live));
    let app = c.lab.workload("app").addr;
    let moved = c.registry().replace(
        &format!("{{name: app, node: hostA, addresses: [{app}], app: app, zone: prod}}"),
        &format!("{{name: app, node: hostA, addresses: [{app}], app: app, zone: dev}}"),
    );
    assert_ne!(moved, c.registry());
    for host in ["hostA", "hostB"] {
        let path = c.lab.dir().join(host).join("registry.yaml");
        std::fs::write(path.with_extension("tmp"), &moved).unwrap();
        std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    }
    ended_within(&mut live, Duration::from_secs(1));
    // The source node records the decision: probe once both nodes have the change.
    wait_reloaded(&c, 1);
    let p = c.connect("app", "db", 5432);
    assert_eq!(p.outcome, Outcome::Reset);
    assert_eq!(
        c.flow("hostA", p.local.unwrap())["eastwall"]["policy"]["rule"],
        "dev-not-prod"
    );
}
