//! Hot reload of the registry and policy: the node watches both files (and reloads on
//! SIGHUP). A valid change takes effect for every decision from then on, without dropping
//! connections that stay allowed; live connections the new rules deny are ended at once. An
//! invalid change is rejected, logged and counted, and the rules in force stay.
//!
//! Order, so that nothing is half-applied: load and validate both files (on a blocking
//! thread: only regular files, at most `config::MAX_FILE_BYTES`); check this node is
//! still declared; re-install capture if the set of local workload addresses changed (one
//! atomic nftables transaction: if it fails, the old rules stay); obtain certificates for new
//! local workloads; put the rules in force; re-decide live connections.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use eastwall_identity::SpiffeId;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::ca::client::CaClient;
use crate::capture;
use crate::config::NodeConfig;
use crate::conn::Pipeline;
use crate::identity::{LocalIdentities, renew};
use crate::ids::{IdsEngines, rule_files};
use crate::rules::Rules;
use crate::telemetry::metrics::ResultLabels;

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(250);

/// What identifies a version of a file: replaced (new inode) or rewritten (time, size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok()?,
        len: m.len(),
        inode: m.ino(),
    })
}

/// How certificates for workloads added by a reload are obtained.
pub(crate) enum IdentityUpkeep {
    /// No tunnel, no certificates.
    None,
    /// From files in `cert_dir`.
    Files {
        /// The node's identities.
        ids: Arc<LocalIdentities>,
        /// Where the files are.
        cert_dir: std::path::PathBuf,
    },
    /// From the eastwall CA, renewed by a task per identity.
    Ca {
        /// The node's identities.
        ids: Arc<LocalIdentities>,
        /// The CA client.
        client: Arc<CaClient>,
    },
}

/// Watches the registry and policy files of `cfg` and reloads them into `pipeline`.
pub(crate) async fn watch(
    cfg: Arc<NodeConfig>,
    pipeline: Arc<Pipeline>,
    upkeep: IdentityUpkeep,
    mut local_addrs: Vec<IpAddr>,
) {
    let mut stamps = (
        stamp(&cfg.registry_path),
        stamp(&cfg.policy_path),
        rules_stamp(&cfg),
    );
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(%e, "no SIGHUP reload; the files are still watched");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = (stamp(&cfg.registry_path), stamp(&cfg.policy_path), rules_stamp(&cfg));
                if now == stamps {
                    continue;
                }
                stamps = now;
            }
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                info!("SIGHUP: reloading the registry and policy");
                stamps = (stamp(&cfg.registry_path), stamp(&cfg.policy_path), rules_stamp(&cfg));
            }
        }
        match reload(&cfg, &pipeline, &upkeep, &local_addrs).await {
            Ok(addrs) => {
                local_addrs = addrs;
                count(&pipeline, "ok");
            }
            Err(e) => {
                warn!("rejected the new registry/policy; the rules in force stay: {e:#}");
                count(&pipeline, "error");
            }
        }
    }
}

/// The IDS rules files' versions: a change reloads (and rebuilds the engines).
fn rules_stamp(cfg: &NodeConfig) -> Vec<Option<Stamp>> {
    let Some(spec) = &cfg.ids else {
        return Vec::new();
    };
    // A folder that cannot be read counts as itself: its coming back is a change.
    rule_files(&spec.rules, &cfg.base_dir)
        .unwrap_or_else(|_| spec.rules.iter().map(|p| cfg.base_dir.join(p)).collect())
        .iter()
        .map(|f| stamp(f))
        .collect()
}

fn count(pipeline: &Pipeline, result: &'static str) {
    pipeline
        .telemetry
        .metrics
        .policy_reloads
        .get_or_create(&ResultLabels { result })
        .inc();
}

/// One reload; returns the local workload addresses now captured.
async fn reload(
    cfg: &NodeConfig,
    pipeline: &Pipeline,
    upkeep: &IdentityUpkeep,
    local_addrs: &[IpAddr],
) -> anyhow::Result<Vec<IpAddr>> {
    // Reading and parsing take time on a large policy: off the async workers, so that
    // connections and the admin endpoint go on meanwhile.
    let paths = (cfg.registry_path.clone(), cfg.policy_path.clone());
    let (rules, warnings) = tokio::task::spawn_blocking(move || Rules::load(&paths.0, &paths.1))
        .await
        .context("loading the registry and policy")??;
    crate::rules::log_warnings(&warnings);
    if rules.registry.node(&cfg.node_name).is_none() {
        bail!(
            "node `{}` is not declared in {}",
            cfg.node_name,
            cfg.registry_path.display()
        );
    }
    let addrs: Vec<IpAddr> = rules
        .registry
        .workloads_on(&cfg.node_name)
        .flat_map(|w| w.addresses.iter().copied())
        .collect();
    if addrs != local_addrs {
        let spec = cfg.capture.clone();
        let a = addrs.clone();
        tokio::task::spawn_blocking(move || capture::install(&spec, &a))
            .await
            .context("capture update")??;
    }
    // IDS engines for the new profiles (or changed rules files), built before anything
    // changes: a policy whose profiles cannot be served is rejected.
    let engines = match (pipeline.ids(), &cfg.ids) {
        (Some(e), Some(spec)) if !e.stale(spec, &cfg.base_dir, rules.policy.ids_profiles()) => {
            Some(e)
        }
        _ => IdsEngines::for_policy(cfg.ids.as_ref(), &cfg.base_dir, &rules.policy).await?,
    };
    add_identities(upkeep, &rules, &cfg.node_name, pipeline).await;
    pipeline.carrier.ids.store(engines);
    pipeline.replace_rules(rules);
    let revoked = crate::conn::live::recheck(pipeline).await;
    info!(
        rules = pipeline.rules().policy.rule_count(),
        workloads_here = addrs.len(),
        live = pipeline.carrier.live.len(),
        revoked,
        "registry and policy reloaded"
    );
    Ok(addrs)
}

/// Certificates for local workloads the new registry adds. A failure is logged: the rules
/// still apply, and the workload's tunnel connections fail closed until it has one.
async fn add_identities(upkeep: &IdentityUpkeep, rules: &Rules, node: &str, pipeline: &Pipeline) {
    match upkeep {
        IdentityUpkeep::None => {}
        IdentityUpkeep::Files { ids, cert_dir } => {
            for e in ids.add_files(cert_dir, &rules.registry, node) {
                warn!("new workload without a usable certificate yet: {e}");
            }
        }
        IdentityUpkeep::Ca { ids, client } => {
            let new: Vec<SpiffeId> = LocalIdentities::wanted(&rules.registry, node)
                .into_iter()
                .filter(|id| ids.client(id).is_none())
                .collect();
            if new.is_empty() {
                return;
            }
            match renew::obtain_all(client, &new).await {
                Ok(issued) => {
                    for (id, cert, key) in issued {
                        match ids.replace(&id, &cert, &key) {
                            Ok(_) => {
                                tokio::spawn(renew::rotate(
                                    client.clone(),
                                    ids.clone(),
                                    id,
                                    pipeline.telemetry.metrics.cert_renewals.clone(),
                                ));
                            }
                            Err(e) => warn!("certificate from the CA for {id}: {e:#}"),
                        }
                    }
                }
                Err(e) => warn!("certificates for new workloads from the CA: {e:#}"),
            }
        }
    }
}
