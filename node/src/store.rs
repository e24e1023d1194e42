//! A node that takes its registry and policy from the central store (`spec.store`).
//!
//! The node follows the store's version record (`config/version`): at each new version it
//! reads the configuration at that record's revision (one consistent snapshot, never a
//! half-applied one), validates it as a whole and for this node, and writes it to its state
//! folder (`registry.yaml`, `policy.yaml`, each marked with the version on its first line).
//! From there the file reload (`reload`) applies it like any change: same validation, same
//! atomic swap, live connections re-decided and revoked ones cut. The state folder is also
//! what the node starts from, and keeps enforcing, while the store is unreachable. A value
//! that does not validate is refused: the rules in force stay, and the node's status says
//! why.
//!
//! Status: every few seconds the node writes `nodes/<name>/status` (the version in force,
//! when it took effect, its eastwall version, certificate expiry, counts, a refusal) under
//! a lease, so a node that stops reporting disappears from `eastwall status` as dead.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use eastwall_identity::SpiffeId;
use eastwall_store::Store;
use eastwall_store::etcd_client::PutOptions;
use eastwall_store::follow::{Latest, latest};
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::conn::Pipeline;
use crate::identity::LocalIdentities;
use crate::rules::StoredVersion;

/// How often a node reports.
const REPORT_EVERY: Duration = Duration::from_secs(3);
/// How long a report outlives a node that stopped reporting.
const REPORT_TTL_SECS: i64 = 10;

/// What the node last refused, and a node configuration from the store that waits for a
/// restart: for its status.
#[derive(Default)]
pub(crate) struct Refusal {
    refused: Mutex<Option<String>>,
    restart: Mutex<Option<String>>,
}

impl Refusal {
    fn set(&self, why: Option<String>) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    fn get(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_restart(&self, why: Option<String>) {
        *self.restart.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    fn restart(&self) -> Option<String> {
        self.restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The file in the state folder that keeps the node configuration sections this node takes
/// from the store.
const DEFAULTS_FILE: &str = "node-defaults.json";

/// The file in the state folder that keeps the values of the version in force, to catch up
/// from the history instead of reading everything.
const SNAPSHOT_FILE: &str = "snapshot.json";

/// The values of version `have`, as kept in the state folder (`None`: not those).
fn read_snapshot(state_dir: &Path, have: &StoredVersion) -> Option<eastwall_store::Snapshot> {
    #[derive(serde::Deserialize)]
    struct Kept {
        version: u64,
        hash: String,
        values: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read(state_dir.join(SNAPSHOT_FILE)).ok()?;
    let kept: Kept = serde_json::from_slice(&text).ok()?;
    let s = eastwall_store::Snapshot::from_values(kept.values);
    (kept.version == have.version && kept.hash == have.hash && s.hash() == have.hash).then_some(s)
}

/// `cfg` with the node configuration sections of the store it keeps in its state folder (the
/// last applied; none: `cfg` as it is).
pub fn with_stored_defaults(cfg: NodeConfig) -> anyhow::Result<NodeConfig> {
    let Some(st) = &cfg.store else {
        return Ok(cfg);
    };
    let path = st.state_dir.join(DEFAULTS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(cfg);
    };
    let defaults: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "{}: not the node configuration it should be",
                path.display()
            )
        })?;
    let own = crate::config::read_file(&cfg.file)?;
    NodeConfig::with_defaults(
        &cfg.file,
        &own,
        &defaults,
        &format!("the store's node configuration ({})", path.display()),
    )
    .map_err(|d| anyhow::anyhow!("{d}"))
}

/// Before the node starts: without a last applied configuration in the state folder, the
/// node needs the store's (waits up to `within`); with one, it starts from it.
pub fn prepare(cfg: &NodeConfig, within: Duration) -> anyhow::Result<()> {
    let Some(st) = &cfg.store else {
        return Ok(());
    };
    std::fs::create_dir_all(st.rules_dir())
        .with_context(|| format!("creating {}", st.rules_dir().display()))?;
    let mark = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| StoredVersion::of(&t))
    };
    let (r, p) = (mark(&cfg.registry_path), mark(&cfg.policy_path));
    if r.is_some() && r == p {
        return Ok(());
    }
    // Missing, or of two versions (a crash between the two renames): from the store.
    info!(endpoints = ?st.store.endpoints, "no configuration applied yet: reading it from the store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + within;
        let refusal = Refusal::default();
        loop {
            let synced = match Store::connect(&st.store).await {
                Ok(mut store) => sync(cfg, &mut store, &refusal, None).await,
                Err(e) => Err(e),
            };
            match synced {
                // Written, or refused (then the state folder still has no configuration).
                Ok(Some(_)) => {
                    let (r, p) = (mark(&cfg.registry_path), mark(&cfg.policy_path));
                    if r.is_some() && r == p {
                        return Ok(());
                    }
                    bail!(
                        "the store's configuration cannot be this node's: {}",
                        refusal.get().unwrap_or_else(|| "refused".to_owned())
                    );
                }
                Ok(None) => bail!(
                    "the store at {} holds no configuration yet: apply one (`eastwall apply`)",
                    st.store.endpoints.join(", ")
                ),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(
                        e.context("no configuration applied yet, and the store cannot give one")
                    );
                }
                Err(e) => {
                    warn!("{e:#}; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// Reads the configuration in force in the store and, if it is not the one in the state
/// folder (`have`), validates it and writes it there. Returns the version in the store
/// (`None`: nothing applied yet); a configuration that does not validate is refused (kept
/// in `refusal`), and the folder stays as it was.
async fn sync(
    cfg: &NodeConfig,
    store: &mut Store,
    refusal: &Refusal,
    have: Option<&StoredVersion>,
) -> anyhow::Result<Option<(u64, i64)>> {
    let st = cfg.store.as_ref().context("the node has no store")?;
    let base = have.and_then(|h| read_snapshot(&st.state_dir, h));
    let have = have.map(|h| (h.version, h.hash.as_str()));
    let (v, snapshot, valid, read_at) = match latest(store, have, base.as_ref()).await? {
        Latest::Nothing => return Ok(None),
        Latest::Unchanged { read_at } => {
            return Ok(have.map(|(version, _)| (version, read_at)));
        }
        Latest::Refused {
            version,
            why,
            read_at,
        } => {
            warn!("{why}");
            refusal.set(Some(why));
            return Ok(Some((version.version, read_at)));
        }
        Latest::New {
            version,
            snapshot,
            valid,
            read_at,
        } => (version, snapshot, valid, read_at),
    };
    if valid.registry.node(&cfg.node_name).is_none() {
        let why = format!(
            "version {} refused: node `{}` is not in its registry",
            v.version, cfg.node_name
        );
        warn!("{why}");
        refusal.set(Some(why));
        return Ok(Some((v.version, read_at)));
    }
    let policy = snapshot
        .get(eastwall_store::snapshot::POLICY)
        .unwrap_or_default();
    // The node configuration sections for this node, checked over its own file.
    let source = store.keys().source();
    let defaults = snapshot
        .node_defaults_for(&cfg.node_name, &source)
        .map_err(|d| d.to_string())
        .and_then(|d| {
            let own = crate::config::read_file(&cfg.file).map_err(|e| format!("{e:#}"))?;
            let label = format!("{source}node-config (version {})", v.version);
            NodeConfig::with_defaults(&cfg.file, &own, &d, &label)
                .map(|merged| (d, merged.defaults))
                .map_err(|e| e.to_string())
        });
    let (defaults, taken) = match defaults {
        Ok(x) => x,
        Err(e) => {
            let why = format!(
                "version {} refused: its node configuration does not fit this node:\n{e}",
                v.version
            );
            warn!("{why}");
            refusal.set(Some(why));
            return Ok(Some((v.version, read_at)));
        }
    };
    // The rules first: the policy may name profiles that need them.
    write_rules(&st.rules_dir(), &valid.rules)?;
    write_if_changed(
        &st.state_dir.join(DEFAULTS_FILE),
        &serde_json::to_string_pretty(&defaults).unwrap_or_default(),
    )?;
    // Most sections are read once, at start: a change waits for a restart, and says so.
    refusal.set_restart((taken != cfg.defaults).then(|| {
        format!(
            "the node configuration of version {} differs from the one this node started with: restart it to apply",
            v.version
        )
    }));
    let mark = StoredVersion {
        version: v.version,
        hash: v.hash.clone(),
    }
    .mark();
    write_state(
        &cfg.registry_path,
        &format!("{mark}{}", valid.registry_text),
        &cfg.policy_path,
        &format!("{mark}{policy}"),
    )?;
    // The values themselves, to catch up from next time.
    write_if_changed(
        &st.state_dir.join(SNAPSHOT_FILE),
        &serde_json::json!({
            "version": v.version,
            "hash": v.hash,
            "values": snapshot.values(),
        })
        .to_string(),
    )?;
    refusal.set(None);
    info!(version = v.version, author = %v.author, "new configuration from the store");
    // The rules themselves are freed off the async workers (a large policy takes a while).
    drop(tokio::task::spawn_blocking(move || drop(valid)));
    Ok(Some((v.version, read_at)))
}

/// Writes `text` to `path` (aside, then renamed over) unless it holds that already.
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Makes `dir` hold exactly the rule sets `sets` (`<set>.rules`), writing only those that
/// changed: an unchanged file keeps its time, so the IDS engines are not rebuilt for nothing.
fn write_rules(
    dir: &Path,
    sets: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in sets {
        let path = dir.join(format!("{name}.rules"));
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        write_if_changed(&path, text)?;
        info!(set = %name, bytes = text.len(), "IDS rule set from the store");
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if path.extension().is_some_and(|x| x == "rules") && !sets.contains_key(stem) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            info!(set = %stem, "IDS rule set removed from the store");
        }
    }
    Ok(())
}

/// Replaces both state files (each written aside, then renamed over: never a torn file).
fn write_state(registry: &Path, rtext: &str, policy: &Path, ptext: &str) -> anyhow::Result<()> {
    for (path, text) in [(registry, rtext), (policy, ptext)] {
        let tmp = path.with_extension("yaml.new");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(())
}

/// Follows the store until the task is dropped: each new version is synced to the state
/// folder (the file reload applies it); see [`eastwall_store::follow::follow`].
pub(crate) async fn follow(cfg: Arc<NodeConfig>, pipeline: Arc<Pipeline>, refusal: Arc<Refusal>) {
    let Some(st) = cfg.store.clone() else {
        return;
    };
    let node = NodeSync {
        cfg: cfg.clone(),
        pipeline,
        refusal,
    };
    eastwall_store::follow::follow(&st.store, "the configuration in force stays", node).await;
}

struct NodeSync {
    cfg: Arc<NodeConfig>,
    pipeline: Arc<Pipeline>,
    refusal: Arc<Refusal>,
}

impl eastwall_store::follow::Sync for NodeSync {
    async fn sync(&mut self, store: &mut Store) -> anyhow::Result<Option<i64>> {
        let have = self.pipeline.rules().stored.clone();
        Ok(sync(&self.cfg, store, &self.refusal, have.as_ref())
            .await?
            .map(|(_, revision)| revision))
    }
}

/// Reports this node's status under its key until the task is dropped.
pub(crate) async fn report(
    cfg: Arc<NodeConfig>,
    pipeline: Arc<Pipeline>,
    refusal: Arc<Refusal>,
    identities: Option<Arc<LocalIdentities>>,
) {
    let Some(st) = cfg.store.clone() else {
        return;
    };
    let mut since: Option<(StoredVersion, SystemTime)> = None;
    loop {
        let r = async {
            let mut store = Store::connect(&st.store).await?;
            let lease = store
                .client()
                .lease_grant(REPORT_TTL_SECS, None)
                .await
                .context("a lease for the status")?
                .id();
            let key = store.keys().status(&cfg.node_name);
            let (mut keeper, mut answers) = store
                .client()
                .lease_keep_alive(lease)
                .await
                .context("renewing the status lease")?;
            loop {
                let stored = pipeline.rules().stored.clone();
                if stored.as_ref() != since.as_ref().map(|(v, _)| v) {
                    since = stored.map(|v| (v, SystemTime::now()));
                }
                let certs = identities
                    .as_ref()
                    .map(|i| (i.count(), i.earliest_expiry(), i.expiries()));
                // The store's version refused here, or the state files refused by the reload
                // (what only this node can check: capture, IDS engines, certificates).
                let problem = refusal.get().or_else(|| {
                    pipeline
                        .telemetry
                        .health
                        .reload_refused()
                        .map(|why| format!("the latest version could not be applied: {why}"))
                });
                let status = status_of(
                    &cfg,
                    &pipeline,
                    since.as_ref(),
                    problem,
                    refusal.restart(),
                    certs,
                );
                store
                    .client()
                    .put(
                        key.clone(),
                        status.to_string(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await
                    .context("writing the status")?;
                keeper
                    .keep_alive()
                    .await
                    .context("renewing the status lease")?;
                match answers
                    .message()
                    .await
                    .context("renewing the status lease")?
                {
                    Some(a) if a.ttl() > 0 => {}
                    _ => bail!("the status lease expired"),
                }
                tokio::time::sleep(REPORT_EVERY).await;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = r {
            warn!("reporting to the central store: {e:#}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The node's workload certificates: how many, the first expiry, each one's.
type Certificates = (usize, Option<SystemTime>, Vec<(SpiffeId, SystemTime)>);

/// Workload certificates listed by identity in a status at most.
const MAX_LISTED_CERTS: usize = 2_000;

fn status_of(
    cfg: &NodeConfig,
    pipeline: &Pipeline,
    since: Option<&(StoredVersion, SystemTime)>,
    problem: Option<String>,
    restart: Option<String>,
    certs: Option<Certificates>,
) -> serde_json::Value {
    let m = &pipeline.telemetry.metrics;
    // Each workload certificate's expiry, by identity (for the console), within a bound that
    // keeps the status value small.
    let expiries: serde_json::Map<String, serde_json::Value> = certs
        .iter()
        .flat_map(|(_, _, e)| e.iter().take(MAX_LISTED_CERTS))
        .map(|(id, t)| (id.to_string(), eastwall_wire::eve::timestamp(*t).into()))
        .collect();
    serde_json::json!({
        "node": cfg.node_name,
        "version": since.map(|(v, _)| v.version),
        "hash": since.map(|(v, _)| v.hash.clone()),
        "appliedAt": since.map(|(_, t)| eastwall_wire::eve::timestamp(*t)),
        "eastwallVersion": env!("CARGO_PKG_VERSION"),
        "certificates": certs.as_ref().map(|(n, _, _)| *n),
        "certExpiry": certs.as_ref().and_then(|(_, t, _)| *t).map(eastwall_wire::eve::timestamp),
        "workloadCerts": expiries,
        "connections": m.connections_held.get(),
        "denied": m.denied_all.get(),
        "problem": problem,
        "restartNeeded": restart,
    })
}
