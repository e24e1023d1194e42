//! The `eastwall` command line: `policy check` and start-up validation (no root needed).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2], app: web, zone: dev}
";

const POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - id: web-out
          action: allow
          from: {app: web}
          ports: [443]
";

/// A policy with two errors: an unknown selector and a duplicate rule id.
const BAD_POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - id: a
          action: allow
          from: {zonee: dev}
";

const DUP_POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - id: a
          action: allow
        - id: a
          action: deny
          ports: [80, \"70-90\"]
";

fn eastwall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eastwall"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn check_accepts_valid_files() {
    let d = tempfile::tempdir().unwrap();
    let r = write(d.path(), "registry.yaml", REGISTRY);
    let p = write(d.path(), "policy.yaml", POLICY);
    let out = eastwall(&["policy", "check", &r, &p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 file(s), 1 rule(s)\n"
    );
}

#[test]
fn check_reports_errors_with_location_and_fails() {
    let d = tempfile::tempdir().unwrap();
    let r = write(d.path(), "registry.yaml", REGISTRY);
    let bad = write(d.path(), "bad.yaml", BAD_POLICY);
    let out = eastwall(&["policy", "check", &r, &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{bad}:9:")), "{err}");
    assert!(err.contains("zonee"), "{err}");

    let dup = write(d.path(), "dup.yaml", DUP_POLICY);
    let out = eastwall(&["policy", "check", &r, &dup]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{dup}:9:15: duplicate rule id `a` (first at 7:15)"
        )),
        "{err}"
    );
    assert!(err.contains("overlap"), "{err}");
}

#[test]
fn node_refuses_to_start_on_an_invalid_policy() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "registry.yaml", REGISTRY);
    let bad = write(d.path(), "policy.yaml", BAD_POLICY);
    let cfg = write(
        d.path(),
        "node.yaml",
        "apiVersion: eastwall.dev/v1\nkind: NodeConfig\nspec:\n  nodeName: hostA\n  registry: registry.yaml\n  policy: policy.yaml\n  flowLog: {path: flows.json}\n",
    );
    let out = eastwall(&["node", "--config", &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{bad}:9:")), "{err}");
    // Nothing was applied: the node stopped before opening its flow log.
    assert!(!d.path().join("flows.json").exists());
}

#[test]
fn node_config_errors_are_located() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "node.yaml",
        "apiVersion: eastwall.dev/v1\nkind: NodeConfig\nspec:\n  nodeName: hostA\n  registry: r.yaml\n  policy: p.yaml\n  capture:\n    interfacs: [eth1]\n",
    );
    let out = eastwall(&["node", "--config", &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{cfg}:8:5")), "{err}");
    assert!(err.contains("interfacs"), "{err}");
    let out = eastwall(&["policy", "check", &cfg]);
    assert!(!out.status.success());
}

#[test]
fn risky_node_configs_are_warned_about_and_impossible_ones_refused() {
    let d = tempfile::tempdir().unwrap();
    let head = "apiVersion: eastwall.dev/v1\nkind: NodeConfig\nspec:\n  nodeName: hostA\n  registry: r.yaml\n  policy: p.yaml\n";
    // Too many worker threads: an error at its place, before anything starts.
    let cfg = write(
        d.path(),
        "threads.yaml",
        &format!(
            "{head}  capture:\n    interfaces: [eth1]\n  runtime:\n    workerThreads: 100000\n"
        ),
    );
    let out = eastwall(&["policy", "check", &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{cfg}:10:5: runtime: `workerThreads` must be at most 512"
        )),
        "{err}"
    );
    let out = eastwall(&["node", "--config", &cfg]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workerThreads"));
    // No capture interfaces: legal, and warned about. An admin endpoint off loopback
    // without its token: refused, where it is written.
    let cfg = write(
        d.path(),
        "risky.yaml",
        &format!("{head}  capture:\n    interfaces: []\n  admin:\n    listen: 0.0.0.0:15000\n"),
    );
    let out = eastwall(&["policy", "check", &cfg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{cfg}:10:5: admin: `listen: 0.0.0.0:15000` is off loopback without `tokenFile`"
        )),
        "{err}"
    );
    let cfg = write(
        d.path(),
        "risky.yaml",
        &format!(
            "{head}  capture:\n    interfaces: []\n  admin:\n    listen: 0.0.0.0:15000\n    tokenFile: admin.token\n"
        ),
    );
    let out = eastwall(&["policy", "check", &cfg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{cfg}:8:5: warning: capture: no `interfaces`")),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 warning(s)"));
    // A reserve of descriptors too small to keep the node's own work going.
    let cfg = write(
        d.path(),
        "reserve.yaml",
        &format!(
            "{head}  capture:\n    interfaces: [eth1]\n  limits:\n    reservedDescriptors: 8\n"
        ),
    );
    let out = eastwall(&["policy", "check", &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{cfg}:10:5: limits: `reservedDescriptors` must be at least 64, found 8"
        )),
        "{err}"
    );
}

#[test]
fn deploy_examples_are_valid() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let files: Vec<String> = ["node.yaml", "registry.yaml", "policy.yaml"]
        .iter()
        .map(|f| deploy.join(f).to_str().unwrap().to_owned())
        .collect();
    let args: Vec<&str> = ["policy", "check"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = eastwall(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ca_init_then_issue_makes_certificates_that_load() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ca");
    let dir_s = dir.to_str().unwrap();
    let said = ok(&eastwall(&[
        "ca",
        "init",
        "--dir",
        dir_s,
        "--trust-domain",
        "corp.example",
        "--days",
        "30",
    ]));
    assert!(said.contains("corp.example"), "{said}");
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).unwrap();
    let key_mode = std::fs::metadata(dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let ca = eastwall_certs::Ca::from_pem(&ca_pem, &ca_key).unwrap();
    assert_eq!(ca.trust_domain(), "corp.example");
    let bundle = eastwall_certs::TrustBundle::from_pem(&ca_pem).unwrap();
    assert_eq!(bundle.trust_domain(), "corp.example");

    // Refuses to overwrite, and leaves the CA as it was.
    let out = eastwall(&[
        "ca",
        "init",
        "--dir",
        dir_s,
        "--trust-domain",
        "corp.example",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).unwrap(), ca_pem);
    assert_eq!(std::fs::read_to_string(dir.join("ca.key")).unwrap(), ca_key);

    // A node certificate and a workload certificate.
    let node = d.path().join("hostA");
    ok(&eastwall(&[
        "ca",
        "issue",
        "--dir",
        dir_s,
        "--node",
        "hostA",
        "--out",
        node.to_str().unwrap(),
        "--hours",
        "2",
    ]));
    let ident = eastwall_certs::Identity::from_pem(
        &std::fs::read_to_string(d.path().join("hostA.crt")).unwrap(),
        &std::fs::read_to_string(d.path().join("hostA.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(ident.id.as_str(), "spiffe://corp.example/node/hostA");
    let life = ident.not_after.duration_since(ident.not_before).unwrap();
    assert!(life.as_secs() <= 2 * 3600 + 300 + 1, "{life:?}");
    let key_mode = std::fs::metadata(d.path().join("hostA.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let wl = d.path().join("certs/web");
    ok(&eastwall(&[
        "ca",
        "issue",
        "--dir",
        dir_s,
        "--id",
        "spiffe://corp.example/wl/web",
        "--out",
        wl.to_str().unwrap(),
    ]));
    let ident = eastwall_certs::Identity::from_pem(
        &std::fs::read_to_string(d.path().join("certs/web.crt")).unwrap(),
        &std::fs::read_to_string(d.path().join("certs/web.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(ident.id.as_str(), "spiffe://corp.example/wl/web");

    // Refusals: foreign trust domain, both --id and --node, overwriting.
    for args in [
        vec!["--id", "spiffe://other.example/wl/web", "--out", "x"],
        vec![
            "--id",
            "spiffe://corp.example/wl/a",
            "--node",
            "n",
            "--out",
            "x",
        ],
        vec!["--node", "hostA", "--out", node.to_str().unwrap()],
    ] {
        let mut all = vec!["ca", "issue", "--dir", dir_s];
        all.extend(args.iter().copied());
        assert!(!eastwall(&all).status.success(), "{args:?}");
    }
}

#[test]
fn node_config_takes_either_cert_dir_or_ca() {
    let d = tempfile::tempdir().unwrap();
    let head = "apiVersion: eastwall.dev/v1\nkind: NodeConfig\nspec:\n  nodeName: hostA\n  registry: r.yaml\n  policy: p.yaml\n  identity:\n    trustBundle: ca.crt\n";
    let ca = "    ca: {url: \"https://10.0.0.9:15009\", nodeCert: n.crt, nodeKey: n.key, certSecs: 600}\n";
    let good = write(d.path(), "ca.yaml", &format!("{head}{ca}"));
    ok(&eastwall(&["policy", "check", &good]));
    let good = write(
        d.path(),
        "files.yaml",
        &format!("{head}    certDir: certs\n"),
    );
    ok(&eastwall(&["policy", "check", &good]));
    for (name, extra, want) in [
        ("both.yaml", format!("{ca}    certDir: certs\n"), "not both"),
        ("none.yaml", String::new(), "give `certDir`"),
        (
            "reload.yaml",
            format!("{ca}    reloadSecs: 3\n"),
            "reloadSecs",
        ),
    ] {
        let f = write(d.path(), name, &format!("{head}{extra}"));
        let out = eastwall(&["policy", "check", &f]);
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{f}:8:5")), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// A child process killed (by its PID) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ca_serve_signs_only_for_the_requesting_nodes_workloads() {
    use eastwall_certs::{Identity, TrustBundle, generate_csr};
    use eastwall_identity::SpiffeId;
    use eastwall_node::ca::client::post_csr;

    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ca");
    let dir_s = dir.to_str().unwrap();
    ok(&eastwall(&[
        "ca",
        "init",
        "--dir",
        dir_s,
        "--trust-domain",
        "corp.example",
    ]));
    let registry = write(
        d.path(),
        "registry.yaml",
        "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
    - {name: hostB, addresses: [10.0.0.2]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2]}
    - {name: db, node: hostB, addresses: [10.0.2.2]}
",
    );
    for (who, args) in [
        ("hostA", vec!["--node", "hostA"]),
        ("ghost", vec!["--node", "ghost"]),
        ("web", vec!["--id", "spiffe://corp.example/wl/web"]),
    ] {
        let out = d.path().join(who);
        let mut all = vec![
            "ca",
            "issue",
            "--dir",
            dir_s,
            "--out",
            out.to_str().unwrap(),
        ];
        all.extend(args);
        ok(&eastwall(&all));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _ca = Running(
        Command::new(env!("CARGO_BIN_EXE_eastwall"))
            .args(["ca", "serve", "--dir", dir_s, "--registry", &registry])
            .args(["--listen", &listen, "--cert-secs", "600"])
            .stderr(std::fs::File::create(d.path().join("ca.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let bundle =
        TrustBundle::from_pem(&std::fs::read_to_string(dir.join("ca.crt")).unwrap()).unwrap();
    let who = |name: &str| {
        Identity::from_pem(
            &std::fs::read_to_string(d.path().join(format!("{name}.crt"))).unwrap(),
            &std::fs::read_to_string(d.path().join(format!("{name}.key"))).unwrap(),
        )
        .unwrap()
    };
    let csr = |s: &str| generate_csr(&SpiffeId::parse(s).unwrap()).unwrap();
    let url = format!("https://{listen}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = |client: &str, body: &str, secs: Option<u64>| {
        rt.block_on(post_csr(&url, who(client), &bundle, body, secs, None))
            .unwrap()
    };

    // hostA gets web's certificate, for the lifetime it asks (capped by --cert-secs).
    let (web_csr, web_key) = csr("spiffe://corp.example/wl/web");
    let (status, cert) = post("hostA", &web_csr, Some(60));
    assert_eq!(status, 200, "{cert}");
    let ident = Identity::from_pem(&cert, &web_key).unwrap();
    assert_eq!(ident.id.as_str(), "spiffe://corp.example/wl/web");
    let life = ident.not_after.duration_since(ident.not_before).unwrap();
    assert!(life.as_secs() <= 300 + 61, "{life:?}");
    let (status, cert) = post("hostA", &web_csr, None);
    assert_eq!(status, 200);
    let ident = Identity::from_pem(&cert, &web_key).unwrap();
    let life = ident.not_after.duration_since(ident.not_before).unwrap();
    assert!(life.as_secs() >= 300 + 599, "{life:?}");

    // Not db's (on hostB), not the node's own, nothing for non-nodes or unknown nodes.
    let (db_csr, _) = csr("spiffe://corp.example/wl/db");
    let (status, body) = post("hostA", &db_csr, None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("node `hostA` may not obtain a certificate for spiffe://corp.example/wl/db"),
        "{body}"
    );
    let (node_csr, _) = csr("spiffe://corp.example/node/hostA");
    assert_eq!(post("hostA", &node_csr, None).0, 403);
    let (status, body) = post("web", &web_csr, None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not a node identity"), "{body}");
    assert_eq!(post("ghost", &web_csr, None).0, 403);

    // Bad requests.
    let (status, body) = post("hostA", "garbage", None);
    assert_eq!(status, 400, "{body}");
    let (foreign, _) = csr("spiffe://other.example/wl/web");
    assert_eq!(post("hostA", &foreign, None).0, 400);
    assert_eq!(post("hostA", &web_csr, Some(0)).0, 400);
    assert_eq!(post("hostA", &"x".repeat(100 * 1024), None).0, 413);

    // A client certificate from another CA does not get past the handshake.
    let other =
        eastwall_certs::Ca::generate("corp.example", std::time::Duration::from_secs(3600)).unwrap();
    let forged = other
        .issue(
            &SpiffeId::parse("spiffe://corp.example/node/hostA").unwrap(),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let forged = Identity::from_pem(&forged.cert_pem, &forged.key_pem).unwrap();
    assert!(
        rt.block_on(post_csr(&url, forged, &bundle, &web_csr, None, None))
            .is_err()
    );

    // Moving db to hostA in the registry moves the right to its certificate.
    std::fs::write(
        &registry,
        std::fs::read_to_string(&registry).unwrap().replace(
            "node: hostB, addresses: [10.0.2.2]",
            "node: hostA, addresses: [10.0.2.2]",
        ) + "# db moved\n",
    )
    .unwrap();
    let (status, body) = post("hostA", &db_csr, None);
    assert_eq!(status, 200, "{body}");

    let log = std::fs::read_to_string(d.path().join("ca.log")).unwrap();
    assert!(
        log.contains("decision=\"signed\"") || log.contains("decision=signed"),
        "{log}"
    );
    assert!(log.contains("refused"), "{log}");
    assert!(log.contains("registry reloaded"), "{log}");
}

/// The finance scene: VDI desktops bound to users, the finance API (plain HTTP inside the
/// mesh), the HR app.
const FINANCE_REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: vdi-host, addresses: [10.50.0.1]}
    - {name: app-host, addresses: [10.50.0.2]}
  workloads:
    - {name: alice-desktop, node: vdi-host, addresses: [10.50.1.10], app: vdi, user: alice}
    - {name: bob-desktop, node: vdi-host, addresses: [10.50.1.11], app: vdi, user: bob}
    - {name: finance-api, node: app-host, addresses: [10.50.2.10], app: finance-api}
    - {name: hr-app, node: app-host, addresses: [10.50.2.20], app: hr-app}
";

const FINANCE_POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: identity-firewall
      rules:
        - id: finance-api
          description: finance may GET and POST /api/*, nothing else
          action: allow
          from: {group: finance}
          to:
            app: finance-api
            http: [{methods: [GET, POST], paths: [\"/api/*\"]}]
          ports: [8080]
        - id: finance-api-nothing-else
          action: deny
          to: {app: finance-api}
        - id: hr-uses-hr-app
          action: allow
          from: {group: hr}
          to: {app: hr-app}
          ports: [443]
";

/// Runs `eastwall policy explain REGISTRY POLICY ARGS...`, which must succeed.
fn explain(d: &Path, args: &[&str]) -> String {
    let r = write(d, "registry.yaml", FINANCE_REGISTRY);
    let p = write(d, "policy.yaml", FINANCE_POLICY);
    let mut all = vec!["policy", "explain", r.as_str(), p.as_str()];
    all.extend_from_slice(args);
    ok(&eastwall(&all))
}

#[test]
fn explain_finance_scene() {
    let d = tempfile::tempdir().unwrap();
    let alice = [
        "--from",
        "alice-desktop",
        "--groups",
        "finance",
        "--to",
        "finance-api:8080",
    ];
    let req = |who: &[&str], method: &str, path: &str| {
        let mut a = who.to_vec();
        a.extend_from_slice(&["--http", method, path, "--host", "finance.corp.example"]);
        explain(d.path(), &a)
    };
    // finance GET and POST /api/* are allowed.
    for (method, path) in [("GET", "/api/accounts"), ("POST", "/api/transfers?dry=1")] {
        let out = req(&alice, method, path);
        assert!(
            out.contains("verdict: allow by rule `finance-api` (section identity-firewall)"),
            "{out}"
        );
    }
    // DELETE is denied, naming the rule, and why `finance-api` did not match.
    let out = req(&alice, "DELETE", "/api/accounts/7");
    assert!(out.starts_with("flow: alice-desktop (10.50.1.10, identity spiffe://corp.example/user/alice/wl/alice-desktop, user alice in groups [finance]) -> finance-api (10.50.2.10"), "{out}");
    assert!(
        out.contains("HTTP DELETE /api/accounts/7 (host finance.corp.example)"),
        "{out}"
    );
    assert!(
        out.contains(
            "verdict: deny by rule `finance-api-nothing-else` (section identity-firewall)"
        ),
        "{out}"
    );
    assert!(
        out.contains("1. identity-firewall/finance-api (allow): no match: to: method `DELETE` is not one of [GET, POST] of http entry 1"),
        "{out}"
    );
    // The path is normalized before it is decided.
    let out = req(&alice, "GET", "/api/../admin/");
    assert!(out.contains("HTTP GET /admin/"), "{out}");
    assert!(
        out.contains("path `/admin/` matches no `paths` pattern of http entry 1"),
        "{out}"
    );
    // hr is denied.
    let bob = [
        "--from",
        "bob-desktop",
        "--groups",
        "hr",
        "--to",
        "10.50.2.10",
        "--port",
        "8080",
    ];
    let out = req(&bob, "GET", "/api/accounts");
    assert!(
        out.contains("verdict: deny by rule `finance-api-nothing-else`"),
        "{out}"
    );
    assert!(
        out.contains("from: user `bob` is in groups [hr], none of [finance]"),
        "{out}"
    );
    // At connection time: alice's connection is inspected, bob's refused at once.
    let out = explain(d.path(), &alice);
    assert!(out.contains("at connection time"), "{out}");
    assert!(
        out.contains("verdict: depends on the protocol and the requests"),
        "{out}"
    );
    assert!(out.contains("pending: connection time"), "{out}");
    let out = explain(d.path(), &bob);
    assert!(
        out.contains("verdict: deny by rule `finance-api-nothing-else`"),
        "{out}"
    );
    // Groups unknown (no --groups): the group rule is skipped (fail closed).
    let out = explain(
        d.path(),
        &[
            "--from",
            "alice-desktop",
            "--to",
            "finance-api:8080",
            "--http",
            "GET",
            "/api/x",
        ],
    );
    assert!(
        out.contains("skipped: the groups of user `alice` are unknown"),
        "{out}"
    );
    assert!(
        out.contains("verdict: deny by rule `finance-api-nothing-else`"),
        "{out}"
    );
    // An address proves no identity, so it carries no user.
    let out = explain(
        d.path(),
        &[
            "--from",
            "10.50.1.10",
            "--groups",
            "finance",
            "--to",
            "finance-api:8080",
            "--opaque",
        ],
    );
    assert!(
        out.contains("alice-desktop (10.50.1.10, identity not proven)"),
        "{out}"
    );
    assert!(out.contains("opaque TCP"), "{out}");
}

#[test]
fn explain_refuses_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let r = write(d.path(), "registry.yaml", FINANCE_REGISTRY);
    let p = write(d.path(), "policy.yaml", FINANCE_POLICY);
    for (args, want) in [
        (
            vec!["--from", "alice-desktop", "--to", "finance-api"],
            "give the destination port",
        ),
        (
            vec!["--from", "ghost", "--to", "finance-api:80"],
            "`ghost` is neither a registry workload nor an IP address",
        ),
        (
            vec![
                "--from",
                "alice-desktop",
                "--to",
                "finance-api:80",
                "--port",
                "81",
            ],
            "--to says port 80, --port says 81",
        ),
        (
            vec![
                "--from",
                "alice-desktop",
                "--to",
                "finance-api:80",
                "--http",
                "GET",
                "api/x",
            ],
            "the node answers 400",
        ),
        (
            vec![
                "--from",
                "alice-desktop",
                "--to",
                "finance-api:80",
                "--http",
                "GET",
                "/a%zz",
            ],
            "invalid percent-escape",
        ),
    ] {
        let mut all = vec!["policy", "explain", r.as_str(), p.as_str()];
        all.extend_from_slice(&args);
        let out = eastwall(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A policy with errors is reported with positions.
    let bad = write(
        d.path(),
        "bad.yaml",
        &FINANCE_POLICY.replace(
            "from: {group: finance}",
            "from: {group: finance, http: [{}]}",
        ),
    );
    let out = eastwall(&[
        "policy",
        "explain",
        &r,
        &bad,
        "--from",
        "alice-desktop",
        "--to",
        "hr-app:443",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{bad}:10:")), "{err}");
    assert!(err.contains("`http` is not allowed in `from`"), "{err}");
}

#[test]
fn check_reports_shadowed_rules_as_warnings() {
    let d = tempfile::tempdir().unwrap();
    let r = write(d.path(), "registry.yaml", FINANCE_REGISTRY);
    let p = write(
        d.path(),
        "policy.yaml",
        &format!(
            "{FINANCE_POLICY}        - id: finance-deletes
          action: allow
          from: {{group: finance}}
          to:
            app: finance-api
            http: [{{methods: [DELETE], paths: [\"/api/*\"]}}]
          ports: [8080]
"
        ),
    );
    let out = eastwall(&["policy", "check", &r, &p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        format!(
            "{p}:23:15: warning: rule `finance-deletes` can never match: rule `finance-api-nothing-else` (at 15:15) matches every flow it does\n"
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 file(s), 4 rule(s), 1 warning(s)\n"
    );
}

/// The `policy explain` example in docs/POLICY.md is what the binary prints today.
#[test]
fn docs_explain_example_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs = std::fs::read_to_string(root.join("docs/POLICY.md")).unwrap();
    let section = docs.split("## Explaining a decision").nth(1).unwrap();
    let block = section.split("```\n").nth(1).unwrap();
    // Commands start with `$ `, continue after a trailing `\`; output follows until the
    // next command.
    let mut runs: Vec<(String, String)> = Vec::new();
    let mut continued = false;
    for line in block.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            runs.push((cmd.trim_end_matches('\\').to_owned(), String::new()));
            continued = cmd.ends_with('\\');
        } else if continued {
            let (cmd, _) = runs.last_mut().unwrap();
            cmd.push_str(line.trim_end_matches('\\'));
            continued = line.ends_with('\\');
        } else if !line.is_empty() {
            let (_, out) = runs.last_mut().unwrap();
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(runs.len(), 2, "{block}");
    for (cmd, want) in runs {
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_eastwall"))
            .args(&args)
            .current_dir(root.join("policy/testdata"))
            .output()
            .unwrap();
        assert_eq!(ok(&out), want, "{cmd}");
    }
}

#[test]
fn check_validates_a_directory_file() {
    let d = tempfile::tempdir().unwrap();
    let good = write(
        d.path(),
        "directory.yaml",
        "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [finance-admins]\n  groups:\n    finance-admins: {memberOf: [finance]}\n",
    );
    assert_eq!(
        ok(&eastwall(&["policy", "check", &good])),
        "ok: 1 file(s), 0 rule(s)\n"
    );
    let cycle = write(
        d.path(),
        "cycle.yaml",
        "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  groups:\n    a: {memberOf: [b]}\n    b: {memberOf: [a]}\n",
    );
    let out = eastwall(&["policy", "check", &cycle]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{cycle}:6:20: groups form a cycle: a -> b -> a")),
        "{err}"
    );
}
