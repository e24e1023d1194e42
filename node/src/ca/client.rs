//! The client side of `eastwall ca serve`'s protocol: for an identity, a new P-256 key and a
//! signing request (the key never leaves the node), POSTed over mutual TLS with the node's
//! certificate to a server that must prove `spiffe://<td>/ca` with a chain to the trust
//! bundle. The node's renewals of its workloads' certificates are built on it.

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
use rustls::pki_types::ServerName;
use tracing::warn;

use super::server::{ALPN, MAX_BODY, SIGN_PATH};
use super::{ca_server_id, node_id};
use crate::config::CaClientSpec;

/// Longest one signing request may take, connection and handshake included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
