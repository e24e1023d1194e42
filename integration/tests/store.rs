//! The central store against a real etcd (TLS client certificates, roles): the operator's
//! commands through the real `eastwall` binary, and the guards of `Store::apply`. Run as
//! root (etcd from Debian's etcd-server).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use eastwall_integration::{Cloud, eastwall_bin, require_root};
use eastwall_lab::etcd::{ClientCert, Etcd};
use eastwall_store::snapshot::{self, Part};
use eastwall_store::{ApplyError, Store, StoreSpec};

const PREFIX: &str = "/eastwall/";

const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.77.0.1]}
    - {name: hostB, addresses: [10.77.0.2]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2], app: web, zone: prod}
    - {name: db, node: hostB, addresses: [10.0.2.2], app: db, zone: prod}
";

const POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432]}
";

fn etcd() -> Etcd {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    Etcd::start(&[(None, lo)], PREFIX).unwrap()
}

/// `eastwall ARGS` as `who` (in lab host namespace `netns`, if given).
fn eastwall_in(netns: Option<&str>, e: &Etcd, who: &ClientCert, args: &[&str]) -> Output {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(eastwall_bin());
            c
        }
        None => std::process::Command::new(eastwall_bin()),
    };
    cmd.args(args)
        .env("EASTWALL_ETCD_ENDPOINTS", e.endpoints().join(","))
        .env("EASTWALL_ETCD_CACERT", e.ca_file())
        .env("EASTWALL_ETCD_CERT", &who.cert)
        .env("EASTWALL_ETCD_KEY", &who.key)
        .output()
        .unwrap()
}

/// `eastwall ARGS` as `who`, from the test's own namespace.
fn eastwall(e: &Etcd, who: &ClientCert, args: &[&str]) -> Output {
    eastwall_in(None, e, who, args)
}

fn ok(out: Output) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "stdout:\n{so}\nstderr:\n{se}");
    so
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

async fn store_as(e: &Etcd, who: &ClientCert) -> Store {
    Store::connect(&StoreSpec {
        endpoints: e.endpoints(),
        ca_file: e.ca_file(),
        cert_file: who.cert.clone(),
        key_file: who.key.clone(),
        prefix: PREFIX.to_owned(),
    })
    .await
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn apply_get_diff_history_rollback_and_workloads() {
    require_root();
    let e = etcd();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", REGISTRY);
    let pol = write(d.path(), "policy.yaml", POLICY);

    // A bad file is refused where it is wrong, and nothing is written.
    let bad = write(
        d.path(),
        "bad.yaml",
        &POLICY.replace("ports: [5432]", "ports: [70000]"),
    );
    let err = failed(eastwall(&e, &admin, &["apply", "-f", &reg, "-f", &bad]));
    assert!(err.contains(&format!("{bad}:7:")), "{err}");
    assert!(ok(eastwall(&e, &admin, &["get", "version"])).contains("nothing applied yet"));

    // The first apply: the diff, then version 1, by the certificate's user.
    let out = ok(eastwall(
        &e,
        &admin,
        &["apply", "-f", &reg, "-f", &pol, "-m", "first"],
    ));
    assert!(
        out.contains("=== etcd:/eastwall/config/workloads/web (added)"),
        "{out}"
    );
    assert!(out.contains("applied: version 1"), "{out}");
    let v = ok(eastwall(&e, &admin, &["get", "version"]));
    assert!(
        v.contains("version 1") && v.contains("eastwall-admin (") && v.contains("first"),
        "{v}"
    );
    // What is stored reads back.
    let got = ok(eastwall(&e, &admin, &["get", "registry"]));
    let back = eastwall_policy::Registry::parse("got", &got).unwrap();
    assert_eq!(back.workloads().len(), 2);
    assert_eq!(ok(eastwall(&e, &admin, &["get", "policy"])), POLICY);
    assert!(ok(eastwall(&e, &admin, &["get", "workload", "db"])).contains("\"node\": \"hostB\""));
    // Applying the same again changes nothing.
    let again = ok(eastwall(&e, &admin, &["apply", "-f", &reg, "-f", &pol]));
    assert!(again.contains("no changes against version 1"), "{again}");

    // diff shows a change; apply makes it version 2.
    let pol2 = write(
        d.path(),
        "policy.yaml",
        &POLICY.replace("[5432]", "[5432, 6432]"),
    );
    let diff = ok(eastwall(&e, &admin, &["diff", "-f", &pol2]));
    assert!(
        diff.contains("-        - {id: web-to-db") && diff.contains("6432"),
        "{diff}"
    );
    ok(eastwall(
        &e,
        &admin,
        &["apply", "-f", &pol2, "-m", "pgbouncer"],
    ));

    // Automation: one workload at a time.
    ok(eastwall(
        &e,
        &admin,
        &[
            "workload",
            "add",
            "cache",
            "--node",
            "hostA",
            "--address",
            "10.0.1.3",
            "--app",
            "web",
            "--zone",
            "prod",
            "--label",
            "tier=cache",
        ],
    ));
    ok(eastwall(
        &e,
        &admin,
        &[
            "workload",
            "move",
            "cache",
            "--node",
            "hostB",
            "--address",
            "10.0.2.3",
        ],
    ));
    let cache = ok(eastwall(&e, &admin, &["get", "workload", "cache"]));
    assert!(
        cache.contains("hostB") && cache.contains("10.0.2.3") && cache.contains("tier"),
        "{cache}"
    );
    // A move onto an address already taken is refused, naming the workload's key.
    let err = failed(eastwall(
        &e,
        &admin,
        &[
            "workload",
            "move",
            "cache",
            "--node",
            "hostB",
            "--address",
            "10.0.2.2",
        ],
    ));
    assert!(err.contains("etcd:/eastwall/config/workloads/"), "{err}");
    ok(eastwall(&e, &admin, &["workload", "remove", "cache"]));
    let err = failed(eastwall(&e, &admin, &["workload", "remove", "cache"]));
    assert!(err.contains("no workload `cache`"), "{err}");

    // History: every version, who and why; what one changed.
    let h = ok(eastwall(&e, &admin, &["history"]));
    let lines: Vec<&str> = h.lines().skip(1).collect();
    assert_eq!(lines.len(), 5, "{h}");
    assert!(
        lines[0].starts_with("1\t") && lines[0].ends_with("first"),
        "{h}"
    );
    assert!(lines[4].contains("workload remove cache"), "{h}");
    let two = ok(eastwall(&e, &admin, &["history", "2"]));
    assert!(two.contains("config/policy (changed)") && two.contains("+        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432, 6432]}"), "{two}");

    // Rollback to version 1: a new version with version 1's content.
    let out = ok(eastwall(&e, &admin, &["rollback", "1"]));
    assert!(out.contains("applied: version 6"), "{out}");
    assert_eq!(ok(eastwall(&e, &admin, &["get", "policy"])), POLICY);
    let rt = rt();
    rt.block_on(async {
        let mut s = store_as(&e, &admin).await;
        let now = s.current().await.unwrap();
        let one = s.snapshot_of(1).await.unwrap();
        assert_eq!(now.snapshot, one);
        assert_eq!(now.version.unwrap().hash, one.hash());
    });
}

#[test]
fn a_concurrent_apply_is_refused_and_nodes_cannot_write_policy() {
    require_root();
    let e = etcd();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", REGISTRY);
    let pol = write(d.path(), "policy.yaml", POLICY);
    ok(eastwall(&e, &admin, &["apply", "-f", &reg, "-f", &pol]));
    let node = e.add_node("hostA").unwrap();
    let rt = rt();
    rt.block_on(async {
        // Two admins read version 1; the second to write is refused, and says who won.
        let mut first = store_as(&e, &admin).await;
        let mut second = store_as(&e, &admin).await;
        let base1 = first.current().await.unwrap();
        let base2 = second.current().await.unwrap();
        let mine = base1
            .snapshot
            .with(&Part::Policy(POLICY.replace("[5432]", "[5433]")));
        let theirs = base2
            .snapshot
            .with(&Part::Policy(POLICY.replace("[5432]", "[5434]")));
        let v = first
            .apply(&base1, &mine, "alice", "mine")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.version, 2);
        match second.apply(&base2, &theirs, "bob", "theirs").await {
            Err(ApplyError::Conflict(why)) => {
                assert!(why.contains("version 2 was applied by alice"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let now = first.current().await.unwrap();
        assert_eq!(now.version.unwrap().version, 2);
        assert_eq!(now.snapshot, mine);

        // A node reads the configuration, and writes its own status only.
        let mut n = store_as(&e, &node).await;
        let seen = n.current().await.unwrap();
        assert_eq!(seen.snapshot, mine);
        let evil = seen.snapshot.with(&Part::Policy(
            POLICY
                .replace("web-to-db", "all")
                .replace("{app: web}", "{}"),
        ));
        let err = n
            .apply(&seen, &evil, "node", "evil")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("permission denied"), "{err}");
        let c = n.client();
        c.put(format!("{PREFIX}nodes/hostA/status"), "{}", None)
            .await
            .unwrap();
        let err = c
            .put(format!("{PREFIX}nodes/hostB/status"), "{}", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("permission denied"), "{err}");
        let err = c
            .put(format!("{PREFIX}config/policy"), "evil", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("permission denied"), "{err}");
        assert_eq!(first.current().await.unwrap().snapshot, mine);
    });
}

#[test]
fn an_apply_larger_than_one_transaction_lands_whole() {
    require_root();
    let e = etcd();
    let admin = e.admin();
    // 400 workloads (past etcd's 128 operations per transaction) and a policy of 10,000
    // rules (1.1 MB: with its history copy, past the 1.5 MiB request limit).
    let mut reg = REGISTRY.to_owned();
    for i in 0..400u32 {
        reg.push_str(&format!(
            "    - {{name: w{i}, node: hostA, addresses: [10.1.{}.{}], app: web, zone: prod}}\n",
            i / 200,
            i % 200 + 1
        ));
    }
    let mut pol = POLICY.to_owned();
    for i in 0..10_000u32 {
        pol.push_str(&format!(
            "        - {{id: filler-{i}, action: allow, from: {{app: web}}, to: {{app: db}}, ports: [{}]}}\n",
            10_000 + i
        ));
    }
    let rt = rt();
    rt.block_on(async {
        let mut s = store_as(&e, &admin).await;
        let base = s.current().await.unwrap();
        let desired = base
            .snapshot
            .with(&snapshot::registry_part("r.yaml", &reg).unwrap())
            .with(&Part::Policy(pol.clone()));
        let v = s
            .apply(&base, &desired, "admin", "bulk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.version, 1);
        let now = s.current().await.unwrap();
        assert_eq!(now.snapshot, desired);
        assert_eq!(now.version.unwrap().hash, desired.hash());
        let valid = now.snapshot.validate(&s.keys().source()).unwrap();
        assert_eq!(valid.registry.workloads().len(), 402);
        assert_eq!(valid.policy.rule_count(), 10_001);
        // The lock is gone, and history replays to the same.
        let lock = s.client().get(format!("{PREFIX}lock"), None).await.unwrap();
        assert!(lock.kvs().is_empty());
        assert_eq!(s.snapshot_of(1).await.unwrap(), desired);
    });
}

/// `eastwall ARGS` as `who`, inside lab host `host`'s namespace.
fn eastwall_on(c: &Cloud, host: &str, e: &Etcd, who: &ClientCert, args: &[&str]) -> Output {
    eastwall_in(Some(&c.lab.host(host).netns), e, who, args)
}

/// Starts the nodes of `hosts`, each taking its rules from the store with a certificate of
/// its own.
fn start_store_nodes(c: &mut Cloud, e: &Etcd, hosts: &[&str]) {
    for host in hosts {
        e.add_node(host).unwrap();
        restart_store_node(c, e, host);
    }
}

/// Starts (again) the node of `host`, whose store user exists, after stopping it if it runs.
fn restart_store_node(c: &mut Cloud, e: &Etcd, host: &str) {
    if let Some(node) = c.started_node(host).cloned() {
        c.lab.stop_node(&node).unwrap();
    }
    let cert = e.node_cert(host);
    c.lab.set_node_store(Some(format!(
        "    endpoints: [{}]\n    caFile: {}\n    certFile: {}\n    keyFile: {}\n    stateDir: state\n",
        e.endpoints().join(", "),
        e.ca_file().display(),
        cert.cert.display(),
        cert.key.display()
    )));
    c.start_node(host, "");
}

/// Waits (up to 10 s) until `eastwall status` satisfies `done`; returns its output.
fn wait_status(c: &Cloud, e: &Etcd, who: &ClientCert, done: impl Fn(&str) -> bool) -> String {
    let since = Instant::now();
    loop {
        let st = ok(eastwall_on(c, "store", e, who, &["status"]));
        if done(&st) {
            return st;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "{st}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

const ZONES: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432]}
"#;

const SWAPPED: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: reports-to-db, action: allow, from: {app: reports}, to: {app: db}, ports: [5432]}
"#;

/// Waits (up to `secs`) until `from` reaches (or not) `to`; how long it took.
fn until_reached(c: &Cloud, from: &str, to: &str, reached: bool, secs: u64) -> Duration {
    let t = Instant::now();
    while c.connect(from, to, 5432).outcome.reached() != reached {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{from} -> {to}: still {} after {secs} s",
            if reached { "refused" } else { "reached" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

/// Two nodes take their rules from the store: a central apply is enforced by both (and
/// revokes what it denies), `eastwall status` lists both with the version they run, a bad
/// stored value is refused and reported while the old rules stay, and with the store down
/// the nodes keep enforcing, a node restarted meanwhile starting from its last state.
#[test]
fn nodes_enforce_what_is_applied_centrally() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "store"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostA", "reports", "reports", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        ZONES,
    );
    c.lab.serve("db", &[5432]).unwrap();
    let store = c.lab.host("store").clone();
    let mut e = Etcd::start(&[(Some(store.netns.as_str()), store.addr.into())], PREFIX).unwrap();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", c.registry());
    let pol = write(d.path(), "policy.yaml", ZONES);
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &reg, "-f", &pol, "-m", "zones"],
    ));

    start_store_nodes(&mut c, &e, &["hostA", "hostB"]);
    assert!(c.connect("web", "db", 5432).outcome.reached());
    assert!(!c.connect("reports", "db", 5432).outcome.reached());

    // A held connection the next version denies.
    let held = c.lab.workload("web").netns.clone();
    let dst = c.addr("db", 5432);
    let mut conn = eastwall_lab::in_netns(&held, move || {
        let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The whole greeting line, so that nothing of it is left to read later.
        let mut b = [0u8; 1];
        loop {
            assert_eq!(std::io::Read::read(&mut s, &mut b).unwrap(), 1);
            if b[0] == b'\n' {
                break;
            }
        }
        s
    })
    .unwrap();

    // One central change, enforced by both nodes.
    let pol2 = write(d.path(), "policy.yaml", SWAPPED);
    let applied = Instant::now();
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &pol2, "-m", "swap"],
    ));
    until_reached(&c, "reports", "db", true, 5);
    until_reached(&c, "web", "db", false, 5);
    eprintln!(
        "central apply: enforced by both nodes within {:.2} s of the apply command's start",
        applied.elapsed().as_secs_f64()
    );
    // They caught up from what the history says version 2 changed, not by reading it all.
    for host in ["hostA", "hostB"] {
        let log = std::fs::read_to_string(c.lab.dir().join(host).join("node.log")).unwrap();
        assert!(
            log.contains("caught up from version 1 to 2 from the history"),
            "{log}"
        );
    }
    // The held connection was revoked: reset (or closed), not merely quiet.
    let mut b = [0u8; 8];
    match std::io::Read::read(&mut conn, &mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the revoked connection: {other:?}"),
    }

    // Status: both nodes, version 2.
    let row = |st: &str, n: &str| {
        st.lines()
            .find(|l| l.starts_with(&format!("{n}\t")))
            .unwrap_or("")
            .to_owned()
    };
    let st = wait_status(&c, &e, &admin, |st| {
        row(st, "hostA").contains("\tup\t2\t") && row(st, "hostB").contains("\tup\t2\t")
    });
    assert!(st.contains("latest version: 2"), "{st}");
    assert!(row(&st, "store").contains("DOWN"), "{st}");

    // Another tool writes a broken policy and a version record: refused, reported, the
    // rules in force stay.
    e.ctl(
        eastwall_lab::etcd::ADMIN,
        &["put", "/eastwall/config/policy", "kind: [broken"],
    )
    .unwrap();
    let record = r#"{"version":3,"hash":"sha256:x","author":"script","time":"2026-12-05T00:00:00Z","message":"oops","changed":1}"#;
    e.ctl(
        eastwall_lab::etcd::ADMIN,
        &["put", "/eastwall/config/version", record],
    )
    .unwrap();
    let st = wait_status(&c, &e, &admin, |st| {
        st.lines().filter(|l| l.contains("REFUSED-LATEST")).count() == 2
    });
    assert!(st.contains("version 3 refused"), "{st}");
    assert!(c.connect("reports", "db", 5432).outcome.reached());
    assert!(!c.connect("web", "db", 5432).outcome.reached());

    // The store goes down: the nodes keep enforcing; a node restarted meanwhile starts from
    // its last state.
    e.kill(0);
    assert!(c.connect("reports", "db", 5432).outcome.reached());
    assert!(!c.connect("web", "db", 5432).outcome.reached());
    restart_store_node(&mut c, &e, "hostB");
    assert!(c.connect("reports", "db", 5432).outcome.reached());
    assert!(!c.connect("web", "db", 5432).outcome.reached());

    // The store is back: a fixed version is applied, and both nodes catch up.
    e.restart(0).unwrap();
    let pol3 = write(d.path(), "policy.yaml", ZONES);
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &pol3, "-m", "back to zones"],
    ));
    until_reached(&c, "web", "db", true, 10);
    until_reached(&c, "reports", "db", false, 10);

    // A version the store accepts but these nodes cannot apply (IDS profiles, and no IDS
    // rules in their config): refused at the node, reported, the rules in force stay.
    let ids = ZONES.replace(
        "spec:\n  sections:",
        "spec:\n  idsProfiles:\n    - {name: web, mode: detect}\n  sections:",
    );
    let pol4 = write(d.path(), "policy.yaml", &ids);
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &pol4],
    ));
    wait_status(&c, &e, &admin, |st| {
        st.lines()
            .filter(|l| l.contains("REFUSED-LATEST") && l.contains("IDS profiles"))
            .count()
            == 2
    });
    assert!(c.connect("web", "db", 5432).outcome.reached());

    // The IDS rule set, from the store too: the same version is now applied, and db's node
    // inspects what web sends it. A malformed set is refused where it is wrong.
    let bad = write(
        d.path(),
        "bad.rules",
        "alert tcp any any -> any any (msg:\"no sid\";)\n",
    );
    let err = failed(eastwall_on(&c, "store", &e, &admin, &["apply", "-f", &bad]));
    assert!(err.contains(&format!("{bad}:1:")), "{err}");
    let rules = write(
        d.path(),
        "guard.rules",
        "alert tcp any any -> any any (msg:\"attack payload\"; flow:established,to_server; content:\"EVIL-PAYLOAD\"; sid:1000002; rev:1;)\n",
    );
    let guarded = ZONES
        .replace(
            "spec:\n  sections:",
            "spec:\n  idsProfiles:\n    - {name: web, mode: detect}\n  sections:",
        )
        .replace("ports: [5432]}", "ports: [5432], ids: web}");
    let pol5 = write(d.path(), "policy.yaml", &guarded);
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &rules, "-f", &pol5],
    ));
    let listed = ok(eastwall_on(&c, "store", &e, &admin, &["get", "rules"]));
    assert!(listed.contains("guard\t"), "{listed}");
    wait_status(&c, &e, &admin, |st| {
        st.lines()
            .filter(|l| l.contains("\tup\t") && !l.contains("REFUSED"))
            .count()
            == 2
    });
    let dst = c.addr("db", 5432);
    eastwall_integration::http::raw_exchange(
        &c,
        "web",
        dst,
        &[(b"EVIL-PAYLOAD\n".as_slice(), Duration::ZERO)],
        Duration::from_millis(300),
    );
    let t = Instant::now();
    while !c
        .events("hostB")
        .iter()
        .any(|ev| ev["event_type"] == "alert" && ev["alert"]["signature_id"] == 1000002)
    {
        assert!(t.elapsed() < Duration::from_secs(5), "no alert on hostB");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node on a 3-member cluster keeps following when the member it talks to dies: each
/// member is killed in turn, a change is applied through the others, and the node enforces
/// it.
#[test]
fn a_node_fails_over_between_the_members_of_a_cluster() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "etcd1", "etcd2", "etcd3"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostA", "reports", "reports", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        ZONES,
    );
    c.lab.serve("db", &[5432]).unwrap();
    let members: Vec<(String, IpAddr)> = ["etcd1", "etcd2", "etcd3"]
        .iter()
        .map(|h| {
            let h = c.lab.host(h);
            (h.netns.clone(), h.addr.into())
        })
        .collect();
    let refs: Vec<(Option<&str>, IpAddr)> = members
        .iter()
        .map(|(n, ip)| (Some(n.as_str()), *ip))
        .collect();
    let mut e = Etcd::start(&refs, PREFIX).unwrap();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", c.registry());
    let zones = write(d.path(), "zones.yaml", ZONES);
    let swapped = write(d.path(), "swapped.yaml", SWAPPED);
    ok(eastwall_on(
        &c,
        "etcd1",
        &e,
        &admin,
        &["apply", "-f", &reg, "-f", &zones],
    ));
    start_store_nodes(&mut c, &e, &["hostA", "hostB"]);
    assert!(c.connect("web", "db", 5432).outcome.reached());
    for (i, (file, web_reaches)) in [(&swapped, false), (&zones, true), (&swapped, false)]
        .into_iter()
        .enumerate()
    {
        e.kill(i);
        // Applied through a member that is up.
        let alive = ["etcd1", "etcd2", "etcd3"][(i + 1) % 3];
        let t = Instant::now();
        ok(eastwall_on(&c, alive, &e, &admin, &["apply", "-f", file]));
        until_reached(&c, "web", "db", web_reaches, 15);
        until_reached(&c, "reports", "db", !web_reaches, 15);
        eprintln!(
            "member {i} killed: the change enforced {:.2} s after the apply began",
            t.elapsed().as_secs_f64()
        );
        e.restart(i).unwrap();
    }
}

/// What an apply that died half-way left (history under the next number, keys under
/// `config/`) is never in force, and the next apply clears it; after etcd compacts the
/// revision of the version in force, reading and applying go on.
#[test]
fn leftovers_of_a_dead_apply_and_compaction_do_not_harm() {
    require_root();
    let e = etcd();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", REGISTRY);
    let pol = write(d.path(), "policy.yaml", POLICY);
    ok(eastwall(&e, &admin, &["apply", "-f", &reg, "-f", &pol]));
    // A dead applier's chunks: history of version 2 and a key in the configuration.
    let admin_user = eastwall_lab::etcd::ADMIN;
    e.ctl(
        admin_user,
        &[
            "put",
            "/eastwall/history/000000000002/put/workloads/ghost",
            "garbage",
        ],
    )
    .unwrap();
    e.ctl(
        admin_user,
        &["put", "/eastwall/config/workloads/ghost", "garbage"],
    )
    .unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut s = store_as(&e, &admin).await;
        let v1 = s.current().await.unwrap();
        assert!(
            v1.snapshot.get("workloads/ghost").is_none(),
            "read at version 1's revision"
        );
        let next = v1
            .snapshot
            .with(&Part::Policy(POLICY.replace("[5432]", "[5433]")));
        s.apply(&v1, &next, "admin", "after the crash")
            .await
            .unwrap()
            .unwrap();
        let v2 = s.current().await.unwrap();
        assert_eq!(
            v2.snapshot, next,
            "the ghost key is gone, the policy is the applied one"
        );
        assert_eq!(
            s.snapshot_of(2).await.unwrap(),
            next,
            "history 2 is the real one"
        );
        let changes = s.changes_of(2).await.unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");

        // Compaction past the revision of the version in force.
        let rev = s
            .client()
            .get("/eastwall/config/version", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        e.ctl(eastwall_lab::etcd::ROOT, &["compact", &rev.to_string()])
            .unwrap();
        let after = s.current().await.unwrap();
        assert_eq!(after.snapshot, next);
        let third = after
            .snapshot
            .with(&Part::Policy(POLICY.replace("[5432]", "[5434]")));
        let v = s
            .apply(&after, &third, "admin", "after compaction")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.version, 3);
        assert_eq!(s.snapshot_of(1).await.unwrap(), v1.snapshot);
    });
    assert!(ok(eastwall(&e, &admin, &["get", "version"])).contains("version 3"));
}

/// Whether `host`'s node presents identity `id` on its tunnel port: a TLS handshake from
/// inside its namespace, as a peer node would open it (client certificate from the lab's
/// CA, the server verified as `id`).
fn presents(c: &Cloud, host: &str, id: &str) -> bool {
    use eastwall_certs::{Identity, RotatingIdentity, TrustBundle, sni_for};
    use eastwall_identity::SpiffeId;
    let ca = c.lab.ca().unwrap();
    let probe = SpiffeId::parse(&eastwall_integration::spiffe("tls-probe")).unwrap();
    let issued = ca.issue(&probe, Duration::from_secs(600)).unwrap();
    let me = RotatingIdentity::new(Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap());
    let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let want = SpiffeId::parse(id).unwrap();
    let config =
        eastwall_certs::client_config(me, &bundle, want.clone(), &[b"h2".as_slice()]).unwrap();
    let addr = std::net::SocketAddr::new(c.lab.host(host).addr.into(), 15008);
    eastwall_lab::in_netns(&c.lab.host(host).netns, move || {
        rt().block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(sni_for(&want)).unwrap();
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
                .await
                .is_ok_and(|r| r.is_ok())
        })
    })
    .unwrap()
}

/// Certificates follow workloads: with the CA service on the store, moving a workload
/// (`eastwall workload move`) gives its certificate to the new host's node and takes it from
/// the old one's (no longer presented, no longer renewed, refused by the CA).
#[test]
fn a_moved_workload_gets_its_certificate_on_the_new_host_only() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "store"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        ZONES,
    );
    c.lab.serve("db", &[5432]).unwrap();
    let store = c.lab.host("store").clone();
    let e = Etcd::start(&[(Some(store.netns.as_str()), store.addr.into())], PREFIX).unwrap();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", c.registry());
    let pol = write(d.path(), "policy.yaml", ZONES);
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &reg, "-f", &pol],
    ));

    // The CA service reads the registry from the store, as a reader only.
    let reader = e.add_reader("eastwall-ca").unwrap();
    let args: Vec<String> = [
        "--endpoints".to_owned(),
        e.endpoints().join(","),
        "--cacert".to_owned(),
        e.ca_file().display().to_string(),
        "--cert".to_owned(),
        reader.cert.display().to_string(),
        "--key".to_owned(),
        reader.key.display().to_string(),
    ]
    .into();
    let ca = c
        .lab
        .start_ca_on_store(
            &eastwall_integration::eastwall_bin(),
            "store",
            &args,
            3600,
            None,
        )
        .unwrap();
    start_store_nodes(&mut c, &e, &["hostA", "hostB"]);
    let p = c.connect("web", "db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let db = eastwall_integration::spiffe("db");
    assert!(presents(&c, "hostB", &db));
    assert!(!presents(&c, "hostA", &db));

    // db moves to hostA.
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["workload", "move", "db", "--node", "hostA"],
    ));
    let t = Instant::now();
    while !presents(&c, "hostA", &db) || presents(&c, "hostB", &db) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "hostA presents db: {}, hostB: {}",
            presents(&c, "hostA", &db),
            presents(&c, "hostB", &db)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "moved workload: certificate on the new host only {:.2} s after the move",
        t.elapsed().as_secs_f64()
    );
    let status = wait_status(&c, &e, &admin, |st| {
        st.lines().any(|l| l.starts_with("hostA\tup\t2\t"))
            && st.lines().any(|l| l.starts_with("hostB\tup\t2\t"))
    });
    // The certificates column: hostA holds web and db, hostB none.
    let certs = |n: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("{n}\t")))
            .and_then(|l| l.split('\t').nth(6))
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        (certs("hostA"), certs("hostB")),
        ("2".into(), "0".into()),
        "{status}"
    );
    let log = std::fs::read_to_string(&ca.log).unwrap();
    assert!(
        log.contains("registry reloaded from the central store"),
        "{log}"
    );
    assert!(
        log.contains(&format!("signed {db} for node `hostA`")),
        "{log}"
    );
    let old = std::fs::read_to_string(c.lab.dir().join("hostB/node.log")).unwrap();
    assert!(old.contains("certificate dropped"), "{old}");
    // The CA refuses the old host a certificate for it from now on.
    assert!(
        log.contains(&format!("signed {db} for node `hostB`")),
        "{log}"
    );
    let (status, body) = c.ask_ca(&ca, "hostB", &db);
    assert_eq!(status, 403, "{body}");
    assert_eq!(c.ask_ca(&ca, "hostA", &db).0, 200);
}

/// The store down for a while under steady traffic: not one connection is decided wrongly
/// (the allowed pair always reaches, the denied pair never does), a connection held across
/// the outage lives on, and the nodes follow the store again once it is back. The outage
/// lasts `EASTWALL_OUTAGE_SECS` (default 8; the benchmark in docs/BENCHMARKS.md runs 60).
#[test]
fn an_outage_of_the_store_under_traffic_decides_nothing_wrongly() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    require_root();
    let outage = Duration::from_secs(
        std::env::var("EASTWALL_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8),
    );
    let mut c = Cloud::new(
        &["hostA", "hostB", "store"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostA", "reports", "reports", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        ZONES,
    );
    c.lab.serve("db", &[5432]).unwrap();
    let store = c.lab.host("store").clone();
    let mut e = Etcd::start(&[(Some(store.netns.as_str()), store.addr.into())], PREFIX).unwrap();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", c.registry());
    let pol = write(d.path(), "policy.yaml", ZONES);
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &reg, "-f", &pol],
    ));
    start_store_nodes(&mut c, &e, &["hostA", "hostB"]);
    wait_status(&c, &e, &admin, |st| st.matches("\tup\t1\t").count() == 2);

    // A connection held across the outage: it must come out alive.
    let held_ns = c.lab.workload("web").netns.clone();
    let dst = c.addr("db", 5432);
    let mut held = eastwall_lab::in_netns(&held_ns, move || {
        let s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    })
    .unwrap();

    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    // [allowed reached, allowed refused (wrong), denied refused, denied reached (wrong)]
    let traffic: Vec<_> = [("web", true), ("reports", false)]
        .into_iter()
        .map(|(from, allowed)| {
            let (c, stop, counts) = (c.clone(), stop.clone(), counts.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(600);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 100_000 {
                    let reached = c.connect(from, "db", 5432).outcome.reached();
                    let i = match (allowed, reached) {
                        (true, true) => 0,
                        (true, false) => 1,
                        (false, false) => 2,
                        (false, true) => 3,
                    };
                    counts[i].fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    e.kill(0);
    let down = Instant::now();
    std::thread::sleep(outage);
    e.restart(0).unwrap();
    let up = down.elapsed();
    // Back: a version applied now (the same decisions) reaches both nodes.
    let back = Instant::now();
    let same = write(
        d.path(),
        "policy.yaml",
        &format!("{ZONES}# after the outage\n"),
    );
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &same],
    ));
    wait_status(&c, &e, &admin, |st| st.matches("\tup\t2\t").count() == 2);
    let reporting = back.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.join().unwrap();
    }
    let n: Vec<u64> = counts.iter().map(|x| x.load(Ordering::Relaxed)).collect();
    eprintln!(
        "store outage of {:.1} s under traffic: allowed {} reached, {} wrongly refused; denied {} refused, {} wrongly reached; both nodes running a version applied after it {:.2} s after the store came back",
        up.as_secs_f64(),
        n[0],
        n[1],
        n[2],
        n[3],
        reporting.as_secs_f64()
    );
    assert_eq!((n[1], n[3]), (0, 0), "{n:?}");
    assert!(n[0] > 10 && n[2] > 10, "{n:?}");
    // The held connection still carries.
    std::io::Write::write_all(&mut held, b"still here\n").unwrap();
    let mut buf = [0u8; 64];
    let got = std::io::Read::read(&mut held, &mut buf).unwrap();
    assert!(got > 0);
}

/// Node configuration from the store: sections for every node and for one, taken where the
/// node's own file says nothing, checked before they are written, and (read at start) put in
/// force by a restart, which `eastwall status` asks for.
#[test]
fn node_configuration_comes_from_the_store_and_applies_at_restart() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "store"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        ZONES,
    );
    let store = c.lab.host("store").clone();
    let e = Etcd::start(&[(Some(store.netns.as_str()), store.addr.into())], PREFIX).unwrap();
    let admin = e.admin();
    let d = tempfile::tempdir().unwrap();
    let reg = write(d.path(), "registry.yaml", c.registry());
    let pol = write(d.path(), "policy.yaml", ZONES);
    let every = write(
        d.path(),
        "every-node.yaml",
        "apiVersion: eastwall.dev/v1\nkind: NodeDefaults\nspec:\n  limits: {reservedDescriptors: 512}\n",
    );
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["apply", "-f", &reg, "-f", &pol, "-f", &every],
    ));
    // A budget of (open files - reserved) / 2.
    c.lab.set_node_open_files(4096, 4096);
    start_store_nodes(&mut c, &e, &["hostA", "hostB"]);
    let budget = "eastwall_connection_budget";
    assert_eq!(c.metric("hostA", budget), (4096 - 512) / 2);
    assert_eq!(c.metric("hostB", budget), (4096 - 512) / 2);

    // Refused before anything is written: a section only the node's file may set, a value
    // no node takes.
    let bad = write(
        d.path(),
        "bad.yaml",
        "apiVersion: eastwall.dev/v1\nkind: NodeDefaults\nspec:\n  store: {endpoints: []}\n",
    );
    let err = failed(eastwall_on(&c, "store", &e, &admin, &["apply", "-f", &bad]));
    assert!(err.contains(&format!("{bad}:4:")), "{err}");
    let bad = write(
        d.path(),
        "bad.yaml",
        "apiVersion: eastwall.dev/v1\nkind: NodeDefaults\nspec:\n  runtime: {workerThreads: 9999}\n",
    );
    let err = failed(eastwall_on(&c, "store", &e, &admin, &["apply", "-f", &bad]));
    assert!(err.contains("workerThreads"), "{err}");

    // hostA's own: it waits for a restart, and says so; hostB is not concerned.
    let one = write(
        d.path(),
        "hostA.yaml",
        "apiVersion: eastwall.dev/v1\nkind: NodeDefaults\nmetadata: {node: hostA}\nspec:\n  limits: {reservedDescriptors: 1024}\n",
    );
    ok(eastwall_on(&c, "store", &e, &admin, &["apply", "-f", &one]));
    let shown = ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["get", "node-config", "hostA"],
    ));
    assert!(shown.contains("1024"), "{shown}");
    let row = |st: &str, n: &str| {
        st.lines()
            .find(|l| l.starts_with(&format!("{n}\t")))
            .unwrap_or("")
            .to_owned()
    };
    wait_status(&c, &e, &admin, |st| {
        row(st, "hostA").contains("\tRESTART-NEEDED\t2\t") && row(st, "hostB").contains("\tup\t2\t")
    });
    assert_eq!(c.metric("hostA", budget), (4096 - 512) / 2);
    restart_store_node(&mut c, &e, "hostA");
    assert_eq!(c.metric("hostA", budget), (4096 - 1024) / 2);
    wait_status(&c, &e, &admin, |st| row(st, "hostA").contains("\tup\t2\t"));

    // Deleted: back to the sections for every node (after a restart).
    ok(eastwall_on(
        &c,
        "store",
        &e,
        &admin,
        &["delete", "node-config", "hostA"],
    ));
    wait_status(&c, &e, &admin, |st| {
        row(st, "hostA").contains("\tRESTART-NEEDED\t3\t")
    });
}
