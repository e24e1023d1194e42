//! `eastwall ids`: work with IDS rules files (Suricata syntax).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum IdsAction {
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

/// `eastwall ids check`: the report of `eastwall_ids::check` over the files.
pub(crate) fn check(files: &[PathBuf], classification: Option<&Path>, vars: &[String]) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let paths = eastwall_node::ids::rule_files(files, Path::new(""))?;
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
