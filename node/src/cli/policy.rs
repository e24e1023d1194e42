//! `eastwall policy`: check the files users write, and explain a decision.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use eastwall_node::config::NodeConfig;
use eastwall_policy::{
    Diagnostic, DocumentKind, Endpoint, Flow, HttpRequestFacts, L7, Policy, Protocol, Registry,
    SpiffeId, Workload,
};

#[derive(Subcommand)]
pub(crate) enum PolicyAction {
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
    /// Decide recorded flows (EVE files) with a candidate registry and policy and show what
    /// changes. Exits 1 when something that was allowed would be denied.
    Replay(super::flows::ReplayArgs),
    /// Write a policy that allows what the recorded flows (EVE files) show allowed: by app
    /// and zone, users' groups, ports, HTTP methods and paths, DNS names, with evidence.
    Recommend(super::flows::RecommendArgs),
}

#[derive(clap::Args)]
pub(crate) struct ExplainArgs {
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
    /// The IP protocol: tcp, udp, sctp, icmp, icmpv6, or a protocol number.
    #[arg(long, default_value = "tcp")]
    proto: String,
    /// The ICMP (or ICMPv6) message type, with --proto icmp or icmpv6 (8 and 128: echo
    /// requests).
    #[arg(long)]
    icmp_type: Option<u8>,
    /// The ICMP (or ICMPv6) message code.
    #[arg(long, requires = "icmp_type")]
    icmp_code: Option<u8>,
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
    /// Decide a DNS query for this name (a UDP flow: give `--proto udp`).
    #[arg(long, conflicts_with_all = ["http", "sni", "tls"])]
    dns: Option<String>,
    /// Decide opaque traffic (neither HTTP, TLS nor a DNS query).
    #[arg(long, conflicts_with_all = ["http", "sni", "tls", "dns"])]
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

pub(crate) fn check(files: &[PathBuf]) -> ExitCode {
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
                match NodeConfig::parse(std::path::Path::new(name), text) {
                    Ok(cfg) => diags.extend(cfg.warnings),
                    Err(d) => diags.extend(d.into_vec()),
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
pub(crate) struct ExplainSide<'r> {
    addr: std::net::IpAddr,
    workload: Option<&'r Workload>,
    /// Proven only when the side was named as a workload.
    identity: Option<&'r SpiffeId>,
    port: Option<u16>,
}

/// Resolves `NAME`, `IP`, `NAME:PORT`, `IP:PORT` or `[IPv6]:PORT`.
pub(crate) fn resolve_side<'r>(
    registry: &'r Registry,
    spec: &str,
) -> anyhow::Result<ExplainSide<'r>> {
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
pub(crate) fn load_rules(
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

pub(crate) fn explain(a: &ExplainArgs) -> anyhow::Result<()> {
    let (registry, policy) = load_rules(&a.registry, &a.policy)?;
    let src = resolve_side(&registry, &a.from)?;
    if src.port.is_some() {
        anyhow::bail!("--from takes no port (the source port does not matter to policy)");
    }
    let dst = resolve_side(&registry, &a.to)?;
    let proto = protocol(a)?;
    let port = match (dst.port, a.port) {
        (Some(p), Some(q)) if p != q => anyhow::bail!("--to says port {p}, --port says {q}"),
        (Some(p), _) | (None, Some(p)) if proto.has_ports() => p,
        (Some(_), _) | (None, Some(_)) => {
            anyhow::bail!(
                "{proto} has no ports: give no port with --proto {}",
                a.proto
            )
        }
        (None, None) if proto.has_ports() => {
            anyhow::bail!("give the destination port: --port N or --to DEST:PORT")
        }
        (None, None) => 0,
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
    let dns_name = a
        .dns
        .as_deref()
        .map(|n| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase());
    let l7 = match (&facts, &a.sni) {
        (Some(f), _) => L7::Http(f),
        (None, None) if dns_name.is_some() => L7::Dns {
            name: dns_name.as_deref().unwrap_or_default(),
        },
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
    .with_protocol(proto)
    .with_l7(l7);
    let transport = match proto {
        Protocol::Tcp => format!("port {port}"),
        Protocol::Udp | Protocol::Sctp => format!("{proto} port {port}"),
        Protocol::Icmp { kind, code } | Protocol::Icmpv6 { kind, code } => {
            format!("{proto} type {kind} code {code}")
        }
        Protocol::Other(n) => format!("protocol {n}"),
    };
    println!(
        "flow: {} -> {} {transport}, {}",
        describe_side(&src, &src_user, &src_groups),
        describe_side(&dst, &dst_user, &dst_groups),
        describe_l7(&l7, proto)
    );
    println!("{}", policy.explain(&flow));
    Ok(())
}

/// The protocol `--proto` (and `--icmp-type`, `--icmp-code`) names.
fn protocol(a: &ExplainArgs) -> anyhow::Result<Protocol> {
    let (kind, code) = (a.icmp_type.unwrap_or(0), a.icmp_code.unwrap_or(0));
    let p = match a.proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        "icmp" => Protocol::Icmp { kind, code },
        "icmpv6" | "ipv6-icmp" => Protocol::Icmpv6 { kind, code },
        n => match n.parse::<u8>() {
            Ok(n) => match Protocol::from_number(n) {
                Protocol::Icmp { .. } => Protocol::Icmp { kind, code },
                Protocol::Icmpv6 { .. } => Protocol::Icmpv6 { kind, code },
                p => p,
            },
            Err(_) => anyhow::bail!(
                "--proto `{}`: tcp, udp, sctp, icmp, icmpv6, or a protocol number 0-255",
                a.proto
            ),
        },
    };
    if a.icmp_type.is_some() && !matches!(p, Protocol::Icmp { .. } | Protocol::Icmpv6 { .. }) {
        anyhow::bail!("--icmp-type goes with --proto icmp or icmpv6");
    }
    Ok(p)
}

pub(crate) fn endpoint<'a>(
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

pub(crate) fn describe_side(
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

pub(crate) fn describe_l7(l7: &L7<'_>, proto: Protocol) -> String {
    match l7 {
        L7::Unknown => "at connection time (nothing inspected yet)".to_owned(),
        L7::Opaque => format!("opaque {proto}"),
        L7::Dns { name } => format!("DNS query for {name}"),
        L7::Tls { sni: Some(n) } => format!("TLS ClientHello with SNI {n}"),
        L7::Tls { sni: None } => "TLS ClientHello without SNI".to_owned(),
        L7::Http(r) => match r.host {
            Some(h) => format!("HTTP {} {} (host {h})", r.method, r.path),
            None => format!("HTTP {} {} (no host)", r.method, r.path),
        },
    }
}
