//! Faults and attacks, each printing its figures (issue 15's fault suite; heavy variants
//! belong in the benchmark). Run as root.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use eastwall_integration::{Cloud, require_root};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: app-to-db-udp, action: allow, from: {app: app}, to: {app: db}, ports: [{protocol: UDP}]}
        - {id: app-to-db, action: allow, from: {app: app}, to: {app: db}, ports: [5432]}
"#;

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

over_both_transports!(traffic_resumes_within_seconds_of_a_peer_restart);

/// The destination's node is killed (as a crash) while the source holds a pooled tunnel
/// connection to it, and started again: new connections get through again within seconds,
/// over a freshly dialed tunnel connection.
fn traffic_resumes_within_seconds_of_a_peer_restart(transport: &str) {
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
    c.lab
        .add_node_spec(&format!("  tunnel:\n    transport: {transport}\n"));
    c.start_nodes("");
    assert!(c.connect("app", "db", 5432).outcome.reached());
    let node = c.node("hostB").clone();
    let killed = Instant::now();
    c.lab.kill_node(&node).unwrap();
    // While it is down, nothing gets through (and the source keeps its dead connection).
    assert!(!c.connect("app", "db", 5432).outcome.reached());
    c.start_node("hostB", "");
    let restarted = Instant::now();
    let mut attempts = 0;
    while !c.connect("app", "db", 5432).outcome.reached() {
        attempts += 1;
        assert!(
            restarted.elapsed() < Duration::from_secs(8),
            "{transport}: not reachable {:.1} s after the peer restarted",
            restarted.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = restarted.elapsed().as_secs_f64();
    let since_kill = killed.elapsed().as_secs_f64();
    eprintln!(
        "peer restart over {transport}: reachable again {took:.2} s after the restart, {since_kill:.2} s after the kill ({attempts} failed attempts after the restart)"
    );
    assert!(took < 4.0, "{transport}: {took:.2} s");
}

/// A workload floods another's address: every spoofed datagram is dropped (none reaches the
/// server, whatever its port), every one is counted, and the records stay within the rate
/// capture allows however many there are.
#[test]
fn a_spoof_flood_is_dropped_counted_and_recorded_within_bounds() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "attacker", "app", "prod"),
            ("hostA", "victim", "app", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    let received = c.lab.serve_udp("db", &[5432]).unwrap();
    c.start_nodes("");
    // The path works for the real owner of the address.
    let ok = c
        .lab
        .udp_exchange("victim", c.addr("db", 5432), 1, Duration::from_millis(500));
    assert_eq!(ok.answers.len(), 1, "{ok:?}");
    let before = received.load(Ordering::Relaxed);

    let attacker = c.lab.workload("attacker").netns.clone();
    let stolen = c.lab.workload("victim").addr;
    let out = c
        .lab
        .exec(
            &attacker,
            &["ip", "addr", "add", &format!("{stolen}/32"), "dev", "eth0"],
        )
        .unwrap();
    assert!(out.status.success());
    const FLOOD: u64 = 20_000;
    let db = c.lab.workload("db").addr;
    let started = Instant::now();
    eastwall_lab::in_netns(&attacker, move || {
        let s = std::net::UdpSocket::bind(SocketAddr::new(stolen.into(), 0)).unwrap();
        for i in 0..FLOOD {
            // Every 100th to the real service, the rest to distinct ports (distinct attempts).
            let port = if i % 100 == 0 {
                5432
            } else {
                20_000 + (i % 40_000) as u16
            };
            let _ = s.send_to(b"spoofed", SocketAddr::new(db.into(), port));
        }
    })
    .unwrap();
    let flood_secs = started.elapsed().as_secs_f64();

    // Every spoofed datagram is counted (the node reads the counter every second).
    let mut counted = 0;
    for _ in 0..50 {
        counted = c.metric("hostA", "eastwall_spoofed_packets_total");
        if counted >= FLOOD {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let delivered = received.load(Ordering::Relaxed) - before;
    let records = c
        .flows("hostA")
        .iter()
        .filter(|f| f["eastwall"]["policy"]["rule"] == "spoofed-source")
        .count();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "spoof flood: {FLOOD} datagrams in {flood_secs:.2} s; delivered {delivered}; counted {counted}; {records} records in {elapsed:.1} s"
    );
    assert_eq!(delivered, 0, "spoofed datagrams reached the server");
    assert_eq!(counted, FLOOD, "every spoofed datagram is counted");
    // At most a burst of 40 and 20 a second are remembered, so recorded.
    let bound = 40 + (20.0 * elapsed).ceil() as usize;
    assert!(
        records >= 1 && records <= bound,
        "{records} records, bound {bound}"
    );
    // The real owner of the address is still served.
    let ok = c
        .lab
        .udp_exchange("victim", c.addr("db", 5432), 1, Duration::from_millis(500));
    assert_eq!(ok.answers.len(), 1, "{ok:?}");
}
