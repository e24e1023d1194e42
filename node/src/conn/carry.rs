//! Carrying an allowed connection, for every entry point: connect to the server from the
//! client's own address (or open a tunnel stream to the destination's node), put the IDS in
//! the path, relay both ways until the connection ends or a reload revokes it, reset both
//! sides when it ends abruptly, and say how it ended ([`Outcome`]). This is the one place
//! that makes the spoofed upstream connection and runs the inspected relay.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use eastwall_identity::SpiffeId;
use eastwall_ids::{AppProto, Dir, FlowMeta, Transport};
use eastwall_wire::eve::{Direction, TunnelInfo, TunnelStatus};
use eastwall_wire::header::{Response, Status, StreamHeader, StreamKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use super::live::{LiveConnections, Registration};
use super::record::FlowGuard;
use super::{Ending, Ends, Hop, Outcome};
use crate::capture::socket;
use crate::identity::UserCertificates;
use crate::ids::{IdsEngines, Inspecting, InspectingDatagrams, SharedIds};
use crate::relay::{
    Abort, Activity, CapsuleSink, CapsuleSource, DatagramCount, DatagramEnd, DatagramSink,
    DatagramSource, Sink, Source, pipe, relay, relay_datagrams,
};

use crate::telemetry::Telemetry;
use crate::telemetry::metrics::DirLabels;
use crate::tunnel::pool::{OpenError, PoolKey};
use crate::tunnel::{Opened, Tunnel, h2, quic};

/// The client side of a connection being carried: a captured TCP connection (refused with a
/// reset) or a tunnel stream at the destination (refused with a tunnel answer).
pub(crate) trait Downstream: Send {
    /// The client's bytes, for the raw relay.
    type Recv: Source + Send;
    /// Bytes to the client, for the raw relay.
    type Send: Sink + Abort + Send;
    /// Both directions as one byte stream, for HTTP.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next bytes the client sends (`None`: it half-closed), before it is answered.
    async fn read(&mut self) -> io::Result<Option<Bytes>>;
    /// Refuses the connection: a TCP reset, or a tunnel refusal with `status` and `why`.
    async fn refuse(self, status: Status, why: &str);
    /// Accepts the connection for the raw relay.
    async fn accept_raw(self) -> io::Result<(Self::Recv, Self::Send)>;
    /// Accepts the connection as one byte stream.
    async fn accept_io(self) -> io::Result<Self::Io>;
}

/// A captured TCP connection from a client.
pub(crate) struct TcpDownstream(pub TcpStream);

impl Downstream for TcpDownstream {
    type Recv = tokio::net::tcp::OwnedReadHalf;
    type Send = tokio::net::tcp::OwnedWriteHalf;
    type Io = TcpStream;

    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        let mut hint = 4096;
        let mut half = self.0.split().0;
        half.next(&mut hint).await
    }
    async fn refuse(self, _status: Status, _why: &str) {
        socket::reset(self.0);
    }
    async fn accept_raw(self) -> io::Result<(Self::Recv, Self::Send)> {
        Ok(self.0.into_split())
    }
    async fn accept_io(self) -> io::Result<Self::Io> {
        Ok(self.0)
    }
}

/// How the node connects to servers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamSpec {
    /// The node's own mark, so capture never takes its sockets for new connections.
    pub(crate) own_mark: u32,
    /// How long a connect may take before the client is refused.
    pub(crate) connect_timeout: Duration,
}

/// What the IDS sees before the relay starts: the bytes read to detect the protocol (they
/// go to the server first; the IDS reads a TLS ClientHello's fields from them), and whether
/// they were a TLS ClientHello.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prelude {
    /// Bytes the client sent before the relay (sniffed, or behind a tunnel header).
    pub(crate) bytes: Bytes,
    /// The connection starts with a TLS ClientHello.
    pub(crate) tls: bool,
}

/// Connecting, inspecting and relaying allowed connections.
pub(crate) struct Carrier {
    /// How servers are connected to.
    pub(crate) upstream: UpstreamSpec,
    /// The tunnel's client side, when the node runs the tunnel.
    pub(crate) tunnel: Option<Tunnel>,
    /// Certificates of local users' identities, obtained on first use (with the tunnel).
    pub(crate) user_certs: Option<Arc<UserCertificates>>,
    /// The IDS engines in force (hot reload swaps them).
    pub(crate) ids: ArcSwapOption<IdsEngines>,
    /// Allowed connections being carried, for the re-check after a reload.
    pub(crate) live: LiveConnections,
    /// Metrics and the EVE log.
    pub(crate) telemetry: Arc<Telemetry>,
}

impl Carrier {
    /// Connects to `dst` from `src` (the client's address, which this host does not own),
    /// counting failures.
    pub(crate) async fn connect(
        &self,
        src: IpAddr,
        dst: SocketAddr,
        direction: Direction,
    ) -> io::Result<TcpStream> {
        let up = &self.upstream;
        let started = std::time::Instant::now();
        socket::connect_spoofed(Some(src), dst, up.own_mark, up.connect_timeout)
            .await
            .inspect(|_| {
                self.telemetry
                    .metrics
                    .upstream_connect_seconds
                    .get_or_create(&DirLabels {
                        direction: direction.as_str(),
                    })
                    .observe(started.elapsed().as_secs_f64());
            })
            .inspect_err(|e| {
                debug!(%src, %dst, %e, "upstream connect failed");
                self.count_upstream_error(direction);
            })
    }

    fn count_upstream_error(&self, direction: Direction) {
        self.telemetry
            .metrics
            .upstream_errors
            .get_or_create(&DirLabels {
                direction: direction.as_str(),
            })
            .inc();
    }

    /// The IDS inspection of an allowed connection whose decision named `profile` (`None`
    /// without a profile, or when this node has no engine for it).
    pub(crate) fn inspection(
        &self,
        profile: Option<&str>,
        guard: &FlowGuard,
        client: SocketAddr,
        server: SocketAddr,
        app: (AppProto, Transport),
    ) -> Option<SharedIds> {
        let engines = self.ids.load_full()?;
        crate::ids::FlowIds::for_profile(
            &engines,
            profile?,
            FlowMeta {
                src: client,
                dst: server,
            },
            app,
            guard.flow_id,
            guard.ends(),
        )
    }

    /// Carries an allowed connection from `down` straight to its server (the original
    /// destination), from the client's own address. `inspected` says whether this node
    /// decides it at L7 (a reload that then wants L7 facts revokes one that is not).
    pub(crate) async fn direct<D: Downstream>(
        &self,
        down: D,
        ends: &Ends,
        ids_profile: Option<&str>,
        prelude: Prelude,
        inspected: bool,
        guard: &mut FlowGuard,
    ) -> Outcome {
        let dst = ends.dst.addr;
        let direction = ends.direction();
        let mut upstream = match self.connect(ends.src.addr.ip(), dst, direction).await {
            Ok(s) => s,
            Err(e) => {
                let error = format!("connecting to {dst}: {e}");
                // Mirror the server's refusal to the client.
                down.refuse(Status::Unreachable, &error).await;
                return Outcome::Unreachable {
                    hop: Hop::Server,
                    error,
                };
            }
        };
        let (mut recv, mut send) = match down.accept_raw().await {
            Ok(halves) => halves,
            Err(e) => {
                socket::reset(upstream);
                return Outcome::Ended(Ending::Failed(e.to_string()));
            }
        };
        let live = self.live.register(ends.clone(), inspected);
        let app = if prelude.tls {
            AppProto::Tls
        } else {
            AppProto::Unknown
        };
        let ids = self.inspection(
            ids_profile,
            guard,
            ends.src.addr,
            dst,
            (app, Transport::Tcp),
        );
        // The IDS sees the handshake and the early bytes before the server does.
        if let Some(ids) = &ids
            && let Err(blocked) = self.inspect_prelude(ids, &prelude)
        {
            socket::reset(upstream);
            send.abort();
            guard.add_ids(Some(crate::ids::close(&self.telemetry, ids)));
            return Outcome::Ended(blocked);
        }
        let early = prelude.bytes.len() as u64;
        let (ur, mut uw) = upstream.split();
        if early > 0
            && let Err(e) = uw.put(prelude.bytes).await
        {
            socket::reset(upstream);
            send.abort();
            return Outcome::Ended(Ending::Failed(e.to_string()));
        }
        // The client's side reads from `recv` and writes to `send`; the server's is upstream.
        let (up, down_bytes, end) = self
            .relay_inspected(direction, &live, ids.as_ref(), &mut recv, &mut send, ur, uw)
            .await;
        if ending_is_abrupt(&end) {
            socket::reset(upstream);
            send.abort();
        }
        if let Some(ids) = &ids {
            guard.add_ids(Some(crate::ids::close(&self.telemetry, ids)));
        }
        guard.bytes_toserver = up + early;
        guard.bytes_toclient = down_bytes;
        Outcome::Ended(end)
    }

    fn inspect_prelude(&self, ids: &SharedIds, prelude: &Prelude) -> Result<(), Ending> {
        let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::ids::now();
        let mut v = eastwall_ids::Verdict::default();
        if !prelude.bytes.is_empty() {
            v.alerts.extend(
                f.inspector()
                    .stream(Dir::ToServer, &prelude.bytes, now)
                    .alerts,
            );
        }
        f.apply(&self.telemetry, v)
            .map_err(|(sid, msg)| Ending::Blocked { sid, msg })
    }

    /// Carries a captured connection through the tunnel to the destination's node, which
    /// decides again on the identity the tunnel proves and connects to its workload.
    pub(crate) async fn tunnel(
        &self,
        client: TcpStream,
        ends: &Ends,
        key: &PoolKey,
        guard: &mut FlowGuard,
    ) -> Outcome {
        let direction = ends.direction();
        let (opened, mut info) = match self.open_tunnel(ends, key, StreamKind::Tcp, guard).await {
            Ok(o) => o,
            Err(outcome) => {
                socket::reset(client);
                return outcome;
            }
        };
        let live = self.live.register(ends.clone(), true);
        let mut c = client;
        let (mut up, mut down) = (0u64, 0u64);
        let active = self.active_gauge(direction);
        active.inc();
        let mut answer = None;
        // The pooled connection stays leased until the stream is done.
        let (relayed, refusal) = match opened {
            Opened::Quic { lease, send, recv } => {
                let response = pin!(quic::read_response(recv));
                let counts = (&mut up, &mut down);
                let r = through_tunnel(&mut c, send, response, counts, &mut answer, &live).await;
                (r, quic::handshake_refusal(&lease.conn))
            }
            Opened::H2 {
                lease,
                send,
                response,
            } => {
                let response = pin!(h2::read_response(response));
                let counts = (&mut up, &mut down);
                let r = through_tunnel(&mut c, send, response, counts, &mut answer, &live).await;
                (r, lease.conn.handshake_refusal())
            }
        };
        active.dec();
        guard.bytes_toserver = up;
        guard.bytes_toclient = down;
        if let Some(r) = answer {
            info.status = TunnelStatus::Answered(r.status);
            info.reason = r.reason;
        }
        // With TLS 1.3 a refused client certificate shows only once the stream is used.
        if let (Err(TunnelEnd::Stream(_) | TunnelEnd::Io(_)), Some(reason)) = (&relayed, refusal) {
            info.status = TunnelStatus::HandshakeFailed;
            info.reason = reason;
        }
        let reason = info.reason.clone();
        guard.tunnel = Some(info);
        let end = match relayed {
            Ok(()) => return Outcome::Ended(Ending::Closed),
            Err(end) => end,
        };
        socket::reset(c);
        match end {
            // The destination could not reach its workload.
            TunnelEnd::Refused(Status::Unreachable) => Outcome::Unreachable {
                hop: Hop::Server,
                error: reason,
            },
            // The destination decided otherwise.
            TunnelEnd::Refused(_) => Outcome::RefusedByDestination,
            TunnelEnd::Stream(e) => Outcome::Unreachable {
                hop: Hop::Tunnel,
                error: e.to_string(),
            },
            TunnelEnd::Io(e) => Outcome::Ended(Ending::Failed(e.to_string())),
            TunnelEnd::Revoked(rule) => Outcome::Ended(Ending::Revoked(rule)),
        }
    }

    /// A local user's first connection: this node may not hold the user's certificate yet.
    async fn ensure_user_certificate(&self, id: &SpiffeId) -> Result<(), OpenError> {
        let (Some(certs), Some((workload, user))) = (&self.user_certs, local_user_of(id)) else {
            return Ok(());
        };
        certs.ensure(id, workload, user).await.map_err(|e| {
            debug!(%id, "no certificate for a local user: {e:#}");
            OpenError::NoIdentity(id.clone())
        })
    }

    /// Carries a UDP session straight to its server (the original destination), from a
    /// socket bound to the client's own address (its port too, where it is free): `client`
    /// gives the client's datagrams and takes the server's answers. The session ends when no
    /// datagram went either way for `idle`. `inspected`: this node decides it datagram by
    /// datagram (a reload that then wants L7 facts revokes one that is not); `ids_profile`:
    /// the IDS profile that inspects every datagram both ways.
    pub(crate) async fn udp_direct<CR: DatagramSource, CW: DatagramSink>(
        &self,
        client: (CR, CW),
        ends: &Ends,
        idle: (Duration, &Activity),
        (inspected, ids_profile): (bool, Option<&str>),
        guard: &mut FlowGuard,
    ) -> Outcome {
        let direction = ends.direction();
        let upstream = match self.udp_upstream(ends) {
            Ok(s) => s,
            Err(e) => {
                self.count_upstream_error(direction);
                return Outcome::Unreachable {
                    hop: Hop::Server,
                    error: format!("a socket toward {}: {e}", ends.dst.addr),
                };
            }
        };
        let live = self.live.register(ends.clone(), inspected);
        let server = (&upstream, &upstream);
        let ids = self.inspection(
            ids_profile,
            guard,
            ends.src.addr,
            ends.dst.addr,
            (AppProto::Unknown, Transport::Udp),
        );
        let Some(ids) = ids else {
            return self
                .relay_session(direction, &live, client, server, idle, guard)
                .await;
        };
        let client = (
            InspectingDatagrams {
                inner: client.0,
                dir: Dir::ToServer,
                ids: ids.clone(),
                telemetry: &self.telemetry,
            },
            client.1,
        );
        let server = (
            InspectingDatagrams {
                inner: server.0,
                dir: Dir::ToClient,
                ids: ids.clone(),
                telemetry: &self.telemetry,
            },
            server.1,
        );
        let outcome = self
            .relay_session(direction, &live, client, server, idle, guard)
            .await;
        guard.add_ids(Some(crate::ids::close(&self.telemetry, &ids)));
        // A session the IPS stopped ended blocked, whatever ended its relay afterwards.
        let blocked = ids.lock().ok().and_then(|f| f.blocked_by());
        match (outcome, blocked) {
            (Outcome::Ended(Ending::Closed | Ending::Failed(_)), Some((sid, msg))) => {
                Outcome::Ended(Ending::Blocked { sid, msg })
            }
            (o, _) => o,
        }
    }

    /// The upstream socket of a UDP session: bound to the client's address and port, or to
    /// its address alone when another session of the node holds that port.
    fn udp_upstream(&self, ends: &Ends) -> io::Result<tokio::net::UdpSocket> {
        let (src, dst, mark) = (ends.src.addr, ends.dst.addr, self.upstream.own_mark);
        socket::udp_spoofed(src, dst, mark).or_else(|e| match e.kind() {
            io::ErrorKind::AddrInUse => {
                socket::udp_spoofed(SocketAddr::new(src.ip(), 0), dst, mark)
            }
            _ => Err(e),
        })
    }

    /// Carries a captured UDP session through the tunnel to the destination's node, which
    /// decides again on the identity the tunnel proves. The first datagrams wait for its
    /// answer.
    pub(crate) async fn udp_tunnel<CR: DatagramSource, CW: DatagramSink>(
        &self,
        client: (CR, CW),
        ends: &Ends,
        key: &PoolKey,
        idle: (Duration, &Activity),
        guard: &mut FlowGuard,
    ) -> Outcome {
        let direction = ends.direction();
        let (opened, mut info) = match self.open_tunnel(ends, key, StreamKind::Udp, guard).await {
            Ok(o) => o,
            Err(outcome) => return outcome,
        };
        let live = self.live.register(ends.clone(), true);
        let outcome = match opened {
            Opened::Quic { lease, send, recv } => {
                let answer = quic::read_response(recv).await;
                let refusal = quic::handshake_refusal(&lease.conn);
                match self.answered(answer, refusal, &mut info) {
                    Ok(recv) => {
                        let server = (CapsuleSource::new(recv), CapsuleSink(send));
                        self.relay_session(direction, &live, client, server, idle, guard)
                            .await
                    }
                    Err(o) => o,
                }
            }
            Opened::H2 {
                lease,
                send,
                response,
            } => {
                let answer = h2::read_response(response).await;
                let refusal = lease.conn.handshake_refusal();
                match self.answered(answer, refusal, &mut info) {
                    Ok(recv) => {
                        let server = (CapsuleSource::new(recv), CapsuleSink(send));
                        self.relay_session(direction, &live, client, server, idle, guard)
                            .await
                    }
                    Err(o) => o,
                }
            }
        };
        guard.tunnel = Some(info);
        outcome
    }

    /// Opens a tunnel stream of `kind` for `ends` (the source's certificate first, for a
    /// local user); with the tunnel's part of the record begun. A failure is recorded and
    /// counted, and returned as the outcome.
    async fn open_tunnel(
        &self,
        ends: &Ends,
        key: &PoolKey,
        kind: StreamKind,
        guard: &mut FlowGuard,
    ) -> Result<(Opened, TunnelInfo), Outcome> {
        let Some(tunnel) = &self.tunnel else {
            return Err(Outcome::Unreachable {
                hop: Hop::Tunnel,
                error: "this node runs no tunnel".to_owned(),
            });
        };
        let mut info = TunnelInfo {
            transport: tunnel.mode().as_str(),
            peer: key.node.to_string(),
            peer_identity: Some(key.dst.to_string()),
            status: TunnelStatus::StreamFailed,
            reason: String::new(),
        };
        let header = StreamHeader {
            dst: ends.dst.addr,
            src: ends.src.addr,
            trace: None,
            kind,
        };
        // A local user's connection may need its certificate first; that future is large
        // and rare, so it is boxed rather than kept in every connection's task.
        let certified = if self.user_certs.is_some() && local_user_of(&key.src).is_some() {
            Box::pin(self.ensure_user_certificate(&key.src)).await
        } else {
            Ok(())
        };
        let opened = match certified {
            Ok(()) => tunnel.open(key, &header).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(o) => {
                info.transport = o.transport();
                Ok((o, info))
            }
            Err(e) => {
                if e.is_handshake() {
                    info.status = TunnelStatus::HandshakeFailed;
                }
                info.reason = e.to_string();
                guard.tunnel = Some(info);
                self.count_upstream_error(ends.direction());
                Err(Outcome::Unreachable {
                    hop: Hop::Tunnel,
                    error: e.to_string(),
                })
            }
        }
    }

    /// The destination's answer to a UDP stream: the stream of its datagrams when connected,
    /// else how the session ends.
    fn answered<R>(
        &self,
        answer: io::Result<(Response, R)>,
        refusal: Option<String>,
        info: &mut TunnelInfo,
    ) -> Result<R, Outcome> {
        match answer {
            Ok((r, recv)) => {
                info.status = TunnelStatus::Answered(r.status);
                info.reason = r.reason.clone();
                match r.status {
                    Status::Connected => Ok(recv),
                    Status::Unreachable => Err(Outcome::Unreachable {
                        hop: Hop::Server,
                        error: r.reason,
                    }),
                    _ => Err(Outcome::RefusedByDestination),
                }
            }
            Err(e) => {
                if let Some(reason) = refusal {
                    info.status = TunnelStatus::HandshakeFailed;
                    info.reason = reason;
                }
                Err(Outcome::Unreachable {
                    hop: Hop::Tunnel,
                    error: e.to_string(),
                })
            }
        }
    }

    /// Relays a session's datagrams (or messages) until it ends; counts them in the record.
    pub(crate) async fn relay_session<CR, CW, SR, SW>(
        &self,
        direction: Direction,
        live: &Registration<'_>,
        client: (CR, CW),
        server: (SR, SW),
        idle: (Duration, &Activity),
        guard: &mut FlowGuard,
    ) -> Outcome
    where
        CR: DatagramSource,
        CW: DatagramSink,
        SR: DatagramSource,
        SW: DatagramSink,
    {
        let active = self.active_gauge(direction);
        active.inc();
        let (up, down) = (DatagramCount::default(), DatagramCount::default());
        let relayed = race_revocation(
            live,
            pin!(relay_datagrams(client, server, idle, &up, &down)),
        )
        .await;
        active.dec();
        let ((pkts_up, bytes_up), (pkts_down, bytes_down)) = (up.get(), down.get());
        guard.bytes_toserver = bytes_up;
        guard.bytes_toclient = bytes_down;
        guard.datagrams = Some((pkts_up, pkts_down));
        Outcome::Ended(match relayed {
            Ok(DatagramEnd::Idle | DatagramEnd::Ended) => Ending::Closed,
            Ok(DatagramEnd::Failed(e)) => Ending::Failed(e.to_string()),
            Err(rule) => Ending::Revoked(rule),
        })
    }

    /// The gauge of connections being relayed in `direction`.
    pub(crate) fn active_gauge(
        &self,
        direction: Direction,
    ) -> prometheus_client::metrics::gauge::Gauge {
        self.telemetry
            .metrics
            .active
            .get_or_create(&DirLabels {
                direction: direction.as_str(),
            })
            .clone()
    }

    /// Relays until both sides are done, a side fails, the IPS blocks, or a reload revokes
    /// the connection. What the client sends (`cr`) is inspected on its way to the server,
    /// what the server sends (`sr`) on its way to the client. Returns the bytes each way.
    #[allow(clippy::too_many_arguments)]
    async fn relay_inspected<CR, CW, SR, SW>(
        &self,
        direction: Direction,
        live: &Registration<'_>,
        ids: Option<&SharedIds>,
        cr: CR,
        cw: CW,
        sr: SR,
        sw: SW,
    ) -> (u64, u64, Ending)
    where
        CR: Source,
        CW: Sink,
        SR: Source,
        SW: Sink,
    {
        let active = self.active_gauge(direction);
        active.inc();
        let (mut up, mut down) = (0u64, 0u64);
        let relayed = match ids {
            None => race_revocation(live, pin!(relay(cr, cw, sr, sw, &mut up, &mut down))).await,
            Some(ids) => {
                let to_server = Inspecting {
                    inner: cr,
                    dir: Dir::ToServer,
                    ids: ids.clone(),
                    telemetry: &self.telemetry,
                };
                let to_client = Inspecting {
                    inner: sr,
                    dir: Dir::ToClient,
                    ids: ids.clone(),
                    telemetry: &self.telemetry,
                };
                let relaying = relay(to_server, cw, to_client, sw, &mut up, &mut down);
                race_revocation(live, pin!(relaying)).await
            }
        };
        active.dec();
        let end = match relayed {
            Ok(None) => Ending::Closed,
            Err(rule) => Ending::Revoked(rule),
            Ok(Some(e)) => match ids.and_then(|i| i.lock().ok()?.blocked_by()) {
                Some((sid, msg)) => Ending::Blocked { sid, msg },
                None => Ending::Failed(e.to_string()),
            },
        };
        (up, down, end)
    }
}

/// Whether the sockets of a connection that ended so must be reset.
fn ending_is_abrupt(end: &Ending) -> bool {
    !matches!(end, Ending::Closed)
}

/// Runs `relaying` until it ends or the connection is revoked (`Err`: the revoking rule).
/// The caller pins `relaying` where it is built, so the connection's task holds it once.
async fn race_revocation<F: std::future::Future>(
    live: &Registration<'_>,
    relaying: Pin<&mut F>,
) -> Result<F::Output, String> {
    tokio::select! {
        r = relaying => Ok(r),
        () = live.revoked() => Err(live.revoked_by().unwrap_or_default()),
    }
}

/// The workload and user of a user identity (`…/user/<user>/wl/<workload>`).
fn local_user_of(id: &SpiffeId) -> Option<(&str, &str)> {
    let user = id.user()?;
    let (_, workload) = id.path().split_once("/wl/")?;
    Some((workload, user))
}

/// How a tunnelled relay ended early.
enum TunnelEnd {
    /// The destination answered with a refusal.
    Refused(Status),
    /// No readable answer.
    Stream(io::Error),
    /// The relay failed after the answer.
    Io(io::Error),
    /// A newer policy denies the connection (the rule).
    Revoked(String),
}

/// Relays a workload connection through an opened tunnel stream: the client's bytes start
/// flowing at once (the destination holds them until it has decided); the first thing back
/// is the destination's answer, then the destination workload's bytes. The stream is reset
/// when the relay fails.
async fn through_tunnel<S, R>(
    client: &mut TcpStream,
    mut send: S,
    response: Pin<&mut impl std::future::Future<Output = io::Result<(Response, R)>>>,
    counts: (&mut u64, &mut u64),
    answer: &mut Option<Response>,
    live: &Registration<'_>,
) -> Result<(), TunnelEnd>
where
    S: Sink + Abort,
    R: Source,
{
    let r = relay_through(client, &mut send, response, counts, answer, live).await;
    if r.is_err() {
        send.abort();
    }
    r
}

async fn relay_through<S, R>(
    client: &mut TcpStream,
    send: S,
    response: Pin<&mut impl std::future::Future<Output = io::Result<(Response, R)>>>,
    (up, down): (&mut u64, &mut u64),
    answer: &mut Option<Response>,
    live: &Registration<'_>,
) -> Result<(), TunnelEnd>
where
    S: Sink,
    R: Source,
{
    let (cr, cw) = client.split();
    // Both directions built in place (see `relay::relay`).
    let relaying = async move {
        tokio::try_join!(
            async { pipe(cr, send, up).await.map_err(TunnelEnd::Io) },
            async {
                let (resp, recv) = response.await.map_err(TunnelEnd::Stream)?;
                let status = resp.status;
                *answer = Some(resp);
                if status != Status::Connected {
                    return Err(TunnelEnd::Refused(status));
                }
                pipe(recv, cw, down).await.map_err(TunnelEnd::Io)
            }
        )
        .map(|_| ())
    };
    match race_revocation(live, pin!(relaying)).await {
        Ok(r) => r,
        Err(rule) => Err(TunnelEnd::Revoked(rule)),
    }
}
