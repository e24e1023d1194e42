//! From flows to policy, end to end through the binary: traffic through two nodes under an
//! observe-first policy, `eastwall policy recommend` from their EVE files, `policy check` on
//! the result, and `policy replay` of the same flows against it (nothing changes) and
//! against a deliberately broken candidate (exactly the flows it breaks, exit 1). Run as
//! root.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use eastwall_integration::{Cloud, eastwall_bin, require_root};

/// Day one: dev and prod never talk; everything else is allowed and recorded.
const OBSERVE: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - {id: dev-not-prod, action: deny, from: {zone: dev}, to: {zone: prod}}
    - name: observe
      rules:
        - {id: observe-all, action: allow}
"#;

fn run(args: &[&str]) -> Output {
    std::process::Command::new(eastwall_bin())
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn recommend_then_replay_over_the_same_flows() {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "web", "web", "prod"),
            ("hostA", "web-dev", "web", "dev"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        OBSERVE,
    );
    c.lab.serve("db", &[5432, 6000]).unwrap();
    c.lab.serve_udp("db", &[514]).unwrap();
    c.start_nodes("");
    for _ in 0..3 {
        assert!(c.connect("web", "db", 5432).outcome.reached());
    }
    assert!(c.connect("web", "db", 6000).outcome.reached());
    assert!(!c.connect("web-dev", "db", 5432).outcome.reached());
    let udp = SocketAddr::new(c.lab.workload("db").addr.into(), 514);
    let p = c
        .lab
        .udp_exchange("web", udp, 2, Duration::from_millis(500));
    assert_eq!(p.answers.len(), 2);
    // The nodes stop: every record is in their files (UDP sessions end, logs flush).
    let logs: Vec<String> = ["hostA", "hostB"]
        .iter()
        .map(|h| {
            let n = c.node(h).clone();
            c.lab.stop_node(&n).unwrap();
            n.flow_log.display().to_string()
        })
        .collect();
    let d = tempfile::tempdir().unwrap();
    let reg = d.path().join("registry.yaml");
    std::fs::write(&reg, c.registry()).unwrap();
    let reg = reg.display().to_string();
    let rec = d.path().join("recommended.yaml").display().to_string();

    let mut args = vec!["policy", "recommend", "--registry", &reg, "-o", &rec];
    args.extend(logs.iter().map(String::as_str));
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    let yaml = std::fs::read_to_string(&rec).unwrap();
    assert!(
        yaml.contains("from: {app: \"web\", zone: \"prod\"}"),
        "{yaml}"
    );
    assert!(
        yaml.contains("5432, 6000, {port: 514, protocol: UDP}"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("zone: \"dev\""),
        "what was denied stays denied:\n{yaml}"
    );
    let out = run(&["policy", "check", &reg, &rec]);
    assert!(out.status.success(), "{}", text(&out));

    // Replayed against itself: nothing changes (the denied flow stays denied by default).
    let mut args = vec!["policy", "replay", "--registry", &reg, "--policy", &rec];
    args.extend(logs.iter().map(String::as_str));
    let out = run(&args);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{yaml}");
    assert!(
        t.contains("0 newly denied, 0 newly allowed, 0 undetermined"),
        "{t}"
    );

    // A candidate without port 5432: exactly the three connections to it break.
    let broken = d.path().join("broken.yaml");
    std::fs::write(&broken, yaml.replace("5432, ", "")).unwrap();
    let broken = broken.display().to_string();
    let mut args = vec!["policy", "replay", "--registry", &reg, "--policy", &broken];
    args.extend(logs.iter().map(String::as_str));
    let out = run(&args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(" 3 newly denied, 0 newly allowed"), "{t}");
    assert!(t.contains("web -> db TCP/5432"), "{t}");
    assert_eq!(t.matches("e.g.").count(), 3, "{t}");
}
