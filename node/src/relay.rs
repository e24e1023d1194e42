//! Copying bytes between the two sides of a relayed connection, whatever they are: a TCP
//! socket here, a QUIC stream or an HTTP/2 CONNECT stream (their [`Source`] and [`Sink`]
//! are with the tunnel transports). A relay reads a burst into a buffer
//! sized to it and hands the buffer over without copying it again; it holds no buffer while a
//! connection is idle.

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
pub(crate) async fn poll_once<T>(
    mut f: impl FnMut(&mut std::task::Context<'_>) -> Poll<T>,
) -> Poll<T> {
    std::future::poll_fn(|cx| Poll::Ready(f(cx))).await
}

/// Grows the read hint after a burst that filled it.
pub(crate) fn grow(hint: &mut usize, got: usize) {
    if got >= *hint {
        *hint = (*hint * 2).min(MAX_READ);
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
    // Built in place: a future handed to a helper by value is stored twice in the
    // connection's task (as the helper's argument, then where the helper pins it), and the
    // task lives as long as the connection.
    tokio::try_join!(pipe(cr, sw, up), pipe(sr, cw, down)).err()
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

/// Where a datagram relay reads from: one whole datagram at a time.
pub(crate) trait DatagramSource {
    /// The next datagram; `None` when the other side has ended (a tunnel stream's end).
    async fn recv(&mut self) -> io::Result<Option<Bytes>>;
}

/// Where a datagram relay writes to.
pub(crate) trait DatagramSink {
    /// Sends one datagram.
    async fn send(&mut self, datagram: Bytes) -> io::Result<()>;
}

/// Largest UDP payload.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

std::thread_local! {
    /// Where a datagram lands before it is copied out at its size: one buffer per thread, so
    /// an idle session holds none.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// A connected UDP socket: datagrams from and to its peer.
impl DatagramSource for &tokio::net::UdpSocket {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            self.readable().await?;
            let got = RECV_BUF.with_borrow_mut(|buf| {
                self.try_recv(buf)
                    .map(|n| Bytes::copy_from_slice(&buf[..n]))
            });
            match got {
                Ok(d) => return Ok(Some(d)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A port unreachable answer to an earlier datagram: UDP goes on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl DatagramSink for &tokio::net::UdpSocket {
    async fn send(&mut self, datagram: Bytes) -> io::Result<()> {
        match tokio::net::UdpSocket::send(self, &datagram).await {
            // As above: the peer's port was closed a moment ago; the datagram is lost, as UDP
            // datagrams may be.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

/// Datagrams in DATAGRAM capsules on a byte stream (`eastwall_wire::capsule`).
pub(crate) struct CapsuleSource<R> {
    inner: R,
    reader: eastwall_wire::capsule::CapsuleReader,
}

impl<R: Source> CapsuleSource<R> {
    /// The datagrams of the byte stream `inner`.
    pub(crate) fn new(inner: R) -> Self {
        CapsuleSource {
            inner,
            reader: eastwall_wire::capsule::CapsuleReader::new(),
        }
    }
}

impl<R: Source> DatagramSource for CapsuleSource<R> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        let mut hint = FIRST_READ;
        loop {
            if let Some(d) = self.reader.next_datagram().map_err(invalid)? {
                return Ok(Some(d));
            }
            match self.inner.next(&mut hint).await? {
                Some(b) => self.reader.push(&b),
                None => {
                    self.reader.finish().map_err(invalid)?;
                    return Ok(None);
                }
            }
        }
    }
}

fn invalid(e: eastwall_wire::capsule::CapsuleError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Datagrams written as DATAGRAM capsules to a byte stream.
pub(crate) struct CapsuleSink<W>(pub(crate) W);

impl<W: Sink> DatagramSink for CapsuleSink<W> {
    async fn send(&mut self, datagram: Bytes) -> io::Result<()> {
        self.0
            .put(eastwall_wire::capsule::datagram(&datagram))
            .await
    }
}

/// Messages each behind a two-byte length on a byte stream (DNS over TCP, RFC 1035 4.2.2),
/// read one whole message at a time.
pub(crate) struct FramedSource<R> {
    inner: R,
    buf: bytes::BytesMut,
}

impl<R: Source> FramedSource<R> {
    /// The messages of the byte stream `inner`.
    pub(crate) fn new(inner: R) -> Self {
        FramedSource {
            inner,
            buf: bytes::BytesMut::new(),
        }
    }
}

impl<R: Source> DatagramSource for FramedSource<R> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        let mut hint = FIRST_READ;
        loop {
            if self.buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
                if self.buf.len() >= 2 + len {
                    let mut frame = self.buf.split_to(2 + len);
                    return Ok(Some(frame.split_off(2).freeze()));
                }
            }
            match self.inner.next(&mut hint).await? {
                Some(b) => self.buf.extend_from_slice(&b),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended inside a length-prefixed message",
                    ));
                }
            }
        }
    }
}

/// Messages written each behind a two-byte length to a byte stream.
pub(crate) struct FramedSink<W>(pub(crate) W);

impl<W: Sink> DatagramSink for FramedSink<W> {
    async fn send(&mut self, message: Bytes) -> io::Result<()> {
        let len = u16::try_from(message.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "message longer than 65535 bytes",
            )
        })?;
        let mut framed = bytes::BytesMut::with_capacity(2 + message.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&message);
        self.0.put(framed.freeze()).await
    }
}

/// Datagrams and bytes that went one way.
#[derive(Debug, Default)]
pub(crate) struct DatagramCount {
    /// Datagrams.
    pub(crate) packets: std::sync::atomic::AtomicU64,
    /// Payload bytes.
    pub(crate) bytes: std::sync::atomic::AtomicU64,
}

impl DatagramCount {
    fn add(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(n as u64, Relaxed);
    }

    /// (datagrams, bytes) so far.
    pub(crate) fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.packets.load(Relaxed), self.bytes.load(Relaxed))
    }
}

/// When a datagram last went either way on a session (shared with the session table, which
/// evicts idle sessions first).
#[derive(Debug)]
pub(crate) struct Activity {
    since: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            since: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// A datagram went through now.
    pub(crate) fn touch(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the last datagram went through.
    pub(crate) fn last(&self) -> tokio::time::Instant {
        let ms = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.since + std::time::Duration::from_millis(ms)
    }

    /// How long no datagram has gone through.
    pub(crate) fn idle_for(&self) -> std::time::Duration {
        self.last().elapsed()
    }
}

/// How a datagram relay ended.
#[derive(Debug)]
pub(crate) enum DatagramEnd {
    /// No datagram either way for the idle time.
    Idle,
    /// A tunnel stream ended.
    Ended,
    /// A side failed.
    Failed(io::Error),
}

/// Relays datagrams both ways (client → server counted in `up`, back in `down`) until no
/// datagram has gone either way for `idle` (as `activity` tells), a side ends, or one fails.
pub(crate) async fn relay_datagrams<CR, CW, SR, SW>(
    (cr, cw): (CR, CW),
    (sr, sw): (SR, SW),
    (idle, activity): (std::time::Duration, &Activity),
    up: &DatagramCount,
    down: &DatagramCount,
) -> DatagramEnd
where
    CR: DatagramSource,
    CW: DatagramSink,
    SR: DatagramSource,
    SW: DatagramSink,
{
    let touch = || activity.touch();
    async fn pipe_datagrams<R: DatagramSource, W: DatagramSink>(
        mut r: R,
        mut w: W,
        count: &DatagramCount,
        touch: &impl Fn(),
    ) -> DatagramEnd {
        loop {
            match r.recv().await {
                Ok(Some(d)) => {
                    touch();
                    count.add(d.len());
                    if let Err(e) = w.send(d).await {
                        return DatagramEnd::Failed(e);
                    }
                }
                Ok(None) => return DatagramEnd::Ended,
                Err(e) => return DatagramEnd::Failed(e),
            }
        }
    }
    let idle_watch = async {
        loop {
            let seen = activity.last();
            tokio::time::sleep_until(seen + idle).await;
            if activity.last() == seen {
                return DatagramEnd::Idle;
            }
        }
    };
    tokio::select! {
        e = pipe_datagrams(cr, sw, up, &touch) => e,
        e = pipe_datagrams(sr, cw, down, &touch) => e,
        e = idle_watch => e,
    }
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

    #[tokio::test]
    async fn framed_messages_survive_any_split() {
        let mut stream = Vec::new();
        let mut sink = FramedSink(Collect::default());
        for m in [&b"first"[..], b"", b"third message"] {
            sink.send(Bytes::copy_from_slice(m)).await.unwrap();
        }
        stream.extend_from_slice(&sink.0.0);
        assert_eq!(&stream[..7], b"\0\x05first");
        // Every way of cutting the stream in two reads the same three messages.
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let chunks = vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)];
            let mut src = FramedSource::new(Chunks(chunks));
            let mut got = Vec::new();
            while let Some(m) = src.recv().await.unwrap() {
                got.push(m);
            }
            assert_eq!(got, [&b"first"[..], b"", b"third message"], "cut at {cut}");
        }
        // A stream that ends inside a message is an error, not a short message.
        let mut src = FramedSource::new(Chunks(vec![Bytes::from_static(b"\0\x09abc")]));
        assert!(src.recv().await.is_err());
    }
}
