//! The identity-bearing tunnel between nodes: QUIC (quinn) on UDP 15008, mutual TLS with
//! the *source workload's* certificate on the client side and the *destination workload's* on
//! the server side, one stream per workload connection, a versioned [`header`] in front of
//! each stream's bytes.
//!
//! - [`pool`]: the source side. One QUIC connection per (source identity, destination node,
//!   destination identity), reused for every connection between them.
//! - [`server`]: the destination side. Takes the source identity from the verified peer
//!   certificate, checks it owns the claimed source address, decides, connects to the local
//!   workload from the source's address, relays.

pub mod header;
pub mod pool;
pub mod server;

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quinn::{EndpointConfig, TransportConfig, VarInt};

use crate::identity::LocalIdentities;

/// ALPN of the tunnel protocol, version 1.
pub const ALPN: &[u8] = b"eastwall-tunnel/1";

/// QUIC application error codes used when refusing a stream or closing a connection.
pub mod code {
    use quinn::VarInt;
    /// Normal close.
    pub const OK: VarInt = VarInt::from_u32(0);
    /// The relay ended with an error.
    pub const RELAY_ERROR: VarInt = VarInt::from_u32(0x10);
    /// The stream was refused (see the response header for why).
    pub const REFUSED: VarInt = VarInt::from_u32(0x11);
}

/// Transport settings sized for bulk transfer on a LAN and many concurrent streams.
pub fn transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(10_000));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t.max_idle_timeout(Some(VarInt::from_u32(60_000).into()));
    Arc::new(t)
}

/// Opens the node's QUIC endpoint on `port` (IPv6 socket accepting IPv4 too), serving the
/// local workloads' identities, and usable as a client for the pool.
pub fn endpoint(
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
