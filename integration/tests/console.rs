//! The console in a real headless Chromium (WebDriver), over a real cloud: nodes on etcd
//! exporting to the collector, the console over both. The map shows the zones, apps and the
//! denied dev → prod edge; clicking it lists its flows and the deciding rule; the nodes page
//! shows both nodes on one version, then a drift when one stops; replay of a breaking
//! candidate shows what it breaks; anonymous and forged requests get nothing; a reader cannot
//! apply, an admin can (and the history says who); hostile labels stay text. Run as root.
//!
//! `EASTWALL_SCREENSHOTS=DIR` also saves the main pages as PNG (`scripts/console-screenshots.sh`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eastwall_integration::{Cloud, eastwall_bin, require_root};
use eastwall_lab::console::Console;
use eastwall_lab::etcd::Etcd;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - id: watch-dev-to-prod
          mode: monitor
          action: deny
          from: {zone: dev}
          to: {zone: prod}
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web, zone: prod}, to: {app: db}, ports: [5432]}
        - {id: never-used, action: allow, from: {app: db}, to: {app: web}, ports: [8080]}
"#;

/// What a hostile registry writer puts in a label: markup that would run if the page ever
/// took data as HTML.
const HOSTILE: &str = "<img src=x onerror=window.pwned=1><script>window.pwned=2</script>";

struct Scene {
    c: Cloud,
    etcd: Etcd,
    console: Console,
    _files: tempfile::TempDir,
}

fn run_eastwall(c: &Cloud, e: &Etcd, args: &[&str]) -> String {
    let admin = e.admin();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &c.lab.host("store").netns])
        .arg(eastwall_bin())
        .args(args)
        .env("EASTWALL_ETCD_ENDPOINTS", e.endpoints().join(","))
        .env("EASTWALL_ETCD_CACERT", e.ca_file())
        .env("EASTWALL_ETCD_CERT", &admin.cert)
        .env("EASTWALL_ETCD_KEY", &admin.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eastwall {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scene() -> Scene {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB", "store"],
        &[
            ("hostA", "web-dev", "web", "dev"),
            ("hostA", "web-prod", "web", "prod"),
            ("hostB", "db-prod", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("db-prod", &[5432]).unwrap();
    let store = c.lab.host("store").clone();
    let etcd = Etcd::start(
        &[(Some(store.netns.as_str()), store.addr.into())],
        "/eastwall/",
    )
    .unwrap();
    let files = tempfile::tempdir().unwrap();
    let registry = c.registry().replace(
        "{name: web-dev, ",
        &format!("{{name: web-dev, labels: {{note: \"{HOSTILE}\"}}, "),
    );
    assert_ne!(registry, c.registry());
    let (reg, pol) = (
        files.path().join("registry.yaml"),
        files.path().join("policy.yaml"),
    );
    std::fs::write(&reg, registry).unwrap();
    std::fs::write(&pol, POLICY).unwrap();
    run_eastwall(
        &c,
        &etcd,
        &[
            "apply",
            "-f",
            reg.to_str().unwrap(),
            "-f",
            pol.to_str().unwrap(),
            "-m",
            "zones and apps",
        ],
    );
    let mut console = Console::start(&c.lab, "store", &eastwall_bin()).unwrap();
    console
        .export_from(&mut c.lab, &["hostA", "hostB"])
        .unwrap();
    for host in ["hostA", "hostB"] {
        let node = etcd.add_node(host).unwrap();
        c.lab.set_node_store(Some(format!(
            "    endpoints: [{}]\n    caFile: {}\n    certFile: {}\n    keyFile: {}\n    stateDir: state\n",
            etcd.endpoints().join(", "),
            etcd.ca_file().display(),
            node.cert.display(),
            node.key.display()
        )));
        c.start_node(host, "");
    }
    console.start_console(&etcd).unwrap();
    Scene {
        c,
        etcd,
        console,
        _files: files,
    }
}

/// Runs `f` with a browser session in the console's namespace.
fn with_browser<T: Send + 'static>(
    s: &Scene,
    f: impl AsyncFnOnce(Client) -> T + Send + 'static,
) -> T {
    let browser =
        eastwall_lab::browser::Browser::start(s.console.netns(), s.console.spki()).unwrap();
    let netns = browser.netns().to_owned();
    let browser = std::sync::Arc::new(browser);
    let b = browser.clone();
    eastwall_lab::in_netns(&netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = b.session(1400, 1000).await.unwrap();
            f(client).await
        })
    })
    .unwrap()
}

async fn wait_text(c: &Client, css: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css}: waited for {want:?}, shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sign_in(c: &Client, url: &str, user: &str, password: &str) {
    c.goto(url).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#signin-user"))
        .await
        .unwrap();
    c.find(Locator::Css("#signin-user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Css("#signin-password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("#signin-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "#who", user).await;
}

/// `fetch` from the page: the status and JSON of a request (with the page's cookies).
async fn page_fetch(
    c: &Client,
    method: &str,
    path: &str,
    headers: Value,
    body: Option<Value>,
) -> (u64, Value) {
    let v = c
        .execute_async(
            "const [method, path, headers, body, done] = arguments;
             const init = {method, headers, credentials: 'same-origin'};
             if (body !== null) init.body = JSON.stringify(body);
             fetch(path, init).then(async (r) => {
               let j = null; try { j = await r.json(); } catch (_) {}
               done([r.status, j]);
             }, (e) => done([0, String(e)]));",
            vec![
                json!(method),
                json!(path),
                headers,
                body.unwrap_or(Value::Null),
            ],
        )
        .await
        .unwrap();
    (v[0].as_u64().unwrap_or(0), v[1].clone())
}

async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("EASTWALL_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

#[test]
fn the_console_shows_the_cloud_and_guards_its_changes() {
    if !eastwall_lab::browser::installed() {
        panic!("Chromium and ChromeDriver are needed: scripts/setup-debian.sh installs them");
    }
    let mut s = scene();
    // Traffic: prod's web reaches the database; dev's is denied (and the monitor rule says
    // it would deny it too).
    for _ in 0..3 {
        assert!(s.c.connect("web-prod", "db-prod", 5432).outcome.reached());
    }
    for _ in 0..2 {
        assert!(!s.c.connect("web-dev", "db-prod", 5432).outcome.reached());
    }
    let url = s.console.url();
    let users = s.console.users().to_vec();
    let (ada, rob) = (users[0].clone(), users[1].clone());
    assert_eq!((ada.role, rob.role), ("admin", "reader"));

    let u = url.clone();
    let (a, r) = (ada.clone(), rob.clone());
    with_browser(&s, async move |c: Client| {
        // Anonymous: the page asks to sign in, the API gives nothing.
        c.goto(&u).await.unwrap();
        c.wait()
            .for_element(Locator::Css("#signin-user"))
            .await
            .unwrap();
        for path in [
            "/api/topology",
            "/api/flows",
            "/api/nodes",
            "/api/rules",
            "/api/session",
        ] {
            let (status, body) = page_fetch(&c, "GET", path, json!({}), None).await;
            assert_eq!(status, 401, "{path}: {body}");
            assert!(body.get("workloads").is_none() && body.get("records").is_none());
        }
        let (status, _) = page_fetch(
            &c,
            "POST",
            "/api/apply",
            json!({"content-type": "application/json"}),
            Some(json!({"policy": "x", "base": 1})),
        )
        .await;
        assert_eq!(status, 401);
        // A wrong password is refused.
        c.find(Locator::Css("#signin-user"))
            .await
            .unwrap()
            .send_keys(&a.name)
            .await
            .unwrap();
        c.find(Locator::Css("#signin-password"))
            .await
            .unwrap()
            .send_keys("not-the-password")
            .await
            .unwrap();
        click(&c, "#signin-submit").await;
        wait_text(&c, "#signin-error", "wrong user name or password").await;

        // The admin signs in: the map shows the zones, the apps and the denied dev -> prod edge.
        sign_in(&c, &u, &a.name, &a.password).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = c
                .find(Locator::Css(
                    "#map-edges tr[data-src='web-dev'][data-dst='db-prod'][data-outcome='deny']",
                ))
                .await
                .is_ok();
            if found {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the denied dev -> prod edge never showed"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Records reach the collector within seconds; the map is asked again.
            c.execute(
                "document.getElementById('map-hours').dispatchEvent(new Event('change'))",
                vec![],
            )
            .await
            .unwrap();
        }
        let drawn = c
            .execute("return window.eastwallMap.nodes.filter(n => n.kind !== 'workload').map(n => n.kind + ':' + n.label)", vec![])
            .await
            .unwrap();
        for want in ["zone:dev", "zone:prod", "app:web", "app:db"] {
            assert!(
                drawn.as_array().unwrap().iter().any(|v| v == want),
                "{want} in {drawn}"
            );
        }
        screenshot(&c, "map").await;

        // Clicking the drawn edge (dev's web app -> prod's db app, denied) shows its flows
        // and the rule that decided them.
        let p = c
            .execute(
                "return window.eastwallMap.edgePoint('dev/web', 'prod/db', 'deny')",
                vec![],
            )
            .await
            .unwrap();
        assert!(p.is_object(), "no drawn edge dev/web -> prod/db: {p}");
        let (x, y) = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap());
        let clicked = c
            .execute(
                "const [x, y] = arguments; const el = document.elementFromPoint(x, y);
                 el.dispatchEvent(new MouseEvent('click', {clientX: x, clientY: y, bubbles: true}));
                 return el.id;",
                vec![json!(x), json!(y)],
            )
            .await
            .unwrap();
        assert_eq!(clicked, "map-canvas");
        wait_text(&c, "#edge-title", "web-dev → db-prod").await;
        wait_text(&c, "#map-detail", "default-deny").await;
        wait_text(&c, "#map-detail", "watch-dev-to-prod").await;
        let flows = wait_text(&c, "#edge-flows", "deny").await;
        assert!(flows.contains("default-deny"), "{flows}");
        screenshot(&c, "edge").await;

        // The workload's hostile label is shown as text, and nothing of it ran.
        let (st, topo) = page_fetch(&c, "GET", "/api/topology", json!({}), None).await;
        assert_eq!(st, 200);
        assert!(
            topo.to_string().contains("onerror"),
            "the label reached the page as data"
        );
        c.execute("document.getElementById('map-level').value = 'workload'; document.getElementById('map-level').dispatchEvent(new Event('change'))", vec![]).await.unwrap();
        let p = c
            .execute(
                "const n = window.eastwallMap.nodes.find(n => n.kind === 'workload' && n.key === 'web-dev');
                 const c = document.getElementById('map-canvas'); const r = c.getBoundingClientRect();
                 return n ? {x: r.left + (n.x + 7) * r.width / c.width, y: r.top + (n.y + 7) * r.height / c.height} : null;",
                vec![],
            )
            .await
            .unwrap();
        if !p.is_object() {
            let drawn = c
                .execute("return [document.getElementById('map-level').value, window.eastwallMap.nodes.map(n => n.kind + ':' + n.key)]", vec![])
                .await
                .unwrap();
            panic!("web-dev is not drawn at the workload level: {drawn}");
        }
        c.execute(
            "const [x, y] = arguments; document.getElementById('map-canvas').dispatchEvent(new MouseEvent('click', {clientX: x, clientY: y, bubbles: true}));",
            vec![p["x"].clone(), p["y"].clone()],
        )
        .await
        .unwrap();
        let panel = wait_text(&c, "#map-detail", "identity").await;
        assert!(panel.contains(HOSTILE), "{panel}");
        assert!(panel.contains("spiffe://"), "{panel}");
        // Its certificate's expiry, as its node reports it.
        assert!(
            panel.contains("certificate expires")
                && !panel.contains("no certificate")
                && !panel.contains("reports no status"),
            "{panel}"
        );
        let pwned = c.execute("return window.pwned === undefined && document.querySelectorAll('#map-detail img, #map-detail script').length === 0", vec![]).await.unwrap();
        assert_eq!(
            pwned,
            json!(true),
            "markup from a label ran or became elements"
        );

        // Flows: the observe filters as a table.
        click(&c, "button[data-view='flows']").await;
        c.find(Locator::Css("#flows-form input[name='from']"))
            .await
            .unwrap()
            .send_keys("zone:dev")
            .await
            .unwrap();
        click(&c, "#flows-form button[type='submit']").await;
        // The table is asked unfiltered when the tab opens, then with the filter.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let table = wait_text(&c, "#flows-table", "web-dev").await;
            let rows: Vec<&str> = table.lines().skip(1).collect();
            if !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.contains("web-dev") && r.contains("deny"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "from zone:dev: {table}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        screenshot(&c, "flows").await;

        // Rules: hits per rule and the rule never matched.
        click(&c, "button[data-view='rules']").await;
        wait_text(
            &c,
            "#rules-table tr[data-rule='never-used']",
            "never matched",
        )
        .await;
        let used = wait_text(&c, "#rules-table tr[data-rule='web-to-db']", "web-to-db").await;
        assert!(!used.contains("never matched"), "{used}");
        screenshot(&c, "rules").await;
        // Explain a pair of workloads.
        wait_text(&c, "#explain-from", "web-dev").await;
        c.execute(
            "document.getElementById('explain-from').value = 'web-dev';
             document.getElementById('explain-to').value = 'db-prod';
             document.querySelector('#explain-form input[name=port]').value = '5432';",
            vec![],
        )
        .await
        .unwrap();
        click(&c, "#explain-form button[type='submit']").await;
        let why = wait_text(&c, "#explain-out", "verdict: deny").await;
        assert!(why.contains("watch-dev-to-prod"), "{why}");

        // Recommend, from the collector's per-day aggregates: prod's web -> db is there.
        click(&c, "button[data-view='recommend']").await;
        click(&c, "#recommend-form button[type='submit']").await;
        wait_text(&c, "#recommend-status", "per-day aggregates").await;
        let candidate = c
            .execute("return document.getElementById('candidate').value", vec![])
            .await
            .unwrap();
        let candidate = candidate.as_str().unwrap_or_default();
        assert!(
            candidate.contains("from: {app: \"web\", zone: \"prod\"}")
                && candidate.contains("to: {app: \"db\", zone: \"prod\"}"),
            "{candidate}"
        );

        // Replay: the policy in force without web-to-db breaks prod's web -> db.
        click(&c, "#load-current").await;
        wait_text(&c, "#recommend-status", "the policy of version 1").await;
        let breaking = POLICY.replace(
            "        - {id: web-to-db, action: allow, from: {app: web, zone: prod}, to: {app: db}, ports: [5432]}\n",
            "",
        );
        c.execute(
            "document.getElementById('candidate').value = arguments[0]",
            vec![json!(breaking)],
        )
        .await
        .unwrap();
        click(&c, "#replay-run").await;
        let broken = wait_text(&c, ".newly-denied", "web-prod").await;
        assert!(
            broken.contains("web-to-db") && broken.contains("db-prod"),
            "{broken}"
        );
        wait_text(&c, "#replay-status", "allowed before and denied now").await;
        screenshot(&c, "replay").await;

        // Forged: with the session but without its CSRF token, or as a form.
        let (st, body) = page_fetch(
            &c,
            "POST",
            "/api/apply",
            json!({"content-type": "application/json"}),
            Some(json!({"policy": POLICY, "base": 1})),
        )
        .await;
        assert_eq!(st, 403, "{body}");
        let (st, _) = page_fetch(
            &c,
            "POST",
            "/api/apply",
            json!({"content-type": "application/x-www-form-urlencoded"}),
            Some(json!("policy=x")),
        )
        .await;
        assert_eq!(st, 403);
        let oversized = format!("/api/flows?from={}", "a".repeat(5000));
        let (st, body) = page_fetch(&c, "GET", &oversized, json!({}), None).await;
        assert_eq!(st, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("too large"),
            "{body}"
        );

        // The admin applies a change from the console, through the guarded path.
        let added = POLICY.replace(
            "        - {id: never-used,",
            "        - {id: console-added, action: allow, from: {app: web, zone: dev}, to: {app: db}, ports: [5432]}\n        - {id: never-used,",
        );
        c.execute(
            "document.getElementById('candidate').value = arguments[0]",
            vec![json!(added)],
        )
        .await
        .unwrap();
        c.find(Locator::Css("#apply-message"))
            .await
            .unwrap()
            .send_keys("dev's web may read prod's db")
            .await
            .unwrap();
        click(&c, "#apply-run").await;
        wait_text(
            &c,
            "#replay-status",
            "applied as version 2 by ada (console)",
        )
        .await;
        // The same candidate again, from the old version: a conflict, nothing written.
        let (st, body) = page_fetch(
            &c,
            "POST",
            "/api/apply",
            json!({"content-type": "application/json", "x-eastwall-csrf": c.execute("return session.csrf", vec![]).await.unwrap()}),
            Some(json!({"policy": added, "base": 1})),
        )
        .await;
        assert_eq!(st, 409, "{body}");

        // Sign out; the reader cannot apply.
        click(&c, "#signout").await;
        c.wait()
            .for_element(Locator::Css("#signin-user"))
            .await
            .unwrap();
        sign_in(&c, &u, &r.name, &r.password).await;
        click(&c, "button[data-view='recommend']").await;
        let disabled = c
            .find(Locator::Css("#apply-run"))
            .await
            .unwrap()
            .attr("disabled")
            .await
            .unwrap();
        assert!(disabled.is_some(), "a reader's apply button is enabled");
        let csrf = c.execute("return session.csrf", vec![]).await.unwrap();
        let (st, body) = page_fetch(
            &c,
            "POST",
            "/api/apply",
            json!({"content-type": "application/json", "x-eastwall-csrf": csrf}),
            Some(json!({"policy": POLICY, "base": 2})),
        )
        .await;
        assert_eq!(st, 403, "{body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains("only admins"),
            "{body}"
        );
        let _ = c.close().await;
    });

    // The console's apply is in the history with who did it, and the nodes enforce it.
    let history = run_eastwall(&s.c, &s.etcd, &["history"]);
    assert!(history.contains("ada (console)"), "{history}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.c.connect("web-dev", "db-prod", 5432).outcome.reached() {
        assert!(
            Instant::now() < deadline,
            "the console's apply was not enforced"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Nodes: both on version 2; then hostB stops and the page shows the drift.
    let u = url.clone();
    let a = ada.clone();
    with_browser(&s, async move |c: Client| {
        sign_in(&c, &u, &a.name, &a.password).await;
        click(&c, "button[data-view='nodes']").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = wait_text(&c, "#nodes-table", "hostA").await;
            let up = |n: &str| t.lines().any(|l| l.starts_with(n) && l.contains(" up 2 "));
            if up("hostA") && up("hostB") {
                break;
            }
            assert!(Instant::now() < deadline, "both nodes on version 2: {t}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            click(&c, "button[data-view='nodes']").await;
        }
        screenshot(&c, "nodes").await;
        let _ = c.close().await;
    });
    let node = s.c.started_node("hostB").cloned().unwrap();
    s.c.lab.stop_node(&node).unwrap();
    let u = url.clone();
    with_browser(&s, async move |c: Client| {
        sign_in(&c, &u, &ada.name, &ada.password).await;
        click(&c, "button[data-view='nodes']").await;
        // The status lease (10 s) expires.
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let drift = c
                .find(Locator::Css("#nodes-table tr.drift[data-node='hostB']"))
                .await
                .is_ok();
            if drift {
                break;
            }
            assert!(Instant::now() < deadline, "hostB's drift never showed");
            tokio::time::sleep(Duration::from_millis(1000)).await;
            click(&c, "button[data-view='nodes']").await;
        }
        wait_text(&c, "#nodes-table tr[data-node='hostB']", "DOWN").await;
        // hostA still enforces the latest; `store` runs no node (DOWN from the start).
        let row_a = c
            .find(Locator::Css("#nodes-table tr[data-node='hostA']"))
            .await
            .unwrap();
        assert_eq!(row_a.attr("class").await.unwrap().unwrap_or_default(), "");
        wait_text(&c, "#nodes-status", "3 nodes, 2 not enforcing it").await;
        let _ = c.close().await;
    });
}

/// `POST /api/login` as `user`, with curl from the console's host, verifying the console's
/// certificate: the status and the answer.
fn login(console: &Console, user: &str, password: &str) -> (u16, Value) {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            console.netns(),
            "curl",
            "-sS",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(console.dir().join("console.crt"))
        .args(["-H", "content-type: application/json", "-d"])
        .arg(json!({"user": user, "password": password}).to_string())
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}api/login", console.url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn directory_users_sign_in_with_their_password_and_their_groups_decide() {
    require_root();
    assert!(
        eastwall_lab::slapd::installed(),
        "slapd is needed: scripts/setup-debian.sh installs it"
    );
    let c = Cloud::new(&["store"], &[], "", POLICY);
    let store = c.lab.host("store").clone();
    let etcd = Etcd::start(
        &[(Some(store.netns.as_str()), store.addr.into())],
        "/eastwall/",
    )
    .unwrap();
    let slapd = eastwall_lab::slapd::Slapd::start(Some(&store.netns), store.addr.into()).unwrap();
    let ldap = format!(
        "{{url: \"{}\", starttls: true, caFile: {}, bindDn: \"{}\", bindPasswordFile: {}, userBase: \"ou=people,{}\"}}",
        slapd.ldap_url(),
        slapd.ca_file().display(),
        eastwall_lab::slapd::ADMIN_DN,
        slapd.admin_password_file().unwrap().display(),
        eastwall_lab::slapd::BASE
    );
    let mut console = Console::start(&c.lab, "store", &eastwall_bin()).unwrap();
    console
        .start_console_with(&etcd, Some(&ldap), &["finance"])
        .unwrap();
    // alice is in finance: a reader, checked by the directory.
    let (st, s) = login(&console, "alice", "alicepw");
    assert_eq!(st, 200, "{s}");
    assert_eq!(
        (s["role"].as_str(), s["source"].as_str()),
        (Some("reader"), Some("ldap"))
    );
    // Wrong, empty, unknown: the same refusal.
    for (user, pw) in [("alice", "wrong"), ("alice", ""), ("mallory", "alicepw")] {
        let (st, s) = login(&console, user, pw);
        assert_eq!(st, 401, "{user}/{pw}: {s}");
        assert_eq!(s["error"], "wrong user name or password", "{user}: {s}");
    }
    // bob's password is right, but hr is no console group.
    let (st, s) = login(&console, "bob", "bobpw");
    assert_eq!(st, 401, "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap_or("")
            .contains("may not use the console"),
        "{s}"
    );
    // The directory decides live: bob joins finance.
    slapd.add_member("finance", "bob").unwrap();
    let (st, s) = login(&console, "bob", "bobpw");
    assert_eq!((st, s["role"].as_str()), (200, Some("reader")), "{s}");
    // Local users still sign in beside the directory.
    let ada = console.users()[0].clone();
    let (st, s) = login(&console, &ada.name, &ada.password);
    assert_eq!((st, s["source"].as_str()), (200, Some("local")), "{s}");
}
