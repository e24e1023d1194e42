//! The client's side of an inspected connection as one byte stream, whatever carries it (a
//! captured TCP socket, a QUIC tunnel stream, an HTTP/2 CONNECT stream): the bytes already
//! read for protocol detection are read again first, and bytes are counted each way for the
//! flow record. For the IDS, HTTP/1 heads can be kept as received ([`RawHeads`]) from the
//! bytes hyper reads, on the client's side and on the server's.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use eastwall_ids::h1::{self, Framer, Method, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// HTTP/1 heads as they were received, in order, for the request handler to take one per
/// message hyper hands it. Framing the bytes hyper parses keeps the two in step; once they
/// may not be (bytes that do not frame, too many heads waiting, a head that does not match
/// the message), none are given any more and the IDS sees heads rebuilt from hyper's.
#[derive(Clone, Default)]
pub(crate) struct RawHeads(Arc<Mutex<RawHeadsState>>);

#[derive(Default)]
struct RawHeadsState {
    heads: VecDeque<Vec<u8>>,
    /// Responses: the methods of the requests sent, for the framer.
    methods: VecDeque<Method>,
    lost: bool,
}

/// Heads framed but not yet taken: hyper reads ahead at most one buffer of pipelined
/// requests, so more means the two are not in step.
const MAX_WAITING_HEADS: usize = 64;

impl RawHeads {
    fn state(&self) -> std::sync::MutexGuard<'_, RawHeadsState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, head: Vec<u8>) {
        let mut s = self.state();
        if s.lost || s.heads.len() >= MAX_WAITING_HEADS {
            s.lose();
        } else {
            s.heads.push_back(head);
        }
    }

    /// The heads are not in step with the messages: none are given from now on.
    pub(crate) fn lose(&self) {
        self.state().lose();
    }

    /// The next request head as received.
    pub(crate) fn next_request(&self) -> Option<Vec<u8>> {
        let mut s = self.state();
        if s.lost {
            return None;
        }
        s.heads.pop_front()
    }

    /// The next final response head as received (interim 1xx heads, which hyper does not
    /// hand over, are skipped).
    pub(crate) fn next_response(&self) -> Option<Vec<u8>> {
        let mut s = self.state();
        while !s.lost {
            let head = s.heads.pop_front()?;
            let interim = h1::parse_response(&head)
                .is_some_and(|r| (100..200).contains(&r.status) && r.status != 101);
            if !interim {
                return Some(head);
            }
        }
        None
    }

    /// A request with `method` was sent on the connection whose responses these are.
    pub(crate) fn expect_response_to(&self, method: Method) {
        let mut s = self.state();
        if !s.lost && s.methods.len() < MAX_WAITING_HEADS {
            s.methods.push_back(method);
        }
    }
}

impl RawHeadsState {
    fn lose(&mut self) {
        self.lost = true;
        self.heads = VecDeque::new();
        self.methods = VecDeque::new();
    }
}

/// Frames the bytes one side sends into [`RawHeads`].
pub(crate) struct HeadTap {
    framer: Framer,
    heads: RawHeads,
}

impl HeadTap {
    /// A tap of `role`'s heads (at most `max_head` bytes each) into `heads`.
    pub(crate) fn new(role: Role, max_head: usize, heads: RawHeads) -> Self {
        HeadTap {
            framer: Framer::new(role, max_head),
            heads,
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.framer.stopped() {
            return;
        }
        {
            let mut s = self.heads.state();
            for m in s.methods.drain(..) {
                self.framer.expect_response_to(m);
            }
        }
        let heads = &self.heads;
        self.framer.push(bytes, |e| match e {
            h1::Event::Head(h) => heads.push(h),
            h1::Event::Stopped(h1::Stop::NotHttp) => heads.lose(),
            h1::Event::Body { .. } | h1::Event::Stopped(h1::Stop::Switched) => {}
        });
    }
}

/// One side of an inspected connection: the client's, whose first bytes were already read
/// (to detect the protocol) and are read again first, or the server's (no such bytes).
/// Bytes read and written are counted; reads may go through a [`HeadTap`].
pub(crate) struct ClientIo<T> {
    prefix: Bytes,
    inner: T,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    tap: Option<HeadTap>,
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
            tap: None,
        }
    }

    /// The same, its reads framed by `tap`.
    pub(crate) fn tapped(mut self, tap: Option<HeadTap>) -> Self {
        self.tap = tap;
        self
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = if this.prefix.is_empty() {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            Poll::Ready(Ok(()))
        };
        let read = &buf.filled()[before..];
        this.read.fetch_add(read.len() as u64, Ordering::Relaxed);
        if let Some(tap) = &mut this.tap {
            tap.read(read);
        }
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

    #[tokio::test]
    async fn heads_are_kept_as_received_from_what_is_read() {
        let (a, mut b) = tokio::io::duplex(4096);
        let heads = RawHeads::default();
        let tap = HeadTap::new(Role::Request, 1024, heads.clone());
        let mut r =
            ClientIo::new(Bytes::from_static(b"GET "), a, &Counts::default()).tapped(Some(tap));
        let rest = b"/a HTTP/1.1\r\nhost:x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok";
        b.write_all(rest).await.unwrap();
        drop(b);
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(
            heads.next_request().as_deref(),
            Some(&b"GET /a HTTP/1.1\r\nhost:x\r\n\r\n"[..])
        );
        assert_eq!(
            heads.next_request().as_deref(),
            Some(&b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n"[..])
        );
        assert_eq!(heads.next_request(), None);
    }

    #[tokio::test]
    async fn responses_follow_the_requests_sent_and_skip_interim_heads() {
        let (a, mut b) = tokio::io::duplex(4096);
        let heads = RawHeads::default();
        let tap = HeadTap::new(Role::Response, 1024, heads.clone());
        let mut r = ClientIo::new(Bytes::new(), a, &Counts::default()).tapped(Some(tap));
        heads.expect_response_to(Method::Head);
        heads.expect_response_to(Method::Other);
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        let wire = format!("HTTP/1.1 100 Continue\r\n\r\n{ok}{ok}ok");
        b.write_all(wire.as_bytes()).await.unwrap();
        drop(b);
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(heads.next_response().as_deref(), Some(ok.as_bytes()));
        assert_eq!(heads.next_response().as_deref(), Some(ok.as_bytes()));
        assert_eq!(heads.next_response(), None);
    }

    #[test]
    fn bytes_that_do_not_frame_lose_every_head() {
        let heads = RawHeads::default();
        let mut tap = HeadTap::new(Role::Request, 1024, heads.clone());
        tap.read(b"GET / HTTP/1.1\r\n\r\n");
        tap.read(b"\x16\x03\x01 not http\r\n\r\n");
        assert_eq!(heads.next_request(), None);
        // Too many heads waiting: none are given.
        let heads = RawHeads::default();
        let mut tap = HeadTap::new(Role::Request, 1024, heads.clone());
        for _ in 0..=MAX_WAITING_HEADS {
            tap.read(b"GET / HTTP/1.1\r\n\r\n");
        }
        assert_eq!(heads.next_request(), None);
    }
}
