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
                pipeline.telemetry.health.reload_ended(None);
            }
            Err(e) => {
                warn!("rejected the new registry/policy; the rules in force stay: {e:#}");
                count(&pipeline, "error");
                let why: String = format!("{e:#}").chars().take(2000).collect();
                pipeline.telemetry.health.reload_ended(Some(why));
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
    // Reading and parsing take time on a large policy: off the async workers and at idle
    // priority, so that connections and the admin endpoint go on meanwhile.
    let paths = (cfg.registry_path.clone(), cfg.policy_path.clone());
    // Logged once, by whichever load finishes first.
    let logged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rules = load_in_background(move || {
        let (rules, warnings) = Rules::load(&paths.0, &paths.1)?;
        if !logged.swap(true, std::sync::atomic::Ordering::AcqRel) {
            crate::rules::log_warnings(&warnings);
        }
        anyhow::Ok(rules)
    })
    .await
    .context("loading the registry and policy")??;
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
    let replaced = pipeline.replace_rules(rules);
    // Identities of workloads that left go once the rules without them are in force.
    if let IdentityUpkeep::Files { ids, .. } | IdentityUpkeep::Ca { ids, .. } = upkeep {
        ids.retire(&pipeline.rules().registry, &cfg.node_name);
    }
    let revoked = crate::conn::live::recheck(pipeline).await;
    // The last reference, unless a decision still holds it (then that task frees it): a
    // large policy takes a while to free, off the async workers.
    drop(tokio::task::spawn_blocking(move || drop(replaced)));
    info!(
        rules = pipeline.rules().policy.rule_count(),
        workloads_here = addrs.len(),
        live = pipeline.carrier.live.len(),
        revoked,
        "registry and policy reloaded"
    );
    Ok(addrs)
}

/// How long a load may wait for idle CPU before it also runs at normal priority.
const URGENT_AFTER: Duration = Duration::from_secs(2);

/// Whether a load at idle priority is still running (a saturated host): the next one then
/// goes straight to normal priority, so idle threads do not pile up.
static IDLE_LOAD_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `load` on a thread of its own in the idle scheduling class (`SCHED_IDLE`: it gets
/// the CPU after every other thread, a tiny share when the host is saturated), so that the
/// threads carrying traffic come first while a large policy is read and parsed. If it has
/// not finished within [`URGENT_AFTER`], the same load also runs at normal priority and the
/// first answer wins: a policy change still lands within seconds under full load.
async fn load_in_background<T: Send + 'static>(
    load: impl Fn() -> T + Clone + Send + 'static,
) -> anyhow::Result<T> {
    use std::sync::atomic::Ordering;
    if IDLE_LOAD_RUNNING.swap(true, Ordering::AcqRel) {
        warn!("an earlier load is still waiting for the CPU: loading at normal priority");
        return tokio::task::spawn_blocking(load)
            .await
            .context("loading at normal priority");
    }
    let urgent = load.clone();
    let idle = in_background(move || {
        let answer = load();
        IDLE_LOAD_RUNNING.store(false, Ordering::Release);
        answer
    });
    tokio::pin!(idle);
    match tokio::time::timeout(URGENT_AFTER, &mut idle).await {
        Ok(answer) => {
            if answer.is_err() {
                // The thread did not run (or died): it cannot clear the flag itself.
                IDLE_LOAD_RUNNING.store(false, Ordering::Release);
            }
            answer
        }
        Err(_) => {
            warn!("the CPU is saturated: loading the new rules at normal priority too");
            let urgent = tokio::task::spawn_blocking(urgent);
            tokio::select! {
                answer = idle => answer,
                answer = urgent => answer.context("loading at normal priority"),
            }
        }
    }
}

/// Runs `f` on a thread of its own at idle CPU priority (see [`load_in_background`]).
fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = anyhow::Result<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("eastwall-reload".into())
        .spawn(move || {
            idle_priority();
            let _ = tx.send(f());
        });
    async move {
        spawned.context("starting the reload thread")?;
        rx.await
            .context("the reload thread ended without an answer")
    }
}

/// Puts the calling thread in the idle scheduling class: it gets the CPU after every other
/// thread of the host (a nice value is not enough: measured in docs/BENCHMARKS.md).
fn idle_priority() {
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` lives across the call, which only reads it; pid 0 is the calling
    // thread.
    let r = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param) };
    if r != 0 {
        tracing::debug!(
            e = %std::io::Error::last_os_error(),
            "could not lower the reload thread's priority"
        );
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn loads_run_at_idle_priority() {
        // SAFETY: no arguments; the calling thread's policy.
        let policy = in_background(|| unsafe { nix::libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, nix::libc::SCHED_IDLE);
    }

    #[tokio::test]
    async fn a_load_starved_of_cpu_also_runs_at_normal_priority() {
        // The first run (the idle one) stands for a thread that gets no CPU.
        let runs = Arc::new(AtomicUsize::new(0));
        let load = {
            let runs = runs.clone();
            move || {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_secs(10));
                    "idle"
                } else {
                    "urgent"
                }
            }
        };
        let t = Instant::now();
        assert_eq!(load_in_background(load).await.unwrap(), "urgent");
        assert!(t.elapsed() >= URGENT_AFTER && t.elapsed() < URGENT_AFTER * 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
