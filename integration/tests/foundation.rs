//! Foundation scenarios: default-deny L4 policy on captured traffic across two hosts.
//! Run as root; every test builds its own namespaces.
#![allow(clippy::unwrap_used)]

use eastwall_integration::{Cloud, Outcome, require_root};

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
        - id: app-to-db
          action: allow
          from: {app: app, zone: prod}
          to: {app: db}
          ports: [5432, 5433]
        - id: watch-legacy
          mode: monitor
          action: deny
          from: {app: legacy}
          to: {app: db}
        - id: legacy-to-db
          action: allow
          from: {app: legacy}
          to: {app: db}
          ports: [5432]
        - id: ops-to-db
          action: allow
          from: {app: ops}
          to: {app: db}
          ports: [5432]
"#;

/// hostA: dev-app, prod-app, legacy; hostB: prod-db (listening on 5432 and 6379).
fn cloud(extra_registry: &str) -> Cloud {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "dev-app", "app", "dev"),
            ("hostA", "prod-app", "app", "prod"),
            ("hostA", "legacy", "legacy", "prod"),
            ("hostB", "prod-db", "db", "prod"),
        ],
        extra_registry,
        POLICY,
    );
    c.lab.serve("prod-db", &[5432, 6379]).unwrap();
    c.lab.serve("prod-app", &[8080]).unwrap();
    c
}

#[test]
fn zones_and_ports() {
    let mut c = cloud("");
    c.start_nodes("");
    assert!(
        c.connect("prod-app", "prod-db", 5432).outcome.reached(),
        "prod app reaches the prod db on 5432"
    );
    let other_port = c.connect("prod-app", "prod-db", 6379);
    assert_eq!(
        other_port.outcome,
        Outcome::Reset,
        "but not on another port"
    );
    assert_eq!(
        c.flow("hostA", other_port.local.unwrap())["eastwall"]["policy"]["rule"],
        "default-deny"
    );
    let dev = c.connect("dev-app", "prod-db", 5432);
    assert_eq!(dev.outcome, Outcome::Reset, "dev never reaches prod");
    // Same-host traffic is decided too.
    let same_host = c.connect("dev-app", "prod-app", 8080);
    assert_eq!(same_host.outcome, Outcome::Reset);
    assert_eq!(
        c.flow("hostA", same_host.local.unwrap())["eastwall"]["policy"]["rule"],
        "dev-not-prod"
    );
}

#[test]
fn denied_connections_leave_flow_records_and_metrics() {
    let mut c = cloud("");
    c.start_nodes("");
    let p = c.connect("dev-app", "prod-db", 5432);
    assert_eq!(p.outcome, Outcome::Reset);
    let f = c.flow("hostA", p.local.unwrap());
    assert_eq!(f["event_type"], "flow");
    assert_eq!(f["dest_ip"], c.lab.workload("prod-db").addr.to_string());
    assert_eq!(f["dest_port"], 5432);
    assert_eq!(f["flow"]["state"], "rejected");
    assert_eq!(f["eastwall"]["direction"], "outbound");
    assert_eq!(f["eastwall"]["src"]["workload"], "dev-app");
    assert_eq!(f["eastwall"]["src"]["zone"], "dev");
    assert_eq!(f["eastwall"]["dest"]["workload"], "prod-db");
    assert_eq!(f["eastwall"]["dest"]["app"], "db");
    let pol = &f["eastwall"]["policy"];
    assert_eq!(pol["verdict"], "deny");
    assert_eq!(pol["rule"], "dev-not-prod");
    assert_eq!(pol["section"], "zones");
    assert_eq!(pol["mode"], "enforce");
    let metrics = c.admin("hostA", "/metrics");
    assert!(
        metrics.contains(r#"eastwall_policy_decisions_total{direction="outbound",rule="dev-not-prod",mode="enforce",action="deny"} 1"#),
        "{metrics}"
    );
    // Every name as Prometheus's linter wants it; the histograms, which policy, since when.
    eastwall_integration::promtool_check_metrics(&metrics);
    for line in [
        r#"eastwall_decision_duration_seconds_count{direction="outbound"} "#,
        r#"eastwall_connection_duration_seconds_count{direction="outbound"} "#,
        r#"eastwall_policy_info{source="files",version="",hash="sha256:"#,
        "eastwall_policy_loaded_timestamp_seconds ",
        r#"eastwall_build_info{version=""#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    // The same record is served by /flows.
    let flows: serde_json::Value = serde_json::from_str(&c.admin("hostA", "/flows")).unwrap();
    assert!(
        flows
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["flow_id"] == f["flow_id"])
    );
    assert_eq!(c.admin("hostA", "/healthz"), "ok\n");
}

#[test]
fn monitor_rule_lets_traffic_through_and_records_what_it_would_do() {
    let mut c = cloud("");
    c.start_nodes("");
    let p = c.connect("legacy", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let f = c.flow("hostA", p.local.unwrap());
    let pol = &f["eastwall"]["policy"];
    assert_eq!(pol["verdict"], "allow");
    assert_eq!(pol["rule"], "legacy-to-db");
    assert_eq!(pol["monitor"][0]["rule"], "watch-legacy");
    assert_eq!(pol["monitor"][0]["would"], "deny");
    let metrics = c.admin("hostA", "/metrics");
    assert!(
        metrics.contains(r#"eastwall_policy_decisions_total{direction="outbound",rule="watch-legacy",mode="monitor",action="deny"} 1"#),
        "{metrics}"
    );
}

#[test]
fn source_address_and_original_destination_are_preserved() {
    let mut c = cloud("");
    c.start_nodes("");
    let p = c.connect("prod-app", "prod-db", 5432);
    let Outcome::Reached(greeting) = &p.outcome else {
        panic!("{:?}", p.outcome)
    };
    let src = c.lab.workload("prod-app").addr;
    let dst = c.addr("prod-db", 5432);
    assert!(
        greeting.starts_with(&format!("hello from prod-db: you are {src}:")),
        "{greeting}"
    );
    assert!(greeting.ends_with(&format!("I am {dst}")), "{greeting}");
    // Both nodes decided and relayed: hostA outbound, hostB inbound; bytes are counted.
    let out = c.flow("hostA", p.local.unwrap());
    assert_eq!(out["eastwall"]["policy"]["verdict"], "allow");
    assert!(out["flow"]["bytes_toclient"].as_u64().unwrap() >= greeting.len() as u64);
    let metrics = c.admin("hostB", "/metrics");
    assert!(
        metrics.contains(r#"eastwall_connections_opened_total{direction="inbound"} 1"#),
        "{metrics}"
    );
}

#[test]
fn unknown_source_is_denied() {
    let mut c = cloud("");
    c.lab.add_workload("hostA", "stranger").unwrap();
    c.start_nodes("");
    let p = c.connect("stranger", "prod-db", 5432);
    assert_eq!(p.outcome, Outcome::Reset);
    let f = c.flow("hostA", p.local.unwrap());
    assert_eq!(f["eastwall"]["policy"]["rule"], "unknown-source");
    assert!(f["eastwall"]["src"]["workload"].is_null());
}

#[test]
fn stopped_node_fails_closed_until_cleanup() {
    let mut c = cloud("");
    c.start_nodes("");
    assert!(c.connect("prod-app", "prod-db", 5432).outcome.reached());
    let node = c.node("hostA").clone();
    c.lab.stop_node(&node).unwrap();
    assert_eq!(
        c.connect("prod-app", "prod-db", 5432).outcome,
        Outcome::Timeout,
        "captured traffic must not bypass a stopped node"
    );
    // Cleanup really removes capture on hostA: traffic now leaves it in plaintext, and
    // hostB, which expects mesh workloads only through the tunnel, refuses it.
    let out = c.eastwall_in(
        "hostA",
        &["node", "--config", node.config.to_str().unwrap(), "cleanup"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bypass = c.connect("prod-app", "prod-db", 5432);
    assert_eq!(bypass.outcome, Outcome::Reset);
    let f = c.flow("hostB", bypass.local.unwrap());
    assert_eq!(f["eastwall"]["direction"], "inbound");
    assert_eq!(
        f["eastwall"]["policy"]["rule"],
        "mesh-source-without-tunnel"
    );
}

#[test]
fn locally_originated_traffic_is_captured_when_asked() {
    // The host itself is a workload of app `ops` (its LAN address).
    let mut c = cloud(
        "    - {name: hostA-self, node: hostA, addresses: [10.77.0.1], app: ops, zone: prod}\n",
    );
    c.start_nodes("    localTraffic: true\n");
    let db = c.addr("prod-db", 5432);
    let ok = c
        .lab
        .connect_from_host("hostA", db, eastwall_integration::CONNECT_TIMEOUT);
    assert!(
        ok.outcome.reached(),
        "{:?}\nhostA flows: {}\nhostB flows: {}",
        ok.outcome,
        std::fs::read_to_string(&c.node("hostA").flow_log).unwrap_or_default(),
        std::fs::read_to_string(&c.node("hostB").flow_log).unwrap_or_default()
    );
    let f = c.flow("hostA", ok.local.unwrap());
    assert_eq!(f["eastwall"]["src"]["workload"], "hostA-self");
    assert_eq!(f["eastwall"]["policy"]["rule"], "ops-to-db");
    let denied = c.lab.connect_from_host(
        "hostA",
        c.addr("prod-db", 6379),
        eastwall_integration::CONNECT_TIMEOUT,
    );
    assert_eq!(denied.outcome, Outcome::Reset);
    // The node's own admin endpoint on loopback is not captured.
    assert_eq!(c.admin("hostA", "/healthz"), "ok\n");
}

/// TCP's `TCPSynRetrans` counter of network namespace `netns`.
fn syn_retransmits(c: &Cloud, netns: &str) -> u64 {
    let out = c.lab.exec(netns, &["cat", "/proc/net/netstat"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "TCPSynRetrans")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// When the server closes first, the source node's socket ends in TIME_WAIT. A client that
/// reuses its source port right away must reach the node's listener with its SYN, not that
/// TIME_WAIT socket, which answers with an ACK: the client resets it and sends its SYN again
/// (`capture::nft`: a pure SYN never takes the `socket transparent` shortcut).
#[test]
fn a_client_reusing_its_port_after_the_server_closed_first_connects_at_once() {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    let mut c = cloud("");
    c.start_nodes("");
    // A server on prod-db:5433 that says goodbye and closes.
    let db = c.lab.workload("prod-db").clone();
    let dst = SocketAddr::new(db.addr.into(), 5433);
    let listener = eastwall_lab::in_netns(&db.netns, move || TcpListener::bind(dst))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"bye\n");
        }
    });
    let app = c.lab.workload("prod-app").clone();
    let local = SocketAddr::new(app.addr.into(), 40_123);
    let once = move || -> anyhow::Result<String> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&local.into())?;
        s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut got = String::new();
        s.read_to_string(&mut got)?;
        Ok(got)
    };
    let before = syn_retransmits(&c, &app.netns);
    let first = eastwall_lab::in_netns(&app.netns, once).unwrap();
    assert_eq!(first.unwrap(), "bye\n");
    // The source node closed its side first: its socket holds the 4-tuple in TIME_WAIT.
    let host_a = c.lab.host("hostA").netns.clone();
    let mut tw = String::new();
    for _ in 0..50 {
        let out = c
            .lab
            .exec(&host_a, &["ss", "-tanH", "state", "time-wait"])
            .unwrap();
        tw = String::from_utf8_lossy(&out.stdout).into_owned();
        if tw.contains(&local.to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        tw.contains(&local.to_string()),
        "no TIME_WAIT on hostA: {tw}"
    );
    let second = eastwall_lab::in_netns(&app.netns, once).unwrap();
    assert_eq!(second.unwrap(), "bye\n");
    assert_eq!(
        syn_retransmits(&c, &app.netns) - before,
        0,
        "the client had to send its SYN again"
    );
}

/// The node connects upstream from the client's address with the port chosen at `connect`,
/// for the whole 4-tuple: connections from one address to different servers share a source
/// port, and a port in TIME_WAIT towards one server serves another. (Bound to port 0 before
/// `connect`, each took a port of its own: TIME_WAIT sockets of the L7 path, which closes
/// upstream connections first, pile up under Connection: close load.)
#[test]
fn spoofed_upstream_connections_share_source_ports_across_destinations() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    require_root();
    let mut lab = eastwall_lab::Lab::new().unwrap();
    let h = lab.add_host("h").unwrap();
    let r = eastwall_lab::in_netns(&h.netns, || -> anyhow::Result<()> {
        // One ephemeral port in this namespace.
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40000")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut servers = Vec::new();
            for port in [41001, 41002, 41003] {
                servers.push(tokio::net::TcpListener::bind(("127.0.0.1", port)).await?);
            }
            let src = Some("127.0.0.5".parse()?);
            let t = Duration::from_secs(5);
            let connect = |i: usize| {
                let dst = servers[i].local_addr();
                async move {
                    eastwall_node::capture::socket::connect_spoofed(src, dst?, 0, t)
                        .await
                        .map_err(anyhow::Error::from)
                }
            };
            let mut c1 = connect(0).await?;
            let (_peer1, _) = servers[0].accept().await?;
            let c2 = connect(1).await?;
            anyhow::ensure!(c1.local_addr()?.port() == 40000);
            anyhow::ensure!(c2.local_addr()?.port() == 40000, "two servers, one port");
            // c1 closes first: its 4-tuple goes to TIME_WAIT; the port still serves a third
            // server while c2 holds it too.
            c1.shutdown().await?;
            drop(c1);
            drop(_peer1);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let c3 = connect(2).await?;
            anyhow::ensure!(c3.local_addr()?.port() == 40000);
            Ok(())
        })
    })
    .unwrap();
    r.unwrap();
}

/// `runtime.logFormat: json`: every line the node logs is one JSON object a log shipper can
/// read (level, timestamp, message), from its first line on.
#[test]
fn the_node_logs_json_lines_when_asked() {
    require_root();
    let mut c = cloud("");
    c.lab.set_node_log_format("json");
    c.start_nodes("");
    assert!(c.connect("prod-app", "prod-db", 5432).outcome.reached());
    let log = c.node("hostA").config.with_file_name("node.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "empty log {}", log.display());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
