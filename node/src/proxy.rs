//! The relay: accept a captured connection, find who is on each end, decide, and either
//! refuse it with a reset, or carry it: through the tunnel when the destination is a
//! workload of another node, otherwise straight to the original destination from the
//! workload's own address. Every connection ends in a flow record.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eastwall_identity::SpiffeId;
use eastwall_policy::{Endpoint, Flow, L7, Registry, Workload};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::capture::socket;
use crate::flow::{Direction, EndpointInfo, FlowRecord, PolicyInfo, TunnelInfo};
use crate::live::{self, Registration};
use crate::metrics::{BytesLabels, ClosedLabels, DirLabels, RuleLabels};
use crate::relay::{Abort, Sink, Source, both, pipe, relay};
use crate::state::NodeState;
use crate::tunnel::header::{Response, Status, StreamHeader};
use crate::tunnel::pool::PoolKey;
use crate::tunnel::{Opened, h2, quic};

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

async fn handle(client: TcpStream, peer: SocketAddr, kind: Listener, state: &Arc<NodeState>) {
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

    // The host's own processes (`localUsers`): the process owner's uid from the kernel, its
    // name from NSS; the connection acts with that user's identity.
    let local_user = match (kind, src_wl) {
        (Listener::Outbound, Some(w)) if w.local_users && w.node == state.node_name => {
            local_user(state, w, peer, orig_dst).await
        }
        _ => None,
    };
    let mut route = Route::Direct;
    let mut groups = (None, None);
    let mut ids: (Option<SpiffeId>, Option<SpiffeId>) = (None, None);
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
            let src_id = match (&local_user, kind) {
                // The kernel told who the local user is.
                (Some((_, id)), _) => Some(id),
                // This node holds the source workload's certificate.
                (None, Listener::Outbound) if state.tunnel.is_some() => src_wl.map(|w| &w.identity),
                _ => None,
            };
            let routed = if kind == Listener::Outbound {
                tunnel_route(state, registry, src_wl.zip(src_id), dst_wl)
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
                L7::Unknown,
            )
            .await;
            groups = (decided.src_groups, decided.dst_groups);
            ids = (src_id.cloned(), dst_id.cloned());
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
    let mut src_info = EndpointInfo::of(src_wl).with_groups(groups.0);
    if let Some((name, id)) = &local_user {
        src_info.identity = Some(id.to_string());
        src_info.user = Some(name.clone());
    }
    let mut rec = FlowRecord::new(
        state.flows.next_id(),
        &state.node_name,
        direction,
        peer,
        orig_dst,
        src_info,
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
    let decided = live::Decided {
        direction,
        src: peer,
        src_id: ids.0,
        dst: orig_dst,
        dst_id: ids.1,
        // Through the tunnel the destination node decides whatever needs L7 facts.
        inspected: matches!(route, Route::Tunnel(_)),
    };
    match route {
        // Rules with L7 conditions apply: this node decides per request (handshake, stream)
        // when it is the last node on the path; through the tunnel, the destination does.
        Route::Direct if rec.eastwall.policy.l7_pending => {
            let conn = crate::l7::Conn {
                upstream: decided.dst,
                ends: decided,
            };
            let down = crate::l7::TcpDownstream(client);
            let done = crate::l7::serve(down, bytes::Bytes::new(), conn, state, &mut rec).await;
            crate::l7::finish(state, &mut rec, start, done);
        }
        Route::Direct => relay_direct(client, decided, state, rec, start).await,
        Route::Tunnel(key) => relay_tunnel(client, decided, key, state, rec, start).await,
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
    l7: L7<'_>,
) -> Decided {
    let (d, monitored) = evaluate(state, src, dst, l7).await;
    let dir = direction.as_str();
    for m in &monitored {
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
    d
}

/// Decides with the policy in force, counting nothing; returns the monitor rules that matched.
pub(crate) async fn evaluate(
    state: &NodeState,
    src: Side<'_>,
    dst: Side<'_>,
    l7: L7<'_>,
) -> (Decided, Vec<eastwall_policy::MonitorHit>) {
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
        l7,
    });
    let d = Decided {
        policy: PolicyInfo::of(&decision),
        src_groups,
        dst_groups,
    };
    (d, decision.monitored)
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

pub(crate) async fn groups_of(state: &NodeState, user: Option<&str>) -> Option<Vec<String>> {
    match (user, &state.directory) {
        (Some(u), Some(d)) => d.groups(u).await,
        _ => None,
    }
}

/// The workload and user of a user identity (`…/user/<user>/wl/<workload>`).
fn local_user_of(id: &SpiffeId) -> Option<(&str, &str)> {
    let user = id.user()?;
    let (_, workload) = id.path().split_once("/wl/")?;
    Some((workload, user))
}

/// The local user who owns the connection `peer -> orig_dst` of the host workload `w`, and
/// the identity they act with; `None` (the host workload, no user: `user` and `group` rules do
/// not match) when the kernel or NSS cannot say.
async fn local_user(
    state: &NodeState,
    w: &Workload,
    peer: SocketAddr,
    orig_dst: SocketAddr,
) -> Option<(String, SpiffeId)> {
    let looked_up = tokio::task::spawn_blocking(move || {
        let owner = eastwall_identity::tcp_socket_owner(peer, orig_dst)?;
        owner
            .map(|o| eastwall_identity::user_name(o.uid).map(|n| (o.uid, n)))
            .transpose()
    })
    .await;
    let result = match looked_up {
        Ok(Ok(Some((_, Some(name))))) => match w.user_identity(&name) {
            Some(id) => Ok((name, id)),
            None => Err(format!("user name `{name}` cannot be part of a SPIFFE ID")),
        },
        Ok(Ok(Some((uid, None)))) => Err(format!("uid {uid} has no user name")),
        Ok(Ok(None)) => Err("no owner found for the socket".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let label = if result.is_ok() { "ok" } else { "unknown" };
    state
        .metrics
        .local_user_lookups
        .get_or_create(&crate::metrics::ResultLabels { result: label })
        .inc();
    result
        .inspect_err(|why| debug!(%peer, %orig_dst, why, "local user unknown"))
        .ok()
}

/// Routes an allowed outbound connection: through the tunnel when its destination is a
/// workload of another node and this node runs the tunnel.
fn tunnel_route(
    state: &NodeState,
    registry: &Registry,
    src: Option<(&Workload, &SpiffeId)>,
    dst: Option<&Workload>,
) -> Result<Route, &'static str> {
    let (Some(_), Some((_, src_id)), Some(dst)) = (&state.tunnel, src, dst) else {
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
        src: src_id.clone(),
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

pub(crate) fn count_decision(state: &NodeState, rec: &FlowRecord) {
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
    decided: live::Decided,
    state: &NodeState,
    mut rec: FlowRecord,
    start: DateTime<Utc>,
) {
    let (peer, orig_dst) = (decided.src, decided.dst);
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
    let ids = ids_for(state, &rec, peer, orig_dst, eastwall_ids::AppProto::Unknown);
    let live = state.live.register(decided);
    let (mut c, mut u) = (client, upstream);
    let (cr, cw) = c.split();
    let (ur, uw) = u.split();
    let (up, down, end, ids) = relay_inspected(state, dir, &live, ids, cr, cw, ur, uw).await;
    if end.is_abrupt() {
        socket::reset(c);
        socket::reset(u);
    }
    rec.with_ids(ids);
    closed(state, &mut rec, start, up, down, end);
}

async fn relay_tunnel(
    client: TcpStream,
    decided: live::Decided,
    key: PoolKey,
    state: &NodeState,
    mut rec: FlowRecord,
    start: DateTime<Utc>,
) {
    let Some(tunnel) = &state.tunnel else { return };
    let (peer, orig_dst) = (decided.src, decided.dst);
    let dir = rec.eastwall.direction.as_str();
    let mut info = TunnelInfo {
        transport: "",
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
    // A local user's first connection: this node may not hold the user's certificate yet.
    let ensured = match (&state.user_certs, local_user_of(&key.src)) {
        (Some(certs), Some((workload, user))) => certs.ensure(&key.src, workload, user).await,
        _ => Ok(()),
    };
    let opened = match ensured {
        Ok(()) => tunnel.open(&key, &header).await,
        Err(e) => Err(crate::tunnel::pool::OpenError::NoIdentity(key.src.clone()))
            .inspect_err(|_| debug!(id = %key.src, "no certificate for a local user: {e:#}")),
    };
    let opened = match opened {
        Ok(s) => s,
        Err(e) => {
            info.transport = tunnel.mode().as_str();
            info.status = if e.is_handshake() {
                "handshake-failed"
            } else {
                "stream-failed"
            }
            .into();
            info.reason = e.to_string();
            rec.eastwall.tunnel = Some(info);
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
    info.transport = opened.transport();
    let live = state.live.register(decided);
    let mut c = client;
    let (mut up, mut down) = (0u64, 0u64);
    let active = active_gauge(state, dir);
    active.inc();
    // The pooled connection stays leased until the stream is done.
    let (outcome, refusal) = match opened {
        Opened::Quic { lease, send, recv } => {
            let counts = (&mut up, &mut down);
            let response = quic::read_response(recv);
            let r = through_tunnel(&mut c, send, response, counts, &mut info, &live).await;
            (r, quic::handshake_refusal(&lease.conn))
        }
        Opened::H2 {
            lease,
            send,
            response,
        } => {
            let counts = (&mut up, &mut down);
            let response = h2::read_response(response);
            let r = through_tunnel(&mut c, send, response, counts, &mut info, &live).await;
            (r, lease.conn.handshake_refusal())
        }
    };
    active.dec();
    count_bytes(state, dir, up, down);
    if let (Err(TunnelEnd::Stream(_) | TunnelEnd::Io(_)), Some(reason)) = (&outcome, refusal) {
        info.status = "handshake-failed".into();
        info.reason = reason;
    }
    if info.status.is_empty() {
        info.status = "stream-failed".into();
    }
    rec.eastwall.tunnel = Some(info);
    count_decision(state, &rec);
    match outcome {
        Ok(()) => closed(state, &mut rec, start, up, down, RelayEnd::Done),
        Err(end) => {
            socket::reset(c);
            match end {
                // The destination decided otherwise, or could not reach the workload.
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
                TunnelEnd::Io(e) => closed(state, &mut rec, start, up, down, RelayEnd::Failed(e)),
                TunnelEnd::Revoked(rule) => {
                    closed(state, &mut rec, start, up, down, RelayEnd::Revoked(rule))
                }
            }
        }
    }
}

/// Relays a workload connection through an opened tunnel stream: the client's bytes start
/// flowing at once (the destination holds them until it has decided); the first thing back
/// is the destination's response, then the destination workload's bytes. The stream is
/// reset when the relay fails.
async fn through_tunnel<S, R>(
    client: &mut TcpStream,
    mut send: S,
    response: impl std::future::Future<Output = io::Result<(Response, R)>>,
    (up, down): (&mut u64, &mut u64),
    info: &mut TunnelInfo,
    live: &Registration<'_>,
) -> Result<(), TunnelEnd>
where
    S: Sink + Abort,
    R: Source,
{
    let r = relay_through(client, &mut send, response, (up, down), info, live).await;
    if r.is_err() {
        send.abort();
    }
    r
}

async fn relay_through<S, R>(
    client: &mut TcpStream,
    send: S,
    response: impl std::future::Future<Output = io::Result<(Response, R)>>,
    (up, down): (&mut u64, &mut u64),
    info: &mut TunnelInfo,
    live: &Registration<'_>,
) -> Result<(), TunnelEnd>
where
    S: Sink,
    R: Source,
{
    let (cr, cw) = client.split();
    let to_server = pipe(cr, send, up);
    let to_client = async move {
        let (resp, recv) = response.await.map_err(TunnelEnd::Stream)?;
        info.status = resp.status.as_str().into();
        info.reason = resp.reason.clone();
        if resp.status != Status::Connected {
            return Err(TunnelEnd::Refused(resp.status));
        }
        pipe(recv, cw, down).await.map_err(TunnelEnd::Io)
    };
    tokio::select! {
        r = both(async { to_server.await.map_err(TunnelEnd::Io) }, to_client) => r,
        () = live.revoked() => Err(TunnelEnd::Revoked(live.revoked_by().unwrap_or_default())),
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
    /// A newer policy denies the connection (the rule).
    Revoked(String),
}

/// Relays and adds the byte counts to the metrics.
pub(crate) async fn relay_counted<CR, CW, SR, SW>(
    state: &NodeState,
    dir: &'static str,
    live: &Registration<'_>,
    cr: CR,
    cw: CW,
    sr: SR,
    sw: SW,
) -> (u64, u64, RelayEnd)
where
    CR: Source,
    CW: Sink,
    SR: Source,
    SW: Sink,
{
    let active = active_gauge(state, dir);
    active.inc();
    let (mut up, mut down) = (0u64, 0u64);
    let end = tokio::select! {
        e = relay(cr, cw, sr, sw, &mut up, &mut down) => match e {
            None => RelayEnd::Done,
            Some(e) => RelayEnd::Failed(e),
        },
        () = live.revoked() => RelayEnd::Revoked(live.revoked_by().unwrap_or_default()),
    };
    active.dec();
    count_bytes(state, dir, up, down);
    (up, down, end)
}

/// Relays like [`relay_counted`], with the IDS in the path when `ids` is given: what the
/// client sends (`cr`) is inspected to the server, what the server sends (`sr`) to the
/// client. Returns the IDS summary for the flow record.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_inspected<CR, CW, SR, SW>(
    state: &NodeState,
    dir: &'static str,
    live: &Registration<'_>,
    ids: Option<crate::ids::SharedIds>,
    cr: CR,
    cw: CW,
    sr: SR,
    sw: SW,
) -> (u64, u64, RelayEnd, Option<crate::ids::IdsInfo>)
where
    CR: Source,
    CW: Sink,
    SR: Source,
    SW: Sink,
{
    use crate::ids::Inspecting;
    use eastwall_ids::Dir;
    let Some(ids) = ids else {
        let (up, down, end) = relay_counted(state, dir, live, cr, cw, sr, sw).await;
        return (up, down, end, None);
    };
    let to_server = Inspecting {
        inner: cr,
        dir: Dir::ToServer,
        ids: ids.clone(),
        state,
    };
    let to_client = Inspecting {
        inner: sr,
        dir: Dir::ToClient,
        ids: ids.clone(),
        state,
    };
    let (up, down, mut end) = relay_counted(state, dir, live, to_server, cw, to_client, sw).await;
    let info = crate::ids::close(state, &ids);
    if let (Some(sid), RelayEnd::Failed(e)) = (info.blocked_by, &end) {
        let _ = sid;
        end = RelayEnd::Blocked(e.to_string());
    }
    (up, down, end, Some(info))
}

/// The IDS inspection of a connection whose decision named a profile (`None` when it did
/// not, or this node has no engine for it).
pub(crate) fn ids_for(
    state: &NodeState,
    rec: &FlowRecord,
    client: SocketAddr,
    server: SocketAddr,
    app: eastwall_ids::AppProto,
) -> Option<crate::ids::SharedIds> {
    crate::ids::for_connection(
        state,
        rec.eastwall.policy.ids.as_deref(),
        eastwall_ids::FlowMeta {
            src: client,
            dst: server,
        },
        app,
        rec.flow_id,
        eastwall_ids::EveIdentities {
            src_identity: rec.eastwall.src.identity.clone(),
            dest_identity: rec.eastwall.dest.identity.clone(),
        },
    )
}

/// How a relay of an allowed connection ended.
pub(crate) enum RelayEnd {
    /// Both sides closed.
    Done,
    /// A side failed; both are reset.
    Failed(io::Error),
    /// A newer policy denies the connection (the rule); both sides are reset.
    Revoked(String),
    /// The IPS stopped it (why); both sides are reset.
    Blocked(String),
}

impl RelayEnd {
    /// Whether the sockets should be reset.
    pub(crate) fn is_abrupt(&self) -> bool {
        !matches!(self, RelayEnd::Done)
    }
}

/// The gauge of connections being relayed in `dir`.
pub(crate) fn active_gauge(
    state: &NodeState,
    dir: &'static str,
) -> prometheus_client::metrics::gauge::Gauge {
    state
        .metrics
        .active
        .get_or_create(&DirLabels { direction: dir })
        .clone()
}

/// Adds a finished relay's bytes to the metrics.
pub(crate) fn count_bytes(state: &NodeState, dir: &'static str, up: u64, down: u64) {
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

pub(crate) fn closed(
    state: &NodeState,
    rec: &mut FlowRecord,
    start: DateTime<Utc>,
    up: u64,
    down: u64,
    end: RelayEnd,
) {
    rec.flow.bytes_toserver = up;
    rec.flow.bytes_toclient = down;
    let reason = match end {
        RelayEnd::Done => "shutdown",
        RelayEnd::Failed(e) => {
            rec.eastwall.error = Some(e.to_string());
            "error"
        }
        RelayEnd::Revoked(rule) => {
            rec.eastwall.revoked_by = Some(rule);
            "revoked"
        }
        RelayEnd::Blocked(why) => {
            rec.eastwall.error = Some(why);
            "ids-blocked"
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
