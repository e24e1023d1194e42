//! The certificates of this node's workloads, checked against the registry: either read from
//! files the operator provides and reloaded when the files change ([`LocalIdentities::load`]),
//! or obtained from the eastwall CA and renewed by [`renew`]
//! ([`LocalIdentities::from_ca`]).
//!
//! File layout: `<certDir>/<workload>.crt` (PEM chain, leaf first) and
//! `<certDir>/<workload>.key`. A file's SPIFFE ID must be the identity the registry gives that
//! workload. A change that fails to load keeps the identity in use and is logged and counted.

pub(crate) mod renew;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{Context, bail};
use eastwall_certs::{Identity, IdentitySet, RotatingIdentity, TrustBundle};
use eastwall_identity::SpiffeId;
use eastwall_policy::Registry;
use tracing::{info, warn};

/// One workload's certificate files and when they were last loaded.
struct Slot {
    workload: String,
    id: SpiffeId,
    cert: PathBuf,
    key: PathBuf,
    loaded: Option<(SystemTime, SystemTime)>,
}

/// This node's workload identities: client certificates by identity, and the server set
/// chosen by SNI.
pub(crate) struct LocalIdentities {
    /// The trust bundle peers are verified against.
    pub(crate) bundle: TrustBundle,
    /// Server certificates by SNI (the tunnel server).
    pub(crate) server: Arc<IdentitySet>,
    clients: RwLock<HashMap<SpiffeId, Arc<RotatingIdentity>>>,
    slots: std::sync::Mutex<Vec<Slot>>,
}

impl LocalIdentities {
    /// Loads the bundle and a certificate for every workload the registry places on `node`.
    pub(crate) fn load(
        bundle_path: &Path,
        cert_dir: &Path,
        registry: &Registry,
        node: &str,
    ) -> anyhow::Result<LocalIdentities> {
        let bundle = load_bundle(bundle_path, registry.trust_domain())?;
        let mut slots = Vec::new();
        for w in registry.workloads_on(node) {
            slots.push(Slot {
                workload: w.name.clone(),
                id: w.identity.clone(),
                cert: cert_dir.join(format!("{}.crt", w.name)),
                key: cert_dir.join(format!("{}.key", w.name)),
                loaded: None,
            });
        }
        let me = LocalIdentities {
            bundle,
            server: IdentitySet::new(),
            clients: RwLock::new(HashMap::new()),
            slots: std::sync::Mutex::new(Vec::new()),
        };
        for s in &mut slots {
            let ident = read(s)?;
            me.install(ident);
            s.loaded = Some(mtimes(s)?);
        }
        *me.slots.lock().unwrap_or_else(|p| p.into_inner()) = slots;
        Ok(me)
    }

    /// Adds certificate files for workloads the registry now places on `node` that this node
    /// has none for (a registry reload): each is loaded if its files are there, and otherwise
    /// picked up by [`LocalIdentities::reload_changed`] once they appear. Returns the errors.
    pub(crate) fn add_files(
        &self,
        cert_dir: &Path,
        registry: &Registry,
        node: &str,
    ) -> Vec<String> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = Vec::new();
        for w in registry.workloads_on(node) {
            if slots
                .iter()
                .any(|s| s.workload == w.name && s.id == w.identity)
            {
                continue;
            }
            let mut slot = Slot {
                workload: w.name.clone(),
                id: w.identity.clone(),
                cert: cert_dir.join(format!("{}.crt", w.name)),
                key: cert_dir.join(format!("{}.key", w.name)),
                loaded: None,
            };
            match read(&slot) {
                Ok(ident) => {
                    info!(workload = %w.name, id = %ident.id, "certificate loaded for a new workload");
                    self.install(ident);
                    slot.loaded = mtimes(&slot).ok();
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
            slots.push(slot);
        }
        errors
    }

    /// The identities (deduplicated, sorted) of the workloads the registry places on `node`:
    /// what the node needs certificates for. Replicas sharing an identity share one.
    pub(crate) fn wanted(registry: &Registry, node: &str) -> Vec<SpiffeId> {
        let mut ids: Vec<SpiffeId> = registry
            .workloads_on(node)
            .map(|w| w.identity.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Builds the identities of a node whose certificates come from the CA: `issued` holds a
    /// certificate and key (PEM) for each identity of [`LocalIdentities::wanted`], no more, no
    /// less. There are no files to reload; [`LocalIdentities::replace`] installs renewals.
    pub(crate) fn from_ca(
        bundle_path: &Path,
        registry: &Registry,
        node: &str,
        issued: &[(SpiffeId, String, String)],
    ) -> anyhow::Result<LocalIdentities> {
        let me = LocalIdentities::empty(bundle_path, registry.trust_domain())?;
        let wanted = LocalIdentities::wanted(registry, node);
        for id in &wanted {
            let Some((_, cert, key)) = issued.iter().find(|(i, _, _)| i == id) else {
                bail!("no certificate for {id}, the identity of a workload on node `{node}`");
            };
            me.replace(id, cert, key)?;
        }
        if let Some((extra, _, _)) = issued.iter().find(|(i, _, _)| !wanted.contains(i)) {
            bail!("{extra} is not the identity of a workload on node `{node}`");
        }
        Ok(me)
    }

    /// The bundle, and no identities yet.
    fn empty(bundle_path: &Path, trust_domain: &str) -> anyhow::Result<LocalIdentities> {
        Ok(LocalIdentities {
            bundle: load_bundle(bundle_path, trust_domain)?,
            server: IdentitySet::new(),
            clients: RwLock::new(HashMap::new()),
            slots: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn install(&self, ident: Identity) {
        let id = ident.id.clone();
        let now = SystemTime::now();
        if ident.not_after < now {
            warn!(%id, "certificate has expired; peers will refuse it");
        }
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        match clients.get(&id) {
            Some(r) => r.set(ident.clone()),
            None => {
                clients.insert(id, RotatingIdentity::new(ident.clone()));
            }
        }
        self.server.insert(ident);
    }

    /// When each of this node's workload certificates expires, by identity.
    pub(crate) fn expiries(&self) -> Vec<(SpiffeId, std::time::SystemTime)> {
        self.server
            .ids()
            .iter()
            .filter_map(|id| self.server.get(id).map(|i| (id.clone(), i.not_after)))
            .collect()
    }

    /// When the first of this node's workload certificates expires.
    pub(crate) fn earliest_expiry(&self) -> Option<std::time::SystemTime> {
        self.server
            .ids()
            .iter()
            .filter_map(|id| self.server.get(id).map(|i| i.not_after))
            .min()
    }

    /// The client certificate of local identity `id`.
    pub(crate) fn client(&self, id: &SpiffeId) -> Option<Arc<RotatingIdentity>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Reloads files whose modification time changed; returns how many failed.
    pub(crate) fn reload_changed(&self) -> usize {
        let mut failed = 0;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter_mut() {
            let Ok(m) = mtimes(s) else {
                // A workload added by a registry reload whose files are not there yet is
                // waited for, not counted as a failure.
                if s.loaded.is_some() {
                    failed += 1;
                }
                continue;
            };
            if s.loaded == Some(m) {
                continue;
            }
            match read(s) {
                Ok(ident) => {
                    info!(workload = %s.workload, id = %ident.id, not_after = ?ident.not_after, "certificate reloaded");
                    self.install(ident);
                    s.loaded = Some(m);
                }
                Err(e) => {
                    // Keep serving with the old certificate; try again on the next change.
                    warn!("{e:#}; keeping the certificate in use");
                    s.loaded = Some(m);
                    failed += 1;
                }
            }
        }
        failed
    }

    /// Drops the identities the registry no longer gives any workload on `node` (a workload
    /// moved away, or removed): new handshakes can no longer present them, its renewals stop
    /// ([`renew::rotate`] ends), and its files are no longer watched. Connections already
    /// established keep their certificate. Returns the identities dropped.
    pub(crate) fn retire(&self, registry: &Registry, node: &str) -> Vec<SpiffeId> {
        let held = |id: &SpiffeId| registry.workloads_owning(id).iter().any(|w| w.node == node);
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<SpiffeId> = clients.keys().filter(|id| !held(id)).cloned().collect();
        for id in &gone {
            clients.remove(id);
            self.server.remove(id);
            info!(%id, "certificate dropped: no workload on this node has this identity any more");
        }
        drop(clients);
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !gone.contains(&s.id));
        gone
    }

    /// How many identities this node holds.
    pub(crate) fn count(&self) -> usize {
        self.clients.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Replaces (or adds) the identity `expected` with a new certificate and key (PEM), used by
    /// the CA client after a renewal. Refuses, keeping the identity in use, if they do not load
    /// or the certificate is not for `expected`. New handshakes present the new certificate;
    /// established connections keep theirs.
    pub(crate) fn replace(
        &self,
        expected: &SpiffeId,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<Arc<Identity>> {
        let ident = Identity::from_pem(cert_pem, key_pem)
            .map_err(|e| anyhow::anyhow!("certificate for {expected}: {e}"))?;
        if ident.id != *expected {
            bail!("the certificate is for {}, not {expected}", ident.id);
        }
        self.install(ident.clone());
        Ok(Arc::new(ident))
    }
}

impl LocalIdentities {
    /// Puts a renewal of `expected` in place of `current`, if the node still holds that very
    /// one: an identity dropped (its workload left) while the renewal was on its way stays
    /// dropped.
    pub(crate) fn renew(
        &self,
        expected: &SpiffeId,
        current: &Arc<RotatingIdentity>,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<Arc<Identity>> {
        let ident = Identity::from_pem(cert_pem, key_pem)
            .map_err(|e| anyhow::anyhow!("certificate for {expected}: {e}"))?;
        if ident.id != *expected {
            bail!("the certificate is for {}, not {expected}", ident.id);
        }
        let clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        if !clients
            .get(expected)
            .is_some_and(|c| Arc::ptr_eq(c, current))
        {
            bail!("{expected} was dropped meanwhile: its workload left this node");
        }
        current.set(ident.clone());
        self.server.insert(ident.clone());
        drop(clients);
        Ok(Arc::new(ident))
    }
}

/// Certificates for local users' identities (`localUsers` workloads), obtained when a user
/// first connects: from files `<certDir>/<workload>@<user>.crt|.key`, or from the CA (then
/// renewed like the others). One request per identity however many connections wait on it.
pub(crate) struct UserCertificates {
    ids: Arc<LocalIdentities>,
    source: UserCertSource,
    inflight: tokio::sync::Mutex<HashMap<SpiffeId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Where local users' certificates come from.
pub(crate) enum UserCertSource {
    /// Files provided by the operator.
    Files(PathBuf),
    /// The eastwall CA, with the counter of renewals.
    Ca(
        Arc<crate::ca::client::CaClient>,
        prometheus_client::metrics::family::Family<
            crate::telemetry::metrics::RenewalLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ),
}

impl UserCertificates {
    /// Local users' certificates added to `ids` from `source`.
    pub(crate) fn new(ids: Arc<LocalIdentities>, source: UserCertSource) -> Self {
        UserCertificates {
            ids,
            source,
            inflight: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Makes sure this node holds a certificate for `id`, the identity of local user `user`
    /// of workload `workload`.
    pub(crate) async fn ensure(
        &self,
        id: &SpiffeId,
        workload: &str,
        user: &str,
    ) -> anyhow::Result<()> {
        if self.ids.client(id).is_some() {
            return Ok(());
        }
        let gate = self
            .inflight
            .lock()
            .await
            .entry(id.clone())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        if self.ids.client(id).is_some() {
            return Ok(());
        }
        match &self.source {
            UserCertSource::Files(dir) => {
                let slot = Slot {
                    workload: format!("{workload}@{user}"),
                    id: id.clone(),
                    cert: dir.join(format!("{workload}@{user}.crt")),
                    key: dir.join(format!("{workload}@{user}.key")),
                    loaded: None,
                };
                let ident = read(&slot)?;
                info!(%id, "certificate loaded for a local user");
                self.ids.install(ident);
                let mut slot = slot;
                slot.loaded = mtimes(&slot).ok();
                self.ids
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(slot);
            }
            UserCertSource::Ca(client, renewals) => {
                let (cert, key) = client.sign(id).await?;
                self.ids.replace(id, &cert, &key)?;
                info!(%id, "certificate obtained from the CA for a local user");
                tokio::spawn(renew::rotate(
                    client.clone(),
                    self.ids.clone(),
                    id.clone(),
                    renewals.clone(),
                ));
            }
        }
        Ok(())
    }
}

/// The trust bundle of `path` (PEM, or a SPIFFE bundle in JSON), for the registry's
/// `trust_domain` (its CAs may be eastwall's, SPIRE's, or enterprise roots without a SPIFFE
/// URI).
pub(crate) fn load_bundle(path: &Path, trust_domain: &str) -> anyhow::Result<TrustBundle> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("trust bundle: reading {}", path.display()))?;
    TrustBundle::read(&text, trust_domain).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read(s: &Slot) -> anyhow::Result<Identity> {
    let cert = std::fs::read_to_string(&s.cert).with_context(|| {
        format!(
            "certificate of workload `{}`: {}",
            s.workload,
            s.cert.display()
        )
    })?;
    let key = std::fs::read_to_string(&s.key)
        .with_context(|| format!("key of workload `{}`: {}", s.workload, s.key.display()))?;
    let ident = Identity::from_pem(&cert, &key)
        .map_err(|e| anyhow::anyhow!("{} / {}: {e}", s.cert.display(), s.key.display()))?;
    if ident.id != s.id {
        bail!(
            "{} holds {}, but the registry gives workload `{}` the identity {}",
            s.cert.display(),
            ident.id,
            s.workload,
            s.id
        );
    }
    Ok(ident)
}

fn mtimes(s: &Slot) -> anyhow::Result<(SystemTime, SystemTime)> {
    Ok((
        std::fs::metadata(&s.cert)?.modified()?,
        std::fs::metadata(&s.key)?.modified()?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eastwall_certs::Ca;
    use std::time::Duration;

    const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2]}
    - {name: db, node: hostA, addresses: [10.0.1.3]}
";
    const DAY: Duration = Duration::from_secs(86_400);

    struct Fixture {
        dir: tempfile::TempDir,
        ca: Ca,
        registry: Registry,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let ca = Ca::generate("corp.example", DAY).unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
            std::fs::create_dir(dir.path().join("certs")).unwrap();
            let registry = Registry::parse("registry.yaml", REGISTRY).unwrap();
            let f = Fixture { dir, ca, registry };
            for w in ["web", "db"] {
                f.write_issued(w, &f.id(w));
            }
            f
        }

        fn id(&self, workload: &str) -> SpiffeId {
            SpiffeId::parse(&format!("spiffe://corp.example/wl/{workload}")).unwrap()
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.path().join("certs").join(file)
        }

        /// Writes files and moves their modification time forward, so a reload sees them even
        /// on a file system with coarse timestamps.
        fn write(&self, file: &str, text: &str) {
            let p = self.path(file);
            std::fs::write(&p, text).unwrap();
            let later = SystemTime::now() + Duration::from_secs(next_offset());
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }

        fn write_issued(&self, workload: &str, id: &SpiffeId) {
            let issued = self.ca.issue(id, DAY).unwrap();
            self.write(&format!("{workload}.crt"), &issued.cert_pem);
            self.write(&format!("{workload}.key"), &issued.key_pem);
        }

        fn load(&self) -> anyhow::Result<LocalIdentities> {
            LocalIdentities::load(
                &self.dir.path().join("ca.pem"),
                &self.dir.path().join("certs"),
                &self.registry,
                "hostA",
            )
        }
    }

    /// A larger offset each call, so consecutive writes differ in modification time.
    fn next_offset() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn serving(ids: &LocalIdentities, id: &SpiffeId) -> Vec<u8> {
        let client = ids.client(id).unwrap().current().certified_key().cert[0].to_vec();
        let server = ids.server.get(id).unwrap().certified_key().cert[0].to_vec();
        assert_eq!(client, server, "client and server sides must agree");
        client
    }

    #[test]
    fn a_failed_reload_keeps_the_identity_in_use() {
        let f = Fixture::new();
        let ids = f.load().unwrap();
        let web = f.id("web");
        let before = serving(&ids, &web);
        assert_eq!(ids.reload_changed(), 0, "nothing changed");

        // Garbage in the certificate file.
        f.write("web.crt", "-----BEGIN CERTIFICATE-----\ngarbage\n");
        assert_eq!(ids.reload_changed(), 1);
        assert_eq!(serving(&ids, &web), before);
        // Not retried until the files change again.
        assert_eq!(ids.reload_changed(), 0);

        // A valid certificate and key, but for another identity (db's).
        f.write_issued("web", &f.id("db"));
        assert_eq!(ids.reload_changed(), 1);
        assert_eq!(serving(&ids, &web), before);

        // Both at once: two failures counted.
        f.write("web.key", "not a key");
        f.write("db.crt", "");
        assert_eq!(ids.reload_changed(), 2);
        assert_eq!(serving(&ids, &web), before);

        // A good renewal is taken.
        f.write_issued("web", &web);
        f.write_issued("db", &f.id("db"));
        assert_eq!(ids.reload_changed(), 0);
        assert_ne!(serving(&ids, &web), before);
    }

    #[test]
    fn a_missing_file_at_load_is_named() {
        let f = Fixture::new();
        std::fs::remove_file(f.path("db.crt")).unwrap();
        let err = format!("{:#}", f.load().err().unwrap());
        assert!(
            err.contains(&f.path("db.crt").display().to_string()),
            "{err}"
        );
        assert!(err.contains("workload `db`"), "{err}");

        let f = Fixture::new();
        std::fs::remove_file(f.path("web.key")).unwrap();
        let err = format!("{:#}", f.load().err().unwrap());
        assert!(err.contains("web.key"), "{err}");

        let f = Fixture::new();
        f.write_issued("db", &f.id("web"));
        let err = format!("{:#}", f.load().err().unwrap());
        assert!(err.contains("db.crt") && err.contains("wl/web"), "{err}");
    }

    #[test]
    fn ca_mode_installs_and_replaces_only_the_expected_identities() {
        let f = Fixture::new();
        let bundle = f.dir.path().join("ca.pem");
        let (web, db) = (f.id("web"), f.id("db"));
        assert_eq!(
            LocalIdentities::wanted(&f.registry, "hostA"),
            vec![db.clone(), web.clone()]
        );
        let issue = |id: &SpiffeId| {
            let i = f.ca.issue(id, DAY).unwrap();
            (id.clone(), i.cert_pem, i.key_pem)
        };
        // Missing one: refused.
        let err = LocalIdentities::from_ca(&bundle, &f.registry, "hostA", &[issue(&web)])
            .err()
            .unwrap();
        assert!(err.to_string().contains("wl/db"), "{err}");
        let ids =
            LocalIdentities::from_ca(&bundle, &f.registry, "hostA", &[issue(&web), issue(&db)])
                .unwrap();
        assert_eq!(ids.server.ids(), vec![db.clone(), web.clone()]);
        assert_eq!(ids.reload_changed(), 0, "no files in CA mode");

        let before = serving(&ids, &web);
        let (_, cert, key) = issue(&db);
        let err = ids.replace(&web, &cert, &key).unwrap_err();
        assert!(
            err.to_string().contains("not spiffe://corp.example/wl/web"),
            "{err}"
        );
        assert!(ids.replace(&web, "garbage", &key).is_err());
        assert_eq!(serving(&ids, &web), before);
        let (_, cert, key) = issue(&web);
        let got = ids.replace(&web, &cert, &key).unwrap();
        assert_eq!(got.id, web);
        assert_ne!(serving(&ids, &web), before);
    }
}
