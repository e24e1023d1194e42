//! The operator's commands on the central store (kubectl habits): `apply`, `diff`, `get`,
//! `history`, `rollback`, `workload`, `status`. Each connects with the operator's client
//! certificate (`--cert`/`--key`, or `EASTWALL_ETCD_*`), validates with the same checks as
//! files, and writes only through `Store::apply` (one version per change, guarded by the
//! version read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use eastwall_store::history::{self, Version};
use eastwall_store::snapshot::{self, Part, WORKLOADS};
use eastwall_store::{ApplyError, Current, NodeState, Snapshot, Store, StoreSpec};
use serde_json::Value;

/// How to reach the store. Each is required; they are checked when the store is used (so
/// that a command may also work without a store, e.g. `ca serve --registry FILE`).
#[derive(Args, Clone, Debug)]
pub(crate) struct StoreArgs {
    /// etcd members, comma-separated (`https://10.0.0.5:2379,...`).
    #[arg(long, env = "EASTWALL_ETCD_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The CA of the etcd members' certificates.
    #[arg(long, env = "EASTWALL_ETCD_CACERT")]
    cacert: Option<PathBuf>,
    /// Your client certificate (its common name is your etcd user).
    #[arg(long, env = "EASTWALL_ETCD_CERT")]
    cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, env = "EASTWALL_ETCD_KEY")]
    key: Option<PathBuf>,
    /// The key prefix of this eastwall installation.
    #[arg(long, env = "EASTWALL_ETCD_PREFIX", default_value = eastwall_store::layout::DEFAULT_PREFIX)]
    prefix: String,
}

impl StoreArgs {
    /// Whether any way to reach a store was given.
    pub(crate) fn given(&self) -> bool {
        !self.endpoints.is_empty()
            || self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
    }

    /// The store to connect to; an error names what is missing.
    pub(crate) fn spec(&self) -> anyhow::Result<StoreSpec> {
        let missing: Vec<&str> = [
            (
                "--endpoints (EASTWALL_ETCD_ENDPOINTS)",
                self.endpoints.is_empty(),
            ),
            ("--cacert (EASTWALL_ETCD_CACERT)", self.cacert.is_none()),
            ("--cert (EASTWALL_ETCD_CERT)", self.cert.is_none()),
            ("--key (EASTWALL_ETCD_KEY)", self.key.is_none()),
        ]
        .into_iter()
        .filter_map(|(what, absent)| absent.then_some(what))
        .collect();
        match (&self.cacert, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) if missing.is_empty() => Ok(StoreSpec {
                endpoints: self.endpoints.clone(),
                ca_file: ca.clone(),
                cert_file: cert.clone(),
                key_file: key.clone(),
                prefix: self.prefix.clone(),
            }),
            _ => bail!("to reach the central store, give {}", missing.join(", ")),
        }
    }

    /// Who is applying: the store user (the certificate's common name) and the local user.
    fn author(&self) -> String {
        let store_user = self
            .cert
            .as_ref()
            .and_then(|c| std::fs::read(c).ok())
            .and_then(|pem| eastwall_store::etcd::certificate_user(&pem))
            .unwrap_or_else(|| "unknown".to_owned());
        let local = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".to_owned());
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        format!("{store_user} ({local}@{host})")
    }
}

/// What `get` shows.
#[derive(Subcommand, Clone, Debug)]
pub(crate) enum GetWhat {
    /// The registry in force, as one document.
    Registry,
    /// The policy in force.
    Policy,
    /// One workload.
    Workload {
        /// Its name.
        name: String,
    },
    /// The IDS rule sets (name, size, rules), or one set's text.
    Rules {
        /// A set's name.
        name: Option<String>,
    },
    /// The node configuration sections a node takes from the store (none: those for every
    /// node).
    NodeConfig {
        /// A node.
        node: Option<String>,
    },
    /// The registry's nodes.
    Nodes,
    /// The version in force.
    Version,
}

/// What `delete` removes.
#[derive(Subcommand, Clone, Debug)]
pub(crate) enum DeleteWhat {
    /// An IDS rule set.
    Rules {
        /// Its name.
        name: String,
    },
    /// The node configuration sections of one node (none: those for every node).
    NodeConfig {
        /// A node.
        node: Option<String>,
    },
}

/// What `workload` does.
#[derive(Subcommand, Clone, Debug)]
pub(crate) enum WorkloadAction {
    /// Adds a workload (or replaces one of the same name).
    Add {
        /// Its name.
        name: String,
        /// The node it runs on.
        #[arg(long)]
        node: String,
        /// Its addresses (repeat, or comma-separated).
        #[arg(long = "address", value_delimiter = ',', required = true)]
        addresses: Vec<String>,
        /// Its app.
        #[arg(long)]
        app: Option<String>,
        /// Its zone.
        #[arg(long)]
        zone: Option<String>,
        /// Labels, `key=value` (repeat).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The user it belongs to.
        #[arg(long)]
        user: Option<String>,
    },
    /// Removes a workload.
    Remove {
        /// Its name.
        name: String,
    },
    /// Moves a workload to another node (and new addresses, if given).
    Move {
        /// Its name.
        name: String,
        /// The node it moves to.
        #[arg(long)]
        node: String,
        /// Its addresses there (repeat, or comma-separated); unchanged if not given.
        #[arg(long = "address", value_delimiter = ',')]
        addresses: Vec<String>,
    },
}

/// `eastwall apply -f FILE|DIR...`: validates, shows the diff, writes one new version.
pub(crate) fn apply(
    store: &StoreArgs,
    files: &[PathBuf],
    message: Option<String>,
) -> anyhow::Result<()> {
    let parts = read_parts(files)?;
    let message = message.unwrap_or_else(|| {
        format!(
            "apply {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )
    });
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let desired = desired_of(&current, &parts, &s.keys().source())?;
        write(&mut s, &current, &desired, &store.author(), &message).await
    })
}

/// `eastwall diff -f FILE|DIR...`: what `apply` would change.
pub(crate) fn diff(store: &StoreArgs, files: &[PathBuf]) -> anyhow::Result<()> {
    let parts = read_parts(files)?;
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let desired = desired_of(&current, &parts, &s.keys().source())?;
        if let Err(d) = desired.validate(&s.keys().source()) {
            bail!("the result would not validate:\n{d}");
        }
        let changes = history::changes(&current.snapshot, &desired);
        if changes.is_empty() {
            println!("no changes against version {}", version_of(&current));
        } else {
            print!("{}", history::render(&changes, &s.keys().source()));
        }
        Ok(())
    })
}

/// `eastwall get ...`.
pub(crate) fn get(store: &StoreArgs, what: GetWhat) -> anyhow::Result<()> {
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let source = s.keys().source();
        let snap = &current.snapshot;
        match what {
            GetWhat::Registry => print!("{}", snap.registry_text(&source)?),
            GetWhat::Policy => print!(
                "{}",
                snap.get(snapshot::POLICY).context("no policy stored")?
            ),
            GetWhat::Workload { name } => {
                let v = snap.get(&format!("{WORKLOADS}{name}")).with_context(|| {
                    format!("no workload `{name}` in version {}", version_of(&current))
                })?;
                let v: Value = serde_json::from_str(v).context("unreadable workload")?;
                println!("{}", serde_json::to_string_pretty(&v["spec"])?);
            }
            GetWhat::Rules { name: Some(name) } => {
                let sets = snap.rule_sets();
                let text = sets.get(&name).with_context(|| {
                    format!("no rule set `{name}` in version {}", version_of(&current))
                })?;
                print!("{text}");
            }
            GetWhat::Rules { name: None } => {
                println!("SET\tBYTES\tRULES");
                for (name, text) in snap.rule_sets() {
                    let rules = text
                        .lines()
                        .filter(|l| {
                            let l = l.trim_start();
                            !l.is_empty() && !l.starts_with('#')
                        })
                        .count();
                    println!("{name}\t{}\t{rules}", text.len());
                }
            }
            GetWhat::NodeConfig { node: None } => print!(
                "{}",
                snap.get(snapshot::NODE_DEFAULTS)
                    .context("no node configuration for every node")?
            ),
            GetWhat::NodeConfig { node: Some(node) } => {
                let own = snap.get(&snapshot::node_defaults_key(Some(&node)));
                let merged = snap.node_defaults_for(&node, &source)?;
                match own {
                    Some(text) => print!("# etcd:{source}node-config/nodes/{node}\n{text}"),
                    None => println!("# no node configuration of its own for `{node}`"),
                }
                println!(
                    "# what `{node}` takes from the store (its own sections, then those for every node), where its file does not set them:\n{}",
                    serde_json::to_string_pretty(&merged)?
                );
            }
            GetWhat::Nodes => {
                let v = validated(snap, &source)?;
                for n in v.registry.nodes() {
                    let addrs: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
                    let here = v.registry.workloads_on(&n.name).count();
                    println!("{}\t{}\t{here} workloads", n.name, addrs.join(","));
                }
            }
            GetWhat::Version => match &current.version {
                Some(v) => print_version(v),
                None => println!("nothing applied yet"),
            },
        }
        Ok(())
    })
}

/// `eastwall history [VERSION]`: every version, or what one changed.
pub(crate) fn show_history(store: &StoreArgs, version: Option<u64>) -> anyhow::Result<()> {
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        match version {
            None => {
                println!("VERSION\tTIME\tAUTHOR\tCHANGED\tHASH\tMESSAGE");
                for v in s.versions().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        v.version,
                        v.time,
                        v.author,
                        v.changed,
                        v.hash.chars().take(19).collect::<String>(),
                        v.message
                    );
                }
            }
            Some(n) => {
                let before = if n > 1 {
                    s.snapshot_of(n - 1).await?
                } else {
                    Snapshot::default()
                };
                let after = s.snapshot_of(n).await?;
                print!(
                    "{}",
                    history::render(&history::changes(&before, &after), &s.keys().source())
                );
            }
        }
        Ok(())
    })
}

/// `eastwall rollback VERSION`: puts version VERSION's configuration in force again, as a new
/// version.
pub(crate) fn rollback(
    store: &StoreArgs,
    version: u64,
    message: Option<String>,
) -> anyhow::Result<()> {
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let desired = s.snapshot_of(version).await?;
        let message = message.unwrap_or_else(|| format!("rollback to version {version}"));
        write(&mut s, &current, &desired, &store.author(), &message).await
    })
}

/// `eastwall delete rules NAME | node-config [NODE]`: removes it, as a new version.
pub(crate) fn delete(
    store: &StoreArgs,
    what: DeleteWhat,
    message: Option<String>,
) -> anyhow::Result<()> {
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let mut desired = current.snapshot.clone();
        let (removed, what) = match &what {
            DeleteWhat::Rules { name } => {
                (desired.remove_rules(name), format!("rule set `{name}`"))
            }
            DeleteWhat::NodeConfig { node } => (
                desired.remove(&snapshot::node_defaults_key(node.as_deref())),
                match node {
                    Some(n) => format!("node configuration of `{n}`"),
                    None => "node configuration of every node".to_owned(),
                },
            ),
        };
        if !removed {
            bail!("no {what} in version {}", version_of(&current));
        }
        let message = message.unwrap_or_else(|| format!("delete {what}"));
        write(&mut s, &current, &desired, &store.author(), &message).await
    })
}

/// `eastwall workload add|remove|move`: one workload, as automation does.
pub(crate) fn workload(store: &StoreArgs, action: WorkloadAction) -> anyhow::Result<()> {
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let mut desired = current.snapshot.clone();
        let key = |name: &str| format!("{WORKLOADS}{name}");
        let message = match action {
            WorkloadAction::Add {
                name,
                node,
                addresses,
                app,
                zone,
                labels,
                user,
            } => {
                let mut spec =
                    serde_json::json!({"name": name, "node": node, "addresses": addresses});
                if let Some(a) = app {
                    spec["app"] = a.into();
                }
                if let Some(z) = zone {
                    spec["zone"] = z.into();
                }
                if let Some(u) = user {
                    spec["user"] = u.into();
                }
                if !labels.is_empty() {
                    let mut m = serde_json::Map::new();
                    for l in labels {
                        let (k, v) = l
                            .split_once('=')
                            .with_context(|| format!("label `{l}`: write key=value"))?;
                        m.insert(k.to_owned(), v.into());
                    }
                    spec["labels"] = Value::Object(m);
                }
                desired.set(key(&name), snapshot::workload_value(&spec));
                format!("workload add {name} on {node}")
            }
            WorkloadAction::Remove { name } => {
                if !desired.remove(&key(&name)) {
                    bail!("no workload `{name}` in version {}", version_of(&current));
                }
                format!("workload remove {name}")
            }
            WorkloadAction::Move {
                name,
                node,
                addresses,
            } => {
                let old = desired.get(&key(&name)).with_context(|| {
                    format!("no workload `{name}` in version {}", version_of(&current))
                })?;
                let mut v: Value = serde_json::from_str(old).context("unreadable workload")?;
                if !v.get("spec").is_some_and(Value::is_object) {
                    bail!(
                        "the stored workload `{name}` has no `spec` mapping: fix it with `eastwall apply`"
                    );
                }
                let from = v["spec"]["node"].as_str().unwrap_or_default().to_owned();
                v["spec"]["node"] = node.clone().into();
                if !addresses.is_empty() {
                    v["spec"]["addresses"] = addresses.into();
                }
                desired.set(key(&name), snapshot::workload_value(&v["spec"]));
                format!("workload move {name} from {from} to {node}")
            }
        };
        write(&mut s, &current, &desired, &store.author(), &message).await
    })
}

/// `eastwall status`: every node that reports, the version it enforces, and who lags.
pub(crate) fn status(store: &StoreArgs) -> anyhow::Result<()> {
    run(async {
        let mut s = Store::connect(&store.spec()?).await?;
        let current = s.current().await?;
        let statuses = s.statuses().await?;
        let registry_nodes: Vec<String> = validated(&current.snapshot, &s.keys().source())
            .map(|v| v.registry.nodes().iter().map(|n| n.name.clone()).collect())
            .unwrap_or_default();
        let latest = current.version.as_ref().map_or(0, |v| v.version);
        println!("latest version: {}", version_of(&current));
        println!(
            "NODE\tSTATE\tVERSION\tHASH\tAPPLIED\tEASTWALL\tCERTS\tCERT EXPIRY\tCONNECTIONS\tDENIED\tPROBLEM"
        );
        let mut names: Vec<String> = registry_nodes;
        for n in statuses.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names.sort();
        for n in names {
            let Some(st) = statuses.get(&n) else {
                println!(
                    "{n}\tDOWN (no status: not running, or cannot reach the store)\t-\t-\t-\t-\t-\t-\t-\t-\t-"
                );
                continue;
            };
            let v = st["version"].as_u64().unwrap_or(0);
            let state = NodeState::of(Some(st), latest).as_str();
            // What a node wrote, made safe for a terminal table: one line, no control codes.
            let field = |k: &str| {
                let raw = match &st[k] {
                    Value::Null => "-".to_owned(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                raw.replace('\n', " | ")
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect::<String>()
            };
            println!(
                "{n}\t{state}\t{v}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                field("hash").chars().take(19).collect::<String>(),
                field("appliedAt"),
                field("eastwallVersion"),
                field("certificates"),
                field("certExpiry"),
                field("connections"),
                field("denied"),
                if st["problem"].is_string() {
                    field("problem")
                } else {
                    field("restartNeeded")
                },
            );
        }
        Ok(())
    })
}

async fn write(
    s: &mut Store,
    current: &Current,
    desired: &Snapshot,
    author: &str,
    message: &str,
) -> anyhow::Result<()> {
    let source = s.keys().source();
    if let Err(d) = desired.validate(&source) {
        bail!("refused, nothing was written:\n{d}");
    }
    let changes = history::changes(&current.snapshot, desired);
    if changes.is_empty() {
        println!("no changes against version {}", version_of(current));
        return Ok(());
    }
    print!("{}", history::render(&changes, &source));
    match s.apply(current, desired, author, message).await {
        Ok(Some(v)) => {
            println!(
                "applied: version {} ({} keys changed)",
                v.version, v.changed
            );
            Ok(())
        }
        Ok(None) => {
            println!("no changes");
            Ok(())
        }
        Err(ApplyError::Conflict(why)) => bail!("refused: {why}"),
        Err(ApplyError::Invalid(d)) => bail!("refused, nothing was written:\n{d}"),
        Err(ApplyError::Store(e)) => Err(e),
    }
}

fn validated(snap: &Snapshot, source: &str) -> anyhow::Result<eastwall_store::Validated> {
    snap.validate(source)
        .map_err(|d| anyhow::anyhow!("the stored configuration does not validate:\n{d}"))
}

fn version_of(c: &Current) -> String {
    c.version.as_ref().map_or_else(
        || "0 (nothing applied yet)".to_owned(),
        |v| v.version.to_string(),
    )
}

fn print_version(v: &Version) {
    println!(
        "version {}\nhash {}\napplied {} by {}\nchanged {} keys\n{}",
        v.version, v.hash, v.time, v.author, v.changed, v.message
    );
}

/// The parts the files give (folders: their `*.yaml` and `*.yml` files, sorted), each
/// validated on its own with `FILE:LINE:COL`.
fn read_parts(files: &[PathBuf]) -> anyhow::Result<Vec<(Part, String)>> {
    let mut paths = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(f)
                .with_context(|| format!("reading {}", f.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "rules")
                    )
                })
                .collect();
            inside.sort();
            paths.extend(inside);
        } else {
            paths.push(f.clone());
        }
    }
    if paths.is_empty() {
        bail!("no files to apply");
    }
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    let mut kinds: BTreeMap<String, &Path> = BTreeMap::new();
    for p in &paths {
        let text = eastwall_node::config::read_file(p)?;
        let name = p.display().to_string();
        // Node configuration: its sections checked as a node takes them, with locations
        // (the store checks their shape only).
        if eastwall_policy::document_kind(&name, &text)
            .is_ok_and(|k| k == eastwall_policy::DocumentKind::NodeDefaults)
            && let Err(d) = eastwall_node::config::check_defaults(&name, &text)
        {
            errors.push(d.to_string());
            continue;
        }
        match snapshot::part_of_file(&name, &text) {
            Ok(part) => {
                let kind = match &part {
                    Part::Registry(_) => "registry".to_owned(),
                    Part::Policy(_) => "policy".to_owned(),
                    Part::Rules(name, _) => format!("`{name}` rule set"),
                    Part::NodeDefaults(Some(node), _) => format!("node configuration of `{node}`"),
                    Part::NodeDefaults(None, _) => "node configuration of every node".to_owned(),
                };

                if let Some(first) = kinds.insert(kind.clone(), p) {
                    bail!(
                        "two {kind} files: {} and {}; give one",
                        first.display(),
                        p.display()
                    );
                }
                parts.push((part, name));
            }
            Err(d) => errors.push(d.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("refused, nothing was written:\n{}", errors.join("\n"));
    }
    // The registry first: the policy is checked against the registry it comes with.
    parts.sort_by_key(|(p, _)| !matches!(p, Part::Registry(_)));
    Ok(parts)
}

/// `current` with the files' parts in place, each checked against the result with its own
/// file's name (a policy names `policy.yaml:LINE:COL`, not the store's key).
fn desired_of(
    current: &Current,
    parts: &[(Part, String)],
    source: &str,
) -> anyhow::Result<Snapshot> {
    let desired = parts
        .iter()
        .fold(current.snapshot.clone(), |s, (p, _)| s.with(p));
    let (registry, _) = desired
        .registry(source)
        .map_err(|d| anyhow::anyhow!("refused, nothing was written:\n{d}"))?;
    for (p, file) in parts {
        if let Part::Policy(text) = p
            && let Err(d) = eastwall_policy::Policy::parse(file, text, &registry)
        {
            bail!("refused, nothing was written:\n{d}");
        }
    }
    Ok(desired)
}

fn run<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}
