//! The tunnel entry point: each stream the tunnel accepted is one connection to a local
//! workload, from a peer whose identity its certificate proved. Here it becomes two ends,
//! is planned (is the destination hosted here, was the connection opened for it, does the
//! proven identity own the source address, what does the policy say), and is refused with a
//! tunnel answer or carried (through the L7 layer when L7 rules apply).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use eastwall_policy::Protocol;
use eastwall_wire::eve::{self, Direction, TunnelInfo, TunnelStatus};
use eastwall_wire::header::{Status, StreamHeader, StreamKind};
use tracing::debug;

use crate::conn::carry::{Downstream, Prelude};
use crate::conn::record::{FlowGuard, policy_info};
use crate::conn::{DenyReason, Ending, Entry, Outcome, Pipeline, Plan, at_start, identify};
use crate::relay::{Activity, CapsuleSink, CapsuleSource, Prefixed, Source as _};
use crate::telemetry::metrics::DirLabels;
use crate::tunnel::h2::H2Stream;
use crate::tunnel::quic::QuicStream;
use crate::tunnel::server::{Acceptor, PeerConn, ServerStream};

/// The node's side of its tunnel servers: what to do with the streams they accept.
pub(crate) struct TunnelFront {
    /// The connection pipeline.
    pub(crate) pipeline: Arc<Pipeline>,
}

// One impl per transport, both serving through `serve_stream`: with the stream type
// concrete, the compiler can check that the stream's future is `Send` for the spawn.
impl Acceptor<QuicStream> for TunnelFront {
    fn stream(
        &self,
        stream: QuicStream,
        header: Result<StreamHeader, String>,
        early: Bytes,
        peer: Arc<PeerConn>,
    ) -> impl Future<Output = ()> + Send {
        serve_stream(stream, header, early, peer, &self.pipeline)
    }

    fn handshake_refused(&self, transport: &'static str, remote: SocketAddr, why: &str) {
        handshake_refused(&self.pipeline, transport, remote, why);
    }
}

impl Acceptor<H2Stream> for TunnelFront {
    fn stream(
        &self,
        stream: H2Stream,
        header: Result<StreamHeader, String>,
        early: Bytes,
        peer: Arc<PeerConn>,
    ) -> impl Future<Output = ()> + Send {
        serve_stream(stream, header, early, peer, &self.pipeline)
    }

    fn handshake_refused(&self, transport: &'static str, remote: SocketAddr, why: &str) {
        handshake_refused(&self.pipeline, transport, remote, why);
    }
}

/// How a tunnel stream was answered, for its record.
type Answer = Arc<Mutex<Option<(TunnelStatus, String)>>>;

/// A tunnel stream as the client side of a carried connection; it remembers its answer.
struct TunnelDownstream<T> {
    stream: T,
    answer: Answer,
}

/// Remembers how a stream was answered.
fn answered(answer: &Answer, status: TunnelStatus, why: &str) {
    *answer.lock().unwrap_or_else(|p| p.into_inner()) = Some((status, why.to_owned()));
}

impl<T: ServerStream> Downstream for TunnelDownstream<T> {
    type Recv = T::Recv;
    type Send = T::Send;
    type Io = T::Io;

    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        let mut hint = 16 * 1024;
        self.stream.recv_mut().next(&mut hint).await
    }
    async fn refuse(self, status: Status, why: &str) {
        answered(&self.answer, TunnelStatus::Answered(status), why);
        self.stream.refuse(status, why).await
    }
    async fn accept_raw(self) -> io::Result<(T::Recv, T::Send)> {
        let r = self.stream.connected().await;
        match &r {
            Ok(_) => answered(&self.answer, TunnelStatus::Answered(Status::Connected), ""),
            Err(e) => answered(&self.answer, TunnelStatus::StreamFailed, &e.to_string()),
        }
        r
    }
    async fn accept_io(self) -> io::Result<T::Io> {
        let (recv, send) = self.accept_raw().await?;
        Ok(T::into_io(recv, send))
    }
}

/// Serves one stream whose header has been read (or could not be: `Err(why)`); `early` is
/// the workload's bytes that arrived behind the header.
async fn serve_stream<T: ServerStream>(
    stream: T,
    header: Result<StreamHeader, String>,
    early: Bytes,
    peer: Arc<PeerConn>,
    pipeline: &Arc<Pipeline>,
) {
    let accepted_at = SystemTime::now();
    let telemetry = &pipeline.telemetry;
    telemetry
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: Direction::Inbound.as_str(),
        })
        .inc();
    let tunnel = |status: TunnelStatus, reason: String| TunnelInfo {
        transport: peer.transport,
        peer: peer.remote.to_string(),
        peer_identity: Some(peer.id.to_string()),
        status,
        reason,
    };
    let header = match header {
        Ok(h) => h,
        Err(why) => {
            // Nothing is known of the connection but the peer: record it against the peer.
            stream.refuse(Status::BadHeader, &why).await;
            let reason = DenyReason::BadTunnelHeader;
            let mut guard = FlowGuard::at(
                telemetry,
                &pipeline.here.node,
                Direction::Inbound,
                (
                    peer.remote,
                    eve::Endpoint {
                        identity: Some(peer.id.to_string()),
                        ..eve::Endpoint::default()
                    },
                ),
                (
                    SocketAddr::new(peer.remote.ip(), 0),
                    eve::Endpoint::default(),
                ),
                policy_info(&Plan::refuse(reason.clone(), None)),
            );
            guard.tunnel = Some(tunnel(TunnelStatus::Answered(Status::BadHeader), why));
            guard.finish(Outcome::Refused(reason));
            return;
        }
    };
    let rules = pipeline.rules();
    let here = &pipeline.here;
    let entry = Entry::Tunnel {
        peer: peer.id.clone(),
        asked: peer.asked.clone(),
    };
    let proto = match header.kind {
        StreamKind::Tcp => Protocol::Tcp,
        StreamKind::Udp => Protocol::Udp,
    };
    let mut ends = identify(&rules, here, (entry, proto), header.src, header.dst, None);
    pipeline.fill_groups(&mut ends).await;
    let plan = pipeline.plan(&ends, at_start(proto));
    let mut guard = FlowGuard::new(telemetry, &here.node, &rules, &ends, &plan).since(accepted_at);
    drop(rules);
    let answer = Answer::default();
    let down = TunnelDownstream {
        stream,
        answer: answer.clone(),
    };
    // Held until the connection ends.
    let slot = match plan.denial() {
        None => Some(pipeline.room_for(&ends, &mut guard)),
        Some(_) => None,
    };
    let outcome = if let Some(reason) = plan.denial() {
        down.refuse(reason.tunnel_status(), &plan.refusal_words())
            .await;
        Outcome::Refused(reason.clone())
    } else if let Some(Err(reason)) = &slot {
        let words = guard.error.clone().unwrap_or_default();
        down.refuse(reason.tunnel_status(), &words).await;
        Outcome::Refused(reason.clone())
    } else if header.kind == StreamKind::Udp {
        // A UDP session to a local workload: datagrams in capsules on the stream.
        match down.accept_raw().await {
            Err(e) => Outcome::Ended(Ending::Failed(e.to_string())),
            Ok((recv, send)) => {
                let recv = Prefixed {
                    early: Some(early),
                    inner: recv,
                };
                let client = (CapsuleSource::new(recv), CapsuleSink(send));
                let activity = Activity::default();
                let idle = (pipeline.udp.idle_for(header.dst.port()), &activity);
                // Boxed, as L7: a UDP session's state is larger than a TCP relay's, and every
                // stream's task would otherwise keep room for it.
                if plan.inspects_here() {
                    Box::pin(crate::l7::dns::serve_udp(
                        client, &ends, pipeline, idle, &mut guard,
                    ))
                    .await
                } else {
                    let profile = (false, plan.ids_profile());
                    Box::pin(
                        pipeline
                            .carrier
                            .udp_direct(client, &ends, idle, profile, &mut guard),
                    )
                    .await
                }
            }
        }
    } else if plan.inspects_here() {
        // Rules with L7 conditions apply: decide per request (handshake, stream) here.
        // Boxed: the L7 layer's state is large, and only its connections need room for it.
        Box::pin(crate::l7::serve(down, early, &ends, pipeline, &mut guard)).await
    } else {
        let prelude = Prelude {
            bytes: early,
            tls: false,
        };
        let profile = plan.ids_profile();
        pipeline
            .carrier
            .direct(down, &ends, profile, prelude, false, &mut guard)
            .await
    };
    let (status, reason) = answer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or((TunnelStatus::StreamFailed, String::new()));
    guard.tunnel = Some(tunnel(status, reason));
    guard.finish(outcome);
}

/// A peer whose handshake failed (foreign CA, expired certificate, ...) leaves a record.
fn handshake_refused(pipeline: &Pipeline, transport: &'static str, remote: SocketAddr, why: &str) {
    debug!(%remote, why, transport, "tunnel handshake refused");
    let telemetry = &pipeline.telemetry;
    telemetry.metrics.tunnel_handshake_failures.inc();
    let reason = DenyReason::TunnelHandshakeRefused;
    let mut guard = FlowGuard::at(
        telemetry,
        &pipeline.here.node,
        Direction::Inbound,
        (remote, eve::Endpoint::default()),
        (SocketAddr::new(remote.ip(), 0), eve::Endpoint::default()),
        policy_info(&Plan::refuse(reason.clone(), None)),
    );
    guard.tunnel = Some(TunnelInfo {
        transport,
        peer: remote.to_string(),
        peer_identity: None,
        status: TunnelStatus::HandshakeFailed,
        reason: why.to_owned(),
    });
    guard.finish(Outcome::Refused(reason));
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::front::future_size::of5 as size5;

    /// As for captured connections (`front::capture` tests): a stream the tunnel accepted is
    /// one task for as long as the connection lives, at most 4 KiB at L4 on either transport.
    #[test]
    fn a_tunnel_stream_holds_at_most_4_kib_while_relaying() {
        let h2 = size5::<H2Stream, _, _, _, &'static Arc<Pipeline>, _>(serve_stream);
        let quic = size5::<QuicStream, _, _, _, &'static Arc<Pipeline>, _>(serve_stream);
        eprintln!("tunnel stream task: {h2} bytes over HTTP/2, {quic} over QUIC");
        assert!(h2 <= 4096, "HTTP/2 stream task: {h2} bytes");
        assert!(quic <= 4096, "QUIC stream task: {quic} bytes");
    }
}
