//! Copying bytes between the two sides of a relayed connection, whatever they are: a TCP
//! socket here, a QUIC stream or an HTTP/2 CONNECT stream (their [`Source`] and [`Sink`]
//! are with the tunnel transports). A relay reads a burst into a buffer
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
}
