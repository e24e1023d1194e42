//! `eastwall`: the node daemon and the operator's tools. Each command family is a module of
//! [`cli`]; the daemon itself is the `eastwall_node` library.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use eastwall_node::config::{LogFormat, NodeConfig};

use crate::cli::{ca, demo, flows, ids, node, observe, policy, store};

/// jemalloc, with its background thread purging freed memory: a node's memory follows its
/// connections down after a burst (glibc's allocator keeps the peak).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        action: Option<node::NodeAction>,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        action: policy::PolicyAction,
    },
    /// The trust domain's certificate authority: create it, issue from it, serve signing.
    Ca {
        #[command(subcommand)]
        action: ca::CaAction,
    },
    /// Work with IDS rules (Suricata syntax).
    Ids {
        #[command(subcommand)]
        action: ids::IdsAction,
    },
    /// Validate files, show the diff against the central store, and write them as one new
    /// version (refused if someone applied since you read).
    Apply {
        /// Registry, policy and NodeDefaults files and IDS rule sets (`.rules`), or folders
        /// of them.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Why (kept in the history).
        #[arg(short, long)]
        message: Option<String>,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Show what `apply` would change in the central store.
    Diff {
        /// Registry, policy and NodeDefaults files and IDS rule sets (`.rules`), or folders
        /// of them.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Show what the central store holds.
    Get {
        #[command(subcommand)]
        what: store::GetWhat,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Every version applied to the central store (who, when, why), or what one changed.
    History {
        /// A version to show the changes of.
        version: Option<u64>,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Put an earlier version's configuration back in force (as a new version).
    Rollback {
        /// The version to go back to.
        version: u64,
        /// Why (kept in the history).
        #[arg(short, long)]
        message: Option<String>,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Remove something from the central store (as a new version).
    Delete {
        #[command(subcommand)]
        what: store::DeleteWhat,
        /// Why (kept in the history).
        #[arg(short, long)]
        message: Option<String>,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Add, remove or move one workload in the central store (for automation).
    Workload {
        #[command(subcommand)]
        action: store::WorkloadAction,
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Every node: alive or not, the version it enforces, who lags behind.
    Status {
        #[command(flatten)]
        store: store::StoreArgs,
    },
    /// Run the flow collector: nodes send it their records (mutual TLS), operators read
    /// them (`eastwall observe`); stored in SQLite with retention by age and size.
    Collector {
        /// Address to listen on, e.g. 10.0.0.5:15010.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Its certificate (spiffe://<td>/collector, e.g. from `eastwall ca issue`).
        #[arg(long)]
        cert: PathBuf,
        /// Its key.
        #[arg(long)]
        key: PathBuf,
        /// The trust bundle nodes' and operators' certificates chain to.
        #[arg(long)]
        trust_bundle: PathBuf,
        /// The SQLite file (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Records are kept this many days.
        #[arg(long, default_value_t = 30)]
        retention_days: u64,
        /// The store is kept under this many MiB.
        #[arg(long, default_value_t = 10_240)]
        max_mib: u64,
        /// Per-edge aggregates are kept this many days.
        #[arg(long, default_value_t = 400)]
        edge_days: i64,
        /// Flag lateral movement as `anomaly` records: a source contacting a new peer after
        /// its learning period, denials across zones.
        #[arg(long)]
        anomalies: bool,
        /// With --anomalies: hours a source is learned before a new peer is flagged.
        #[arg(long, default_value_t = 24)]
        learning_hours: i64,
        /// With --anomalies: denials across zones within --window-secs that are flagged.
        #[arg(long, default_value_t = 20)]
        denied_across_zones: usize,
        /// With --anomalies: the window of --denied-across-zones.
        #[arg(long, default_value_t = 600)]
        window_secs: i64,
    },
    /// Show flow records: from the collector or from EVE files, filtered, followed.
    Observe(Box<observe::ObserveArgs>),
    /// The web console: map, flows, nodes, rules, recommend and replay, over HTTPS with
    /// sign-in (`--config console.yaml`), or `hash-password` for its users file.
    Console {
        /// The console's configuration (`kind: ConsoleConfig`).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<ConsoleAction>,
    },
    /// Build a small private cloud in namespaces, run nodes, drive traffic, show the verdicts.
    Demo {
        /// Keep the lab running (until Ctrl-C) and print how to look around.
        #[arg(long)]
        keep: bool,
    },
    /// Print the shell completion script for SHELL, e.g. `eastwall completions bash >
    /// /usr/share/bash-completion/completions/eastwall`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (`eastwall.1` and one page per command, e.g.
    /// `eastwall-policy-check.1`) into DIR.
    Man {
        /// The folder to write them to (created if missing), e.g. /usr/share/man/man1.
        dir: PathBuf,
    },
}

/// The completion script for `shell`.
fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "eastwall", &mut script);
    script
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes `eastwall.1` and a page per command and subcommand into `dir`.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| anyhow::anyhow!("writing the manual pages to {}: {e}", dir.display()))
}

#[derive(clap::Subcommand)]
enum ConsoleAction {
    /// Reads a password on standard input and prints its Argon2id hash, for a
    /// `kind: ConsoleUsers` file.
    HashPassword,
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "give the password on standard input");
    println!("{}", eastwall_node::console::auth::hash_password(password)?);
    Ok(())
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => fmt.json().init(),
        // Colours only on a terminal: logs in files and journald stay plain text.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The node's log format is in its config, read before anything is logged; every other
    // command logs text.
    let node_config = match &cli.cmd {
        Cmd::Node { config, .. } => Some(NodeConfig::load(config)),
        _ => None,
    };
    let format = match &node_config {
        Some(Ok(cfg)) => cfg.runtime.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    let result = match cli.cmd {
        Cmd::Node { config, action } => node::run(
            node_config.unwrap_or_else(|| NodeConfig::load(&config)),
            action,
        ),
        Cmd::Policy {
            action: policy::PolicyAction::Check { files },
        } => return policy::check(&files),
        Cmd::Policy {
            action: policy::PolicyAction::Explain(args),
        } => policy::explain(&args),
        Cmd::Policy {
            action: policy::PolicyAction::Replay(args),
        } => return flows::replay(&args),
        Cmd::Policy {
            action: policy::PolicyAction::Recommend(args),
        } => flows::recommend(&args),
        Cmd::Ca { action } => ca::run(action),
        Cmd::Ids {
            action:
                ids::IdsAction::Check {
                    files,
                    classification,
                    vars,
                },
        } => return ids::check(&files, classification.as_deref(), &vars),
        Cmd::Demo { keep } => demo::run(keep),
        Cmd::Completions { shell } => print_bytes(&completions(shell)),
        Cmd::Man { dir } => man_pages(&dir),
        Cmd::Collector {
            listen,
            cert,
            key,
            trust_bundle,
            db,
            retention_days,
            max_mib,
            edge_days,
            anomalies,
            learning_hours,
            denied_across_zones,
            window_secs,
        } => eastwall_node::collector::run(eastwall_node::collector::CollectorOptions {
            listen,
            cert,
            key,
            trust_bundle,
            db,
            retention: std::time::Duration::from_secs(retention_days.saturating_mul(86_400)),
            max_bytes: max_mib.saturating_mul(1 << 20),
            edge_days,
            anomalies: anomalies.then_some(eastwall_flows::anomaly::Thresholds {
                learning_us: learning_hours.saturating_mul(3_600_000_000),
                denied_across_zones: denied_across_zones.max(1),
                window_us: window_secs.saturating_mul(1_000_000),
            }),
        }),
        Cmd::Observe(args) => observe::run(&args),
        Cmd::Console {
            action: Some(ConsoleAction::HashPassword),
            ..
        } => hash_password(),
        Cmd::Console {
            config: Some(config),
            action: None,
        } => eastwall_node::console::run(&config),
        Cmd::Console { .. } => Err(anyhow::anyhow!("give --config FILE")),
        Cmd::Apply {
            files,
            message,
            store: s,
        } => store::apply(&s, &files, message),
        Cmd::Diff { files, store: s } => store::diff(&s, &files),
        Cmd::Get { what, store: s } => store::get(&s, what),
        Cmd::History { version, store: s } => store::show_history(&s, version),
        Cmd::Rollback {
            version,
            message,
            store: s,
        } => store::rollback(&s, version, message),
        Cmd::Workload { action, store: s } => store::workload(&s, action),
        Cmd::Delete {
            what,
            message,
            store: s,
        } => store::delete(&s, what, message),
        Cmd::Status { store: s } => store::status(&s),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every shell gets a script that knows the commands, down to subcommands.
    #[test]
    fn completions_name_the_commands_for_every_shell() {
        use clap::ValueEnum;
        for shell in clap_complete::Shell::value_variants() {
            let script = String::from_utf8(completions(*shell)).unwrap();
            for word in ["node", "policy", "recommend", "completions", "--config"] {
                assert!(script.contains(word), "{shell}: no `{word}`");
            }
        }
    }

    /// A page for the program and for each command, each a roff page naming its command.
    #[test]
    fn man_pages_cover_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("man1");
        man_pages(&into).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(&into)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        for page in [
            "eastwall.1",
            "eastwall-node.1",
            "eastwall-policy-check.1",
            "eastwall-policy-recommend.1",
            "eastwall-ca.1",
            "eastwall-completions.1",
        ] {
            assert!(pages.iter().any(|p| p == page), "no {page} in {pages:?}");
        }
        let top = std::fs::read_to_string(into.join("eastwall.1")).unwrap();
        assert!(
            top.starts_with(".ie") || top.contains(".TH eastwall 1"),
            "{top}"
        );
        assert!(
            top.contains("Identity\\-aware") || top.contains("Identity-aware"),
            "{top}"
        );
        let check = std::fs::read_to_string(into.join("eastwall-policy-check.1")).unwrap();
        assert!(check.contains(".TH eastwall-policy-check"), "{check}");
        // A folder that cannot be made is an error with its path.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let e = man_pages(&blocked.join("man1")).unwrap_err().to_string();
        assert!(e.contains("file/man1"), "{e}");
    }
}
