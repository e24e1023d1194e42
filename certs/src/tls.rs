//! Mutual-TLS 1.3 configurations that verify SPIFFE identities, for rustls and quinn alike.
//!
//! Both sides verify the peer's chain against the [`TrustBundle`] at the current time (webpki:
//! signatures, validity, CA constraints, key usage). The server then requires the client's
//! SPIFFE ID to be in the bundle's trust domain; the client requires the server's SPIFFE ID to
//! be exactly the one it asked for. The TLS server name is used only as SNI ([`sni_for`]),
//! never for verification. Session resumption is off on both sides, so every connection
//! proves both identities with certificates valid at that moment.
//!
//! [`sni_for`]: crate::sni_for

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use eastwall_identity::{SpiffeId, spiffe_id_from_der};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    NoServerSessionStorage, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::{CertError, TrustBundle, crypto_provider};

/// The server side of eastwall mutual TLS: TLS 1.3 only; requires a client certificate that
/// chains to `bundle` at the current time (expired or foreign-CA certificates are refused) and
/// whose SPIFFE ID is in the bundle's trust domain; presents the certificate `certs` resolves;
/// offers the `alpn` protocols.
pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
) -> Result<ServerConfig, CertError> {
    server_config_with(certs, bundle, alpn, true)
}

/// [`server_config`], except that a client may come without a certificate (one that sends
/// one is verified the same way): for an endpoint where such a client proves itself
/// otherwise (the CA's enrollment, by a bootstrap token). The handler must tell the two apart.
pub fn server_config_certificate_optional(
    certs: Arc<dyn ResolvesServerCert>,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
) -> Result<ServerConfig, CertError> {
    server_config_with(certs, bundle, alpn, false)
}

fn server_config_with(
    certs: Arc<dyn ResolvesServerCert>,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
    mandatory: bool,
) -> Result<ServerConfig, CertError> {
    let provider = crypto_provider();
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&bundle.roots), provider.clone());
    let builder = if mandatory {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let webpki = builder
        .build()
        .map_err(|e| CertError::Tls(rustls::Error::General(e.to_string())))?;
    let verifier = Arc::new(SpiffeClientVerifier {
        webpki,
        trust_domain: bundle.trust_domain().to_owned(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No resumption: a resumed session would carry a client identity proven earlier.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The client side of eastwall mutual TLS: TLS 1.3 only; presents the certificate `client`
/// resolves; accepts the server only if its chain leads to `bundle` at the current time and
/// its SPIFFE ID is `expected_server`. Connect with `sni_for(&expected_server)` as the server
/// name so that a node holding several identities presents the right one.
pub fn client_config(
    client: Arc<dyn ResolvesClientCert>,
    bundle: &TrustBundle,
    expected_server: SpiffeId,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CertError> {
    client_config_with(Some(client), bundle, expected_server, alpn)
}

/// [`client_config`] for a client that has no certificate yet (a node enrolling with a
/// bootstrap token): the server is verified the same way.
pub fn client_config_without_certificate(
    bundle: &TrustBundle,
    expected_server: SpiffeId,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CertError> {
    client_config_with(None, bundle, expected_server, alpn)
}

fn client_config_with(
    client: Option<Arc<dyn ResolvesClientCert>>,
    bundle: &TrustBundle,
    expected_server: SpiffeId,
    alpn: &[&[u8]],
) -> Result<ClientConfig, CertError> {
    let provider = crypto_provider();
    let verifier = Arc::new(SpiffeServerVerifier {
        roots: Arc::clone(&bundle.roots),
        expected: expected_server,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(client) => builder.with_client_cert_resolver(client),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The SPIFFE ID of a verified peer, from the chain it presented (end-entity first), e.g.
/// `ServerConnection::peer_certificates()`.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Result<SpiffeId, CertError> {
    let leaf = chain.first().ok_or(CertError::NoCertificate)?;
    Ok(spiffe_id_from_der(leaf)?)
}

/// A refusal that rustls carries in `CertificateError::Other`; rustls prints it with `Debug`,
/// so `Debug` shows the message.
struct Refusal(CertError);

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Refusal {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

fn refuse(e: CertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(e)))))
}

/// webpki client verification, then the SPIFFE ID's trust domain.
#[derive(Debug)]
struct SpiffeClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = spiffe_id_from_der(end_entity).map_err(|e| refuse(e.into()))?;
        if id.trust_domain() != self.trust_domain {
            return Err(refuse(CertError::ForeignTrustDomain {
                id,
                trust_domain: self.trust_domain.clone(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// webpki chain verification without a DNS name check, then the expected SPIFFE ID.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = spiffe_id_from_der(end_entity).map_err(|e| refuse(e.into()))?;
        if presented != self.expected {
            return Err(refuse(CertError::UnexpectedPeer {
                expected: self.expected.clone(),
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, Identity, IdentitySet, Issued, RotatingIdentity, sni_for};
    use rustls::{ClientConnection, ServerConnection};
    use std::io::{Read, Write};
    use std::time::{Duration, SystemTime};

    const DAY: Duration = Duration::from_secs(86_400);
    const ALPN: &[&[u8]] = &[b"eastwall-test"];

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn identity(issued: &Issued) -> Identity {
        Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap()
    }

    fn issue(ca: &Ca, s: &str) -> Identity {
        identity(&ca.issue(&id(s), DAY).unwrap())
    }

    fn expired(ca: &Ca, s: &str) -> Identity {
        let now = SystemTime::now();
        identity(
            &ca.issue_with_validity(&id(s), now - 2 * DAY, now - DAY)
                .unwrap(),
        )
    }

    /// What each side's handshake ended with.
    struct Outcome {
        client: Result<ClientConnection, rustls::Error>,
        server: Result<ServerConnection, rustls::Error>,
    }

    impl Outcome {
        fn ok(self) -> (ClientConnection, ServerConnection) {
            (self.client.unwrap(), self.server.unwrap())
        }
    }

    /// Runs a handshake in memory, pumping bytes both ways until neither side has anything to
    /// send; a side that fails still sends its alert.
    fn handshake(client: ClientConfig, server: ServerConfig, sni: &str) -> Outcome {
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        let (mut c_err, mut s_err) = (None, None);
        for _ in 0..20 {
            let mut moved = false;
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() && s_err.is_none() {
                moved = true;
                let mut rd = &buf[..];
                while !rd.is_empty() && s_err.is_none() {
                    s.read_tls(&mut rd).unwrap();
                    s_err = s.process_new_packets().err();
                }
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() && c_err.is_none() {
                moved = true;
                let mut rd = &buf[..];
                while !rd.is_empty() && c_err.is_none() {
                    c.read_tls(&mut rd).unwrap();
                    c_err = c.process_new_packets().err();
                }
            }
            if !moved {
                break;
            }
        }
        Outcome {
            client: match c_err {
                Some(e) => Err(e),
                None if c.is_handshaking() => Err(rustls::Error::General("stalled".into())),
                None => Ok(c),
            },
            server: match s_err {
                Some(e) => Err(e),
                None if s.is_handshaking() => Err(rustls::Error::General("stalled".into())),
                None => Ok(s),
            },
        }
    }

    /// A trust domain with a CA, its bundle, and configs for given identities.
    struct Domain {
        ca: Ca,
        bundle: TrustBundle,
    }

    impl Domain {
        fn new(td: &str) -> Domain {
            let ca = Ca::generate(td, DAY).unwrap();
            let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();
            Domain { ca, bundle }
        }

        fn server(&self, certs: Arc<dyn ResolvesServerCert>) -> ServerConfig {
            server_config(certs, &self.bundle, ALPN).unwrap()
        }

        fn client(&self, me: Identity, expected: &str) -> ClientConfig {
            client_config(RotatingIdentity::new(me), &self.bundle, id(expected), ALPN).unwrap()
        }
    }

    /// An enterprise PKI made with openssl (`scripts/openssl-pki.sh`): a root and an issuing
    /// CA without any SPIFFE URI, and leaf certificates that carry one; its folder goes on
    /// drop.
    struct OpensslPki {
        dir: std::path::PathBuf,
    }

    impl Drop for OpensslPki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl OpensslPki {
        fn script(&self, args: &[&str]) {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/openssl-pki.sh");
            let out = std::process::Command::new("bash")
                .arg(script)
                .arg(&self.dir)
                .args(args)
                .output()
                .expect("bash");
            assert!(
                out.status.success(),
                "openssl-pki.sh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.join(name)).unwrap()
        }

        fn new() -> OpensslPki {
            let dir = std::env::temp_dir().join(format!(
                "eastwall-openssl-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let pki = OpensslPki { dir };
            pki.script(&["init"]);
            pki
        }

        /// A certificate for `san` from the issuing CA: its chain (leaf first) and key.
        fn leaf(&self, name: &str, san: &str) -> (String, String) {
            self.script(&["leaf", name, san]);
            (
                self.read(&format!("{name}.crt")),
                self.read(&format!("{name}.key")),
            )
        }
    }

    /// Certificates of an ordinary enterprise PKI (openssl, no SPIFFE URI on its CAs): the
    /// trust domain comes from the configuration, and the leaves must still carry a SPIFFE
    /// ID of it.
    #[test]
    fn an_enterprise_pki_without_spiffe_uris_on_its_cas_is_trusted_for_the_configured_domain() {
        let pki = OpensslPki::new();
        let root = pki.read("root.pem");
        // Without a configured trust domain, a CA must name its own.
        assert!(matches!(
            TrustBundle::from_pem(&root),
            Err(CertError::Identity(
                eastwall_identity::CertIdentityError::NoUriSan
            ))
        ));
        let bundle = TrustBundle::for_trust_domain(&root, "corp.example").unwrap();
        assert_eq!(bundle.trust_domain(), "corp.example");
        let (server_chain, server_key) = pki.leaf("finance-api", &format!("URI:{SERVER}"));
        let (client_chain, client_key) = pki.leaf("finance-desktop", &format!("URI:{CLIENT}"));
        let server_id = Identity::from_pem(&server_chain, &server_key).unwrap();
        let client_id = Identity::from_pem(&client_chain, &client_key).unwrap();
        let server =
            server_config(RotatingIdentity::new(server_id.clone()), &bundle, ALPN).unwrap();
        let client =
            client_config(RotatingIdentity::new(client_id), &bundle, id(SERVER), ALPN).unwrap();
        let (c, s) = handshake(client, server, &sni_for(&id(SERVER))).ok();
        assert_eq!(
            peer_identity(s.peer_certificates().unwrap()).unwrap(),
            id(CLIENT)
        );
        assert_eq!(
            peer_identity(c.peer_certificates().unwrap()).unwrap(),
            id(SERVER)
        );

        // A leaf of the same PKI for another trust domain is refused.
        let (other_chain, other_key) =
            pki.leaf("intruder", "URI:spiffe://other.example/wl/finance-desktop");
        let other = Identity::from_pem(&other_chain, &other_key).unwrap();
        let server = server_config(RotatingIdentity::new(server_id), &bundle, ALPN).unwrap();
        let client =
            client_config(RotatingIdentity::new(other), &bundle, id(SERVER), ALPN).unwrap();
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        let refusal = out.server.unwrap_err().to_string();
        assert!(
            refusal.contains("not in trust domain corp.example"),
            "{refusal}"
        );
        // A leaf without a SPIFFE ID is no workload identity at all.
        let (plain_chain, plain_key) = pki.leaf("www", "DNS:www.corp.example");
        assert!(Identity::from_pem(&plain_chain, &plain_key).is_err());
        // A bundle holding a leaf, or an eastwall CA of another trust domain, is refused.
        let leaf = pki.read("www.leaf.pem");
        assert!(matches!(
            TrustBundle::for_trust_domain(&format!("{root}{leaf}"), "corp.example"),
            Err(CertError::NotCaSubject(s)) if s.contains("www")
        ));
        let foreign = Ca::generate("other.example", DAY).unwrap();
        assert!(matches!(
            TrustBundle::for_trust_domain(&format!("{root}{}", foreign.cert_pem()), "corp.example"),
            Err(CertError::ForeignTrustDomain { .. })
        ));
        assert!(matches!(
            TrustBundle::for_trust_domain(&root, "Not A Domain"),
            Err(CertError::InvalidTrustDomain { .. })
        ));
    }

    /// The same PKI's root published as a SPIFFE bundle (JSON, as SPIRE serves one), beside
    /// a JWT-SVID key: read by `TrustBundle::read` as the PEM file is.
    #[test]
    fn a_spiffe_bundle_in_json_is_a_trust_bundle() {
        use base64::Engine;
        let pki = OpensslPki::new();
        let root = crate::identity::certs_from_pem(&pki.read("root.pem")).unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(root[0].as_ref());
        let json = format!(
            r#"{{"keys": [{{"use": "jwt-svid", "kty": "EC", "kid": "j1", "crv": "P-256", "x": "AA", "y": "AA"}},
                          {{"use": "x509-svid", "kty": "EC", "crv": "P-256", "x5c": ["{x5c}"]}}],
                "spiffe_sequence": 3}}"#
        );
        let bundle = TrustBundle::read(&json, "corp.example").unwrap();
        assert_eq!(bundle.trust_domain(), "corp.example");
        let (server_chain, server_key) = pki.leaf("finance-api", &format!("URI:{SERVER}"));
        let (client_chain, client_key) = pki.leaf("finance-desktop", &format!("URI:{CLIENT}"));
        let server = server_config(
            RotatingIdentity::new(Identity::from_pem(&server_chain, &server_key).unwrap()),
            &bundle,
            ALPN,
        )
        .unwrap();
        let client = client_config(
            RotatingIdentity::new(Identity::from_pem(&client_chain, &client_key).unwrap()),
            &bundle,
            id(SERVER),
            ALPN,
        )
        .unwrap();
        let (_, s) = handshake(client, server, &sni_for(&id(SERVER))).ok();
        assert_eq!(
            peer_identity(s.peer_certificates().unwrap()).unwrap(),
            id(CLIENT)
        );
        // The same text as PEM reads the same; a JSON bundle of another domain's CA does not.
        assert!(TrustBundle::read(&pki.read("root.pem"), "corp.example").is_ok());
        let foreign = Ca::generate("other.example", DAY).unwrap();
        let der = crate::identity::certs_from_pem(foreign.cert_pem()).unwrap();
        let json = format!(
            r#"{{"keys": [{{"use": "x509-svid", "x5c": ["{}"]}}]}}"#,
            base64::engine::general_purpose::STANDARD.encode(der[0].as_ref())
        );
        assert!(matches!(
            TrustBundle::read(&json, "corp.example"),
            Err(CertError::ForeignTrustDomain { .. })
        ));
    }

    /// A client without a certificate is refused by the ordinary server and let in by the
    /// certificate-optional one, which still verifies a client that sends one.
    #[test]
    fn a_certificate_optional_server_lets_anonymous_clients_in_and_still_verifies_the_others() {
        let d = Domain::new("corp.example");
        let own = || RotatingIdentity::new(issue(&d.ca, SERVER));
        let anonymous = || client_config_without_certificate(&d.bundle, id(SERVER), ALPN).unwrap();
        let sni = sni_for(&id(SERVER));
        assert!(
            handshake(anonymous(), d.server(own()), &sni)
                .server
                .is_err()
        );
        let optional = || server_config_certificate_optional(own(), &d.bundle, ALPN).unwrap();
        let (c, s) = handshake(anonymous(), optional(), &sni).ok();
        assert!(s.peer_certificates().is_none());
        assert_eq!(
            peer_identity(c.peer_certificates().unwrap()).unwrap(),
            id(SERVER)
        );
        let (_, s) = handshake(d.client(issue(&d.ca, CLIENT), SERVER), optional(), &sni).ok();
        assert_eq!(
            peer_identity(s.peer_certificates().unwrap()).unwrap(),
            id(CLIENT)
        );
        let rogue = Domain::new("corp.example");
        let out = handshake(d.client(issue(&rogue.ca, CLIENT), SERVER), optional(), &sni);
        assert!(
            out.server.is_err(),
            "a certificate of another CA is still refused"
        );
    }

    const CLIENT: &str = "spiffe://corp.example/wl/finance-desktop";
    const SERVER: &str = "spiffe://corp.example/wl/finance-api";

    #[test]
    fn mutual_handshake_learns_client_identity() {
        let d = Domain::new("corp.example");
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let client = d.client(issue(&d.ca, CLIENT), SERVER);
        let (mut c, mut s) = handshake(client, server, &sni_for(&id(SERVER))).ok();

        let client_id = peer_identity(s.peer_certificates().unwrap()).unwrap();
        assert_eq!(client_id, id(CLIENT));
        let server_id = peer_identity(c.peer_certificates().unwrap()).unwrap();
        assert_eq!(server_id, id(SERVER));
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(c.alpn_protocol(), Some(&b"eastwall-test"[..]));
        assert_eq!(
            c.negotiated_key_exchange_group().map(|g| g.name()),
            Some(rustls::NamedGroup::X25519MLKEM768)
        );

        // Application data flows.
        c.writer().write_all(b"hello").unwrap();
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut got = [0u8; 5];
        s.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    #[test]
    fn identity_set_presents_the_identity_named_by_sni() {
        let d = Domain::new("corp.example");
        let set = IdentitySet::new();
        let a = "spiffe://corp.example/wl/a";
        let b = "spiffe://corp.example/wl/b";
        set.insert(issue(&d.ca, a));
        set.insert(issue(&d.ca, b));
        for want in [a, b] {
            let server = d.server(set.clone());
            let client = d.client(issue(&d.ca, CLIENT), want);
            let (c, _) = handshake(client, server, &sni_for(&id(want))).ok();
            assert_eq!(
                peer_identity(c.peer_certificates().unwrap()).unwrap(),
                id(want)
            );
        }
        // Unknown SNI: the server has no certificate and the handshake fails.
        let unknown = "spiffe://corp.example/wl/c";
        let out = handshake(
            d.client(issue(&d.ca, CLIENT), unknown),
            d.server(set.clone()),
            &sni_for(&id(unknown)),
        );
        assert!(out.server.is_err() && out.client.is_err());
        // Removed identities are no longer served.
        set.remove(&id(a));
        let out = handshake(
            d.client(issue(&d.ca, CLIENT), a),
            d.server(set),
            &sni_for(&id(a)),
        );
        assert!(out.client.is_err());
    }

    #[test]
    fn refuses_client_of_foreign_ca() {
        let d = Domain::new("corp.example");
        // Same trust domain name, but a CA the server does not trust.
        let rogue = Domain::new("corp.example");
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let client = client_config(
            RotatingIdentity::new(issue(&rogue.ca, CLIENT)),
            &d.bundle,
            id(SERVER),
            ALPN,
        )
        .unwrap();
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        let err = out.server.err().unwrap();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                )
            ),
            "{err}"
        );
        assert!(out.client.is_err());

        // A CA with another name: no issuer is found at all.
        let evil = Domain::new("evil.example");
        let forged = identity(&evil.ca.issue_unchecked(&id(CLIENT), DAY));
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let out = handshake(d.client(forged, SERVER), server, &sni_for(&id(SERVER)));
        let err = out.server.err().unwrap();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_expired_client() {
        let d = Domain::new("corp.example");
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let client = d.client(expired(&d.ca, CLIENT), SERVER);
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        let err = out.server.err().unwrap();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_expired_server() {
        let d = Domain::new("corp.example");
        let server = d.server(RotatingIdentity::new(expired(&d.ca, SERVER)));
        let client = d.client(issue(&d.ca, CLIENT), SERVER);
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        let err = out.client.err().unwrap();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err}"
        );
        assert!(out.server.is_err());
    }

    #[test]
    fn refuses_server_of_foreign_ca() {
        let d = Domain::new("corp.example");
        let rogue = Domain::new("corp.example");
        let server = rogue.server(RotatingIdentity::new(issue(&rogue.ca, SERVER)));
        let client = d.client(issue(&d.ca, CLIENT), SERVER);
        let err = handshake(client, server, &sni_for(&id(SERVER)))
            .client
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                )
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_unexpected_server_identity() {
        let d = Domain::new("corp.example");
        let impostor = "spiffe://corp.example/wl/hr-api";
        let server = d.server(RotatingIdentity::new(issue(&d.ca, impostor)));
        let client = d.client(issue(&d.ca, CLIENT), SERVER);
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        let msg = out.client.err().unwrap().to_string();
        assert!(msg.contains(SERVER), "{msg}");
        assert!(msg.contains(impostor), "{msg}");
        assert!(msg.contains("expected"), "{msg}");
        assert!(out.server.is_err());
    }

    #[test]
    fn refuses_client_of_another_trust_domain() {
        let d = Domain::new("corp.example");
        // Chains to the trusted CA, but names another trust domain.
        let stray = identity(
            &d.ca
                .issue_unchecked(&id("spiffe://other.example/wl/x"), DAY),
        );
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let client = d.client(stray, SERVER);
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        let msg = out.server.err().unwrap().to_string();
        assert!(msg.contains("spiffe://other.example/wl/x"), "{msg}");
        assert!(msg.contains("corp.example"), "{msg}");

        // A client whose bundle is another trust domain's refuses our server, too.
        let other = Domain::new("other.example");
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let client = client_config(
            RotatingIdentity::new(issue(&other.ca, "spiffe://other.example/wl/y")),
            &other.bundle,
            id(SERVER),
            ALPN,
        )
        .unwrap();
        let out = handshake(client, server, &sni_for(&id(SERVER)));
        assert!(out.client.is_err() && out.server.is_err());
    }

    #[test]
    fn rotation_changes_the_next_handshake_only() {
        let d = Domain::new("corp.example");
        let first = issue(&d.ca, CLIENT);
        let first_leaf = first.certified_key().cert[0].clone();
        let rotating = RotatingIdentity::new(first);
        let server_identity = RotatingIdentity::new(issue(&d.ca, SERVER));
        let client = || client_config(rotating.clone(), &d.bundle, id(SERVER), ALPN).unwrap();
        let (_c1, s1) = handshake(
            client(),
            d.server(server_identity.clone()),
            &sni_for(&id(SERVER)),
        )
        .ok();
        assert_eq!(s1.peer_certificates().unwrap()[0], first_leaf);

        let second = issue(&d.ca, CLIENT);
        let second_leaf = second.certified_key().cert[0].clone();
        rotating.set(second);
        assert_eq!(rotating.current().certified_key().cert[0], second_leaf);
        let (_c2, s2) = handshake(client(), d.server(server_identity), &sni_for(&id(SERVER))).ok();
        assert_eq!(s2.peer_certificates().unwrap()[0], second_leaf);
        // The established connection keeps the identity it proved.
        assert_eq!(s1.peer_certificates().unwrap()[0], first_leaf);
    }

    #[test]
    fn full_chain_from_pem_verifies() {
        // An identity loaded with its chain (leaf + CA) still verifies.
        let d = Domain::new("corp.example");
        let issued = d.ca.issue(&id(CLIENT), DAY).unwrap();
        let chain = format!("{}{}", issued.cert_pem, d.ca.cert_pem());
        let me = Identity::from_pem(&chain, &issued.key_pem).unwrap();
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let (_, s) = handshake(d.client(me, SERVER), server, &sni_for(&id(SERVER))).ok();
        assert_eq!(
            peer_identity(s.peer_certificates().unwrap()).unwrap(),
            id(CLIENT)
        );
    }

    #[test]
    fn refuses_tls12() {
        let d = Domain::new("corp.example");
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let verifier = Arc::new(SpiffeServerVerifier {
            roots: Arc::clone(&d.bundle.roots),
            expected: id(SERVER),
            algorithms: crypto_provider().signature_verification_algorithms,
        });
        let tls12_client = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(RotatingIdentity::new(issue(&d.ca, CLIENT)));
        let out = handshake(tls12_client, server, &sni_for(&id(SERVER)));
        let err = out.server.err().unwrap();
        assert!(matches!(err, rustls::Error::PeerIncompatible(_)), "{err:?}");
    }

    #[test]
    fn configs_convert_to_quinn() {
        let d = Domain::new("corp.example");
        let server = d.server(RotatingIdentity::new(issue(&d.ca, SERVER)));
        let client = d.client(issue(&d.ca, CLIENT), SERVER);
        quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server)).unwrap();
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client)).unwrap();
    }

    #[test]
    fn peer_identity_refusals() {
        assert!(matches!(peer_identity(&[]), Err(CertError::NoCertificate)));
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            peer_identity(&[junk]),
            Err(CertError::Identity(_))
        ));
    }
}
