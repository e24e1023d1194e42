//! The destination side of the tunnel, as far as the transports go: each transport accepts
//! connections, proves the peer's identity (its verified certificate), reads each stream's
//! header, and hands the stream to an [`Acceptor`]. What to do with it (check, decide,
//! connect, relay) is the acceptor's business: the transports know nothing of policy.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eastwall_identity::SpiffeId;
use eastwall_wire::header::{Status, StreamHeader};

use crate::relay::{Abort, Sink, Source};

/// How long a peer may take to send a stream's header (QUIC) or to complete its TLS and
/// HTTP/2 handshakes (HTTP/2).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the destination knows of the tunnel connection a stream arrived on.
#[derive(Debug)]
pub(crate) struct PeerConn {
    /// The other node's address.
    pub(crate) remote: SocketAddr,
    /// The identity its certificate proved.
    pub(crate) id: SpiffeId,
    /// The TLS server name the client asked for (the identity it expects this node to prove).
    pub(crate) asked: Option<String>,
    /// `quic` or `h2`.
    pub(crate) transport: &'static str,
}

/// The destination's side of one stream, whatever the transport.
pub(crate) trait ServerStream: Send {
    /// Bytes from the source workload.
    type Recv: Source + Send;
    /// Bytes to the source workload.
    type Send: Sink + Abort + Send;
    /// Both directions as one byte stream (for the HTTP layer).
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The bytes from the source, readable before answering (to detect their protocol).
    fn recv_mut(&mut self) -> &mut Self::Recv;
    /// Answers with a refusal and ends the stream.
    async fn refuse(self, status: Status, why: &str);
    /// Answers "connected"; returns the halves for the relay.
    async fn connected(self) -> io::Result<(Self::Recv, Self::Send)>;
    /// The halves as one byte stream.
    fn into_io(recv: Self::Recv, send: Self::Send) -> Self::Io;
}

/// What a node does with the streams its tunnel accepts (transport `S`).
pub(crate) trait Acceptor<S: ServerStream>: Send + Sync + 'static {
    /// Serves one stream whose header has been read (or could not be: `Err(why)`); `early`
    /// is the workload's bytes that arrived behind the header.
    fn stream(
        &self,
        stream: S,
        header: Result<StreamHeader, String>,
        early: Bytes,
        peer: Arc<PeerConn>,
    ) -> impl Future<Output = ()> + Send;

    /// A peer whose handshake failed (foreign CA, expired certificate, ...).
    fn handshake_refused(&self, transport: &'static str, remote: SocketAddr, why: &str);
}
