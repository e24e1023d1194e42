//! L7 decisions at the deciding node, for connections that rules with L7 conditions apply to
//! (the connection-time decision said `needs_l7`):
//!
//! 1. [`sniff`](crate::sniff) the client's first bytes (waiting at most `l7.firstBytesMs` for
//!    them: server-first protocols send nothing): HTTP/1, HTTP/2, TLS, or opaque;
//! 2. HTTP: [`http`] serves the connection with hyper, decides every request (every HTTP/2
//!    stream) on its own, answers denied ones with 403 and forwards the others to the server
//!    over a connection of the same protocol;
//! 3. TLS: decides once on the ClientHello's SNI, without decrypting; opaque: decides once,
//!    with no L7 facts (L7 allow rules do not match it, L7 deny rules do). Allowed, the bytes
//!    are relayed as at L4, the sniffed ones first.
//!
//! Where the client's bytes come from is a [`Downstream`]: a captured TCP connection (refused
//! with a reset) or a tunnel stream at the destination node (refused with a tunnel response).

pub(crate) mod http;
pub(crate) mod io;

use std::io as stdio;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use eastwall_policy::L7;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::capture::socket;
use crate::flow::{EveTls, FlowRecord};
use crate::live;
use crate::metrics::DirLabels;
use crate::proxy::{self, RelayEnd};
use crate::relay::{Abort, Sink, Source};
use crate::sniff::{Sniff, Sniffed, Sniffer};
use crate::state::NodeState;
use crate::tunnel::header::Status;

/// The client side of a connection being inspected.
pub(crate) trait Downstream: Send {
    /// The client's bytes, for the raw relay.
    type Recv: Source + Send;
    /// Bytes to the client, for the raw relay.
    type Send: Sink + Abort + Send;
    /// Both directions as one byte stream, for HTTP.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next bytes the client sends (`None`: it half-closed).
    async fn read(&mut self) -> stdio::Result<Option<Bytes>>;
    /// Refuses the connection: a TCP reset, or a tunnel refusal with `status` and `why`.
    async fn refuse(self, status: Status, why: &str);
    /// Accepts the connection for the raw relay.
    async fn accept_raw(self) -> stdio::Result<(Self::Recv, Self::Send)>;
    /// Accepts the connection as one byte stream.
    async fn accept_io(self) -> stdio::Result<Self::Io>;
}

/// A captured TCP connection from a client.
pub(crate) struct TcpDownstream(pub(crate) tokio::net::TcpStream);

impl Downstream for TcpDownstream {
    type Recv = tokio::net::tcp::OwnedReadHalf;
    type Send = tokio::net::tcp::OwnedWriteHalf;
    type Io = tokio::net::TcpStream;

    async fn read(&mut self) -> stdio::Result<Option<Bytes>> {
        let mut hint = 4096;
        let mut half = self.0.split().0;
        half.next(&mut hint).await
    }
    async fn refuse(self, _status: Status, _why: &str) {
        socket::reset(self.0);
    }
    async fn accept_raw(self) -> stdio::Result<(Self::Recv, Self::Send)> {
        Ok(self.0.into_split())
    }
    async fn accept_io(self) -> stdio::Result<Self::Io> {
        Ok(self.0)
    }
}

/// How the inspection of one connection ended, for its flow record.
pub(crate) struct Inspected {
    /// Bytes from the client, and to it.
    pub(crate) up: u64,
    /// Bytes to the client.
    pub(crate) down: u64,
    /// How the relay ended.
    pub(crate) end: RelayEnd,
    /// `false` when the connection was refused (denied, or its server unreachable).
    pub(crate) allowed: bool,
    /// The flow state and reason when refused (`rejected`/`denied`, `failed`/`upstream-error`).
    pub(crate) refused: Option<(&'static str, &'static str)>,
}

/// What the deciding node knows of the connection: both ends as decided at connection time.
pub(crate) struct Conn {
    /// Addresses and proven identities.
    pub(crate) ends: live::Decided,
    /// Where the allowed bytes go: the original destination, connected to from the client's
    /// own address.
    pub(crate) upstream: SocketAddr,
}

/// Sniffs, decides and serves one connection whose rules need L7 facts; fills `rec`
/// (application protocol, TLS or HTTP details, the decision for TLS and opaque streams).
pub(crate) async fn serve<D: Downstream>(
    mut down: D,
    early: Bytes,
    conn: Conn,
    state: &Arc<NodeState>,
    rec: &mut FlowRecord,
) -> Inspected {
    let (sniffed, prefix) = match sniff(&mut down, early, state).await {
        Ok(s) => s,
        Err(e) => {
            down.refuse(Status::BadHeader, &e.to_string()).await;
            rec.eastwall.error = Some(format!("reading the first bytes: {e}"));
            return Inspected {
                up: 0,
                down: 0,
                end: RelayEnd::Failed(e),
                allowed: true,
                refused: Some(("closed", "error")),
            };
        }
    };
    match sniffed {
        Sniffed::Http1 | Sniffed::Http2 => {
            let proto = if sniffed == Sniffed::Http2 {
                http::Proto::H2
            } else {
                http::Proto::H1
            };
            rec.app_proto = Some(proto.app_proto());
            let io = match down.accept_io().await {
                Ok(io) => io,
                Err(e) => {
                    return Inspected {
                        up: 0,
                        down: 0,
                        end: RelayEnd::Failed(e),
                        allowed: true,
                        refused: None,
                    };
                }
            };
            http::serve(io, prefix, proto, conn, state, rec).await
        }
        other => {
            let l7_tls;
            let facts = match &other {
                Sniffed::Tls(hello) => {
                    rec.app_proto = Some("tls");
                    rec.tls = Some(EveTls {
                        sni: hello.sni.clone(),
                        version: tls_version(hello.max_version()),
                        alpn: hello.alpn.clone(),
                    });
                    l7_tls = hello.sni.clone();
                    L7::Tls {
                        sni: l7_tls.as_deref(),
                    }
                }
                Sniffed::TlsUnreadable(e) => {
                    rec.app_proto = Some("tls");
                    rec.tls = Some(EveTls {
                        sni: None,
                        version: "UNDETERMINED".into(),
                        alpn: Vec::new(),
                    });
                    rec.eastwall.error = Some(format!("unreadable ClientHello: {e}"));
                    L7::Tls { sni: None }
                }
                _ => {
                    rec.app_proto = Some("failed");
                    L7::Opaque
                }
            };
            stream(down, prefix, conn, facts, state, rec).await
        }
    }
}

/// EVE's name of a TLS version number.
fn tls_version(v: u16) -> String {
    match v {
        0x0304 => "TLS 1.3".into(),
        0x0303 => "TLS 1.2".into(),
        0x0302 => "TLS 1.1".into(),
        0x0301 => "TLS 1.0".into(),
        0x0300 => "SSLv3".into(),
        _ => "UNDETERMINED".into(),
    }
}

/// Reads the client's first bytes until the protocol is known: at most `l7.firstBytesMs` for
/// the first of them, `l7.headerTimeoutSecs` in all.
async fn sniff<D: Downstream>(
    down: &mut D,
    early: Bytes,
    state: &NodeState,
) -> stdio::Result<(Sniffed, Bytes)> {
    let mut buf = BytesMut::from(&early[..]);
    let mut sniffer = Sniffer::new();
    let first = Duration::from_millis(state.l7.first_bytes_ms);
    let all = Duration::from_secs(state.l7.header_timeout_secs);
    let start = Instant::now();
    loop {
        if let Sniff::Done(s) = sniffer.sniff(&buf) {
            return Ok((s, buf.freeze()));
        }
        let wait = if buf.is_empty() { first } else { all };
        let left = wait.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, down.read()).await {
            Ok(Ok(Some(b))) => buf.extend_from_slice(&b),
            // Half-closed or silent: decide on what there is (nothing: a server-first
            // protocol, opaque).
            Ok(Ok(None)) | Err(_) => {
                let s = sniffer.finish(&buf);
                return Ok((s, buf.freeze()));
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Decides a TLS or opaque stream on `facts` and, if allowed, relays it to its server.
async fn stream<D: Downstream>(
    down: D,
    prefix: Bytes,
    conn: Conn,
    facts: L7<'_>,
    state: &Arc<NodeState>,
    rec: &mut FlowRecord,
) -> Inspected {
    let rules = state.rules();
    let src_wl = rules.registry.workload_by_addr(conn.ends.src.ip());
    let dst_wl = rules.registry.workload_by_addr(conn.ends.dst.ip());
    let d = proxy::decide(
        state,
        conn.ends.direction,
        (conn.ends.src, src_wl, conn.ends.src_id.as_ref()),
        (conn.ends.dst, dst_wl, conn.ends.dst_id.as_ref()),
        facts,
    )
    .await;
    drop(rules);
    rec.eastwall.policy = d.policy;
    if !rec.eastwall.policy.allows() {
        let why = format!("denied by rule {}", rec.eastwall.policy.rule);
        down.refuse(Status::Denied, &why).await;
        return Inspected {
            up: 0,
            down: 0,
            end: RelayEnd::Done,
            allowed: false,
            refused: Some(("rejected", "denied")),
        };
    }
    let dir = conn.ends.direction.as_str();
    let timeout = Duration::from_secs(state.capture.connect_timeout_secs);
    let upstream = match socket::connect_spoofed(
        Some(conn.ends.src.ip()),
        conn.upstream,
        state.capture.own_mark,
        timeout,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let why = format!("connecting to {}: {e}", conn.upstream);
            down.refuse(Status::Unreachable, &why).await;
            state
                .metrics
                .upstream_errors
                .get_or_create(&DirLabels { direction: dir })
                .inc();
            rec.eastwall.error = Some(why);
            return Inspected {
                up: 0,
                down: 0,
                end: RelayEnd::Done,
                allowed: true,
                refused: Some(("failed", "upstream-error")),
            };
        }
    };
    let (mut recv, mut send) = match down.accept_raw().await {
        Ok(halves) => halves,
        Err(e) => {
            socket::reset(upstream);
            return Inspected {
                up: 0,
                down: 0,
                end: RelayEnd::Failed(e),
                allowed: true,
                refused: None,
            };
        }
    };
    let mut upstream = upstream;
    let live = state.live.register(live::Decided {
        inspected: true,
        ..conn.ends
    });
    let (ur, mut uw) = upstream.split();
    let up0 = prefix.len() as u64;
    // The IDS sees the handshake and the sniffed bytes before the server does.
    let tls = rec.tls.is_some();
    let app = if tls {
        eastwall_ids::AppProto::Tls
    } else {
        eastwall_ids::AppProto::Unknown
    };
    let ids = proxy::ids_for(state, rec, conn.ends.src, conn.ends.dst, app);
    if let Some(ids) = &ids {
        let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::ids::now();
        let mut v = eastwall_ids::Verdict::default();
        if tls {
            let sni = rec.tls.as_ref().and_then(|t| t.sni.as_deref());
            v.alerts
                .extend(f.inspector().tls_client_hello(sni, now).alerts);
        }
        v.alerts.extend(
            f.inspector()
                .stream(eastwall_ids::Dir::ToServer, &prefix, now)
                .alerts,
        );
        if let Err(b) = f.apply(state, v) {
            drop(f);
            socket::reset(upstream);
            send.abort();
            rec.with_ids(Some(crate::ids::close(state, ids)));
            return Inspected {
                up: 0,
                down: 0,
                end: RelayEnd::Blocked(crate::ids::blocked_error(b).to_string()),
                allowed: true,
                refused: None,
            };
        }
    }
    if !prefix.is_empty()
        && let Err(e) = uw.put(prefix).await
    {
        socket::reset(upstream);
        send.abort();
        return Inspected {
            up: 0,
            down: 0,
            end: RelayEnd::Failed(e),
            allowed: true,
            refused: None,
        };
    }
    let (up, down_bytes, end, ids) =
        proxy::relay_inspected(state, dir, &live, ids, &mut recv, &mut send, ur, uw).await;
    if end.is_abrupt() {
        socket::reset(upstream);
        send.abort();
    }
    rec.with_ids(ids);
    Inspected {
        up: up + up0,
        down: down_bytes,
        end,
        allowed: true,
        refused: None,
    }
}

/// Writes the record of an inspected connection.
pub(crate) fn finish(
    state: &NodeState,
    rec: &mut FlowRecord,
    start: DateTime<Utc>,
    done: Inspected,
) {
    proxy::count_decision(state, rec);
    if let Some((st, reason)) = done.refused {
        rec.flow.bytes_toserver = done.up;
        rec.flow.bytes_toclient = done.down;
        if !done.allowed {
            state
                .metrics
                .denied
                .get_or_create(&crate::metrics::RuleLabels {
                    direction: rec.eastwall.direction.as_str(),
                    rule: rec.eastwall.policy.rule.clone(),
                    mode: "enforce",
                    action: "deny",
                })
                .inc();
        }
        if let RelayEnd::Failed(e) = done.end {
            rec.eastwall.error.get_or_insert(e.to_string());
        }
        proxy::finish(state, rec, start, st, reason, done.allowed);
        return;
    }
    proxy::closed(state, rec, start, done.up, done.down, done.end);
}
