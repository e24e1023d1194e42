//! Certificates and TLS configuration for eastwall.
//!
//! Every TLS and QUIC endpoint in eastwall takes its cryptography from [`crypto_provider`], so
//! exactly one provider (aws-lc-rs) is in the build: mixing providers panics at run time.
//!
//! How the pieces fit:
//! - A trust domain's [`Ca`] issues short-lived leaf certificates whose one URI SAN is a SPIFFE
//!   ID ([`Ca::issue`], or [`Ca::sign_csr`] for a key that never leaves its node).
//! - A node loads each certificate and key it holds as an [`Identity`], and serves them through
//!   a [`RotatingIdentity`] (one identity, replaced on renewal) or an [`IdentitySet`] (several,
//!   chosen by the SNI [`sni_for`] derives from the identity a client asks for).
//! - [`server_config`] and [`client_config`] build mutual-TLS 1.3 configurations (usable by
//!   rustls and quinn) that verify the peer's chain against a [`TrustBundle`] and check its
//!   SPIFFE ID: the server accepts any client of the trust domain, the client accepts only the
//!   one server identity it expected. [`peer_identity`] reads the verified peer's ID.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bundle;
mod ca;
mod identity;
mod tls;

use std::sync::Arc;

use eastwall_identity::{CertIdentityError, SpiffeId};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs;

pub use ca::{Ca, Issued, generate_csr};
pub use identity::{Identity, IdentitySet, RotatingIdentity, TrustBundle, sni_for};
pub use tls::{
    client_config, client_config_without_certificate, peer_identity, server_config,
    server_config_certificate_optional,
};

/// The crypto provider of every eastwall TLS endpoint: aws-lc-rs, preferring the hybrid
/// post-quantum key exchange X25519MLKEM768, then X25519, then the NIST curves.
///
/// rustls built without default features does not put the post-quantum group first by itself,
/// so the order is set here explicitly.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
        aws_lc_rs::kx_group::SECP384R1,
    ];
    Arc::new(provider)
}

/// Why a certificate, key, CSR or TLS configuration was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Text that should hold PEM blocks of some kind could not be read as such.
    #[error("cannot read {what} PEM: {reason}")]
    Pem {
        /// What was expected: "certificate", "private key", "certificate request".
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The PEM text holds no certificate.
    #[error("no certificate in the PEM text")]
    NoCertificate,
    /// A certificate carries no usable SPIFFE ID.
    #[error("certificate identity: {0}")]
    Identity(#[from] CertIdentityError),
    /// A certificate meant to be a CA (basicConstraints CA) is not one.
    #[error("the certificate of {0} is not a CA certificate")]
    NotCa(SpiffeId),
    /// The private key is not the one of the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The private key cannot be used (unsupported type or malformed).
    #[error("unusable private key: {0}")]
    Key(String),
    /// An identity is outside the trust domain it must belong to.
    #[error("{id} is not in trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity.
        id: SpiffeId,
        /// The trust domain it should be in.
        trust_domain: String,
    },
    /// A trust domain name is not valid (SPIFFE: lowercase letters, digits, `.`, `-`, `_`).
    #[error("invalid trust domain {trust_domain:?}: {reason}")]
    InvalidTrustDomain {
        /// The name given.
        trust_domain: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A certificate of a trust bundle that names no trust domain (no SPIFFE URI) is not a
    /// CA certificate.
    #[error("the certificate {0} is not a CA certificate")]
    NotCaSubject(String),
    /// A SPIFFE trust bundle (JSON) that cannot be read: why, and where.
    #[error("SPIFFE bundle: {0}")]
    SpiffeBundle(String),
    /// A trust bundle mixes CA certificates of different trust domains.
    #[error("the trust bundle mixes trust domains {0} and {1}")]
    MixedTrustDomains(String, String),
    /// A leaf certificate was requested for a trust domain's own ID (no path).
    #[error("{0} names a trust domain, not a workload, node or user")]
    NotALeafId(SpiffeId),
    /// The requested validity window is empty or cannot be represented.
    #[error("invalid validity window: {0}")]
    Validity(&'static str),
    /// A certificate signing request is malformed, badly signed or asks for the wrong names.
    #[error("certificate request refused: {0}")]
    Csr(String),
    /// The system's random number generator failed.
    #[error("the random number generator failed")]
    Random,
    /// Building or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The peer's certificate chain verified, but it is not the identity that was expected.
    #[error("the peer is {presented}, expected {expected}")]
    UnexpectedPeer {
        /// The identity the client asked for.
        expected: SpiffeId,
        /// The identity the peer's certificate carries.
        presented: SpiffeId,
    },
    /// rustls refused a configuration or a certificate.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_quantum_group_first() {
        let p = crypto_provider();
        assert_eq!(
            p.kx_groups[0].name(),
            rustls::NamedGroup::X25519MLKEM768,
            "hybrid PQ key exchange must be preferred"
        );
        assert!(p.fips() || !p.cipher_suites.is_empty());
    }
}
