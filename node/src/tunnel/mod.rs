//! The identity-bearing tunnel between nodes: mutual TLS with the *source workload's*
//! certificate on the client side and the *destination workload's* on the server side, one
//! stream per workload connection, carrying the original destination and source. Two
//! transports sit behind one interface ([`pool::Connector`] for dialing,
//! [`server::ServerStream`] at the destination, [`Tunnel::open`] for the relay):
//!
//! - [`quic`]: QUIC (quinn) on UDP 15008, the stream opened with the binary [`header`].
//! - [`h2`]: HTTP/2 over TLS over TCP 15008, HBONE-shaped CONNECT streams ([`connect`]).
//!
//! [`Tunnel`] picks the transport per destination node (`tunnel.transport`: `quic`, `h2`, or
//! `auto` = HTTP/2, QUIC where TCP to the peer fails); [`pool`] keeps a few connections per (source identity, destination node,
//! destination identity), and [`server`] is the destination side, shared by both.

pub(crate) mod h2;
pub(crate) mod pool;
pub(crate) mod quic;
pub(crate) mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use eastwall_wire::header::StreamHeader;

use self::pool::{Lease, OpenError, Pool, PoolKey, PoolLimits};
use crate::config::TransportMode;
use crate::identity::LocalIdentities;

pub(crate) use self::quic::endpoint;

/// QUIC application error codes used when refusing a stream or closing a connection.
pub(crate) mod code {
    use quinn::VarInt;
    /// The relay ended with an error.
    pub(crate) const RELAY_ERROR: VarInt = VarInt::from_u32(0x10);
    /// The stream was refused (see the response header for why).
    pub(crate) const REFUSED: VarInt = VarInt::from_u32(0x11);
}

/// How long a peer whose preferred transport failed is reached over the other one before the
/// preferred one is tried again (auto mode).
const FALLBACK_RETRY: Duration = Duration::from_secs(60);
/// How long auto mode waits for its preferred transport's handshake before falling back.
const AUTO_HANDSHAKE: Duration = Duration::from_secs(1);

/// A stream opened through the tunnel, with the pooled connection it holds.
pub(crate) enum Opened {
    /// On QUIC.
    Quic {
        /// The connection (held for the stream's lifetime).
        lease: Lease<quinn::Connection>,
        /// To the destination.
        send: quinn::SendStream,
        /// From it; starts with the response header.
        recv: quinn::RecvStream,
    },
    /// On HTTP/2.
    H2 {
        /// The connection (held for the stream's lifetime).
        lease: Lease<h2::H2Conn>,
        /// To the destination.
        send: ::h2::SendStream<Bytes>,
        /// The destination's response and, behind it, its bytes.
        response: ::h2::client::ResponseFuture,
    },
}

impl Opened {
    /// `quic` or `h2`, for records.
    pub(crate) fn transport(&self) -> &'static str {
        match self {
            Opened::Quic { .. } => "quic",
            Opened::H2 { .. } => "h2",
        }
    }
}

/// The source side of the tunnel: both transports' pools and the choice between them.
pub(crate) struct Tunnel {
    mode: TransportMode,
    quic: Pool<quic::QuicConnector>,
    h2: Pool<h2::H2Connector>,
    /// Auto mode: destination nodes whose HTTP/2 connection could not be set up, and until
    /// when they are reached over QUIC.
    h2_down: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Tunnel {
    /// The tunnel's client side: `endpoint` dials QUIC, TCP sockets carry `own_mark`; dials
    /// are counted in `dials`, and `connect_timeout` bounds a handshake (auto mode gives its
    /// preferred transport one second before falling back).
    pub(crate) fn new(
        mode: TransportMode,
        endpoint: quinn::Endpoint,
        identities: Arc<LocalIdentities>,
        own_mark: u32,
        connect_timeout: Duration,
        limits: PoolLimits,
        dials: prometheus_client::metrics::counter::Counter,
    ) -> Tunnel {
        let quic = quic::QuicConnector {
            endpoint,
            identities: identities.clone(),
            handshake_timeout: connect_timeout,
        };
        let h2 = h2::H2Connector {
            identities,
            own_mark,
            handshake_timeout: if mode == TransportMode::Auto {
                AUTO_HANDSHAKE.min(connect_timeout)
            } else {
                connect_timeout
            },
        };
        Tunnel {
            mode,
            quic: Pool::new(quic, limits, dials.clone()),
            h2: Pool::new(h2, limits, dials),
            h2_down: Mutex::new(HashMap::new()),
        }
    }

    /// The configured transport mode.
    pub(crate) fn mode(&self) -> TransportMode {
        self.mode
    }

    /// Opens a stream to `key` for the connection `header` describes. `quic` and `h2` use
    /// that transport. `auto` uses HTTP/2, which measured better than QUIC on every figure
    /// of the benchmark here (`docs/TUNNEL.md`), unless the destination node's HTTP/2
    /// connection could not be set up within the last minute (TCP 15008 blocked, or the
    /// node's TCP listener down); when an HTTP/2 handshake fails or takes over a second, the
    /// connection at hand goes over QUIC. A refused certificate is not retried: the answer
    /// would be the same.
    pub(crate) async fn open(
        &self,
        key: &PoolKey,
        header: &StreamHeader,
    ) -> Result<Opened, OpenError> {
        let use_h2 = match self.mode {
            TransportMode::Quic => false,
            TransportMode::H2 => true,
            TransportMode::Auto => !self.h2_is_down(key.node),
        };
        if use_h2 {
            match self.open_h2(key, header).await {
                Err(e @ OpenError::Connect { .. })
                    if self.mode == TransportMode::Auto && !refused(&e) =>
                {
                    tracing::info!(node = %key.node, %e, "HTTP/2 unavailable; using QUIC for this node");
                    self.h2_down
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.node, Instant::now() + FALLBACK_RETRY);
                }
                other => return other,
            }
        }
        let lease = self.quic.lease(key).await?;
        let (send, recv) = quic::open_stream(&lease.conn, key, header).await?;
        Ok(Opened::Quic { lease, send, recv })
    }

    async fn open_h2(&self, key: &PoolKey, header: &StreamHeader) -> Result<Opened, OpenError> {
        let lease = self.h2.lease(key).await?;
        let (send, response) = h2::open_stream(&lease.conn, key, header).await?;
        Ok(Opened::H2 {
            lease,
            send,
            response,
        })
    }

    fn h2_is_down(&self, node: SocketAddr) -> bool {
        let mut down = self.h2_down.lock().unwrap_or_else(|p| p.into_inner());
        match down.get(&node) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                down.remove(&node);
                false
            }
            None => false,
        }
    }
}

/// Whether the peer refused our identity (TLS alert), which the other transport would not
/// change.
fn refused(e: &OpenError) -> bool {
    matches!(e, OpenError::Connect { reason, .. }
        if reason.contains("crypto") || reason.contains("alert") || reason.contains("certificate"))
}
