//! Certificates and TLS configuration for eastwall.
//!
//! Every TLS and QUIC endpoint in eastwall takes its cryptography from [`crypto_provider`], so
//! exactly one provider (aws-lc-rs) is in the build: mixing providers panics at run time. The
//! CA, issuance, rotation and the rustls/quinn configurations with identity verification will
//! live here as the tunnel is built.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs;

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
