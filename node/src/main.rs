//! `eastwall`: the node daemon and the operator's tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eastwall_node::config::NodeConfig;
use eastwall_node::{capture, demo, run};
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
