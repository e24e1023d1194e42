//! Certificate -> identity: the SPIFFE ID and validity window of an X.509 certificate.
//!
//! These functions only read a certificate; they do not verify its signature or chain. Callers
//! take the identity from a certificate only after the TLS layer has verified it (see the
//! `eastwall-certs` crate).

use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why no identity could be read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertIdentityError {
    /// The bytes are not one DER-encoded X.509 certificate.
    #[error("not a DER-encoded X.509 certificate: {0}")]
    Parse(String),
    /// The certificate has no subject alternative name of type URI.
    #[error("the certificate has no URI subject alternative name")]
    NoUriSan,
    /// The certificate has more than one URI subject alternative name.
    #[error("the certificate has {0} URI subject alternative names; a SPIFFE certificate has one")]
    SeveralUriSans(usize),
    /// The URI subject alternative name is not a valid SPIFFE ID.
    #[error("the URI subject alternative name {uri:?} is not a SPIFFE ID: {source}")]
    InvalidSpiffeId {
        /// The URI found in the certificate.
        uri: String,
        /// Why it is not a SPIFFE ID.
        source: SpiffeIdError,
    },
    /// A validity time cannot be represented as a [`SystemTime`].
    #[error("the certificate's validity time {0} is out of range")]
    TimeOutOfRange(i64),
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertIdentityError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(CertIdentityError::Parse(format!(
            "{} bytes after the certificate",
            rest.len()
        ))),
        Err(e) => Err(CertIdentityError::Parse(e.to_string())),
    }
}

/// The SPIFFE ID of a DER-encoded X.509 certificate: its one URI subject alternative name.
pub fn spiffe_id_from_der(der: &[u8]) -> Result<SpiffeId, CertIdentityError> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?
        .ok_or(CertIdentityError::NoUriSan)?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri = uris.next().ok_or(CertIdentityError::NoUriSan)?;
    let others = uris.count();
    if others > 0 {
        return Err(CertIdentityError::SeveralUriSans(others + 1));
    }
    SpiffeId::parse(uri).map_err(|source| CertIdentityError::InvalidSpiffeId {
        uri: uri.to_owned(),
        source,
    })
}

/// The validity window `(not_before, not_after)` of a DER-encoded X.509 certificate.
pub fn validity_from_der(der: &[u8]) -> Result<(SystemTime, SystemTime), CertIdentityError> {
    let cert = parse(der)?;
    let validity = cert.validity();
    Ok((
        system_time(&validity.not_before)?,
        system_time(&validity.not_after)?,
    ))
}

fn system_time(t: &ASN1Time) -> Result<SystemTime, CertIdentityError> {
    let secs = t.timestamp();
    let out_of_range = CertIdentityError::TimeOutOfRange(secs);
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
    .ok_or(out_of_range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType, date_time_ymd};

    fn cert_with_sans(sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn one_uri_san_is_the_identity() {
        let der = cert_with_sans(vec![
            SanType::DnsName("db.example".try_into().unwrap()),
            uri("spiffe://corp.example/wl/db"),
        ]);
        let id = spiffe_id_from_der(&der).unwrap();
        assert_eq!(id.as_str(), "spiffe://corp.example/wl/db");
        assert_eq!(id.trust_domain(), "corp.example");
    }

    #[test]
    fn refusals() {
        let no_san = cert_with_sans(vec![]);
        assert_eq!(
            spiffe_id_from_der(&no_san),
            Err(CertIdentityError::NoUriSan)
        );

        let dns_only = cert_with_sans(vec![SanType::DnsName("a.example".try_into().unwrap())]);
        assert_eq!(
            spiffe_id_from_der(&dns_only),
            Err(CertIdentityError::NoUriSan)
        );

        let two = cert_with_sans(vec![uri("spiffe://td/a"), uri("spiffe://td/b")]);
        assert_eq!(
            spiffe_id_from_der(&two),
            Err(CertIdentityError::SeveralUriSans(2))
        );

        let not_spiffe = cert_with_sans(vec![uri("https://td/a")]);
        assert!(matches!(
            spiffe_id_from_der(&not_spiffe),
            Err(CertIdentityError::InvalidSpiffeId {
                source: SpiffeIdError::Scheme,
                ..
            })
        ));

        assert!(matches!(
            spiffe_id_from_der(b"not a certificate"),
            Err(CertIdentityError::Parse(_))
        ));
        assert!(matches!(
            spiffe_id_from_der(&[]),
            Err(CertIdentityError::Parse(_))
        ));
        let good = cert_with_sans(vec![uri("spiffe://td/a")]);
        assert!(matches!(
            spiffe_id_from_der(&good[..good.len() - 1]),
            Err(CertIdentityError::Parse(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            spiffe_id_from_der(&trailing),
            Err(CertIdentityError::Parse(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let good = cert_with_sans(vec![uri("spiffe://td/a")]);
        // Flip every byte in turn: parsing must return, never panic.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = spiffe_id_from_der(&bad);
            let _ = validity_from_der(&bad);
        }
    }

    #[test]
    fn validity_window() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.not_before = date_time_ymd(2026, 1, 2);
        params.not_after = date_time_ymd(2026, 1, 3);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let (nb, na) = validity_from_der(&der).unwrap();
        let nb_secs = nb.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(nb_secs, 1_767_312_000); // 2026-01-02T00:00:00Z
        assert_eq!(na.duration_since(nb).unwrap(), Duration::from_secs(86_400));
    }
}
