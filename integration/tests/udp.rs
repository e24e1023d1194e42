//! UDP under default deny: sessions captured, decided by the same policy as TCP, carried
//! straight on or through the tunnel (both transports) with the proven identity, bounded,
//! revoked by a reload, and dropped while the node is down. Run as root.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use eastwall_integration::{Cloud, UdpProbe, require_root, spiffe};

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
        - id: app-to-db-udp
          action: allow
          from: {spiffe: "spiffe://corp.example/wl/prod-app"}
          to: {app: db}
          ports: [{port: 5432, protocol: UDP}, 5432]
        - id: app-to-cache-udp
          action: allow
          from: {app: app}
          to: {app: cache}
          ports: [{protocol: UDP}]
"#;

/// Short idle times so that sessions end (and write their records) within a test.
const UDP: &str = "  udp:\n    idleSecs: 1\n    dnsIdleSecs: 1\n";

/// hostA: dev-app (dev), prod-app and cache (prod); hostB: prod-db. UDP echo services on
/// prod-db:5432 and cache:11211.
fn cloud_over(transport: &str) -> Cloud {
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
    c.lab.serve_udp("prod-db", &[5432]).unwrap();
    c.lab.serve_udp("cache", &[11211]).unwrap();
    c.lab
        .add_node_spec(&format!("  tunnel:\n    transport: {transport}\n{UDP}"));
    c
}

fn exchange(c: &Cloud, from: &str, to: &str, port: u16, n: usize) -> UdpProbe {
    c.lab
        .udp_exchange(from, c.addr(to, port), n, Duration::from_millis(400))
}

/// The flow record of the UDP session from `local` on `host` (written once it is idle).
fn session_record(c: &Cloud, host: &str, local: SocketAddr) -> serde_json::Value {
    let local = local.to_string();
    for _ in 0..250 {
        if let Some(f) = c.flows(host).into_iter().find(|f| {
            f["proto"] == "UDP"
                && format!("{}:{}", f["src_ip"].as_str().unwrap_or(""), f["src_port"]) == local
        }) {
            return f;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no UDP record for {local} on {host}: {:#?}", c.flows(host));
}

macro_rules! over_both_transports {
    ($($name:ident),* $(,)?) => {
        mod quic {
            $( #[test] fn $name() { super::$name("quic") } )*
        }
        mod h2 {
            $( #[test] fn $name() { super::$name("h2") } )*
        }
    };
}

over_both_transports!(udp_crosses_hosts_through_the_tunnel_with_the_proven_identity);

fn udp_crosses_hosts_through_the_tunnel_with_the_proven_identity(transport: &str) {
    let mut c = cloud_over(transport);
    c.start_nodes("");
    let p = exchange(&c, "prod-app", "prod-db", 5432, 5);
    assert_eq!(p.answers.len(), 5, "{p:?}");
    // The server saw the client's own address and port.
    assert!(
        p.answers[0].starts_with(&format!("from prod-db: you are {}: ping 0", p.local)),
        "{p:?}"
    );
    let src = session_record(&c, "hostA", p.local);
    assert_eq!(src["flow"]["state"], "closed", "{src:#}");
    assert_eq!(src["flow"]["pkts_toserver"], 5);
    assert_eq!(src["flow"]["pkts_toclient"], 5);
    assert_eq!(src["eastwall"]["tunnel"]["transport"], transport);
    assert_eq!(src["eastwall"]["tunnel"]["status"], "connected");
    // The destination decided on the identity the tunnel proved.
    let dst = session_record(&c, "hostB", p.local);
    assert_eq!(dst["eastwall"]["direction"], "inbound");
    assert_eq!(dst["eastwall"]["policy"]["rule"], "app-to-db-udp");
    assert_eq!(dst["eastwall"]["src"]["identity"], spiffe("prod-app"));
    assert_eq!(dst["flow"]["pkts_toserver"], 5);
    assert_eq!(dst["flow"]["bytes_toserver"], src["flow"]["bytes_toserver"]);
}

#[test]
fn dev_to_prod_udp_gets_nothing_through_and_is_recorded_once() {
    let mut c = cloud_over("auto");
    c.start_nodes("");
    let p = exchange(&c, "dev-app", "prod-db", 5432, 20);
    assert!(p.answers.is_empty(), "{p:?}");
    let f = session_record(&c, "hostA", p.local);
    assert_eq!(f["flow"]["state"], "rejected");
    assert_eq!(f["eastwall"]["policy"]["rule"], "dev-not-prod");
    assert_eq!(
        f["flow"]["pkts_toserver"], 20,
        "one record for the whole session"
    );
    assert_eq!(
        c.flows("hostA")
            .iter()
            .filter(|f| f["proto"] == "UDP" && f["src_port"] == p.local.port())
            .count(),
        1
    );
    // Nothing reached hostB's node either.
    assert!(c.flows("hostB").iter().all(|f| f["proto"] != "UDP"));
}

#[test]
fn same_host_udp_is_carried_from_the_clients_own_address() {
    let mut c = cloud_over("auto");
    c.start_nodes("");
    let p = exchange(&c, "prod-app", "cache", 11211, 3);
    assert_eq!(p.answers.len(), 3, "{p:?}");
    assert!(
        p.answers[2].starts_with(&format!("from cache: you are {}: ping 2", p.local)),
        "{p:?}"
    );
    let f = session_record(&c, "hostA", p.local);
    assert_eq!(f["eastwall"]["policy"]["rule"], "app-to-cache-udp");
    assert!(f["eastwall"].get("tunnel").is_none());
    // The rule opens UDP only: TCP to the same port stays denied.
    assert!(!c.connect("prod-app", "cache", 11211).outcome.reached());
}

#[test]
fn a_udp_datagram_with_another_workloads_address_is_never_delivered() {
    let mut c = cloud_over("auto");
    c.start_nodes("");
    let dev = c.lab.workload("dev-app").netns.clone();
    let stolen = c.lab.workload("prod-app").addr;
    let out = c
        .lab
        .exec(
            &dev,
            &["ip", "addr", "add", &format!("{stolen}/32"), "dev", "eth0"],
        )
        .unwrap();
    assert!(out.status.success());
    let dst = c.addr("prod-db", 5432);
    let answered = eastwall_lab::in_netns(&dev, move || {
        let s = std::net::UdpSocket::bind(SocketAddr::new(stolen.into(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(b"spoofed", dst).unwrap();
        let mut buf = [0u8; 512];
        s.recv_from(&mut buf).is_ok()
    })
    .unwrap();
    assert!(!answered, "a spoofed datagram got an answer");
    let f = c.wait_flow("hostA", |f| {
        f["eastwall"]["policy"]["rule"] == "spoofed-source" && f["dest_port"] == 5432
    });
    assert_eq!(f["src_ip"], stolen.to_string());
    assert!(c.flows("hostB").iter().all(|f| f["proto"] != "UDP"));
}

#[test]
fn a_stopped_node_drops_udp() {
    let mut c = cloud_over("auto");
    c.start_nodes("");
    assert_eq!(exchange(&c, "prod-app", "cache", 11211, 1).answers.len(), 1);
    let node = c.node("hostA").clone();
    c.lab.stop_node(&node).unwrap();
    let p = exchange(&c, "prod-app", "cache", 11211, 3);
    assert!(p.answers.is_empty(), "UDP bypassed a stopped node: {p:?}");
    let p = exchange(&c, "prod-app", "prod-db", 5432, 3);
    assert!(p.answers.is_empty(), "UDP bypassed a stopped node: {p:?}");
}

#[test]
fn a_reload_that_denies_a_live_udp_session_ends_it() {
    let mut c = cloud_over("auto");
    // A longer idle time: the session must still be live when the policy changes.
    c.lab.clear_node_spec();
    c.lab.add_node_spec("  udp:\n    idleSecs: 30\n");
    c.start_nodes("");
    let cache = c.addr("cache", 11211);
    let netns = c.lab.workload("prod-app").netns.clone();
    let src = c.lab.workload("prod-app").addr;
    // One client socket, kept open across the reload.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = eastwall_lab::in_netns(&netns, move || {
            let s = std::net::UdpSocket::bind(SocketAddr::new(src.into(), 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 512];
            s.send_to(b"before", cache).unwrap();
            let before = s.recv_from(&mut buf).is_ok();
            rx.recv().unwrap();
            s.send_to(b"after", cache).unwrap();
            let after = s.recv_from(&mut buf).is_ok();
            (s.local_addr().unwrap(), before, after)
        })
        .unwrap();
        done_tx.send(r).unwrap();
    });
    std::thread::sleep(Duration::from_millis(800));
    // The new policy keeps only the rule to the database.
    let policy = POLICY.replace(
        "        - id: app-to-cache-udp",
        "        - id: app-to-cache-udp\n          mode: monitor",
    );
    // Replace the file in one step, as an operator's tooling would.
    let path = c.lab.dir().join("hostA").join("policy.yaml");
    std::fs::write(path.with_extension("tmp"), policy).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    let f = c.wait_flow("hostA", |f| {
        f["proto"] == "UDP" && f["flow"]["reason"] == "revoked"
    });
    assert_eq!(f["eastwall"]["revoked_by"], "default-deny");
    tx.send(()).unwrap();
    let (local, before, after) = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(before, "the session worked before the reload");
    assert!(!after, "the revoked session still carried datagrams");
    assert_eq!(f["src_port"], local.port());
}

#[test]
fn a_udp_flood_of_new_sessions_stays_within_the_table_and_others_go_on() {
    let mut c = cloud_over("auto");
    c.lab.clear_node_spec();
    c.lab.add_node_spec(
        "  udp:\n    idleSecs: 30\n    maxSessions: 200\n    maxSessionsPerSource: 50\n",
    );
    c.start_nodes("");
    let cache = c.addr("cache", 11211);
    let netns = c.lab.workload("dev-app").netns.clone();
    let src = c.lab.workload("dev-app").addr;
    // 2,000 new sessions (one datagram each, from as many ports), bounded in count and time.
    let sent = eastwall_lab::in_netns(&netns, move || {
        let start = std::time::Instant::now();
        let mut sent = 0;
        for _ in 0..2_000 {
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
            if let Ok(s) = std::net::UdpSocket::bind(SocketAddr::new(src.into(), 0)) {
                let _ = s.send_to(b"flood", cache);
                sent += 1;
            }
        }
        sent
    })
    .unwrap();
    assert!(sent > 500, "sent {sent}");
    std::thread::sleep(Duration::from_millis(500));
    let in_table = c.metric("hostA", "eastwall_udp_sessions");
    assert!(in_table <= 200, "{in_table} sessions");
    let dropped = c.metric(
        "hostA",
        "eastwall_udp_datagrams_dropped_total{reason=\"source-limit\"}",
    );
    assert!(
        dropped >= (sent - 50) as u64 / 2,
        "dropped {dropped} of {sent}"
    );
    // Another workload's sessions still work.
    let p = exchange(&c, "prod-app", "cache", 11211, 3);
    assert_eq!(p.answers.len(), 3, "{p:?}");
}
