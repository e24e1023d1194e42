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
