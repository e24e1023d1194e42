//! The node's client of `eastwall ca serve`: obtains a certificate for each local workload
//! identity, and renews each at half its lifetime.
//!
//! For every identity the node makes a new P-256 key and a signing request (the key never
//! leaves the node) and POSTs the request over mutual TLS, presenting its node certificate and
//! accepting only a server that proves `spiffe://<td>/ca` with a chain to the trust bundle.
//!
//! Rotation: one task per identity sleeps until [`next_renewal`], renews and swaps the new
//! certificate in ([`LocalIdentities::replace`]: new handshakes use it, established connections
//! keep theirs). A failure is retried after [`backoff`] (1 s doubling to 60 s) while the
//! current certificate keeps serving; `eastwall_cert_renewals_total{result}` counts outcomes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use eastwall_certs::{Identity, RotatingIdentity, TrustBundle, generate_csr, sni_for};
use eastwall_identity::SpiffeId;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::pki_types::ServerName;
use tracing::{info, warn};

use super::server::{ALPN, MAX_BODY, SIGN_PATH};
use super::{ca_server_id, node_id};
use crate::config::CaClientSpec;
use crate::identity::LocalIdentities;
use crate::metrics::RenewalLabels;

/// Longest one signing request may take, connection and handshake included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to obtain each certificate at start before the node gives up.
pub const START_ATTEMPTS: u32 = 5;
/// Shortest wait between renewals, whatever the certificate says.
const MIN_RENEWAL_WAIT: Duration = Duration::from_millis(500);

/// Where the CA service is.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    /// Path of the signing endpoint (the URL's path, then `/v1/sign`).
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("CA URL {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("CA URL {url:?} must start with https://");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("CA URL {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let base = uri.path().trim_end_matches('/');
        Ok(Endpoint {
            host,
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            path: format!("{base}{SIGN_PATH}"),
        })
    }
}

/// The node's client of the CA service.
#[derive(Debug)]
pub struct CaClient {
    endpoint: Endpoint,
    bundle: TrustBundle,
    server_id: SpiffeId,
    node_id: SpiffeId,
    node_cert: PathBuf,
    node_key: PathBuf,
    cert_secs: Option<u64>,
    mark: Option<u32>,
}

impl CaClient {
    /// A client for node `node_name` as configured by `spec`; its connections carry `mark`
    /// (the node's own mark, so they are never captured). Checks the node certificate now.
    pub fn new(
        spec: &CaClientSpec,
        bundle: TrustBundle,
        node_name: &str,
        mark: Option<u32>,
    ) -> anyhow::Result<CaClient> {
        let client = CaClient {
            endpoint: Endpoint::parse(&spec.url)?,
            server_id: ca_server_id(bundle.trust_domain())?,
            node_id: node_id(bundle.trust_domain(), node_name)?,
            bundle,
            node_cert: spec.node_cert.clone(),
            node_key: spec.node_key.clone(),
            cert_secs: spec.cert_secs,
            mark,
        };
        let ident = client.node_identity()?;
        if ident.not_after < SystemTime::now() {
            warn!(node_cert = %client.node_cert.display(), "the node certificate has expired; the CA will refuse it");
        }
        Ok(client)
    }

    /// The node certificate, read from its files now (so it can be replaced in place).
    fn node_identity(&self) -> anyhow::Result<Identity> {
        let cert = std::fs::read_to_string(&self.node_cert)
            .with_context(|| format!("node certificate: reading {}", self.node_cert.display()))?;
        let key = std::fs::read_to_string(&self.node_key)
            .with_context(|| format!("node key: reading {}", self.node_key.display()))?;
        let ident = Identity::from_pem(&cert, &key).map_err(|e| {
            anyhow::anyhow!(
                "{} / {}: {e}",
                self.node_cert.display(),
                self.node_key.display()
            )
        })?;
        if ident.id != self.node_id {
            bail!(
                "{} holds {}, but this node is {}",
                self.node_cert.display(),
                ident.id,
                self.node_id
            );
        }
        Ok(ident)
    }

    /// Obtains a certificate for `id` with a new key: returns the certificate and key, PEM.
    pub async fn sign(&self, id: &SpiffeId) -> anyhow::Result<(String, String)> {
        let (csr, key) = generate_csr(id).map_err(|e| anyhow::anyhow!("{e}"))?;
        let node = self.node_identity()?;
        let (status, body) = request(
            &self.endpoint,
            node,
            &self.bundle,
            &self.server_id,
            &csr,
            self.cert_secs,
            self.mark,
        )
        .await?;
        if status != 200 {
            bail!(
                "the CA at {} answered {status}: {}",
                self.endpoint.authority,
                body.trim()
            );
        }
        Ok((body, key))
    }
}

/// POSTs `csr_pem` to the CA service at `url` (`https://HOST:PORT`) presenting `client`, and
/// returns the HTTP status and body. The server must prove `spiffe://<td>/ca` with a chain to
/// `bundle`. `cert_secs` asks for a shorter lifetime than the CA's default; `mark` sets
/// `SO_MARK` on the connection. For the node and for tests of the CA's authorization.
pub async fn post_csr(
    url: &str,
    client: Identity,
    bundle: &TrustBundle,
    csr_pem: &str,
    cert_secs: Option<u64>,
    mark: Option<u32>,
) -> anyhow::Result<(u16, String)> {
    let endpoint = Endpoint::parse(url)?;
    let server_id = ca_server_id(bundle.trust_domain())?;
    request(
        &endpoint, client, bundle, &server_id, csr_pem, cert_secs, mark,
    )
    .await
}

async fn request(
    endpoint: &Endpoint,
    client: Identity,
    bundle: &TrustBundle,
    server_id: &SpiffeId,
    csr_pem: &str,
    cert_secs: Option<u64>,
    mark: Option<u32>,
) -> anyhow::Result<(u16, String)> {
    let config = eastwall_certs::client_config(
        RotatingIdentity::new(client),
        bundle,
        server_id.clone(),
        &[ALPN],
    )
    .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let path = match cert_secs {
        Some(s) => format!("{}?certSecs={s}", endpoint.path),
        None => endpoint.path.clone(),
    };
    let req = Request::post(path)
        .header(hyper::header::HOST, &endpoint.authority)
        .header(hyper::header::CONTENT_TYPE, "application/pkcs10")
        .body(Full::new(Bytes::from(csr_pem.to_owned())))?;
    let sni = ServerName::try_from(sni_for(server_id))?;
    let ep = endpoint.clone();
    let exchange = async move {
        let tcp = connect(&ep.host, ep.port, mark).await?;
        let tls = connector
            .connect(sni, tcp)
            .await
            .with_context(|| format!("TLS with the CA at {}", ep.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let conn = tokio::spawn(conn);
        let result = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the CA's answer: {e}"))?
                .to_bytes();
            let body = String::from_utf8(body.to_vec())
                .map_err(|_| anyhow::anyhow!("the CA's answer is not UTF-8"))?;
            anyhow::Ok((status, body))
        }
        .await;
        conn.abort();
        result
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the CA at {} did not answer within {} s",
                endpoint.authority,
                REQUEST_TIMEOUT.as_secs()
            )
        })?
}

async fn connect(
    host: &str,
    port: u16,
    mark: Option<u32>,
) -> anyhow::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
    {
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(m) = mark {
            socket2::SockRef::from(&sock)
                .set_mark(m)
                .context("setting SO_MARK on the CA connection")?;
        }
        match sock.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(anyhow::anyhow!("connecting to the CA at {addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{host} resolves to no address")))
}

/// Obtains a certificate for each of `ids` at start, trying each up to [`START_ATTEMPTS`] times
/// (0.25 s, then doubling, between attempts). Returns `(id, cert PEM, key PEM)` for all.
pub async fn obtain_all(
    client: &CaClient,
    ids: &[SpiffeId],
) -> anyhow::Result<Vec<(SpiffeId, String, String)>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut wait = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match client.sign(id).await {
                Ok((cert, key)) => {
                    info!(%id, "obtained certificate from the CA");
                    out.push((id.clone(), cert, key));
                    break;
                }
                Err(e) if attempt < START_ATTEMPTS => {
                    warn!(%id, attempt, "obtaining certificate: {e:#}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "could not obtain a certificate for {id} from the CA ({START_ATTEMPTS} attempts)"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// When to renew `identity`, received (installed) at `received`: half-way through the
/// lifetime that was left when it arrived, and never before [`Identity::renew_at`]. (The CA
/// back-dates `not_before` by five minutes for clock skew, so for short lifetimes `renew_at`
/// alone would already have passed.)
pub fn next_renewal(identity: &Identity, received: SystemTime) -> SystemTime {
    let left = identity
        .not_after
        .duration_since(received)
        .unwrap_or_default();
    (received + left / 2).max(identity.renew_at())
}

/// How long to wait after the `failures`-th consecutive failed renewal: 1 s, doubling, at most
/// 60 s.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_secs(secs.min(60))
}

/// Keeps identity `id` of `identities` renewed from the CA, forever (abort the task to stop).
pub async fn rotate(
    client: Arc<CaClient>,
    identities: Arc<LocalIdentities>,
    id: SpiffeId,
    renewals: Family<RenewalLabels, Counter>,
) {
    let Some(current) = identities.client(&id) else {
        warn!(%id, "no certificate to renew");
        return;
    };
    let mut received = SystemTime::now();
    loop {
        let cert = current.current();
        let at = next_renewal(&cert, received);
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(MIN_RENEWAL_WAIT);
        tokio::time::sleep(wait).await;
        let mut failures = 0u32;
        loop {
            let result = match client.sign(&id).await {
                Ok((c, k)) => identities.replace(&id, &c, &k),
                Err(e) => Err(e),
            };
            match result {
                Ok(new) => {
                    renewals
                        .get_or_create(&RenewalLabels { result: "ok" })
                        .inc();
                    received = SystemTime::now();
                    info!(%id, not_after = ?new.not_after, "certificate renewed");
                    break;
                }
                Err(e) => {
                    failures += 1;
                    renewals
                        .get_or_create(&RenewalLabels { result: "error" })
                        .inc();
                    let retry = backoff(failures);
                    let old = current.current();
                    let expired = old.not_after <= SystemTime::now();
                    warn!(
                        %id,
                        failures,
                        not_after = ?old.not_after,
                        expired,
                        "renewal failed: {e:#}; the current certificate stays in use; retrying in {} s",
                        retry.as_secs()
                    );
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eastwall_certs::Ca;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    #[test]
    fn renewal_at_half_the_remaining_lifetime() {
        let ca = Ca::generate("corp.example", Duration::from_secs(3600)).unwrap();
        let id = SpiffeId::parse("spiffe://corp.example/wl/a").unwrap();
        let issued = ca.issue(&id, Duration::from_secs(4)).unwrap();
        let ident = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        let now = SystemTime::now();
        let at = next_renewal(&ident, now);
        // not_after is whole seconds: 3-4 s away; renew at half of that.
        let d = at.duration_since(now).unwrap();
        assert!(
            d >= Duration::from_millis(1400) && d <= Duration::from_secs(2),
            "{d:?}"
        );
        // A long lifetime: the certificate's own half-life is the later one... or close to it.
        let issued = ca.issue(&id, Duration::from_secs(86_400)).unwrap();
        let ident = Identity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
        let at = next_renewal(&ident, now);
        assert!(at >= ident.renew_at());
        assert!(at.duration_since(now).unwrap() >= Duration::from_secs(43_000));
    }

    #[test]
    fn endpoint_urls() {
        let e = Endpoint::parse("https://10.77.0.1:15009").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.77.0.1", 15009));
        assert_eq!(e.path, "/v1/sign");
        let e = Endpoint::parse("https://[::1]:9/base/").unwrap();
        assert_eq!((e.host.as_str(), e.path.as_str()), ("::1", "/base/v1/sign"));
        assert_eq!(Endpoint::parse("https://ca.example").unwrap().port, 443);
        assert!(Endpoint::parse("http://10.0.0.1:1").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
