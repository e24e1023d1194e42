//! A trust domain's certificate authority and the leaf certificates it issues.
//!
//! Profile (see docs/IDENTITY.md): ECDSA P-256 keys; the CA carries the trust domain's own
//! SPIFFE ID as its URI SAN; a leaf carries exactly one URI SAN, its SPIFFE ID, an empty subject,
//! `digitalSignature` and both `serverAuth` and `clientAuth` (a tunnel endpoint is both).

use std::fmt;
use std::time::{Duration, SystemTime};

use eastwall_identity::{SpiffeId, spiffe_id_from_der};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::CertError;
use crate::identity::{certified_key, certs_from_pem, key_from_pem};

/// How long before its issuance a leaf is already valid, so that a peer whose clock is a little
/// behind does not refuse a fresh certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A trust domain's certificate authority: its self-signed certificate and signing key.
pub struct Ca {
    cert_pem: String,
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// A certificate and the private key it was issued for, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The leaf certificate (PEM, leaf only).
    pub cert_pem: String,
    /// The leaf's private key (PKCS#8 PEM).
    pub key_pem: String,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl Ca {
    /// Makes a new self-signed CA for `trust_domain`, valid from now (less the tolerated clock
    /// skew) for `validity`.
    pub fn generate(trust_domain: &str, validity: Duration) -> Result<Ca, CertError> {
        let td_id = trust_domain_id(trust_domain)?;
        let now = SystemTime::now();
        let not_after = now
            .checked_add(validity)
            .ok_or(CertError::Validity("the CA lifetime is too long"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("eastwall CA {trust_domain}"));
        params.subject_alt_names = vec![uri_san(&td_id)?];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, now.checked_sub(CLOCK_SKEW), not_after)?;
        params.serial_number = Some(random_serial()?);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            trust_domain: trust_domain.to_owned(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate (exactly one, PEM) and its private key (PEM). The trust
    /// domain is the one of the certificate's URI SAN; the key must be the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let mut certs = certs_from_pem(cert_pem)?;
        if certs.len() != 1 {
            return Err(CertError::Pem {
                what: "CA certificate",
                reason: format!("expected one certificate, found {}", certs.len()),
            });
        }
        let cert = certs.remove(0);
        let id = spiffe_id_from_der(&cert)?;
        if !is_ca(&cert) {
            return Err(CertError::NotCa(id));
        }
        let key_der = key_from_pem(key_pem)?;
        certified_key(vec![cert.clone()], key_der.clone_key())?;
        let key = KeyPair::try_from(&key_der).map_err(|e| CertError::Key(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            trust_domain: id.trust_domain().to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM: what a trust bundle holds.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The trust domain, e.g. `corp.example`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues a certificate for `id` with a new P-256 key, valid from five minutes ago (clock
    /// skew) until `ttl` from now.
    pub fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<Issued, CertError> {
        let (not_before, not_after) = window(ttl)?;
        self.issue_with_validity(id, not_before, not_after)
    }

    /// Issues a certificate for `id` with a new P-256 key, valid from `not_before` to
    /// `not_after` (which may lie in the past: tests use it for expired certificates).
    pub fn issue_with_validity(
        &self,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, CertError> {
        self.check_leaf_id(id)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (params, not_after) = leaf_params(id, Some(not_before), not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Signs a certificate signing request (PEM) for `ttl`, after checking its self-signature
    /// and that it asks for exactly one name, a URI SAN holding a SPIFFE ID of this trust
    /// domain. Returns that ID and the signed leaf certificate (PEM). Only the name and public
    /// key are taken from the request; the rest of the profile is the CA's. The caller decides
    /// beforehand whether the requester may hold that ID.
    pub fn sign_csr(&self, csr_pem: &str, ttl: Duration) -> Result<(SpiffeId, String), CertError> {
        let der =
            CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
                CertError::Pem {
                    what: "certificate request",
                    reason: e.to_string(),
                }
            })?;
        let csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| CertError::Csr(e.to_string()))?;
        let id = match csr.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] => SpiffeId::parse(uri.as_str()).map_err(|e| {
                CertError::Csr(format!(
                    "the URI SAN {:?} is not a SPIFFE ID: {e}",
                    uri.as_str()
                ))
            })?,
            [] => return Err(CertError::Csr("it names no identity (no SAN)".into())),
            [_] => return Err(CertError::Csr("its one SAN is not a URI".into())),
            more => {
                return Err(CertError::Csr(format!(
                    "it asks for {} names; exactly one URI SAN is allowed",
                    more.len()
                )));
            }
        };
        self.check_leaf_id(&id)?;
        let (not_before, not_after) = window(ttl)?;
        let (params, _) = leaf_params(&id, Some(not_before), not_after)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok((id, cert.pem()))
    }

    fn check_leaf_id(&self, id: &SpiffeId) -> Result<(), CertError> {
        if id.trust_domain() != self.trust_domain {
            return Err(CertError::ForeignTrustDomain {
                id: id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if id.path().is_empty() {
            return Err(CertError::NotALeafId(id.clone()));
        }
        Ok(())
    }

    /// Signs a leaf for any ID, skipping the trust-domain check: only for tests of the
    /// verifiers, which must refuse such certificates.
    #[cfg(test)]
    pub(crate) fn issue_unchecked(&self, id: &SpiffeId, ttl: Duration) -> Issued {
        let (not_before, not_after) = window(ttl).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let (params, not_after) = leaf_params(id, Some(not_before), not_after).unwrap();
        Issued {
            cert_pem: params.signed_by(&key, &self.issuer).unwrap().pem(),
            key_pem: key.serialize_pem(),
            not_after,
        }
    }
}

/// Makes a certificate signing request for `id` with a new P-256 key: returns the request and
/// the private key, both PEM. The key never needs to leave the node that made it.
pub fn generate_csr(id: &SpiffeId) -> Result<(String, String), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(id)?];
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

fn trust_domain_id(trust_domain: &str) -> Result<SpiffeId, CertError> {
    let invalid = |reason: String| CertError::InvalidTrustDomain {
        trust_domain: trust_domain.to_owned(),
        reason,
    };
    let id =
        SpiffeId::parse(&format!("spiffe://{trust_domain}")).map_err(|e| invalid(e.to_string()))?;
    if !id.path().is_empty() {
        return Err(invalid("it holds a `/`".into()));
    }
    Ok(id)
}

fn uri_san(id: &SpiffeId) -> Result<SanType, CertError> {
    Ok(SanType::URI(id.as_str().try_into()?))
}

/// `(now - CLOCK_SKEW, now + ttl)`.
fn window(ttl: Duration) -> Result<(SystemTime, SystemTime), CertError> {
    if ttl.is_zero() {
        return Err(CertError::Validity("the lifetime is zero"));
    }
    let now = SystemTime::now();
    let not_after = now
        .checked_add(ttl)
        .ok_or(CertError::Validity("the lifetime is too long"))?;
    let not_before = now
        .checked_sub(CLOCK_SKEW)
        .ok_or(CertError::Validity("the clock is before 1970"))?;
    Ok((not_before, not_after))
}

/// The leaf profile; returns the parameters and `not_after` as it will be encoded (seconds).
fn leaf_params(
    id: &SpiffeId,
    not_before: Option<SystemTime>,
    not_after: SystemTime,
) -> Result<(CertificateParams, SystemTime), CertError> {
    let mut params = CertificateParams::default();
    // The SPIFFE ID is the identity; a subject would only be a second, unchecked name.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(id)?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let not_after = set_validity(&mut params, not_before, not_after)?;
    Ok((params, not_after))
}

/// Sets the validity window, in whole seconds as X.509 encodes it; returns `not_after` as set.
fn set_validity(
    params: &mut CertificateParams,
    not_before: Option<SystemTime>,
    not_after: SystemTime,
) -> Result<SystemTime, CertError> {
    let not_before = not_before.ok_or(CertError::Validity("the clock is before 1970"))?;
    if not_after <= not_before {
        return Err(CertError::Validity("not_after is not after not_before"));
    }
    let (nb, _) = asn1_time(not_before)?;
    let (na, not_after) = asn1_time(not_after)?;
    params.not_before = nb;
    params.not_after = na;
    Ok(not_after)
}

fn asn1_time(t: SystemTime) -> Result<(OffsetDateTime, SystemTime), CertError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| CertError::Validity("a time before 1970"))?
        .as_secs();
    let out_of_range = CertError::Validity("a time past the year 9999");
    let odt = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|t| t.year() <= 9999)
        .ok_or(out_of_range)?;
    Ok((odt, SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
}

/// A random positive 128-bit serial number: unique per certificate even when a CSR reuses a key
/// (rcgen would otherwise derive the serial from the public key).
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CertError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero byte, so the encoding keeps 16 bytes
    Ok(SerialNumber::from_slice(&bytes))
}

fn is_ca(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.is_ca())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use eastwall_identity::validity_from_der;
    use rustls::pki_types::CertificateDer;

    const DAY: Duration = Duration::from_secs(86_400);

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn leaf_der(pem: &str) -> CertificateDer<'static> {
        certs_from_pem(pem).unwrap().remove(0)
    }

    #[test]
    fn generated_ca_profile() {
        let ca = Ca::generate("corp.example", 365 * DAY).unwrap();
        assert_eq!(ca.trust_domain(), "corp.example");
        let der = leaf_der(ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(
            spiffe_id_from_der(&der).unwrap().as_str(),
            "spiffe://corp.example"
        );
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "eastwall CA corp.example");
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign());
        assert!(Ca::generate("Corp", DAY).is_err());
        assert!(Ca::generate("corp/x", DAY).is_err());
    }

    #[test]
    fn from_pem_round_trip() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.trust_domain(), "corp.example");
        assert_eq!(again.cert_pem(), ca.cert_pem());
        // A leaf from the reloaded CA chains to the original certificate.
        let issued = again.issue(&id("spiffe://corp.example/wl/a"), DAY).unwrap();
        let leaf = leaf_der(&issued.cert_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let ca_der = leaf_der(ca.cert_pem());
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());

        let other = Ca::generate("corp.example", DAY).unwrap();
        assert!(matches!(
            Ca::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(CertError::KeyMismatch)
        ));
        assert!(matches!(
            Ca::from_pem(&issued.cert_pem, &issued.key_pem),
            Err(CertError::NotCa(_))
        ));
        assert!(matches!(
            Ca::from_pem("garbage", &ca.key_pem()),
            Err(CertError::NoCertificate)
        ));
        assert!(Ca::from_pem(ca.cert_pem(), "garbage").is_err());
    }

    #[test]
    fn leaf_profile() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let before = SystemTime::now();
        let issued = ca.issue(&id("spiffe://corp.example/wl/db"), DAY).unwrap();
        let der = leaf_der(&issued.cert_pem);
        assert_eq!(
            spiffe_id_from_der(&der).unwrap().as_str(),
            "spiffe://corp.example/wl/db"
        );
        let (nb, na) = validity_from_der(&der).unwrap();
        assert_eq!(na, issued.not_after);
        let skew = before.duration_since(nb).unwrap();
        assert!(
            skew >= Duration::from_secs(299) && skew <= Duration::from_secs(301),
            "{skew:?}"
        );
        let life = na.duration_since(before).unwrap();
        assert!(life <= DAY && life >= DAY - Duration::from_secs(5));

        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans.len(), 1);

        // Fresh keys, distinct serials.
        let second = ca.issue(&id("spiffe://corp.example/wl/db"), DAY).unwrap();
        assert_ne!(second.key_pem, issued.key_pem);
        let second_der = leaf_der(&second.cert_pem);
        let (_, c2) = x509_parser::parse_x509_certificate(&second_der).unwrap();
        assert_ne!(c2.serial, cert.serial);
    }

    #[test]
    fn issue_refusals() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        assert!(matches!(
            ca.issue(&id("spiffe://other.example/wl/db"), DAY),
            Err(CertError::ForeignTrustDomain { .. })
        ));
        assert!(matches!(
            ca.issue(&id("spiffe://corp.example"), DAY),
            Err(CertError::NotALeafId(_))
        ));
        let wl = id("spiffe://corp.example/wl/db");
        assert!(matches!(
            ca.issue(&wl, Duration::ZERO),
            Err(CertError::Validity(_))
        ));
        assert!(matches!(
            ca.issue(&wl, Duration::MAX),
            Err(CertError::Validity(_))
        ));
        let now = SystemTime::now();
        assert!(matches!(
            ca.issue_with_validity(&wl, now, now - DAY),
            Err(CertError::Validity(_))
        ));
        // An expired certificate can be made on purpose.
        let expired = ca
            .issue_with_validity(&wl, now - 2 * DAY, now - DAY)
            .unwrap();
        assert!(expired.not_after < now);
    }

    #[test]
    fn sign_csr_happy_path() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let wl = id("spiffe://corp.example/node/host-a");
        let (csr, key) = generate_csr(&wl).unwrap();
        let (got, cert_pem) = ca.sign_csr(&csr, DAY).unwrap();
        assert_eq!(got, wl);
        // The certificate is for the CSR's key.
        let identity = Identity::from_pem(&cert_pem, &key).unwrap();
        assert_eq!(identity.id, wl);
        // Signing the same CSR twice gives distinct serials.
        let (_, again) = ca.sign_csr(&csr, DAY).unwrap();
        let (a_der, b_der) = (leaf_der(&cert_pem), leaf_der(&again));
        let (_, a) = x509_parser::parse_x509_certificate(&a_der).unwrap();
        let (_, b) = x509_parser::parse_x509_certificate(&b_der).unwrap();
        assert_ne!(a.serial, b.serial);
    }

    fn csr_with_sans(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn sign_csr_refusals() {
        let ca = Ca::generate("corp.example", DAY).unwrap();
        let (other_td, _) = generate_csr(&id("spiffe://other.example/wl/x")).unwrap();
        assert!(matches!(
            ca.sign_csr(&other_td, DAY),
            Err(CertError::ForeignTrustDomain { .. })
        ));
        assert!(matches!(
            ca.sign_csr(&csr_with_sans(vec![]), DAY),
            Err(CertError::Csr(_))
        ));
        let dns = SanType::DnsName("a.example".try_into().unwrap());
        assert!(matches!(
            ca.sign_csr(&csr_with_sans(vec![dns.clone()]), DAY),
            Err(CertError::Csr(_))
        ));
        let uri = SanType::URI("spiffe://corp.example/wl/a".try_into().unwrap());
        assert!(matches!(
            ca.sign_csr(&csr_with_sans(vec![uri.clone(), dns]), DAY),
            Err(CertError::Csr(_))
        ));
        let not_spiffe = SanType::URI("https://corp.example/a".try_into().unwrap());
        assert!(matches!(
            ca.sign_csr(&csr_with_sans(vec![not_spiffe]), DAY),
            Err(CertError::Csr(_))
        ));
        assert!(matches!(
            ca.sign_csr("not a csr", DAY),
            Err(CertError::Pem { .. })
        ));

        // Tampered: change the requested ID after signing (same length, so DER stays valid).
        let (csr, _) = generate_csr(&id("spiffe://corp.example/wl/aaaa")).unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let at = der.windows(4).position(|w| w == b"aaaa").unwrap();
        der[at..at + 4].copy_from_slice(b"root");
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = ca.sign_csr(&tampered, DAY).unwrap_err();
        assert!(matches!(err, CertError::Csr(_)), "{err}");
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }
}
