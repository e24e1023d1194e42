//! A private cloud on one machine, for the demo and the end-to-end tests: hosts and workloads
//! as Linux namespaces joined by veth pairs.
//!
//! ```text
//!                 lan namespace (bridge br0, 10.77.0.0/24)
//!        ┌───────────────┴───────────────┐
//!   host 1 (10.77.0.1)               host 2 (10.77.0.2)          hosts: network namespaces
//!     │ w1 ─ eth0 wl (10.77.1.2)       │ w1 ─ eth0 wl (10.77.2.2)  workloads: net+mount+pid+uts
//!     │ w2 ─ eth0 wl (10.77.1.3)       …                          namespaces (containers without
//! ```                                                              an image), hostname = name
//! Each workload has its own veth to its host (routed /32, the host side holds 10.77.H.1), so
//! workload-to-workload traffic on one host is routed, and captured, like any other.
//!
//! Names are unique per process (`ew<pid>x<n>…`), so tests can build labs concurrently; a lab
//! removes its processes and namespaces on drop, also while unwinding from a panic, and a new
//! lab first removes namespaces left by processes that no longer exist.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::http_server;

static SEQ: AtomicU32 = AtomicU32::new(0);
const NETNS_DIR: &str = "/var/run/netns";

/// A host: a network namespace with an uplink on the lab's LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// Name in the registry (`hostA`).
    pub name: String,
    /// Network namespace name.
    pub netns: String,
    /// Index (1-based) deciding its addresses.
    pub index: u8,
    /// Address on the LAN.
    pub addr: Ipv4Addr,
    workloads: u8,
}

/// A workload: its own network, mount, PID and UTS namespaces behind a veth to its host.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Name in the registry.
    pub name: String,
    /// Network namespace name (also usable with `ip -n`).
    pub netns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Host it lives on.
    pub host: String,
    /// Host-side interface name (what the node captures on).
    pub host_if: String,
    /// PID (outside view) of the workload's init, for `nsenter -t PID -n -m -p -u`.
    pub pid: u32,
}

/// A running eastwall node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    /// Host it runs on.
    pub host: String,
    /// Host namespace.
    pub netns: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its flow log.
    pub flow_log: PathBuf,
    /// Its process id.
    pub pid: u32,
    /// Admin endpoint address inside the host namespace.
    pub admin: SocketAddr,
    /// The bearer token its admin endpoint wants, if any.
    pub admin_token: Option<String>,
}

/// The lab: everything it created, removed on drop.
pub struct Lab {
    prefix: String,
    lan: String,
    namespaces: Vec<String>,
    /// Processes started by the lab, with whether SIGTERM ends them (a workload's init,
    /// PID 1 of its namespace, ignores it).
    children: Vec<(Child, bool)>,
    hosts: Vec<Host>,
    workloads: Vec<Workload>,
    dir: PathBuf,
    ca: Option<eastwall_certs::Ca>,
    /// Extra top-level `spec` lines for every node config (two-space indented).
    node_spec: String,
    /// Nodes get their workloads' certificates from this CA service: (URL, `certSecs`).
    ca_service: Option<(String, Option<u64>)>,
    /// The open-file limit (soft, hard) nodes start with; `None`: the lab's own.
    node_open_files: Option<(u64, u64)>,
    node_admin_token: Option<String>,
    node_drain_secs: Option<u64>,
    node_bootstrap_token: Option<String>,
    /// `runtime.workerThreads` of nodes started from now on.
    node_workers: usize,
    /// `runtime.logFormat` of nodes started from now on (`None`: the default).
    node_log_format: Option<&'static str>,
    /// Nodes take their registry and policy from the central store: the `store:` section's
    /// lines (four-space indented), instead of `registry:` and `policy:` files.
    node_store: Option<String>,
}

/// A running `eastwall ca serve`.
#[derive(Debug, Clone)]
pub struct CaHandle {
    /// Host namespace it runs in.
    pub netns: String,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// `https://ADDR`.
    pub url: String,
    /// The CA folder (`ca.crt`, `ca.key`).
    pub dir: PathBuf,
    /// The registry file it authorizes with (rewrite it to move workloads); `None`: it
    /// follows the central store.
    pub registry: Option<PathBuf>,
    /// Its log.
    pub log: PathBuf,
    /// Its process id.
    pub pid: u32,
}

/// Port of the lab's CA service.
pub const LAB_CA_PORT: u16 = 15009;

/// How long certificates the lab issues live.
pub const LAB_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

impl Lab {
    /// Creates an empty lab with its LAN.
    pub fn new() -> anyhow::Result<Lab> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("the lab needs root (network namespaces, nftables)");
        }
        sweep_stale();
        let prefix = format!(
            "ew{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("eastwall-{prefix}"));
        fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            lan: format!("{prefix}-lan"),
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            hosts: Vec::new(),
            workloads: Vec::new(),
            dir,
            ca: None,
            node_spec: String::new(),
            ca_service: None,
            node_open_files: None,
            node_admin_token: None,
            node_drain_secs: Some(0),
            node_bootstrap_token: None,
            node_workers: 1,
            node_log_format: None,
            node_store: None,
        };
        let lan = lab.lan.clone();
        lab.add_netns(&lan)?;
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The folder for this lab's files (configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a CA for `trust_domain`: nodes started from now on get certificates for their
    /// workloads and run the tunnel.
    pub fn enable_identity(&mut self, trust_domain: &str) -> anyhow::Result<()> {
        let ca =
            eastwall_certs::Ca::generate(trust_domain, Duration::from_secs(10 * 365 * 24 * 3600))
                .map_err(|e| anyhow::anyhow!("creating the lab CA: {e}"))?;
        fs::write(self.dir.join("ca.pem"), ca.cert_pem())?;
        self.ca = Some(ca);
        Ok(())
    }

    /// The lab's CA, if identity is enabled.
    pub fn ca(&self) -> Option<&eastwall_certs::Ca> {
        self.ca.as_ref()
    }

    /// Starts `eastwall ca serve` (the binary at `exe`) in `host`'s namespace on
    /// `<host address>:15009` with the lab's CA (see [`Lab::enable_identity`]) and `registry`,
    /// signing for `cert_secs`; waits until it accepts connections. Nodes started afterwards
    /// get their workloads' certificates from it (asking for `node_cert_secs` if given) with a
    /// node certificate the lab issues. The lab ends it on drop.
    pub fn start_ca(
        &mut self,
        exe: &Path,
        host: &str,
        registry: &str,
        cert_secs: u64,
        node_cert_secs: Option<u64>,
    ) -> anyhow::Result<CaHandle> {
        let dir = self.dir.join("ca");
        fs::create_dir_all(&dir)?;
        let registry_path = dir.join("registry.yaml");
        fs::write(&registry_path, registry)?;
        let args = vec!["--registry".to_owned(), registry_path.display().to_string()];
        let mut h = self.spawn_ca(exe, host, &args, cert_secs, node_cert_secs)?;
        h.registry = Some(registry_path);
        Ok(h)
    }

    /// Like [`Lab::start_ca`], with the registry of the central store that `store_args`
    /// (`--endpoints ... --cacert ... --cert ... --key ...`) reach.
    pub fn start_ca_on_store(
        &mut self,
        exe: &Path,
        host: &str,
        store_args: &[String],
        cert_secs: u64,
        node_cert_secs: Option<u64>,
    ) -> anyhow::Result<CaHandle> {
        self.spawn_ca(exe, host, store_args, cert_secs, node_cert_secs)
    }

    fn spawn_ca(
        &mut self,
        exe: &Path,
        host: &str,
        registry_args: &[String],
        cert_secs: u64,
        node_cert_secs: Option<u64>,
    ) -> anyhow::Result<CaHandle> {
        let ca = self
            .ca
            .as_ref()
            .context("enable_identity first: the CA service serves the lab's CA")?;
        let h = self.host(host).clone();
        let dir = self.dir.join("ca");
        fs::create_dir_all(&dir)?;
        if !dir.join("ca.crt").exists() {
            fs::write(dir.join("ca.crt"), ca.cert_pem())?;
            fs::write(dir.join("ca.key"), ca.key_pem())?;
        }
        let addr = SocketAddr::new(h.addr.into(), LAB_CA_PORT);
        let log = dir.join("ca.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(exe)
            .args(["ca", "serve", "--dir"])
            .arg(&dir)
            .args(registry_args)
            .args(["--listen", &addr.to_string()])
            .args(["--cert-secs", &cert_secs.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting eastwall ca serve")?;
        let pid = child.id();
        self.children.push((child, true));
        let url = format!("https://{addr}");
        let handle = CaHandle {
            netns: h.netns.clone(),
            addr,
            url: url.clone(),
            dir,
            registry: None,
            log: log.clone(),
            pid,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((c, _)) = self.children.iter_mut().find(|(c, _)| c.id() == pid)
                && let Some(status) = c.try_wait()?
            {
                let log = fs::read_to_string(&log).unwrap_or_default();
                bail!("eastwall ca serve exited ({status}):\n{log}");
            }
            let up = in_netns(&h.netns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if up {
                break;
            }
            if Instant::now() > deadline {
                bail!("eastwall ca serve did not listen on {addr} within 30 s");
            }
            thread::sleep(Duration::from_millis(25));
        }
        self.ca_service = Some((url, node_cert_secs));
        Ok(handle)
    }

    /// Stops the CA service (SIGTERM) and waits for it. Nodes keep using the CA mode.
    pub fn stop_ca(&mut self, ca: &CaHandle) {
        self.stop_pid(ca.pid);
    }

    /// The node certificate and key files the lab gives `host`'s node in CA mode.
    pub fn node_cert_files(&self, host: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join(host);
        (dir.join("node.crt"), dir.join("node.key"))
    }

    /// The folder a node's workload certificates go to (`<workload>.crt`, `<workload>.key`);
    /// files already there when the node starts are kept, so a test can plant its own.
    pub fn cert_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host).join("certs")
    }

    /// Adds top-level `spec` lines (two-space indented YAML) to the configs of nodes started
    /// from now on, e.g. a `directory:` section; relative paths are against the host's folder.
    pub fn add_node_spec(&mut self, lines: &str) {
        self.node_spec.push_str(lines);
    }

    /// Nodes started from now on take their registry and policy from the central store:
    /// `lines` is the body of their `store:` section (four-space indented); `None`: files.
    pub fn set_node_store(&mut self, lines: Option<String>) {
        self.node_store = lines;
    }

    /// Nodes started from now on run `workers` runtime threads (default 1: the lab's hosts
    /// share a small machine).
    pub fn set_node_workers(&mut self, workers: usize) {
        self.node_workers = workers;
    }

    /// Nodes started from now on write their log as `format` (`text` or `json`).
    pub fn set_node_log_format(&mut self, format: &'static str) {
        self.node_log_format = Some(format);
    }

    /// Starts nodes from now on with this open-file limit (soft, hard), as a service
    /// manager's `LimitNOFILE` would.
    pub fn set_node_open_files(&mut self, soft: u64, hard: u64) {
        self.node_open_files = Some((soft, hard));
    }

    /// Nodes started from now on open their admin endpoint on every address with bearer
    /// token `token` (in the host's `admin.token`), and a metrics listener on port 15020.
    pub fn set_node_admin_token(&mut self, token: &str) {
        self.node_admin_token = Some(token.to_owned());
    }

    /// Nodes started from now on drain for `secs` when stopped (default 0: a test's nodes
    /// stop at once, ending what they carry, each connection with its record).
    pub fn set_node_drain_secs(&mut self, secs: u64) {
        self.node_drain_secs = Some(secs);
    }

    /// Nodes started from now on get no `drainSecs` in their config: for a build older than
    /// the setting (the benchmark's `--before`), which stops at once anyway.
    pub fn leave_node_drain_unset(&mut self) {
        self.node_drain_secs = None;
    }

    /// Nodes started from now on with the CA service get no node certificate from the lab:
    /// they enroll with bootstrap token `token` (`None`: the lab issues it, as before).
    pub fn set_node_bootstrap_token(&mut self, token: Option<&str>) {
        self.node_bootstrap_token = token.map(str::to_owned);
    }

    /// Forgets the `spec` lines added so far (for nodes started from now on).
    pub fn clear_node_spec(&mut self) {
        self.node_spec.clear();
    }

    /// The LAN's namespace (its bridge `br0` carries all traffic between hosts).
    pub fn lan_netns(&self) -> &str {
        &self.lan
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The workloads.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload called `name`.
    pub fn workload(&self, name: &str) -> &Workload {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("no workload {name} in the lab"))
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    fn add_netns(&mut self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Adds a host on the LAN with address 10.77.0.N.
    pub fn add_host(&mut self, name: &str) -> anyhow::Result<Host> {
        let index = u8::try_from(self.hosts.len() + 1).context("too many hosts")?;
        let netns = format!("{}-{name}", self.prefix);
        self.add_netns(&netns)?;
        let addr = Ipv4Addr::new(10, 77, 0, index);
        let lan_if = format!("h{index}");
        ip(&[
            "link", "add", &lan_if, "netns", &self.lan, "type", "veth", "peer", "name", "eth0",
            "netns", &netns,
        ])?;
        ip(&[
            "-n", &self.lan, "link", "set", &lan_if, "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        sysctl(&netns, "net.ipv4.ip_forward", "1")?;
        // Routes to the workloads of the hosts already there, and theirs to this one's.
        for other in &self.hosts {
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                &format!("10.77.{}.0/24", other.index),
                "via",
                &other.addr.to_string(),
            ])?;
            ip(&[
                "-n",
                &other.netns,
                "route",
                "add",
                &format!("10.77.{index}.0/24"),
                "via",
                &addr.to_string(),
            ])?;
        }
        let h = Host {
            name: name.to_owned(),
            netns,
            index,
            addr,
            workloads: 0,
        };
        self.hosts.push(h.clone());
        Ok(h)
    }

    /// Adds a workload on `host` with address 10.77.H.(N+1), as a container: its own network,
    /// mount, PID and UTS namespaces, hostname set to `name`.
    pub fn add_workload(&mut self, host: &str, name: &str) -> anyhow::Result<Workload> {
        let hi = self
            .hosts
            .iter()
            .position(|h| h.name == host)
            .with_context(|| format!("no host {host}"))?;
        self.hosts[hi].workloads += 1;
        let h = self.hosts[hi].clone();
        let n = h.workloads;
        let addr = Ipv4Addr::new(10, 77, h.index, n + 1);
        let gw = Ipv4Addr::new(10, 77, h.index, 1);
        let netns = format!("{}-{name}", self.prefix);
        let mut child = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--pid",
                "--uts",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
            ])
            .arg(format!("hostname {name} && exec sleep infinity"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the workload's namespaces (is util-linux installed?)")?;
        let pid = match wait_for_child_pid(child.id()) {
            Ok(p) => p,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        self.children.push((child, false));
        ip(&["netns", "attach", &netns, &pid.to_string()])?;
        self.namespaces.push(netns.clone());
        let host_if = format!("w{n}");
        ip(&[
            "link", "add", &host_if, "netns", &h.netns, "type", "veth", "peer", "name", "eth0",
            "netns", &netns,
        ])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            &gw.to_string(),
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &h.netns,
            "addr",
            "add",
            &format!("{gw}/32"),
            "dev",
            &host_if,
        ])?;
        ip(&["-n", &h.netns, "link", "set", &host_if, "up"])?;
        ip(&[
            "-n",
            &h.netns,
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            &host_if,
        ])?;
        let w = Workload {
            name: name.to_owned(),
            netns,
            addr,
            host: host.to_owned(),
            host_if,
            pid,
        };
        self.workloads.push(w.clone());
        Ok(w)
    }

    /// Starts `eastwall node` (the binary at `exe`) on `host` with the given registry and
    /// policy texts, and waits until its admin endpoint answers.
    pub fn start_node(
        &mut self,
        exe: &Path,
        host: &str,
        registry: &str,
        policy: &str,
        extra_capture: &str,
    ) -> anyhow::Result<NodeHandle> {
        let h = self.host(host).clone();
        let dir = self.dir.join(host);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("registry.yaml"), registry)?;
        fs::write(dir.join("policy.yaml"), policy)?;
        let ifaces: Vec<String> = self
            .workloads
            .iter()
            .filter(|w| w.host == host)
            .map(|w| format!("\"{}\"", w.host_if))
            .collect();
        let config = dir.join("node.yaml");
        let flow_log = dir.join("flows.json");
        let identity = match (&self.ca, &self.ca_service) {
            (None, _) => String::new(),
            (Some(ca), Some((url, cert_secs))) => {
                // The node identity the CA service authorizes: the registry's for `host`.
                let reg = eastwall_policy::Registry::parse("registry.yaml", registry)
                    .map_err(|d| anyhow::anyhow!("{d}"))?;
                let id = &reg
                    .node(host)
                    .with_context(|| format!("host {host} is not a node of the registry"))?
                    .identity;
                let bootstrap = match &self.node_bootstrap_token {
                    Some(token) => {
                        fs::write(dir.join("bootstrap.token"), format!("{token}\n"))?;
                        ", bootstrapToken: bootstrap.token".to_owned()
                    }
                    None => {
                        let issued = ca
                            .issue(id, LAB_CERT_TTL)
                            .map_err(|e| anyhow::anyhow!("issuing for node {host}: {e}"))?;
                        let (crt, key) = self.node_cert_files(host);
                        fs::write(crt, issued.cert_pem)?;
                        fs::write(key, issued.key_pem)?;
                        String::new()
                    }
                };
                let secs = cert_secs
                    .map(|s| format!(", certSecs: {s}"))
                    .unwrap_or_default();
                format!(
                    "  identity:\n    trustBundle: ../ca.pem\n    ca: {{url: \"{url}\", nodeCert: node.crt, nodeKey: node.key{secs}{bootstrap}}}\n"
                )
            }
            (Some(ca), None) => {
                let certs = self.cert_dir(host);
                fs::create_dir_all(&certs)?;
                let reg = eastwall_policy::Registry::parse("registry.yaml", registry)
                    .map_err(|d| anyhow::anyhow!("{d}"))?;
                for w in reg.workloads_on(host) {
                    let (crt, key) = (
                        certs.join(format!("{}.crt", w.name)),
                        certs.join(format!("{}.key", w.name)),
                    );
                    if crt.exists() {
                        continue;
                    }
                    let issued = ca
                        .issue(&w.identity, LAB_CERT_TTL)
                        .map_err(|e| anyhow::anyhow!("issuing for {}: {e}", w.name))?;
                    fs::write(crt, issued.cert_pem)?;
                    fs::write(key, issued.key_pem)?;
                }
                "  identity:\n    trustBundle: ../ca.pem\n    certDir: certs\n    reloadSecs: 1\n"
                    .to_owned()
            }
        };
        let admin = match &self.node_admin_token {
            Some(token) => {
                fs::write(dir.join("admin.token"), format!("{token}\n"))?;
                "  admin: {listen: \"0.0.0.0:15000\", tokenFile: admin.token}\n  metrics: {listen: \"0.0.0.0:15020\"}\n"
            }
            None => "",
        };
        let rules = match &self.node_store {
            None => "  registry: registry.yaml\n  policy: policy.yaml\n".to_owned(),
            Some(lines) => format!("  store:\n{lines}"),
        };
        fs::write(
            &config,
            format!(
                "apiVersion: eastwall.dev/v1\nkind: NodeConfig\nspec:\n  nodeName: {host}\n{rules}  capture:\n    interfaces: [{}]\n{extra_capture}{identity}{admin}  flowLog:\n    path: flows.json\n  runtime:\n    workerThreads: {}\n{}{}{}",
                ifaces.join(", "),
                self.node_workers,
                self.node_drain_secs
                    .map(|s| format!("    drainSecs: {s}\n"))
                    .unwrap_or_default(),
                self.node_log_format
                    .map(|f| format!("    logFormat: {f}\n"))
                    .unwrap_or_default(),
                self.node_spec
            ),
        )?;
        let log = fs::File::create(dir.join("node.log"))?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &h.netns]);
        if let Some((soft, hard)) = self.node_open_files {
            // prlimit execs the node: the PID stays the node's.
            command
                .arg("prlimit")
                .arg(format!("--nofile={soft}:{hard}"));
        }
        let child = command
            .arg(exe)
            .args(["node", "--config"])
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting eastwall node")?;
        let pid = child.id();
        self.children.push((child, true));
        let admin: SocketAddr = "127.0.0.1:15000".parse()?;
        let node = NodeHandle {
            host: host.to_owned(),
            netns: h.netns.clone(),
            config,
            flow_log,
            pid,
            admin,
            admin_token: self.node_admin_token.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((c, _)) = self.children.iter_mut().find(|(c, _)| c.id() == pid)
                && let Some(status) = c.try_wait()?
            {
                let log = fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                bail!("eastwall node on {host} exited ({status}):\n{log}");
            }
            if self
                .admin_get(&node, "/healthz")
                .is_ok_and(|b| b.starts_with("ok"))
            {
                return Ok(node);
            }
            if Instant::now() > deadline {
                bail!("eastwall node on {host} did not become healthy within 20 s");
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops a node (SIGTERM) and waits for it; its capture table stays installed.
    pub fn stop_node(&mut self, node: &NodeHandle) -> anyhow::Result<()> {
        self.stop_pid(node.pid);
        Ok(())
    }

    /// Sends a node SIGTERM, as a service manager stopping it, without waiting: it drains
    /// (see [`Lab::wait_node`]).
    pub fn sigterm_node(&self, node: &NodeHandle) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(node.pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Waits up to `within` for a node to exit: its exit status, or `None` while it runs.
    pub fn wait_node(
        &mut self,
        node: &NodeHandle,
        within: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            let Some(i) = self.children.iter().position(|(c, _)| c.id() == node.pid) else {
                bail!(
                    "node {} (pid {}) is not a process of this lab",
                    node.host,
                    node.pid
                );
            };
            if let Some(status) = self.children[i].0.try_wait()? {
                self.children.remove(i);
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills a node (SIGKILL: no cleanup, as a crash) and waits for it.
    pub fn kill_node(&mut self, node: &NodeHandle) -> anyhow::Result<()> {
        if let Some(i) = self.children.iter().position(|(c, _)| c.id() == node.pid) {
            let (mut c, _) = self.children.remove(i);
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Ends a process the lab started (SIGTERM, then SIGKILL after 5 s) and waits for it.
    fn stop_pid(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|(c, _)| c.id() == pid) {
            let (mut c, _) = self.children.remove(i);
            terminate(&mut c);
        }
    }

    /// GETs `path` from the node's admin endpoint (inside its host namespace).
    pub fn admin_get(&self, node: &NodeHandle, path: &str) -> anyhow::Result<String> {
        let addr = node.admin;
        let path = path.to_owned();
        let auth = node
            .admin_token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        in_netns(&node.netns, move || -> anyhow::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n"
            )?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            let (head, body) = resp
                .split_once("\r\n\r\n")
                .context("malformed admin response")?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!(
                    "admin {path}: {}: {}",
                    head.lines().next().unwrap_or(""),
                    body.trim()
                );
            }
            Ok(body.to_owned())
        })?
    }

    /// Starts a TCP service in `workload` on each of `ports`: it greets every client with
    /// `hello from NAME: you are PEER, I am LOCAL` and then echoes what it receives.
    pub fn serve(&mut self, workload: &str, ports: &[u16]) -> anyhow::Result<()> {
        let w = self.workload(workload).clone();
        for &port in ports {
            let name = w.name.clone();
            let addr = SocketAddr::new(IpAddr::V4(w.addr), port);
            let (tx, rx) = std::sync::mpsc::channel();
            let netns = w.netns.clone();
            thread::Builder::new()
                .name(format!("svc-{name}-{port}"))
                .spawn(move || {
                    if let Err(e) = enter_netns(&netns) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    let l = match TcpListener::bind(addr) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(()));
                    for s in l.incoming() {
                        let Ok(mut s) = s else { continue };
                        let name = name.clone();
                        thread::spawn(move || {
                            let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                            let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
                            if writeln!(s, "hello from {name}: you are {peer}, I am {local}")
                                .is_err()
                            {
                                return;
                            }
                            let mut buf = [0u8; 16 * 1024];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                })?;
            rx.recv_timeout(Duration::from_secs(5))
                .context("service did not start")??;
        }
        Ok(())
    }

    /// Serves UDP on each of `ports` of `workload`: every datagram is answered with
    /// `from NAME: you are PEER: ` and the datagram itself. The returned count is of the
    /// datagrams the services received.
    pub fn serve_udp(&mut self, workload: &str, ports: &[u16]) -> anyhow::Result<Arc<AtomicU64>> {
        let w = self.workload(workload).clone();
        let received = Arc::new(AtomicU64::new(0));
        for &port in ports {
            let received = received.clone();
            let name = w.name.clone();
            let addr = SocketAddr::new(IpAddr::V4(w.addr), port);
            let (tx, rx) = std::sync::mpsc::channel();
            let netns = w.netns.clone();
            thread::Builder::new()
                .name(format!("udp-{name}-{port}"))
                .spawn(move || {
                    if let Err(e) = enter_netns(&netns) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    let s = match std::net::UdpSocket::bind(addr) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(()));
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, peer)) = s.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::Relaxed);
                        let mut answer = format!("from {name}: you are {peer}: ").into_bytes();
                        answer.extend_from_slice(&buf[..n]);
                        let _ = s.send_to(&answer, peer);
                    }
                })?;
            rx.recv_timeout(Duration::from_secs(5))
                .context("UDP service did not start")??;
        }
        Ok(received)
    }

    /// Starts a real DNS server (dnsmasq) in `workload` on port 53, UDP and TCP, answering
    /// `names` (exact names, A records) and NXDOMAIN for other names under their domains; no
    /// upstream. With `log_queries`, every query it receives is logged to the file returned
    /// (its log in any case).
    pub fn serve_dns(
        &mut self,
        workload: &str,
        names: &[(&str, Ipv4Addr)],
        log_queries: bool,
    ) -> anyhow::Result<PathBuf> {
        let w = self.workload(workload).clone();
        let log = self.dir.join(format!("dnsmasq-{workload}.log"));
        let exe = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let mut args: Vec<String> = [
            exe,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--pid-file=",
            "--user=root",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if log_queries {
            args.push("--log-queries".into());
        }
        args.push(format!("--listen-address={}", w.addr));
        args.push(format!("--log-facility={}", log.display()));
        let mut domains: Vec<&str> = Vec::new();
        for (name, addr) in names {
            args.push(format!("--host-record={name},{addr}"));
            let domain = name.split_once('.').map_or(*name, |(_, d)| d);
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        for d in domains {
            args.push(format!("--local=/{d}/"));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .command(&w.netns, &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (Debian: dnsmasq-base)")?;
        self.children.push((child, true));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if fs::read_to_string(&log).is_ok_and(|l| l.contains("started")) {
                return Ok(log);
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "dnsmasq in {workload} did not start (log: {})",
            log.display()
        )
    }

    /// From inside `workload`, asks `server` (port 53) for the A records of `name` with the
    /// real client `dig`, over UDP or TCP; one try, `timeout` for the answer.
    pub fn dig(
        &self,
        workload: &str,
        server: Ipv4Addr,
        name: &str,
        tcp: bool,
        timeout: Duration,
    ) -> DnsAnswer {
        let w = self.workload(workload);
        let at = format!("@{server}");
        let time = format!("+time={}", timeout.as_secs().max(1));
        let mut args = vec![
            "dig",
            &at,
            name,
            "A",
            "+tries=1",
            &time,
            "+noall",
            "+comments",
            "+answer",
        ];
        if tcp {
            args.push("+tcp");
        }
        let out = match self.exec(&w.netns, &args) {
            Ok(o) => o,
            Err(e) => panic!("running dig in {workload} (Debian: bind9-dnsutils): {e:#}"),
        };
        DnsAnswer::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// From inside `workload`, sends `count` datagrams (`ping N`) to `dst` from one socket,
    /// each waiting up to `timeout` for its answer.
    pub fn udp_exchange(
        &self,
        workload: &str,
        dst: SocketAddr,
        count: usize,
        timeout: Duration,
    ) -> UdpProbe {
        let pings: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("ping {i}").into_bytes())
            .collect();
        self.udp_exchange_of(workload, dst, pings, timeout)
    }

    /// As [`Lab::udp_exchange`], sending each of `datagrams` in turn.
    pub fn udp_exchange_of(
        &self,
        workload: &str,
        dst: SocketAddr,
        datagrams: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> UdpProbe {
        let w = self.workload(workload);
        let src = IpAddr::V4(w.addr);
        let count = datagrams.len();
        let r = in_netns(&w.netns, move || -> anyhow::Result<UdpProbe> {
            let s = std::net::UdpSocket::bind(SocketAddr::new(src, 0))?;
            s.set_read_timeout(Some(timeout))?;
            let local = s.local_addr()?;
            let mut answers = Vec::new();
            let mut buf = vec![0u8; 65_536];
            for d in &datagrams {
                s.send_to(d, dst)?;
                match s.recv_from(&mut buf) {
                    Ok((n, from)) if from == dst => {
                        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    // An ICMP port unreachable for an earlier datagram.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(UdpProbe {
                sent: count,
                answers,
                local,
            })
        });
        match r {
            Ok(Ok(p)) => p,
            Ok(Err(e)) | Err(e) => panic!("UDP probe from {workload}: {e:#}"),
        }
    }

    /// From inside `workload`, sends one ICMP echo request of `size` payload bytes to `dst`
    /// (with Don't Fragment set when `dont_fragment`) and waits up to `timeout` for the reply.
    pub fn icmp_echo(
        &self,
        workload: &str,
        dst: Ipv4Addr,
        size: usize,
        dont_fragment: bool,
        timeout: Duration,
    ) -> bool {
        let w = self.workload(workload);
        let r = in_netns(&w.netns, move || -> anyhow::Result<bool> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
            // We write the IP header ourselves, to set Don't Fragment; the kernel fills in the
            // length, id, checksum and source.
            s.set_header_included_v4(true)?;
            // A raw socket read and written as a datagram socket: safe buffers.
            let s: std::net::UdpSocket = s.into();
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            // A new echo id each time: a new flow for conntrack, decided anew.
            let id = (std::process::id() as u16)
                .wrapping_mul(31)
                .wrapping_add(SEQ.fetch_add(1, Ordering::Relaxed) as u16);
            let mut msg = vec![8u8, 0, 0, 0];
            msg.extend_from_slice(&id.to_be_bytes());
            msg.extend_from_slice(&1u16.to_be_bytes());
            msg.extend(std::iter::repeat_n(0x5a, size));
            let sum = inet_checksum(&msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            let flags: u8 = if dont_fragment { 0x40 } else { 0 };
            let mut packet = vec![0x45, 0, 0, 0, 0, 0, flags, 0, 64, 1, 0, 0, 0, 0, 0, 0];
            packet.extend_from_slice(&dst.octets());
            packet.extend_from_slice(&msg);
            if s.send_to(&packet, SocketAddr::new(dst.into(), 0)).is_err() {
                return Ok(false);
            }
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 65_536];
            while Instant::now() < deadline {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                // A raw IPv4 socket receives the IP header too.
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let reply = buf.get(ihl..n).unwrap_or_default();
                let is_ours = from.ip() == IpAddr::V4(dst)
                    && reply.first() == Some(&0)
                    && reply.get(4..6) == Some(&id.to_be_bytes()[..]);
                if is_ours {
                    return Ok(true);
                }
            }
            Ok(false)
        });
        r.and_then(|x| x).unwrap_or(false)
    }

    /// Sends one packet of IP protocol `protocol` (a raw socket) from `from` to `to`, and
    /// says whether a raw socket for that protocol in `to` received it within `timeout`.
    pub fn raw_delivered(&self, from: &str, to: &str, protocol: u8, timeout: Duration) -> bool {
        let (f, t) = (self.workload(from).clone(), self.workload(to).clone());
        let raw = |p: u8| -> std::io::Result<std::net::UdpSocket> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(p))))?;
            Ok(s.into())
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let listener = thread::spawn(move || -> bool {
            if enter_netns(&t.netns).is_err() {
                return false;
            }
            let Ok(s) = raw(protocol) else { return false };
            let _ = s.set_read_timeout(Some(timeout));
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 65_536];
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    if from.ip() == IpAddr::V4(f.addr) && buf.get(ihl..n) == Some(&b"eastwall"[..])
                    {
                        return true;
                    }
                }
            }
            false
        });
        if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            return false;
        }
        let dst = IpAddr::V4(self.workload(to).addr);
        let sent = in_netns(&self.workload(from).netns, move || {
            raw(protocol).and_then(|s| s.send_to(b"eastwall", SocketAddr::new(dst, 0)))
        });
        matches!(sent, Ok(Ok(_))) && listener.join().unwrap_or(false)
    }

    /// Serves HTTP (1.1 and HTTP/2 with prior knowledge) on `port` of `workload`; the
    /// returned handle lists the requests that reached it.
    pub fn serve_http(
        &mut self,
        workload: &str,
        port: u16,
    ) -> anyhow::Result<http_server::Received> {
        let w = self.workload(workload).clone();
        let addr = SocketAddr::new(IpAddr::V4(w.addr), port);
        let name = w.name.clone();
        in_netns(&w.netns, move || http_server::spawn(name, addr))?
    }

    /// Runs a command inside a workload (all of its namespaces) or a host, and waits for it.
    pub fn exec(&self, netns: &str, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = self.command(netns, args);
        Ok(cmd.stdin(Stdio::null()).output()?)
    }

    fn command(&self, netns: &str, args: &[&str]) -> Command {
        match self.workloads.iter().find(|w| w.netns == netns) {
            Some(w) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &w.pid.to_string(), "-n", "-m", "-p", "-u", "--"])
                    .args(args);
                c
            }
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).args(args);
                c
            }
        }
    }

    /// Prints how to look around a kept lab.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            s.push_str(&format!(
                "  host {:<10} ip netns exec {} bash\n",
                h.name, h.netns
            ));
        }
        for w in &self.workloads {
            s.push_str(&format!(
                "  workload {:<12} nsenter -t {} -n -m -p -u bash   ({})\n",
                w.name, w.pid, w.addr
            ));
        }
        s
    }
}

/// What a client saw when it tried to reach a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and got the service's greeting (the line, without newline).
    Reached(String),
    /// The connection was reset (eastwall denies with a reset).
    Reset,
    /// Nothing answered in time (dropped).
    Timeout,
    /// Refused or another error.
    Failed(String),
}

impl Outcome {
    /// Whether the service was reached.
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Reached(_))
    }
}

impl Lab {
    /// From inside `workload`, connects to `dst` and reads the greeting.
    pub fn connect(&self, workload: &str, dst: SocketAddr, timeout: Duration) -> Probe {
        let w = self.workload(workload);
        connect_from(&w.netns, w.addr.into(), dst, timeout)
    }

    /// From inside host `host` (a locally originated connection), connects to `dst`.
    pub fn connect_from_host(&self, host: &str, dst: SocketAddr, timeout: Duration) -> Probe {
        let h = self.host(host);
        connect_from(&h.netns, h.addr.into(), dst, timeout)
    }
}

/// The Internet checksum (RFC 1071) of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP exchange: how many datagrams went out, the answers that came back, and the client's
/// own address (to find its flow record).
#[derive(Debug, Clone)]
pub struct UdpProbe {
    /// Datagrams sent.
    pub sent: usize,
    /// Answers received, in order.
    pub answers: Vec<String>,
    /// The client socket's address.
    pub local: SocketAddr,
}

/// What `dig` got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The answer's status (`NOERROR`, `NXDOMAIN`, `REFUSED`, ...), or `None` when no answer
    /// came.
    pub status: Option<String>,
    /// The addresses of its A records.
    pub addrs: Vec<Ipv4Addr>,
    /// dig's output.
    pub output: String,
}

impl DnsAnswer {
    fn parse(out: &str) -> DnsAnswer {
        let status = out
            .lines()
            .find_map(|l| l.split_once("status: "))
            .and_then(|(_, rest)| rest.split(',').next())
            .map(str::to_owned);
        let addrs = out
            .lines()
            .filter(|l| !l.starts_with(';'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    [_, _, "IN", "A", a] => a.parse().ok(),
                    _ => None,
                }
            })
            .collect();
        DnsAnswer {
            status,
            addrs,
            output: out.to_owned(),
        }
    }
}

/// A connection attempt: what happened, and the client's own address (to find its flow record).
#[derive(Debug, Clone)]
pub struct Probe {
    /// What the client saw.
    pub outcome: Outcome,
    /// The client socket's local address, once connected.
    pub local: Option<SocketAddr>,
}

fn connect_from(netns: &str, src: IpAddr, dst: SocketAddr, timeout: Duration) -> Probe {
    let r = in_netns(netns, move || -> Probe {
        // Bind first, so the client's port is known even if the connection is reset at once.
        let sock = match socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            None,
        )
        .and_then(|s| s.bind(&SocketAddr::new(src, 0).into()).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                return Probe {
                    outcome: Outcome::Failed(e.to_string()),
                    local: None,
                };
            }
        };
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let s: TcpStream = match sock.connect_timeout(&dst.into(), timeout) {
            Ok(()) => sock.into(),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Probe {
                    outcome: Outcome::Timeout,
                    local,
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Probe {
                    outcome: Outcome::Reset,
                    local,
                };
            }
            Err(e) => {
                return Probe {
                    outcome: Outcome::Failed(e.to_string()),
                    local,
                };
            }
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut line = String::new();
        let outcome = match BufReader::new(&s).read_line(&mut line) {
            Ok(0) => Outcome::Failed("closed without a greeting".into()),
            Ok(_) => Outcome::Reached(line.trim_end().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Outcome::Reset,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Outcome::Timeout
            }
            Err(e) => Outcome::Failed(e.to_string()),
        };
        Probe { outcome, local }
    });
    r.unwrap_or_else(|e| Probe {
        outcome: Outcome::Failed(format!("{e:#}")),
        local: None,
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (c, graceful) in self.children.iter_mut().rev() {
            if *graceful {
                terminate(c);
            } else {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for ns in self.namespaces.iter().rev() {
            remove_netns(ns, false);
        }
        // EASTWALL_LAB_KEEP=1 keeps the folder (node logs, flow logs, configs) to look into.
        if std::env::var_os("EASTWALL_LAB_KEEP").is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("lab folder kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn terminate(c: &mut Child) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn remove_netns(ns: &str, kill_inside: bool) {
    // Processes of a lab's own run are ended by PID in `Drop`; only a dead run's leftovers
    // (found by `sweep_stale`) are ended by namespace.
    if !kill_inside {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        return;
    }
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces of labs whose process is gone (a test killed before it could clean up).
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("ew") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_netns(&name, true);
        }
    }
}

fn wait_for_child_pid(parent: u32) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            // Wait until it runs in its own UTS namespace with the hostname set (exec'd sleep).
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            bail!("workload namespaces did not come up");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a fresh OS thread inside network namespace `netns` (network namespace
/// membership is per thread).
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let netns = netns.to_owned();
    thread::spawn(move || -> anyhow::Result<T> {
        enter_netns(&netns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {} panicked", "netns"))?
}

/// Moves the calling thread into network namespace `netns`.
pub fn enter_netns(netns: &str) -> anyhow::Result<()> {
    let f = fs::File::open(Path::new(NETNS_DIR).join(netns))
        .with_context(|| format!("opening netns {netns}"))?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering netns {netns}"))?;
    Ok(())
}

fn sysctl(netns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_owned();
    in_netns(netns, move || fs::write(path, value))??;
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
