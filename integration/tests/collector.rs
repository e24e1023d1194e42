//! The flow collector against real nodes: records of every node arrive (mutual TLS, node
//! certificates), `eastwall observe` reads them back filtered, a collector that goes away
//! loses nothing within the nodes' backlog and what overflows it is counted, and clients
//! that are not nodes cannot send, nor nodes read. Run as root.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use eastwall_certs::{Identity, TrustBundle};
use eastwall_identity::SpiffeId;
use eastwall_integration::{Cloud, eastwall_bin, require_root};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432]}
"#;

/// The backlog each node keeps for the collector.
const BACKLOG: usize = 40;

/// A running collector, ended (by PID) when dropped.
struct Collector {
    child: Child,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issues `id` from the lab's CA into `dir/name.crt|.key`.
fn issue(c: &Cloud, dir: &Path, name: &str, id: &str) -> (PathBuf, PathBuf) {
    let issued = c
        .lab
        .ca()
        .unwrap()
        .issue(&SpiffeId::parse(id).unwrap(), Duration::from_secs(3600))
        .unwrap();
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem).unwrap();
    (crt, key)
}

struct Scene {
    c: Cloud,
    dir: tempfile::TempDir,
    url: String,
    bundle: PathBuf,
}

impl Scene {
    fn start_collector(&self) -> Collector {
        self.start_collector_with(&[])
    }

    fn start_collector_with(&self, extra: &[&str]) -> Collector {
        let central = self.c.lab.host("central");
        let (crt, key) = (
            self.dir.path().join("collector.crt"),
            self.dir.path().join("collector.key"),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("collector.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &central.netns])
            .arg(eastwall_bin())
            .args(["collector", "--listen", &format!("{}:15010", central.addr)])
            .arg("--cert")
            .arg(&crt)
            .arg("--key")
            .arg(&key)
            .arg("--trust-bundle")
            .arg(&self.bundle)
            .arg("--db")
            .arg(self.dir.path().join("flows.db"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::new(central.addr.into(), 15010);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !eastwall_lab::in_netns(&central.netns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .unwrap()
        {
            assert!(Instant::now() < deadline, "the collector did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector { child }
    }

    /// `eastwall observe ARGS` as operator alice, from the collector's host.
    fn observe(&self, args: &[&str]) -> Output {
        let (crt, key) = (
            self.dir.path().join("alice.crt"),
            self.dir.path().join("alice.key"),
        );
        Command::new("ip")
            .args(["netns", "exec", &self.c.lab.host("central").netns])
            .arg(eastwall_bin())
            .arg("observe")
            .args(["--collector", &self.url])
            .arg("--cert")
            .arg(crt)
            .arg("--key")
            .arg(key)
            .arg("--trust-bundle")
            .arg(&self.bundle)
            .args(args)
            .output()
            .unwrap()
    }

    /// How many records of `node` the collector holds.
    fn held(&self, node: &str) -> usize {
        let out = self.observe(&["--node", node, "--last", "10000", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Lines of `host`'s own flow log.
    fn logged(&self, host: &str) -> usize {
        std::fs::read_to_string(&self.c.node(host).flow_log)
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn wait_held(&self, node: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let held = self.held(node);
            if held >= n {
                assert_eq!(held, n, "{node}: more records than were written");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: {held} of {n} records at the collector"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn scene() -> Scene {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "central"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("db", &[5432]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, c.lab.ca().unwrap().cert_pem()).unwrap();
    issue(
        &c,
        dir.path(),
        "collector",
        "spiffe://corp.example/collector",
    );
    issue(
        &c,
        dir.path(),
        "alice",
        "spiffe://corp.example/operator/alice",
    );
    let central = c.lab.host("central").addr;
    let url = format!("https://{central}:15010");
    for host in ["hostA", "hostB"] {
        let (crt, key) = issue(
            &c,
            dir.path(),
            host,
            &format!("spiffe://corp.example/node/{host}"),
        );
        c.lab.clear_node_spec();
        c.lab.add_node_spec(&format!(
            "  export:\n    url: {url}\n    nodeCert: {}\n    nodeKey: {}\n    backlogRecords: {BACKLOG}\n",
            crt.display(),
            key.display()
        ));
        c.start_node(host, "");
    }
    Scene {
        c,
        dir,
        url,
        bundle,
    }
}

#[test]
fn records_reach_the_collector_and_an_outage_loses_nothing_within_the_backlog() {
    let s = scene();
    let collector = s.start_collector();
    for _ in 0..10 {
        assert!(s.c.connect("web", "db", 5432).outcome.reached());
    }
    assert!(!s.c.connect("db", "web", 5432).outcome.reached());
    // Every record of each node's log, at the collector.
    for host in ["hostA", "hostB"] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.logged(host) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    s.wait_held("hostA", s.logged("hostA"));
    s.wait_held("hostB", s.logged("hostB"));
    // Filters, as a table: the denied one, from db.
    let out = s.observe(&["--verdict", "deny", "--from", "db"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("deny") && table.contains("default-deny"),
        "{table}"
    );
    // A policy recommended from what the collector holds.
    let reg = s.dir.path().join("registry.yaml");
    std::fs::write(&reg, s.c.registry()).unwrap();
    let (crt, key) = (
        s.dir.path().join("alice.crt"),
        s.dir.path().join("alice.key"),
    );
    let recommend = |extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &s.c.lab.host("central").netns])
            .arg(eastwall_bin())
            .args(["policy", "recommend", "--registry"])
            .arg(&reg)
            .args(["--collector", &s.url, "--since", "2026-01-01T00:00:00Z"])
            .arg("--cert")
            .arg(&crt)
            .arg("--key")
            .arg(&key)
            .arg("--trust-bundle")
            .arg(&s.bundle)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // From the per-day aggregates (the default)...
    let yaml = recommend(&[]);
    assert!(
        yaml.contains("from: {app: \"web\", zone: \"prod\"}") && yaml.contains("ports: [5432]"),
        "{yaml}"
    );
    assert!(yaml.contains("# evidence: 10 decisions"), "{yaml}");
    assert!(
        yaml.contains("per-day aggregates of the collector"),
        "{yaml}"
    );
    // ...the same rules as from every record.
    let exact = recommend(&["--from-records"]);
    let rules = |y: &str| -> Vec<String> {
        y.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(rules(&yaml), rules(&exact), "{yaml}\n{exact}");
    assert!(exact.contains("# evidence: 10 decisions"), "{exact}");

    // The collector goes away; 15 more connections wait in the backlogs (under 40 each).
    let before = (s.logged("hostA"), s.logged("hostB"));
    drop(collector);
    for _ in 0..15 {
        assert!(s.c.connect("web", "db", 5432).outcome.reached());
    }
    std::thread::sleep(Duration::from_millis(500));
    let _collector = s.start_collector();
    s.wait_held("hostA", s.logged("hostA"));
    s.wait_held("hostB", s.logged("hostB"));
    assert!(s.logged("hostA") >= before.0 + 15);
    let dropped = "eastwall_flow_export_records_total{result=\"dropped\"}";
    assert_eq!(s.c.metric("hostA", dropped), 0);

    // Down again, and more than the backlog and the batch being sent hold (40 each): the
    // overflow is counted, the rest arrives.
    drop(_collector);
    for _ in 0..150 {
        s.c.connect("web", "db", 5432);
    }
    std::thread::sleep(Duration::from_millis(500));
    let _collector = s.start_collector();
    let sent = "eastwall_flow_export_records_total{result=\"sent\"}";
    for host in ["hostA", "hostB"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (logged, sent, dropped) = (
                s.logged(host),
                s.c.metric(host, sent) as usize,
                s.c.metric(host, dropped) as usize,
            );
            if sent + dropped == logged {
                assert!(
                    dropped > 0,
                    "{host}: nothing dropped beyond a backlog of {BACKLOG}"
                );
                assert_eq!(s.held(host), sent, "{host}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{host}: logged {logged}, sent {sent}, dropped {dropped}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn only_nodes_send_and_only_operators_read() {
    let s = scene();
    let _collector = s.start_collector();
    let bundle = TrustBundle::from_pem(&std::fs::read_to_string(&s.bundle).unwrap()).unwrap();
    let ask = |who: &str, method: hyper::Method, body: &str| {
        let (crt, key) = issue(&s.c, s.dir.path(), "asker", who);
        let me = Identity::from_pem(
            &std::fs::read_to_string(crt).unwrap(),
            &std::fs::read_to_string(key).unwrap(),
        )
        .unwrap();
        let endpoint = eastwall_node::mtls::Endpoint::parse(&s.url).unwrap();
        let server = eastwall_node::collector::collector_id("corp.example").unwrap();
        let bundle = bundle.clone();
        let body = bytes::Bytes::from(body.to_owned());
        eastwall_lab::in_netns(&s.c.lab.host("central").netns, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let call = eastwall_node::mtls::Call {
                        method,
                        path: "/v1/records",
                        content_type: "application/x-ndjson",
                        body,
                        max_answer: 1 << 20,
                        timeout: Duration::from_secs(5),
                        bearer: None,
                    };
                    let a = eastwall_node::mtls::request(
                        &endpoint,
                        Some(me),
                        &bundle,
                        &server,
                        call,
                        None,
                    )
                    .await
                    .unwrap();
                    (a.status, String::from_utf8_lossy(&a.body).into_owned())
                })
        })
        .unwrap()
    };
    let record = r#"{"timestamp":"2026-12-01T10:00:00Z","event_type":"flow","src_ip":"10.0.1.2","dest_ip":"10.0.2.2","dest_port":5432,"proto":"TCP","eastwall":{"node":"hostA","src":{},"dest":{},"policy":{"verdict":"allow","rule":"r"}}}"#;
    // A workload is not a node; an operator does not send; a node does not read.
    let (status, body) = ask("spiffe://corp.example/wl/web", hyper::Method::POST, record);
    assert_eq!(status, 403, "{body}");
    let (status, _) = ask(
        "spiffe://corp.example/operator/alice",
        hyper::Method::POST,
        record,
    );
    assert_eq!(status, 403);
    let (status, _) = ask("spiffe://corp.example/node/hostA", hyper::Method::GET, "");
    assert_eq!(status, 403);
    // A node sends another node's record and garbage: refused with reasons, its own kept.
    let other = record.replace("hostA", "hostB");
    let (status, body) = ask(
        "spiffe://corp.example/node/hostA",
        hyper::Method::POST,
        &format!("{record}\n{other}\n{{\"x\":1}}\nnot json"),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(1), Some(3)),
        "{body}"
    );
    assert!(
        body.contains("a record of node `hostB` sent by node `hostA`"),
        "{body}"
    );
}

#[test]
fn lateral_movement_is_flagged_when_asked() {
    let s = scene();
    // No learning period, three denials across zones in a minute.
    let _collector = s.start_collector_with(&[
        "--anomalies",
        "--learning-hours",
        "0",
        "--denied-across-zones",
        "3",
        "--window-secs",
        "60",
    ]);
    for _ in 0..3 {
        assert!(s.c.connect("web", "db", 5432).outcome.reached());
    }
    // (Denials across zones are table-tested in eastwall_flows::anomaly.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let anomalies = loop {
        let out = s.observe(&["--type", "anomaly", "-o", "json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().count() >= 1 {
            break text;
        }
        assert!(Instant::now() < deadline, "no anomaly at the collector");
        std::thread::sleep(Duration::from_millis(300));
    };
    // The first contact of web with db (and of db's node seeing web), once per pair.
    let events: Vec<serde_json::Value> = anomalies
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    events
        .iter()
        .for_each(eastwall_integration::eve_schema::assert_conforms);
    assert!(
        events.iter().all(|e| e["anomaly"]["event"] == "new-peer"),
        "{anomalies}"
    );
    assert!(
        events.iter().any(|e| e["eastwall"]["reason"]
            .as_str()
            .unwrap()
            .contains("web contacted db TCP/5432")),
        "{anomalies}"
    );
    let pairs = events.len();
    for _ in 0..3 {
        assert!(s.c.connect("web", "db", 5432).outcome.reached());
    }
    std::thread::sleep(Duration::from_secs(1));
    let out = s.observe(&["--type", "anomaly", "-o", "json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), pairs);
}
