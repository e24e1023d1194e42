//! The HTTP/2 transport: mutually authenticated TLS 1.3 over TCP, HTTP/2 on top (ALPN `h2`),
//! one CONNECT stream per workload connection (HBONE-shaped, see [`connect`](super::connect)).
//! The kernel's TCP carries the bytes, which costs about half the CPU per byte of QUIC in
//! user space on this kind of machine (`docs/TUNNEL.md`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, warn};

use eastwall_wire::connect;
use eastwall_wire::header::{Response, Status, StreamHeader, StreamKind};

use super::pool::{Connector, OpenError, PoolKey};
use super::server::{Acceptor, HEADER_TIMEOUT, PeerConn, ServerStream};
use crate::identity::LocalIdentities;
use crate::relay::{Abort, Sink, Source, grow, poll_once};

/// ALPN of the HTTP/2 transport.
pub(crate) const ALPN: &[u8] = b"h2";

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

/// An HTTP/2 stream error as an I/O error (the I/O error itself when it is one).
pub(crate) fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"))
    } else {
        io::Error::other(e)
    }
}

impl Source for h2::RecvStream {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        let Some(first) = self.data().await.transpose().map_err(h2_io)? else {
            return Ok(None);
        };
        // Give the window back as soon as the bytes are ours: the peer may send the next
        // burst while this one is written out; memory stays bounded by the window.
        let _ = self.flow_control().release_capacity(first.len());
        // DATA frames are usually as large as the peer's reads; gather small ones that have
        // already arrived, as for QUIC.
        if first.len() >= *hint {
            return Ok(Some(first));
        }
        let mut buf = BytesMut::with_capacity(*hint);
        buf.extend_from_slice(&first);
        while buf.len() < *hint {
            match poll_once(|cx| self.poll_data(cx)).await {
                Poll::Ready(Some(Ok(b))) => {
                    let _ = self.flow_control().release_capacity(b.len());
                    buf.extend_from_slice(&b);
                }
                // An error or the end: what was gathered goes out now; the next call sees
                // the end (or the stream's error) again.
                Poll::Ready(_) | Poll::Pending => break,
            }
        }
        grow(hint, buf.len());
        Ok(Some(buf.freeze()))
    }
}

impl Sink for h2::SendStream<Bytes> {
    async fn put(&mut self, mut bytes: Bytes) -> io::Result<()> {
        while !bytes.is_empty() {
            // Send only what the peer's window (and h2's send buffer) admits, so a slow
            // reader pushes back on the workload instead of filling memory.
            self.reserve_capacity(bytes.len());
            let granted = std::future::poll_fn(|cx| self.poll_capacity(cx)).await;
            let n = match granted {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(h2_io(e)),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HTTP/2 stream closed",
                    ));
                }
            };
            if n == 0 {
                continue;
            }
            let chunk = bytes.split_to(n.min(bytes.len()));
            self.send_data(chunk, false).map_err(h2_io)?;
        }
        Ok(())
    }
    async fn close(&mut self) -> io::Result<()> {
        // A peer that reset the stream with NO_ERROR or CANCEL after it was done (it closed
        // its whole side, as a TCP peer closing with our bytes unread) needs no END_STREAM:
        // the flow ended normally, not in an "inactive stream" error.
        if let Poll::Ready(Ok(reason)) = poll_once(|cx| self.poll_reset(cx)).await {
            return if reason == h2::Reason::NO_ERROR || reason == h2::Reason::CANCEL {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("stream reset by peer: {reason}"),
                ))
            };
        }
        self.send_data(Bytes::new(), true).map_err(h2_io)
    }
}

impl Abort for h2::SendStream<Bytes> {
    fn abort(&mut self) {
        self.send_reset(h2::Reason::CANCEL);
    }
}

/// An HTTP/2 CONNECT stream as a byte stream.
pub(crate) struct H2Io {
    recv: h2::RecvStream,
    send: h2::SendStream<Bytes>,
    /// Received bytes not yet read.
    pending: Bytes,
}

impl H2Io {
    /// The stream made of `recv` and `send`.
    pub(crate) fn new(recv: h2::RecvStream, send: h2::SendStream<Bytes>) -> Self {
        H2Io {
            recv,
            send,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(b)) => {
                    let _ = self.recv.flow_control().release_capacity(b.len());
                    self.pending = b;
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        match ready!(self.send.poll_capacity(cx)) {
            Some(Ok(0)) => {
                // Capacity can shrink to nothing; wait for the next grant.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Ok(n)) => {
                let n = n.min(buf.len());
                self.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(h2_io)?;
                Poll::Ready(Ok(n))
            }
            Some(Err(e)) => Poll::Ready(Err(h2_io(e))),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HTTP/2 stream closed",
            ))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 sends what it was given as the window allows; nothing is held back here.
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.send.send_data(Bytes::new(), true).map_err(h2_io))
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
    header: &StreamHeader,
) -> Result<(h2::SendStream<Bytes>, h2::client::ResponseFuture), OpenError> {
    let fail = |e: h2::Error| match conn.handshake_refusal() {
        Some(reason) => OpenError::Connect {
            node: key.node,
            reason,
        },
        None => OpenError::Stream(e.to_string()),
    };
    let mut send = conn.send.clone().ready().await.map_err(fail)?;
    let mut req = connect::request(header);
    if header.kind == StreamKind::Udp {
        // Extended CONNECT (RFC 8441): the destination node announces it.
        req.extensions_mut()
            .insert(h2::ext::Protocol::from_static(connect::CONNECT_UDP));
    }
    let (response, stream) = send.send_request(req, false).map_err(fail)?;
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
pub(crate) fn listener(port: u16, own_mark: u32) -> anyhow::Result<TcpListener> {
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

/// Accepts HTTP/2 tunnel connections until the task is dropped; each stream goes to
/// `acceptor`.
pub(crate) async fn serve<A: Acceptor<H2Stream>>(
    listener: TcpListener,
    identities: Arc<LocalIdentities>,
    acceptor: Arc<A>,
) {
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
                let (tls, acceptor) = (tls.clone(), acceptor.clone());
                tokio::spawn(async move { connection(tcp, remote, tls, acceptor).await });
            }
            Err(e) => {
                warn!(%e, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<A: Acceptor<H2Stream>>(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    acceptor: Arc<A>,
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
            // CONNECT-UDP streams are extended CONNECTs.
            .enable_connect_protocol()
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        Ok((conn, id, asked))
    };
    let (mut conn, id, asked) = match tokio::time::timeout(HEADER_TIMEOUT, accepted).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => return acceptor.handshake_refused("h2", remote, &why),
        Err(_) => return acceptor.handshake_refused("h2", remote, "handshake timed out"),
    };
    let peer = Arc::new(PeerConn {
        remote,
        id,
        asked,
        transport: "h2",
    });
    while let Some(next) = conn.accept().await {
        match next {
            Ok((req, respond)) => {
                let (acceptor, peer) = (acceptor.clone(), peer.clone());
                // The request's head is read before the task starts: the task lives as long as
                // the stream, and holds only what the stream needs.
                let (parts, recv) = req.into_parts();
                let protocol = parts.extensions.get::<h2::ext::Protocol>();
                let header = connect::parse_request(&parts, protocol.map(|p| p.as_str()))
                    .map_err(|e| e.to_string());
                drop(parts);
                let stream = H2Stream { respond, recv };
                tokio::spawn(async move {
                    acceptor.stream(stream, header, Bytes::new(), peer).await;
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
pub(crate) struct H2Stream {
    respond: h2::server::SendResponse<Bytes>,
    recv: h2::RecvStream,
}

impl ServerStream for H2Stream {
    type Recv = h2::RecvStream;
    type Send = h2::SendStream<Bytes>;
    type Io = H2Io;

    fn recv_mut(&mut self) -> &mut h2::RecvStream {
        &mut self.recv
    }

    fn into_io(recv: h2::RecvStream, send: h2::SendStream<Bytes>) -> Self::Io {
        H2Io::new(recv, send)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client stream whose server answered in full and then dropped the stream (h2 sends
    /// RST_STREAM CANCEL) ends normally; a reset with another reason is an error.
    #[tokio::test]
    async fn an_h2_stream_the_peer_finished_and_cancelled_closes_cleanly() {
        async fn exchange(reason: Option<h2::Reason>) -> io::Result<()> {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let server = tokio::spawn(async move {
                let mut conn = h2::server::handshake(b).await.unwrap();
                let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
                let mut send = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                send.send_data(Bytes::from_static(b"bye"), true).unwrap();
                if let Some(r) = reason {
                    send.send_reset(r);
                }
                drop((send, _req));
                // Keep the connection going until the client is done.
                while conn.accept().await.is_some() {}
            });
            let (client, conn) = h2::client::handshake(a).await.unwrap();
            tokio::spawn(conn);
            let mut client = client.ready().await.unwrap();
            let req = http::Request::builder()
                .method("CONNECT")
                .uri("10.0.0.1:80")
                .body(())
                .unwrap();
            let (resp, mut send) = client.send_request(req, false).unwrap();
            // The answer may already be overtaken by the reset.
            if let Ok(resp) = resp.await {
                let mut body = resp.into_body();
                while let Some(Ok(_)) = body.data().await {}
            }
            if reason.is_some() {
                // Wait for the reset itself.
                let wait = std::future::poll_fn(|cx| send.poll_reset(cx));
                tokio::time::timeout(std::time::Duration::from_secs(10), wait)
                    .await
                    .expect("the server's reset arrives")
                    .expect("a reset, not a connection error");
            }
            let r = send.close().await;
            drop(client);
            server.abort();
            r
        }
        exchange(None)
            .await
            .expect("dropped after END_STREAM: a normal end");
        exchange(Some(h2::Reason::CANCEL)).await.expect("CANCEL");
        let e = exchange(Some(h2::Reason::INTERNAL_ERROR))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
}
