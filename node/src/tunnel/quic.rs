//! The QUIC transport (quinn) on UDP: one bidirectional stream per workload connection,
//! opened with the binary [`header`](super::header).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use quinn::{Connection, EndpointConfig, RecvStream, SendStream, TransportConfig, VarInt};
use tracing::debug;

use eastwall_wire::header::{
    ALPN, Decoded, HeaderError, MAX_HEADER, Response, Status, StreamHeader,
};

use super::code;
use super::pool::{Connector, OpenError, PoolKey};
use super::server::{Acceptor, HEADER_TIMEOUT, PeerConn, ServerStream};
use crate::identity::LocalIdentities;
use crate::relay::{Abort, MAX_READ, Prefixed, Sink, Source, grow};

/// How often an idle tunnel connection proves its peer is there.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_millis(500);

/// Silence after which a tunnel connection is taken for dead.
pub(crate) const IDLE_TIMEOUT_MS: u32 = 2_000;

/// Transport settings sized for bulk transfer on a LAN and many concurrent streams.
pub(crate) fn transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(10_000));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    // A peer that restarted cannot answer for the old connection (its stateless-reset key
    // is new), so a dead connection is known only by silence: keep-alives twice a second
    // and 2 s of silence end it, and the pool dials afresh.
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(VarInt::from_u32(IDLE_TIMEOUT_MS).into()));
    Arc::new(t)
}

impl Source for quinn::RecvStream {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        // Wait for data holding no buffer; quinn hands over its own chunks (about a packet
        // each), which are gathered, as far as they have already arrived, into one write.
        let Some(first) = self.read_chunk(MAX_READ, true).await? else {
            return Ok(None);
        };
        if first.bytes.len() >= *hint {
            return Ok(Some(first.bytes));
        }
        let mut buf = BytesMut::with_capacity(*hint);
        buf.extend_from_slice(&first.bytes);
        while buf.len() < *hint {
            // Poll once: take what is there, never wait (read_chunk is cancel safe).
            let more = tokio::select! {
                biased;
                r = self.read_chunk(*hint - buf.len(), true) => r?,
                () = std::future::ready(()) => break,
            };
            match more {
                Some(c) => buf.extend_from_slice(&c.bytes),
                // The end of the stream: what was gathered goes out now, and the next call
                // sees the end again.
                None => break,
            }
        }
        grow(hint, buf.len());
        Ok(Some(buf.freeze()))
    }
}

impl Sink for quinn::SendStream {
    async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        // quinn takes the buffer as it is: no copy on this side.
        Ok(self.write_chunk(bytes).await?)
    }
    async fn close(&mut self) -> io::Result<()> {
        self.finish().map_err(io::Error::other)
    }
}

impl Abort for quinn::SendStream {
    fn abort(&mut self) {
        let _ = self.reset(code::RELAY_ERROR);
    }
}

/// Opens the node's QUIC endpoint on `port` (IPv6 socket accepting IPv4 too), serving the
/// local workloads' identities, and usable as a client for the pool.
pub(crate) fn endpoint(
    port: u16,
    identities: &Arc<LocalIdentities>,
    own_mark: u32,
) -> anyhow::Result<quinn::Endpoint> {
    let tls = eastwall_certs::server_config(identities.server.clone(), &identities.bundle, &[ALPN])
        .map_err(|e| anyhow::anyhow!("tunnel TLS server config: {e}"))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
        .context("tunnel QUIC server config")?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config());
    let socket = udp_socket(port, own_mark)?;
    let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
    quinn::Endpoint::new(EndpointConfig::default(), Some(server), socket, runtime)
        .context("tunnel endpoint")
}

fn udp_socket(port: u16, own_mark: u32) -> anyhow::Result<UdpSocket> {
    match udp_socket_in(true, port, own_mark) {
        Ok(s) => Ok(s),
        // A host without IPv6 still gets an IPv4 tunnel.
        Err(_) => udp_socket_in(false, port, own_mark),
    }
}

fn udp_socket_in(v6: bool, port: u16, own_mark: u32) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if v6 {
        s.set_only_v6(false)?;
    }
    // The node's own packets are never captured, even with local-traffic capture on.
    s.set_mark(own_mark)?;
    // Bulk transfer needs room for bursts; the kernel caps these at rmem_max/wmem_max.
    let _ = s.set_recv_buffer_size(8 * 1024 * 1024);
    let _ = s.set_send_buffer_size(8 * 1024 * 1024);
    let any: std::net::IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    s.bind(&SocketAddr::new(any, port).into())
        .with_context(|| format!("binding UDP port {port} for the tunnel"))?;
    Ok(s.into())
}

/// Dials QUIC connections from the node's endpoint.
pub(crate) struct QuicConnector {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) identities: Arc<LocalIdentities>,
    /// How long a handshake may take before the dial counts as failed.
    pub(crate) handshake_timeout: Duration,
}

impl Connector for QuicConnector {
    type Conn = Connection;

    async fn dial(&self, key: &PoolKey) -> Result<Connection, OpenError> {
        let tls = super::pool::client_tls(&self.identities, key, ALPN)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .map_err(|e| OpenError::Config(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(transport_config());
        let sni = eastwall_certs::sni_for(&key.dst);
        let failed = |reason: String| OpenError::Connect {
            node: key.node,
            reason,
        };
        let connecting = self
            .endpoint
            .connect_with(cfg, key.node, &sni)
            .map_err(|e| failed(e.to_string()))?;
        match tokio::time::timeout(self.handshake_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!(
                "no QUIC handshake within {} ms (UDP blocked or node down?)",
                self.handshake_timeout.as_millis()
            ))),
        }
    }

    fn is_open(conn: &Connection) -> bool {
        conn.close_reason().is_none()
    }
}

/// Opens a stream for one workload connection on `conn` and sends its header.
pub(crate) async fn open_stream(
    conn: &Connection,
    key: &PoolKey,
    header: &StreamHeader,
) -> Result<(SendStream, RecvStream), OpenError> {
    let opened = async {
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&header.encode()).await?;
        Ok::<_, Box<dyn std::error::Error>>((send, recv))
    };
    match opened.await {
        Ok(halves) => Ok(halves),
        Err(e) => Err(match handshake_refusal(conn) {
            Some(reason) => OpenError::Connect {
                node: key.node,
                reason,
            },
            None => OpenError::Stream(e.to_string()),
        }),
    }
}

/// Why the peer closed `conn` during the TLS handshake, if it did. With TLS 1.3 the client
/// finishes its handshake before the server has checked the client's certificate, so a
/// refused certificate shows up as the peer closing the connection with a crypto error.
pub(crate) fn handshake_refusal(conn: &Connection) -> Option<String> {
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

/// Reads the destination's response; returns it and the stream, with any of the workload's
/// bytes that arrived behind the response first.
pub(crate) async fn read_response(
    mut recv: RecvStream,
) -> io::Result<(Response, Prefixed<RecvStream>)> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match Response::decode(&buf) {
            Ok(Decoded::Done(r, used)) => {
                let early = Bytes::from(buf.split_off(used));
                return Ok((
                    r,
                    Prefixed {
                        early: Some(early),
                        inner: recv,
                    },
                ));
            }
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        if buf.len() > MAX_HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tunnel response too long",
            ));
        }
        // Chunks as quinn holds them: no read buffer in the connection's task.
        let Some(chunk) = recv.read_chunk(MAX_HEADER, true).await? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tunnel stream ended before the response",
            ));
        };
        buf.extend_from_slice(&chunk.bytes);
    }
}

/// Accepts QUIC tunnel connections until the endpoint closes; each stream goes to `acceptor`.
pub(crate) async fn serve<A: Acceptor<QuicStream>>(endpoint: quinn::Endpoint, acceptor: Arc<A>) {
    while let Some(incoming) = endpoint.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(conn, acceptor).await,
                Err(e) => acceptor.handshake_refused("quic", remote, &e.to_string()),
            }
        });
    }
}

async fn connection<A: Acceptor<QuicStream>>(conn: Connection, acceptor: Arc<A>) {
    let remote = conn.remote_address();
    let peer_id = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| eastwall_certs::peer_identity(&chain).ok());
    let Some(peer_id) = peer_id else {
        // The TLS layer verified a chain, so this cannot happen; refuse rather than guess.
        conn.close(code::REFUSED, b"no peer identity");
        return;
    };
    // The identity the client asked this node to prove (by SNI).
    let asked = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name);
    let peer = Arc::new(PeerConn {
        remote,
        id: peer_id,
        asked,
        transport: "quic",
    });
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let acceptor = acceptor.clone();
                let peer = peer.clone();
                tokio::spawn(async move { stream(send, recv, peer, &*acceptor).await });
            }
            Err(e) => {
                debug!(%remote, %e, "tunnel connection ended");
                return;
            }
        }
    }
}

async fn stream<A: Acceptor<QuicStream>>(
    send: SendStream,
    mut recv: RecvStream,
    peer: Arc<PeerConn>,
    acceptor: &A,
) {
    let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out waiting for the tunnel header".to_owned()),
    };
    let (header, early) = match header {
        Ok((h, early)) => (Ok(h), early),
        Err(e) => (Err(e), Bytes::new()),
    };
    acceptor
        .stream(QuicStream { send, recv }, header, early, peer)
        .await;
}

/// Reads a stream's header; returns it and the workload bytes that came behind it.
async fn read_header(recv: &mut RecvStream) -> Result<(StreamHeader, Bytes), String> {
    let mut buf = Vec::with_capacity(128);
    loop {
        match StreamHeader::decode(&buf) {
            Ok(Decoded::Done(h, used)) => return Ok((h, Bytes::from(buf.split_off(used)))),
            Ok(Decoded::NeedMore(n)) if n > MAX_HEADER => {
                return Err(HeaderError::TooLong(n).to_string());
            }
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let chunk = recv
            .read_chunk(MAX_HEADER, true)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| HeaderError::Truncated.to_string())?;
        buf.extend_from_slice(&chunk.bytes);
    }
}

/// One QUIC stream at the destination.
pub(crate) struct QuicStream {
    send: SendStream,
    recv: RecvStream,
}

impl ServerStream for QuicStream {
    type Recv = RecvStream;
    type Send = SendStream;
    type Io = tokio::io::Join<RecvStream, SendStream>;

    fn recv_mut(&mut self) -> &mut RecvStream {
        &mut self.recv
    }

    fn into_io(recv: RecvStream, send: SendStream) -> Self::Io {
        tokio::io::join(recv, send)
    }

    async fn refuse(mut self, status: Status, why: &str) {
        let _ = self
            .send
            .write_all(
                &Response {
                    status,
                    reason: why.to_owned(),
                }
                .encode(),
            )
            .await;
        let _ = self.send.finish();
        let _ = self.recv.stop(code::REFUSED);
    }

    async fn connected(mut self) -> io::Result<(RecvStream, SendStream)> {
        self.send
            .write_all(
                &Response {
                    status: Status::Connected,
                    reason: String::new(),
                }
                .encode(),
            )
            .await
            .map_err(io::Error::other)?;
        Ok((self.recv, self.send))
    }
}
