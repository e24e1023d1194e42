//! `eastwall-demo`: the demo of `eastwall demo`, which execs this binary from beside itself.
//! Starts its nodes with `$EASTWALL_BIN`, else the `eastwall` binary beside this one.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use eastwall_lab::demo;

/// Build a small private cloud in namespaces, run eastwall nodes, drive traffic, show the
/// verdicts (as root). Exit 1 when a verdict does not match the policy.
#[derive(Parser)]
#[command(name = "eastwall-demo", version)]
struct Cli {
    /// Keep the lab running (until Ctrl-C) and print how to look around.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = std::env::current_exe()
        .map_err(anyhow::Error::from)
        .and_then(|own| {
            demo::find_eastwall(
                std::env::var_os(demo::EASTWALL_BIN_ENV).as_deref(),
                &own,
                |p| p.is_file(),
            )
        })
        .and_then(|exe| demo::run(&exe, cli.keep));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("demo: some verdicts did not match the policy");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
