//! `eastwall demo`, the README's first command, as a user runs it: every verdict matches,
//! and with etcd installed the nodes follow the central store and enforce a change applied
//! there. Run as root.
#![allow(clippy::unwrap_used)]

use eastwall_integration::{eastwall_bin, require_root};

#[test]
fn the_demo_runs_and_every_verdict_matches() {
    require_root();
    let out = std::process::Command::new(eastwall_bin())
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    if eastwall_lab::slapd::find_program("etcd").is_some() {
        assert!(
            stdout.contains("web-dev -> db-dev:22  before: denied  after: allowed"),
            "{stdout}"
        );
        let up2 = stdout
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("host") && l.contains(" up ") && l.contains(" 2 ")
            })
            .count();
        assert_eq!(up2, 2, "{stdout}");
    }
}
