//! The client side of `eastwall ca serve`'s protocol: for an identity, a new P-256 key and a
//! signing request (the key never leaves the node), POSTed over mutual TLS with the node's
//! certificate to a server that must prove `spiffe://<td>/ca` with a chain to the trust
//! bundle. The node's renewals of its workloads' certificates are built on it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use eastwall_certs::{Identity, TrustBundle, generate_csr};
use eastwall_identity::SpiffeId;
use hyper::Method;
use tracing::warn;

use super::server::{ENROLL_PATH, MAX_BODY, SIGN_PATH};
use super::{ca_server_id, node_id};
use crate::config::CaClientSpec;
use crate::mtls::{Call, Endpoint};

/// Longest one signing request may take, connection and handshake included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A new node's enrollment: while `spec`'s node certificate does not exist and a bootstrap
/// token is configured, makes a key and a request for `spiffe://<td>/node/<node_name>`,
/// sends it with the token to `POST /v1/enroll` (the CA proving `spiffe://<td>/ca`; this node
/// has no certificate yet) and writes the key (mode 0600) and the certificate to `spec`'s
/// files. Returns whether it enrolled.
pub async fn enroll_if_needed(
    spec: &CaClientSpec,
    bundle: &TrustBundle,
    node_name: &str,
    mark: Option<u32>,
) -> anyhow::Result<bool> {
    let Some(token_file) = &spec.bootstrap_token else {
        return Ok(false);
    };
    if spec.node_cert.exists() {
        return Ok(false);
    }
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("bootstrap token: reading {}", token_file.display()))?;
    let token = token.lines().next().unwrap_or_default().trim();
    let id = node_id(bundle.trust_domain(), node_name)?;
    let (csr, key) = generate_csr(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (status, body) = enroll(&spec.url, bundle, token, &csr, mark).await?;
    if status != 200 {
        bail!(
            "enrolling {id} with the bootstrap token of {}: the CA at {} answered {status}: {}",
            token_file.display(),
            spec.url,
            body.trim()
        );
    }
    Identity::from_pem(&body, &key)
        .map_err(|e| anyhow::anyhow!("the enrolled certificate: {e}"))?;
    for (path, text, mode) in [
        (&spec.node_key, &key, 0o600),
        (&spec.node_cert, &body, 0o644),
    ] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

/// POSTs the node identity request `csr_pem` with bootstrap `token` to the CA service at
/// `url` without a client certificate: the HTTP status and body.
pub async fn enroll(
    url: &str,
    bundle: &TrustBundle,
    token: &str,
    csr_pem: &str,
    mark: Option<u32>,
) -> anyhow::Result<(u16, String)> {
    let endpoint = Endpoint::parse(url)?;
    let server_id = ca_server_id(bundle.trust_domain())?;
    let call = Call {
        method: Method::POST,
        path: ENROLL_PATH,
        content_type: "application/pkcs10",
        body: Bytes::from(csr_pem.to_owned()),
        max_answer: MAX_BODY,
        timeout: REQUEST_TIMEOUT,
        bearer: Some(token),
    };
    let answer = crate::mtls::request(&endpoint, None, bundle, &server_id, call, mark)
        .await
        .with_context(|| format!("the CA at {}", endpoint.authority))?;
    let body = String::from_utf8(answer.body.to_vec())
        .map_err(|_| anyhow::anyhow!("the CA's answer is not UTF-8"))?;
    Ok((answer.status, body))
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
    let path = match cert_secs {
        Some(s) => format!("{SIGN_PATH}?certSecs={s}"),
        None => SIGN_PATH.to_owned(),
    };
    let call = Call {
        method: Method::POST,
        path: &path,
        content_type: "application/pkcs10",
        body: Bytes::from(csr_pem.to_owned()),
        max_answer: MAX_BODY,
        timeout: REQUEST_TIMEOUT,
        bearer: None,
    };
    let answer = crate::mtls::request(endpoint, Some(client), bundle, server_id, call, mark)
        .await
        .with_context(|| format!("the CA at {}", endpoint.authority))?;
    let body = String::from_utf8(answer.body.to_vec())
        .map_err(|_| anyhow::anyhow!("the CA's answer is not UTF-8"))?;
    Ok((answer.status, body))
}
