//! The destination side of the tunnel: accept QUIC connections from other nodes, learn the
//! source's identity from its verified certificate, and serve each stream as one connection
//! to a local workload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use eastwall_identity::SpiffeId;
use quinn::{Connection, RecvStream, SendStream};
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};

use super::header::{Decoded, HeaderError, MAX_HEADER, Response, Status, StreamHeader};
use crate::capture::socket;
use crate::flow::{Direction, EndpointInfo, FlowRecord, PolicyInfo, TunnelInfo};
use crate::metrics::DirLabels;
use crate::proxy::{self, finish};
use crate::state::NodeState;

/// How long a peer may take to send a stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts tunnel connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, state: Arc<NodeState>) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(conn, state).await,
                Err(e) => handshake_refused(&state, remote, &e.to_string()),
            }
        });
    }
}

/// A peer whose handshake failed (foreign CA, expired certificate, ...) leaves a record.
fn handshake_refused(state: &NodeState, remote: SocketAddr, why: &str) {
    debug!(%remote, why, "tunnel handshake refused");
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
        transport: "quic",
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

async fn connection(conn: Connection, state: Arc<NodeState>) {
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
        conn.close(super::code::REFUSED, b"no peer identity");
        return;
    };
    // The identity the client asked this node to prove (by SNI).
    let asked = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name);
    let peer_id = Arc::new(peer_id);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let state = state.clone();
                let peer_id = peer_id.clone();
                let asked = asked.clone();
                tokio::spawn(async move {
                    stream(send, recv, remote, &peer_id, asked.as_deref(), &state).await
                });
            }
            Err(e) => {
                debug!(%remote, %e, "tunnel connection ended");
                return;
            }
        }
    }
}

/// Reads a stream's header; returns it and the workload bytes that came behind it.
async fn read_header(recv: &mut RecvStream) -> Result<(StreamHeader, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 2048];
    loop {
        match StreamHeader::decode(&buf) {
            Ok(Decoded::Done(h, used)) => return Ok((h, buf.split_off(used))),
            Ok(Decoded::NeedMore(n)) if n > MAX_HEADER => {
                return Err(HeaderError::TooLong(n).to_string());
            }
            Ok(Decoded::NeedMore(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = AsyncReadExt::read(recv, &mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(HeaderError::Truncated.to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn stream(
    mut send: SendStream,
    mut recv: RecvStream,
    remote: SocketAddr,
    peer_id: &SpiffeId,
    asked: Option<&str>,
    state: &NodeState,
) {
    let start = Utc::now();
    state
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: "inbound",
        })
        .inc();
    let mut tunnel = TunnelInfo {
        transport: "quic",
        peer: remote.to_string(),
        peer_identity: Some(peer_id.to_string()),
        status: String::new(),
        reason: String::new(),
    };
    let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out waiting for the tunnel header".to_owned()),
    };
    let (header, early) = match header {
        Ok(h) => h,
        Err(why) => {
            // Nothing is known of the connection but the peer: record it against the peer.
            refuse(&mut send, &mut recv, Status::BadHeader, &why).await;
            let unknown = EndpointInfo::of(None);
            let mut rec = FlowRecord::new(
                state.flows.next_id(),
                &state.node_name,
                Direction::Inbound,
                remote,
                SocketAddr::new(remote.ip(), 0),
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
        && asked.is_some_and(|sni| sni != eastwall_certs::sni_for(&w.identity))
    {
        Some((
            Status::UnknownDestination,
            "destination-identity-mismatch".to_owned(),
            format!(
                "this connection was opened for another identity than {}",
                w.identity
            ),
        ))
    } else if src_wl.is_none_or(|w| &w.identity != peer_id) {
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
        refuse(&mut send, &mut recv, status, &why).await;
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
            refuse(&mut send, &mut recv, Status::Unreachable, &why).await;
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
    if let Err(e) = send
        .write_all(
            &Response {
                status: Status::Connected,
                reason: String::new(),
            }
            .encode(),
        )
        .await
    {
        warn!(%e, "tunnel response");
    }
    tunnel.status = Status::Connected.as_str().into();
    rec.eastwall.tunnel = Some(tunnel);
    let mut upstream = upstream;
    let (ur, mut uw) = upstream.split();
    // Bytes that arrived behind the header go to the workload first.
    let mut up0 = 0u64;
    if !early.is_empty() {
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut uw, &early).await {
            socket::reset(upstream);
            let _ = send.reset(super::code::RELAY_ERROR);
            rec.eastwall.error = Some(e.to_string());
            finish(state, &mut rec, start, "closed", "error", true);
            return;
        }
        up0 = early.len() as u64;
    }
    // Here the "client" is the tunnel stream and the "server" the local workload.
    let (up, down, err) =
        proxy::relay_counted(state, "inbound", &mut recv, &mut send, ur, uw).await;
    if err.is_some() {
        socket::reset(upstream);
        let _ = send.reset(super::code::RELAY_ERROR);
        let _ = recv.stop(super::code::RELAY_ERROR);
    }
    rec.flow.bytes_toserver = up + up0;
    rec.flow.bytes_toclient = down;
    let reason = match err {
        None => "shutdown",
        Some(e) => {
            rec.eastwall.error = Some(e.to_string());
            "error"
        }
    };
    finish(state, &mut rec, start, "closed", reason, true);
}

async fn refuse(send: &mut SendStream, recv: &mut RecvStream, status: Status, why: &str) {
    let _ = send
        .write_all(
            &Response {
                status,
                reason: why.to_owned(),
            }
            .encode(),
        )
        .await;
    let _ = send.finish();
    let _ = recv.stop(super::code::REFUSED);
}
