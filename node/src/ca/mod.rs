//! The trust domain's certificate authority as a tool and a service.
//!
//! - [`init`] (`eastwall ca init`) creates a CA in a folder: `ca.crt` (the trust bundle) and
//!   `ca.key` (mode 0600); it never overwrites.
//! - [`issue`] (`eastwall ca issue`) issues a certificate and key from that folder's CA, for a
//!   SPIFFE ID or a node name.
//! - [`server`] (`eastwall ca serve`) signs nodes' certificate requests over mutual TLS: a node
//!   (authenticated by its node certificate) gets a certificate only for an identity the
//!   registry gives a workload placed on that node.
//! - [`client`] is the protocol's client side: a signing request for an identity, posted
//!   with the node's certificate; the node's renewals are built on it; and a new node's
//!   enrollment with a bootstrap token.
//! - [`token`] (`eastwall ca token`): bootstrap tokens, kept as hashes in the CA folder.

pub mod client;
pub mod server;
pub mod token;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use eastwall_certs::{Ca, Identity};
use eastwall_identity::SpiffeId;

/// File name of the CA certificate inside a CA folder.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside a CA folder.
pub const CA_KEY_FILE: &str = "ca.key";

/// Path of the CA's own SPIFFE ID: the `ca serve` endpoint presents `spiffe://<td>/ca`.
pub const CA_SERVER_PATH: &str = "/ca";

/// The identity the CA service presents: `spiffe://<trust domain>/ca`.
pub fn ca_server_id(trust_domain: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::parse(&format!("spiffe://{trust_domain}{CA_SERVER_PATH}"))
        .map_err(|e| anyhow::anyhow!("invalid trust domain {trust_domain:?}: {e}"))
}

/// The identity of node `name`: `spiffe://<trust domain>/node/<name>`.
pub fn node_id(trust_domain: &str, name: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::parse(&format!("spiffe://{trust_domain}/node/{name}"))
        .map_err(|e| anyhow::anyhow!("invalid node name {name:?}: {e}"))
}

/// `eastwall ca init`: creates a CA for `trust_domain` valid for `days` in `dir` (created if
/// missing): `ca.crt` and `ca.key` (mode 0600). Refuses if either file already exists.
/// Returns the certificate's path.
pub fn init(dir: &Path, trust_domain: &str, days: u64) -> anyhow::Result<PathBuf> {
    if days == 0 {
        bail!("--days must be at least 1");
    }
    let (crt, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    for p in [&crt, &key] {
        if p.exists() {
            bail!(
                "{} already exists; refusing to overwrite a CA (remove it first if you really mean to replace the CA)",
                p.display()
            );
        }
    }
    let validity = Duration::from_secs(days.saturating_mul(86_400));
    let ca = Ca::generate(trust_domain, validity).map_err(|e| anyhow::anyhow!("{e}"))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The key first, created exclusively with mode 0600: it is never readable by others, not
    // even for a moment.
    write_new(&key, ca.key_pem().as_bytes(), 0o600)?;
    write_new(&crt, ca.cert_pem().as_bytes(), 0o644)?;
    Ok(crt)
}

/// Loads the CA of folder `dir` (`ca.crt`, `ca.key`).
pub fn load_ca(dir: &Path) -> anyhow::Result<Ca> {
    let (crt, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let cert_pem =
        fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
    let key_pem = fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
    Ca::from_pem(&cert_pem, &key_pem)
        .map_err(|e| anyhow::anyhow!("{} / {}: {e}", crt.display(), key.display()))
}

/// Whom `eastwall ca issue` issues for.
#[derive(Debug, Clone)]
pub enum Subject {
    /// Any SPIFFE ID of the CA's trust domain.
    Id(String),
    /// A node: `spiffe://<td>/node/<name>`.
    Node(String),
}

/// `eastwall ca issue`: issues a certificate from the CA in `dir` for `subject`, valid for
/// `hours`, and writes `<out>.crt` and `<out>.key` (mode 0600). Refuses to overwrite either.
/// Returns the identity issued.
pub fn issue(dir: &Path, subject: &Subject, out: &Path, hours: u64) -> anyhow::Result<SpiffeId> {
    if hours == 0 {
        bail!("--hours must be at least 1");
    }
    let ca = load_ca(dir)?;
    let id = match subject {
        Subject::Id(s) => {
            SpiffeId::parse(s).map_err(|e| anyhow::anyhow!("invalid SPIFFE ID {s:?}: {e}"))?
        }
        Subject::Node(name) => node_id(ca.trust_domain(), name)?,
    };
    let (crt, key) = (with_suffix(out, "crt"), with_suffix(out, "key"));
    for p in [&crt, &key] {
        if p.exists() {
            bail!("{} already exists; refusing to overwrite", p.display());
        }
    }
    let issued = ca
        .issue(&id, Duration::from_secs(hours.saturating_mul(3600)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Check what we hand out loads as an identity.
    Identity::from_pem(&issued.cert_pem, &issued.key_pem).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(parent) = crt.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_new(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_new(&crt, issued.cert_pem.as_bytes(), 0o644)?;
    Ok(id)
}

/// `PREFIX.ext`, keeping any dots already in the prefix.
fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Creates `path` (failing if it exists) with `mode`, and writes `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_issue_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ca");
        init(&dir, "corp.example", 30).unwrap();
        let mode = fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = init(&dir, "corp.example", 30).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");

        let out = d.path().join("out/host-a");
        let id = issue(&dir, &Subject::Node("host-a".into()), &out, 2).unwrap();
        assert_eq!(id.as_str(), "spiffe://corp.example/node/host-a");
        let cert = fs::read_to_string(d.path().join("out/host-a.crt")).unwrap();
        let key = fs::read_to_string(d.path().join("out/host-a.key")).unwrap();
        assert_eq!(Identity::from_pem(&cert, &key).unwrap().id, id);
        assert!(issue(&dir, &Subject::Node("host-a".into()), &out, 2).is_err());

        let foreign = Subject::Id("spiffe://other.example/wl/x".into());
        assert!(issue(&dir, &foreign, &d.path().join("x"), 2).is_err());
        assert!(issue(&dir, &Subject::Id("nope".into()), &d.path().join("y"), 2).is_err());
        assert!(init(&d.path().join("bad"), "Not Valid", 1).is_err());
    }
}
