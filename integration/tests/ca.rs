//! Nodes that obtain their workloads' certificates from `eastwall ca serve` instead of files:
//! issuance, the CA's authorization by registry placement, rotation under load, and a CA
//! outage. Run as root.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use eastwall_integration::{CaHandle, Cloud, block_on_in, require_root, spiffe};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: identity
      rules:
        - id: prod-app-identity-to-db
          action: allow
          from: {spiffe: "spiffe://corp.example/wl/prod-app"}
          to: {app: db}
          ports: [5432]
"#;

const OK: &str = "eastwall_cert_renewals_total{result=\"ok\"}";
const ERR: &str = "eastwall_cert_renewals_total{result=\"error\"}";

/// hostA: prod-app, legacy; hostB: prod-db (an echo service on 5432). The CA service runs on
/// hostA; nodes ask for `node_cert_secs`.
fn cloud(node_cert_secs: Option<u64>) -> (Cloud, CaHandle) {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "prod-app", "app", "prod"),
            ("hostA", "legacy", "legacy", "prod"),
            ("hostB", "prod-db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("prod-db", &[5432]).unwrap();
    let ca = c.start_ca("hostA", 3600, node_cert_secs);
    c.start_nodes("");
    (c, ca)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_obtain_their_workloads_certificates_from_the_ca() {
    let (c, ca) = cloud(None);
    // No certificate files were planted: everything came from the CA.
    assert!(!c.lab.cert_dir("hostA").exists());
    let p = c.connect("prod-app", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let inb = c.flow("hostB", p.local.unwrap());
    assert_eq!(inb["eastwall"]["src"]["identity"], spiffe("prod-app"));
    assert_eq!(
        inb["eastwall"]["tunnel"]["peer_identity"],
        spiffe("prod-app")
    );
    assert_eq!(inb["eastwall"]["policy"]["rule"], "prod-app-identity-to-db");
    let out = c.flow("hostA", p.local.unwrap());
    assert_eq!(
        out["eastwall"]["tunnel"]["peer_identity"],
        spiffe("prod-db")
    );
    let log = std::fs::read_to_string(&ca.log).unwrap();
    for (wl, node) in [
        ("prod-app", "hostA"),
        ("legacy", "hostA"),
        ("prod-db", "hostB"),
    ] {
        let line = format!("signed {} for node `{node}`", spiffe(wl));
        assert!(log.contains(&line), "no `{line}` in\n{log}");
    }
    let node_log = std::fs::read_to_string(c.lab.dir().join("hostB/node.log")).unwrap();
    assert!(
        node_log.contains("obtained certificate from the CA"),
        "{node_log}"
    );
}

fn ask_ca(c: &Cloud, ca: &CaHandle, host: &str, id: &str) -> (u16, String) {
    c.ask_ca(ca, host, id)
}

#[test]
fn a_node_gets_no_certificate_for_a_workload_on_another_node() {
    let (c, ca) = cloud(None);
    let (status, body) = ask_ca(&c, &ca, "hostA", &spiffe("prod-db"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(
            "node `hostA` may not obtain a certificate for spiffe://corp.example/wl/prod-db"
        ),
        "{body}"
    );
    // Its own workload, yes; and from hostB's network namespace, hostB gets prod-db.
    assert_eq!(ask_ca(&c, &ca, "hostA", &spiffe("prod-app")).0, 200);
    assert_eq!(ask_ca(&c, &ca, "hostB", &spiffe("prod-db")).0, 200);
    assert_eq!(ask_ca(&c, &ca, "hostB", &spiffe("prod-app")).0, 403);

    // Moving prod-db to hostA in the CA's registry moves the right with it.
    let registry = ca.registry.as_ref().unwrap();
    let moved = std::fs::read_to_string(registry)
        .unwrap()
        .replace("name: prod-db, node: hostB", "name: prod-db, node: hostA")
        + "# prod-db moved to hostA\n";
    std::fs::write(registry, moved).unwrap();
    assert_eq!(ask_ca(&c, &ca, "hostA", &spiffe("prod-db")).0, 200);
    assert_eq!(ask_ca(&c, &ca, "hostB", &spiffe("prod-db")).0, 403);
    let log = std::fs::read_to_string(&ca.log).unwrap();
    assert!(log.contains("registry reloaded"), "{log}");
}

#[test]
fn rotation_every_two_seconds_during_a_transfer_loses_no_bytes() {
    let (c, _ca) = cloud(Some(4));
    let c = Arc::new(c);
    let ok_before = (c.metric("hostA", OK), c.metric("hostB", OK));
    // ~7 s of traffic: about three renewals of every certificate on both sides.
    let total = 8 * 1024 * 1024;
    let transfer = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.echo_transfer(
                "prod-app",
                "prod-db",
                5432,
                total,
                64 * 1024,
                Duration::from_millis(55),
            )
        })
    };
    // New connections keep working across renewals too.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(1000));
        let p = c.connect("prod-app", "prod-db", 5432);
        assert!(p.outcome.reached(), "{:?}", p.outcome);
    }
    assert_eq!(transfer.join().unwrap().unwrap(), total);
    let ok_after = (c.metric("hostA", OK), c.metric("hostB", OK));
    // hostA renews prod-app and legacy, hostB prod-db, each about every 2 s.
    assert!(
        ok_after.0 >= ok_before.0 + 3 * 2,
        "{ok_before:?} -> {ok_after:?}"
    );
    assert!(
        ok_after.1 >= ok_before.1 + 3,
        "{ok_before:?} -> {ok_after:?}"
    );
    assert_eq!(c.metric("hostA", ERR), 0);
    assert_eq!(c.metric("hostB", ERR), 0);
    let log = std::fs::read_to_string(c.lab.dir().join("hostA/node.log")).unwrap();
    assert!(log.contains("certificate renewed"), "{log}");
}

#[test]
fn while_the_ca_is_down_renewals_back_off_and_traffic_goes_on() {
    let (mut c, ca) = cloud(Some(12));
    // Wait for one good renewal on each side (at ~6 s), then stop the CA: every certificate
    // then has about 6 s or more left.
    wait_until("a first renewal", Duration::from_secs(15), || {
        c.metric("hostA", OK) >= 1 && c.metric("hostB", OK) >= 1
    });
    c.lab.stop_ca(&ca);
    let stopped = Instant::now();
    let c = Arc::new(c);
    let total = 2 * 1024 * 1024;
    let transfer = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.echo_transfer(
                "prod-app",
                "prod-db",
                5432,
                total,
                32 * 1024,
                Duration::from_millis(60),
            )
        })
    };
    // Renewals fail and are retried (1 s, 2 s, ...) while the certificates are still valid;
    // new connections keep working meanwhile.
    wait_until("failed renewals", Duration::from_secs(10), || {
        c.metric("hostA", ERR) >= 2 && c.metric("hostB", ERR) >= 2
    });
    let p = c.connect("prod-app", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    assert_eq!(transfer.join().unwrap().unwrap(), total);
    let elapsed = stopped.elapsed();
    // Backoff, not a hot loop: about 1 + log2(elapsed s) attempts per identity (hostA holds
    // two), with slack.
    let errs = c.metric("hostA", ERR);
    let per_identity_max = 2 + (elapsed.as_secs_f64().log2().ceil() as u64);
    assert!(
        errs <= 2 * per_identity_max,
        "{errs} errors in {elapsed:?}: no backoff?"
    );
    let log = std::fs::read_to_string(c.lab.dir().join("hostA/node.log")).unwrap();
    assert!(log.contains("renewal failed"), "{log}");
    assert!(
        log.contains("the current certificate stays in use"),
        "{log}"
    );
    assert!(log.contains("retrying in 1 s"), "{log}");
}

/// `eastwall ca token` in the CA's folder: the token it prints.
fn make_token(ca: &CaHandle, args: &[&str]) -> String {
    let out = eastwall_integration::run_ok(
        std::process::Command::new(eastwall_integration::eastwall_bin())
            .args(["ca", "token", "--dir"])
            .arg(&ca.dir)
            .args(args),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Enrolls node `node` from `host`'s namespace with `token`: the CA's status and body.
fn enroll(c: &Cloud, ca: &CaHandle, host: &str, node: &str, token: &str) -> (u16, String) {
    use eastwall_certs::{TrustBundle, generate_csr};
    let bundle =
        TrustBundle::from_pem(&std::fs::read_to_string(ca.dir.join("ca.crt")).unwrap()).unwrap();
    let id =
        eastwall_identity::SpiffeId::parse(&format!("spiffe://corp.example/node/{node}")).unwrap();
    let (csr, _) = generate_csr(&id).unwrap();
    let (url, token) = (ca.url.clone(), token.to_owned());
    block_on_in(&c.lab.host(host).netns, move || async move {
        eastwall_node::ca::client::enroll(&url, &bundle, &token, &csr, None).await
    })
    .unwrap()
}

/// Zero-touch: nodes started with only the CA's address, the trust bundle and a bootstrap
/// token get their node certificates (and then their workloads'), and the tunnel works; a
/// token is spent once per use, only for its nodes, and not after it expires.
#[test]
fn nodes_enroll_with_a_bootstrap_token_spent_once_per_use() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "hostC"],
        &[
            ("hostA", "prod-app", "app", "prod"),
            ("hostB", "prod-db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("prod-db", &[5432]).unwrap();
    let ca = c.start_ca("hostA", 3600, None);
    let token = make_token(&ca, &["--node", "hostA", "--node", "hostB"]);
    assert_eq!(token.len(), 64, "{token}");
    let tokens = std::fs::read_to_string(ca.dir.join("bootstrap-tokens.json")).unwrap();
    assert!(!tokens.contains(&token), "the CA keeps only its hash");
    c.lab.set_node_bootstrap_token(Some(&token));
    c.start_node("hostA", "");
    c.start_node("hostB", "");
    for host in ["hostA", "hostB"] {
        let (crt, key) = c.lab.node_cert_files(host);
        let node = eastwall_certs::Identity::from_pem(
            &std::fs::read_to_string(crt).unwrap(),
            &std::fs::read_to_string(&key).unwrap(),
        )
        .unwrap();
        assert_eq!(
            node.id.as_str(),
            format!("spiffe://corp.example/node/{host}")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{host}'s node key");
    }
    let p = c.connect("prod-app", "prod-db", 5432);
    assert!(p.outcome.reached(), "{:?}", p.outcome);
    let inb = c.flow("hostB", p.local.unwrap());
    assert_eq!(inb["eastwall"]["src"]["identity"], spiffe("prod-app"));
    let log = std::fs::read_to_string(&ca.log).unwrap();
    assert!(
        log.contains("enroll: node certificate for a bootstrap token"),
        "{log}"
    );

    // Spent: both uses are gone, for any node.
    let (status, body) = enroll(&c, &ca, "hostC", "hostA", &token);
    assert_eq!((status, body.trim()), (401, "bootstrap token refused"));
    // A token for hostA does not enroll hostC; nor does a made-up one; nor an expired one.
    let for_a = make_token(&ca, &["--node", "hostA"]);
    assert_eq!(enroll(&c, &ca, "hostC", "hostC", &for_a).0, 401);
    assert_eq!(enroll(&c, &ca, "hostC", "hostC", &"0".repeat(64)).0, 401);
    let brief = make_token(&ca, &["--ttl-secs", "1"]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(enroll(&c, &ca, "hostC", "hostC", &brief).0, 401);
    // A node the registry does not have is refused before any token is spent.
    let any = make_token(&ca, &["--uses", "1"]);
    let (status, body) = enroll(&c, &ca, "hostC", "nowhere", &any);
    assert_eq!(status, 403, "{body}");
    let (status, body) = enroll(&c, &ca, "hostC", "hostC", &any);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("BEGIN CERTIFICATE"));
    let log = std::fs::read_to_string(&ca.log).unwrap();
    for why in [
        "unknown or spent token",
        "the token is not for this node",
        "expired token",
    ] {
        assert!(log.contains(why), "no `{why}` in\n{log}");
    }
    // A client without a certificate gets nothing from the signing path.
    let (status, _) = {
        let bundle = eastwall_certs::TrustBundle::from_pem(
            &std::fs::read_to_string(ca.dir.join("ca.crt")).unwrap(),
        )
        .unwrap();
        let (csr, _) = eastwall_certs::generate_csr(
            &eastwall_identity::SpiffeId::parse(&spiffe("prod-app")).unwrap(),
        )
        .unwrap();
        let url = ca.url.clone();
        block_on_in(&c.lab.host("hostC").netns, move || async move {
            let endpoint = eastwall_node::mtls::Endpoint::parse(&url).unwrap();
            let server = eastwall_node::ca::ca_server_id("corp.example").unwrap();
            let call = eastwall_node::mtls::Call {
                method: hyper::Method::POST,
                path: eastwall_node::ca::server::SIGN_PATH,
                content_type: "application/pkcs10",
                body: bytes::Bytes::from(csr),
                max_answer: 1 << 16,
                timeout: Duration::from_secs(5),
                bearer: Some(&any),
            };
            eastwall_node::mtls::request(&endpoint, None, &bundle, &server, call, None)
                .await
                .map(|a| (a.status, a.body))
        })
        .unwrap()
    };
    assert_eq!(status, 403);
}
