//! Local identities (certificate chain + key), how a node serves them, and trust bundles.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use eastwall_identity::{CertIdentityError, SpiffeId, spiffe_id_from_der, validity_from_der};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, SignatureScheme};

use crate::{CertError, crypto_provider};

/// All certificates in `pem`, in order; at least one.
pub(crate) fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// The one private key in `pem` (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        what: "private key",
        reason: e.to_string(),
    })
}

/// Loads `key` with the provider and checks it is the key of `chain`'s first certificate.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, CertError> {
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch)
        }
        Err(e) => Err(CertError::Tls(e)),
    }
}

/// A local identity: a certificate chain (leaf first) and its private key, ready for rustls.
#[derive(Clone)]
pub struct Identity {
    /// The SPIFFE ID of the leaf certificate.
    pub id: SpiffeId,
    /// When the leaf becomes valid.
    pub not_before: SystemTime,
    /// When the leaf expires.
    pub not_after: SystemTime,
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id.as_str())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads a certificate chain (PEM, leaf first) and its private key (PEM). Refuses a key that
    /// is not the leaf's and a leaf without exactly one SPIFFE ID URI SAN. The chain is not
    /// verified here: peers verify it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, CertError> {
        let chain = certs_from_pem(cert_pem)?;
        let leaf = &chain[0];
        let id = spiffe_id_from_der(leaf)?;
        let (not_before, not_after) = validity_from_der(leaf)?;
        let certified = certified_key(chain, key_from_pem(key_pem)?)?;
        Ok(Identity {
            id,
            not_before,
            not_after,
            certified: Arc::new(certified),
        })
    }

    /// When to renew: half-way through the certificate's lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life / 2
    }

    /// The chain and signing key, as rustls takes them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

/// The CA certificates of one trust domain that peers' chains must lead to.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: String,
    pub(crate) roots: Arc<RootCertStore>,
}

impl TrustBundle {
    /// Loads one or more CA certificates (PEM). Each must be a CA certificate whose URI SAN
    /// names the trust domain, the same for all (eastwall's own CA, SPIRE's).
    pub fn from_pem(ca_pem: &str) -> Result<TrustBundle, CertError> {
        TrustBundle::load(ca_pem, None)
    }

    /// Loads one or more CA certificates (PEM) trusted for `trust_domain` (the registry's).
    /// A CA that names a trust domain (a `spiffe://` URI SAN) must name this one; a CA that
    /// names none (an enterprise root or intermediate: Vault, cert-manager, openssl) is
    /// trusted for it as configured. Either way, a peer's leaf certificate must carry a
    /// SPIFFE ID of `trust_domain` (checked at every handshake).
    pub fn for_trust_domain(ca_pem: &str, trust_domain: &str) -> Result<TrustBundle, CertError> {
        check_trust_domain(trust_domain)?;
        TrustBundle::load(ca_pem, Some(trust_domain))
    }

    /// Loads a trust bundle file's text for `trust_domain`: a SPIFFE bundle (JSON, a JWK
    /// Set, as SPIRE publishes it) or PEM certificates, told apart by the first character;
    /// see [`TrustBundle::for_trust_domain`].
    pub fn read(text: &str, trust_domain: &str) -> Result<TrustBundle, CertError> {
        if text.trim_start().starts_with('{') {
            check_trust_domain(trust_domain)?;
            TrustBundle::load_der(crate::bundle::x509_authorities(text)?, Some(trust_domain))
        } else {
            TrustBundle::for_trust_domain(text, trust_domain)
        }
    }

    fn load(ca_pem: &str, configured: Option<&str>) -> Result<TrustBundle, CertError> {
        TrustBundle::load_der(certs_from_pem(ca_pem)?, configured)
    }

    fn load_der(
        certs: Vec<CertificateDer<'static>>,
        configured: Option<&str>,
    ) -> Result<TrustBundle, CertError> {
        let mut trust_domain: Option<String> = configured.map(str::to_owned);
        let mut roots = RootCertStore::empty();
        for cert in certs {
            let parsed = x509_parser::parse_x509_certificate(&cert)
                .map_err(|e| CertIdentityError::Parse(e.to_string()))?
                .1;
            let named = match spiffe_id_from_der(&cert) {
                Ok(id) => Some(id),
                // Without a configured trust domain, each CA must say which it is for.
                Err(CertIdentityError::NoUriSan) if configured.is_some() => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(id) = &named {
                let td = id.trust_domain();
                if let Some(wanted) = configured
                    && wanted != td
                {
                    return Err(CertError::ForeignTrustDomain {
                        id: id.clone(),
                        trust_domain: wanted.to_owned(),
                    });
                }
                match &trust_domain {
                    Some(first) if first != td => {
                        return Err(CertError::MixedTrustDomains(first.clone(), td.to_owned()));
                    }
                    Some(_) => {}
                    None => trust_domain = Some(td.to_owned()),
                }
            }
            if !parsed.is_ca() {
                return Err(match named {
                    Some(id) => CertError::NotCa(id),
                    None => CertError::NotCaSubject(parsed.subject().to_string()),
                });
            }
            roots.add(cert)?;
        }
        Ok(TrustBundle {
            // certs_from_pem returned at least one certificate, so the loop set it.
            trust_domain: trust_domain.ok_or(CertError::NoCertificate)?,
            roots: Arc::new(roots),
        })
    }

    /// The trust domain all its CAs belong to.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

fn check_trust_domain(trust_domain: &str) -> Result<(), CertError> {
    SpiffeId::parse(&format!("spiffe://{trust_domain}")).map_err(|e| {
        CertError::InvalidTrustDomain {
            trust_domain: trust_domain.to_owned(),
            reason: e.to_string(),
        }
    })?;
    Ok(())
}

/// Holds one identity that can be replaced at any time (rotation); as a rustls client or server
/// certificate resolver it always presents that identity. Replacing it affects only handshakes
/// that start afterwards, never established connections.
pub struct RotatingIdentity {
    current: ArcSwap<Identity>,
}

impl RotatingIdentity {
    /// Starts with `identity`.
    pub fn new(identity: Identity) -> Arc<Self> {
        Arc::new(RotatingIdentity {
            current: ArcSwap::from_pointee(identity),
        })
    }

    /// Replaces the identity for the handshakes to come.
    pub fn set(&self, identity: Identity) {
        self.current.store(Arc::new(identity));
    }

    /// The identity presented now.
    pub fn current(&self) -> Arc<Identity> {
        self.current.load_full()
    }
}

impl fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RotatingIdentity")
            .field(&*self.current.load())
            .finish()
    }
}

impl ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for RotatingIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key())
    }
}

/// Several local identities on the server side, chosen by the SNI a client sends
/// ([`sni_for`] of the identity it wants). An unknown or missing SNI gets no certificate, so
/// the handshake fails. Lookups in the handshake take no lock.
pub struct IdentitySet {
    // Keyed by sni_for(id).
    by_sni: ArcSwap<HashMap<String, Arc<Identity>>>,
}

impl IdentitySet {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(IdentitySet {
            by_sni: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// Adds `identity`, replacing any with the same SPIFFE ID.
    pub fn insert(&self, identity: Identity) {
        let sni = sni_for(&identity.id);
        let identity = Arc::new(identity);
        self.by_sni.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(sni.clone(), Arc::clone(&identity));
            map
        });
    }

    /// Removes the identity `id`, if present.
    pub fn remove(&self, id: &SpiffeId) {
        let sni = sni_for(id);
        self.by_sni.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(&sni);
            map
        });
    }

    /// The identity `id`, if present.
    pub fn get(&self, id: &SpiffeId) -> Option<Arc<Identity>> {
        self.by_sni
            .load()
            .get(&sni_for(id))
            .filter(|i| i.id == *id)
            .cloned()
    }

    /// The IDs held, sorted.
    pub fn ids(&self) -> Vec<SpiffeId> {
        let mut ids: Vec<SpiffeId> = self.by_sni.load().values().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    }
}

impl fmt::Debug for IdentitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.ids().iter().map(SpiffeId::as_str))
            .finish()
    }
}

impl ResolvesServerCert for IdentitySet {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name()?;
        self.by_sni.load().get(sni).map(|i| i.certified_key())
    }
}

/// The TLS server name a client sends to ask a node for identity `id`: the first 32 hex digits
/// of SHA-256(`id`) followed by `.id.eastwall` (a SPIFFE path is not a DNS name). It only
/// selects the certificate; the client verifies the SPIFFE ID the certificate carries.
pub fn sni_for(id: &SpiffeId) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_str().as_bytes());
    let mut sni = String::with_capacity(32 + ".id.eastwall".len());
    for b in &digest.as_ref()[..16] {
        sni.push(char::from(HEX[usize::from(b >> 4)]));
        sni.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    sni.push_str(".id.eastwall");
    sni
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn sni_scheme() {
        let a = sni_for(&id("spiffe://corp.example/wl/db"));
        assert_eq!(a.len(), 32 + ".id.eastwall".len());
        assert!(a.ends_with(".id.eastwall"));
        assert!(
            a[..32]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // SHA-256("spiffe://td/a") starts with these 16 bytes.
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"spiffe://td/a");
        let hex: String = expected.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sni_for(&id("spiffe://td/a")), format!("{hex}.id.eastwall"));
        assert_ne!(a, sni_for(&id("spiffe://corp.example/wl/web")));
        // It is a valid DNS name for rustls.
        rustls::pki_types::ServerName::try_from(a).unwrap();
    }

    #[test]
    fn identity_from_pem() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let wl = id("spiffe://corp.example/wl/db");
        let issued = ca.issue(&wl, DAY).unwrap();
        let identity = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        assert_eq!(identity.id, wl);
        assert_eq!(identity.not_after, issued.not_after);
        assert_eq!(identity.certified_key().cert.len(), 1);

        // A chain: leaf first, then the CA.
        let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
        let with_chain = Identity::from_pem(&chain, &issued.key_pem).unwrap();
        assert_eq!(with_chain.id, wl);
        assert_eq!(with_chain.certified_key().cert.len(), 2);

        let other = ca.issue(&wl, DAY).unwrap();
        assert!(matches!(
            Identity::from_pem(&issued.cert_pem, &other.key_pem),
            Err(CertError::KeyMismatch)
        ));
        assert!(matches!(
            Identity::from_pem("", &issued.key_pem),
            Err(CertError::NoCertificate)
        ));
        assert!(matches!(
            Identity::from_pem(&issued.cert_pem, "nothing"),
            Err(CertError::Pem { .. })
        ));
    }

    #[test]
    fn renew_at_half_life() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let issued = ca
            .issue_with_validity(&id("spiffe://corp.example/wl/a"), t0, t0 + 2 * DAY)
            .unwrap();
        let identity = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        assert_eq!(identity.not_before, t0);
        assert_eq!(identity.renew_at(), t0 + DAY);

        // issue(): not_before is five minutes back, so half-life counts from there.
        let issued = ca.issue(&id("spiffe://corp.example/wl/a"), DAY).unwrap();
        let identity = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        let half = (DAY + Duration::from_secs(300)) / 2;
        assert_eq!(identity.renew_at(), identity.not_before + half);
    }

    #[test]
    fn trust_bundle() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let ca2 = Ca::generate("corp.example", DAY).unwrap();
        let bundle =
            TrustBundle::from_pem(&format!("{}{}", ca.cert_pem(), ca2.cert_pem())).unwrap();
        assert_eq!(bundle.trust_domain(), "corp.example");
        assert_eq!(bundle.roots.len(), 2);

        let foreign = Ca::generate("other.example", DAY).unwrap();
        assert!(matches!(
            TrustBundle::from_pem(&format!("{}{}", ca.cert_pem(), foreign.cert_pem())),
            Err(CertError::MixedTrustDomains(..))
        ));
        let leaf = ca.issue(&id("spiffe://corp.example/wl/a"), DAY).unwrap();
        assert!(matches!(
            TrustBundle::from_pem(&leaf.cert_pem),
            Err(CertError::NotCa(_))
        ));
        assert!(matches!(
            TrustBundle::from_pem("no pem here"),
            Err(CertError::NoCertificate)
        ));
    }

    #[test]
    fn identity_set_bookkeeping() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let set = IdentitySet::new();
        let a = id("spiffe://corp.example/wl/a");
        let b = id("spiffe://corp.example/wl/b");
        for wl in [&b, &a] {
            let issued = ca.issue(wl, DAY).unwrap();
            set.insert(Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap());
        }
        assert_eq!(set.ids(), vec![a.clone(), b.clone()]);
        assert_eq!(set.get(&a).unwrap().id, a);
        set.remove(&a);
        assert!(set.get(&a).is_none());
        assert_eq!(set.ids(), vec![b.clone()]);
        assert!(format!("{set:?}").contains("wl/b"));
    }
}
