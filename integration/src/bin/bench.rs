//! The side-by-side benchmark of issue 7: one topology (a client workload on hostA, a server
//! workload on hostB, each a container of namespaces), the same traffic through each path:
//!
//! - `direct`: no proxy, the limit of this machine;
//! - `haproxy-mtls`: an HAProxy in TCP mode in each host namespace, mutual TLS 1.3 between them
//!   (certificates from the lab's CA); the client connects to its local HAProxy;
//! - `eastwall L4 (QUIC)`, `eastwall L4 (HTTP/2)`: an eastwall node on each host (capture, the
//!   mTLS tunnel over the named transport, L4 decisions);
//! - `eastwall L7 (HTTP/2)`: the same, with every HTTP request decided on its own by the
//!   destination node (`POLICY_L7`: method and path); bulk (iperf3) stays L4;
//! - `eastwall L7+IDS (HTTP/2)`: the L7 row with the IDS inspecting every allowed request and
//!   response (ET Open's web rules, detect mode).
//!
//! Figures: bulk throughput with 1 and 8 streams (iperf3), proxy CPU seconds per GB during the
//! 1-stream bulk, HTTP/1.1 keep-alive at saturation (wrk -t1 -c16 against nginx: req/s, p50,
//! p99) and proxy CPU per request, a paced ~1,000 req/s keep-alive client (p50, p99), paced
//! clients over many keep-alive connections at once (16 and 64 connections at 1,000 and 5,000
//! req/s in total: p50, p99, p99.9 and the rate achieved), new connections per second (wrk with `Connection: close`), RSS growth per idle proxied
//! connection at each proxy process, and for UDP: a paced ~1,000/s request/response exchange
//! with a UDP echo service (p50, p99), echo datagrams per second with 32 in flight, and DNS
//! queries per second to a real DNS server (dnsmasq) with 32 in flight (through eastwall
//! each query is decided on its name). HAProxy carries no UDP. Each figure is the median of
//! `--rounds` rounds.
//!
//! Run as root, built with `--release` (`scripts/bench.sh` installs the tools and does both):
//! `target/release/bench [--secs 5] [--rounds 3] [--idle 10000] [--rate 1000]
//!  [--paths direct,haproxy,eastwall,eastwall-h2,eastwall-l7] [--out FILE.md] [--perf DIR] [--only-idle]`
//! (also `eastwall-h2-export` and `eastwall-h2-stalled`: the nodes export every record to a
//! collector, which in the second stops answering once they are up)
//! (`eastwall` is the QUIC transport, `eastwall-h2` the HTTP/2 one; `eastwall-l7` decides HTTP
//! requests over HTTP/2, `eastwall-l7-quic` over QUIC.)
//! `--perf DIR` records `perf record -g` of both nodes during an extra eastwall bulk run, an
//! extra keep-alive run and an extra new-connection run (`DIR/<path>/{bulk,keepalive,newconn}.data`). `--only-idle` measures only
//! the idle-connection memory (with RSS before, during and after each round); `--only-paced`
//! only the paced keep-alive latency, alone and while the nodes reload a 10,000-rule policy;
//! `--only-many` only the paced runs over many connections (`--many 16x1000,64x5000`:
//! connections x total req/s); `--only-newconn` only the new-connection rate and the proxies'
//! CPU per connection. `--workers 1,2` measures each eastwall path with each count of node
//! runtime threads; `--before PATH` measures each eastwall path again with another `eastwall`
//! binary (the build before a change), right after, in the same run. `--loss N` drops N per
//! thousand packets at random on the LAN between the hosts (every path alike); `--only-bulk`
//! measures bulk only, `--only-keepalive` keep-alive at saturation only.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eastwall_identity::SpiffeId;
use eastwall_integration::{Cloud, eastwall_bin, proc_stat, rss, with_filler_rules};
use eastwall_lab::in_netns;

const IPERF_PORT: u16 = 5201;
const HTTP_PORT: u16 = 8080;
/// The UDP echo service.
const UDP_PORT: u16 = 5300;
/// The name the DNS figures ask for (dnsmasq on the server answers it).
const DNS_NAME: &str = "www.bench.example";
/// Datagrams (queries) kept in flight by the throughput clients.
const UDP_WINDOW: usize = 32;
/// HAProxy's TLS listener on hostB for service port p is p + 10000.
const TLS_OFFSET: u16 = 10000;

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: bench
      rules:
        - {id: client-to-server, action: allow, from: {app: client}, to: {app: server}, ports: [5201, 8080]}
        - {id: client-to-server-udp, action: allow, from: {app: client}, to: {app: server}, ports: [{port: 5300, protocol: UDP}]}
        - {id: client-resolves-bench-names, action: allow, from: {app: client}, to: {app: server, dns: {names: ["*.bench.example"]}}, ports: [{port: 53, protocol: UDP}]}
"#;

/// The L7+IDS row: as the L7 row, and the IDS (ET Open's web rules, detect mode) inspects
/// every allowed request and response.
const POLICY_L7_IDS: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  idsProfiles:
    - {name: web, mode: detect}
  sections:
    - name: bench
      rules:
        - id: client-gets-from-server
          action: allow
          from: {app: client}
          to:
            app: server
            http:
              - methods: [GET, HEAD]
                paths: ["/*"]
          ports: [8080]
          ids: web
        - {id: client-to-server-bulk, action: allow, from: {app: client}, to: {app: server}, ports: [5201]}
        - {id: client-to-server-udp, action: allow, from: {app: client}, to: {app: server}, ports: [{port: 5300, protocol: UDP}]}
        - {id: client-resolves-bench-names, action: allow, from: {app: client}, to: {app: server, dns: {names: ["*.bench.example"]}}, ports: [{port: 53, protocol: UDP}]}
"#;

/// The ET Open web rules the L7+IDS row runs (`EASTWALL_ET_OPEN`, default the shared copy).
fn et_open_web_rules() -> String {
    let dir =
        std::env::var("EASTWALL_ET_OPEN").unwrap_or_else(|_| "/work/shared/ids/et-open".into());
    [
        "emerging-web_server.rules",
        "emerging-web_specific_apps.rules",
        "emerging-web_client.rules",
    ]
    .iter()
    .map(|f| format!("\"{dir}/{f}\""))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The L7 row: every HTTP request is decided on its own (method and path), bulk stays L4.
const POLICY_L7: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: bench
      rules:
        - id: client-gets-from-server
          action: allow
          from: {app: client}
          to:
            app: server
            http:
              - methods: [GET, HEAD]
                paths: ["/*"]
          ports: [8080]
        - {id: client-to-server-bulk, action: allow, from: {app: client}, to: {app: server}, ports: [5201]}
        - {id: client-to-server-udp, action: allow, from: {app: client}, to: {app: server}, ports: [{port: 5300, protocol: UDP}]}
        - {id: client-resolves-bench-names, action: allow, from: {app: client}, to: {app: server, dns: {names: ["*.bench.example"]}}, ports: [{port: 53, protocol: UDP}]}
"#;

struct Args {
    secs: u64,
    rounds: usize,
    idle: usize,
    rate: u64,
    paths: Vec<String>,
    out: Option<PathBuf>,
    perf: Option<PathBuf>,
    only_idle: bool,
    only_paced: bool,
    /// Only the new-connection run (rate and the proxies' CPU per connection).
    only_newconn: bool,
    reload_rules: usize,
    /// Paced scenarios over many keep-alive connections: (connections, total req/s).
    many: Vec<(usize, u64)>,
    /// Only those scenarios.
    only_many: bool,
    /// Only bulk (1 and 8 streams, the proxies' CPU per GB).
    only_bulk: bool,
    /// Only keep-alive at saturation (req/s, latency, the proxies' CPU per request).
    only_keepalive: bool,
    /// Runtime worker threads of the nodes; each eastwall path is measured with each.
    workers: Vec<usize>,
    /// Another `eastwall` binary (the build before a change): each eastwall row is measured
    /// with it too, right after, in the same run.
    before: Option<PathBuf>,
    /// Packets lost on the LAN between the hosts, per thousand (every path alike).
    loss: u32,
}

fn args() -> anyhow::Result<Args> {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        secs: 5,
        rounds: 3,
        idle: 10_000,
        rate: 1000,
        paths: vec![
            "direct".into(),
            "haproxy".into(),
            "eastwall".into(),
            "eastwall-h2".into(),
            "eastwall-l7".into(),
            "eastwall-l7-ids".into(),
        ],
        out: None,
        perf: None,
        only_idle: false,
        only_paced: false,
        only_newconn: false,
        reload_rules: RELOAD_RULES,
        many: vec![(16, 1000), (16, 5000), (64, 1000), (64, 5000)],
        only_many: false,
        only_bulk: false,
        only_keepalive: false,
        workers: vec![1],
        before: None,
        loss: 0,
    };
    let mut i = 0;
    while i < v.len() {
        let flag = match v[i].as_str() {
            "--only-paced" => Some(&mut a.only_paced),
            "--only-idle" => Some(&mut a.only_idle),
            "--only-bulk" => Some(&mut a.only_bulk),
            "--only-keepalive" => Some(&mut a.only_keepalive),
            "--only-many" => Some(&mut a.only_many),
            "--only-newconn" => Some(&mut a.only_newconn),
            _ => None,
        };
        if let Some(f) = flag {
            *f = true;
            i += 1;
            continue;
        }
        let val = v
            .get(i + 1)
            .cloned()
            .with_context(|| format!("{} needs a value", v[i]))?;
        match v[i].as_str() {
            "--secs" => a.secs = val.parse()?,
            "--rounds" => a.rounds = val.parse()?,
            "--idle" => a.idle = val.parse()?,
            "--reload-rules" => a.reload_rules = val.parse()?,
            "--rate" => a.rate = val.parse()?,
            "--paths" => a.paths = val.split(',').map(str::to_owned).collect(),
            "--out" => a.out = Some(val.into()),
            "--perf" => a.perf = Some(val.into()),
            "--before" => a.before = Some(val.into()),
            "--loss" => a.loss = val.parse()?,
            "--many" => {
                a.many = val
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| -> anyhow::Result<(usize, u64)> {
                        let (c, r) = s
                            .split_once('x')
                            .with_context(|| format!("--many: {s} is not CONNSxRATE"))?;
                        Ok((c.parse()?, r.parse()?))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            "--workers" => {
                a.workers = val
                    .split(',')
                    .map(|w| w.parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown argument {other}"),
        }
        i += 2;
    }
    anyhow::ensure!(a.secs > 0 && a.secs <= 60, "--secs must be 1..=60");
    anyhow::ensure!(a.rounds > 0 && a.rounds <= 10, "--rounds must be 1..=10");
    anyhow::ensure!(a.rate > 0 && a.rate <= 20_000, "--rate must be 1..=20000");
    anyhow::ensure!(a.loss < 1000, "--loss is per thousand packets: 0..=999");
    for &(c, r) in &a.many {
        anyhow::ensure!(
            (1..=256).contains(&c) && r >= c as u64 && r <= 50_000,
            "--many: 1..=256 connections, a rate from the connection count to 50000"
        );
    }
    anyhow::ensure!(
        !a.workers.is_empty() && a.workers.iter().all(|w| (1..=16).contains(w)),
        "--workers must be 1..=16"
    );
    Ok(a)
}

/// Processes this benchmark started; killed by PID on drop (also on panic).
#[derive(Default)]
struct Procs(Vec<Child>);

impl Procs {
    fn spawn(&mut self, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
        let f = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }

    fn stop_all(&mut self) {
        for mut c in self.0.drain(..).rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// One path's medians. `None`: not measured / not applicable.
#[derive(Default, Clone)]
struct Row {
    name: String,
    bulk1: Option<f64>,
    bulk8: Option<f64>,
    cpu_per_gb: Option<f64>,
    ka_rps: Option<f64>,
    ka_p50: Option<f64>,
    ka_p99: Option<f64>,
    ka_cpu_us: Option<f64>,
    paced_p50: Option<f64>,
    paced_p99: Option<f64>,
    /// The spread (max - min) of the paced p99 over the rounds: the noise.
    paced_spread: Option<f64>,
    /// The paced p99 while the nodes reload a policy of RELOAD_RULES rules.
    paced_reload_p99: Option<f64>,
    /// The paced scenarios over many connections, in `Args::many` order.
    many: Vec<Option<PacedFigures>>,
    /// Reloads applied during those runs, across the nodes.
    reloads: Option<u64>,
    cps: Option<f64>,
    /// Proxy CPU per new connection (µs, both ends).
    cps_cpu_us: Option<f64>,
    udp_p50: Option<f64>,
    udp_p99: Option<f64>,
    udp_dps: Option<f64>,
    dns_qps: Option<f64>,
    /// Bytes of RSS growth per idle connection, for each proxy process (client side first).
    mem: Vec<Option<f64>>,
    /// The share of that growth (%) still held once the connections closed.
    mem_kept: Vec<Option<f64>>,
    /// Why the idle-connection figure could not be taken.
    mem_failed: Option<String>,
    /// Runs that failed (listed under the table; the figure is the median of the others).
    failures: Vec<String>,
    note: Option<String>,
}

/// What idle connections cost each proxy process.
struct IdleMemory {
    /// RSS growth per connection, bytes.
    per_conn: Vec<Option<f64>>,
    /// The share of the growth (%) still held [`SETTLE`] after they closed.
    kept: Vec<Option<f64>>,
}

/// Rules in the policy the nodes reload during a paced run (`--reload-rules`).
const RELOAD_RULES: usize = 10_000;
/// How often it is rewritten.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Max minus min.
fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    if v.is_empty() { 0.0 } else { max - min }
}

/// How long memory is given to come back after idle connections close.
const SETTLE: Duration = Duration::from_secs(15);

struct Bench {
    cloud: Cloud,
    a: Args,
    client_ns: String,
    server: SocketAddr,
    procs: Procs,
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut cloud = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "client", "client", "bench"),
            ("hostB", "server", "server", "bench"),
        ],
        "",
        POLICY,
    );
    let client = cloud.lab.workload("client").clone();
    let server = cloud.lab.workload("server").clone();
    // Room for the idle-connection test and Connection: close runs (TIME_WAIT) in the
    // namespaces this benchmark made.
    for ns in [
        client.netns.clone(),
        server.netns.clone(),
        cloud.lab.host("hostA").netns.clone(),
        cloud.lab.host("hostB").netns.clone(),
    ] {
        in_netns(&ns, || {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000");
            // ... but never the node's own ports (15000-15009): an HAProxy connection left on
            // 15006 would keep the next node from listening there.
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_reserved_ports", "15000-15010");
            let _ = std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1");
            let _ = std::fs::write("/proc/sys/net/core/somaxconn", "8192");
        })?;
    }
    if a.loss > 0 {
        // Random loss on the LAN bridge, both ways, for every path (QUIC's case: streams
        // that do not wait for each other's retransmissions).
        let loss = a.loss.to_string();
        let table = "eastwall_bench_loss";
        for cmd in [
            vec!["add", "table", "bridge", table],
            vec![
                "add",
                "chain",
                "bridge",
                table,
                "forward",
                "{ type filter hook forward priority 0; }",
            ],
            vec![
                "add", "rule", "bridge", table, "forward", "numgen", "random", "mod", "1000", "<",
                &loss, "drop",
            ],
        ] {
            let args: Vec<&str> = std::iter::once("nft").chain(cmd).collect();
            let out = cloud.lab.exec(cloud.lab.lan_netns(), &args)?;
            anyhow::ensure!(
                out.status.success(),
                "loss rule {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut procs = Procs::default();
    start_servers(&mut cloud, &mut procs, &server)?;
    let mut b = Bench {
        client_ns: client.netns.clone(),
        server: SocketAddr::new(server.addr.into(), 0),
        cloud,
        a,
        procs,
    };

    let mut rows = Vec::new();
    let paths = b.a.paths.clone();
    let workers = b.a.workers.clone();
    let before = b.a.before.clone();
    let mut each = Vec::new();
    for p in &paths {
        if !p.starts_with("eastwall") {
            each.push((p.clone(), 1, None));
            continue;
        }
        for &w in &workers {
            each.push((p.clone(), w, None));
            if let Some(bin) = &before {
                each.push((p.clone(), w, Some(bin.clone())));
            }
        }
    }
    for (p, w, bin) in each {
        let row = match p.as_str() {
            "direct" => b.measure("direct", None, &[])?,
            "haproxy" => {
                let mut hp = Procs::default();
                let pids = start_haproxy(&b.cloud, &mut hp)?;
                let gw = gateway(client.addr);
                let row = b.measure("haproxy-mtls", Some(gw), &pids)?;
                hp.stop_all();
                row
            }
            "eastwall"
            | "eastwall-h2"
            | "eastwall-l7"
            | "eastwall-l7-quic"
            | "eastwall-l7-ids"
            | "eastwall-h2-export"
            | "eastwall-h2-stalled" => {
                let (transport, name, policy) = match p.as_str() {
                    "eastwall" => ("quic", "eastwall L4 (QUIC)", POLICY),
                    "eastwall-h2" => ("h2", "eastwall L4 (HTTP/2)", POLICY),
                    "eastwall-h2-export" => ("h2", "eastwall L4 (HTTP/2), exporting", POLICY),
                    "eastwall-h2-stalled" => {
                        ("h2", "eastwall L4 (HTTP/2), collector stalled", POLICY)
                    }
                    "eastwall-l7" => ("h2", "eastwall L7 (HTTP/2)", POLICY_L7),
                    "eastwall-l7-ids" => ("h2", "eastwall L7+IDS (HTTP/2)", POLICY_L7_IDS),
                    _ => ("quic", "eastwall L7 (QUIC)", POLICY_L7),
                };
                // With more than one thread count asked for, each row says its own.
                let mut name = if workers.len() > 1 {
                    format!("{name}, {w} worker{}", if w == 1 { "" } else { "s" })
                } else {
                    name.to_owned()
                };
                if bin.is_some() {
                    name.push_str(", before");
                }
                b.cloud.set_binary(bin.clone());
                b.cloud.set_policy(policy);
                for n in b.cloud.nodes.clone() {
                    b.cloud.lab.stop_node(&n)?;
                }
                b.cloud.lab.clear_node_spec();
                b.cloud.lab.set_node_workers(w);
                if bin.is_some() {
                    b.cloud.lab.leave_node_drain_unset();
                } else {
                    b.cloud.lab.set_node_drain_secs(0);
                }
                // One client workload stands for many: it may hold every connection the
                // node's descriptors allow (the default budget is a quarter of them).
                b.cloud.lab.add_node_spec(&format!(
                    "  tunnel:\n    transport: {transport}\n  limits:\n    connectionsPerWorkload: 1000000\n"
                ));
                if p == "eastwall-l7-ids" {
                    b.cloud
                        .lab
                        .add_node_spec(&format!("  ids:\n    rules: [{}]\n", et_open_web_rules()));
                }
                // Both nodes export every record to a collector on hostA; "stalled": one
                // that stops answering (SIGSTOP) once the nodes are up.
                let collector = if p.ends_with("-export") || p.ends_with("-stalled") {
                    Some(start_collector(&mut b.cloud, &mut b.procs)?)
                } else {
                    None
                };
                b.cloud.start_nodes("");
                if let Some(pid) = collector
                    && p.ends_with("-stalled")
                {
                    let stopped = Command::new("kill")
                        .args(["-STOP", &pid.to_string()])
                        .status()?;
                    anyhow::ensure!(stopped.success(), "could not stop the collector");
                }
                let pids: Vec<u32> = ["hostA", "hostB"]
                    .iter()
                    .map(|h| b.cloud.node(h).pid)
                    .collect();
                let row = b.measure(&name, None, &pids)?;
                if let Some(dir) = b.a.perf.clone() {
                    let before = if bin.is_some() { "-before" } else { "" };
                    b.profile(&dir.join(format!("{p}-w{w}{before}")), &pids)?;
                }
                row
            }
            other => bail!("unknown path {other}"),
        };
        rows.push(row);
    }
    let table = render(&rows, &b.a);
    println!("{table}");
    if let Some(out) = &b.a.out {
        std::fs::write(out, &table)?;
        eprintln!("table written to {}", out.display());
    }
    b.procs.stop_all();
    Ok(())
}

/// Starts `eastwall collector` in hostA's namespace and points the nodes started next at it
/// (`export:` with node certificates from the lab's CA); returns its PID.
fn start_collector(cloud: &mut Cloud, procs: &mut Procs) -> anyhow::Result<u32> {
    let dir = cloud.lab.dir().join("collector");
    std::fs::create_dir_all(&dir)?;
    let ca = cloud.lab.ca().context("the lab has no CA")?;
    let issue = |id: &str, name: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
        let i = ca
            .issue(
                &SpiffeId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?,
                Duration::from_secs(24 * 3600),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, i.cert_pem)?;
        std::fs::write(&k, i.key_pem)?;
        Ok((c, k))
    };
    let (crt, key) = issue("spiffe://corp.example/collector", "collector")?;
    let mut nodes = Vec::new();
    for h in ["hostA", "hostB"] {
        nodes.push(issue(&format!("spiffe://corp.example/node/{h}"), h)?);
    }
    let bundle = dir.join("ca.pem");
    std::fs::write(&bundle, ca.cert_pem())?;
    let host = cloud.lab.host("hostA").clone();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.netns])
        .arg(eastwall_bin())
        .args(["collector", "--listen", &format!("{}:15010", host.addr)])
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(&key)
        .arg("--trust-bundle")
        .arg(&bundle)
        .arg("--db")
        .arg(dir.join("flows.db"));
    let pid = procs.spawn(cmd, &dir.join("collector.log"))?;
    // The node spec is per host (its own certificate): the lab's spec is shared, so the
    // certificate paths name the host through the node's folder.
    for (h, (c, k)) in ["hostA", "hostB"].iter().zip(&nodes) {
        std::fs::create_dir_all(cloud.lab.dir().join(h))?;
        std::fs::copy(c, cloud.lab.dir().join(h).join("export.crt"))?;
        std::fs::copy(k, cloud.lab.dir().join(h).join("export.key"))?;
    }
    cloud.lab.add_node_spec(&format!(
        "  export:\n    url: https://{}:15010\n    nodeCert: export.crt\n    nodeKey: export.key\n",
        host.addr
    ));
    let addr = SocketAddr::new(host.addr.into(), 15010);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_netns(&host.netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })? {
        anyhow::ensure!(Instant::now() < deadline, "the collector did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}

/// The host side of a workload's link: 10.77.H.1.
fn gateway(wl: Ipv4Addr) -> IpAddr {
    let o = wl.octets();
    IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 1))
}

/// A command inside all of `pid`'s namespaces (a workload: network, mount, PID, UTS).
fn in_workload(pid: u32, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid.to_string(), "-n", "-m", "-p", "-u", "--"])
        .args(args);
    c
}

/// iperf3 and nginx in the server workload (they end with the workload's PID namespace).
fn start_servers(
    cloud: &mut Cloud,
    procs: &mut Procs,
    server: &eastwall_lab::Workload,
) -> anyhow::Result<()> {
    let dir = cloud.lab.dir().join("server");
    std::fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    let conf = format!(
        r#"worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {nofile}; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {{
    listen {addr}:{HTTP_PORT} backlog=8192;
    location / {{ default_type text/plain; return 200 "hello from the server workload\n"; }}
  }}
}}
"#,
        addr = server.addr,
        nofile = nofile_limit(),
    );
    // The UDP echo service, and a real DNS server for the DNS figures.
    cloud.lab.serve_udp(&server.name, &[UDP_PORT])?;
    cloud
        .lab
        .serve_dns(&server.name, &[(DNS_NAME, server.addr)], false)?;
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let addr = server.addr.to_string();
    procs.spawn(
        in_workload(server.pid, &["nginx", "-c", conf_path.to_str().unwrap()]),
        &dir.join("nginx.log"),
    )?;
    procs.spawn(
        in_workload(
            server.pid,
            &["iperf3", "-s", "-B", &addr, "-p", &IPERF_PORT.to_string()],
        ),
        &dir.join("iperf3.log"),
    )?;
    for port in [HTTP_PORT, IPERF_PORT] {
        let dst = SocketAddr::new(server.addr.into(), port);
        let ok = in_netns(&server.netns, move || {
            (0..200).any(|_| {
                TcpStream::connect_timeout(&dst, Duration::from_millis(100)).is_ok() || {
                    thread::sleep(Duration::from_millis(25));
                    false
                }
            })
        })?;
        anyhow::ensure!(
            ok,
            "server on port {port} did not start (see {})",
            dir.display()
        );
    }
    Ok(())
}

/// Two HAProxy processes, one in each host namespace, mTLS between them. Returns their PIDs
/// (hostA's first).
fn start_haproxy(cloud: &Cloud, procs: &mut Procs) -> anyhow::Result<Vec<u32>> {
    let lab = &cloud.lab;
    let ca = lab.ca().context("the lab has no CA")?;
    let dir = lab.dir().join("haproxy");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    for h in ["hostA", "hostB"] {
        let id = SpiffeId::parse(&format!("spiffe://{}/haproxy/{h}", ca.trust_domain()))?;
        let issued = ca
            .issue(&id, Duration::from_secs(24 * 3600))
            .map_err(|e| anyhow::anyhow!("issuing {id}: {e}"))?;
        std::fs::write(
            dir.join(format!("{h}.pem")),
            format!("{}{}", issued.cert_pem, issued.key_pem),
        )?;
    }
    let d = dir.display();
    let (a, b) = (lab.host("hostA"), lab.host("hostB"));
    let client_gw = gateway(lab.workload("client").addr);
    let server = lab.workload("server").addr;
    let maxconn = nofile_limit().saturating_sub(1000) / 2;
    let global = format!(
        "global\n  maxconn {maxconn}\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  ssl-default-server-options ssl-min-ver TLSv1.3\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n"
    );
    let mut cfg_a = global.clone();
    let mut cfg_b = global;
    for p in [IPERF_PORT, HTTP_PORT] {
        let tls = p + TLS_OFFSET;
        cfg_a.push_str(&format!(
            "listen l{p}\n  bind {client_gw}:{p}\n  server s {}:{tls} ssl crt {d}/hostA.pem ca-file {d}/ca.pem verify required\n",
            b.addr
        ));
        cfg_b.push_str(&format!(
            "listen l{tls}\n  bind {}:{tls} ssl crt {d}/hostB.pem ca-file {d}/ca.pem verify required\n  server s {server}:{p}\n",
            b.addr
        ));
    }
    let mut pids = Vec::new();
    for (h, cfg) in [(a, cfg_a), (b, cfg_b)] {
        let path = dir.join(format!("{}.cfg", h.name));
        std::fs::write(&path, cfg)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.netns, "haproxy", "-db", "-f"])
            .arg(&path);
        pids.push(procs.spawn(cmd, &dir.join(format!("{}.log", h.name)))?);
    }
    // Wait for both listeners.
    for (ns, addr) in [
        (a.netns.clone(), SocketAddr::new(client_gw, HTTP_PORT)),
        (
            b.netns.clone(),
            SocketAddr::new(b.addr.into(), HTTP_PORT + TLS_OFFSET),
        ),
    ] {
        let ok = in_netns(&ns, move || {
            (0..200).any(|_| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() || {
                    thread::sleep(Duration::from_millis(25));
                    false
                }
            })
        })?;
        anyhow::ensure!(ok, "haproxy did not listen on {addr} (see {d})");
    }
    Ok(pids)
}

impl Bench {
    /// All figures of one path. `via`: the address the client connects to instead of the
    /// server's (a local proxy); `pids`: the proxy processes to account CPU and memory to.
    fn measure(&mut self, name: &str, via: Option<IpAddr>, pids: &[u32]) -> anyhow::Result<Row> {
        let dst_ip = via.unwrap_or(self.server.ip());
        let rounds = self.a.rounds;
        let secs = self.a.secs;
        eprintln!("== {name}");
        // Check the path works end to end before measuring.
        let http = SocketAddr::new(dst_ip, HTTP_PORT);
        let ns = self.client_ns.clone();
        in_netns(&ns, move || paced_http(http, 50, 1))?
            .with_context(|| format!("{name}: HTTP through the path fails"))?;

        let mut row = Row {
            name: name.into(),
            ..Row::default()
        };
        // Memory first, while the proxies are fresh (later runs leave freed memory in their
        // allocators, which would hide growth).
        let only_some = self.a.only_paced
            || self.a.only_newconn
            || self.a.only_many
            || self.a.only_bulk
            || self.a.only_keepalive;
        if !pids.is_empty() && !only_some {
            match self.idle_memory(http, pids) {
                Ok(mem) => {
                    row.mem = mem.per_conn;
                    row.mem_kept = mem.kept;
                }
                Err(e) => {
                    eprintln!("  idle connections failed: {e:#}");
                    row.mem_failed = Some(format!("{e:#}"));
                }
            }
        }
        if self.a.only_idle {
            return Ok(row);
        }

        let url = format!("http://{dst_ip}:{HTTP_PORT}/");
        if !only_some || self.a.only_bulk || self.a.only_keepalive {
            // Bulk, 1 and 8 streams; CPU of the proxies during the 1-stream runs. (The L7 rows
            // decide HTTP requests; iperf3's stream is not HTTP and stays L4 there: not measured.)
            let bulk_rounds = if name.contains("L7") || self.a.only_keepalive {
                0
            } else {
                rounds
            };
            let mut b1 = Vec::new();
            let mut b8 = Vec::new();
            let mut cpu = Vec::new();
            for r in 0..bulk_rounds {
                // A failed run is reported (under the table) and leaves the other rounds' median.
                let c0 = cpu_secs(pids)?;
                let one = self.iperf(dst_ip, 1);
                let c1 = cpu_secs(pids)?;
                let gbps = match one {
                    Ok((gbps, bytes)) => {
                        b1.push(gbps);
                        if !pids.is_empty() {
                            cpu.push((c1 - c0) / (bytes / 1e9));
                        }
                        format!(
                            "{gbps:.2} Gbit/s ({:.2} CPU-s/GB)",
                            cpu.last().copied().unwrap_or(0.0)
                        )
                    }
                    Err(e) => {
                        row.failures
                            .push(format!("bulk round {r}, 1 stream: {e:#}"));
                        format!("failed: {e:#}")
                    }
                };
                let gbps8 = match self.iperf(dst_ip, 8) {
                    Ok((g, _)) => {
                        b8.push(g);
                        format!("{g:.2}")
                    }
                    Err(e) => {
                        row.failures
                            .push(format!("bulk round {r}, 8 streams: {e:#}"));
                        format!("failed: {e:#}")
                    }
                };
                eprintln!("  bulk round {r}: 1 stream {gbps}, 8 streams {gbps8}");
            }
            row.bulk1 = (!b1.is_empty()).then(|| median(&b1));
            row.bulk8 = (!b8.is_empty()).then(|| median(&b8));
            row.cpu_per_gb = (!cpu.is_empty()).then(|| median(&cpu));
            if self.a.only_bulk {
                return Ok(row);
            }

            // Keep-alive at saturation.
            let (mut rps, mut p50, mut p99, mut cpr) = (vec![], vec![], vec![], vec![]);
            for r in 0..rounds {
                let c0 = cpu_secs(pids)?;
                let w = self.wrk(&url, 16, secs, false)?;
                let c1 = cpu_secs(pids)?;
                if !pids.is_empty() {
                    cpr.push((c1 - c0) / w.requests * 1e6);
                }
                eprintln!(
                    "  keep-alive round {r}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
                    w.rps, w.p50, w.p99
                );
                rps.push(w.rps);
                p50.push(w.p50);
                p99.push(w.p99);
            }
            row.ka_rps = Some(median(&rps));
            row.ka_p50 = Some(median(&p50));
            row.ka_p99 = Some(median(&p99));
            row.ka_cpu_us = (!cpr.is_empty()).then(|| median(&cpr));
            if self.a.only_keepalive {
                return Ok(row);
            }
        }

        if !self.a.only_newconn && !self.a.only_many {
            // Paced keep-alive.
            let (mut q50, mut q99) = (vec![], vec![]);
            for r in 0..rounds {
                let ns = self.client_ns.clone();
                let rate = self.a.rate;
                let (a, b) = in_netns(&ns, move || paced_http(http, rate, secs))??;
                eprintln!("  paced round {r}: p50 {a:.3} ms p99 {b:.3} ms");
                q50.push(a);
                q99.push(b);
            }
            row.paced_p50 = Some(median(&q50));
            row.paced_p99 = Some(median(&q99));
            row.paced_spread = Some(spread(&q99));

            // Paced keep-alive again while both nodes reload a policy of RELOAD_RULES rules
            // every RELOAD_EVERY: decisions and the data path must not wait for the parse.
            if name.starts_with("eastwall") {
                self.paced_while_reloading(http, &mut row)?;
            }
        }
        if !self.a.only_newconn {
            // Paced over many keep-alive connections at once.
            for &(conns, rate) in &self.a.many.clone() {
                let mut runs = Vec::new();
                for r in 0..rounds {
                    let ns = self.client_ns.clone();
                    match in_netns(&ns, move || paced_many(http, conns, rate, secs))? {
                        Ok(f) => {
                            eprintln!(
                                "  paced {rate} req/s over {conns} connections, round {r}: p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms, {:.0} req/s achieved",
                                f.p50, f.p99, f.p999, f.achieved
                            );
                            runs.push(f);
                        }
                        Err(e) => row.failures.push(format!(
                            "paced {rate} req/s over {conns} connections, round {r}: {e:#}"
                        )),
                    }
                }
                row.many.push(PacedFigures::median(&runs));
            }
        }
        if self.a.only_paced || self.a.only_many {
            return Ok(row);
        }

        // New connections per second, and the proxies' CPU per connection (what a record per
        // connection costs shows here: the flow log and the export write one per connection).
        let mut cps = vec![];
        let mut cpc = vec![];
        for r in 0..rounds {
            let c0 = cpu_secs(pids)?;
            let w = self.wrk(&url, 16, secs, true)?;
            let c1 = cpu_secs(pids)?;
            if !pids.is_empty() && w.requests > 0.0 {
                cpc.push((c1 - c0) / w.requests * 1e6);
            }
            eprintln!(
                "  new connections round {r}: {:.0}/s, {:.1} µs proxy CPU each",
                w.rps,
                cpc.last().copied().unwrap_or(0.0)
            );
            cps.push(w.rps);
            // Let TIME_WAIT sockets of the previous round age a little.
            thread::sleep(Duration::from_secs(1));
        }
        row.cps = Some(median(&cps));
        row.cps_cpu_us = (!cpc.is_empty()).then(|| median(&cpc));
        if self.a.only_newconn {
            return Ok(row);
        }

        // UDP and DNS (not through HAProxy, which carries TCP only).
        if via.is_none() {
            self.measure_udp(&mut row)?;
        }
        Ok(row)
    }

    /// The paced keep-alive figures while every node reloads a policy of [`RELOAD_RULES`]
    /// rules every [`RELOAD_EVERY`] (the row's policy, then filler rules that match none of
    /// the bench's traffic; two variants, so every write is a change).
    fn paced_while_reloading(&self, http: SocketAddr, row: &mut Row) -> anyhow::Result<()> {
        let base = self.cloud.policy().to_owned();
        let variants = Arc::new([0, 1].map(|v| with_filler_rules(&base, self.a.reload_rules, v)));
        let files: Arc<Vec<PathBuf>> = Arc::new(
            self.cloud
                .nodes
                .iter()
                .map(|n| n.config.with_file_name("policy.yaml"))
                .collect(),
        );
        let hosts: Vec<String> = self.cloud.nodes.iter().map(|n| n.host.clone()).collect();
        let reloads = |result: &str| -> u64 {
            hosts
                .iter()
                .map(|h| {
                    self.cloud.metric(
                        h,
                        &format!("eastwall_policy_reloads_total{{result=\"{result}\"}}"),
                    )
                })
                .sum()
        };
        let (ok0, err0) = (reloads("ok"), reloads("error"));
        let mut q99 = Vec::new();
        for r in 0..self.a.rounds {
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let (stop, files, variants) = (stop.clone(), files.clone(), variants.clone());
                thread::spawn(move || -> anyhow::Result<usize> {
                    let mut writes = 0;
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // As an operator's tool does: write aside, then rename over.
                        for f in files.iter() {
                            let tmp = f.with_extension("yaml.new");
                            std::fs::write(&tmp, &variants[writes % 2])?;
                            std::fs::rename(&tmp, f)?;
                        }
                        writes += 1;
                        let next = RELOAD_EVERY * writes as u32;
                        while !stop.load(Ordering::Relaxed) && start.elapsed() < next {
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                    Ok(writes)
                })
            };
            let ns = self.client_ns.clone();
            let (rate, secs) = (self.a.rate, self.a.secs);
            let paced = in_netns(&ns, move || paced_http(http, rate, secs));
            stop.store(true, Ordering::Relaxed);
            let writes = writer
                .join()
                .map_err(|_| anyhow::anyhow!("the policy writer panicked"))??;
            let (_, b) = paced??;
            eprintln!(
                "  paced round {r} while reloading {} rules ({writes} writes): p99 {b:.3} ms",
                self.a.reload_rules
            );
            q99.push(b);
        }
        // The nodes notice a change within their poll; give the last one time to land.
        thread::sleep(Duration::from_secs(2));
        let (ok, err) = (reloads("ok") - ok0, reloads("error") - err0);
        anyhow::ensure!(
            err == 0,
            "{err} reloads of the {}-rule policy failed",
            self.a.reload_rules
        );
        eprintln!(
            "  {ok} reloads of {} rules applied across the nodes",
            self.a.reload_rules
        );
        row.reloads = Some(ok);
        row.paced_reload_p99 = Some(median(&q99));
        // Back to the row's own policy, for the figures that follow.
        for f in files.iter() {
            std::fs::write(f, &base)?;
        }
        thread::sleep(Duration::from_secs(2));
        Ok(())
    }

    /// The UDP figures of a path: paced echo latency, echo datagrams/s, DNS queries/s.
    fn measure_udp(&self, row: &mut Row) -> anyhow::Result<()> {
        let (rounds, secs, rate) = (self.a.rounds, self.a.secs, self.a.rate);
        let echo = SocketAddr::new(self.server.ip(), UDP_PORT);
        let dns = SocketAddr::new(self.server.ip(), 53);
        let (mut q50, mut q99, mut dps, mut qps) = (vec![], vec![], vec![], vec![]);
        for r in 0..rounds {
            let ns = self.client_ns.clone();
            match in_netns(&ns, move || paced_udp(echo, rate, secs))? {
                Ok((a, b)) => {
                    eprintln!("  paced UDP round {r}: p50 {a:.3} ms p99 {b:.3} ms");
                    q50.push(a);
                    q99.push(b);
                }
                Err(e) => row.failures.push(format!("paced UDP round {r}: {e:#}")),
            }
            let ns = self.client_ns.clone();
            match in_netns(&ns, move || {
                udp_rate(echo, secs, |i| format!("ping {i}").into_bytes())
            })? {
                Ok(v) => {
                    eprintln!("  UDP echo round {r}: {v:.0} datagrams/s");
                    dps.push(v);
                }
                Err(e) => row.failures.push(format!("UDP echo round {r}: {e:#}")),
            }
            let ns = self.client_ns.clone();
            match in_netns(&ns, move || udp_rate(dns, secs, dns_query))? {
                Ok(v) => {
                    eprintln!("  DNS round {r}: {v:.0} queries/s");
                    qps.push(v);
                }
                Err(e) => row.failures.push(format!("DNS round {r}: {e:#}")),
            }
        }
        let med = |v: &[f64]| (!v.is_empty()).then(|| median(v));
        row.udp_p50 = med(&q50);
        row.udp_p99 = med(&q99);
        row.udp_dps = med(&dps);
        row.dns_qps = med(&qps);
        Ok(())
    }

    /// RSS growth per idle proxied connection of each process in `pids`, and the share of
    /// that growth still held [`SETTLE`] after the connections closed (an allocator that
    /// keeps its peak holds 100%): a warm-up, a baseline, then per round `n` connections
    /// opened, held, measured and closed, waiting (up to [`SETTLE`]) for the memory to come
    /// back before the next round.
    fn idle_memory(&self, http: SocketAddr, pids: &[u32]) -> anyhow::Result<IdleMemory> {
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
        let mut kept: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
        let n = idle_count(self.a.idle);
        let all_rss = || -> anyhow::Result<Vec<f64>> {
            pids.iter().map(|&p| rss(p).map(|b| b as f64)).collect()
        };
        let mib = |v: &[f64]| {
            v.iter()
                .map(|b| (b / 1048576.0).round())
                .collect::<Vec<_>>()
        };
        // Warm up (tunnel connection, pools), then take the baseline.
        drop(self.idle_open(http, 20)?);
        thread::sleep(Duration::from_millis(500));
        let base = all_rss()?;
        for r in 0..self.a.rounds {
            let held = self.idle_open(http, n)?;
            thread::sleep(Duration::from_secs(1));
            let open = all_rss()?;
            for i in 0..pids.len() {
                per[i].push((open[i] - base[i]) / held.len() as f64);
            }
            drop(held);
            let closed_at = Instant::now();
            let share = |now: &[f64]| -> Vec<f64> {
                (0..pids.len())
                    .map(|i| {
                        let grown = (open[i] - base[i]).max(1.0);
                        ((now[i] - base[i]) / grown).clamp(0.0, 1.0)
                    })
                    .collect()
            };
            let mut now = all_rss()?;
            while closed_at.elapsed() < SETTLE && share(&now).iter().any(|&k| k > 0.1) {
                thread::sleep(Duration::from_millis(250));
                now = all_rss()?;
            }
            for (i, k) in share(&now).into_iter().enumerate() {
                kept[i].push(k * 100.0);
            }
            eprintln!(
                "  idle round {r}: {n} connections, bytes/conn {:?} (RSS MiB: baseline {:?}, open {:?}, {:.1} s after closing {:?})",
                per.iter()
                    .map(|v| v.last().copied().unwrap_or(0.0).round())
                    .collect::<Vec<_>>(),
                mib(&base),
                mib(&open),
                closed_at.elapsed().as_secs_f64(),
                mib(&now),
            );
        }
        Ok(IdleMemory {
            per_conn: per.iter().map(|v| Some(median(v))).collect(),
            kept: kept.iter().map(|v| Some(median(v))).collect(),
        })
    }

    /// Opens `n` keep-alive connections from the client to `dst` (nginx), each carrying one
    /// request and its response (so it is proxied end to end), and returns them, idle.
    fn idle_open(&self, dst: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
        let ns = self.client_ns.clone();
        in_netns(&ns, move || -> anyhow::Result<Vec<TcpStream>> {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut all = Vec::with_capacity(n);
            while all.len() < n {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "opening idle connections took over 120 s ({} open)",
                    all.len()
                );
                let batch = (n - all.len()).min(100);
                let mut b = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    b.push(s);
                }
                for s in &mut b {
                    s.write_all(REQUEST)?;
                }
                for s in b {
                    let mut r = BufReader::new(s);
                    read_response(&mut r).context("idle connection: no response")?;
                    all.push(r.into_inner());
                }
            }
            Ok(all)
        })?
    }

    /// iperf3 from the client: (Gbit/s received, bytes received).
    fn iperf(&self, ip: IpAddr, streams: u32) -> anyhow::Result<(f64, f64)> {
        let secs = self.a.secs.to_string();
        let limit = (self.a.secs + 30).to_string();
        let out = self.cloud.lab.exec(
            &self.client_ns,
            &[
                "timeout",
                &limit,
                "iperf3",
                "-c",
                &ip.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &secs,
                "-P",
                &streams.to_string(),
                "-J",
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
        if let Some(e) = v.get("error") {
            bail!("iperf3: {e}");
        }
        let sum = &v["end"]["sum_received"];
        let bps = sum["bits_per_second"]
            .as_f64()
            .context("iperf3: no bits_per_second")?;
        let bytes = sum["bytes"].as_f64().context("iperf3: no bytes")?;
        Ok((bps / 1e9, bytes))
    }

    fn wrk(&self, url: &str, conns: u32, secs: u64, close: bool) -> anyhow::Result<Wrk> {
        let limit = (secs + 30).to_string();
        let c = conns.to_string();
        let d = format!("{secs}s");
        let mut args = vec![
            "timeout",
            &limit,
            "wrk",
            "-t1",
            "-c",
            &c,
            "-d",
            &d,
            "--latency",
            "--timeout",
            "5s",
        ];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(url);
        let out = self.cloud.lab.exec(&self.client_ns, &args)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_wrk(&text).with_context(|| {
            format!(
                "wrk output:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `perf record -g` of the proxy processes during an extra bulk run, an extra keep-alive
    /// run and an extra new-connection run.
    fn profile(&mut self, dir: &Path, pids: &[u32]) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let url = format!("http://{}:{HTTP_PORT}/", self.server.ip());
        for what in ["bulk", "keepalive", "newconn", "paced"] {
            let data = dir.join(format!("{what}.data"));
            let mut perf = Command::new("perf");
            perf.args(["record", "-g", "-F", "999", "-p", &list, "-o"])
                .arg(&data)
                .args(["--", "sleep", &self.a.secs.to_string()]);
            let mut p = Procs::default();
            p.spawn(perf, &dir.join(format!("{what}.log")))?;
            thread::sleep(Duration::from_millis(300));
            match what {
                "bulk" => {
                    self.iperf(self.server.ip(), 1)?;
                }
                "keepalive" => {
                    self.wrk(&url, 16, self.a.secs, false)?;
                }
                "paced" => {
                    // The first of the many-connection scenarios.
                    let (conns, rate) = self.a.many.first().copied().unwrap_or((16, 1000));
                    let http = SocketAddr::new(self.server.ip(), HTTP_PORT);
                    let secs = self.a.secs;
                    in_netns(&self.client_ns, move || paced_many(http, conns, rate, secs))??;
                }
                _ => {
                    self.wrk(&url, 16, self.a.secs, true)?;
                }
            }
            // perf ends by itself after `sleep`; wait for it to write its file.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(c) = p.0.first_mut()
                    && c.try_wait()?.is_some()
                {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            p.stop_all();
            eprintln!("  perf data: {}", data.display());
        }
        Ok(())
    }
}

struct Wrk {
    rps: f64,
    requests: f64,
    p50: f64,
    p99: f64,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: eastwall-bench\r\n\r\n";

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(r: &mut BufReader<TcpStream>) -> anyhow::Result<()> {
    let mut len = None;
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(r.read_line(&mut line)? > 0, "connection closed");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_owned())
        {
            len = Some(v.parse::<usize>()?);
        }
    }
    let mut body = vec![0u8; len.context("no Content-Length")?];
    r.read_exact(&mut body)?;
    Ok(())
}

/// The open-file limit of this process (soft; the hard limit may not be raisable here).
fn nofile_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(1024)
}

/// How many idle connections fit: an HAProxy holds two descriptors per connection and
/// inherits this process's limit; this process holds one per connection.
fn idle_count(wanted: usize) -> usize {
    let limit = nofile_limit();
    let fit = limit.saturating_sub(2000) / 2;
    if fit < wanted {
        eprintln!(
            "  open-file limit {limit}: {fit} idle connections instead of {wanted} (raise `ulimit -n`)"
        );
    }
    wanted.min(fit).max(10)
}

/// Parses wrk's `--latency` output (latencies in ms).
fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk {
        rps: f64::NAN,
        requests: f64::NAN,
        p50: f64::NAN,
        p99: f64::NAN,
    };
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse()?,
            [n, "requests", "in", ..] => w.requests = n.parse()?,
            ["50%", v] => w.p50 = duration_ms(v)?,
            ["99%", v] => w.p99 = duration_ms(v)?,
            ["Non-2xx", ..] | ["Socket", "errors:", ..] => eprintln!("  wrk: {}", line.trim()),
            _ => {}
        }
    }
    anyhow::ensure!(
        w.rps.is_finite() && w.requests.is_finite() && w.p50.is_finite() && w.p99.is_finite(),
        "unreadable wrk output"
    );
    Ok(w)
}

fn duration_ms(v: &str) -> anyhow::Result<f64> {
    for (unit, f) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)] {
        if let Some(n) = v.strip_suffix(unit) {
            return Ok(n.parse::<f64>()? * f);
        }
    }
    bail!("unknown duration {v}")
}

/// One keep-alive connection, `rate` requests per second for `secs` seconds (after 100
/// warm-up requests): p50 and p99 in ms of send-to-last-byte time. Requests are sent on a
/// fixed schedule; one that could not be sent on time (the previous one still running) is
/// measured from its scheduled time, so stalls are not hidden (no coordinated omission).
fn paced_http(dst: SocketAddr, rate: u64, secs: u64) -> anyhow::Result<(f64, f64)> {
    let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut one = |r: &mut BufReader<TcpStream>| -> anyhow::Result<()> {
        w.write_all(REQUEST)?;
        read_response(r)
    };
    for _ in 0..100 {
        one(&mut r)?;
    }
    let n = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        let (ms, _) = on_schedule(due, interval, || one(&mut r))?;
        lat.push(ms);
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(secs * 3 + 10),
            "paced run overran"
        );
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat[n / 2], lat[(n * 99 / 100).min(n - 1)]))
}

/// Waits until `due`, runs `exchange`, and returns its latency in ms and when it ended. One
/// that could not start within `interval` of `due` (the schedule slipped) counts from `due`,
/// so stalls are not hidden (no coordinated omission).
fn on_schedule(
    due: Instant,
    interval: Duration,
    exchange: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Instant)> {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
    let sent = Instant::now();
    let from = if sent > due + interval { due } else { sent };
    exchange()?;
    let end = Instant::now();
    Ok(((end - from).as_secs_f64() * 1e3, end))
}

/// Latency figures of a paced run over many connections (ms), and the rate it kept.
#[derive(Clone, Copy)]
struct PacedFigures {
    p50: f64,
    p99: f64,
    p999: f64,
    /// Requests answered per second of the run (the schedule's rate when it was kept).
    achieved: f64,
}

impl PacedFigures {
    /// The median of each figure over the rounds; `None` without a round.
    fn median(runs: &[PacedFigures]) -> Option<PacedFigures> {
        let m = |f: fn(&PacedFigures) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        (!runs.is_empty()).then(|| PacedFigures {
            p50: m(|f| f.p50),
            p99: m(|f| f.p99),
            p999: m(|f| f.p999),
            achieved: m(|f| f.achieved),
        })
    }
}

/// `conns` keep-alive connections, `rate` requests per second in total for `secs` seconds,
/// spread evenly: connection k sends at k/rate, (k + conns)/rate, ... (after 20 warm-up
/// requests on each). Latency as in [`paced_http`], per connection: a request sent more
/// than one of its connection's intervals late counts from when it was due.
fn paced_many(dst: SocketAddr, conns: usize, rate: u64, secs: u64) -> anyhow::Result<PacedFigures> {
    // Connected here, in the client's namespace; the threads only use them.
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        streams.push(s);
    }
    let per_conn = (rate * secs) as usize / conns;
    let step = Duration::from_secs_f64(1.0 / rate as f64);
    let interval = step * conns as u32;
    let barrier = Arc::new(std::sync::Barrier::new(conns + 1));
    let start_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut threads = Vec::with_capacity(conns);
    for (k, s) in streams.into_iter().enumerate() {
        let (barrier, start_at) = (barrier.clone(), start_at.clone());
        threads.push(thread::spawn(
            move || -> anyhow::Result<(Vec<(f64, f64)>, Instant)> {
                let mut w = s.try_clone()?;
                let mut r = BufReader::new(s);
                let mut one = |r: &mut BufReader<TcpStream>| -> anyhow::Result<()> {
                    w.write_all(REQUEST)?;
                    read_response(r)
                };
                let warm = (0..20).try_for_each(|_| one(&mut r));
                // Once every connection is warm, the main thread sets the start; then all go.
                barrier.wait();
                barrier.wait();
                warm?;
                let start = *start_at.get().context("no start time")?;
                let mut lat = Vec::with_capacity(per_conn);
                let mut last = start;
                for i in 0..per_conn {
                    let due = start + step * k as u32 + interval * i as u32;
                    let (ms, end) = on_schedule(due, interval, || one(&mut r))?;
                    last = end;
                    lat.push((ms, (due - start).as_secs_f64()));
                    anyhow::ensure!(
                        last - start < Duration::from_secs(secs * 3 + 10),
                        "paced run overran"
                    );
                }
                Ok((lat, last))
            },
        ));
    }
    // EASTWALL_BENCH_SLOW=FILE: every request slower than 1 ms (seconds into the run, ms),
    // to see whether the slow ones come together (a stall) or alone.
    let slow_log = std::env::var_os("EASTWALL_BENCH_SLOW");
    let mut slow = Vec::new();
    barrier.wait();
    let _ = start_at.set(Instant::now() + Duration::from_millis(10));
    barrier.wait();
    let start = *start_at.get().context("no start time")?;
    let mut lat = Vec::with_capacity(per_conn * conns);
    let mut end = start;
    for t in threads {
        let (l, last) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a paced client thread panicked"))??;
        slow.extend(
            l.iter()
                .filter(|(ms, _)| *ms > 1.0)
                .map(|(ms, at)| (*at, *ms)),
        );
        lat.extend(l.into_iter().map(|(ms, _)| ms));
        end = end.max(last);
    }
    anyhow::ensure!(!lat.is_empty(), "no requests");
    if let Some(f) = slow_log {
        slow.sort_by(|a, b| a.0.total_cmp(&b.0));
        let text: String = slow
            .iter()
            .map(|(at, ms)| format!("{at:.4} {ms:.3}\n"))
            .collect();
        std::fs::write(f, text)?;
    }
    lat.sort_by(f64::total_cmp);
    let n = lat.len();
    let at = |q: usize| lat[(n * q / 1000).min(n - 1)];
    Ok(PacedFigures {
        p50: at(500),
        p99: at(990),
        p999: at(999),
        achieved: n as f64 / (end - start).as_secs_f64().max(1e-3),
    })
}

/// One UDP socket, `rate` echo exchanges per second for `secs` seconds (after 100 warm-up
/// exchanges): p50 and p99 in ms, measured as `paced_http` does (no coordinated omission).
/// A datagram lost on the way fails the run (it would otherwise hide as a 1 s latency).
fn paced_udp(dst: SocketAddr, rate: u64, secs: u64) -> anyhow::Result<(f64, f64)> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    s.connect(dst)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 2048];
    let mut one = |i: usize| -> anyhow::Result<()> {
        let msg = format!("ping {i}");
        s.send(msg.as_bytes())?;
        loop {
            let n = s.recv(&mut buf).context("no answer within 1 s")?;
            // An answer to an earlier, late exchange is skipped.
            if buf[..n].ends_with(msg.as_bytes()) {
                return Ok(());
            }
        }
    };
    for i in 0..100 {
        one(i)?;
    }
    let n = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        let (ms, _) = on_schedule(due, interval, || one(100 + i))?;
        lat.push(ms);
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(secs * 3 + 10),
            "paced run overran"
        );
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat[n / 2], lat[(n * 99 / 100).min(n - 1)]))
}

/// Answers per second over `secs` seconds from one UDP socket keeping [`UDP_WINDOW`]
/// requests (`request(i)`) in flight: each answer sends the next request; a request whose
/// answer is lost is replaced after 200 ms (and counts for nothing).
fn udp_rate(dst: SocketAddr, secs: u64, request: fn(usize) -> Vec<u8>) -> anyhow::Result<f64> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    s.connect(dst)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 4096];
    let mut sent = 0usize;
    for _ in 0..UDP_WINDOW {
        s.send(&request(sent))?;
        sent += 1;
    }
    let (mut answers, mut lost) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        match s.recv(&mut buf) {
            Ok(_) => answers += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                lost += 1;
                anyhow::ensure!(lost < 1000, "no answers ({answers} before)");
            }
            Err(e) => return Err(e.into()),
        }
        s.send(&request(sent))?;
        sent += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    anyhow::ensure!(answers > 0, "no answers");
    Ok(answers as f64 / elapsed)
}

/// A standard query (recursion desired) for [`DNS_NAME`], type A, id from `i`.
fn dns_query(i: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&(i as u16).to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in DNS_NAME.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// User + system CPU seconds of `pids` (all their threads).
fn cpu_secs(pids: &[u32]) -> anyhow::Result<f64> {
    let tck = clk_tck();
    let mut total = 0.0;
    for p in pids {
        let f = proc_stat(*p)?;
        // Fields 14 and 15 (utime, stime).
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        total += ticks / tck;
    }
    Ok(total)
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How a figure compares across paths.
#[derive(Clone, Copy)]
enum Kind {
    /// More is better: value and ratios.
    Rate,
    /// Latency: value, ratios and the added time.
    Latency,
    /// A cost of the proxies only (no direct value): value and ratio to haproxy.
    Cost,
}

fn render(rows: &[Row], a: &Args) -> String {
    let direct = rows.iter().find(|r| r.name == "direct");
    let haproxy = rows.iter().find(|r| r.name == "haproxy-mtls");
    type Get = fn(&Row) -> Option<f64>;
    let figures: Vec<(String, Kind, &str, Get)> = vec![
        (
            "bulk, 1 stream (iperf3)".into(),
            Kind::Rate,
            "Gbit/s",
            |r| r.bulk1,
        ),
        (
            "bulk, 8 streams (iperf3 -P 8)".into(),
            Kind::Rate,
            "Gbit/s",
            |r| r.bulk8,
        ),
        (
            "proxy CPU per GB, 1-stream bulk (both ends)".into(),
            Kind::Cost,
            "s",
            |r| r.cpu_per_gb,
        ),
        (
            "keep-alive req/s at saturation (wrk -t1 -c16)".into(),
            Kind::Rate,
            "",
            |r| r.ka_rps,
        ),
        ("  p50 at saturation".into(), Kind::Latency, "ms", |r| {
            r.ka_p50
        }),
        ("  p99 at saturation".into(), Kind::Latency, "ms", |r| {
            r.ka_p99
        }),
        (
            "proxy CPU per keep-alive request (both ends)".into(),
            Kind::Cost,
            "µs",
            |r| r.ka_cpu_us,
        ),
        (
            format!("paced {} req/s keep-alive, p50", a.rate),
            Kind::Latency,
            "ms",
            |r| r.paced_p50,
        ),
        (
            format!("paced {} req/s keep-alive, p99", a.rate),
            Kind::Latency,
            "ms",
            |r| r.paced_p99,
        ),
        (
            "  p99 spread over the rounds (the noise)".into(),
            Kind::Cost,
            "ms",
            |r| r.paced_spread,
        ),
        (
            format!(
                "  p99 while the nodes reload a {}-rule policy every {} s",
                a.reload_rules,
                RELOAD_EVERY.as_secs()
            ),
            Kind::Latency,
            "ms",
            |r| r.paced_reload_p99,
        ),
        (
            "new connections/s (wrk -c16, Connection: close)".into(),
            Kind::Rate,
            "",
            |r| r.cps,
        ),
        (
            "proxy CPU per new connection (both ends)".into(),
            Kind::Cost,
            "µs",
            |r| r.cps_cpu_us,
        ),
        (
            format!("paced {} /s UDP echo exchange, p50", a.rate),
            Kind::Latency,
            "ms",
            |r| r.udp_p50,
        ),
        (
            format!("paced {} /s UDP echo exchange, p99", a.rate),
            Kind::Latency,
            "ms",
            |r| r.udp_p99,
        ),
        (
            format!("UDP echo datagrams/s ({UDP_WINDOW} in flight)"),
            Kind::Rate,
            "",
            |r| r.udp_dps,
        ),
        (
            format!("DNS queries/s, dnsmasq ({UDP_WINDOW} in flight)"),
            Kind::Rate,
            "",
            |r| r.dns_qps,
        ),
        (
            "RSS per idle proxied connection, client-side proxy".into(),
            Kind::Cost,
            "B",
            |r| r.mem.first().copied().flatten(),
        ),
        (
            "RSS per idle proxied connection, server-side proxy".into(),
            Kind::Cost,
            "B",
            |r| r.mem.get(1).copied().flatten(),
        ),
        (
            "RSS growth still held 15 s after the idle connections closed, client side".into(),
            Kind::Cost,
            "%",
            |r| r.mem_kept.first().copied().flatten(),
        ),
        (
            "RSS growth still held 15 s after the idle connections closed, server side".into(),
            Kind::Cost,
            "%",
            |r| r.mem_kept.get(1).copied().flatten(),
        ),
    ];
    let mut s = String::new();
    s.push_str("| figure |");
    for r in rows {
        s.push_str(&format!(" {} |", r.name));
    }
    s.push_str("\n|---|");
    for _ in rows {
        s.push_str("---|");
    }
    s.push('\n');
    let line = |s: &mut String,
                label: &str,
                kind: &Kind,
                unit: &str,
                get: &dyn Fn(&Row) -> Option<f64>| {
        // A figure no path has (not asked for in this run) gets no line.
        if rows
            .iter()
            .all(|r| get(r).is_none() && !(label.starts_with("RSS") && r.mem_failed.is_some()))
        {
            return;
        }
        s.push_str(&format!("| {label} |"));
        for r in rows {
            let failed = r.mem_failed.as_ref().filter(|_| label.starts_with("RSS"));
            let cell = match (&r.note, get(r)) {
                (Some(n), _) => n.clone(),
                (None, _) if failed.is_some() => format!("failed: {}", failed.unwrap()),
                (None, None) => "–".into(),
                (None, Some(v)) => {
                    let d = direct.and_then(get).filter(|_| r.name != "direct");
                    // (A share of 0 has no ratio.)
                    let h = haproxy
                        .and_then(get)
                        .filter(|h| *h > 0.0 && r.name != "haproxy-mtls" && r.name != "direct");
                    let mut c = fmt_val(v, unit);
                    let mut rel = Vec::new();
                    if let (Some(d), Kind::Rate | Kind::Latency) = (d, kind) {
                        rel.push(format!("{:.2}× d", v / d));
                        if let Kind::Latency = kind {
                            rel.push(format!("{:+.2} ms", v - d));
                        }
                    }
                    if let Some(h) = h {
                        rel.push(format!("{:.2}× h", v / h));
                    }
                    if !rel.is_empty() {
                        c.push_str(&format!(" ({})", rel.join(", ")));
                    }
                    c
                }
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    };
    for (label, kind, unit, get) in &figures {
        line(&mut s, label, kind, unit, get);
        if label.starts_with("  p99 while the nodes reload") {
            for (i, (conns, rate)) in a.many.iter().enumerate() {
                let fig = move |r: &Row| r.many.get(i).copied().flatten();
                let head = format!("paced {rate} req/s over {conns} keep-alive connections");
                line(
                    &mut s,
                    &format!("{head}, p50"),
                    &Kind::Latency,
                    "ms",
                    &|r| fig(r).map(|f| f.p50),
                );
                line(&mut s, "  p99", &Kind::Latency, "ms", &|r| {
                    fig(r).map(|f| f.p99)
                });
                line(&mut s, "  p99.9", &Kind::Latency, "ms", &|r| {
                    fig(r).map(|f| f.p999)
                });
                line(&mut s, "  achieved rate", &Kind::Rate, "req/s", &|r| {
                    fig(r).map(|f| f.achieved)
                });
            }
        }
    }
    s.push_str(&format!(
        "\nMedians of {} rounds; {} s per bulk/wrk/paced run; idle connections: up to {}. \
         `d` = ratio to direct, `h` = ratio to haproxy-mtls.\n",
        a.rounds, a.secs, a.idle
    ));
    if a.loss > 0 {
        s.push_str(&format!(
            "Packets lost at random on the LAN between the hosts: {:.1}%.\n",
            a.loss as f64 / 10.0
        ));
    }
    for r in rows {
        for f in &r.failures {
            s.push_str(&format!("\nFailed run, {}: {f}", r.name));
        }
    }
    if rows.iter().any(|r| !r.failures.is_empty()) {
        s.push('\n');
    }
    s
}

fn fmt_val(v: f64, unit: &str) -> String {
    match unit {
        "" => format!("{v:.0}"),
        "B" if v.abs() >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        "B" => format!("{v:.0} B"),
        "µs" => format!("{v:.0} µs"),
        "%" => format!("{v:.0}%"),
        "ms" => format!("{v:.3} ms"),
        u => format!("{v:.2} {u}"),
    }
}
