//! The certificates of this node's workloads, read from files the operator (or the CA client)
//! provides, checked against the registry, and reloaded when the files change.
//!
//! Layout: `<certDir>/<workload>.crt` (PEM chain, leaf first) and `<certDir>/<workload>.key`.
//! A file's SPIFFE ID must be the identity the registry gives that workload. A change that
//! fails to load keeps the identity in use and is logged and counted.

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
pub struct LocalIdentities {
    /// The trust bundle peers are verified against.
    pub bundle: TrustBundle,
    /// Server certificates by SNI (the tunnel server).
    pub server: Arc<IdentitySet>,
    clients: RwLock<HashMap<SpiffeId, Arc<RotatingIdentity>>>,
    slots: std::sync::Mutex<Vec<Slot>>,
}

impl LocalIdentities {
    /// Loads the bundle and a certificate for every workload the registry places on `node`.
    pub fn load(
        bundle_path: &Path,
        cert_dir: &Path,
        registry: &Registry,
        node: &str,
    ) -> anyhow::Result<LocalIdentities> {
        let pem = std::fs::read_to_string(bundle_path)
            .with_context(|| format!("reading {}", bundle_path.display()))?;
        let bundle = TrustBundle::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", bundle_path.display()))?;
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

    /// The client certificate of local identity `id`.
    pub fn client(&self, id: &SpiffeId) -> Option<Arc<RotatingIdentity>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Reloads files whose modification time changed; returns how many failed.
    pub fn reload_changed(&self) -> usize {
        let mut failed = 0;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter_mut() {
            let Ok(m) = mtimes(s) else {
                failed += 1;
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

    /// Replaces the identity of `workload` (used by the CA client after a renewal).
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<SpiffeId> {
        let ident = Identity::from_pem(cert_pem, key_pem).map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = ident.id.clone();
        self.install(ident);
        Ok(id)
    }
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
