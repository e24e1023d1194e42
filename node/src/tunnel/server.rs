//! The destination side of the tunnel, whatever the transport: each stream is one connection
//! to a local workload. The transport proves the source's identity (its verified certificate)
//! and delivers the stream's header; here the node checks the destination is its own, that
//! the proven identity owns the claimed source address, decides, connects to the workload
//! from the source's address, and relays.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use eastwall_identity::SpiffeId;
use tracing::debug;

use super::header::{Status, StreamHeader};
use crate::capture::socket;
use crate::flow::{Direction, EndpointInfo, FlowRecord, PolicyInfo, TunnelInfo};
use crate::metrics::DirLabels;
use crate::proxy::{self, finish};
use crate::relay::{Abort, Sink, Source};
use crate::state::NodeState;

/// How long a peer may take to send a stream's header (QUIC) or to complete its TLS and
/// HTTP/2 handshakes (HTTP/2).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the destination knows of the tunnel connection a stream arrived on.
pub(crate) struct PeerConn {
    /// The other node's address.
    pub(crate) remote: SocketAddr,
    /// The identity its certificate proved.
    pub(crate) id: Arc<SpiffeId>,
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

/// A tunnel stream as the client side of an inspected connection.
struct TunnelDownstream<T>(T);

impl<T: ServerStream> crate::l7::Downstream for TunnelDownstream<T> {
    type Recv = T::Recv;
    type Send = T::Send;
    type Io = T::Io;

    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        let mut hint = 16 * 1024;
        self.0.recv_mut().next(&mut hint).await
    }
    async fn refuse(self, status: Status, why: &str) {
        self.0.refuse(status, why).await
    }
    async fn accept_raw(self) -> io::Result<(T::Recv, T::Send)> {
        self.0.connected().await
    }
    async fn accept_io(self) -> io::Result<T::Io> {
        let (recv, send) = self.0.connected().await?;
        Ok(T::into_io(recv, send))
    }
}

/// A peer whose handshake failed (foreign CA, expired certificate, ...) leaves a record.
pub(crate) fn handshake_refused(
    state: &NodeState,
    transport: &'static str,
    remote: SocketAddr,
    why: &str,
) {
    debug!(%remote, why, transport, "tunnel handshake refused");
    state.metrics.tunnel_handshake_failures.inc();
    let start = Utc::now();
    let unknown = EndpointInfo::of(None);
    let mut rec = FlowRecord::new(
        state.flows.next_id(),
        &state.node_name,
        Direction::Inbound,
        remote,
        SocketAddr::new(remote.ip(), 0),
        unknown.clone(),
        unknown,
        PolicyInfo::denied_because("tunnel-handshake-refused"),
        start,
    );
    rec.eastwall.tunnel = Some(TunnelInfo {
        transport,
        peer: remote.to_string(),
        peer_identity: None,
        status: "handshake-failed".into(),
        reason: why.to_owned(),
    });
    finish(
        state,
        &mut rec,
        start,
        "rejected",
        "tunnel-handshake-refused",
        false,
    );
}

/// Serves one stream whose header has been read (or could not be: `Err(why)`); `early` is
/// the workload's bytes that arrived behind the header.
pub(crate) async fn serve_stream<T: ServerStream>(
    stream: T,
    header: Result<StreamHeader, String>,
    early: Bytes,
    peer: &PeerConn,
    state: &Arc<NodeState>,
) {
    let start = Utc::now();
    let peer_id = &*peer.id;
    state
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: "inbound",
        })
        .inc();
    let mut tunnel = TunnelInfo {
        transport: peer.transport,
        peer: peer.remote.to_string(),
        peer_identity: Some(peer_id.to_string()),
        status: String::new(),
        reason: String::new(),
    };
    let header = match header {
        Ok(h) => h,
        Err(why) => {
            // Nothing is known of the connection but the peer: record it against the peer.
            stream.refuse(Status::BadHeader, &why).await;
            let unknown = EndpointInfo::of(None);
            let mut rec = FlowRecord::new(
                state.flows.next_id(),
                &state.node_name,
                Direction::Inbound,
                peer.remote,
                SocketAddr::new(peer.remote.ip(), 0),
                EndpointInfo {
                    identity: Some(peer_id.to_string()),
                    ..unknown.clone()
                },
                unknown,
                PolicyInfo::denied_because("bad-tunnel-header"),
                start,
            );
            tunnel.status = Status::BadHeader.as_str().into();
            tunnel.reason = why;
            rec.eastwall.tunnel = Some(tunnel);
            finish(
                state,
                &mut rec,
                start,
                "rejected",
                "bad-tunnel-header",
                false,
            );
            return;
        }
    };
    let rules = state.rules();
    let registry = &rules.registry;
    let src_wl = registry.workload_by_addr(header.src.ip());
    let dst_wl = registry.workload_by_addr(header.dst.ip());
    let mut src_info = EndpointInfo::of(src_wl);
    // What the certificate proved, whatever the registry expected.
    src_info.identity = Some(peer_id.to_string());
    src_info.user = peer_id.user().map(str::to_owned);
    let local_dst = dst_wl.filter(|w| w.node == state.node_name);
    let dst_id = dst_wl.map(|w| w.identity.clone());

    let refusal = if local_dst.is_none() {
        Some((
            Status::UnknownDestination,
            "destination-not-hosted".to_owned(),
            format!(
                "{} is not a workload of node {}",
                header.dst, state.node_name
            ),
        ))
    } else if let Some(w) = local_dst
        && peer
            .asked
            .as_deref()
            .is_some_and(|sni| sni != eastwall_certs::sni_for(&w.identity))
    {
        Some((
            Status::UnknownDestination,
            "destination-identity-mismatch".to_owned(),
            format!(
                "this connection was opened for another identity than {}",
                w.identity
            ),
        ))
    } else if src_wl.is_none_or(|w| !w.owns_identity(peer_id)) {
        let claimed = src_wl.map_or("no workload".to_owned(), |w| {
            format!("{} ({})", w.name, w.identity)
        });
        Some((
            Status::IdentityMismatch,
            "identity-mismatch".to_owned(),
            format!(
                "peer proved {peer_id} but claims source {} which belongs to {claimed}",
                header.src.ip()
            ),
        ))
    } else {
        None
    };
    let (policy, src_groups, dst_groups) = match &refusal {
        Some((_, code, _)) => (PolicyInfo::denied_because(code), None, None),
        None => {
            let d = proxy::decide(
                state,
                Direction::Inbound,
                (header.src, src_wl, Some(peer_id)),
                (header.dst, dst_wl, dst_wl.map(|w| &w.identity)),
                eastwall_policy::L7::Unknown,
            )
            .await;
            (d.policy, d.src_groups, d.dst_groups)
        }
    };
    let mut rec = FlowRecord::new(
        state.flows.next_id(),
        &state.node_name,
        Direction::Inbound,
        header.src,
        header.dst,
        src_info.with_groups(src_groups),
        EndpointInfo::of(dst_wl).with_groups(dst_groups),
        policy,
        start,
    );
    drop(rules);
    let (status, why) = match refusal {
        Some((status, _, why)) => (Some(status), why),
        None if rec.eastwall.policy.verdict != "allow" => (
            Some(Status::Denied),
            format!("denied by rule {}", rec.eastwall.policy.rule),
        ),
        None => (None, String::new()),
    };
    if let Some(status) = status {
        stream.refuse(status, &why).await;
        tunnel.status = status.as_str().into();
        tunnel.reason = why;
        rec.eastwall.tunnel = Some(tunnel);
        state
            .metrics
            .denied
            .get_or_create(&crate::metrics::RuleLabels {
                direction: "inbound",
                rule: rec.eastwall.policy.rule.clone(),
                mode: "enforce",
                action: "deny",
            })
            .inc();
        finish(state, &mut rec, start, "rejected", "denied", false);
        return;
    }

    if rec.eastwall.policy.l7_pending {
        // Rules with L7 conditions apply: decide per request (handshake, stream) here.
        let conn = crate::l7::Conn {
            ends: crate::live::Decided {
                direction: Direction::Inbound,
                src: header.src,
                src_id: Some(peer_id.clone()),
                dst: header.dst,
                dst_id,
                inspected: true,
            },
            upstream: header.dst,
        };
        let done = crate::l7::serve(TunnelDownstream(stream), early, conn, state, &mut rec).await;
        let status = match done.refused {
            Some(("rejected", _)) => Status::Denied,
            Some(("failed", _)) => Status::Unreachable,
            _ => Status::Connected,
        };
        tunnel.status = status.as_str().into();
        if status == Status::Denied {
            tunnel.reason = format!("denied by rule {}", rec.eastwall.policy.rule);
        }
        rec.eastwall.tunnel = Some(tunnel);
        crate::l7::finish(state, &mut rec, start, done);
        return;
    }
    let timeout = Duration::from_secs(state.capture.connect_timeout_secs);
    let upstream = match socket::connect_spoofed(
        Some(header.src.ip()),
        header.dst,
        state.capture.own_mark,
        timeout,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let why = format!("connecting to {}: {e}", header.dst);
            stream.refuse(Status::Unreachable, &why).await;
            state
                .metrics
                .upstream_errors
                .get_or_create(&DirLabels {
                    direction: "inbound",
                })
                .inc();
            tunnel.status = Status::Unreachable.as_str().into();
            tunnel.reason = why.clone();
            rec.eastwall.tunnel = Some(tunnel);
            rec.eastwall.error = Some(why);
            finish(state, &mut rec, start, "failed", "upstream-error", true);
            return;
        }
    };
    let (mut recv, mut send) = match stream.connected().await {
        Ok(halves) => halves,
        Err(e) => {
            socket::reset(upstream);
            tunnel.status = "stream-failed".into();
            tunnel.reason = e.to_string();
            rec.eastwall.tunnel = Some(tunnel);
            rec.eastwall.error = Some(e.to_string());
            finish(state, &mut rec, start, "closed", "error", true);
            return;
        }
    };
    tunnel.status = Status::Connected.as_str().into();
    rec.eastwall.tunnel = Some(tunnel);
    let live = state.live.register(crate::live::Decided {
        direction: Direction::Inbound,
        src: header.src,
        src_id: Some(peer_id.clone()),
        dst: header.dst,
        dst_id,
        inspected: false,
    });
    let mut upstream = upstream;
    let (ur, mut uw) = upstream.split();
    let ids = proxy::ids_for(
        state,
        &rec,
        header.src,
        header.dst,
        eastwall_ids::AppProto::Unknown,
    );
    // Bytes that arrived behind the header go to the workload first (through the IDS).
    let up0 = early.len() as u64;
    if let Some(ids) = &ids
        && !early.is_empty()
    {
        let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
        let v = f
            .inspector()
            .stream(eastwall_ids::Dir::ToServer, &early, crate::ids::now());
        if let Err(b) = f.apply(state, v) {
            drop(f);
            socket::reset(upstream);
            send.abort();
            rec.with_ids(Some(crate::ids::close(state, ids)));
            proxy::closed(
                state,
                &mut rec,
                start,
                0,
                0,
                proxy::RelayEnd::Blocked(crate::ids::blocked_error(b).to_string()),
            );
            return;
        }
    }
    if !early.is_empty()
        && let Err(e) = uw.put(early).await
    {
        socket::reset(upstream);
        send.abort();
        rec.eastwall.error = Some(e.to_string());
        finish(state, &mut rec, start, "closed", "error", true);
        return;
    }
    // Here the "client" is the tunnel stream and the "server" the local workload.
    let (up, down, end, ids) =
        proxy::relay_inspected(state, "inbound", &live, ids, &mut recv, &mut send, ur, uw).await;
    if end.is_abrupt() {
        socket::reset(upstream);
        send.abort();
    }
    rec.with_ids(ids);
    proxy::closed(state, &mut rec, start, up + up0, down, end);
}
