//! Multi-host scenarios of the identity-bearing tunnel: the destination decides on the
//! identity proven by the source workload's certificate. Run as root.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eastwall_integration::{Cloud, Outcome, TRUST_DOMAIN, bound_connect, require_root, spiffe};
use eastwall_wire::header::{Decoded, Response, Status, StreamHeader};

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
    - name: identity
      rules:
        - id: prod-app-identity-to-db
          action: allow
          from: {spiffe: "spiffe://corp.example/wl/prod-app"}
          to: {app: db}
          ports: [5432]
    - name: outside
      rules:
        - id: prod-app-to-outside-web
          action: allow
          from: {workload: prod-app}
          to: {cidr: 10.77.3.0/24}
          ports: [80]
"#;

/// hostA: dev-app, prod-app, legacy; hostB: prod-db (an echo service on 5432). Nodes use
/// the QUIC transport.
fn cloud() -> Cloud {
    cloud_over("quic")
}

/// The same cloud, its nodes sending over `transport` (`quic`, `h2`, `auto`).
fn cloud_over(transport: &str) -> Cloud {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "dev-app", "app", "dev"),
            ("hostA", "prod-app", "app", "prod"),
            ("hostA", "legacy", "legacy", "prod"),
            ("hostB", "prod-db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("prod-db", &[5432]).unwrap();
    c.lab
        .add_node_spec(&format!("  tunnel:\n    transport: {transport}\n"));
    c
}

/// Runs each named scenario (a function taking the transport) once per transport.
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

over_both_transports!(
    destination_decides_on_the_identity_the_certificate_proves,
    an_enterprise_pki_without_spiffe_cas_issues_the_workload_certificates,
    the_link_between_hosts_carries_only_the_tunnel,
    many_connections_share_one_tunnel_connection,
    a_certificate_from_a_foreign_ca_is_refused,
    an_expired_certificate_is_refused,
    an_identity_that_does_not_own_the_source_address_is_refused,
    rotation_during_a_long_transfer_loses_no_bytes,
);

fn metric(c: &Cloud, host: &str, name: &str) -> u64 {
    let text = c.admin(host, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn destination_decides_on_the_identity_the_certificate_proves(transport: &str) {
    let mut c = cloud_over(transport);
    c.start_nodes("");
    let p = c.connect("prod-app", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let out = c.flow("hostA", p.local.unwrap());
    assert_eq!(out["eastwall"]["tunnel"]["transport"], transport);
    assert_eq!(out["eastwall"]["tunnel"]["status"], "connected");
    assert_eq!(
        out["eastwall"]["tunnel"]["peer_identity"],
        spiffe("prod-db")
    );
    let inb = c.flow("hostB", p.local.unwrap());
    assert_eq!(inb["eastwall"]["direction"], "inbound");
    assert_eq!(inb["eastwall"]["tunnel"]["transport"], transport);
    assert_eq!(inb["eastwall"]["src"]["identity"], spiffe("prod-app"));
    assert_eq!(
        inb["eastwall"]["tunnel"]["peer_identity"],
        spiffe("prod-app")
    );
    assert_eq!(inb["eastwall"]["policy"]["rule"], "prod-app-identity-to-db");
    // Same app and zone, other identity: not allowed.
    let legacy = c.connect("legacy", "prod-db", 5432);
    assert_eq!(legacy.outcome, Outcome::Reset);
    assert_eq!(
        c.flow("hostA", legacy.local.unwrap())["eastwall"]["policy"]["rule"],
        "default-deny"
    );
}

/// The workloads' certificates come from an ordinary enterprise PKI made with openssl (a
/// root and an issuing CA without SPIFFE URIs; `scripts/openssl-pki.sh`), not from
/// eastwall's CA: the trust bundle is that root (as PEM over QUIC, as a SPIFFE bundle in
/// JSON over HTTP/2), the trust domain the registry's, and the destination still decides on
/// the SPIFFE ID each leaf proves.
fn an_enterprise_pki_without_spiffe_cas_issues_the_workload_certificates(transport: &str) {
    let mut c = cloud_over(transport);
    let lab_dir = c
        .lab
        .cert_dir("hostA")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let pki = lab_dir.join("openssl-pki");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/openssl-pki.sh");
    let mint = |args: &[&str]| {
        eastwall_integration::run_ok(
            std::process::Command::new("bash")
                .arg(script)
                .arg(&pki)
                .args(args),
        );
    };
    mint(&["init"]);
    for (host, workload) in [
        ("hostA", "dev-app"),
        ("hostA", "prod-app"),
        ("hostA", "legacy"),
        ("hostB", "prod-db"),
    ] {
        mint(&["leaf", workload, &format!("URI:{}", spiffe(workload))]);
        let dir = c.lab.cert_dir(host);
        std::fs::create_dir_all(&dir).unwrap();
        for ext in ["crt", "key"] {
            std::fs::copy(
                pki.join(format!("{workload}.{ext}")),
                dir.join(format!("{workload}.{ext}")),
            )
            .unwrap();
        }
    }
    let root = std::fs::read_to_string(pki.join("root.pem")).unwrap();
    let bundle = if transport == "h2" {
        // A PEM block's body is its DER in base64: an x5c entry as it is.
        let der: String = root.lines().filter(|l| !l.starts_with("-----")).collect();
        format!(r#"{{"keys": [{{"use": "x509-svid", "kty": "EC", "x5c": ["{der}"]}}]}}"#)
    } else {
        root
    };
    std::fs::write(lab_dir.join("ca.pem"), bundle).unwrap();
    c.start_nodes("");
    let p = c.connect("prod-app", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let out = c.flow("hostA", p.local.unwrap());
    assert_eq!(
        out["eastwall"]["tunnel"]["peer_identity"],
        spiffe("prod-db")
    );
    let inb = c.flow("hostB", p.local.unwrap());
    assert_eq!(inb["eastwall"]["src"]["identity"], spiffe("prod-app"));
    assert_eq!(inb["eastwall"]["policy"]["rule"], "prod-app-identity-to-db");
    let legacy = c.connect("legacy", "prod-db", 5432);
    assert_eq!(legacy.outcome, Outcome::Reset);
}

#[test]
fn destinations_outside_the_mesh_are_reached_directly() {
    let mut c = cloud();
    // A server on a third host without eastwall, unknown to the registry.
    c.lab.add_host("hostC").unwrap();
    c.lab.add_workload("hostC", "outside").unwrap();
    c.lab.serve("outside", &[80]).unwrap();
    c.start_node("hostA", "");
    c.start_node("hostB", "");
    let p = c.connect("prod-app", "outside", 80);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let f = c.flow("hostA", p.local.unwrap());
    assert_eq!(f["eastwall"]["policy"]["rule"], "prod-app-to-outside-web");
    assert!(f["eastwall"]["tunnel"].is_null(), "{f:#}");
    assert!(f["eastwall"]["dest"]["workload"].is_null());

    // Others may not.
    assert_eq!(c.connect("legacy", "outside", 80).outcome, Outcome::Reset);
}

fn the_link_between_hosts_carries_only_the_tunnel(transport: &str) {
    let mut c = cloud_over(transport);
    c.start_nodes("");
    // Count what the LAN bridge forwards between the hosts.
    let lan = c.lab.lan_netns().to_owned();
    let nft = |args: &[&str]| {
        let mut all = vec!["nft"];
        all.extend_from_slice(args);
        let out = c.lab.exec(&lan, &all).unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rules = c.lab.dir().join("watch.nft");
    std::fs::write(
        &rules,
        format!(
            "table bridge watch {{\n chain watch {{\n  type filter hook forward priority 0;\n  meta l4proto tcp counter\n  {proto} dport 15008 counter\n  {proto} sport 15008 counter\n }}\n}}\n",
            proto = if transport == "quic" { "udp" } else { "tcp" },
        ),
    )
    .unwrap();
    let out = c
        .lab
        .exec(&lan, &["nft", "-f", rules.to_str().unwrap()])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..5 {
        assert!(c.connect("prod-app", "prod-db", 5432).outcome.reached());
    }
    assert_eq!(
        c.echo_transfer(
            "prod-app",
            "prod-db",
            5432,
            256 * 1024,
            16 * 1024,
            Duration::ZERO
        )
        .unwrap(),
        256 * 1024
    );
    let text = nft(&["list", "table", "bridge", "watch"]);
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "{text}");
    // TCP that is not the tunnel's: all of it with QUIC, what is not port 15008 with HTTP/2.
    let plaintext = if transport == "quic" {
        counts[0]
    } else {
        counts[0] - counts[1] - counts[2]
    };
    assert_eq!(plaintext, 0, "plaintext TCP crossed the link:\n{text}");
    assert!(counts[1] > 0 && counts[2] > 0, "no tunnel traffic:\n{text}");
}

fn many_connections_share_one_tunnel_connection(transport: &str) {
    let mut c = cloud_over(transport);
    c.start_nodes("");
    let c = Arc::new(c);
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.connect("prod-app", "prod-db", 5432).outcome)
        })
        .collect();
    for t in threads {
        let o = t.join().unwrap();
        assert!(o.reached(), "{o:?}");
    }
    assert_eq!(
        metric(&c, "hostA", "eastwall_tunnel_dials_total"),
        1,
        "one {transport} connection for 40 workload connections"
    );
    // Every stream arrived at hostB from the same tunnel peer (records are written as the
    // connections close, so wait for all 40).
    for _ in 0..150 {
        if c.flows("hostB").len() >= 40 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let flows = c.flows("hostB");
    assert_eq!(flows.len(), 40);
    let peers: std::collections::HashSet<String> = flows
        .iter()
        .filter_map(|f| f["eastwall"]["tunnel"]["peer"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(peers.len(), 1, "{peers:?}");
}

/// Plants `cert`/`key` as prod-app's certificate on hostA before its node starts.
fn plant(c: &Cloud, cert: &str, key: &str) {
    let dir = c.lab.cert_dir("hostA");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prod-app.crt"), cert).unwrap();
    std::fs::write(dir.join("prod-app.key"), key).unwrap();
}

fn assert_handshake_refused(c: &Cloud, want_at_destination: &str) {
    let p = c.connect("prod-app", "prod-db", 5432);
    assert_eq!(p.outcome, Outcome::Reset);
    let src = c.flow("hostA", p.local.unwrap());
    assert_eq!(
        src["eastwall"]["tunnel"]["status"], "handshake-failed",
        "{src:#}"
    );
    let dst = c.wait_flow("hostB", |f| {
        f["eastwall"]["policy"]["rule"] == "tunnel-handshake-refused"
    });
    let why = dst["eastwall"]["tunnel"]["reason"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(why.contains(want_at_destination), "{why}");
    assert!(metric(c, "hostB", "eastwall_tunnel_handshake_failures_total") >= 1);
}

fn a_certificate_from_a_foreign_ca_is_refused(transport: &str) {
    let mut c = cloud_over(transport);
    let rogue = eastwall_certs::Ca::generate(TRUST_DOMAIN, Duration::from_secs(3600)).unwrap();
    let id = eastwall_identity::SpiffeId::parse(&spiffe("prod-app")).unwrap();
    let issued = rogue.issue(&id, Duration::from_secs(3600)).unwrap();
    plant(&c, &issued.cert_pem, &issued.key_pem);
    c.start_nodes("");
    assert_handshake_refused(&c, "certificate");
}

fn an_expired_certificate_is_refused(transport: &str) {
    let mut c = cloud_over(transport);
    let id = eastwall_identity::SpiffeId::parse(&spiffe("prod-app")).unwrap();
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let issued = c
        .lab
        .ca()
        .unwrap()
        .issue_with_validity(&id, now - 2 * day, now - day)
        .unwrap();
    plant(&c, &issued.cert_pem, &issued.key_pem);
    c.start_nodes("");
    assert_handshake_refused(&c, "expired");
}

fn an_identity_that_does_not_own_the_source_address_is_refused(transport: &str) {
    let mut c = cloud_over(transport);
    // A compromised hostA gives dev-app prod-app's identity (and zone) in its own registry,
    // so it presents prod-app's certificate for dev-app's connection.
    let honest = c.registry().to_owned();
    let dev = c.lab.workload("dev-app").addr;
    let line = format!("{{name: dev-app, node: hostA, addresses: [{dev}], app: app, zone: dev}}");
    assert!(honest.contains(&line));
    let forged = honest.replace(&line, &format!("{{name: dev-app, node: hostA, addresses: [{dev}], app: app, zone: prod, identity: \"{}\"}}", spiffe("prod-app")));
    c.start_node_with("hostA", &forged, "");
    c.start_node("hostB", "");
    let p = c.connect("dev-app", "prod-db", 5432);
    assert_eq!(p.outcome, Outcome::Reset);
    let src = c.flow("hostA", p.local.unwrap());
    assert_eq!(
        src["eastwall"]["tunnel"]["status"], "identity-mismatch",
        "{src:#}"
    );
    let dst = c.flow("hostB", p.local.unwrap());
    assert_eq!(dst["eastwall"]["policy"]["rule"], "identity-mismatch");
    assert_eq!(
        dst["eastwall"]["src"]["identity"],
        spiffe("prod-app"),
        "what the certificate proved"
    );
    assert_eq!(
        dst["eastwall"]["src"]["workload"], "dev-app",
        "who owns the address"
    );
}

#[test]
fn a_workload_sending_with_another_workloads_address_gets_nothing_through() {
    let mut c = cloud();
    c.start_nodes("");
    // dev-app takes prod-app's address as its own and connects from it.
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
    let outcome = eastwall_lab::in_netns(&dev, move || {
        bound_connect(
            SocketAddr::new(stolen.into(), 0),
            dst,
            Duration::from_millis(1500),
        )
        .map(|_| ())
        .map_err(|e| e.kind())
    })
    .unwrap();
    assert!(outcome.is_err(), "a spoofed connection got through");
    let f = c.wait_flow("hostA", |f| {
        f["eastwall"]["policy"]["rule"] == "spoofed-source"
    });
    assert_eq!(f["src_ip"], stolen.to_string());
    assert_eq!(f["dest_port"], 5432);
    assert!(
        f["eastwall"]["error"]
            .as_str()
            .unwrap()
            .contains("interface w1"),
        "{f:#}"
    );
    // prod-app itself still gets through.
    assert!(c.connect("prod-app", "prod-db", 5432).outcome.reached());
}

fn rotation_during_a_long_transfer_loses_no_bytes(transport: &str) {
    let mut c = cloud_over(transport);
    c.start_nodes("");
    let c = Arc::new(c);
    let total = 24 * 1024 * 1024;
    let transfer = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.echo_transfer(
                "prod-app",
                "prod-db",
                5432,
                total,
                64 * 1024,
                Duration::from_millis(8),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    // Renew prod-app's certificate on hostA while bytes flow.
    let id = eastwall_identity::SpiffeId::parse(&spiffe("prod-app")).unwrap();
    let fresh = c
        .lab
        .ca()
        .unwrap()
        .issue(&id, Duration::from_secs(7200))
        .unwrap();
    let dir = c.lab.cert_dir("hostA");
    std::fs::write(dir.join("prod-app.key.new"), &fresh.key_pem).unwrap();
    std::fs::write(dir.join("prod-app.crt.new"), &fresh.cert_pem).unwrap();
    std::fs::rename(dir.join("prod-app.key.new"), dir.join("prod-app.key")).unwrap();
    std::fs::rename(dir.join("prod-app.crt.new"), dir.join("prod-app.crt")).unwrap();
    assert_eq!(transfer.join().unwrap().unwrap(), total);
    let log = std::fs::read_to_string(c.lab.dir().join("hostA/node.log")).unwrap();
    assert!(log.contains("certificate reloaded"), "{log}");
    // New connections work with the new certificate.
    assert!(c.connect("prod-app", "prod-db", 5432).outcome.reached());
}

#[test]
fn bad_streams_are_refused_without_harming_the_others() {
    let mut c = cloud();
    c.start_nodes("");
    let (tls, dst_id, node_b) = tunnel_client(&c, eastwall_wire::header::ALPN);
    let (src, dev) = (c.addr("prod-app", 40000), c.addr("dev-app", 40001));
    let (db, nowhere) = (
        c.addr("prod-db", 5432),
        SocketAddr::new("10.77.2.99".parse().unwrap(), 5432),
    );
    let netns = c.lab.host("hostA").netns.clone();
    let results = eastwall_lab::in_netns(&netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
            let ep = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
            let conn = within(
                "handshake",
                ep.connect_with(
                    quinn::ClientConfig::new(Arc::new(crypto)),
                    node_b,
                    &eastwall_certs::sni_for(&dst_id),
                )
                .unwrap(),
            )
            .await
            .unwrap();
            // A good stream, kept open while the bad ones come and go.
            let (mut good_tx, mut good_rx) = conn.open_bi().await.unwrap();
            good_tx
                .write_all(
                    &StreamHeader {
                        dst: db,
                        src,
                        trace: None,
                        kind: Default::default(),
                    }
                    .encode(),
                )
                .await
                .unwrap();
            let (first, mut greeting) =
                within("good response", read_response_and_rest(&mut good_rx)).await;
            let mut v2 = StreamHeader {
                dst: db,
                src,
                trace: None,
                kind: Default::default(),
            }
            .encode();
            v2[2] = 2;
            let mut huge = b"EW\x01\x00".to_vec();
            huge.extend_from_slice(&60_000u16.to_be_bytes());
            let bad: Vec<(&str, Vec<u8>)> = vec![
                ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
                ("version", v2),
                ("oversized", huge),
                ("truncated", b"EW\x01".to_vec()),
                (
                    "not hosted",
                    StreamHeader {
                        dst: nowhere,
                        src,
                        trace: None,
                        kind: Default::default(),
                    }
                    .encode(),
                ),
                (
                    "spoofed source",
                    StreamHeader {
                        dst: db,
                        src: dev,
                        trace: None,
                        kind: Default::default(),
                    }
                    .encode(),
                ),
            ];
            let mut answers = Vec::new();
            for (name, bytes) in bad {
                let (mut tx, mut rx) = conn.open_bi().await.unwrap();
                tx.write_all(&bytes).await.unwrap();
                let _ = tx.finish();
                answers.push((name, within(name, read_response(&mut rx)).await));
            }
            // The good stream still works: it gets the greeting and echoes.
            let mut buf = [0u8; 256];
            while greeting.len() < 18 {
                let n = within("greeting", good_rx.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                greeting.extend_from_slice(&buf[..n]);
            }
            greeting.truncate(18);
            good_tx.write_all(b"ping").await.unwrap();
            let mut rest = Vec::new();
            while !String::from_utf8_lossy(&rest).contains("ping") {
                let n = within("echo", good_rx.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                rest.extend_from_slice(&buf[..n]);
            }
            (
                first,
                String::from_utf8_lossy(&greeting).into_owned(),
                answers,
            )
        })
    })
    .unwrap();
    let (first, greeting, answers) = results;
    assert_eq!(first.status, Status::Connected);
    assert_eq!(greeting, "hello from prod-db");
    let want = [
        ("garbage", Status::BadHeader, "bad magic"),
        ("version", Status::BadHeader, "version 2"),
        ("oversized", Status::BadHeader, "exceeds"),
        ("truncated", Status::BadHeader, "ended inside"),
        ("not hosted", Status::UnknownDestination, "not a workload"),
        ("spoofed source", Status::IdentityMismatch, "dev-app"),
    ];
    for ((name, got), (wname, status, text)) in answers.iter().zip(want) {
        assert_eq!(*name, wname);
        assert_eq!(got.status, status, "{name}: {got:?}");
        assert!(got.reason.contains(text), "{name}: {got:?}");
    }
    // Each refusal left a record at hostB.
    c.wait_flows("hostB", 4, |f| {
        f["eastwall"]["policy"]["rule"] == "bad-tunnel-header"
    });
    let flows = c.flows("hostB");
    assert!(
        flows
            .iter()
            .filter(|f| f["eastwall"]["policy"]["rule"] == "bad-tunnel-header")
            .count()
            >= 4,
        "{flows:#?}"
    );
    assert!(
        flows
            .iter()
            .any(|f| f["eastwall"]["policy"]["rule"] == "destination-not-hosted")
    );
    assert!(
        flows
            .iter()
            .any(|f| f["eastwall"]["policy"]["rule"] == "identity-mismatch")
    );
}

async fn read_response(rx: &mut quinn::RecvStream) -> Response {
    read_response_and_rest(rx).await.0
}

/// The response and whatever bytes came behind it.
async fn read_response_and_rest(rx: &mut quinn::RecvStream) -> (Response, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Decoded::Done(r, used) = Response::decode(&buf).unwrap() {
            return (r, buf.split_off(used));
        }
        match rx.read(&mut chunk).await.unwrap() {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => panic!("stream ended before a response: {buf:?}"),
        }
    }
}

/// The HTTP/2 transport's counterpart of `bad_streams_are_refused_without_harming_the_others`:
/// malformed CONNECT requests, unknown authorities, oversized headers, spoofed sources and a
/// stream the client resets are each refused on their own while a good stream on the same
/// connection keeps working.
#[test]
fn bad_http2_streams_are_refused_without_harming_the_others() {
    use bytes::Bytes;
    let mut c = cloud_over("h2");
    c.start_nodes("");
    let (tls, dst_id, node_b) = tunnel_client(&c, b"h2");
    let (src, dev) = (c.addr("prod-app", 40000), c.addr("dev-app", 40001));
    let db = c.addr("prod-db", 5432);
    let netns = c.lab.host("hostA").netns.clone();
    type Answer = (String, Result<(u16, String, String), String>);
    let (good, answers): (String, Vec<Answer>) = eastwall_lab::in_netns(&netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(node_b).await.unwrap();
            let sni =
                rustls::pki_types::ServerName::try_from(eastwall_certs::sni_for(&dst_id)).unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(sni, tcp)
                .await
                .unwrap();
            let (client, conn) = ::h2::client::handshake(tls).await.unwrap();
            tokio::spawn(conn);
            let connect = |auth: &str, fwd: Option<String>| {
                let mut b = http::Request::builder()
                    .method(http::Method::CONNECT)
                    .uri(auth);
                if let Some(f) = fwd {
                    b = b.header("forwarded", f);
                }
                b.body(()).unwrap()
            };
            let fwd = |a: SocketAddr| Some(format!("for=\"{a}\""));
            // A good stream, kept open while the bad ones come and go.
            let mut sr = client.clone().ready().await.unwrap();
            let (resp, mut good_tx) = sr
                .send_request(connect(&db.to_string(), fwd(src)), false)
                .unwrap();
            let resp = within("good response", resp).await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut good_rx = resp.into_body();
            let mut huge = connect(&db.to_string(), fwd(src));
            huge.headers_mut().insert(
                "x-padding",
                http::HeaderValue::from_str(&"a".repeat(20_000)).unwrap(),
            );
            let get = http::Request::builder()
                .uri(format!("http://{db}/"))
                .body(())
                .unwrap();
            let bad: Vec<(&str, http::Request<()>)> = vec![
                ("not connect", get),
                ("hostname", connect("db.example:5432", fwd(src))),
                ("no forwarded", connect(&db.to_string(), None)),
                ("oversized", huge),
                ("not hosted", connect("10.77.2.99:5432", fwd(src))),
                ("spoofed source", connect(&db.to_string(), fwd(dev))),
            ];
            let mut answers = Vec::new();
            for (name, req) in bad {
                let mut sr = client.clone().ready().await.unwrap();
                let answer = match sr.send_request(req, false) {
                    Err(e) => Err(e.to_string()),
                    Ok((resp, _tx)) => match within(name, resp).await {
                        Ok(r) => {
                            let h = |n: &str| {
                                r.headers()
                                    .get(n)
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default()
                            };
                            Ok((
                                r.status().as_u16(),
                                h("eastwall-status"),
                                h("eastwall-reason"),
                            ))
                        }
                        Err(e) => Err(e.to_string()),
                    },
                };
                answers.push((name.to_owned(), answer));
            }
            // A stream the client gives up on at once.
            let mut sr = client.clone().ready().await.unwrap();
            let (_resp, mut tx) = sr
                .send_request(connect(&db.to_string(), fwd(src)), false)
                .unwrap();
            tx.send_reset(::h2::Reason::CANCEL);
            // The good stream still works: it gets the greeting and echoes.
            let mut got = Vec::new();
            let mut pinged = false;
            while !String::from_utf8_lossy(&got).contains("ping") {
                if !pinged && got.len() >= 18 {
                    good_tx
                        .send_data(Bytes::from_static(b"ping"), false)
                        .unwrap();
                    pinged = true;
                }
                let chunk = within("echo", good_rx.data()).await.unwrap().unwrap();
                let _ = good_rx.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            (String::from_utf8_lossy(&got).into_owned(), answers)
        })
    })
    .unwrap();
    assert!(good.starts_with("hello from prod-db"), "{good}");
    let want = [
        ("not connect", Some((400, "bad-header", "CONNECT"))),
        ("hostname", Some((400, "bad-header", "not an IP address"))),
        ("no forwarded", Some((400, "bad-header", "forwarded"))),
        // HTTP/2 itself refuses a header block over the limit (431, or a stream reset).
        ("oversized", None),
        (
            "not hosted",
            Some((404, "unknown-destination", "not a workload")),
        ),
        (
            "spoofed source",
            Some((403, "identity-mismatch", "dev-app")),
        ),
    ];
    for ((name, got), (wname, want)) in answers.iter().zip(want) {
        assert_eq!(name, wname);
        match (got, want) {
            (Ok((code, status, reason)), Some((wcode, wstatus, wreason))) => {
                assert_eq!(
                    (*code, status.as_str()),
                    (wcode, wstatus),
                    "{name}: {reason}"
                );
                assert!(reason.contains(wreason), "{name}: {reason}");
            }
            (Ok((code, _, _)), None) => assert_eq!(*code, 431, "{name}"),
            (Err(_), None) => {}
            (got, _) => panic!("{name}: {got:?}"),
        }
    }
    c.wait_flows("hostB", 3, |f| {
        f["eastwall"]["policy"]["rule"] == "bad-tunnel-header"
    });
    let flows = c.flows("hostB");
    assert!(
        flows
            .iter()
            .filter(|f| f["eastwall"]["policy"]["rule"] == "bad-tunnel-header")
            .count()
            >= 3,
        "{flows:#?}"
    );
    assert!(
        flows
            .iter()
            .any(|f| f["eastwall"]["policy"]["rule"] == "identity-mismatch")
    );
}

/// In `auto` mode a node uses HTTP/2 (the faster transport here), also while UDP is blocked;
/// when TCP to the peer's tunnel port is blocked it switches to QUIC within about a second,
/// and the connection that found out is carried, not lost.
#[test]
fn auto_uses_http2_and_falls_back_to_quic_when_tcp_is_blocked() {
    let block = |c: &Cloud, what: &str| {
        let lan = c.lab.lan_netns().to_owned();
        let rules = c.lab.dir().join("block.nft");
        std::fs::write(
            &rules,
            format!("table bridge block {{\n chain forward_drop {{\n  type filter hook forward priority 0;\n  {what} dport 15008 counter drop\n }}\n}}\n"),
        )
        .unwrap();
        let out = c
            .lab
            .exec(&lan, &["nft", "-f", rules.to_str().unwrap()])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // UDP blocked: auto is HTTP/2 anyway.
    let mut c = cloud_over("auto");
    c.start_nodes("");
    block(&c, "udp");
    let p = c.connect("prod-app", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    assert_eq!(
        c.flow("hostA", p.local.unwrap())["eastwall"]["tunnel"]["transport"],
        "h2"
    );
    drop(c);

    // TCP 15008 blocked: QUIC within about a second, for this connection and the next.
    let mut c = cloud_over("auto");
    c.start_nodes("");
    block(&c, "tcp");
    let started = std::time::Instant::now();
    let first = c
        .lab
        .connect("prod-app", c.addr("prod-db", 5432), Duration::from_secs(5));
    assert!(first.outcome.reached(), "{:?}", first.outcome);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fallback took {:?}",
        started.elapsed()
    );
    let f = c.flow("hostA", first.local.unwrap());
    assert_eq!(f["eastwall"]["tunnel"]["transport"], "quic", "{f:#}");
    assert_eq!(f["eastwall"]["tunnel"]["status"], "connected");
    let t = std::time::Instant::now();
    let next = c.connect("prod-app", "prod-db", 5432);
    assert!(next.outcome.reached());
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        c.flow("hostA", next.local.unwrap())["eastwall"]["tunnel"]["transport"],
        "quic"
    );
}

/// Fails the test if `f` takes longer than 10 s.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// What a test needs to speak to hostB's tunnel itself, as prod-app: a TLS client config
/// (prod-app's certificate from the lab CA, expecting prod-db's identity, offering `alpn`),
/// prod-db's identity and hostB's tunnel address.
fn tunnel_client(
    c: &Cloud,
    alpn: &[u8],
) -> (
    rustls::ClientConfig,
    eastwall_identity::SpiffeId,
    SocketAddr,
) {
    let ca = c.lab.ca().unwrap();
    let id = eastwall_identity::SpiffeId::parse(&spiffe("prod-app")).unwrap();
    let issued = ca.issue(&id, Duration::from_secs(3600)).unwrap();
    let ident = eastwall_certs::Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    let bundle = eastwall_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let dst_id = eastwall_identity::SpiffeId::parse(&spiffe("prod-db")).unwrap();
    let tls = eastwall_certs::client_config(
        eastwall_certs::RotatingIdentity::new(ident),
        &bundle,
        dst_id.clone(),
        &[alpn],
    )
    .unwrap();
    let node_b = SocketAddr::new(c.lab.host("hostB").addr.into(), 15008);
    (tls, dst_id, node_b)
}
