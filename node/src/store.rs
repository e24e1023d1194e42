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
use eastwall_store::Store;
use eastwall_store::etcd_client::{EventType, PutOptions, WatchOptions};
use tracing::{info, warn};

use crate::config::{NodeConfig, StoreSpec};
use crate::conn::Pipeline;
use crate::identity::LocalIdentities;
use crate::rules::StoredVersion;

/// How often a node reports.
const REPORT_EVERY: Duration = Duration::from_secs(3);
/// How long a report outlives a node that stopped reporting.
const REPORT_TTL_SECS: i64 = 10;
/// The longest wait between attempts to reach the store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the node last refused, for its status.
#[derive(Default)]
pub(crate) struct Refusal(Mutex<Option<String>>);

impl Refusal {
    fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Before the node starts: without a last applied configuration in the state folder, the
/// node needs the store's (waits up to `within`); with one, it starts from it.
pub fn prepare(cfg: &NodeConfig, within: Duration) -> anyhow::Result<()> {
    let Some(st) = &cfg.store else {
        return Ok(());
    };
    std::fs::create_dir_all(&st.state_dir)
        .with_context(|| format!("creating {}", st.state_dir.display()))?;
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
                Ok(Some(_)) => return Ok(()),
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
    // The version record first: most of the time it is the one in force already.
    let (version, _, read_at) = store.version().await?;
    let Some(v) = version else {
        return Ok(None);
    };
    if have.is_some_and(|h| h.version == v.version && h.hash == v.hash) {
        return Ok(Some((v.version, read_at)));
    }
    let current = store.current().await?;
    let Some(v) = current.version else {
        return Ok(None);
    };
    let revision = current.read_at;
    let node = cfg.node_name.clone();
    let source = store.keys().source();
    // Validating a large configuration takes seconds (100,000 workloads: ~5 s): off the
    // async workers.
    let snapshot = current.snapshot;
    let (checked, snapshot) = tokio::task::spawn_blocking(move || {
        let checked = snapshot
            .validate(&source)
            .map(|valid| (valid.registry.node(&node).is_some(), valid.registry_text));
        (checked, snapshot)
    })
    .await
    .context("validating the store's configuration")?;
    if snapshot.hash() != v.hash {
        let why = format!(
            "version {} refused: the stored values are not the ones it was applied with (their hash differs): written outside `eastwall apply`?",
            v.version
        );
        warn!("{why}");
        refusal.set(Some(why));
        return Ok(Some((v.version, revision)));
    }
    let (ours, registry) = match checked {
        Ok(x) => x,
        Err(d) => {
            let why = format!("version {} refused:\n{d}", v.version);
            warn!("{why}");
            refusal.set(Some(why));
            return Ok(Some((v.version, revision)));
        }
    };
    if !ours {
        let why = format!(
            "version {} refused: node `{}` is not in its registry",
            v.version, cfg.node_name
        );
        warn!("{why}");
        refusal.set(Some(why));
        return Ok(Some((v.version, revision)));
    }
    let policy = snapshot
        .get(eastwall_store::snapshot::POLICY)
        .unwrap_or_default();
    let mark = StoredVersion {
        version: v.version,
        hash: v.hash.clone(),
    }
    .mark();
    write_state(
        &cfg.registry_path,
        &format!("{mark}{registry}"),
        &cfg.policy_path,
        &format!("{mark}{policy}"),
    )?;
    refusal.set(None);
    info!(version = v.version, author = %v.author, "new configuration from the store");
    Ok(Some((v.version, revision)))
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
/// folder (the file reload applies it). Reconnects with backoff; a watch that lost its place
/// (compaction, a member gone) starts again with a full read.
pub(crate) async fn follow(cfg: Arc<NodeConfig>, pipeline: Arc<Pipeline>, refusal: Arc<Refusal>) {
    let Some(st) = cfg.store.clone() else {
        return;
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = tokio::time::Instant::now();
        let r = watch(&cfg, &st, &pipeline, &refusal).await;
        // A watch that served a while is not a run of failures.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        match r {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                warn!("the central store: {e:#}; the configuration in force stays");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn watch(
    cfg: &NodeConfig,
    st: &StoreSpec,
    pipeline: &Pipeline,
    refusal: &Refusal,
) -> anyhow::Result<()> {
    let mut store = Store::connect(&st.store).await?;
    let have = pipeline.rules().stored.clone();
    let Some((_, revision)) = sync(cfg, &mut store, refusal, have.as_ref()).await? else {
        // Nothing applied yet: wait for the first version.
        tokio::time::sleep(Duration::from_secs(1)).await;
        return Ok(());
    };
    let key = store.keys().version();
    // The watch has a stream of its own; the syncs it triggers use the store's connection.
    let mut events = store
        .clone()
        .client()
        .watch(
            key,
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await
        .context("watching the version record")?;
    loop {
        let Some(resp) = events.message().await.context("the watch")? else {
            bail!("the watch ended");
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            bail!(
                "the watch lost its place (compacted at {})",
                resp.compact_revision()
            );
        }
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Put)
        {
            let have = pipeline.rules().stored.clone();
            sync(cfg, &mut store, refusal, have.as_ref()).await?;
        }
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
                let expiry = identities.as_ref().and_then(|i| i.earliest_expiry());
                // The store's version refused here, or the state files refused by the reload
                // (what only this node can check: capture, IDS engines, certificates).
                let problem = refusal.get().or_else(|| {
                    pipeline
                        .telemetry
                        .health
                        .reload_refused()
                        .map(|why| format!("the latest version could not be applied: {why}"))
                });
                let status = status_of(&cfg, &pipeline, since.as_ref(), problem, expiry);
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

fn status_of(
    cfg: &NodeConfig,
    pipeline: &Pipeline,
    since: Option<&(StoredVersion, SystemTime)>,
    problem: Option<String>,
    cert_expiry: Option<SystemTime>,
) -> serde_json::Value {
    let m = &pipeline.telemetry.metrics;
    serde_json::json!({
        "node": cfg.node_name,
        "version": since.map(|(v, _)| v.version),
        "hash": since.map(|(v, _)| v.hash.clone()),
        "appliedAt": since.map(|(_, t)| eastwall_wire::eve::timestamp(*t)),
        "eastwallVersion": env!("CARGO_PKG_VERSION"),
        "certExpiry": cert_expiry.map(eastwall_wire::eve::timestamp),
        "connections": m.connections_held.get(),
        "denied": m.denied_all.get(),
        "problem": problem,
    })
}
