//! The client's side of an inspected connection as one byte stream, whatever carries it (a
//! captured TCP socket, a QUIC tunnel stream, an HTTP/2 CONNECT stream): the bytes already
//! read for protocol detection are read again first, and bytes are counted each way for the
//! flow record.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client stream whose first bytes were already read (to detect the protocol): they are
/// read again first. Bytes read and written are counted.
pub(crate) struct ClientIo<T> {
    prefix: Bytes,
    inner: T,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

/// Bytes from and to the client of a [`ClientIo`], readable while it is in use.
#[derive(Clone, Default)]
pub(crate) struct Counts {
    /// Bytes read from the client (the prefix included).
    pub(crate) read: Arc<AtomicU64>,
    /// Bytes written to the client.
    pub(crate) written: Arc<AtomicU64>,
}

impl Counts {
    /// (read, written) so far.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

impl<T> ClientIo<T> {
    /// `inner`, with `prefix` read before it, counting into `counts`.
    pub(crate) fn new(prefix: Bytes, inner: T, counts: &Counts) -> Self {
        ClientIo {
            prefix,
            inner,
            read: counts.read.clone(),
            written: counts.written.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_the_prefix_first_writes_through_and_counts_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let counts = Counts::default();
        let mut r = ClientIo::new(Bytes::from_static(b"GET "), a, &counts);
        b.write_all(b"/ HTTP/1.1\r\n").await.unwrap();
        let mut got = vec![0u8; 16];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        r.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
        assert_eq!(counts.get(), (16, 2));
    }
}
