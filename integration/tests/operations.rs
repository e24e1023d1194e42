//! Running a node as a platform team does: its admin endpoint off loopback behind a token,
//! Prometheus on a listener of its own. Run as root; every test builds its own namespaces.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use eastwall_integration::{Cloud, require_root};

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
"#;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// hostA: app; hostB: db (listening on 5432).
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
    c.lab.serve("db", &[5432]).unwrap();
    c
}

/// `GET path` with `headers` from hostB's namespace to `addr`: the status line and body.
fn get(c: &Cloud, addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: n\r\n{headers}Connection: close\r\n\r\n");
    let ns = c.lab.host("hostB").netns.clone();
    eastwall_lab::in_netns(&ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    })
    .unwrap()
}

#[test]
fn the_admin_endpoint_off_loopback_wants_its_token_and_prometheus_has_its_own_listener() {
    let mut c = cloud();
    c.lab.set_node_admin_token(TOKEN);
    c.start_nodes("");
    assert!(c.connect("app", "db", 5432).outcome.reached());
    let host_a = c.lab.host("hostA").addr;
    let admin = SocketAddr::new(host_a.into(), 15000);
    // From another host: no token, a wrong one, another scheme: refused, nothing served.
    for headers in [
        String::new(),
        "Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n".to_owned(),
        format!("Authorization: Basic {TOKEN}\r\n"),
    ] {
        for path in ["/flows", "/metrics", "/healthz"] {
            let (status, body) = get(&c, admin, path, &headers);
            assert!(
                status.starts_with("HTTP/1.1 401"),
                "{path} {headers}: {status}"
            );
            assert!(
                !body.contains("flow_id") && !body.contains("eastwall_"),
                "{body}"
            );
        }
    }
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, flows) = get(&c, admin, "/flows", &auth);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(flows.contains("\"flow_id\""), "{flows}");
    // The metrics listener: no token, metrics and probes only.
    let metrics = SocketAddr::new(host_a.into(), 15020);
    let (status, body) = get(&c, metrics, "/metrics", "");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("eastwall_connections_opened_total"), "{body}");
    eastwall_integration::promtool_check_metrics(&body);
    // Prometheus asks for OpenMetrics and gets it.
    let (_, om) = get(
        &c,
        metrics,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(get(&c, metrics, "/healthz", "").1, "ok\n");
    assert_eq!(get(&c, metrics, "/livez", "").1, "alive\n");
    let (status, body) = get(&c, metrics, "/flows", "");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert!(!body.contains("flow_id"), "{body}");
}

/// A connection from `app` to `db:5432` through the nodes, greeted: held open.
fn open(c: &Cloud) -> TcpStream {
    let dst = c.addr("db", 5432);
    let ns = c.lab.workload("app").netns.clone();
    eastwall_lab::in_netns(&ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let greeting = read_line(&mut s);
        assert!(greeting.starts_with("hello from db"), "{greeting:?}");
        s
    })
    .unwrap()
}

/// What `s` sends up to its next newline (less at its end, or on an error).
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Whether `s` still carries bytes both ways.
fn echoes(s: &mut TcpStream) -> bool {
    s.write_all(b"ping\n").is_ok() && read_line(s) == "ping\n"
}

/// SIGTERM, as `systemctl stop` or an upgrade sends it: the node refuses new connections
/// (each recorded), carries on those in progress, and exits when the last one ends; past
/// `runtime.drainSecs` it ends the rest, each with its record. While no node runs, nothing
/// reaches the server: the capture table stays.
#[test]
fn sigterm_drains_connections_in_progress_and_nothing_bypasses_the_node() {
    let mut c = cloud();
    c.lab.set_node_drain_secs(60);
    c.start_nodes("");
    let mut kept = open(&c);
    let node = c.node("hostA").clone();
    c.lab.sigterm_node(&node).unwrap();
    // Draining: not ready, new connections refused and recorded, the old one carried.
    std::thread::sleep(Duration::from_millis(300));
    let health = c.lab.admin_get(&node, "/healthz").unwrap_err().to_string();
    assert!(
        health.contains("503") && health.contains("stopping"),
        "{health}"
    );
    let refused = c.connect("app", "db", 5432);
    assert!(!refused.outcome.reached(), "{:?}", refused.outcome);
    let f = c.flow("hostA", refused.local.unwrap());
    assert_eq!(f["flow"]["reason"], "resource-limit");
    assert_eq!(f["eastwall"]["policy"]["rule"], "node-stopping");
    assert!(
        echoes(&mut kept),
        "the connection in progress is carried on"
    );
    assert_eq!(
        c.lab.wait_node(&node, Duration::from_millis(500)).unwrap(),
        None
    );
    // The last connection ends: the node goes, long before its 60 s.
    drop(kept);
    let status = c.lab.wait_node(&node, Duration::from_secs(5)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // No node: nothing reaches the server, not even what the policy allows.
    assert!(!c.connect("app", "db", 5432).outcome.reached());

    // Again with a drain of 1 s and a connection that does not end: it is ended.
    c.lab.set_node_drain_secs(1);
    let node = c.start_node("hostA", "");
    let mut kept = open(&c);
    let local = kept.local_addr().unwrap();
    c.lab.sigterm_node(&node).unwrap();
    let status = c.lab.wait_node(&node, Duration::from_secs(20)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(!echoes(&mut kept), "ended at the drain's end");
    let f = c.flow("hostA", local);
    assert_eq!(f["flow"]["reason"], "revoked");
    assert_eq!(f["eastwall"]["revoked_by"], "node-stopping");
    assert!(!c.connect("app", "db", 5432).outcome.reached());
    // A new node takes over where the old one left.
    c.start_node("hostA", "");
    assert!(c.connect("app", "db", 5432).outcome.reached());
}

fn promtool(args: &[&str]) {
    eastwall_integration::run_ok(std::process::Command::new("promtool").args(args));
}

/// The alert rules and the scrape job pass promtool; every dashboard query is PromQL
/// promtool accepts. (That they name only series a node exposes is a unit test of the
/// node's metrics.)
#[test]
fn the_dashboard_and_alert_rules_are_valid_for_prometheus() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = deploy.join("prometheus/eastwall-alerts.yaml");
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    promtool(&[
        "check",
        "config",
        deploy.join("prometheus/scrape.yaml").to_str().unwrap(),
    ]);
    let dashboard_text =
        std::fs::read_to_string(deploy.join("grafana/eastwall-node.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id {} twice",
            p["id"]
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            // Grafana's variables, as Grafana fills them in.
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            recording.push_str(&format!(
                "      - record: dashboard:panel{}:{}\n        expr: {}\n",
                p["id"],
                t["refId"].as_str().unwrap(),
                serde_json::Value::String(expr)
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("eastwall-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let as_rules = dir.join("dashboard-queries.yaml");
    std::fs::write(&as_rules, recording).unwrap();
    promtool(&["check", "rules", as_rules.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(panels.len() >= 10, "{}", panels.len());
}

/// The Kubernetes manifests pass the API's schemas (kubernetes-validate, strict: no field
/// the API does not know).
#[test]
fn the_kubernetes_manifests_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    let out = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (python3 -m kubernetes_validate; scripts/test.sh installs it from PyPI)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every document was checked (one INFO line each).
    assert!(text.matches("INFO").count() >= 9, "{text}");
}

/// The metrics listener faces the network: clients that open connections and send nothing
/// hold them for the header timeout (5 s) at most, so a scrape still gets through; at most 64
/// are served at once, the rest wait in the kernel's queue.
#[test]
fn idle_connections_cannot_keep_prometheus_out() {
    let mut c = cloud();
    c.lab.set_node_admin_token(TOKEN);
    c.start_nodes("");
    let metrics = SocketAddr::new(c.lab.host("hostA").addr.into(), 15020);
    let ns = c.lab.host("hostB").netns.clone();
    let idle: Vec<TcpStream> = eastwall_lab::in_netns(&ns, move || {
        (0..64)
            .map(|_| TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).unwrap())
            .collect()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let (status, body) = get(&c, metrics, "/metrics", "");
    let waited = started.elapsed();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("eastwall_build_info"));
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    // The idle ones were cut (whatever the server said on the way out).
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("an idle connection is still open: {e}"),
            }
        }
    }
}
