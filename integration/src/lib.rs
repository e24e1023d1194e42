//! Harness for eastwall's end-to-end tests: a [`Cloud`] of hosts and workloads in network
//! namespaces (built by `eastwall_lab`), real `eastwall node` processes on its hosts, and
//! helpers that read like the scenario: "start nodes", "connect from web-dev to db-prod:5432",
//! "the flow record of that connection".
//!
//! Tests need root. Every cloud has unique names and is removed on drop, also on panic.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub mod eve_schema;

pub use eastwall_lab::{CaHandle, DnsAnswer, Lab, NodeHandle, Outcome, Probe, UdpProbe};
use serde_json::Value;

/// The trust domain of every test cloud.
pub const TRUST_DOMAIN: &str = "corp.example";

/// The SPIFFE ID the registry gives workload `name` by default.
pub fn spiffe(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/wl/{name}")
}

/// How long a client waits before calling a connection dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `eastwall` binary built beside this test.
pub fn eastwall_bin() -> PathBuf {
    // Tests run from target/<profile>/deps; the binary is in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let bin = dir.join("eastwall");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace` or nextest",
        bin.display()
    );
    bin
}

/// Panics unless Prometheus's own linter (`promtool check metrics`, Debian's `prometheus`
/// package) accepts the exposition `text`: names, units, types, help.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup-debian.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to its end and returns what it printed; panics, with the command and its
/// output, unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the future `make` returns to its end, on a runtime of its own, inside network
/// namespace `netns`: a client of a service, from a lab host.
pub fn block_on_in<T, F>(netns: &str, make: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    eastwall_lab::in_netns(netns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(make())
    })
    .unwrap()
}

/// A lab with eastwall nodes.
pub struct Cloud {
    /// The namespaces.
    pub lab: Lab,
    /// Running nodes, by host.
    pub nodes: Vec<NodeHandle>,
    registry: String,
    policy: String,
    /// The `eastwall` binary nodes start from; `None`: the one built beside this program.
    binary: Option<PathBuf>,
}

/// One workload of a registry: (host, name, app, zone).
pub type Spec<'a> = (&'a str, &'a str, &'a str, &'a str);

impl Cloud {
    /// Builds hosts and workloads; the registry is generated from `workloads` (plus
    /// `extra_registry` lines appended to `spec.workloads`).
    pub fn new(
        hosts: &[&str],
        workloads: &[Spec<'_>],
        extra_registry: &str,
        policy: &str,
    ) -> Cloud {
        let mut lab = Lab::new().unwrap();
        lab.enable_identity(TRUST_DOMAIN).unwrap();
        for h in hosts {
            lab.add_host(h).unwrap();
        }
        let mut wl_yaml = String::new();
        for (host, name, app, zone) in workloads {
            let w = lab.add_workload(host, name).unwrap();
            wl_yaml.push_str(&format!(
                "    - {{name: {name}, node: {host}, addresses: [{}], app: {app}, zone: {zone}}}\n",
                w.addr
            ));
        }
        let mut nodes_yaml = String::new();
        for h in lab.hosts() {
            nodes_yaml.push_str(&format!(
                "    - {{name: {}, addresses: [{}]}}\n",
                h.name, h.addr
            ));
        }
        let registry = format!(
            "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  trustDomain: {TRUST_DOMAIN}\n  nodes:\n{nodes_yaml}  workloads:\n{wl_yaml}{extra_registry}"
        );
        Cloud {
            lab,
            nodes: Vec::new(),
            registry,
            policy: policy.to_owned(),
            binary: None,
        }
    }

    /// Binds workload `workload` (one of those given to [`Cloud::new`]) to `user` in the
    /// registry nodes started from now on run with (a VDI desktop belongs to its user).
    pub fn bind_user(&mut self, workload: &str, user: &str) {
        let start = format!("    - {{name: {workload}, ");
        let at = self
            .registry
            .find(&start)
            .unwrap_or_else(|| panic!("no workload {workload} in the generated registry"));
        let end = at + self.registry[at..].find("}\n").unwrap();
        self.registry.insert_str(end, &format!(", user: {user}"));
    }

    /// The policy nodes started from now on run with.
    pub fn set_policy(&mut self, policy: &str) {
        self.policy = policy.to_owned();
    }

    /// The policy text nodes started from now on run with.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// The registry text the nodes run with.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Nodes started from now on run `binary` (another build, to compare), or the one built
    /// beside this program (`None`).
    pub fn set_binary(&mut self, binary: Option<PathBuf>) {
        self.binary = binary;
    }

    /// Starts a node on each host (with extra `capture:` settings, indented four spaces).
    pub fn start_nodes(&mut self, extra_capture: &str) {
        let hosts: Vec<String> = self.lab.hosts().iter().map(|h| h.name.clone()).collect();
        for h in hosts {
            self.start_node(&h, extra_capture);
        }
    }

    /// Starts the node of `host`.
    pub fn start_node(&mut self, host: &str, extra_capture: &str) -> NodeHandle {
        let registry = self.registry.clone();
        self.start_node_with(host, &registry, extra_capture)
    }

    /// Starts the node of `host` with its own registry text (a misconfigured or compromised
    /// node).
    pub fn start_node_with(
        &mut self,
        host: &str,
        registry: &str,
        extra_capture: &str,
    ) -> NodeHandle {
        let n = self
            .lab
            .start_node(
                &self.binary.clone().unwrap_or_else(eastwall_bin),
                host,
                registry,
                &self.policy,
                extra_capture,
            )
            .unwrap();
        self.nodes.retain(|x| x.host != host);
        self.nodes.push(n.clone());
        n
    }

    /// The node of `host`, if one was started.
    pub fn started_node(&self, host: &str) -> Option<&NodeHandle> {
        self.nodes.iter().find(|n| n.host == host)
    }

    /// The node of `host`.
    pub fn node(&self, host: &str) -> &NodeHandle {
        self.nodes.iter().find(|n| n.host == host).unwrap()
    }

    /// The address of `workload`'s `port`.
    pub fn addr(&self, workload: &str, port: u16) -> SocketAddr {
        SocketAddr::new(self.lab.workload(workload).addr.into(), port)
    }

    /// Connects from `from` to `to:port` and reports what the client saw.
    pub fn connect(&self, from: &str, to: &str, port: u16) -> Probe {
        self.lab.connect(from, self.addr(to, port), CONNECT_TIMEOUT)
    }

    /// All flow records `host`'s node has written so far.
    pub fn flows(&self, host: &str) -> Vec<Value> {
        self.events(host)
            .into_iter()
            .filter(|v| v["event_type"] == "flow")
            .collect()
    }

    /// All EVE events (flow, http, dns, alert, anomaly) `host`'s node has written so far,
    /// each checked against Suricata's EVE schema ([`eve_schema`]).
    pub fn events(&self, host: &str) -> Vec<Value> {
        // Whole lines only: the node may be writing the last one.
        std::fs::read_to_string(&self.node(host).flow_log)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                let v = serde_json::from_str(l).unwrap();
                eve_schema::assert_conforms(&v);
                v
            })
            .collect()
    }

    /// Waits (up to 3 s) for a record of `host` that satisfies `pred`.
    pub fn wait_flow(&self, host: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..150 {
            if let Some(f) = self.flows(host).into_iter().find(&pred) {
                return f;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no matching flow record on {host}; records:\n{:#?}",
            self.flows(host)
        );
    }

    /// Waits (up to 3 s) until `host` has at least `n` records that satisfy `pred`; returns
    /// them all (records are written as connections end, a moment after the client saw it).
    pub fn wait_flows(&self, host: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        for _ in 0..150 {
            let found: Vec<Value> = self.flows(host).into_iter().filter(&pred).collect();
            if found.len() >= n {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let found: Vec<Value> = self.flows(host).into_iter().filter(&pred).collect();
        panic!(
            "{} matching flow records on {host}, wanted {n}; records:\n{:#?}",
            found.len(),
            self.flows(host)
        );
    }

    /// The flow record `host`'s node wrote for the client at `local` (waits for it briefly).
    pub fn flow(&self, host: &str, local: SocketAddr) -> Value {
        let node = self.node(host);
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(&node.flow_log) {
                // Whole lines only: the node may be writing the last one.
                for line in text
                    .split_inclusive('\n')
                    .filter(|l| l.ends_with('\n'))
                    .rev()
                {
                    let v: Value = serde_json::from_str(line).unwrap();
                    if v["event_type"] == "flow"
                        && v["src_port"] == local.port()
                        && v["src_ip"] == local.ip().to_string()
                    {
                        eve_schema::assert_conforms(&v);
                        return v;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(&node.flow_log).unwrap_or_default();
        panic!("no flow record for {local} on {host}; log:\n{log}");
    }

    /// GETs an admin path of `host`'s node.
    pub fn admin(&self, host: &str, path: &str) -> String {
        self.lab.admin_get(self.node(host), path).unwrap()
    }

    /// Starts `eastwall ca serve` on `host` (10.77.0.N:15009) with the cloud's registry, signing
    /// for at most `cert_secs`; nodes started afterwards obtain their workloads' certificates
    /// from it, asking for `node_cert_secs` if given.
    pub fn start_ca(
        &mut self,
        host: &str,
        cert_secs: u64,
        node_cert_secs: Option<u64>,
    ) -> CaHandle {
        let registry = self.registry.clone();
        self.lab
            .start_ca(&eastwall_bin(), host, &registry, cert_secs, node_cert_secs)
            .unwrap()
    }

    /// POSTs a certificate request for `id` to the CA service from inside `host`'s
    /// namespace with `host`'s node certificate; returns the status and body.
    pub fn ask_ca(&self, ca: &CaHandle, host: &str, id: &str) -> (u16, String) {
        use eastwall_certs::{Identity, TrustBundle, generate_csr};
        let (crt, key) = self.lab.node_cert_files(host);
        let node = Identity::from_pem(
            &std::fs::read_to_string(crt).unwrap(),
            &std::fs::read_to_string(key).unwrap(),
        )
        .unwrap();
        let bundle =
            TrustBundle::from_pem(&std::fs::read_to_string(ca.dir.join("ca.crt")).unwrap())
                .unwrap();
        let (csr, _) = generate_csr(&eastwall_identity::SpiffeId::parse(id).unwrap()).unwrap();
        let url = ca.url.clone();
        block_on_in(&self.lab.host(host).netns, move || async move {
            eastwall_node::ca::client::post_csr(&url, node, &bundle, &csr, None, None).await
        })
        .unwrap()
    }

    /// The value of metric line `name` (with its labels, e.g.
    /// `eastwall_cert_renewals_total{result="ok"}`) on `host`'s node; 0 if absent.
    pub fn metric(&self, host: &str, name: &str) -> u64 {
        let text = self.admin(host, "/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .filter(|v| v.starts_with(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The sum of every series of the metric `name` (all label values) on `host`'s node.
    pub fn metric_sum(&self, host: &str, name: &str) -> u64 {
        let text = self.admin(host, "/metrics");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<u64>().ok()
            })
            .sum()
    }

    /// Runs `eastwall ARGS` in `host`'s namespace.
    pub fn eastwall_in(&self, host: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.lab.host(host).netns])
            .arg(eastwall_bin())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Cloud {
    /// From `from`, sends `total` bytes to `to:port` (an echo service) in chunks of `chunk`
    /// with `pause` between them, and checks every byte comes back in order. Returns the
    /// bytes verified.
    pub fn echo_transfer(
        &self,
        from: &str,
        to: &str,
        port: u16,
        total: usize,
        chunk: usize,
        pause: Duration,
    ) -> anyhow::Result<usize> {
        use std::io::{BufRead, BufReader, Read, Write};
        let dst = self.addr(to, port);
        let netns = self.lab.workload(from).netns.clone();
        eastwall_lab::in_netns(&netns, move || -> anyhow::Result<usize> {
            let s = std::net::TcpStream::connect_timeout(&dst, CONNECT_TIMEOUT)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut r = BufReader::new(s.try_clone()?);
            let mut greeting = String::new();
            r.read_line(&mut greeting)?;
            let mut w = s.try_clone()?;
            let writer = std::thread::spawn(move || -> std::io::Result<()> {
                let mut sent = 0usize;
                let mut buf = vec![0u8; chunk];
                while sent < total {
                    let n = chunk.min(total - sent);
                    for (i, b) in buf[..n].iter_mut().enumerate() {
                        *b = ((sent + i) % 251) as u8;
                    }
                    w.write_all(&buf[..n])?;
                    sent += n;
                    std::thread::sleep(pause);
                }
                w.shutdown(std::net::Shutdown::Write)
            });
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            while got < total {
                let n = r.read(&mut buf)?;
                anyhow::ensure!(n > 0, "stream ended after {got} of {total} bytes");
                for (i, b) in buf[..n].iter().enumerate() {
                    anyhow::ensure!(*b == ((got + i) % 251) as u8, "byte {} differs", got + i);
                }
                got += n;
            }
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??;
            Ok(got)
        })?
    }
}

/// Connects from the given source address (which must be bindable in the calling thread's
/// namespace) to `dst`.
pub fn bound_connect(
    src: SocketAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        None,
    )?;
    sock.bind(&src.into())?;
    sock.connect_timeout(&dst.into(), timeout)?;
    Ok(sock.into())
}

/// Whether this process may build namespaces (tests skip loudly otherwise, except in CI).
pub fn require_root() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "end-to-end tests need root (network namespaces, nftables)"
    );
}

/// HTTP clients inside a workload, for the L7 scenarios.
pub mod http {
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::Cloud;

    /// A response as the client saw it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Answer {
        /// Status code.
        pub status: u16,
        /// Body, as text.
        pub body: String,
    }

    /// One request: method, path and query, body.
    pub type Req<'a> = (&'a str, &'a str, &'a str);

    fn request(host: &str, (method, path, body): Req<'_>, h2: bool) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder().method(method);
        b = if h2 {
            b.uri(format!("http://{host}{path}"))
        } else {
            b.uri(path).header("host", host)
        };
        b.header("user-agent", "eastwall-test")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn answer(r: hyper::Response<hyper::body::Incoming>) -> Result<Answer, String> {
        let status = r.status().as_u16();
        let body = r
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// From `from`, sends `requests` one after the other over ONE HTTP/1.1 keep-alive
    /// connection to `dst` (with `Host: host`). Returns the client's address and each answer,
    /// or why there was none (the connection failed or was closed before it).
    pub fn http1_session(
        c: &Cloud,
        from: &str,
        dst: SocketAddr,
        host: &str,
        requests: &[Req<'_>],
    ) -> (Option<SocketAddr>, Vec<Result<Answer, String>>) {
        let netns = c.lab.workload(from).netns.clone();
        let host = host.to_owned();
        let reqs: Vec<(String, String, String)> = requests
            .iter()
            .map(|(m, p, b)| (m.to_string(), p.to_string(), b.to_string()))
            .collect();
        eastwall_lab::in_netns(&netns, move || {
            runtime().block_on(async move {
                let tcp = match tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio::net::TcpStream::connect(dst),
                )
                .await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => return (None, vec![Err(e.to_string())]),
                    Err(_) => return (None, vec![Err("connect timed out".into())]),
                };
                let local = tcp.local_addr().ok();
                let (mut send, conn) =
                    match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                        Ok(x) => x,
                        Err(e) => return (local, vec![Err(e.to_string())]),
                    };
                tokio::spawn(conn);
                let mut out = Vec::new();
                for (m, p, b) in &reqs {
                    let r = async {
                        send.ready().await.map_err(|e| e.to_string())?;
                        let resp = tokio::time::timeout(
                            Duration::from_secs(5),
                            send.send_request(request(&host, (m, p, b), false)),
                        )
                        .await
                        .map_err(|_| "timed out".to_owned())?
                        .map_err(|e| e.to_string())?;
                        answer(resp).await
                    }
                    .await;
                    out.push(r);
                }
                (local, out)
            })
        })
        .unwrap()
    }

    /// From `from`, sends all `requests` at once as concurrent streams of ONE HTTP/2
    /// (prior knowledge) connection to `dst`; answers in request order.
    pub fn http2_concurrent(
        c: &Cloud,
        from: &str,
        dst: SocketAddr,
        host: &str,
        requests: &[Req<'_>],
    ) -> Vec<Result<Answer, String>> {
        let netns = c.lab.workload(from).netns.clone();
        let host = host.to_owned();
        let reqs: Vec<(String, String, String)> = requests
            .iter()
            .map(|(m, p, b)| (m.to_string(), p.to_string(), b.to_string()))
            .collect();
        eastwall_lab::in_netns(&netns, move || {
            runtime().block_on(async move {
                let tcp = match tokio::net::TcpStream::connect(dst).await {
                    Ok(t) => t,
                    Err(e) => return vec![Err(e.to_string())],
                };
                let (send, conn) =
                    match hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                        .handshake(TokioIo::new(tcp))
                        .await
                    {
                        Ok(x) => x,
                        Err(e) => return vec![Err(e.to_string())],
                    };
                tokio::spawn(conn);
                let tasks: Vec<_> = reqs
                    .into_iter()
                    .map(|(m, p, b)| {
                        let mut send = send.clone();
                        let host = host.clone();
                        tokio::spawn(async move {
                            send.ready().await.map_err(|e| e.to_string())?;
                            let resp = tokio::time::timeout(
                                Duration::from_secs(5),
                                send.send_request(request(&host, (&m, &p, &b), true)),
                            )
                            .await
                            .map_err(|_| "timed out".to_owned())?
                            .map_err(|e| e.to_string())?;
                            answer(resp).await
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
                }
                out
            })
        })
        .unwrap()
    }

    /// How a raw exchange ended.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Raw {
        /// Everything received.
        pub received: Vec<u8>,
        /// `reset`, `closed` (FIN) or `open` (still open at the deadline).
        pub end: &'static str,
        /// The client's address.
        pub local: Option<SocketAddr>,
    }

    impl Raw {
        /// The bytes received, as text.
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.received).into_owned()
        }
    }

    /// From `from`, connects to `dst`, writes each chunk (sleeping after it as given), and
    /// reads until the peer closes or `wait` passes after the last write.
    pub fn raw_exchange(
        c: &Cloud,
        from: &str,
        dst: SocketAddr,
        chunks: &[(&[u8], Duration)],
        wait: Duration,
    ) -> Raw {
        use std::io::{ErrorKind, Read, Write};
        let netns = c.lab.workload(from).netns.clone();
        let chunks: Vec<(Vec<u8>, Duration)> =
            chunks.iter().map(|(b, d)| (b.to_vec(), *d)).collect();
        eastwall_lab::in_netns(&netns, move || {
            let mut s = match std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3)) {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Raw {
                        received: Vec::new(),
                        end: "reset",
                        local: None,
                    };
                }
                Err(e) => panic!("connect {dst}: {e}"),
            };
            let local = s.local_addr().ok();
            let mut end = "open";
            for (b, pause) in &chunks {
                if let Err(e) = s.write_all(b) {
                    end = if e.kind() == ErrorKind::ConnectionReset {
                        "reset"
                    } else {
                        "closed"
                    };
                    break;
                }
                std::thread::sleep(*pause);
            }
            let mut received = Vec::new();
            if end == "open" {
                s.set_read_timeout(Some(wait)).unwrap();
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            end = "closed";
                            break;
                        }
                        Ok(n) => received.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            end = "reset";
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Raw {
                received,
                end,
                local,
            }
        })
        .unwrap()
    }
}

/// The fields of `/proc/PID/stat` from field 3 (the state) on: the name in field 2 may hold
/// spaces, so they are counted after its closing parenthesis (index `i` is field `i + 3`).
pub fn proc_stat(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| anyhow::anyhow!("process {pid} is gone: {e}"))?;
    let close = stat
        .rfind(')')
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    Ok(stat[close + 1..]
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Resident memory of process `pid`, in bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had, in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, key: &str) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no {key} for process {pid}"))?
        .parse()?;
    Ok(kb * 1024)
}

/// `policy` (whose last line is a rule of its last section) with a section of `rules`
/// filler rules after it, between apps that do not exist (so decisions stay as they were);
/// `variant` changes them, so that two variants always differ.
pub fn with_filler_rules(policy: &str, rules: usize, variant: usize) -> String {
    let mut s = policy.trim_end().to_owned();
    s.push_str(&format!("\n    - name: filler-{variant}\n      rules:\n"));
    for i in 0..rules {
        s.push_str(&format!(
            "        - {{id: filler-{i}, action: allow, from: {{app: team-{}}}, to: {{app: svc-{i}}}, ports: [{}]}}\n",
            i % 500,
            1024 + (i + variant) % 50_000
        ));
    }
    s
}
