//! `eastwall`: the node daemon and the operator's tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eastwall_node::config::NodeConfig;
use eastwall_node::{ca, capture, demo, run};
use eastwall_policy::{Diagnostic, DocumentKind, Policy, Registry};

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
    /// Build a small private cloud in namespaces, run nodes, drive traffic, show the verdicts.
    Demo {
        /// Keep the lab running (until Ctrl-C) and print how to look around.
        #[arg(long)]
        keep: bool,
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
    /// Validate registry, policy and node files; errors print as FILE:LINE:COL.
    Check {
        /// Files to check (kind is read from each); a policy is checked against the registry given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
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
                None => run::run(cfg),
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
        Cmd::Ca { action } => ca_command(action),
        Cmd::Demo { keep } => demo::run(keep).map(|ok| {
            if !ok {
                eprintln!("demo: some verdicts did not match the policy");
                std::process::exit(1);
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        println!("ok: {} file(s), {rules} rule(s)", files.len());
        ExitCode::SUCCESS
    }
}
