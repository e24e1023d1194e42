//! The source side of the tunnel: pooled QUIC connections and opening a stream for one
//! captured connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use eastwall_identity::SpiffeId;
use quinn::{Connection, RecvStream, SendStream};
use tokio::io::AsyncReadExt;

use super::header::{Decoded, MAX_HEADER, Response, StreamHeader};
use super::{ALPN, transport_config};
use crate::identity::LocalIdentities;

/// Which pooled connection a stream rides on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The source workload's identity (the client certificate).
    pub src: SpiffeId,
    /// The destination node's tunnel address.
    pub node: SocketAddr,
    /// The destination workload's identity (what the server must prove).
    pub dst: SpiffeId,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// This node holds no certificate for the source identity.
    #[error("no local certificate for {0}")]
    NoIdentity(SpiffeId),
    /// TLS configuration could not be built.
    #[error("tunnel TLS config: {0}")]
    Config(String),
    /// The QUIC handshake failed (refused certificate, unreachable node, ...).
    #[error("tunnel to {node} failed: {reason}")]
    Connect {
        /// Destination node address.
        node: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// Opening or writing the stream failed.
    #[error("tunnel stream: {0}")]
    Stream(String),
}

/// The pool: at most one live connection per key; concurrent openers wait for one handshake.
pub struct Pool {
    endpoint: quinn::Endpoint,
    dials: prometheus_client::metrics::counter::Counter,
    identities: Arc<LocalIdentities>,
    slots: Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl Pool {
    /// A pool dialing from `endpoint`.
    pub fn new(
        endpoint: quinn::Endpoint,
        identities: Arc<LocalIdentities>,
        dials: prometheus_client::metrics::counter::Counter,
    ) -> Pool {
        Pool {
            endpoint,
            dials,
            identities,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A live connection for `key`, dialing one if needed.
    pub async fn connection(&self, key: &PoolKey) -> Result<Connection, OpenError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let client = self
            .identities
            .client(&key.src)
            .ok_or_else(|| OpenError::NoIdentity(key.src.clone()))?;
        let tls = eastwall_certs::client_config(
            client,
            &self.identities.bundle,
            key.dst.clone(),
            &[ALPN],
        )
        .map_err(|e| OpenError::Config(e.to_string()))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .map_err(|e| OpenError::Config(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(transport_config());
        let sni = eastwall_certs::sni_for(&key.dst);
        self.dials.inc();
        let conn = self
            .endpoint
            .connect_with(cfg, key.node, &sni)
            .map_err(|e| OpenError::Connect {
                node: key.node,
                reason: e.to_string(),
            })?
            .await
            .map_err(|e| OpenError::Connect {
                node: key.node,
                reason: e.to_string(),
            })?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Opens a stream for one connection and sends its header.
    pub async fn open(
        &self,
        key: &PoolKey,
        header: &StreamHeader,
    ) -> Result<(Connection, SendStream, RecvStream), OpenError> {
        let conn = self.connection(key).await?;
        let opened = async {
            let (mut send, recv) = conn.open_bi().await?;
            send.write_all(&header.encode()).await?;
            Ok::<_, Box<dyn std::error::Error>>((send, recv))
        };
        match opened.await {
            Ok((send, recv)) => Ok((conn, send, recv)),
            Err(e) => Err(match handshake_refusal(&conn) {
                Some(reason) => OpenError::Connect {
                    node: key.node,
                    reason,
                },
                None => OpenError::Stream(e.to_string()),
            }),
        }
    }
}

/// Why the peer closed `conn` during the TLS handshake, if it did. With TLS 1.3 the client
/// finishes its handshake before the server has checked the client's certificate, so a
/// refused certificate shows up as the peer closing the connection with a crypto error.
pub fn handshake_refusal(conn: &Connection) -> Option<String> {
    match conn.close_reason()? {
        e @ (quinn::ConnectionError::ConnectionClosed(_)
        | quinn::ConnectionError::TransportError(_))
            if e.to_string().contains("crypto") =>
        {
            Some(e.to_string())
        }
        _ => None,
    }
}

/// Reads the destination's response; returns it and any bytes of the workload's data that
/// arrived behind it.
pub async fn read_response(recv: &mut RecvStream) -> std::io::Result<(Response, Vec<u8>)> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 1024];
    loop {
        match Response::decode(&buf) {
            Ok(Decoded::Done(r, used)) => return Ok((r, buf.split_off(used))),
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if buf.len() > MAX_HEADER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "tunnel response too long",
            ));
        }
        let n = AsyncReadExt::read(recv, &mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "tunnel stream ended before the response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
