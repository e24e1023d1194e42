//! `eastwall demo`: a small private cloud in namespaces, two eastwall nodes, traffic, and a
//! table of what was allowed and denied and why.
//!
//! The `eastwall-demo` binary runs it; `eastwall demo` execs that binary from beside itself
//! with [`EASTWALL_BIN_ENV`] set to its own path, and the demo starts its nodes with it.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};

use crate::{Lab, NodeHandle, Outcome, in_netns};

/// The environment variable naming the `eastwall` binary the demo runs its nodes with.
pub const EASTWALL_BIN_ENV: &str = "EASTWALL_BIN";

/// The `eastwall` binary to run: `env` (the value of [`EASTWALL_BIN_ENV`]) if set and not
/// empty, else the `eastwall` file beside `own_exe` (the demo's own executable); `is_file`
/// tells whether a path is there. An error says which was looked for and how to fix it.
pub fn find_eastwall(
    env: Option<&OsStr>,
    own_exe: &Path,
    is_file: impl Fn(&Path) -> bool,
) -> anyhow::Result<PathBuf> {
    if let Some(bin) = env.filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if !is_file(&bin) {
            bail!(
                "{EASTWALL_BIN_ENV} is {}, which is not a file: point it to the eastwall binary",
                bin.display()
            );
        }
        return Ok(bin);
    }
    let bin = own_exe.with_file_name("eastwall");
    if !is_file(&bin) {
        bail!(
            "no eastwall binary: {EASTWALL_BIN_ENV} is not set and {} does not exist (run `eastwall demo`, or build it with `cargo build -p eastwall-node --bin eastwall`)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The demo's registry: two hosts, web and db apps in dev and prod.
pub const REGISTRY: &str = r#"apiVersion: eastwall.dev/v1
kind: Registry
metadata: {name: demo}
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.77.0.1]}
    - {name: hostB, addresses: [10.77.0.2]}
  workloads:
    - {name: web-dev,  node: hostA, addresses: [10.77.1.2], app: web, zone: dev}
    - {name: web-prod, node: hostA, addresses: [10.77.1.3], app: web, zone: prod}
    - {name: api-prod, node: hostA, addresses: [10.77.1.4], app: api, zone: prod}
    - {name: db-dev,   node: hostB, addresses: [10.77.2.2], app: db,  zone: dev}
    - {name: db-prod,  node: hostB, addresses: [10.77.2.3], app: db,  zone: prod, labels: {tier: data}}
    - {name: desk-alice,  node: hostA, addresses: [10.77.1.5], app: desktop, zone: corp, user: alice}
    - {name: desk-bob,    node: hostA, addresses: [10.77.1.6], app: desktop, zone: corp, user: bob}
    - {name: finance-api, node: hostB, addresses: [10.77.2.4], app: finance-api, zone: corp}
    - {name: hr-app,      node: hostB, addresses: [10.77.2.5], app: hr-app, zone: corp}
"#;

/// The demo's directory: alice is in finance (through finance-admins), bob in hr.
pub const DIRECTORY: &str = r#"apiVersion: eastwall.dev/v1
kind: Directory
spec:
  users:
    alice: [finance-admins]
    bob: [hr]
  groups:
    finance-admins: {memberOf: [finance]}
"#;

/// The demo's IDS rules (Suricata syntax): what the IPS looks for in allowed traffic.
pub const IDS_RULES: &str = r#"# eastwall demo rules
alert http any any -> any any (msg:"SQL injection attempt in the URI (UNION SELECT)"; flow:established,to_server; http.uri; content:"union"; nocase; content:"select"; nocase; distance:0; classtype:web-application-attack; sid:9000001; rev:1;)
alert http any any -> any any (msg:"Path traversal in the URI"; flow:established,to_server; http.uri.raw; content:"../"; classtype:web-application-attack; sid:9000002; rev:1;)
alert http any any -> any any (msg:"Scanner user agent (sqlmap)"; flow:established,to_server; http.user_agent; content:"sqlmap"; nocase; classtype:web-application-attack; sid:9000003; rev:1;)
"#;

/// The demo's policy: zones first, then the apps.
pub const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
metadata: {name: demo}
spec:
  idsProfiles:
    - name: web-guard
      mode: prevent
      classtypes: [web-application-attack]
  sections:
    - name: zones
      rules:
        - id: dev-not-prod
          description: dev and prod never talk
          action: deny
          from: {zone: dev}
          to: {zone: prod}
        - id: prod-not-dev
          action: deny
          from: {zone: prod}
          to: {zone: dev}
    - name: audit
      rules:
        - id: audit-dev-db
          description: about to close dev's database; see who would be cut off
          mode: monitor
          action: deny
          from: {zone: dev}
          to: {app: db}
    - name: identity-firewall
      rules:
        - id: finance-uses-finance-api
          description: members of finance may read and write the finance API, nothing else
          action: allow
          from: {group: finance}
          to:
            app: finance-api
            http:
              - methods: [GET, POST]
                paths: ["/api/*"]
          ports: [443]
          ids: web-guard
        - id: hr-uses-hr-app
          action: allow
          from: {group: hr}
          to: {app: hr-app}
          ports: [443]
    - name: apps
      rules:
        - id: web-to-db
          action: allow
          from: {app: web}
          to: {app: db}
          ports: [5432]
        - id: web-to-api
          action: allow
          from: {app: web}
          to: {app: api}
          ports: ["8080-8081"]
        - id: web-logs-to-db
          description: syslog over UDP
          action: allow
          from: {app: web}
          to: {app: db}
          ports: [{port: 514, protocol: UDP}]
        - id: corp-names-only
          description: prod resolves names under corp.example, nothing else
          action: allow
          from: {zone: prod}
          to: {app: db, dns: {names: ["*.corp.example"]}}
          ports: [{port: 53, protocol: UDP}, 53]
        - id: ping-in-prod
          action: allow
          from: {zone: prod}
          to: {zone: prod}
          ports: [{protocol: ICMP, icmpType: 8}]
"#;

struct Scene {
    from: &'static str,
    to: &'static str,
    port: u16,
    allowed: bool,
}

const SCENES: &[Scene] = &[
    Scene {
        from: "web-prod",
        to: "db-prod",
        port: 5432,
        allowed: true,
    },
    Scene {
        from: "web-prod",
        to: "db-prod",
        port: 22,
        allowed: false,
    },
    Scene {
        from: "web-dev",
        to: "db-dev",
        port: 5432,
        allowed: true,
    },
    Scene {
        from: "web-dev",
        to: "db-prod",
        port: 5432,
        allowed: false,
    },
    Scene {
        from: "web-prod",
        to: "api-prod",
        port: 8080,
        allowed: true,
    },
    Scene {
        from: "web-dev",
        to: "api-prod",
        port: 8080,
        allowed: false,
    },
    Scene {
        from: "db-prod",
        to: "web-prod",
        port: 8080,
        allowed: false,
    },
    Scene {
        from: "desk-bob",
        to: "finance-api",
        port: 443,
        allowed: false,
    },
    Scene {
        from: "desk-bob",
        to: "hr-app",
        port: 443,
        allowed: true,
    },
];

/// Runs the demo, starting nodes with the `eastwall` binary at `exe`; returns whether every
/// verdict matched the policy.
pub fn run(exe: &Path, keep: bool) -> anyhow::Result<bool> {
    // With --keep the demo waits for Ctrl-C and still tears down. Block the signals before
    // any thread starts so that every thread inherits the mask and `wait` receives them;
    // child processes start with an empty mask.
    let blocked = if keep {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.thread_block()?;
        Some(set)
    } else {
        None
    };
    let mut lab = Lab::new()?;
    println!("eastwall demo: building a private cloud in namespaces ...");
    // A CA for the trust domain: every workload gets a SPIFFE certificate, and traffic
    // between hosts travels in the mTLS tunnel.
    lab.enable_identity("corp.example")?;
    lab.add_host("hostA")?;
    lab.add_host("hostB")?;
    for (host, wl) in [
        ("hostA", "web-dev"),
        ("hostA", "web-prod"),
        ("hostA", "api-prod"),
        ("hostB", "db-dev"),
        ("hostB", "db-prod"),
        ("hostA", "desk-alice"),
        ("hostA", "desk-bob"),
        ("hostB", "finance-api"),
        ("hostB", "hr-app"),
    ] {
        let w = lab.add_workload(host, wl)?;
        println!("  {wl:<11} on {host}  {}", w.addr);
    }
    for wl in ["web-dev", "web-prod", "api-prod"] {
        lab.serve(wl, &[8080, 8081])?;
    }
    for wl in ["db-dev", "db-prod"] {
        lab.serve(wl, &[5432, 22])?;
        lab.serve_udp(wl, &[514])?;
    }
    // A real DNS server (dnsmasq) on db-prod that knows a corp name and an outside one: only
    // the policy keeps the second from being asked.
    let api_prod = lab.workload("api-prod").addr;
    lab.serve_dns(
        "db-prod",
        &[
            ("api.corp.example", api_prod),
            ("exfil.evil.example", api_prod),
        ],
        false,
    )?;
    lab.serve_http("finance-api", 443)?;
    lab.serve("hr-app", &[443])?;
    // Users' groups: from a real OpenLDAP on a third host when slapd is installed, else from
    // a static directory file on each host.
    let slapd = if crate::slapd::installed() {
        let host = lab.add_host("dirhost")?;
        let slapd = crate::slapd::Slapd::start(Some(&host.netns), host.addr.into())?;
        println!(
            "  directory   on dirhost {}  OpenLDAP (slapd), StartTLS: alice in finance, bob in hr",
            host.addr
        );
        lab.add_node_spec(&format!(
            "  directory:\n    refreshSecs: 2\n    ldap:\n      url: \"{}\"\n      starttls: true\n      caFile: {}\n      bindDn: \"{}\"\n      bindPasswordFile: {}\n      userBase: \"ou=people,{}\"\n",
            slapd.ldap_url(),
            slapd.ca_file().display(),
            crate::slapd::ADMIN_DN,
            slapd.admin_password_file()?.display(),
            crate::slapd::BASE,
        ));
        Some(slapd)
    } else {
        for host in ["hostA", "hostB"] {
            let dir = lab.dir().join(host);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("directory.yaml"), DIRECTORY)?;
        }
        lab.add_node_spec("  directory:\n    file: directory.yaml\n");
        println!(
            "  directory   a static file (slapd is not installed): alice in finance, bob in hr"
        );
        None
    };
    // Central management: with etcd installed, the registry, the policy and the IPS rules
    // are applied once to a store on a host of its own, and both nodes follow it. Without
    // it, each node reads files (the rules below).
    let central = if crate::slapd::find_program("etcd").is_some() {
        let c = Central::start(&mut lab, exe)?;
        println!(
            "  store       on store   {}  etcd (mTLS, roles): `eastwall apply` wrote version 1 (registry, policy, IPS rules); the nodes follow it",
            c.etcd.endpoints().join(",")
        );
        Some(c)
    } else {
        for host in ["hostA", "hostB"] {
            let dir = lab.dir().join(host);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("ids.rules"), IDS_RULES)?;
        }
        lab.add_node_spec("  ids:\n    rules: [ids.rules]\n");
        println!("  store       none (etcd is not installed): each node reads its own files");
        None
    };
    // UDP sessions end (and leave their records) a second after their last datagram.
    lab.add_node_spec("  udp:\n    idleSecs: 1\n");
    // With --keep and a store: the flow collector on the store's host (the nodes export
    // their records to it), and later the console over both.
    let mut console = match &central {
        Some(_) if keep => {
            let c = crate::console::Console::start(&lab, "store", exe)?;
            c.export_from(&mut lab, &["hostA", "hostB"])?;
            Some(c)
        }
        _ => None,
    };
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for h in ["hostA", "hostB"] {
        if let Some(c) = &central {
            lab.set_node_store(Some(c.node_store(h)?));
        }
        nodes.push(lab.start_node(exe, h, REGISTRY, POLICY, "")?);
    }
    println!(
        "  eastwall nodes running on hostA and hostB (default deny; mTLS tunnel on port 15008: HTTP/2 over TCP, QUIC over UDP where TCP is blocked)\n"
    );

    let mut ok = true;
    let mut rows = Vec::new();
    for s in SCENES {
        let dst = SocketAddr::new(lab.workload(s.to).addr.into(), s.port);
        let probe = lab.connect(s.from, dst, Duration::from_secs(3));
        let got = probe.outcome.reached();
        ok &= got == s.allowed;
        // Why: the flow record of the node that decided (the source's).
        let src_node = nodes
            .iter()
            .find(|n| n.host == lab.workload(s.from).host)
            .context("source node")?;
        let flow = probe
            .local
            .and_then(|local| find_flow(&lab, src_node, local.port()));
        // Cross-host traffic: the path and the identity the destination node proved.
        let (via, identity) = match &flow {
            Some(f) if f["eastwall"]["tunnel"].is_object() => {
                let dst_node = nodes
                    .iter()
                    .find(|n| n.host == lab.workload(s.to).host)
                    .context("destination node")?;
                let proven = probe
                    .local
                    .and_then(|local| find_flow(&lab, dst_node, local.port()))
                    .and_then(|d| d["eastwall"]["src"]["identity"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "-".into());
                (
                    format!(
                        "tunnel/{}, {}",
                        f["eastwall"]["tunnel"]["transport"].as_str().unwrap_or("?"),
                        f["eastwall"]["tunnel"]["status"].as_str().unwrap_or("?")
                    ),
                    proven,
                )
            }
            Some(f) => {
                let via = if f["eastwall"]["policy"]["verdict"] != "allow" {
                    format!("refused at {}", src_node.host)
                } else if lab.workload(s.from).host == lab.workload(s.to).host {
                    "same host".to_owned()
                } else {
                    "direct".to_owned()
                };
                (
                    via,
                    f["eastwall"]["src"]["identity"]
                        .as_str()
                        .unwrap_or("-")
                        .to_owned(),
                )
            }
            None => ("?".to_owned(), "-".to_owned()),
        };
        let (rule, monitor) = flow
            .as_ref()
            .map(|f| {
                let p = &f["eastwall"]["policy"];
                let mon: Vec<String> = p["monitor"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|m| {
                                format!(
                                    "{} would {}",
                                    m["rule"].as_str().unwrap_or("?"),
                                    m["would"].as_str().unwrap_or("?")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (p["rule"].as_str().unwrap_or("?").to_owned(), mon.join(", "))
            })
            .unwrap_or_else(|| ("?".into(), String::new()));
        rows.push([
            s.from.to_owned(),
            format!("{}:{}", s.to, s.port),
            if s.allowed { "allow" } else { "deny" }.to_owned(),
            match &probe.outcome {
                Outcome::Reached(_) => "allowed".to_owned(),
                Outcome::Reset => "denied (reset)".to_owned(),
                Outcome::Timeout => "dropped".to_owned(),
                Outcome::Failed(e) => format!("failed: {e}"),
            },
            rule,
            via,
            identity,
            monitor,
            if got == s.allowed { "ok" } else { "MISMATCH" }.to_owned(),
        ]);
    }
    print_table(
        &[
            "FROM",
            "TO",
            "POLICY SAYS",
            "RESULT",
            "RULE",
            "VIA",
            "SOURCE IDENTITY (proven)",
            "MONITOR",
            "",
        ],
        &rows,
    );

    ok &= protocol_scene(&lab, &nodes)?;
    ok &= http_scene(&lab)?;

    if let Some(slapd) = &slapd {
        // The directory decides group membership live: bob joins finance in LDAP, and the
        // nodes see it at their next refresh (refreshSecs: 2), without a restart.
        slapd.add_member("finance", "bob")?;
        let start = std::time::Instant::now();
        let mut reached = false;
        while !reached && start.elapsed() < Duration::from_secs(4) {
            std::thread::sleep(Duration::from_millis(200));
            reached = http_session(&lab, "desk-bob", &[("GET", "/api/accounts")])
                .is_ok_and(|a| a.first().is_some_and(|(code, _)| *code == 200));
        }
        ok &= reached;
        println!(
            "\nbob joins finance in LDAP (ldapmodify on dirhost): desk-bob GET finance-api:443/api/accounts {} ({:.1} s later, no restart)",
            if reached {
                "200"
            } else {
                "STILL DENIED (MISMATCH)"
            },
            start.elapsed().as_secs_f64()
        );
    }

    ok &= flows_scene(exe, &nodes)?;

    if let Some(c) = &central {
        ok &= c.change_centrally(&lab)?;
    }

    // The console, reachable from this machine on a loopback port forwarded into the store's
    // namespace.
    let mut forward = None;
    if let (Some(con), Some(c)) = (&mut console, &central) {
        con.start_console(&c.etcd)?;
        let (port, f) = crate::console::forward_loopback(con)?;
        forward = Some(f);
        println!(
            "\nThe console: https://127.0.0.1:{port}/  (the lab's own certificate: your browser asks you to accept it)"
        );
        for u in con.users() {
            println!("  sign in as {} / {}  ({})", u.name, u.password, u.role);
        }
    }
    if keep {
        println!("\nThe lab stays up until you press Ctrl-C. Look around:");
        print!("{}", lab.describe());
        if let Some(c) = &central {
            println!("{}", c.describe(exe));
        }
        for n in &nodes {
            println!(
                "  node {:<6} flows: {}\n               admin: ip netns exec {} curl -s localhost:15000/metrics",
                n.host,
                n.flow_log.display(),
                n.netns
            );
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if let Some(signals) = blocked {
            let _ = signals.wait();
        }
    }
    println!("\ntearing down ...");
    drop(forward);
    drop(console);
    Ok(ok)
}

/// The central store of the demo: etcd on host `store`, with the registry, policy and IPS
/// rules applied as version 1.
struct Central {
    etcd: crate::etcd::Etcd,
    exe: PathBuf,
    netns: String,
    files: tempfile::TempDir,
}

/// The change the demo applies centrally: web-dev may reach db-dev over SSH.
const DEV_SSH: &str = r#"        - id: dev-web-ssh-to-dev-db
          description: added centrally, enforced by both nodes
          action: allow
          from: {zone: dev, app: web}
          to: {zone: dev, app: db}
          ports: [22]
"#;

impl Central {
    fn start(lab: &mut Lab, exe: &Path) -> anyhow::Result<Central> {
        let host = lab.add_host("store")?;
        let etcd =
            crate::etcd::Etcd::start(&[(Some(&host.netns), host.addr.into())], "/eastwall/")?;
        let files = tempfile::tempdir()?;
        let c = Central {
            etcd,
            exe: exe.to_owned(),
            netns: host.netns.clone(),
            files,
        };
        for (name, text) in [
            ("registry.yaml", REGISTRY),
            ("policy.yaml", POLICY),
            ("demo-ips.rules", IDS_RULES),
        ] {
            std::fs::write(c.files.path().join(name), text)?;
        }
        let dir = c.files.path().display().to_string();
        c.eastwall(&[
            "apply",
            "-f",
            &dir,
            "-m",
            "the demo's zones, apps and IPS rules",
        ])?;
        Ok(c)
    }

    /// The `store:` section of `host`'s node (its own certificate and role).
    fn node_store(&self, host: &str) -> anyhow::Result<String> {
        let cert = self.etcd.add_node(host)?;
        Ok(format!(
            "    endpoints: [{}]\n    caFile: {}\n    certFile: {}\n    keyFile: {}\n    stateDir: state\n",
            self.etcd.endpoints().join(", "),
            self.etcd.ca_file().display(),
            cert.cert.display(),
            cert.key.display()
        ))
    }

    /// The environment that points `eastwall` at the store as its admin.
    fn env(&self) -> Vec<(&'static str, String)> {
        let admin = self.etcd.admin();
        vec![
            ("EASTWALL_ETCD_ENDPOINTS", self.etcd.endpoints().join(",")),
            (
                "EASTWALL_ETCD_CACERT",
                self.etcd.ca_file().display().to_string(),
            ),
            ("EASTWALL_ETCD_CERT", admin.cert.display().to_string()),
            ("EASTWALL_ETCD_KEY", admin.key.display().to_string()),
        ]
    }

    /// `eastwall ARGS` as the store's admin, from the store's host; its output.
    fn eastwall(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(&self.exe)
            .args(args)
            .envs(self.env())
            .output()
            .context("running eastwall")?;
        if !out.status.success() {
            bail!(
                "eastwall {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One policy change applied centrally: web-dev -> db-dev:22, denied before, allowed by
    /// both nodes after (hostA decides as the source, hostB again behind the tunnel); then
    /// `eastwall status`.
    fn change_centrally(&self, lab: &Lab) -> anyhow::Result<bool> {
        let dst = SocketAddr::new(lab.workload("db-dev").addr.into(), 22);
        let before = lab
            .connect("web-dev", dst, Duration::from_secs(3))
            .outcome
            .reached();
        let changed = POLICY.replace(
            "    - name: apps\n      rules:\n",
            &format!("    - name: apps\n      rules:\n{DEV_SSH}"),
        );
        let file = self.files.path().join("policy.yaml");
        std::fs::write(&file, changed)?;
        let started = std::time::Instant::now();
        self.eastwall(&[
            "apply",
            "-f",
            &file.display().to_string(),
            "-m",
            "let dev's web servers reach dev's database over SSH",
        ])?;
        let mut after = false;
        while !after && started.elapsed() < Duration::from_secs(10) {
            after = lab
                .connect("web-dev", dst, Duration::from_secs(3))
                .outcome
                .reached();
            if !after {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let took = started.elapsed();
        println!(
            "\nCentral management: `eastwall apply -f policy.yaml` adds rule dev-web-ssh-to-dev-db (version 2)"
        );
        println!(
            "  web-dev -> db-dev:22  before: {}  after: {}  ({:.2} s after the apply started; hostA and hostB both decide it)",
            if before { "allowed" } else { "denied" },
            if after {
                "allowed"
            } else {
                "STILL DENIED (MISMATCH)"
            },
            took.as_secs_f64()
        );
        // Both nodes report version 2 within a few seconds (they write their status every 3 s).
        let mut status = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < deadline {
            status = self.eastwall(&["status"])?;
            if status.matches("\tup\t2\t").count() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let reported = status.matches("\tup\t2\t").count() == 2;
        println!("  eastwall status:");
        for line in status.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() > 7 {
                println!(
                    "    {:<8} {:<15} {:<8} {:<20} {:<6} {}",
                    cols[0], cols[1], cols[2], cols[3], cols[6], cols[7]
                );
            } else {
                println!("    {line}");
            }
        }
        Ok(!before && after && reported)
    }

    fn describe(&self, exe: &Path) -> String {
        let env: Vec<String> = self.env().iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "  central store: ip netns exec {} env {} {} status   (also: get policy, history, apply -f ...)",
            self.netns,
            env.join(" "),
            exe.display()
        )
    }
}

/// From flows to policy: what the nodes recorded, seen with `eastwall observe`, a policy
/// recommended from it for the finance app, and a candidate replayed against it.
fn flows_scene(exe: &Path, nodes: &[NodeHandle]) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("registry.yaml");
    std::fs::write(&registry, REGISTRY)?;
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| n.flow_log.display().to_string())
        .collect();
    let run = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        std::process::Command::new(exe)
            .args(args)
            .args(&logs)
            .output()
            .context("running eastwall")
    };
    let observe = run(&[
        "observe",
        "--to",
        "finance-api",
        "--type",
        "http",
        "--last",
        "4",
    ])?;
    println!("\nFrom flows to policy: `eastwall observe --to finance-api --type http --last 4`");
    for l in String::from_utf8_lossy(&observe.stdout).lines() {
        println!("  {l}");
    }
    let reg = registry.display().to_string();
    let recommended = dir.path().join("finance.yaml");
    let rec = recommended.display().to_string();
    let out = run(&[
        "policy",
        "recommend",
        "--registry",
        &reg,
        "--app",
        "finance-api",
        "-o",
        &rec,
    ])?;
    if !out.status.success() {
        bail!("policy recommend: {}", String::from_utf8_lossy(&out.stderr));
    }
    let yaml = std::fs::read_to_string(&recommended)?;
    println!("\n`eastwall policy recommend --app finance-api` (from both nodes' records):");
    for l in yaml.lines().filter(|l| {
        let t = l.trim_start();
        t.starts_with('#') && t.contains("evidence")
            || t.starts_with("- id")
            || t.starts_with("from")
            || t.starts_with("to")
            || t.starts_with("ports")
    }) {
        println!("  {l}");
    }
    // A candidate that forgets HR: replay says what it would break, and fails.
    let candidate = dir.path().join("candidate.yaml");
    let mut text = POLICY.to_owned();
    let hr = "        - id: hr-uses-hr-app\n          action: allow\n          from: {group: hr}\n          to: {app: hr-app}\n          ports: [443]\n";
    if !text.contains(hr) {
        bail!("the demo policy no longer has the HR rule this scene removes");
    }
    text = text.replace(hr, "");
    std::fs::write(&candidate, text)?;
    let cand = candidate.display().to_string();
    let out = run(&["policy", "replay", "--registry", &reg, "--policy", &cand])?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!(
        "\n`eastwall policy replay` of a candidate without rule hr-uses-hr-app (exit {}):",
        out.status.code().unwrap_or(-1)
    );
    for l in report.lines().take(8) {
        println!("  {l}");
    }
    let ok = out.status.code() == Some(1) && report.contains("hr-uses-hr-app -> default-deny");
    if !ok {
        println!("  MISMATCH: the replay should have flagged bob's HR connection");
    }
    Ok(ok && yaml.contains("app: \"finance-api\""))
}

/// L7: alice's requests to the finance API on one keep-alive connection, each decided on its
/// own by hostB (the destination, behind the tunnel).
fn http_scene(lab: &Lab) -> anyhow::Result<bool> {
    let requests: [(&str, &str, u16); 5] = [
        ("GET", "/api/accounts", 200),
        ("POST", "/api/transfers", 200),
        ("DELETE", "/api/accounts/7", 403),
        ("GET", "/api/../admin", 403),
        // Allowed by the policy, stopped by the IPS (profile web-guard, prevent).
        ("GET", "/api/accounts?id=1%20UNION%20SELECT%20password", 403),
    ];
    let plain: Vec<(&str, &str)> = requests.iter().map(|(m, p, _)| (*m, *p)).collect();
    let answers = http_session(lab, "desk-alice", &plain)?;
    println!(
        "\nL7 + IPS: desk-alice -> finance-api:443, one keep-alive HTTP connection, each request decided and inspected by hostB:"
    );
    let mut ok = answers.len() == requests.len();
    for ((method, path, want), (code, body)) in requests.iter().zip(&answers) {
        ok &= code == want;
        let why = if *code == 403 {
            format!("  <- {}", body.lines().next().unwrap_or_default())
        } else {
            String::new()
        };
        println!(
            "  {method:<6} {path:<50} {code}{}{why}",
            if code == want { "" } else { "  MISMATCH" }
        );
    }
    Ok(ok)
}

/// From `from`, sends `requests` over one keep-alive HTTP/1.1 connection to finance-api:443;
/// returns each status and body.
fn http_session(
    lab: &Lab,
    from: &str,
    requests: &[(&str, &str)],
) -> anyhow::Result<Vec<(u16, String)>> {
    let dst = SocketAddr::new(lab.workload("finance-api").addr.into(), 443);
    let requests: Vec<(String, String)> = requests
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let netns = lab.workload(from).netns.clone();
    in_netns(&netns, move || -> anyhow::Result<Vec<(u16, String)>> {
        use std::io::{BufRead, BufReader, Read, Write};
        let s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let mut out = Vec::new();
        for (method, path) in &requests {
            write!(
                w,
                "{method} {path} HTTP/1.1\r\nHost: finance.corp.example\r\nContent-Length: 0\r\n\r\n"
            )?;
            let mut status = String::new();
            r.read_line(&mut status)?;
            let code: u16 = status.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)?;
            out.push((code, String::from_utf8_lossy(&body).trim().to_owned()));
        }
        Ok(out)
    })?
}

/// Every protocol under default deny: UDP sessions and ICMP echo, allowed where a rule says
/// so and dropped across the zones.
fn protocol_scene(lab: &Lab, nodes: &[NodeHandle]) -> anyhow::Result<bool> {
    println!("\nEvery protocol under default deny (UDP sessions, ICMP echo, DNS names):");
    let node_of = |wl: &str| nodes.iter().find(|n| n.host == lab.workload(wl).host);
    let mut ok = true;
    let mut rows = Vec::new();
    let wait = Duration::from_millis(700);
    for (from, to, allowed) in [("web-prod", "db-prod", true), ("web-dev", "db-prod", false)] {
        let dst = SocketAddr::new(lab.workload(to).addr.into(), 514);
        let p = lab.udp_exchange(from, dst, 3, wait);
        let got = p.answers.len() == p.sent;
        ok &= got == allowed && (allowed || p.answers.is_empty());
        // The session's record is written once it is idle (a second here).
        let rule = node_of(from)
            .and_then(|n| {
                // find_flow waits a second each time.
                (0..3)
                    .find_map(|_| find_flow(lab, n, p.local.port()).filter(|f| f["proto"] == "UDP"))
            })
            .and_then(|f| f["eastwall"]["policy"]["rule"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        rows.push([
            from.to_owned(),
            format!("{to}:514/udp"),
            if allowed { "allow" } else { "deny" }.to_owned(),
            format!("{} of {} answered", p.answers.len(), p.sent),
            rule,
            if got == allowed { "ok" } else { "MISMATCH" }.to_owned(),
        ]);
    }
    for (from, to, allowed) in [
        ("web-prod", "api-prod", true),
        ("web-dev", "api-prod", false),
    ] {
        let dst = lab.workload(to).addr;
        let got = lab.icmp_echo(from, dst, 56, false, wait);
        ok &= got == allowed;
        let src = lab.workload(from).addr.to_string();
        let rule = node_of(from)
            .and_then(|n| {
                let body = lab.admin_get(n, "/flows").ok()?;
                let flows: serde_json::Value = serde_json::from_str(&body).ok()?;
                flows.as_array()?.iter().rev().find_map(|f| {
                    (f["proto"] == "ICMP" && f["src_ip"] == src.as_str())
                        .then(|| f["eastwall"]["policy"]["rule"].as_str().map(str::to_owned))
                        .flatten()
                })
            })
            .unwrap_or_else(|| "?".into());
        rows.push([
            from.to_owned(),
            format!("{to} (ICMP echo)"),
            if allowed { "allow" } else { "deny" }.to_owned(),
            if got { "reply" } else { "no reply" }.to_owned(),
            rule,
            if got == allowed { "ok" } else { "MISMATCH" }.to_owned(),
        ]);
    }
    for (name, allowed) in [("api.corp.example", true), ("exfil.evil.example", false)] {
        let (from, to) = ("web-prod", "db-prod");
        let server = lab.workload(to).addr;
        let a = lab.dig(from, server, name, false, Duration::from_secs(2));
        let status = a.status.clone().unwrap_or_else(|| "no answer".into());
        let got = !a.addrs.is_empty();
        ok &= got == allowed;
        // The query's decision is in its `dns` event, on the node that decided (db-prod's).
        let rule = node_of(to)
            .and_then(|n| dns_rule(n, name))
            .unwrap_or_else(|| "?".into());
        rows.push([
            from.to_owned(),
            format!("{to}:53 DNS {name}"),
            if allowed { "allow" } else { "deny" }.to_owned(),
            status,
            rule,
            if got == allowed { "ok" } else { "MISMATCH" }.to_owned(),
        ]);
    }
    print_table(&["FROM", "TO", "POLICY SAYS", "RESULT", "RULE", ""], &rows);
    Ok(ok)
}

/// The rule that decided the last DNS request for `name` on `node` (from its EVE log).
fn dns_rule(node: &NodeHandle, name: &str) -> Option<String> {
    for _ in 0..50 {
        let log = std::fs::read_to_string(&node.flow_log).unwrap_or_default();
        let found = log.lines().rev().find_map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).ok()?;
            (e["event_type"] == "dns"
                && e["dns"]["type"] == "request"
                && e["dns"]["queries"][0]["rrname"] == name)
                .then(|| e["eastwall"]["policy"]["rule"].as_str().map(str::to_owned))
                .flatten()
        });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn find_flow(lab: &Lab, node: &NodeHandle, src_port: u16) -> Option<serde_json::Value> {
    // The record is written when the connection closes; give it a moment.
    for _ in 0..50 {
        if let Ok(body) = lab.admin_get(node, "/flows")
            && let Ok(serde_json::Value::Array(flows)) =
                serde_json::from_str::<serde_json::Value>(&body)
            && let Some(f) = flows.into_iter().rev().find(|f| f["src_port"] == src_port)
        {
            return Some(f);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let mut w = head.map(|h| h.len());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "/opt/ew/target/debug/eastwall-demo";

    #[test]
    fn eastwall_bin_comes_from_the_environment_when_set() {
        let bin = find_eastwall(Some(OsStr::new("/usr/bin/eastwall")), Path::new(OWN), |p| {
            p == Path::new("/usr/bin/eastwall")
        })
        .unwrap();
        assert_eq!(bin, Path::new("/usr/bin/eastwall"));
    }

    #[test]
    fn eastwall_bin_is_beside_the_demo_otherwise() {
        for env in [None, Some(OsStr::new(""))] {
            let bin = find_eastwall(env, Path::new(OWN), |p| {
                p == Path::new("/opt/ew/target/debug/eastwall")
            })
            .unwrap();
            assert_eq!(bin, Path::new("/opt/ew/target/debug/eastwall"));
        }
    }

    #[test]
    fn a_missing_eastwall_bin_is_a_clear_error() {
        let e = find_eastwall(
            Some(OsStr::new("/nowhere/eastwall")),
            Path::new(OWN),
            |_| false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("EASTWALL_BIN is /nowhere/eastwall"), "{e}");
        // A set but wrong variable is not silently replaced by the binary beside the demo.
        let e = find_eastwall(Some(OsStr::new("/nowhere/eastwall")), Path::new(OWN), |p| {
            p == Path::new("/opt/ew/target/debug/eastwall")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a file"), "{e}");
        let e = find_eastwall(None, Path::new(OWN), |_| false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("EASTWALL_BIN is not set and /opt/ew/target/debug/eastwall does not exist"),
            "{e}"
        );
    }
}
