//! The store on etcd: connecting with TLS client certificates, reading the configuration in
//! force as one consistent snapshot, applying a new one (guarded by the version it was
//! based on, in chunks that fit etcd's limits, behind a leased lock when it takes more than
//! one transaction), history, rollback, node status.
//!
//! Consistency: every apply writes `config/version` last. Reading the configuration at the
//! revision that key was last written (`Current::revision`) gives exactly the state of that
//! version, even while a later apply is half-way through its chunks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use eastwall_policy::Diagnostics;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp,
};

use crate::history::{self, Change, Version};
use crate::layout::{Keys, VERSION};
use crate::snapshot::Snapshot;

/// Most operations in one transaction (etcd's `--max-txn-ops` is 128 by default).
const TXN_OPS: usize = 100;
/// Most bytes of values in one transaction (etcd's request limit is 1.5 MiB by default).
const TXN_BYTES: usize = 1 << 20;
/// Keys read per request (a page stays far below gRPC's 4 MiB message limit).
const PAGE: i64 = 1000;
/// How long an apply's lock lives without being renewed.
const LOCK_TTL_SECS: i64 = 30;

/// How to reach the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSpec {
    /// `https://host:port` of one or more members.
    pub endpoints: Vec<String>,
    /// The CA the members' certificates chain to.
    pub ca_file: PathBuf,
    /// This client's certificate (its common name is its etcd user).
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// The key prefix (`/eastwall/`).
    pub prefix: String,
}

/// Why an apply did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Someone applied (or is applying) since the version it was based on.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The new configuration does not validate.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The store failed.
    #[error("{0:#}")]
    Store(#[from] anyhow::Error),
}

/// The configuration in force.
#[derive(Clone, Debug)]
pub struct Current {
    /// Its values.
    pub snapshot: Snapshot,
    /// Its version record (`None`: nothing was ever applied).
    pub version: Option<Version>,
    /// The revision at which that record was written (0: none).
    pub revision: i64,
    /// The store's revision when it was read: watch from the next one.
    pub read_at: i64,
}

/// A connected store.
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
}

impl Store {
    /// Connects to the store (mutual TLS).
    pub async fn connect(spec: &StoreSpec) -> anyhow::Result<Store> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&spec.ca_file)?))
            .identity(Identity::from_pem(
                read(&spec.cert_file)?,
                read(&spec.key_file)?,
            ));
        let opts = ConnectOptions::new()
            .with_tls(tls)
            // A member cut off from the others answers nothing (a watch there would stay
            // silent for good) instead of what it had.
            .with_require_leader(true)
            .with_connect_timeout(std::time::Duration::from_secs(3))
            .with_timeout(std::time::Duration::from_secs(10))
            // etcd refuses pings more often than every 5 s (its minimum keep-alive time).
            .with_keep_alive(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(5),
            );
        let keys = Keys::new(&spec.prefix);
        // One member at a time, the first that answers: a balanced channel over all of them
        // keeps sending to a dead one. Callers that lose their member connect again.
        let mut failures = Vec::new();
        for endpoint in &spec.endpoints {
            let tried = async {
                let mut client = Client::connect([endpoint.as_str()], Some(opts.clone())).await?;
                client.get(keys.version(), None).await?;
                anyhow::Ok(client)
            };
            match tokio::time::timeout(std::time::Duration::from_secs(5), tried).await {
                Ok(Ok(client)) => return Ok(Store { client, keys }),
                Ok(Err(e)) => failures.push(format!("{endpoint}: {e:#}")),
                Err(_) => failures.push(format!("{endpoint}: no answer within 5 s")),
            }
        }
        bail!("no etcd member answered:\n  {}", failures.join("\n  "))
    }

    /// Every key and value under `prefix` at `revision` (0: now), in pages: a whole
    /// configuration is larger than one gRPC message may be.
    async fn range(
        &mut self,
        prefix: &str,
        revision: i64,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self
                .client
                .get(from.clone(), Some(opts))
                .await
                .with_context(|| format!("reading {prefix} at revision {revision}"))?;
            for kv in resp.kvs() {
                out.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                ));
            }
            match resp.kvs().last() {
                Some(kv) if resp.more() => {
                    from = kv.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// The keys of this store.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The etcd client (watches and leases).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The version record in force (`None`: nothing applied yet), the revision it was
    /// written at, and the store's revision when it was read.
    pub async fn version(&mut self) -> anyhow::Result<(Option<Version>, i64, i64)> {
        let resp = self
            .client
            .get(self.keys.version(), None)
            .await
            .context("reading the version in force")?;
        let read_at = resp.header().map_or(0, |h| h.revision());
        Ok(match resp.kvs().first() {
            Some(kv) => {
                let v: Version = serde_json::from_slice(kv.value())
                    .context("the stored version record is not readable")?;
                (Some(v), kv.mod_revision(), read_at)
            }
            None => (None, 0, read_at),
        })
    }

    /// The configuration in force: the version record and the values as they were when it
    /// was written. Once etcd has compacted that revision, the values now are taken if they
    /// are that version's (same hash); otherwise an apply is under way: try again.
    pub async fn current(&mut self) -> anyhow::Result<Current> {
        let (version, revision, read_at) = self.version().await?;
        let snapshot = match self.snapshot_at(revision).await {
            Ok(s) => s,
            Err(e) if format!("{e:#}").contains("compacted") => {
                let now = self.snapshot_at(read_at).await?;
                if version.as_ref().is_some_and(|v| v.hash != now.hash()) {
                    bail!(
                        "the configuration is being replaced (etcd compacted the revision of version {}); try again",
                        version.as_ref().map_or(0, |v| v.version)
                    );
                }
                now
            }
            Err(e) => return Err(e),
        };
        Ok(Current {
            snapshot,
            version,
            revision,
            read_at,
        })
    }

    /// The configuration values at `revision` (0: now).
    pub async fn snapshot_at(&mut self, revision: i64) -> anyhow::Result<Snapshot> {
        let prefix = self.keys.config();
        let mut values = BTreeMap::new();
        for (key, value) in self.range(&prefix, revision).await? {
            let Some(rel) = key.strip_prefix(&prefix) else {
                continue;
            };
            if rel == VERSION {
                continue;
            }
            values.insert(rel.to_owned(), String::from_utf8_lossy(&value).into_owned());
        }
        Ok(Snapshot::from_values(values))
    }

    /// Applies `desired` over `base` (what the caller read and showed its user): validated
    /// first, then written as version `base + 1` unless someone applied meanwhile. `None`:
    /// nothing changes.
    pub async fn apply(
        &mut self,
        base: &Current,
        desired: &Snapshot,
        author: &str,
        message: &str,
    ) -> Result<Option<Version>, ApplyError> {
        desired
            .validate(&self.keys.source())
            .map_err(ApplyError::Invalid)?;
        let changes = history::changes(&base.snapshot, desired);
        if changes.is_empty() {
            return Ok(None);
        }
        let number = base.version.as_ref().map_or(1, |v| v.version + 1);
        let record = Version {
            version: number,
            hash: desired.hash(),
            author: author.to_owned(),
            time: history::now_rfc3339(),
            message: message.to_owned(),
            changed: changes.len(),
        };
        // What is in the keys now may differ from the version read (an apply that died half
        // way): write every key that differs from what is wanted.
        let live = self.snapshot_at(0).await?;
        let mut ops: Vec<(TxnOp, usize)> = Vec::new();
        let history_of = self.keys.history_of(number);
        for c in &changes {
            ops.push(match &c.after {
                Some(v) => (
                    TxnOp::put(format!("{history_of}put/{}", c.key), v.as_str(), None),
                    v.len(),
                ),
                None => (
                    TxnOp::put(format!("{history_of}delete/{}", c.key), "", None),
                    0,
                ),
            });
        }
        for c in history::changes(&live, desired) {
            let key = self.keys.config_key(&c.key);
            ops.push(match &c.after {
                Some(v) => (TxnOp::put(key, v.as_str(), None), v.len()),
                None => (TxnOp::delete(key, None), 0),
            });
        }
        let record_json = serde_json::to_string(&record).map_err(anyhow::Error::from)?;
        let last = [
            TxnOp::put(self.keys.version_of(number), record_json.as_str(), None),
            TxnOp::put(self.keys.version(), record_json.as_str(), None),
        ];
        let bytes: usize = ops.iter().map(|(_, n)| n).sum();
        let unchanged = Compare::mod_revision(self.keys.version(), CompareOp::Equal, base.revision);
        let unlocked = Compare::version(self.keys.lock(), CompareOp::Equal, 0);
        // An apply that died half-way may have left this version's history: clear it first
        // (guarded like the apply itself).
        let clear = Txn::new()
            .when([unchanged.clone(), unlocked.clone()])
            .and_then([TxnOp::delete(
                history_of.as_str(),
                Some(DeleteOptions::new().with_prefix()),
            )]);
        if !self
            .client
            .txn(clear)
            .await
            .map_err(anyhow::Error::from)?
            .succeeded()
        {
            return Err(self.conflict(base).await);
        }
        if ops.len() + last.len() <= TXN_OPS && bytes <= TXN_BYTES {
            let all: Vec<TxnOp> = ops.into_iter().map(|(o, _)| o).chain(last).collect();
            let txn = Txn::new().when([unchanged, unlocked]).and_then(all);
            let resp = self.client.txn(txn).await.map_err(anyhow::Error::from)?;
            if !resp.succeeded() {
                return Err(self.conflict(base).await);
            }
            return Ok(Some(record));
        }
        self.apply_in_chunks(base, ops, last, author).await?;
        Ok(Some(record))
    }

    /// An apply too large for one transaction: a leased lock taken while the version is the
    /// one read, the chunks (each guarded by the lock), then the version record with the
    /// lock released. Nodes read at the version record's revision, so they never see a
    /// half-applied configuration.
    async fn apply_in_chunks(
        &mut self,
        base: &Current,
        ops: Vec<(TxnOp, usize)>,
        last: [TxnOp; 2],
        author: &str,
    ) -> Result<(), ApplyError> {
        let lease = self
            .client
            .lease_grant(LOCK_TTL_SECS, None)
            .await
            .map_err(anyhow::Error::from)?
            .id();
        let (mut keeper, _answers) = self
            .client
            .lease_keep_alive(lease)
            .await
            .map_err(anyhow::Error::from)?;
        let token = format!("{author} at {} (lease {lease:x})", history::now_rfc3339());
        let lock = self.keys.lock();
        let take = Txn::new()
            .when([
                Compare::mod_revision(self.keys.version(), CompareOp::Equal, base.revision),
                Compare::version(lock.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(
                lock.clone(),
                token.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        if !self
            .client
            .txn(take)
            .await
            .map_err(anyhow::Error::from)?
            .succeeded()
        {
            let _ = self.client.lease_revoke(lease).await;
            return Err(self.conflict(base).await);
        }
        let ours = || Compare::value(lock.clone(), CompareOp::Equal, token.as_str());
        let mut chunk: Vec<TxnOp> = Vec::new();
        let mut chunk_bytes = 0;
        let mut chunks: Vec<Vec<TxnOp>> = Vec::new();
        for (op, n) in ops {
            if !chunk.is_empty() && (chunk.len() + 1 > TXN_OPS || chunk_bytes + n > TXN_BYTES) {
                chunks.push(std::mem::take(&mut chunk));
                chunk_bytes = 0;
            }
            chunk.push(op);
            chunk_bytes += n;
        }
        chunks.push(chunk);
        for c in chunks {
            let _ = keeper.keep_alive().await;
            let resp = self
                .client
                .txn(Txn::new().when([ours()]).and_then(c))
                .await
                .map_err(anyhow::Error::from)?;
            if !resp.succeeded() {
                return Err(ApplyError::Conflict(
                    "the apply lock was lost half way (it expired?); nothing was put in force: apply again".to_owned(),
                ));
            }
        }
        let mut finish: Vec<TxnOp> = last.into_iter().collect();
        finish.push(TxnOp::delete(lock.clone(), None));
        let resp = self
            .client
            .txn(
                Txn::new()
                    .when([
                        ours(),
                        Compare::mod_revision(self.keys.version(), CompareOp::Equal, base.revision),
                    ])
                    .and_then(finish),
            )
            .await
            .map_err(anyhow::Error::from)?;
        let _ = self.client.lease_revoke(lease).await;
        if !resp.succeeded() {
            return Err(self.conflict(base).await);
        }
        Ok(())
    }

    /// Says who got in first.
    async fn conflict(&mut self, base: &Current) -> ApplyError {
        let read = base.version.as_ref().map_or(0, |v| v.version);
        let lock = match self.client.get(self.keys.lock(), None).await {
            Ok(r) => r
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            Err(e) => return ApplyError::Store(e.into()),
        };
        if let Some(holder) = lock {
            return ApplyError::Conflict(format!(
                "another apply is in progress ({holder}); nothing was written: read again and apply"
            ));
        }
        match self.current().await {
            Ok(Current {
                version: Some(v), ..
            }) => ApplyError::Conflict(format!(
                "version {} was applied by {} at {} after you read version {read}; nothing was written: run `eastwall diff` and apply again",
                v.version, v.author, v.time
            )),
            Ok(_) => ApplyError::Conflict(format!(
                "the store changed since you read version {read}; nothing was written"
            )),
            Err(e) => ApplyError::Store(e),
        }
    }

    /// Every version applied, oldest first.
    pub async fn versions(&mut self) -> anyhow::Result<Vec<Version>> {
        let prefix = self.keys.versions();
        let mut out = Vec::new();
        for (key, value) in self.range(&prefix, 0).await.context("reading history")? {
            out.push(
                serde_json::from_slice::<Version>(&value)
                    .with_context(|| format!("unreadable {key}"))?,
            );
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    /// What version `v` changed.
    pub async fn changes_of(&mut self, v: u64) -> anyhow::Result<Vec<Change>> {
        let changes = self.recorded_changes(v).await?;
        if changes.is_empty() && !self.versions().await?.iter().any(|x| x.version == v) {
            bail!("no version {v} in the history");
        }
        Ok(changes)
    }

    /// What the history records of version `v` (nothing: no such version, or it changed
    /// nothing). Readable with the nodes' role, unlike the version list.
    pub async fn recorded_changes(&mut self, v: u64) -> anyhow::Result<Vec<Change>> {
        let prefix = self.keys.history_of(v);
        let kvs = self
            .range(&prefix, 0)
            .await
            .with_context(|| format!("reading version {v}"))?;
        let mut out = Vec::new();
        for (key, value) in kvs {
            let Some(rel) = key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(k) = rel.strip_prefix("put/") {
                out.push(Change {
                    key: k.to_owned(),
                    before: None,
                    after: Some(String::from_utf8_lossy(&value).into_owned()),
                });
            } else if let Some(k) = rel.strip_prefix("delete/") {
                out.push(Change {
                    key: k.to_owned(),
                    before: None,
                    after: None,
                });
            }
        }
        Ok(out)
    }

    /// The configuration as version `v` left it (replayed from the history).
    pub async fn snapshot_of(&mut self, v: u64) -> anyhow::Result<Snapshot> {
        let versions = self.versions().await?;
        if !versions.iter().any(|x| x.version == v) {
            bail!("no version {v} in the history");
        }
        let mut all = Vec::new();
        for x in versions.iter().filter(|x| x.version <= v) {
            all.push(self.changes_of(x.version).await?);
        }
        let snapshot = history::replay(all.iter().map(Vec::as_slice));
        let record = versions.iter().find(|x| x.version == v);
        if record.is_some_and(|r| r.hash != snapshot.hash()) {
            bail!(
                "the history does not give version {v} back (its hash differs): refusing to use it"
            );
        }
        Ok(snapshot)
    }

    /// The status every node reported (those whose lease has not expired), by node.
    pub async fn statuses(&mut self) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        let prefix = self.keys.nodes();
        let mut out = BTreeMap::new();
        for (key, value) in self
            .range(&prefix, 0)
            .await
            .context("reading node statuses")?
        {
            let Some(node) = key
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix("/status"))
                .filter(|n| !n.contains('/'))
            else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice(&value) {
                out.insert(node.to_owned(), v);
            }
        }
        Ok(out)
    }
}

/// The etcd user a client certificate authenticates as: its subject's common name.
pub fn certificate_user(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
