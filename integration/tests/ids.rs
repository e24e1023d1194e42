//! The IDS/IPS in the node, on allowed traffic: detect mode alerts and lets the traffic pass,
//! prevent mode stops it before it reaches the other side; attacks split into many small
//! writes, and attacks in the response direction, are caught; alerts are EVE `alert` events
//! with both ends' identities. Run as root.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eastwall_integration::http::{http1_session, http2_concurrent, raw_exchange};
use eastwall_integration::{Cloud, require_root, spiffe};
use eastwall_lab::http_server::Received;
use serde_json::Value;

const RULES: &str = r#"# eastwall IDS end-to-end rules
alert http any any -> any any (msg:"SQL injection in the URI"; flow:established,to_server; http.uri; content:"union select"; nocase; classtype:web-application-attack; sid:1000001; rev:1;)
alert tcp any any -> any any (msg:"raw attack payload"; flow:established,to_server; content:"EVIL-PAYLOAD"; classtype:attempted-admin; sid:1000002; rev:1;)
alert http any any -> any any (msg:"secret in a response"; flow:established,to_client; http.response_body; content:"SECRET-TOKEN"; classtype:policy-violation; sid:1000003; rev:1;)
alert tcp any any -> any any (msg:"leak echoed back"; flow:established,to_client; content:"ECHO-LEAK"; classtype:policy-violation; sid:1000004; rev:1;)
alert udp any any -> any any (msg:"UDP attack payload"; flow:to_server; content:"UDP-EVIL"; classtype:attempted-admin; sid:1000005; rev:1;)
alert dns any any -> any any (msg:"query for a tunnelling domain"; dns.query; content:"tunnel.example"; nocase; classtype:bad-unknown; sid:1000006; rev:1;)
alert http any any -> any any (msg:"command in a request body"; flow:established,to_server; http.request_body; content:"cmd=whoami"; classtype:web-application-attack; sid:1000007; rev:1;)
alert tls any any -> any any (msg:"certificate of a known-bad server"; flow:established,to_client; tls.cert_subject; content:"CN=evil.example"; endswith; classtype:bad-unknown; sid:1000008; rev:1;)
alert http any any -> any any (msg:"a header line as sent"; flow:established,to_server; http.header.raw; content:"|0d 0a|x-Probe:|09|one|0d 0a|"; flowbits:set,probe; classtype:bad-unknown; sid:1000009; rev:1;)
alert http any any -> any any (msg:"a response head as sent"; flow:established,to_client; flowbits:isset,probe; http.header.raw; content:"content-length: "; content:"|0d 0a 0d 0a|"; endswith; classtype:bad-unknown; sid:1000011; rev:1;)
alert http any any -> any any (msg:"HTTP attack on a TCP flow"; flow:established,to_server; http.uri; content:"/l4-attack/"; classtype:web-application-attack; sid:1000010; rev:1;)
"#;

fn policy(mode: &str) -> String {
    format!(
        r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  idsProfiles:
    - {{name: guard, mode: {mode}}}
  sections:
    - name: apps
      rules:
        - id: client-to-web
          action: allow
          from: {{app: client}}
          to: {{app: web, http: [{{}}]}}
          ports: [8080]
          ids: guard
        - {{id: client-to-echo, action: allow, from: {{app: client}}, to: {{app: echo}}, ports: [9000, 8443], ids: guard}}
        - {{id: client-to-echo-udp, action: allow, from: {{app: client}}, to: {{app: echo}}, ports: [{{port: 9001, protocol: UDP}}], ids: guard}}
        - {{id: client-resolves, action: allow, from: {{app: client}}, to: {{app: echo, dns: {{}}}}, ports: [{{port: 53, protocol: UDP}}], ids: guard}}
"#
    )
}

struct Scene {
    c: Cloud,
    web: Received,
}

/// client on hostA; web (HTTP 8080), echo (TCP 9000, UDP 9001) and a DNS server (dnsmasq)
/// on hostB; the IDS profile in `mode`.
fn scene(mode: &str) -> Scene {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "client", "client", "prod"),
            ("hostB", "web", "web", "prod"),
            ("hostB", "echo", "echo", "prod"),
        ],
        "",
        &policy(mode),
    );
    let web = c.lab.serve_http("web", 8080).unwrap();
    c.lab.serve("echo", &[9000]).unwrap();
    c.lab.serve_udp("echo", &[9001]).unwrap();
    let addr = c.lab.workload("echo").addr;
    c.lab
        .serve_dns(
            "echo",
            &[("www.ok.example", addr), ("x.tunnel.example", addr)],
            true,
        )
        .unwrap();
    c.lab
        .add_node_spec("  udp:\n    idleSecs: 1\n    dnsIdleSecs: 1\n");
    for host in ["hostA", "hostB"] {
        let dir = c.lab.dir().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ids.rules"), RULES).unwrap();
    }
    c.lab.add_node_spec("  ids:\n    rules: [ids.rules]\n");
    c.start_nodes("");
    Scene { c, web }
}

fn alerts(c: &Cloud, host: &str, sid: u64) -> Vec<Value> {
    c.events(host)
        .into_iter()
        .filter(|e| e["event_type"] == "alert" && e["alert"]["signature_id"] == sid)
        .collect()
}

fn wait_alert(c: &Cloud, host: &str, sid: u64) -> Value {
    for _ in 0..100 {
        if let Some(a) = alerts(c, host, sid).pop() {
            return a;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("no alert {sid} on {host}: {:#?}", c.events(host));
}

#[test]
fn detect_mode_alerts_and_lets_the_request_through() {
    let s = scene("detect");
    let (local, answers) = http1_session(
        &s.c,
        "client",
        s.c.addr("web", 8080),
        "web",
        &[(
            "GET",
            "/search?q=1%20UNION%20SELECT%20password%20FROM%20users",
            "",
        )],
    );
    assert_eq!(answers[0].as_ref().unwrap().status, 200);
    assert_eq!(s.web.requests().len(), 1);
    // The destination node inspected it (after the tunnel) and says who was on each end.
    let a = wait_alert(&s.c, "hostB", 1000001);
    assert_eq!(a["alert"]["action"], "allowed");
    assert_eq!(a["alert"]["signature"], "SQL injection in the URI");
    assert_eq!(a["alert"]["category"], "Web Application Attack");
    assert_eq!(a["alert"]["severity"], 1);
    assert_eq!(a["app_proto"], "http");
    assert_eq!(a["direction"], "to_server");
    assert_eq!(a["eastwall"]["src"]["identity"], spiffe("client"));
    assert_eq!(a["eastwall"]["dest"]["identity"], spiffe("web"));
    assert!(
        a["http"]["url"].as_str().unwrap().contains("UNION"),
        "{a:#}"
    );
    let f = s.c.flow("hostB", local.unwrap());
    assert_eq!(f["flow"]["alerted"], true);
    assert_eq!(f["eastwall"]["ids"]["profile"], "guard");
    assert_eq!(f["eastwall"]["ids"]["alerts"], 1);
    assert_eq!(a["flow_id"], f["flow_id"]);
    // The source node did not inspect (the destination does, once).
    assert!(alerts(&s.c, "hostA", 1000001).is_empty());
    assert!(
        s.c.metric(
            "hostB",
            "eastwall_ids_alerts_total{profile=\"guard\",action=\"allowed\"}"
        ) >= 1
    );
}

#[test]
fn prevent_mode_blocks_before_the_server_and_catches_split_attacks() {
    let s = scene("prevent");
    let dst = s.c.addr("web", 8080);
    let (_, answers) = http1_session(
        &s.c,
        "client",
        dst,
        "web",
        &[
            ("GET", "/search?q=1%20union%20select%201", ""),
            ("GET", "/ok", ""),
        ],
    );
    let blocked = answers[0].as_ref().unwrap();
    assert_eq!(blocked.status, 403);
    assert!(
        blocked
            .body
            .contains("blocked by eastwall IDS: signature 1000001"),
        "{}",
        blocked.body
    );
    // The connection closed after the block.
    assert!(answers[1].is_err(), "{answers:?}");
    assert!(s.web.requests().is_empty(), "{:?}", s.web.requests());
    assert_eq!(
        wait_alert(&s.c, "hostB", 1000001)["alert"]["action"],
        "blocked"
    );
    // The same attack, one byte per write.
    let req = b"GET /search?q=1%20UNION%20SELECT%202 HTTP/1.1\r\nHost: web\r\n\r\n";
    let chunks: Vec<(&[u8], Duration)> = req
        .chunks(1)
        .map(|c| (c, Duration::from_millis(2)))
        .collect();
    let split = raw_exchange(&s.c, "client", dst, &chunks, Duration::from_secs(2));
    assert!(split.text().starts_with("HTTP/1.1 403"), "{}", split.text());
    assert!(s.web.requests().is_empty());
    assert_eq!(alerts(&s.c, "hostB", 1000001).len(), 2);
    // A raw stream: the payload split over many writes; the connection is reset before the
    // bytes that complete it are passed on, so the echo never returns the whole payload.
    let echo = s.c.addr("echo", 9000);
    let payload = b"hello EVIL-PAYLOAD bye";
    let chunks: Vec<(&[u8], Duration)> = payload
        .chunks(3)
        .map(|c| (c, Duration::from_millis(20)))
        .collect();
    let raw = raw_exchange(&s.c, "client", echo, &chunks, Duration::from_secs(2));
    assert_ne!(raw.end, "open", "{raw:?}");
    assert!(!raw.text().contains("EVIL-PAYLOAD"), "{}", raw.text());
    let a = wait_alert(&s.c, "hostB", 1000002);
    assert_eq!(a["alert"]["action"], "blocked");
    let f = s.c.wait_flow("hostB", |f| {
        f["flow"]["reason"] == "ids-blocked" && f["dest_port"] == 9000
    });
    assert_eq!(f["eastwall"]["ids"]["blocked_by"], 1000002);
}

#[test]
fn http_is_inspected_as_sent_on_l7_and_on_tcp_flows() {
    let s = scene("detect");
    // L7 (hyper parses the request, lower-casing names): the rule sees the line as sent.
    let req = b"GET /as-sent HTTP/1.1\r\nHost: web\r\nx-Probe:\tone\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(
        &s.c,
        "client",
        s.c.addr("web", 8080),
        &[(req, Duration::ZERO)],
        Duration::from_secs(2),
    );
    assert!(
        answer.text().starts_with("HTTP/1.1 200"),
        "{}",
        answer.text()
    );
    let a = wait_alert(&s.c, "hostB", 1000009);
    assert_eq!(a["app_proto"], "http");
    assert_eq!(a["http"]["url"], "/as-sent");
    // And the server's response head as it sent it (hyper writes lower-case names; the
    // block ends with its empty line).
    let a = wait_alert(&s.c, "hostB", 1000011);
    assert_eq!(a["direction"], "to_client");
    assert_eq!(a["http"]["url"], "/as-sent");
    // An L4 rule: the inspector recognises HTTP/1 on the TCP flow and reads it, cut in
    // small writes.
    let req = b"GET /l4-attack/x HTTP/1.1\r\nHost: echo\r\n\r\n";
    let chunks: Vec<(&[u8], Duration)> = req
        .chunks(2)
        .map(|c| (c, Duration::from_millis(5)))
        .collect();
    let echo = s.c.addr("echo", 9000);
    let raw = raw_exchange(&s.c, "client", echo, &chunks, Duration::from_secs(2));
    assert!(raw.text().contains("/l4-attack/"), "{raw:?}");
    let a = wait_alert(&s.c, "hostB", 1000010);
    assert_eq!(a["app_proto"], "http");
    assert_eq!(a["dest_port"], 9000);
    assert_eq!(a["http"]["url"], "/l4-attack/x");
    assert_eq!(a["alert"]["action"], "allowed");
    drop(s);

    // Prevent: the request on the TCP flow (one write) never reaches the server.
    let s = scene("prevent");
    let echo = s.c.addr("echo", 9000);
    let raw = raw_exchange(
        &s.c,
        "client",
        echo,
        &[(req, Duration::ZERO)],
        Duration::from_secs(2),
    );
    assert_ne!(raw.end, "open", "{raw:?}");
    assert!(!raw.text().contains("/l4-attack/"), "{raw:?}");
    assert_eq!(
        wait_alert(&s.c, "hostB", 1000010)["alert"]["action"],
        "blocked"
    );
}

#[test]
fn prevent_mode_blocks_an_attack_hidden_in_a_gzip_request_body() {
    use std::io::Write;
    let s = scene("prevent");
    let dst = s.c.addr("web", 8080);
    // The command after 30 KB of filler, gzip-compressed, labelled, sent in small writes.
    let mut text: Vec<u8> = (0..3000)
        .flat_map(|i| format!("f{i:04}=x&").into_bytes())
        .collect();
    text.extend_from_slice(b"cmd=whoami");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&text).unwrap();
    let body = gz.finish().unwrap();
    assert!(!body.windows(10).any(|w| w == b"cmd=whoami"));
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: web\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut chunks: Vec<(&[u8], Duration)> = vec![(head.as_bytes(), Duration::from_millis(5))];
    chunks.extend(body.chunks(500).map(|c| (c, Duration::from_millis(5))));
    let answer = raw_exchange(&s.c, "client", dst, &chunks, Duration::from_secs(3));
    assert!(
        answer.text().starts_with("HTTP/1.1 403"),
        "{}",
        answer.text()
    );
    assert!(
        answer.text().contains("signature 1000007"),
        "{}",
        answer.text()
    );
    let a = wait_alert(&s.c, "hostB", 1000007);
    assert_eq!(a["alert"]["action"], "blocked");
    assert_eq!(a["http"]["url"], "/upload");
    // The server never answered the request: its body was cut before it was whole.
    assert!(!answer.text().contains("body bytes"), "{}", answer.text());
}

/// A compression bomb is an EVE `anomaly` of the flow, in Suricata's shape with the node and
/// both ends in the one `eastwall` object (checked against the schema as it is read).
#[test]
fn a_compression_bomb_is_an_anomaly_event() {
    use std::io::Write;
    let s = scene("detect");
    let dst = s.c.addr("web", 8080);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'0'; 4 << 20]).unwrap();
    let body = gz.finish().unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: web\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let chunks: Vec<(&[u8], Duration)> = vec![
        (head.as_bytes(), Duration::from_millis(5)),
        (&body, Duration::from_millis(5)),
    ];
    raw_exchange(&s.c, "client", dst, &chunks, Duration::from_secs(3));
    for _ in 0..100 {
        if let Some(a) =
            s.c.events("hostB")
                .into_iter()
                .find(|e| e["event_type"] == "anomaly")
        {
            assert_eq!(a["anomaly"]["event"], "COMPRESSION_BOMB");
            assert_eq!(a["host"], "hostB");
            assert_eq!(a["eastwall"]["node"], "hostB");
            assert_eq!(a["eastwall"]["src"]["identity"], spiffe("client"));
            assert_eq!(a["eastwall"]["dest"]["workload"], "web");
            assert_eq!(a["http"]["url"], "/upload");
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("no anomaly on hostB: {:#?}", s.c.events("hostB"));
}

#[test]
fn a_tls12_server_certificate_is_matched() {
    let s = scene("detect");
    // A TLS 1.2 server in echo's namespace, its certificate for a known-bad name.
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "evil.example");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().clone();
    let provider = eastwall_certs::crypto_provider();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let addr = s.c.addr("echo", 8443);
    let listener = eastwall_lab::in_netns(&s.c.lab.workload("echo").netns.clone(), move || {
        std::net::TcpListener::bind(addr).unwrap()
    })
    .unwrap();
    let serving = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(std::sync::Arc::new(server)).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        std::io::Write::write_all(&mut tls, b"hi").unwrap();
        let _ = std::io::Write::flush(&mut tls);
    });
    // The client trusts it, speaks TLS 1.2 through both nodes.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let got = eastwall_lab::in_netns(&s.c.lab.workload("client").netns.clone(), move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(client), name).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let mut buf = [0u8; 2];
        std::io::Read::read_exact(&mut tls, &mut buf).map(|()| buf.to_vec())
    })
    .unwrap();
    serving.join().unwrap();
    assert_eq!(got.unwrap(), b"hi");
    // Detect mode: the traffic flowed, and the certificate's subject alerted.
    let a = wait_alert(&s.c, "hostB", 1000008);
    assert_eq!(a["alert"]["action"], "allowed");
    assert_eq!(a["app_proto"], "tls");
    assert_eq!(a["direction"], "to_client");
    assert_eq!(a["src_port"], 8443);
}

#[test]
fn http2_streams_are_inspected_one_by_one() {
    let s = scene("prevent");
    let answers = http2_concurrent(
        &s.c,
        "client",
        s.c.addr("web", 8080),
        "web",
        &[
            ("GET", "/a", ""),
            ("GET", "/search?q=1%20UNION%20SELECT%203", ""),
            ("POST", "/b", "plain body"),
            ("GET", "/leak/SECRET-TOKEN", ""),
        ],
    );
    let codes: Vec<u16> = answers
        .iter()
        .map(|a| a.as_ref().map_or(0, |a| a.status))
        .collect();
    // The attack is refused on its stream; the response leak is cut (an error or a body
    // without the secret); the other streams are answered.
    assert_eq!(codes[..3], [200, 403, 200], "{answers:#?}");
    if let Ok(a) = &answers[3] {
        assert!(!a.body.contains("SECRET-TOKEN"), "{a:?}");
    }
    let mut seen = s.web.requests();
    seen.sort();
    assert!(!seen.iter().any(|r| r.contains("UNION")), "{seen:?}");
    assert_eq!(
        wait_alert(&s.c, "hostB", 1000001)["alert"]["action"],
        "blocked"
    );
    assert_eq!(
        wait_alert(&s.c, "hostB", 1000003)["alert"]["action"],
        "blocked"
    );
    let f = s.c.wait_flow("hostB", |f| f["app_proto"] == "http2");
    assert_eq!(f["eastwall"]["ids"]["alerts"], 2, "{f:#}");
}

#[test]
fn attacks_in_the_response_direction_are_caught() {
    // Detect: the response is delivered and the alert says to_client.
    let s = scene("detect");
    let (_, answers) = http1_session(
        &s.c,
        "client",
        s.c.addr("web", 8080),
        "web",
        &[("GET", "/leak/SECRET-TOKEN", "")],
    );
    assert_eq!(answers[0].as_ref().unwrap().status, 200);
    let a = wait_alert(&s.c, "hostB", 1000003);
    assert_eq!(a["direction"], "to_client");
    assert_eq!(a["src_ip"], s.c.lab.workload("web").addr.to_string());
    // On a raw stream: what the echo sends back.
    let raw = raw_exchange(
        &s.c,
        "client",
        s.c.addr("echo", 9000),
        &[(b"ECHO-LEAK\n", Duration::ZERO)],
        Duration::from_millis(800),
    );
    assert!(raw.text().contains("ECHO-LEAK"), "{raw:?}");
    assert_eq!(wait_alert(&s.c, "hostB", 1000004)["direction"], "to_client");
    drop(s);

    // Prevent: the response body is cut off before the secret reaches the client.
    let s = scene("prevent");
    let (_, answers) = http1_session(
        &s.c,
        "client",
        s.c.addr("web", 8080),
        "web",
        &[("GET", "/leak/SECRET-TOKEN", "")],
    );
    // Either the body is cut short (the client sees an error) or it lacks the secret.
    if let Ok(a) = &answers[0] {
        assert!(!a.body.contains("SECRET-TOKEN"), "{a:?}");
    }
    assert_eq!(
        wait_alert(&s.c, "hostB", 1000003)["alert"]["action"],
        "blocked"
    );
}

/// Sends three datagrams to the UDP echo, the second one an attack; the answers.
fn udp_attack(s: &Scene) -> eastwall_integration::UdpProbe {
    let datagrams = ["hello", "a UDP-EVIL payload", "bye"]
        .map(|d| d.as_bytes().to_vec())
        .to_vec();
    s.c.lab.udp_exchange_of(
        "client",
        s.c.addr("echo", 9001),
        datagrams,
        Duration::from_millis(500),
    )
}

#[test]
fn udp_datagrams_and_dns_queries_are_inspected() {
    let s = scene("detect");
    let p = udp_attack(&s);
    assert_eq!(p.answers.len(), 3, "detect lets everything through: {p:?}");
    let a = wait_alert(&s.c, "hostB", 1000005);
    assert_eq!(a["proto"], "UDP", "{a:#}");
    assert_eq!(a["direction"], "to_server");
    assert_eq!(a["src_port"], p.local.port());
    assert_eq!(a["eastwall"]["src"]["identity"], spiffe("client"));
    // Only the datagram that carries it alerted.
    assert_eq!(alerts(&s.c, "hostB", 1000005).len(), 1);
    // A DNS query for a tunnelling domain: answered in detect mode, and alerted.
    let dns = s.c.lab.workload("echo").addr;
    let q = s.c.lab.dig(
        "client",
        dns,
        "x.tunnel.example",
        false,
        Duration::from_secs(2),
    );
    assert_eq!(q.status.as_deref(), Some("NOERROR"), "{}", q.output);
    let a = wait_alert(&s.c, "hostB", 1000006);
    assert_eq!(a["app_proto"], "dns", "{a:#}");
    assert_eq!(a["dns"]["queries"][0]["rrname"], "x.tunnel.example");
}

#[test]
fn prevent_mode_drops_an_attacking_datagram_and_query() {
    let s = scene("prevent");
    let p = udp_attack(&s);
    // The first datagram is answered; the attack never reaches the server and ends the
    // session, so nothing after it is answered on it either.
    assert_eq!(p.answers.len(), 1, "{p:?}");
    assert!(p.answers[0].ends_with("hello"), "{p:?}");
    let a = wait_alert(&s.c, "hostB", 1000005);
    assert_eq!(a["alert"]["action"], "blocked");
    let f = s.c.wait_flow("hostB", |f| {
        f["proto"] == "UDP" && f["src_port"] == p.local.port()
    });
    assert_eq!(f["flow"]["reason"], "ids-blocked", "{f:#}");
    assert_eq!(f["eastwall"]["ids"]["blocked_by"], 1000005);
    // A query for a tunnelling domain is dropped; another on the same server is answered.
    let dns = s.c.lab.workload("echo").addr;
    let q = s.c.lab.dig(
        "client",
        dns,
        "x.tunnel.example",
        false,
        Duration::from_secs(1),
    );
    assert_eq!(q.status, None, "{}", q.output);
    let ok = s.c.lab.dig(
        "client",
        dns,
        "www.ok.example",
        false,
        Duration::from_secs(2),
    );
    assert_eq!(ok.status.as_deref(), Some("NOERROR"), "{}", ok.output);
    let a = wait_alert(&s.c, "hostB", 1000006);
    assert_eq!(a["alert"]["action"], "blocked");
}

#[test]
fn a_policy_with_ids_profiles_needs_ids_rules() {
    require_root();
    let mut c = Cloud::new(
        &["hostA"],
        &[("hostA", "client", "client", "prod")],
        "",
        &policy("detect"),
    );
    let registry = c.registry().to_owned();
    let err = c
        .lab
        .start_node(
            &eastwall_integration::eastwall_bin(),
            "hostA",
            &registry,
            &policy("detect"),
            "",
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("has no `ids.rules`"), "{err:#}");
}
