//! `eastwall policy replay` and `eastwall policy recommend`: recorded flows (EVE files) put
//! against a candidate policy, or turned into one (`eastwall_flows`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use eastwall_flows::Observations;
use eastwall_flows::recommend::{self, Options};
use eastwall_policy::{Policy, Registry};

/// `eastwall policy replay`.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The candidate registry (kind: Registry).
    #[arg(long)]
    registry: PathBuf,
    /// The candidate policy (kind: Policy).
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    source: Source,
}

/// Where recorded flows come from: EVE files, or the collector; and the time window.
#[derive(clap::Args)]
pub(crate) struct Source {
    /// EVE files (a node's flows.json and its rotated files), or folders of them.
    records: Vec<PathBuf>,
    #[command(flatten)]
    collector: super::observe::CollectorArgs,
    /// Only what was recorded at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only what was recorded before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

/// `eastwall policy recommend`.
#[derive(clap::Args)]
pub(crate) struct RecommendArgs {
    /// The registry the rules name ends by (kind: Registry).
    #[arg(long)]
    registry: PathBuf,
    #[command(flatten)]
    source: Source,
    /// With --collector: read every record of the window (exact times; slower) instead of
    /// the collector's per-day aggregates (whole UTC days, HTTP paths as patterns).
    #[arg(long)]
    from_records: bool,
    /// Only what goes from or to this app.
    #[arg(long)]
    app: Option<String>,
    /// Only what goes from or to this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Write every rule with `mode: monitor`, to watch it before enforcing it.
    #[arg(long)]
    monitor: bool,
    /// Write the policy here (default: standard output).
    #[arg(short, long)]
    out: Option<PathBuf>,
}

/// The EVE files of `paths`: files as given, folders' `*.json` and `*.json.N` files.
fn eve_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    name.ends_with(".json")
                        || name
                            .rsplit_once(".json.")
                            .is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect();
            inside.sort();
            out.extend(inside);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn observations(source: &Source) -> anyhow::Result<Observations> {
    let time = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
        t.as_ref()
            .map(|s| {
                eastwall_flows::record::unix_micros(s)
                    .with_context(|| format!("{s:?} is not a time (RFC 3339)"))
            })
            .transpose()
    };
    let (since, until) = (time(&source.since)?, time(&source.until)?);
    let mut o = Observations::default();
    match super::observe::CollectorClient::new(&source.collector)? {
        Some(client) => {
            if !source.records.is_empty() {
                bail!("give EVE files or --collector, not both");
            }
            let mut q = Vec::new();
            for (k, v) in [("since", &source.since), ("until", &source.until)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", v.replace(':', "%3A").replace('+', "%2B")));
                }
            }
            client.all(&q.join("&"), |text| o.read("collector", text))?;
        }
        None => {
            if source.records.is_empty() {
                bail!("give EVE files, or --collector (EASTWALL_COLLECTOR)");
            }
            for f in eve_files(&source.records)? {
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                o.read(&f.display().to_string(), &String::from_utf8_lossy(&bytes));
            }
        }
    }
    if since.is_some() || until.is_some() {
        o.list.retain(|x| {
            let t = eastwall_flows::record::unix_micros(&x.time);
            t.is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u))
        });
    }
    o.list.shrink_to_fit();
    for p in o.problems.iter().take(10) {
        eprintln!("skipped: {p}");
    }
    if o.problems.len() > 10 {
        eprintln!("skipped: ... and {} more lines", o.problems.len() - 10);
    }
    Ok(o)
}

fn registry(path: &Path) -> anyhow::Result<Registry> {
    let text = eastwall_node::config::read_file(path)?;
    Registry::parse(&path.display().to_string(), &text).map_err(|d| anyhow::anyhow!("{d}"))
}

/// Replays the records against the candidate; exit 1 when it would deny something that was
/// allowed, 2 on bad input.
pub(crate) fn replay(args: &ReplayArgs) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let reg = registry(&args.registry)?;
        let text = eastwall_node::config::read_file(&args.policy)?;
        let (policy, _) = Policy::parse(&args.policy.display().to_string(), &text, &reg)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        let o = observations(&args.source)?;
        let report = eastwall_flows::replay::replay(&o.list, &reg, &policy);
        print!("{report}");
        Ok(report.breaks() == 0)
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

/// The observations the collector's per-day aggregates of `source`'s window stand for, and
/// what they are.
fn aggregated(
    client: &super::observe::CollectorClient,
    source: &Source,
    reg: &Registry,
) -> anyhow::Result<(Vec<eastwall_flows::Observation>, String)> {
    for t in [&source.since, &source.until].into_iter().flatten() {
        eastwall_flows::record::unix_micros(t)
            .with_context(|| format!("{t:?} is not a time (RFC 3339)"))?;
    }
    let edges = client.edges(
        source.since.as_deref().unwrap_or("0"),
        source.until.as_deref(),
    )?;
    let (list, problems) = eastwall_flows::edge::observations(&edges, reg);
    for p in &problems {
        eprintln!("skipped: {p}");
    }
    let days = match (&source.since, &source.until) {
        (None, None) => "every day kept".to_owned(),
        (s, u) => format!(
            "the days from {} to {}",
            s.as_deref()
                .map_or("the first kept", |t| t.get(..10).unwrap_or(t)),
            u.as_deref().map_or("today", |t| t.get(..10).unwrap_or(t)),
        ),
    };
    Ok((
        list,
        format!(
            "{} per-day aggregates of the collector ({days}, UTC)",
            edges.len()
        ),
    ))
}

/// Writes the recommended policy.
pub(crate) fn recommend(args: &RecommendArgs) -> anyhow::Result<()> {
    let reg = registry(&args.registry)?;
    let (list, what) = match super::observe::CollectorClient::new(&args.source.collector)? {
        Some(client) if !args.from_records => {
            if !args.source.records.is_empty() {
                bail!("give EVE files or --collector, not both");
            }
            aggregated(&client, &args.source, &reg)?
        }
        _ => {
            let o = observations(&args.source)?;
            let what = format!("{} records", o.records);
            (o.list, what)
        }
    };
    let r = recommend::recommend(
        &list,
        &reg,
        &Options {
            app: args.app.clone(),
            zone: args.zone.clone(),
            monitor: args.monitor,
        },
    );
    // What is written must be a policy `policy check` accepts.
    Policy::parse("the recommended policy", &r.yaml, &reg)
        .map_err(|d| anyhow::anyhow!("the recommendation does not validate (a bug):\n{d}"))?;
    let header = format!(
        "# recommended by `eastwall policy recommend` from {what} ({} decisions observed, {} allowed ones covered by {} rules)\n",
        list.iter().map(|x| x.count).sum::<u64>(),
        r.covered,
        r.rules
    );
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{header}{}", r.yaml))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{} rules written to {}", r.rules, path.display());
        }
        None => print!("{header}{}", r.yaml),
    }
    Ok(())
}
