//! The relay: accept a captured connection, find who is on each end, decide, and either
//! refuse it with a reset, or carry it: through the tunnel when the destination is a
//! workload of another node, otherwise straight to the original destination from the
//! workload's own address. Every connection ends in a flow record.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use eastwall_identity::SpiffeId;
use eastwall_policy::{Endpoint, Flow, L7, Registry, Workload};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::capture::socket;
use crate::flow::{Direction, EndpointInfo, FlowRecord, PolicyInfo, TunnelInfo};
use crate::metrics::{BytesLabels, ClosedLabels, DirLabels, RuleLabels};
use crate::state::NodeState;
use crate::tunnel::header::{Status, StreamHeader};
use crate::tunnel::pool::{self, PoolKey};

/// First read size of a burst; doubled while reads fill it, up to [`MAX_READ`].
const FIRST_READ: usize = 16 * 1024;
/// Largest single read.
const MAX_READ: usize = 64 * 1024;

/// Where a relay reads from. It waits for bytes without holding a buffer, so an idle
/// connection costs no copy buffer; a buffer is taken only for bytes that have arrived.
pub(crate) trait Source {
    /// The next bytes, `None` at the end of the stream; `hint` is the read size to try.
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>>;
}

/// Where a relay writes to.
pub(crate) trait Sink {
    /// Writes all of `bytes`.
    async fn put(&mut self, bytes: Bytes) -> io::Result<()>;
    /// Ends this direction (TCP FIN, QUIC stream FIN).
    async fn close(&mut self) -> io::Result<()>;
}

impl Source for tokio::net::tcp::ReadHalf<'_> {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        loop {
            self.readable().await?;
            let mut buf = BytesMut::with_capacity(*hint);
            match self.try_read_buf(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    if n == *hint {
                        *hint = (*hint * 2).min(MAX_READ);
                    }
                    return Ok(Some(buf.freeze()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Source for &mut quinn::RecvStream {
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
        if buf.len() >= *hint {
            *hint = (*hint * 2).min(MAX_READ);
        }
        Ok(Some(buf.freeze()))
    }
}

impl Sink for tokio::net::tcp::WriteHalf<'_> {
    async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        self.write_all(&bytes).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

impl Sink for &mut quinn::SendStream {
    async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        // quinn takes the buffer as it is: no copy on this side.
        Ok(self.write_chunk(bytes).await?)
    }
    async fn close(&mut self) -> io::Result<()> {
        self.finish().map_err(io::Error::other)
    }
}

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Outbound capture (workload interfaces, local traffic).
    Outbound,
    /// Inbound plaintext capture (for local workloads).
    Inbound,
}

/// Accepts captured connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, kind: Listener, state: Arc<NodeState>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move { handle(stream, peer, kind, &state).await });
            }
            Err(e) => {
                // Running out of descriptors must not end the listener.
                warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where an allowed outbound connection goes.
enum Route {
    /// Straight to the original destination (same host, or outside the mesh).
    Direct,
    /// Through the tunnel to the destination's node.
    Tunnel(PoolKey),
}

async fn handle(client: TcpStream, peer: SocketAddr, kind: Listener, state: &NodeState) {
    let start = Utc::now();
    let direction = if kind == Listener::Inbound {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    // TPROXY keeps the original destination as the accepted socket's local address.
    let orig_dst = match client.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(%e, "captured connection without a local address");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    state
        .metrics
        .opened
        .get_or_create(&DirLabels {
            direction: direction.as_str(),
        })
        .inc();
    let rules = state.rules();
    let registry = &rules.registry;
    let src_wl = registry.workload_by_addr(peer.ip());
    let dst_wl = registry.workload_by_addr(orig_dst.ip());

    let mut route = Route::Direct;
    let mut groups = (None, None);
    let policy = match kind {
        // Outbound capture sees only this host's workloads; anything else is unknown here.
        Listener::Outbound if src_wl.is_none_or(|w| w.node != state.node_name) => {
            PolicyInfo::denied_because("unknown-source")
        }
        // With the tunnel on, mesh workloads reach this host only through it: a plaintext
        // connection claiming a mesh workload's address bypassed (or spoofed) its node.
        Listener::Inbound if state.tunnel.is_some() && src_wl.is_some() => {
            PolicyInfo::denied_because("mesh-source-without-tunnel")
        }
        _ => {
            let src_id = match kind {
                // This node holds the source workload's certificate.
                Listener::Outbound if state.tunnel.is_some() => src_wl.map(|w| &w.identity),
                _ => None,
            };
            let routed = if kind == Listener::Outbound {
                tunnel_route(state, registry, src_wl, dst_wl)
            } else {
                Ok(Route::Direct)
            };
            // A destination identity counts only where it will be proven: by the tunnel's
            // handshake, or because the workload is this node's own.
            let dst_id = match (&routed, dst_wl) {
                (Ok(Route::Tunnel(key)), _) => Some(&key.dst),
                (_, Some(w)) if state.tunnel.is_some() && w.node == state.node_name => {
                    Some(&w.identity)
                }
                _ => None,
            };
            let decided = decide(
                state,
                direction,
                (peer, src_wl, src_id),
                (orig_dst, dst_wl, dst_id),
            )
            .await;
            groups = (decided.src_groups, decided.dst_groups);
            let info = decided.policy;
            match routed {
                Ok(r) => {
                    route = r;
                    info
                }
                Err(reason) if info.verdict == "allow" => {
                    let mut denied = PolicyInfo::denied_because(reason);
                    denied.monitor = info.monitor;
                    denied
                }
                Err(_) => info,
            }
        }
    };
    let mut rec = FlowRecord::new(
        state.flows.next_id(),
        &state.node_name,
        direction,
        peer,
        orig_dst,
        EndpointInfo::of(src_wl).with_groups(groups.0),
        EndpointInfo::of(dst_wl).with_groups(groups.1),
        policy,
        start,
    );
    drop(rules);

    if rec.eastwall.policy.verdict != "allow" {
        debug!(%peer, %orig_dst, rule = %rec.eastwall.policy.rule, "denied");
        socket::reset(client);
        refused(state, &mut rec, start, "denied");
        return;
    }
    match route {
        Route::Direct => relay_direct(client, peer, orig_dst, state, rec, start).await,
        Route::Tunnel(key) => relay_tunnel(client, peer, orig_dst, key, state, rec, start).await,
    }
}

/// An end of a connection as the policy sees it: address, registry workload, and the
/// identity that is (or, before the tunnel's handshake, will be) proven.
pub(crate) type Side<'a> = (SocketAddr, Option<&'a Workload>, Option<&'a SpiffeId>);

/// Decides with the policy in force and counts monitor matches.
pub(crate) async fn decide(
    state: &NodeState,
    direction: Direction,
    src: Side<'_>,
    dst: Side<'_>,
) -> Decided {
    // The user travels in the proven identity (`…/user/<name>/…`); their groups come from
    // the directory, and are unknown without one (then `group` rules cannot match).
    let (src_user, dst_user) = (
        src.2.and_then(SpiffeId::user),
        dst.2.and_then(SpiffeId::user),
    );
    let src_groups = groups_of(state, src_user).await;
    let dst_groups = groups_of(state, dst_user).await;
    let rules = state.rules();
    let decision = rules.policy.decide(&Flow {
        src: Endpoint {
            addr: src.0.ip(),
            workload: src.1,
            identity: src.2,
            user: src_user,
            groups: src_groups.as_deref(),
        },
        dst: Endpoint {
            addr: dst.0.ip(),
            workload: dst.1,
            identity: dst.2,
            user: dst_user,
            groups: dst_groups.as_deref(),
        },
        dst_port: dst.0.port(),
        // Connection time; per-request decisions come with the L7 proxy.
        l7: L7::Unknown,
    });
    let dir = direction.as_str();
    for m in &decision.monitored {
        state
            .metrics
            .decisions
            .get_or_create(&RuleLabels {
                direction: dir,
                rule: m.rule.id.to_string(),
                mode: "monitor",
                action: m.action.as_str(),
            })
            .inc();
    }
    Decided {
        policy: PolicyInfo::of(&decision),
        src_groups,
        dst_groups,
    }
}

/// A decision and the groups it was made with (for the flow record).
pub(crate) struct Decided {
    /// The decision.
    pub(crate) policy: PolicyInfo,
    /// The source user's groups (`None`: no user, or unknown).
    pub(crate) src_groups: Option<Vec<String>>,
    /// The destination user's groups.
    pub(crate) dst_groups: Option<Vec<String>>,
}

async fn groups_of(state: &NodeState, user: Option<&str>) -> Option<Vec<String>> {
    match (user, &state.directory) {
        (Some(u), Some(d)) => d.groups(u).await,
        _ => None,
    }
}

/// Routes an allowed outbound connection: through the tunnel when its destination is a
/// workload of another node and this node runs the tunnel.
fn tunnel_route(
    state: &NodeState,
    registry: &Registry,
    src: Option<&Workload>,
    dst: Option<&Workload>,
) -> Result<Route, &'static str> {
    let (Some(_), Some(src), Some(dst)) = (&state.tunnel, src, dst) else {
        return Ok(Route::Direct);
    };
    if dst.node == state.node_name {
        return Ok(Route::Direct);
    }
    let node = registry
        .node(&dst.node)
        .and_then(|n| n.addresses.first())
        .ok_or("destination-node-has-no-address")?;
    Ok(Route::Tunnel(PoolKey {
        src: src.identity.clone(),
        node: SocketAddr::new(*node, state.tunnel_port),
        dst: dst.identity.clone(),
    }))
}

fn refused(state: &NodeState, rec: &mut FlowRecord, start: DateTime<Utc>, reason: &str) {
    state
        .metrics
        .denied
        .get_or_create(&RuleLabels {
            direction: rec.eastwall.direction.as_str(),
            rule: rec.eastwall.policy.rule.clone(),
            mode: "enforce",
            action: "deny",
        })
        .inc();
    count_decision(state, rec);
    finish(state, rec, start, "rejected", reason, false);
}

fn count_decision(state: &NodeState, rec: &FlowRecord) {
    let p = &rec.eastwall.policy;
    state
        .metrics
        .decisions
        .get_or_create(&RuleLabels {
            direction: rec.eastwall.direction.as_str(),
            rule: p.rule.clone(),
            mode: "enforce",
            action: if p.verdict == "allow" {
                "allow"
            } else {
                "deny"
            },
        })
        .inc();
}

async fn relay_direct(
    client: TcpStream,
    peer: SocketAddr,
    orig_dst: SocketAddr,
    state: &NodeState,
    mut rec: FlowRecord,
    start: DateTime<Utc>,
) {
    count_decision(state, &rec);
    let dir = rec.eastwall.direction.as_str();
    let timeout = Duration::from_secs(state.capture.connect_timeout_secs);
    let upstream =
        match socket::connect_spoofed(Some(peer.ip()), orig_dst, state.capture.own_mark, timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, %orig_dst, %e, "upstream connect failed");
                // Mirror the destination's refusal to the client.
                socket::reset(client);
                state
                    .metrics
                    .upstream_errors
                    .get_or_create(&DirLabels { direction: dir })
                    .inc();
                rec.eastwall.error = Some(format!("connecting to {orig_dst}: {e}"));
                finish(state, &mut rec, start, "failed", "upstream-error", true);
                return;
            }
        };
    let (mut c, mut u) = (client, upstream);
    let (cr, cw) = c.split();
    let (ur, uw) = u.split();
    let (up, down, err) = relay_counted(state, dir, cr, cw, ur, uw).await;
    if err.is_some() {
        socket::reset(c);
        socket::reset(u);
    }
    closed(state, &mut rec, start, up, down, err);
}

async fn relay_tunnel(
    client: TcpStream,
    peer: SocketAddr,
    orig_dst: SocketAddr,
    key: PoolKey,
    state: &NodeState,
    mut rec: FlowRecord,
    start: DateTime<Utc>,
) {
    let Some(pool) = &state.tunnel else { return };
    let dir = rec.eastwall.direction.as_str();
    let mut tunnel = TunnelInfo {
        transport: "quic",
        peer: key.node.to_string(),
        peer_identity: Some(key.dst.to_string()),
        status: String::new(),
        reason: String::new(),
    };
    let header = StreamHeader {
        dst: orig_dst,
        src: peer,
        trace: None,
    };
    let (conn, mut send, mut recv) = match pool.open(&key, &header).await {
        Ok(s) => s,
        Err(e) => {
            let failed_handshake = matches!(
                e,
                pool::OpenError::Connect { .. }
                    | pool::OpenError::NoIdentity(_)
                    | pool::OpenError::Config(_)
            );
            tunnel.status = if failed_handshake {
                "handshake-failed"
            } else {
                "stream-failed"
            }
            .into();
            tunnel.reason = e.to_string();
            rec.eastwall.tunnel = Some(tunnel);
            rec.eastwall.error = Some(e.to_string());
            socket::reset(client);
            state
                .metrics
                .upstream_errors
                .get_or_create(&DirLabels { direction: dir })
                .inc();
            count_decision(state, &rec);
            finish(state, &mut rec, start, "failed", "tunnel-error", true);
            return;
        }
    };
    // Client bytes start flowing at once; the destination holds them until it has decided.
    // The first bytes back are its response.
    let mut c = client;
    let (mut up, mut down) = (0u64, 0u64);
    let active = active_gauge(state, dir);
    active.inc();
    let outcome: Result<(), TunnelEnd> = {
        let (cr, mut cw) = c.split();
        let to_server = pipe(cr, &mut send, &mut up);
        let recv = &mut recv;
        let down = &mut down;
        let tunnel = &mut tunnel;
        let to_client = async move {
            let (resp, early) = pool::read_response(recv).await.map_err(TunnelEnd::Stream)?;
            tunnel.status = resp.status.as_str().into();
            tunnel.reason = resp.reason.clone();
            if resp.status != Status::Connected {
                return Err(TunnelEnd::Refused(resp.status));
            }
            cw.write_all(&early).await.map_err(TunnelEnd::Io)?;
            *down += early.len() as u64;
            pipe(recv, cw, down).await.map_err(TunnelEnd::Io)
        };
        both(async { to_server.await.map_err(TunnelEnd::Io) }, to_client).await
    };
    active.dec();
    count_bytes(state, dir, up, down);
    if let (Err(TunnelEnd::Stream(_) | TunnelEnd::Io(_)), Some(reason)) =
        (&outcome, pool::handshake_refusal(&conn))
    {
        tunnel.status = "handshake-failed".into();
        tunnel.reason = reason;
    }
    if tunnel.status.is_empty() {
        tunnel.status = "stream-failed".into();
    }
    rec.eastwall.tunnel = Some(tunnel);
    count_decision(state, &rec);
    match outcome {
        Ok(()) => closed(state, &mut rec, start, up, down, None),
        Err(end) => {
            socket::reset(c);
            let _ = send.reset(crate::tunnel::code::RELAY_ERROR);
            match end {
                // The destination node decided otherwise, or could not reach the workload.
                TunnelEnd::Refused(Status::Unreachable) => {
                    finish(state, &mut rec, start, "failed", "upstream-error", true)
                }
                TunnelEnd::Refused(_) => {
                    rec.flow.bytes_toserver = up;
                    finish(
                        state,
                        &mut rec,
                        start,
                        "rejected",
                        "denied-by-destination",
                        true,
                    )
                }
                TunnelEnd::Stream(e) => {
                    rec.eastwall.error = Some(e.to_string());
                    finish(state, &mut rec, start, "failed", "tunnel-error", true)
                }
                TunnelEnd::Io(e) => closed(state, &mut rec, start, up, down, Some(e)),
            }
        }
    }
}

/// How a tunnelled relay ended early.
enum TunnelEnd {
    /// The destination answered with a refusal.
    Refused(Status),
    /// No readable response.
    Stream(io::Error),
    /// The relay failed after connecting.
    Io(io::Error),
}

/// Relays and adds the byte counts to the metrics.
pub(crate) async fn relay_counted<CR, CW, SR, SW>(
    state: &NodeState,
    dir: &'static str,
    cr: CR,
    cw: CW,
    sr: SR,
    sw: SW,
) -> (u64, u64, Option<io::Error>)
where
    CR: Source,
    CW: Sink,
    SR: Source,
    SW: Sink,
{
    let active = active_gauge(state, dir);
    active.inc();
    let r = relay(cr, cw, sr, sw).await;
    active.dec();
    count_bytes(state, dir, r.0, r.1);
    r
}

/// The gauge of connections being relayed in `dir`.
fn active_gauge(state: &NodeState, dir: &'static str) -> prometheus_client::metrics::gauge::Gauge {
    state
        .metrics
        .active
        .get_or_create(&DirLabels { direction: dir })
        .clone()
}

/// Adds a finished relay's bytes to the metrics.
fn count_bytes(state: &NodeState, dir: &'static str, up: u64, down: u64) {
    let bytes = &state.metrics.bytes;
    bytes
        .get_or_create(&BytesLabels {
            direction: dir,
            flow: "toserver",
        })
        .inc_by(up);
    bytes
        .get_or_create(&BytesLabels {
            direction: dir,
            flow: "toclient",
        })
        .inc_by(down);
}

fn closed(
    state: &NodeState,
    rec: &mut FlowRecord,
    start: DateTime<Utc>,
    up: u64,
    down: u64,
    err: Option<io::Error>,
) {
    rec.flow.bytes_toserver = up;
    rec.flow.bytes_toclient = down;
    let reason = match err {
        None => "shutdown",
        Some(e) => {
            rec.eastwall.error = Some(e.to_string());
            "error"
        }
    };
    finish(state, rec, start, "closed", reason, true);
}

pub(crate) fn finish(
    state: &NodeState,
    rec: &mut FlowRecord,
    start: DateTime<Utc>,
    st: &str,
    reason: &str,
    allowed: bool,
) {
    rec.finish(start, Utc::now(), st, reason);
    state
        .metrics
        .closed
        .get_or_create(&ClosedLabels {
            direction: rec.eastwall.direction.as_str(),
            verdict: if allowed { "allow" } else { "deny" },
        })
        .inc();
    state.flows.record(rec);
}

/// Copies both ways until both directions have ended; a half-close is passed on, and the
/// first error ends both. Returns bytes to the server, bytes to the client, and the first
/// error; the caller resets the sockets on error.
pub(crate) async fn relay<CR, CW, SR, SW>(
    cr: CR,
    cw: CW,
    sr: SR,
    sw: SW,
) -> (u64, u64, Option<io::Error>)
where
    CR: Source,
    CW: Sink,
    SR: Source,
    SW: Sink,
{
    let (mut up, mut down) = (0u64, 0u64);
    let err = {
        let to_server = pipe(cr, sw, &mut up);
        let to_client = pipe(sr, cw, &mut down);
        both(to_server, to_client).await.err()
    };
    (up, down, err)
}

/// Runs both directions until both have ended, or until the first error, which ends both.
async fn both<E>(
    a: impl std::future::Future<Output = Result<(), E>>,
    b: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), E> {
    tokio::pin!(a, b);
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        tokio::select! {
            r = &mut a, if !a_done => { a_done = true; r?; }
            r = &mut b, if !b_done => { b_done = true; r?; }
        }
    }
    Ok(())
}

async fn pipe<R: Source, W: Sink>(mut r: R, mut w: W, count: &mut u64) -> io::Result<()> {
    let mut hint = FIRST_READ;
    while let Some(bytes) = r.next(&mut hint).await? {
        let n = bytes.len() as u64;
        w.put(bytes).await?;
        *count += n;
    }
    w.close().await
}
