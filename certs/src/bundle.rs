//! SPIFFE trust bundles in their JSON form: a JWK Set whose `use: x509-svid` keys each carry
//! one X.509 authority in `x5c` (SPIFFE Trust Domain and Bundle, section 4; what SPIRE
//! serves and `spire-server bundle show -format spiffe` prints). JWT-SVID keys are skipped:
//! eastwall proves identities with X.509 SVIDs only.

use base64::Engine;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use crate::CertError;

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(rename = "use", default)]
    usage: Option<String>,
    #[serde(default)]
    x5c: Option<Vec<String>>,
}

fn bad(why: String) -> CertError {
    CertError::SpiffeBundle(why)
}

/// The X.509 authorities of the SPIFFE bundle `json`, in the order of its keys.
pub(crate) fn x509_authorities(json: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let set: JwkSet = serde_json::from_str(json).map_err(|e| bad(format!("not a JWK Set: {e}")))?;
    let mut authorities = Vec::new();
    for (i, key) in set.keys.iter().enumerate() {
        match key.usage.as_deref() {
            Some("x509-svid") => {}
            Some("jwt-svid") => continue,
            Some(other) => {
                return Err(bad(format!(
                    "keys[{i}]: `use` is {other:?}: x509-svid or jwt-svid"
                )));
            }
            None => return Err(bad(format!("keys[{i}]: no `use`"))),
        }
        let chain = key.x5c.as_deref().unwrap_or_default();
        let [cert] = chain else {
            return Err(bad(format!(
                "keys[{i}]: an x509-svid key's `x5c` holds exactly one certificate, found {}",
                chain.len()
            )));
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(cert)
            .map_err(|e| bad(format!("keys[{i}].x5c[0]: not base64: {e}")))?;
        authorities.push(CertificateDer::from(der));
    }
    if authorities.is_empty() {
        return Err(bad(
            "no x509-svid key: no X.509 authority to trust".to_owned()
        ));
    }
    Ok(authorities)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_authorities_are_read_and_mistakes_named() {
        let a = base64::engine::general_purpose::STANDARD.encode(b"first");
        let b = base64::engine::general_purpose::STANDARD.encode(b"second");
        let good = format!(
            r#"{{"keys": [
                {{"use": "x509-svid", "kty": "EC", "crv": "P-256", "x5c": ["{a}"]}},
                {{"use": "jwt-svid", "kty": "EC", "kid": "k1"}},
                {{"use": "x509-svid", "kty": "RSA", "x5c": ["{b}"]}}
            ], "spiffe_sequence": 7, "spiffe_refresh_hint": 300}}"#
        );
        let got = x509_authorities(&good).unwrap();
        assert_eq!(
            got.iter().map(|c| c.as_ref().to_vec()).collect::<Vec<_>>(),
            [b"first".to_vec(), b"second".to_vec()]
        );
        for (json, says) in [
            (
                "-----BEGIN CERTIFICATE-----",
                "not a JWK Set: invalid number at line 1 column 2",
            ),
            (r#"{"keys": {}}"#, "not a JWK Set"),
            (r#"{"keys": []}"#, "no x509-svid key"),
            (r#"{"keys": [{"use": "jwt-svid"}]}"#, "no x509-svid key"),
            (
                r#"{"keys": [{"use": "enc", "x5c": []}]}"#,
                "keys[0]: `use` is \"enc\"",
            ),
            (r#"{"keys": [{"x5c": ["AA=="]}]}"#, "keys[0]: no `use`"),
            (
                r#"{"keys": [{"use": "x509-svid"}]}"#,
                "exactly one certificate, found 0",
            ),
            (
                r#"{"keys": [{"use": "x509-svid", "x5c": ["AA==", "AA=="]}]}"#,
                "exactly one certificate, found 2",
            ),
            (
                r#"{"keys": [{"use": "x509-svid", "x5c": ["*"]}]}"#,
                "keys[0].x5c[0]: not base64",
            ),
        ] {
            let e = x509_authorities(json).err().unwrap().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
