//! Following the version in force: what every reader of the store that must stay current
//! does (a node, the CA service). One loop, so they all reconnect, back off and catch up
//! the same way.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{EventType, WatchOptions};
use tracing::warn;

use crate::etcd::{Store, StoreSpec};
use crate::history::Version;
use crate::snapshot::{Snapshot, Validated};

/// The longest wait between attempts to reach the store.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// What a follower does at each version.
pub trait Sync: Send {
    /// Reads what the follower needs from `store` (see [`follow`]).
    fn sync(
        &mut self,
        store: &mut Store,
    ) -> impl Future<Output = anyhow::Result<Option<i64>>> + Send;
}

/// Follows the version record of the store at `spec` until the future is dropped.
///
/// `syncer.sync` is called on connecting (a version may have been missed meanwhile) and after each
/// write of the version record; it reads what it needs and returns the store's revision it
/// read at, from which the watch goes on (`None`: nothing applied yet; asked again in a
/// second). A failure (the store unreachable, a member gone, a watch that lost its place to
/// compaction) is logged with `what`, waited out with backoff (at most [`MAX_BACKOFF`]), and
/// followed by a new connection and a full `sync`.
pub async fn follow(spec: &StoreSpec, what: &str, mut syncer: impl Sync) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let r = watch(spec, &mut syncer).await;
        // A watch that served a while is not a run of failures.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = FIRST_BACKOFF;
        }
        match r {
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(e) => {
                warn!("the central store: {e:#}; {what}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn watch(spec: &StoreSpec, syncer: &mut impl Sync) -> anyhow::Result<()> {
    let mut store = Store::connect(spec).await?;
    let Some(revision) = syncer.sync(&mut store).await? else {
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
            syncer.sync(&mut store).await?;
        }
    }
}

/// `base` (version `from`) with the changes of every version after it up to `to`, if that
/// gives `to`'s hash.
pub async fn catch_up(
    store: &mut Store,
    base: &Snapshot,
    from: u64,
    to: &Version,
) -> anyhow::Result<Snapshot> {
    let mut s = base.clone();
    for n in from + 1..=to.version {
        for c in store.recorded_changes(n).await? {
            match c.after {
                Some(value) => s.set(c.key, value),
                None => {
                    s.remove(&c.key);
                }
            }
        }
    }
    if s.hash() != to.hash {
        bail!(
            "the history does not lead to version {}'s values (their hash differs)",
            to.version
        );
    }
    Ok(s)
}

/// The configuration in force, as a follower sees it.
#[derive(Debug)]
pub enum Latest {
    /// Nothing applied yet.
    Nothing,
    /// The version the follower has (`have`) is still the one in force.
    Unchanged {
        /// The store's revision when it was read.
        read_at: i64,
    },
    /// A new version, which does not validate (or whose values are not the ones it was
    /// applied with): to be refused, and said why.
    Refused {
        /// Its record.
        version: Version,
        /// Why, in full.
        why: String,
        /// The store's revision when it was read.
        read_at: i64,
    },
    /// A new version, validated.
    New {
        /// Its record.
        version: Version,
        /// Its values.
        snapshot: Snapshot,
        /// What they validated as.
        valid: Box<Validated>,
        /// The store's revision when it was read.
        read_at: i64,
    },
}

/// Most versions a follower catches up on from the history before it reads everything.
pub const MAX_CATCH_UP: u64 = 64;

/// Reads the version in force from `store` and, if it is not `have` (version and hash),
/// its values at that version, validated as a whole (off the async workers: 100,000
/// workloads take seconds).
///
/// With `base`, the values of `have`, a few versions behind are caught up from what the
/// history says each changed (a few keys, where a whole configuration of 100,000 workloads
/// is ~20 MB); the result must have the version's hash, else (or if the history cannot be
/// read) everything is read.
pub async fn latest(
    store: &mut Store,
    have: Option<(u64, &str)>,
    base: Option<&Snapshot>,
) -> anyhow::Result<Latest> {
    // The version record first: most of the time it is the one in force already.
    let (version, _, read_at) = store.version().await?;
    let Some(v) = version else {
        return Ok(Latest::Nothing);
    };
    if have == Some((v.version, v.hash.as_str())) {
        return Ok(Latest::Unchanged { read_at });
    }
    let caught_up = match (have, base) {
        (Some((from, _)), Some(base)) if from < v.version && v.version - from <= MAX_CATCH_UP => {
            match catch_up(store, base, from, &v).await {
                Ok(s) => {
                    tracing::info!(
                        "caught up from version {from} to {} from the history",
                        v.version
                    );
                    Some(s)
                }
                Err(e) => {
                    tracing::info!("catching up from version {from}: {e:#}; reading everything");
                    None
                }
            }
        }
        _ => None,
    };
    let (version, snapshot, read_at) = match caught_up {
        Some(s) => (v, s, read_at),
        None => {
            let current = store.current().await?;
            let (Some(version), read_at) = (current.version, current.read_at) else {
                return Ok(Latest::Nothing);
            };
            (version, current.snapshot, read_at)
        }
    };
    let source = store.keys().source();
    let (checked, snapshot) = tokio::task::spawn_blocking(move || {
        let checked = snapshot.validate(&source);
        (checked, snapshot)
    })
    .await
    .context("validating the store's configuration")?;
    if snapshot.hash() != version.hash {
        let why = format!(
            "version {} refused: the stored values are not the ones it was applied with (their hash differs): written outside `eastwall apply`?",
            version.version
        );
        return Ok(Latest::Refused {
            version,
            why,
            read_at,
        });
    }
    Ok(match checked {
        Ok(valid) => Latest::New {
            version,
            snapshot,
            valid: Box::new(valid),
            read_at,
        },
        Err(d) => Latest::Refused {
            why: format!("version {} refused:\n{d}", version.version),
            version,
            read_at,
        },
    })
}
