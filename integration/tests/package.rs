//! The Debian package as a platform team installs it: built with cargo-deb from the tests'
//! binary, installed with `dpkg -i` on this machine, its units accepted by `systemd-analyze
//! verify`, the node started with the unit's own `ExecStart` line (systemd is not PID 1
//! here) inside a network namespace of the test's own, a smoke test of what it serves, an
//! upgrade that keeps capture in place, and `dpkg -r` that leaves no capture behind. Run as
//! root; the package is purged at the end, also on failure.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use eastwall_integration::{require_root, run_ok};

const UNITS: [&str; 4] = [
    "eastwall-node.service",
    "eastwall-ca.service",
    "eastwall-collector.service",
    "eastwall-console.service",
];

/// Runs `args` inside network namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// The installed package, the node it runs and the namespace: all gone when dropped.
struct Installed {
    ns: String,
    node: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut n) = self.node.take() {
            let _ = n.kill();
            let _ = n.wait();
        }
        // Capture removal runs in the namespace the node captured in.
        let _ = in_ns(&self.ns, &["dpkg", "--purge", "eastwall"]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `GET path` from the node's admin endpoint inside `ns`: status line and body.
fn admin(ns: &str, path: &str) -> Option<(String, String)> {
    let path = path.to_owned();
    eastwall_lab::in_netns(ns, move || -> Option<(String, String)> {
        let mut s =
            TcpStream::connect_timeout(&"127.0.0.1:15000".parse().unwrap(), Duration::from_secs(1))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let (head, body) = resp.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_owned(), body.to_owned()))
    })
    .ok()
    .flatten()
}

/// The value of `key=` in a unit file's text.
fn unit_line(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_owned()
}

/// What capture leaves in `ns`: the node's nftables table and queue chain, its policy
/// routing rules.
fn capture_in(ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    let ruleset =
        String::from_utf8_lossy(&run_ok(&mut in_ns(ns, &["nft", "list", "ruleset"])).stdout)
            .to_lowercase();
    if ruleset.contains("eastwall") {
        found.push("nftables: a table or chain named eastwall".to_owned());
    }
    for family in ["-4", "-6"] {
        let rules = run_ok(&mut in_ns(ns, &["ip", family, "rule"])).stdout;
        if String::from_utf8_lossy(&rules).contains("0x1e570001") {
            found.push(format!("ip {family} rule for the capture mark"));
        }
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn the_debian_package_installs_runs_upgrades_and_removes_cleanly() {
    require_root();
    let root = workspace();
    run_ok(
        Command::new("bash")
            .arg(root.join("scripts/package-deb.sh"))
            .arg("--dev")
            .current_dir(&root),
    );
    let deb = std::fs::read_dir(root.join("target/debian"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in target/debian");
    let ns = format!("ewpkg-{}", std::process::id());
    run_ok(Command::new("ip").args(["netns", "add", &ns]));
    let mut installed = Installed {
        ns: ns.clone(),
        node: None,
    };
    run_ok(&mut in_ns(&ns, &["ip", "link", "set", "lo", "up"]));
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));

    // What the package put in place.
    for unit in UNITS {
        let path = format!("/lib/systemd/system/{unit}");
        run_ok(Command::new("systemd-analyze").args(["verify", &path]));
    }
    run_ok(Command::new("logrotate").args(["-d", "/etc/logrotate.d/eastwall"]));
    let registry = std::fs::read_to_string("/etc/eastwall/registry.yaml").unwrap();
    let host = String::from_utf8(run_ok(&mut Command::new("hostname")).stdout).unwrap();
    assert!(
        registry.contains(&format!("- {{name: {}}}", host.trim())),
        "{registry}"
    );
    for file in [
        "/usr/share/man/man1/eastwall-node.1.gz",
        "/usr/share/bash-completion/completions/eastwall",
        "/usr/share/zsh/vendor-completions/_eastwall",
        "/usr/lib/sysctl.d/60-eastwall.conf",
        "/etc/default/eastwall-ca",
    ] {
        assert!(Path::new(file).exists(), "{file}");
    }

    // The node, as the unit starts it: its check first, then the node, from the packaged
    // default configuration.
    let unit = std::fs::read_to_string("/lib/systemd/system/eastwall-node.service").unwrap();
    let check = unit_line(&unit, "ExecStartPre");
    run_ok(Command::new("sh").args(["-c", &check]));
    let start = unit_line(&unit, "ExecStart");
    let args: Vec<&str> = start.split_whitespace().collect();
    assert_eq!(args[0], "/usr/bin/eastwall");
    installed.node = Some(
        in_ns(&ns, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin(&ns, "/healthz").is_none_or(|(_, b)| b != "ok\n") {
        assert!(
            Instant::now() < deadline,
            "the packaged node is not healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = admin(&ns, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "eastwall_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("eastwall_policy_info{source=\"files\""),
        "{metrics}"
    );
    eastwall_integration::promtool_check_metrics(&metrics);
    assert!(!capture_in(&ns).is_empty(), "the node captures");

    // Stopped (SIGTERM, as systemd stops it): capture stays, failing closed.
    let mut node = installed.node.take().unwrap();
    run_ok(Command::new("kill").args(["-TERM", &node.id().to_string()]));
    assert!(node.wait().unwrap().success());
    assert!(!capture_in(&ns).is_empty(), "a stopped node keeps capture");
    // An upgrade (the same package again) keeps it too: the new node takes it over.
    run_ok(&mut in_ns(&ns, &["dpkg", "-i", deb.to_str().unwrap()]));
    assert!(!capture_in(&ns).is_empty(), "an upgrade keeps capture");
    // Removal takes it away, and purge the configuration.
    run_ok(&mut in_ns(&ns, &["dpkg", "-r", "eastwall"]));
    assert_eq!(capture_in(&ns), Vec::<String>::new());
    assert!(!Path::new("/usr/bin/eastwall").exists());
    run_ok(&mut in_ns(&ns, &["dpkg", "--purge", "eastwall"]));
    assert!(!Path::new("/etc/eastwall").exists());
}
