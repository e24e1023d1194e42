//! `eastwall`: the node daemon and the operator's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eastwall_node::config::NodeConfig;
use eastwall_node::{app, ca, capture};
use eastwall_policy::{
    Diagnostic, DocumentKind, Endpoint, Flow, HttpRequestFacts, L7, Policy, Registry, SpiffeId,
    Workload,
};

#[derive(Parser)]
#[command(
    name = "eastwall",
    version,
    about = "Identity-aware distributed internal firewall"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the per-host node daemon.
    Node {
        /// The node's configuration file (kind: NodeConfig).
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<NodeAction>,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// The trust domain's certificate authority: create it, issue from it, serve signing.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Work with IDS rules (Suricata syntax).
    Ids {
        #[command(subcommand)]
        action: IdsAction,
    },
    /// Build a small private cloud in namespaces, run nodes, drive traffic, show the verdicts.
    Demo {
        /// Keep the lab running (until Ctrl-C) and print how to look around.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum IdsAction {
    /// Load rules files (or folders of `*.rules`) as a node would: counts of rules loaded,
    /// skipped (with reasons, grouped) and in error (FILE:LINE:COL). Exit 1 on errors.
    Check {
        /// Rules files or folders.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// classification.config (Suricata's defaults without it).
        #[arg(long)]
        classification: Option<PathBuf>,
        /// Variables, `NAME=VALUE` (over the east-west defaults: HOME_NET and EXTERNAL_NET any).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Remove the node's nftables table and policy routing (stops fail-closed blocking).
    Cleanup,
}

#[derive(Subcommand)]
enum CaAction {
    /// Create a CA: DIR/ca.crt (the trust bundle) and DIR/ca.key (mode 0600). Never overwrites.
    Init {
        /// Folder for ca.crt and ca.key (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The trust domain, e.g. corp.example.
        #[arg(long)]
        trust_domain: String,
        /// Validity of the CA certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a certificate and key from the CA in DIR: PREFIX.crt and PREFIX.key (mode 0600).
    Issue {
        /// The CA folder.
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE ID to issue for (spiffe://<trust domain>/...).
        #[arg(long, conflicts_with = "node", required_unless_present = "node")]
        id: Option<String>,
        /// A node name: issues for spiffe://<trust domain>/node/NAME.
        #[arg(long)]
        node: Option<String>,
        /// Output prefix: writes PREFIX.crt and PREFIX.key.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Serve POST /v1/sign over mutual TLS: nodes get certificates for the workloads the
    /// registry places on them.
    Serve {
        /// The CA folder.
        #[arg(long)]
        dir: PathBuf,
        /// The registry file (re-read when it changes).
        #[arg(long)]
        registry: PathBuf,
        /// Address to listen on, e.g. 10.0.0.1:15009.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Lifetime of the certificates it signs, in seconds.
        #[arg(long, default_value_t = 86_400)]
        cert_secs: u64,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Validate registry, policy and node files; errors and warnings print as FILE:LINE:COL.
    /// Exits 1 on errors, 0 when there are only warnings.
    Check {
        /// Files to check (kind is read from each); a policy is checked against the registry given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Explain the decision on one flow: the verdict, the deciding rule, and why each rule
    /// before it did not match.
    Explain(Box<ExplainArgs>),
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// The registry file (kind: Registry).
    registry: PathBuf,
    /// The policy file (kind: Policy).
    policy: PathBuf,
    /// The source: a workload name (its first address; its identity counts as proven, and
    /// its user) or an IP address (looked up in the registry; no proven identity).
    #[arg(long)]
    from: String,
    /// The destination, as --from; `NAME:PORT`, `IP:PORT` or `[IPv6]:PORT` give the port too.
    #[arg(long)]
    to: String,
    /// The destination port (unless --to gives it).
    #[arg(long)]
    port: Option<u16>,
    /// Decide one HTTP request: its method and request target (`--http GET /api/x?y=1`).
    #[arg(long, num_args = 2, value_names = ["METHOD", "PATH"])]
    http: Option<Vec<String>>,
    /// The HTTP request's host, without port.
    #[arg(long, requires = "http")]
    host: Option<String>,
    /// An HTTP request header, `NAME: VALUE` (repeatable).
    #[arg(long = "header", requires = "http", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Decide a TLS ClientHello with this server name (SNI).
    #[arg(long, conflicts_with = "http")]
    sni: Option<String>,
    /// Decide a TLS ClientHello without SNI.
    #[arg(long, conflicts_with_all = ["http", "sni"])]
    tls: bool,
    /// Decide an opaque TCP stream (neither HTTP nor TLS).
    #[arg(long, conflicts_with_all = ["http", "sni", "tls"])]
    opaque: bool,
    /// The source's user (default: the source workload's user, if any).
    #[arg(long)]
    user: Option<String>,
    /// The source user's groups, comma-separated (`--groups ''`: none); without it they are
    /// unknown, as when the directory cannot answer.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// The destination's user (default: the destination workload's user, if any).
    #[arg(long)]
    dst_user: Option<String>,
    /// The destination user's groups, comma-separated; without it they are unknown.
    #[arg(long, value_delimiter = ',')]
    dst_groups: Option<Vec<String>>,
}

/// `eastwall ids check`: the report of `eastwall_ids::check` over the files.
fn ids_check(files: &[PathBuf], classification: Option<&Path>, vars: &[String]) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let mut paths = Vec::new();
        for f in files {
            if f.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(f)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "rules"))
                    .collect();
                found.sort();
                paths.extend(found);
            } else {
                paths.push(f.clone());
            }
        }
        let mut texts = Vec::new();
        for p in &paths {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
            texts.push((p.display().to_string(), text));
        }
        let classes = match classification {
            None => eastwall_ids::Classifications::suricata_defaults(),
            Some(c) => {
                let text = std::fs::read_to_string(c)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", c.display()))?;
                let (classes, errors) =
                    eastwall_ids::Classifications::parse(&c.display().to_string(), &text);
                for e in &errors {
                    eprintln!("{e}");
                }
                classes
            }
        };
        let mut v = eastwall_ids::Vars::east_west();
        for nv in vars {
            let (n, val) = nv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--var takes NAME=VALUE, got `{nv}`"))?;
            v.set(n, val)
                .map_err(|e| anyhow::anyhow!("--var {n}: {e}"))?;
        }
        let sources: Vec<(&str, &str)> = texts
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let report = eastwall_ids::check(&sources, &v, &classes);
        print!("{report}");
        Ok(report.errors.is_empty())
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs in files and journald stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Node { config, action } => match NodeConfig::load(&config) {
            Err(e) => Err(e),
            Ok(cfg) => match action {
                None => app::run(cfg),
                Some(NodeAction::Cleanup) => capture::remove(&cfg.capture).map(|()| {
                    println!(
                        "removed nftables table `{}` and its policy routing",
                        cfg.capture.table
                    );
                }),
            },
        },
        Cmd::Policy {
            action: PolicyAction::Check { files },
        } => return policy_check(&files),
        Cmd::Policy {
            action: PolicyAction::Explain(args),
        } => policy_explain(&args),
        Cmd::Ca { action } => ca_command(action),
        Cmd::Ids {
            action:
                IdsAction::Check {
                    files,
                    classification,
                    vars,
                },
        } => return ids_check(&files, classification.as_deref(), &vars),
        Cmd::Demo { keep } => exec_demo(keep),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `eastwall demo`: replaces this process with `eastwall-demo` (crate `eastwall-lab`) from
/// beside this binary, which starts its nodes with this binary (`EASTWALL_BIN`). The daemon
/// holds no test tooling. Returns only if that binary cannot be run.
fn exec_demo(keep: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this binary")?;
    let demo = exe.with_file_name("eastwall-demo");
    if !demo.is_file() {
        anyhow::bail!(
            "the demo is not installed beside this binary ({} is missing): build it with `cargo build -p eastwall-lab --bin eastwall-demo`",
            demo.display()
        );
    }
    let mut cmd = std::process::Command::new(&demo);
    if keep {
        cmd.arg("--keep");
    }
    let err = cmd.env("EASTWALL_BIN", &exe).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", demo.display())))
}

fn ca_command(action: CaAction) -> anyhow::Result<()> {
    match action {
        CaAction::Init {
            dir,
            trust_domain,
            days,
        } => {
            let crt = ca::init(&dir, &trust_domain, days)?;
            println!(
                "created the CA of trust domain {trust_domain}: {} (give it to every node as its trust bundle) and {} (keep it secret)",
                crt.display(),
                dir.join(ca::CA_KEY_FILE).display()
            );
            Ok(())
        }
        CaAction::Issue {
            dir,
            id,
            node,
            out,
            hours,
        } => {
            let subject = match (id, node) {
                (Some(id), None) => ca::Subject::Id(id),
                (None, Some(node)) => ca::Subject::Node(node),
                _ => anyhow::bail!("give exactly one of --id and --node"),
            };
            let id = ca::issue(&dir, &subject, &out, hours)?;
            println!(
                "issued {id} for {hours} h: {}.crt, {}.key",
                out.display(),
                out.display()
            );
            Ok(())
        }
        CaAction::Serve {
            dir,
            registry,
            listen,
            cert_secs,
        } => ca::server::run(ca::server::ServeOptions {
            dir,
            registry,
            listen,
            cert_ttl: std::time::Duration::from_secs(cert_secs),
        }),
    }
}

fn policy_check(files: &[PathBuf]) -> ExitCode {
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut texts = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.display().to_string(), t)),
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let mut kinds = Vec::new();
    for (name, text) in &texts {
        match eastwall_policy::document_kind(name, text) {
            Ok(k) => kinds.push(Some(k)),
            Err(d) => {
                diags.extend(d.into_vec());
                kinds.push(None);
            }
        }
    }
    let mut registry = None;
    for ((name, text), kind) in texts.iter().zip(&kinds) {
        match kind {
            Some(DocumentKind::Registry) => match Registry::parse(name, text) {
                Ok(r) => registry = Some(r),
                Err(d) => diags.extend(d.into_vec()),
            },
            Some(DocumentKind::NodeConfig) => {
                if let Err(d) = NodeConfig::parse(std::path::Path::new(name), text) {
                    diags.extend(d.into_vec());
                }
            }
            Some(DocumentKind::Directory) => {
                if let Err(d) = eastwall_policy::parse_directory(name, text) {
                    diags.extend(d.into_vec());
                }
            }
            _ => {}
        }
    }
    let registry = registry.unwrap_or_else(Registry::empty);
    let mut rules = 0;
    for ((name, text), kind) in texts.iter().zip(&kinds) {
        if let Some(DocumentKind::Policy) = kind {
            match Policy::parse(name, text, &registry) {
                Ok((p, w)) => {
                    rules += p.rule_count();
                    diags.extend(w.into_vec());
                }
                Err(d) => diags.extend(d.into_vec()),
            }
        }
    }
    for d in diags.iter() {
        eprintln!("{d}");
    }
    if diags.iter().any(Diagnostic::is_error) {
        ExitCode::FAILURE
    } else {
        match diags.len() {
            0 => println!("ok: {} file(s), {rules} rule(s)", files.len()),
            n => println!(
                "ok: {} file(s), {rules} rule(s), {n} warning(s)",
                files.len()
            ),
        }
        ExitCode::SUCCESS
    }
}

/// One side of the flow to explain, resolved against the registry.
struct ExplainSide<'r> {
    addr: std::net::IpAddr,
    workload: Option<&'r Workload>,
    /// Proven only when the side was named as a workload.
    identity: Option<&'r SpiffeId>,
    port: Option<u16>,
}

/// Resolves `NAME`, `IP`, `NAME:PORT`, `IP:PORT` or `[IPv6]:PORT`.
fn resolve_side<'r>(registry: &'r Registry, spec: &str) -> anyhow::Result<ExplainSide<'r>> {
    use std::net::{IpAddr, SocketAddr};
    let by_addr = |addr: IpAddr, port| ExplainSide {
        addr,
        workload: registry.workload_by_addr(addr),
        identity: None,
        port,
    };
    if let Ok(addr) = spec.parse::<IpAddr>() {
        return Ok(by_addr(addr, None));
    }
    if let Ok(sa) = spec.parse::<SocketAddr>() {
        return Ok(by_addr(sa.ip(), Some(sa.port())));
    }
    let (name, port) = match spec.rsplit_once(':') {
        Some((name, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| anyhow::anyhow!("invalid port in `{spec}`"))?;
            (name, Some(port))
        }
        None => (spec, None),
    };
    let Some(w) = registry.workload(name) else {
        anyhow::bail!("`{name}` is neither a registry workload nor an IP address");
    };
    let Some(&addr) = w.addresses.first() else {
        anyhow::bail!("workload `{name}` has no address");
    };
    Ok(ExplainSide {
        addr,
        workload: Some(w),
        identity: Some(&w.identity),
        port,
    })
}

/// Reads and parses the registry and the policy; diagnostics go to stderr.
fn load_rules(
    registry: &std::path::Path,
    policy: &std::path::Path,
) -> anyhow::Result<(Registry, Policy)> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let (rname, pname) = (registry.display().to_string(), policy.display().to_string());
    let reg = Registry::parse(&rname, &read(registry)?).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (pol, warnings) =
        Policy::parse(&pname, &read(policy)?, &reg).map_err(|d| anyhow::anyhow!("{d}"))?;
    for w in warnings.iter() {
        eprintln!("{w}");
    }
    Ok((reg, pol))
}

fn policy_explain(a: &ExplainArgs) -> anyhow::Result<()> {
    let (registry, policy) = load_rules(&a.registry, &a.policy)?;
    let src = resolve_side(&registry, &a.from)?;
    if src.port.is_some() {
        anyhow::bail!("--from takes no port (the source port does not matter to policy)");
    }
    let dst = resolve_side(&registry, &a.to)?;
    let port = match (dst.port, a.port) {
        (Some(p), Some(q)) if p != q => anyhow::bail!("--to says port {p}, --port says {q}"),
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => anyhow::bail!("give the destination port: --port N or --to DEST:PORT"),
    };
    // Users: given, or the workload's (it travels in its proven identity).
    let user = |given: &Option<String>, side: &ExplainSide<'_>| -> Option<String> {
        given
            .clone()
            .or_else(|| side.identity.and_then(|id| id.user()).map(str::to_owned))
    };
    let groups = |g: &Option<Vec<String>>| -> Option<Vec<String>> {
        g.as_ref()
            .map(|g| g.iter().filter(|s| !s.is_empty()).cloned().collect())
    };
    let (src_user, dst_user) = (user(&a.user, &src), user(&a.dst_user, &dst));
    let (src_groups, dst_groups) = (groups(&a.groups), groups(&a.dst_groups));
    let mut headers = http::HeaderMap::new();
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header `{h}`: expected `NAME: VALUE`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| anyhow::anyhow!("--header `{h}`: {e}"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|e| anyhow::anyhow!("--header `{h}`: {e}"))?;
        headers.append(name, value);
    }
    let request = match &a.http {
        Some(v) => {
            let [method, target] = v.as_slice() else {
                anyhow::bail!("--http takes METHOD PATH");
            };
            let path = eastwall_policy::normalize_path(target).map_err(|e| {
                anyhow::anyhow!("request target `{target}`: {e} (the node answers 400)")
            })?;
            Some((method.clone(), path))
        }
        None => None,
    };
    let facts = request.as_ref().map(|(method, path)| HttpRequestFacts {
        method,
        host: a.host.as_deref(),
        path,
        headers: &headers,
    });
    let l7 = match (&facts, &a.sni) {
        (Some(f), _) => L7::Http(f),
        (None, Some(sni)) => L7::Tls { sni: Some(sni) },
        (None, None) if a.tls => L7::Tls { sni: None },
        (None, None) if a.opaque => L7::Opaque,
        (None, None) => L7::Unknown,
    };
    let flow = Flow::new(
        endpoint(&src, &src_user, &src_groups),
        endpoint(&dst, &dst_user, &dst_groups),
        port,
    )
    .with_l7(l7);
    println!(
        "flow: {} -> {} port {port}, {}",
        describe_side(&src, &src_user, &src_groups),
        describe_side(&dst, &dst_user, &dst_groups),
        describe_l7(&l7)
    );
    println!("{}", policy.explain(&flow));
    Ok(())
}

fn endpoint<'a>(
    side: &ExplainSide<'a>,
    user: &'a Option<String>,
    groups: &'a Option<Vec<String>>,
) -> Endpoint<'a> {
    Endpoint {
        addr: side.addr,
        workload: side.workload,
        identity: side.identity,
        user: user.as_deref(),
        groups: groups.as_deref(),
    }
}

fn describe_side(
    side: &ExplainSide<'_>,
    user: &Option<String>,
    groups: &Option<Vec<String>>,
) -> String {
    let mut s = match side.workload {
        Some(w) => format!("{} ({}", w.name, side.addr),
        None => format!("{} (no registry workload", side.addr),
    };
    match side.identity {
        Some(id) => s.push_str(&format!(", identity {id}")),
        None => s.push_str(", identity not proven"),
    }
    if let Some(u) = user {
        match groups {
            Some(g) => s.push_str(&format!(", user {u} in groups [{}]", g.join(", "))),
            None => s.push_str(&format!(", user {u}, groups unknown")),
        }
    }
    s.push(')');
    s
}

fn describe_l7(l7: &L7<'_>) -> String {
    match l7 {
        L7::Unknown => "at connection time (nothing inspected yet)".to_owned(),
        L7::Opaque => "opaque TCP".to_owned(),
        L7::Tls { sni: Some(n) } => format!("TLS ClientHello with SNI {n}"),
        L7::Tls { sni: None } => "TLS ClientHello without SNI".to_owned(),
        L7::Http(r) => match r.host {
            Some(h) => format!("HTTP {} {} (host {h})", r.method, r.path),
            None => format!("HTTP {} {} (no host)", r.method, r.path),
        },
    }
}
