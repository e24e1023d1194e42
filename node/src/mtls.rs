//! Small HTTPS services between eastwall's own parts, with mutual TLS on both sides: the CA
//! service and its clients, the flow collector and the nodes that export to it.
//!
//! - [`Endpoint`]: an `https://HOST:PORT[/base]` URL;
//! - [`request`]: one HTTP/1.1 request presenting a client identity, to a server that must
//!   prove an expected SPIFFE ID with a chain to the trust bundle;
//! - [`serve`]: the accept loop of such a service: a bound on connections, a handshake and a
//!   connection timeout, and each request handed over with the client's proven identity.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use eastwall_certs::{Identity, RotatingIdentity, TrustBundle, peer_identity, sni_for};
use eastwall_identity::SpiffeId;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// The ALPN protocol of these services.
pub const ALPN: &[u8] = b"http/1.1";
/// Longest a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a service is: `https://HOST:PORT` and an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (443 when the URL has none).
    pub port: u16,
    /// `HOST:PORT` as written, for `Host` and messages.
    pub authority: String,
    /// The URL's path without a trailing `/` (`""` for none).
    pub base: String,
}

impl Endpoint {
    /// Parses an `https://` URL.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("URL {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("URL {url:?} must start with https://");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("URL {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Endpoint {
            host,
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            base: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// One request: what to send and what to accept back.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// Path and query, after the endpoint's base path.
    pub path: &'a str,
    /// The body's content type.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
    /// Longest answer read (a longer one is an error).
    pub max_answer: usize,
    /// Longest the whole exchange may take, connection and handshake included.
    pub timeout: Duration,
    /// A bearer token to send (`Authorization: Bearer …`), for a client without a
    /// certificate.
    pub bearer: Option<&'a str>,
}

/// What a server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Sends `call` to `endpoint` presenting `client` (`None`: no certificate, for an endpoint
/// that takes a bearer token instead); the server must prove `server_id` with a chain to
/// `bundle`. `mark` sets `SO_MARK` on the connection (a node's own mark, so that its capture
/// never takes it).
pub async fn request(
    endpoint: &Endpoint,
    client: Option<Identity>,
    bundle: &TrustBundle,
    server_id: &SpiffeId,
    call: Call<'_>,
    mark: Option<u32>,
) -> anyhow::Result<Answer> {
    let config = match client {
        Some(client) => eastwall_certs::client_config(
            RotatingIdentity::new(client),
            bundle,
            server_id.clone(),
            &[ALPN],
        ),
        None => {
            eastwall_certs::client_config_without_certificate(bundle, server_id.clone(), &[ALPN])
        }
    }
    .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut req = Request::builder()
        .method(call.method)
        .uri(format!("{}{}", endpoint.base, call.path))
        .header(hyper::header::HOST, &endpoint.authority)
        .header(hyper::header::CONTENT_TYPE, call.content_type);
    if let Some(token) = call.bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(call.body))?;
    let sni = ServerName::try_from(sni_for(server_id))?;
    let max = call.max_answer;
    let exchange = async move {
        let tcp = connect(&endpoint.host, endpoint.port, mark).await?;
        let tls = connector
            .connect(sni, tcp)
            .await
            .with_context(|| format!("TLS with {} at {}", server_id, endpoint.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let conn = tokio::spawn(conn);
        let result = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer of {}: {e}", endpoint.authority))?
                .to_bytes();
            anyhow::Ok(Answer {
                status,
                headers,
                body,
            })
        }
        .await;
        conn.abort();
        result
    };
    tokio::time::timeout(call.timeout, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} did not answer within {} s",
                endpoint.authority,
                call.timeout.as_secs()
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
                .context("setting SO_MARK")?;
        }
        match sock.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(anyhow::anyhow!("connecting to {addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{host} resolves to no address")))
}

/// The client of one connection: its proven identity (or why it has none) and address.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The SPIFFE ID its certificate proves.
    pub identity: Result<SpiffeId, String>,
    /// Its address.
    pub addr: SocketAddr,
}

/// Serves `listener` until the future is dropped: at most `max_connections` at once (more
/// wait in the accept queue), each living at most `connection_timeout`, every request given
/// to `handle` with its client.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    max_connections: usize,
    connection_timeout: Duration,
    handle: H,
) -> anyhow::Result<()>
where
    H: Fn(Request<Incoming>, Arc<Peer>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = limit.clone().acquire_owned().await?;
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(%e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, handle) = (tls.clone(), handle.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(connection_timeout, connection(tls, tcp, remote, handle))
                .await;
        });
    }
}

async fn connection<H, F>(
    tls: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    handle: H,
) where
    H: Fn(Request<Incoming>, Arc<Peer>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%remote, %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            warn!(%remote, "TLS handshake timed out");
            return;
        }
    };
    // The handshake verified the chain, so the peer has a certificate with one SPIFFE ID of
    // the trust domain; a missing one is refused anyway.
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .ok_or_else(|| "no client certificate".to_owned())
        .and_then(|chain| peer_identity(chain).map_err(|e| e.to_string()));
    let peer = Arc::new(Peer {
        identity,
        addr: remote,
    });
    let svc = hyper::service::service_fn(move |req| {
        let (handle, peer) = (handle.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(req, peer).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await
    {
        debug!(%remote, %e, "connection");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoint_urls() {
        let e = Endpoint::parse("https://10.77.0.1:15009").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base.as_str()),
            ("10.77.0.1", 15009, "")
        );
        let e = Endpoint::parse("https://[::1]:9/base/").unwrap();
        assert_eq!((e.host.as_str(), e.base.as_str()), ("::1", "/base"));
        assert_eq!(Endpoint::parse("https://ca.example").unwrap().port, 443);
        assert!(Endpoint::parse("http://10.0.0.1:1").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
