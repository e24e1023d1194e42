//! The HTTP/2 transport: mutually authenticated TLS 1.3 over TCP, HTTP/2 on top (ALPN `h2`),
//! one CONNECT stream per workload connection (HBONE-shaped, see [`connect`](super::connect)).
//! The kernel's TCP carries the bytes, which costs about half the CPU per byte of QUIC in
//! user space on this kind of machine (`docs/TUNNEL.md`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, warn};

use super::connect;
use super::header::{Response, Status};
use super::pool::{Connector, OpenError, PoolKey};
use super::server::{self, HEADER_TIMEOUT, PeerConn, ServerStream};
use crate::identity::LocalIdentities;
use crate::state::NodeState;

/// ALPN of the HTTP/2 transport.
pub const ALPN: &[u8] = b"h2";

/// Per-stream flow-control window: a bulk stream on a LAN keeps its link busy with it.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Per-connection window: room for several bulk streams at once.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame: one relay read (at most `relay::MAX_READ`, 256 KiB) is one frame.
const MAX_FRAME: u32 = 256 * 1024;
/// Bytes h2 buffers per stream before the relay waits for the peer's window.
const SEND_BUFFER: usize = 1024 * 1024;
/// Largest request or response header block (the tunnel's own headers are ~100 bytes).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams one connection may carry at once.
const MAX_STREAMS: u32 = 10_000;

/// A pooled HTTP/2 connection: the handle for new streams and what ended it.
#[derive(Clone)]
pub(crate) struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    ended: Arc<Ended>,
}

/// Set by the task driving a connection when it stops.
#[derive(Default)]
struct Ended {
    done: AtomicBool,
    why: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Ended {
    fn finish(&self, why: Option<String>) {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why;
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Why the connection ended, waiting up to `within` for its driver to say.
    async fn reason(&self, within: Duration) -> Option<String> {
        let ended = async {
            loop {
                let n = self.notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.done.load(Ordering::Acquire) {
                    return;
                }
                n.await;
            }
        };
        let _ = tokio::time::timeout(within, ended).await;
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl H2Conn {
    /// Why the peer refused this connection during the TLS handshake, if it did. With TLS
    /// 1.3 a refused client certificate arrives as an alert after the client's handshake
    /// finished.
    pub(crate) fn handshake_refusal(&self) -> Option<String> {
        let why = self.ended.why.lock().unwrap_or_else(|p| p.into_inner());
        why.as_ref().filter(|w| w.contains("alert")).cloned()
    }
}

/// Socket settings of both ends of a tunnel TCP connection.
fn tune(s: &Socket, own_mark: u32) -> io::Result<()> {
    // The node's own packets are never captured, even with local-traffic capture on.
    s.set_mark(own_mark)?;
    s.set_tcp_nodelay(true)?;
    // A peer that vanished is noticed within about half a minute even while idle.
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5))
            .with_retries(3),
    )
}

/// Dials HTTP/2-over-TLS connections.
pub(crate) struct H2Connector {
    pub(crate) identities: Arc<LocalIdentities>,
    pub(crate) own_mark: u32,
    /// Bound on TCP connect + TLS + HTTP/2 handshake.
    pub(crate) handshake_timeout: Duration,
}

impl H2Connector {
    async fn dial_inner(&self, key: &PoolKey) -> Result<H2Conn, OpenError> {
        let failed = |reason: String| OpenError::Connect {
            node: key.node,
            reason,
        };
        let tls = super::pool::client_tls(&self.identities, key, ALPN)?;
        let sni = ServerName::try_from(eastwall_certs::sni_for(&key.dst))
            .map_err(|e| OpenError::Config(e.to_string()))?;
        let s = Socket::new(
            Domain::for_address(key.node),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .and_then(|s| {
            tune(&s, self.own_mark)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .map_err(|e| failed(e.to_string()))?;
        let tcp = TcpSocket::from_std_stream(s.into())
            .connect(key.node)
            .await
            .map_err(|e| failed(format!("TCP: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(sni, tcp)
            .await
            .map_err(|e| failed(format!("TLS: {e}")))?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(failed("the peer did not agree to HTTP/2 (ALPN h2)".into()));
        }
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buffer_size(SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_concurrent_streams(0)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| failed(format!("HTTP/2: {e}")))?;
        let mut conn = conn;
        let ping = conn.ping_pong();
        let ended = Arc::new(Ended::default());
        let e2 = ended.clone();
        let node = key.node;
        tokio::spawn(async move {
            let why = conn.await.err().map(|e| {
                debug!(%node, %e, "HTTP/2 tunnel connection ended");
                e.to_string()
            });
            e2.finish(why);
        });
        // One round trip proves the server accepted this client's certificate (with TLS 1.3
        // a refusal comes after the client's side of the handshake) and is alive.
        if let Some(mut ping) = ping
            && let Err(e) = ping.ping(h2::Ping::opaque()).await
        {
            let why = ended.reason(Duration::from_millis(200)).await;
            return Err(failed(why.unwrap_or_else(|| format!("HTTP/2: {e}"))));
        }
        Ok(H2Conn { send, ended })
    }
}

impl Connector for H2Connector {
    type Conn = H2Conn;

    async fn dial(&self, key: &PoolKey) -> Result<H2Conn, OpenError> {
        match tokio::time::timeout(self.handshake_timeout, self.dial_inner(key)).await {
            Ok(r) => r,
            Err(_) => Err(OpenError::Connect {
                node: key.node,
                reason: format!(
                    "no TLS/HTTP/2 handshake within {} ms",
                    self.handshake_timeout.as_millis()
                ),
            }),
        }
    }

    fn is_open(conn: &H2Conn) -> bool {
        !conn.ended.done.load(Ordering::Acquire)
    }
}

/// Opens a CONNECT stream for one workload connection on `conn`.
pub(crate) async fn open_stream(
    conn: &H2Conn,
    key: &PoolKey,
    header: &super::header::StreamHeader,
) -> Result<(h2::SendStream<Bytes>, h2::client::ResponseFuture), OpenError> {
    let fail = |e: h2::Error| match conn.handshake_refusal() {
        Some(reason) => OpenError::Connect {
            node: key.node,
            reason,
        },
        None => OpenError::Stream(e.to_string()),
    };
    let mut send = conn.send.clone().ready().await.map_err(fail)?;
    let (response, stream) = send
        .send_request(connect::request(header), false)
        .map_err(fail)?;
    Ok((stream, response))
}

/// Waits for the destination's answer; returns it and the stream of the workload's bytes.
pub(crate) async fn read_response(
    response: h2::client::ResponseFuture,
) -> io::Result<(Response, h2::RecvStream)> {
    let r = response.await.map_err(io::Error::other)?;
    let (parts, body) = r.into_parts();
    Ok((connect::parse_response(&parts), body))
}

/// Binds the tunnel's TCP port (IPv6 socket accepting IPv4 too, else IPv4).
pub fn listener(port: u16, own_mark: u32) -> anyhow::Result<TcpListener> {
    let bind = |v6: bool| -> io::Result<TcpListener> {
        let ip: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let s = Socket::new(
            if v6 { Domain::IPV6 } else { Domain::IPV4 },
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        if v6 {
            s.set_only_v6(false)?;
        }
        s.set_reuse_address(true)?;
        tune(&s, own_mark)?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::new(ip, port).into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    };
    bind(true)
        .or_else(|_| bind(false))
        .with_context(|| format!("binding TCP port {port} for the tunnel"))
}

/// Accepts HTTP/2 tunnel connections until the task is dropped.
pub async fn serve(listener: TcpListener, identities: Arc<LocalIdentities>, state: Arc<NodeState>) {
    let tls =
        match eastwall_certs::server_config(identities.server.clone(), &identities.bundle, &[ALPN])
        {
            Ok(c) => tokio_rustls::TlsAcceptor::from(Arc::new(c)),
            Err(e) => {
                warn!(%e, "no HTTP/2 tunnel: TLS server config");
                return;
            }
        };
    loop {
        match listener.accept().await {
            Ok((tcp, remote)) => {
                let (tls, state) = (tls.clone(), state.clone());
                tokio::spawn(async move { connection(tcp, remote, tls, state).await });
            }
            Err(e) => {
                warn!(%e, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    state: Arc<NodeState>,
) {
    let _ = tcp.set_nodelay(true);
    let accepted = async {
        let tls = tls.accept(tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(ALPN) {
            return Err("the client did not ask for HTTP/2 (ALPN h2)".to_owned());
        }
        let id = session
            .peer_certificates()
            .and_then(|chain| eastwall_certs::peer_identity(chain).ok())
            // The TLS layer verified a chain, so this cannot happen; refuse rather than guess.
            .ok_or_else(|| "no peer identity".to_owned())?;
        let asked = session.server_name().map(str::to_owned);
        let conn = h2::server::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buffer_size(SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_concurrent_streams(MAX_STREAMS)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        Ok((conn, id, asked))
    };
    let (mut conn, id, asked) = match tokio::time::timeout(HEADER_TIMEOUT, accepted).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => return server::handshake_refused(&state, "h2", remote, &why),
        Err(_) => {
            return server::handshake_refused(&state, "h2", remote, "handshake timed out");
        }
    };
    let peer = Arc::new(PeerConn {
        remote,
        id: Arc::new(id),
        asked,
        transport: "h2",
    });
    while let Some(next) = conn.accept().await {
        match next {
            Ok((req, respond)) => {
                let (state, peer) = (state.clone(), peer.clone());
                tokio::spawn(async move {
                    let (parts, recv) = req.into_parts();
                    let header = connect::parse_request(&parts).map_err(|e| e.to_string());
                    let stream = H2Stream { respond, recv };
                    server::serve_stream(stream, header, Bytes::new(), &peer, &state).await;
                });
            }
            Err(e) => {
                debug!(%remote, %e, "HTTP/2 tunnel connection ended");
                return;
            }
        }
    }
}

/// One CONNECT stream at the destination.
struct H2Stream {
    respond: h2::server::SendResponse<Bytes>,
    recv: h2::RecvStream,
}

impl ServerStream for H2Stream {
    type Recv = h2::RecvStream;
    type Send = h2::SendStream<Bytes>;
    type Io = crate::l7::io::H2Io;

    fn recv_mut(&mut self) -> &mut h2::RecvStream {
        &mut self.recv
    }

    fn into_io(recv: h2::RecvStream, send: h2::SendStream<Bytes>) -> Self::Io {
        crate::l7::io::H2Io::new(recv, send)
    }

    async fn refuse(mut self, status: Status, why: &str) {
        let resp = connect::response(&Response {
            status,
            reason: why.to_owned(),
        });
        // End of stream with the response; h2 resets the request side, which the source
        // no longer needs.
        let _ = self.respond.send_response(resp, true);
    }

    async fn connected(mut self) -> io::Result<(h2::RecvStream, h2::SendStream<Bytes>)> {
        let resp = connect::response(&Response {
            status: Status::Connected,
            reason: String::new(),
        });
        let send = self
            .respond
            .send_response(resp, false)
            .map_err(io::Error::other)?;
        Ok((self.recv, send))
    }
}
