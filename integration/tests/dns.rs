//! DNS names in the policy: a real client (`dig`) asks a real server (`dnsmasq`) through the
//! nodes, over UDP and TCP; every query is decided on the name it asks, a denied one is
//! answered REFUSED by the node (or dropped) and never reaches the server, each request and
//! response leaves an EVE `dns` event, and what is not a DNS query is opaque to `dns` rules.
//! Run as root.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use eastwall_integration::{Cloud, DnsAnswer, require_root, spiffe};
use serde_json::Value;

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: dns
      rules:
        - id: resolve-corp-names
          action: allow
          from: {app: app}
          to: {app: resolver, dns: {names: ["corp.example", "*.corp.example"]}}
          ports: [{port: 53, protocol: UDP}, 53]
"#;

const DB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);

/// hostA: app and a resolver on the same host; hostB: a resolver behind the tunnel. Both
/// resolvers know `db.corp.example` and `db.other.example`.
fn cloud() -> (Cloud, [std::path::PathBuf; 2]) {
    cloud_with("")
}

fn cloud_with(node_spec: &str) -> (Cloud, [std::path::PathBuf; 2]) {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "app", "app", "prod"),
            ("hostA", "local-dns", "resolver", "prod"),
            ("hostB", "remote-dns", "resolver", "prod"),
        ],
        "",
        POLICY,
    );
    let names = [("db.corp.example", DB), ("db.other.example", DB)];
    let local = c.lab.serve_dns("local-dns", &names, true).unwrap();
    let remote = c.lab.serve_dns("remote-dns", &names, true).unwrap();
    c.lab
        .add_node_spec("  udp:\n    idleSecs: 1\n    dnsIdleSecs: 1\n");
    c.lab.add_node_spec(node_spec);
    c.start_nodes("");
    (c, [local, remote])
}

fn dig(c: &Cloud, server: &str, name: &str, tcp: bool) -> DnsAnswer {
    let addr = c.lab.workload(server).addr;
    c.lab.dig("app", addr, name, tcp, Duration::from_secs(2))
}

/// The `dns` events of `host` for `name` (waits for `n` of them).
fn dns_events(c: &Cloud, host: &str, name: &str, n: usize) -> Vec<Value> {
    for _ in 0..150 {
        let found: Vec<Value> = c
            .events(host)
            .into_iter()
            .filter(|e| e["event_type"] == "dns" && e["dns"]["queries"][0]["rrname"] == name)
            .collect();
        if found.len() >= n {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "fewer than {n} dns events for {name} on {host}: {:#?}",
        c.events(host)
    );
}

fn server_saw(log: &Path, name: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("query[") && l.contains(name))
}

#[test]
fn queries_are_decided_by_name_across_the_tunnel() {
    let (c, [_, remote_log]) = cloud();
    let ok = dig(&c, "remote-dns", "db.corp.example", false);
    assert_eq!(ok.status.as_deref(), Some("NOERROR"), "{}", ok.output);
    assert_eq!(ok.addrs, [DB], "{}", ok.output);
    let refused = dig(&c, "remote-dns", "db.other.example", false);
    assert_eq!(
        refused.status.as_deref(),
        Some("REFUSED"),
        "{}",
        refused.output
    );
    assert!(refused.addrs.is_empty());
    // The refused query never reached the server; the allowed one did.
    assert!(server_saw(&remote_log, "db.corp.example"));
    assert!(!server_saw(&remote_log, "db.other.example"));

    // The destination node decided each query with the identity the tunnel proved.
    let q = dns_events(&c, "hostB", "db.corp.example", 2);
    let query = q.iter().find(|e| e["dns"]["type"] == "request").unwrap();
    assert_eq!(query["eastwall"]["policy"]["verdict"], "allow", "{query:#}");
    assert_eq!(query["eastwall"]["policy"]["rule"], "resolve-corp-names");
    assert_eq!(query["eastwall"]["src"]["identity"], spiffe("app"));
    assert_eq!(query["dns"]["version"], 3);
    assert_eq!(query["dns"]["queries"][0]["rrtype"], "A");
    assert_eq!(query["proto"], "UDP");
    let answer = q.iter().find(|e| e["dns"]["type"] == "response").unwrap();
    assert_eq!(answer["dns"]["rcode"], "NOERROR", "{answer:#}");
    assert_eq!(answer["dns"]["answers"][0]["rdata"], DB.to_string());
    assert_eq!(answer["dns"]["tx_id"], query["dns"]["tx_id"]);
    assert_eq!(answer["flow_id"], query["flow_id"]);
    let denied = dns_events(&c, "hostB", "db.other.example", 1);
    assert_eq!(
        denied[0]["eastwall"]["policy"]["verdict"], "deny",
        "{denied:#?}"
    );
    assert_eq!(denied[0]["eastwall"]["policy"]["rule"], "default-deny");
    assert!(denied.iter().all(|e| e["dns"]["type"] == "request"));

    // Each session's record counts its queries; the source node let them through pending.
    let session = c.wait_flow("hostB", |f| f["flow_id"] == denied[0]["flow_id"]);
    assert_eq!(
        session["eastwall"]["dns_queries"]["requests"], 1,
        "{session:#}"
    );
    assert_eq!(session["eastwall"]["dns_queries"]["denied"], 1);
    assert_eq!(session["flow"]["pkts_toserver"], 1);
    assert_eq!(session["flow"]["pkts_toclient"], 1, "the node's REFUSED");
    assert_eq!(session["app_proto"], "dns");
    let src = c.wait_flow("hostA", |f| f["proto"] == "UDP" && f["dest_port"] == 53);
    assert_eq!(src["eastwall"]["policy"]["l7_pending"], true, "{src:#}");
    assert!(c.metric_sum("hostB", "eastwall_dns_queries_total") >= 2);
}

#[test]
fn same_host_queries_are_decided_by_the_source_node() {
    let (c, [local_log, _]) = cloud();
    let ok = dig(&c, "local-dns", "db.corp.example", false);
    assert_eq!(ok.addrs, [DB], "{}", ok.output);
    let refused = dig(&c, "local-dns", "db.other.example", false);
    assert_eq!(
        refused.status.as_deref(),
        Some("REFUSED"),
        "{}",
        refused.output
    );
    assert!(!server_saw(&local_log, "db.other.example"));
    let denied = dns_events(&c, "hostA", "db.other.example", 1);
    assert_eq!(denied[0]["eastwall"]["direction"], "outbound");
    assert_eq!(denied[0]["eastwall"]["policy"]["verdict"], "deny");
}

#[test]
fn queries_over_tcp_are_decided_one_by_one() {
    let (c, [local_log, remote_log]) = cloud();
    for (server, log, host) in [
        ("local-dns", &local_log, "hostA"),
        ("remote-dns", &remote_log, "hostB"),
    ] {
        let ok = dig(&c, server, "db.corp.example", true);
        assert_eq!(ok.addrs, [DB], "{server}: {}", ok.output);
        let refused = dig(&c, server, "db.other.example", true);
        assert_eq!(
            refused.status.as_deref(),
            Some("REFUSED"),
            "{server}: {}",
            refused.output
        );
        assert!(!server_saw(log, "db.other.example"));
        let denied = dns_events(&c, host, "db.other.example", 1);
        assert_eq!(denied[0]["proto"], "TCP", "{denied:#?}");
        assert_eq!(denied[0]["eastwall"]["policy"]["verdict"], "deny");
        let f = c.wait_flow(host, |f| f["flow_id"] == denied[0]["flow_id"]);
        assert_eq!(f["app_proto"], "dns", "{f:#}");
        assert_eq!(f["eastwall"]["dns_queries"]["denied"], 1);
    }
}

#[test]
fn denied_queries_can_be_dropped_instead() {
    let (c, [local_log, _]) = cloud_with("  l7:\n    dnsDenied: drop\n");
    let ok = dig(&c, "local-dns", "db.corp.example", false);
    assert_eq!(ok.addrs, [DB], "{}", ok.output);
    let dropped = dig(&c, "local-dns", "db.other.example", false);
    assert_eq!(dropped.status, None, "no answer at all: {}", dropped.output);
    assert!(!server_saw(&local_log, "db.other.example"));
}

#[test]
fn what_is_not_a_dns_query_is_opaque_to_dns_rules() {
    let (c, _) = cloud();
    // Datagrams that are not DNS: the allow rule with `dns` does not match them.
    let p = c.lab.udp_exchange(
        "app",
        c.addr("local-dns", 53),
        3,
        Duration::from_millis(300),
    );
    assert!(p.answers.is_empty(), "{p:?}");
    let f = c.flow("hostA", p.local);
    assert_eq!(f["flow"]["pkts_toserver"], 3, "{f:#}");
    assert_eq!(f["eastwall"]["dns_queries"]["requests"], 0);
    assert!(c.metric_sum("hostA", "eastwall_udp_datagrams_dropped_total") >= 3);
}
