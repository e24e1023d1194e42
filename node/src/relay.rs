//! Copying bytes between the two sides of a relayed connection, whatever they are: a TCP
//! socket, a QUIC stream, or an HTTP/2 CONNECT stream. A relay reads a burst into a buffer
//! sized to it and hands the buffer over without copying it again; it holds no buffer while a
//! connection is idle.

use std::future::Future;
use std::io;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

/// First read size of a burst; doubled while reads fill it, up to [`MAX_READ`].
pub(crate) const FIRST_READ: usize = 16 * 1024;
/// Largest single read. 256 KiB rather than 64: fewer reads, writes and wake-ups per byte in
/// bulk (measured with `scripts/bench.sh --paths direct,eastwall-h2`, same session: HTTP/2
/// bulk 3.63 → 3.93 Gbit/s, 2.79 → 2.54 CPU-s/GB); a buffer is held only while a burst is
/// in flight.
pub(crate) const MAX_READ: usize = 256 * 1024;

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
    /// Ends this direction (TCP FIN, QUIC stream FIN, HTTP/2 END_STREAM).
    async fn close(&mut self) -> io::Result<()>;
}

/// A tunnel stream's sending half that can be ended abruptly when the relay fails.
pub(crate) trait Abort {
    /// Resets the stream (QUIC RESET_STREAM, HTTP/2 RST_STREAM).
    fn abort(&mut self);
}

impl<T: Source> Source for &mut T {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        (**self).next(hint).await
    }
}

impl<T: Sink> Sink for &mut T {
    async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        (**self).put(bytes).await
    }
    async fn close(&mut self) -> io::Result<()> {
        (**self).close().await
    }
}

/// Waits until `stream` is readable, then reads the burst that arrived (up to `hint`), with
/// a buffer taken only then.
async fn read_burst(stream: &tokio::net::TcpStream, hint: &mut usize) -> io::Result<Option<Bytes>> {
    loop {
        stream.readable().await?;
        let mut buf = BytesMut::with_capacity(*hint);
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                grow(hint, n);
                return Ok(Some(buf.freeze()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Source for tokio::net::tcp::ReadHalf<'_> {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        read_burst(self.as_ref(), hint).await
    }
}

impl Source for tokio::net::tcp::OwnedReadHalf {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        read_burst(self.as_ref(), hint).await
    }
}

impl Sink for tokio::net::tcp::OwnedWriteHalf {
    async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        self.write_all(&bytes).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

impl Abort for tokio::net::tcp::OwnedWriteHalf {
    fn abort(&mut self) {
        // The socket closes with a reset once both halves are dropped.
        let _ = socket2::SockRef::from(self.as_ref()).set_linger(Some(std::time::Duration::ZERO));
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

/// Polls `f` once, with the current task's waker (`Pending`: nothing there now).
async fn poll_once<T>(mut f: impl FnMut(&mut std::task::Context<'_>) -> Poll<T>) -> Poll<T> {
    std::future::poll_fn(|cx| Poll::Ready(f(cx))).await
}

/// Grows the read hint after a burst that filled it.
fn grow(hint: &mut usize, got: usize) {
    if got >= *hint {
        *hint = (*hint * 2).min(MAX_READ);
    }
}

impl Source for quinn::RecvStream {
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
        grow(hint, buf.len());
        Ok(Some(buf.freeze()))
    }
}

impl Sink for quinn::SendStream {
    async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        // quinn takes the buffer as it is: no copy on this side.
        Ok(self.write_chunk(bytes).await?)
    }
    async fn close(&mut self) -> io::Result<()> {
        self.finish().map_err(io::Error::other)
    }
}

impl Abort for quinn::SendStream {
    fn abort(&mut self) {
        let _ = self.reset(crate::tunnel::code::RELAY_ERROR);
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

/// A source that yields `early` (bytes that arrived with the tunnel's response) before the
/// rest of `inner`.
pub(crate) struct Prefixed<R> {
    /// Bytes to hand out first.
    pub(crate) early: Option<Bytes>,
    /// The stream behind them.
    pub(crate) inner: R,
}

impl<R: Source> Source for Prefixed<R> {
    async fn next(&mut self, hint: &mut usize) -> io::Result<Option<Bytes>> {
        match self.early.take() {
            Some(b) if !b.is_empty() => Ok(Some(b)),
            _ => self.inner.next(hint).await,
        }
    }
}

/// Copies both ways until both directions have ended; a half-close is passed on, and the
/// first error ends both. Counts bytes to the server in `up` and to the client in `down` as
/// they go (so they are right also when the relay is dropped halfway); returns the first
/// error. The caller resets the sockets on error.
pub(crate) async fn relay<CR, CW, SR, SW>(
    cr: CR,
    cw: CW,
    sr: SR,
    sw: SW,
    up: &mut u64,
    down: &mut u64,
) -> Option<io::Error>
where
    CR: Source,
    CW: Sink,
    SR: Source,
    SW: Sink,
{
    let to_server = pipe(cr, sw, up);
    let to_client = pipe(sr, cw, down);
    both(to_server, to_client).await.err()
}

/// Runs both directions until both have ended, or until the first error, which ends both.
pub(crate) async fn both<E>(
    a: impl Future<Output = Result<(), E>>,
    b: impl Future<Output = Result<(), E>>,
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

/// Copies `r` to `w` until `r` ends, then ends `w`; counts the bytes in `count`.
pub(crate) async fn pipe<R: Source, W: Sink>(
    mut r: R,
    mut w: W,
    count: &mut u64,
) -> io::Result<()> {
    let mut hint = FIRST_READ;
    while let Some(bytes) = r.next(&mut hint).await? {
        let n = bytes.len() as u64;
        w.put(bytes).await?;
        *count += n;
    }
    w.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Chunks(Vec<Bytes>);

    impl Source for Chunks {
        async fn next(&mut self, _hint: &mut usize) -> io::Result<Option<Bytes>> {
            Ok(if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            })
        }
    }

    #[derive(Default)]
    struct Collect(Vec<u8>, bool);

    impl Sink for Collect {
        async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
            self.0.extend_from_slice(&bytes);
            Ok(())
        }
        async fn close(&mut self) -> io::Result<()> {
            self.1 = true;
            Ok(())
        }
    }

    #[tokio::test]
    async fn prefixed_source_yields_early_bytes_first() {
        let src = Prefixed {
            early: Some(Bytes::from_static(b"ab")),
            inner: Chunks(vec![Bytes::from_static(b"cd"), Bytes::from_static(b"e")]),
        };
        let mut out = Collect::default();
        let mut n = 0;
        pipe(src, &mut out, &mut n).await.unwrap();
        assert_eq!(out.0, b"abcde");
        assert_eq!(n, 5);
        assert!(out.1, "the sink was closed at the end");
    }

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
