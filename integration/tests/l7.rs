//! L7 rules decided in the node: every HTTP request (every HTTP/2 stream) on its own, TLS by
//! SNI without decrypting, opaque TCP against L7 rules, bad HTTP input, and a reload that
//! takes effect at the next request of a keep-alive connection. Run as root.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use eastwall_integration::http::{Answer, http1_session, http2_concurrent, raw_exchange};
use eastwall_integration::{Cloud, Outcome, require_root};
use eastwall_lab::http_server::Received;
use serde_json::Value;

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: identity-firewall
      rules:
        - id: finance-reads-and-writes-the-api
          action: allow
          from: {group: finance}
          to:
            app: finance-api
            http:
              - methods: [GET, POST]
                paths: ["/api/*"]
          ports: [8080]
        - id: hr-uses-hr-app
          action: allow
          from: {group: hr}
          to: {app: hr-app}
          ports: [8080]
        - id: finance-reports-by-name
          action: allow
          from: {group: finance}
          to: {app: finance-api, http: [{hosts: [reports.corp.example]}]}
          ports: [8090]
    - name: egress
      rules:
        - id: partner-apis-by-name
          action: allow
          from: {app: web}
          to: {app: proxy, tls: {sni: ["*.partner.example"]}}
          ports: [443]
"#;

const DIRECTORY: &str = "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [finance]\n    bob: [hr]\n";

struct Scene {
    c: Cloud,
    /// finance-api's reports service on 8090 (a rule with `hosts`).
    reports: Received,
    /// finance-api on hostB (decided by hostB, behind the tunnel).
    remote: Received,
    /// finance-local on hostA (decided by hostA, same host as the desks).
    local: Received,
}

/// hostA: desk-alice (alice), desk-bob (bob), web, finance-local (app finance-api);
/// hostB: finance-api, hr-app (HTTP on 8080), proxy (echo on 443).
fn scene(transport: &str, extra_spec: &str) -> Scene {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "desk-alice", "desktop", "corp"),
            ("hostA", "desk-bob", "desktop", "corp"),
            ("hostA", "web", "web", "corp"),
            ("hostA", "finance-local", "finance-api", "corp"),
            ("hostB", "finance-api", "finance-api", "corp"),
            ("hostB", "hr-app", "hr-app", "corp"),
            ("hostB", "proxy", "proxy", "corp"),
        ],
        "",
        POLICY,
    );
    let remote = c.lab.serve_http("finance-api", 8080).unwrap();
    let reports = c.lab.serve_http("finance-api", 8090).unwrap();
    let local = c.lab.serve_http("finance-local", 8080).unwrap();
    c.lab.serve_http("hr-app", 8080).unwrap();
    c.lab.serve("proxy", &[443]).unwrap();
    for host in ["hostA", "hostB"] {
        let dir = c.lab.dir().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("directory.yaml"), DIRECTORY).unwrap();
    }
    c.lab.add_node_spec(&format!(
        "  directory:\n    file: directory.yaml\n  tunnel:\n    transport: {transport}\n{extra_spec}"
    ));
    c.bind_user("desk-alice", "alice");
    c.bind_user("desk-bob", "bob");
    c.start_nodes("");
    Scene {
        c,
        reports,
        remote,
        local,
    }
}

fn status(a: &Result<Answer, String>) -> u16 {
    a.as_ref().map_or(0, |a| a.status)
}

/// The finance scene over one keep-alive connection, to `target` (a workload whose HTTP
/// server is `received`), deciding at `decider`.
fn finance_scene(s: &Scene, target: &str, received: &Received, decider: &str) {
    let c = &s.c;
    let dst = c.addr(target, 8080);
    let (local, answers) = http1_session(
        c,
        "desk-alice",
        dst,
        "finance.corp.example",
        &[
            ("GET", "/api/accounts", ""),
            ("DELETE", "/api/accounts/7", ""),
            ("POST", "/api/transfers?dry=1", "{\"amount\": 10}"),
            ("GET", "/api/../admin", ""),
            ("GET", "/api//accounts/./7", ""),
        ],
    );
    let codes: Vec<u16> = answers.iter().map(status).collect();
    assert_eq!(codes, [200, 403, 200, 403, 200], "{answers:#?}");
    let denied = answers[1].as_ref().unwrap();
    assert!(
        denied
            .body
            .contains("denied by eastwall policy: rule default-deny"),
        "{}",
        denied.body
    );
    // Only the allowed requests reached the server, with normalized paths.
    let seen = received.requests();
    assert_eq!(
        seen,
        [
            "GET /api/accounts HTTP/1.1",
            "POST /api/transfers?dry=1 HTTP/1.1",
            "GET /api/accounts/7 HTTP/1.1"
        ],
        "{seen:#?}"
    );
    // One flow record at the deciding node, with the requests counted and the last one.
    let f = c.flow(decider, local.unwrap());
    assert_eq!(f["app_proto"], "http", "{f:#}");
    assert_eq!(f["eastwall"]["http_requests"]["requests"], 5);
    assert_eq!(f["eastwall"]["http_requests"]["denied"], 2);
    assert_eq!(f["http"]["url"], "/api//accounts/./7");
    assert_eq!(f["eastwall"]["normalized_path"], "/api/accounts/7");
    assert_eq!(f["http"]["status"], 200);
    // An http event per request, with its decision.
    let events: Vec<_> = c
        .events(decider)
        .into_iter()
        .filter(|e| e["event_type"] == "http" && e["src_port"] == local.unwrap().port())
        .collect();
    assert_eq!(events.len(), 5);
    assert_eq!(events[1]["http"]["http_method"], "DELETE");
    assert_eq!(events[1]["http"]["status"], 403);
    assert_eq!(events[1]["eastwall"]["policy"]["rule"], "default-deny");
    assert_eq!(
        events[0]["eastwall"]["policy"]["rule"],
        "finance-reads-and-writes-the-api"
    );
    assert_eq!(events[0]["eastwall"]["src"]["user"], "alice");
    assert_eq!(events[3]["eastwall"]["normalized_path"], "/admin");
}

fn finance(transport: &str) {
    let s = scene(transport, "");
    // Behind the tunnel the destination decides; the source lets it through pending L7.
    finance_scene(&s, "finance-api", &s.remote, "hostB");
    // (The source's record is written when its side of the connection has closed.)
    let src = s.c.wait_flow("hostA", |f| f["dest_port"] == 8080);
    assert_eq!(src["eastwall"]["policy"]["l7_pending"], true, "{src:#}");
    // bob (hr) gets nothing of the finance app: refused when he connects.
    let bob = s.c.connect("desk-bob", "finance-api", 8080);
    assert_eq!(bob.outcome, Outcome::Reset);
    let hr = http1_session(
        &s.c,
        "desk-bob",
        s.c.addr("hr-app", 8080),
        "hr",
        &[("GET", "/", "")],
    );
    assert_eq!(status(&hr.1[0]), 200);
}

#[test]
fn finance_gets_and_posts_the_api_and_nothing_else_over_quic() {
    finance("quic");
}

#[test]
fn finance_gets_and_posts_the_api_and_nothing_else_over_http2() {
    finance("h2");
}

#[test]
fn the_source_node_decides_when_it_is_the_last_node() {
    let s = scene("quic", "");
    finance_scene(&s, "finance-local", &s.local, "hostA");
}

#[test]
fn http2_streams_are_decided_one_by_one() {
    let s = scene("quic", "");
    let answers = http2_concurrent(
        &s.c,
        "desk-alice",
        s.c.addr("finance-api", 8080),
        "finance.corp.example",
        &[
            ("GET", "/api/a", ""),
            ("DELETE", "/api/b", ""),
            ("POST", "/api/c", "x"),
            ("PUT", "/api/d", ""),
            ("GET", "/other", ""),
        ],
    );
    let codes: Vec<u16> = answers.iter().map(status).collect();
    assert_eq!(codes, [200, 403, 200, 403, 403], "{answers:#?}");
    let mut seen = s.remote.requests();
    seen.sort();
    assert_eq!(seen, ["GET /api/a HTTP/2.0", "POST /api/c HTTP/2.0"]);
    let f = s.c.wait_flow("hostB", |f| f["app_proto"] == "http2");
    assert_eq!(f["eastwall"]["http_requests"]["requests"], 5);
}

/// A TLS ClientHello for `sni` (none: no SNI), as a client would send it.
fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let mut cfg = rustls::ClientConfig::builder_with_provider(eastwall_certs::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.enable_sni = sni.is_some();
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_owned())
        .unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn tls_is_decided_by_sni_without_decrypting_and_opaque_tcp_does_not_match_l7_rules() {
    let s = scene("quic", "");
    let dst = s.c.addr("proxy", 443);
    let go = |bytes: &[u8]| {
        raw_exchange(
            &s.c,
            "web",
            dst,
            &[(bytes, Duration::ZERO)],
            Duration::from_millis(800),
        )
    };
    let ok = go(&client_hello(Some("api.partner.example")));
    // Allowed: the hello reached the (echo) server, which greeted and echoed it.
    assert!(ok.text().starts_with("hello from proxy"), "{ok:?}");
    let f = s.c.flow("hostB", ok.local.unwrap());
    assert_eq!(f["app_proto"], "tls");
    assert_eq!(f["tls"]["sni"], "api.partner.example");
    assert_eq!(f["tls"]["version"], "TLS 1.3");
    assert_eq!(f["eastwall"]["policy"]["rule"], "partner-apis-by-name");
    for denied in [
        client_hello(Some("evil.example")),
        client_hello(None),
        b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
    ] {
        let r = go(&denied);
        assert_ne!(r.end, "open", "{r:?}");
        assert!(!r.text().contains("hello from proxy"), "{r:?}");
    }
    let no_sni = s.c.wait_flows("hostB", 1, |f| {
        f["app_proto"] == "tls" && f["tls"]["sni"].is_null()
    });
    assert_eq!(no_sni.len(), 1);
    let opaque = s.c.wait_flow("hostB", |f| f["app_proto"] == "failed");
    assert_eq!(opaque["eastwall"]["policy"]["rule"], "default-deny");
    // A server-first protocol (the client sends nothing): after the first-bytes wait it is
    // opaque, and the L7 allow rule does not match it.
    let silent = raw_exchange(&s.c, "web", dst, &[], Duration::from_secs(4));
    assert_ne!(silent.end, "open", "{silent:?}");
    assert!(silent.received.is_empty(), "{silent:?}");
}

#[test]
fn bad_http_is_refused_and_never_reaches_the_server() {
    let s = scene("quic", "  l7:\n    headerTimeoutSecs: 1\n");
    let dst = s.c.addr("finance-api", 8080);
    let once = |bytes: &[u8]| {
        raw_exchange(
            &s.c,
            "desk-alice",
            dst,
            &[(bytes, Duration::ZERO)],
            Duration::from_secs(3),
        )
    };
    // Request smuggling: both Content-Length and Transfer-Encoding. Transfer-Encoding frames
    // the request, the connection closes after its response, and what was smuggled behind it
    // is never read as a request (RFC 9112 6.1).
    let smuggle = once(b"POST /api/x HTTP/1.1\r\nHost: f\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: f\r\n\r\n");
    assert!(
        smuggle.text().starts_with("HTTP/1.1 200"),
        "{}",
        smuggle.text()
    );
    assert!(
        smuggle.text().contains("connection: close"),
        "{}",
        smuggle.text()
    );
    assert!(!smuggle.text().contains("/admin"), "{}", smuggle.text());
    assert_ne!(smuggle.end, "open");
    // A header line without a colon.
    let malformed = once(b"GET /api/x HTTP/1.1\r\nHost f\r\n\r\n");
    assert!(
        malformed.text().starts_with("HTTP/1.1 400"),
        "{malformed:?}"
    );
    // A header block over the limit (64 KiB).
    let big = format!(
        "GET /api/x HTTP/1.1\r\nHost: f\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let huge = once(big.as_bytes());
    assert!(
        huge.text().starts_with("HTTP/1.1 431"),
        "{:?}",
        &huge.text()[..huge.text().len().min(80)]
    );
    // A target that does not normalize.
    let bad_escape = once(b"GET /api/%zz HTTP/1.1\r\nHost: f\r\n\r\n");
    assert!(
        bad_escape.text().starts_with("HTTP/1.1 400"),
        "{bad_escape:?}"
    );
    assert!(
        bad_escape.text().contains("bad request target"),
        "{bad_escape:?}"
    );
    // A slow header sender is cut after the header timeout (1 s here).
    let slow = raw_exchange(
        &s.c,
        "desk-alice",
        dst,
        &[(
            b"GET /api/x HTTP/1.1\r\nHost: f\r\n",
            Duration::from_millis(2500),
        )],
        Duration::from_secs(1),
    );
    assert_ne!(slow.end, "open", "{slow:?}");
    // HTTP/2 with a frame that breaks the protocol (a DATA frame on stream 0).
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    h2.extend_from_slice(&[0, 0, 4, 0, 0, 0, 0, 0, 0, b'j', b'u', b'n', b'k']);
    let bad_h2 = once(&h2);
    assert_ne!(bad_h2.end, "open", "{bad_h2:?}");
    // Of all that, only the re-framed POST reached the server.
    assert_eq!(s.remote.requests(), ["POST /api/x HTTP/1.1"]);
    // And a well-formed request still works.
    let ok = http1_session(&s.c, "desk-alice", dst, "f", &[("GET", "/api/x", "")]);
    assert_eq!(status(&ok.1[0]), 200);
    let bad_target =
        s.c.events("hostB")
            .into_iter()
            .find(|e| e["eastwall"]["policy"]["rule"] == "bad-request-target");
    assert!(bad_target.is_some());
    // The connections hyper refused are recorded with why.
    s.c.wait_flows("hostB", 3, |f| f["eastwall"]["error"].is_string());
}

#[test]
fn a_host_rule_decides_on_exactly_the_authority_the_server_gets() {
    let s = scene("h2", "");
    let dst = s.c.addr("finance-api", 8090);
    let once = |bytes: &[u8]| {
        raw_exchange(
            &s.c,
            "desk-alice",
            dst,
            &[(bytes, Duration::ZERO)],
            Duration::from_millis(600),
        )
        .text()
    };
    // An absolute-form target naming the allowed host, with a Host header naming another.
    let smuggled =
        once(b"GET http://reports.corp.example/r HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert!(smuggled.starts_with("HTTP/1.1 400"), "{smuggled}");
    assert!(smuggled.contains("bad request authority"), "{smuggled}");
    // Two Host headers.
    let twice =
        once(b"GET /r HTTP/1.1\r\nHost: reports.corp.example\r\nHost: evil.example\r\n\r\n");
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    // Another host is not allowed.
    let other = once(b"GET /r HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    // The allowed host, in absolute form: the server gets that authority, once, as `Host`.
    let ok =
        once(b"GET http://REPORTS.corp.example/r HTTP/1.1\r\nHost: reports.corp.example\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(s.reports.requests(), ["GET /r HTTP/1.1"]);
    assert_eq!(
        s.reports.authorities(),
        ["target= host=REPORTS.corp.example"]
    );
    // The record says which host was decided, for each request.
    let hosts: Vec<Value> =
        s.c.events("hostB")
            .into_iter()
            .filter(|e| e["event_type"] == "http" && e["dest_port"] == 8090)
            .map(|e| e["http"]["hostname"].clone())
            .collect();
    assert!(
        hosts.contains(&Value::from("reports.corp.example")),
        "{hosts:?}"
    );
    assert!(hosts.contains(&Value::from("evil.example")), "{hosts:?}");
}

#[test]
fn a_reload_takes_effect_at_the_next_request_of_a_keep_alive_connection() {
    let s = scene("quic", "");
    let dst = s.c.addr("finance-api", 8080);
    let netns = s.c.lab.workload("desk-alice").netns.clone();
    let policy_paths: Vec<_> = ["hostA", "hostB"]
        .iter()
        .map(|h| s.c.lab.dir().join(h).join("policy.yaml"))
        .collect();
    // One keep-alive connection: GET, then the policy drops GET, then GET again.
    let answers = eastwall_lab::in_netns(&netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use http_body_util::BodyExt;
            let tcp = tokio::net::TcpStream::connect(dst).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let get = || {
                hyper::Request::get("/api/accounts")
                    .header("host", "f")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap()
            };
            let mut codes = Vec::new();
            let r = send.send_request(get()).await.unwrap();
            codes.push(r.status().as_u16());
            r.into_body().collect().await.unwrap();
            for p in &policy_paths {
                let text = std::fs::read_to_string(p)
                    .unwrap()
                    .replace("[GET, POST]", "[POST]");
                std::fs::write(p.with_extension("tmp"), text).unwrap();
                std::fs::rename(p.with_extension("tmp"), p).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1200)).await;
            send.ready().await.unwrap();
            let r = send.send_request(get()).await.unwrap();
            codes.push(r.status().as_u16());
            codes
        })
    })
    .unwrap();
    assert_eq!(answers, [200, 403]);
}
