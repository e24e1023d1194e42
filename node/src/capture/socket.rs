//! Every transparent-socket system call of the node, in one place.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// Opens a listener that receives TPROXY-captured connections on `addr`: `IP_TRANSPARENT`
/// lets it accept connections addressed to any destination, which `local_addr()` of each
/// accepted socket then reports. `mark` (the node's own mark) goes on every packet the
/// listener and its accepted sockets send, so capture of locally originated traffic never
/// takes the node's replies for new connections.
pub fn transparent_listener(addr: SocketAddr, mark: u32) -> io::Result<TcpListener> {
    let domain = Domain::for_address(addr);
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_mark(mark)?;
    match addr.ip() {
        IpAddr::V4(_) => s.set_ip_transparent_v4(true)?,
        IpAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_ip_transparent_v6(true)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Connects to `dst` from `src_ip` (the workload's address, which this host does not own:
/// `IP_TRANSPARENT` allows binding it), with `mark` on the socket so capture skips it.
pub async fn connect_spoofed(
    src_ip: Option<IpAddr>,
    dst: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let domain = Domain::for_address(dst);
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    if let Some(ip) = src_ip {
        match ip {
            IpAddr::V4(_) => s.set_ip_transparent_v4(true)?,
            IpAddr::V6(_) => s.set_ip_transparent_v6(true)?,
        }
        // The port is chosen at `connect`, for the whole 4-tuple. Bound to port 0 without
        // this, the socket took a port no other socket of that address held, TIME_WAIT ones
        // included, and the L7 path (which closes upstream connections first) piles up tens
        // of thousands of those under Connection: close load.
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
            .map_err(io::Error::from)?;
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let sock = TcpSocket::from_std_stream(s.into());
    let stream = tokio::time::timeout(timeout, sock.connect(dst))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Closes `stream` with a TCP reset (SO_LINGER 0), which is how a denied connection is refused.
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Opens a UDP socket that receives TPROXY-captured datagrams on `addr`, each with its
/// original destination (`IP_RECVORIGDSTADDR` / `IPV6_RECVORIGDSTADDR`), and sends with
/// `mark` (the node's own mark).
pub(crate) fn transparent_udp_listener(addr: SocketAddr, mark: u32) -> io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_mark(mark)?;
    match addr.ip() {
        IpAddr::V4(_) => {
            s.set_ip_transparent_v4(true)?;
            setsockopt(&s, sockopt::Ipv4OrigDstAddr, &true).map_err(io::Error::from)?;
        }
        IpAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_ip_transparent_v6(true)?;
            setsockopt(&s, sockopt::Ipv6OrigDstAddr, &true).map_err(io::Error::from)?;
        }
    }
    // Bursts of new sessions arrive here before their own sockets exist.
    let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// One datagram a transparent listener received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Captured {
    /// Its length in the buffer.
    pub(crate) len: usize,
    /// Who sent it.
    pub(crate) src: SocketAddr,
    /// Where it was going.
    pub(crate) dst: SocketAddr,
    /// Whether it was longer than the buffer (and cut).
    pub(crate) truncated: bool,
}

/// Receives one datagram captured by `sock` into `buf`.
pub(crate) async fn recv_captured(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Captured> {
    use std::os::fd::AsRawFd;
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || {
            recv_orig_dst(sock.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

fn recv_orig_dst(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<Captured> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let src = msg
        .address
        .and_then(|a| match a.family() {
            Some(nix::sys::socket::AddressFamily::Inet) => a
                .as_sockaddr_in()
                .map(|s| SocketAddr::from(std::net::SocketAddrV4::from(*s))),
            Some(nix::sys::socket::AddressFamily::Inet6) => a
                .as_sockaddr_in6()
                .map(|s| SocketAddr::from(std::net::SocketAddrV6::from(*s))),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("captured datagram without a source address"))?;
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                dst = Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                dst = Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)));
            }
            _ => {}
        }
    }
    let dst =
        dst.ok_or_else(|| io::Error::other("captured datagram without its original destination"))?;
    Ok(Captured {
        len: msg.bytes,
        src,
        dst,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
    })
}

/// A UDP socket bound to `local` (an address this host may not own: `IP_TRANSPARENT`) and
/// connected to `peer`, with `mark` so that capture skips it. Several sessions may share a
/// local address (a server's, toward each of its clients): `SO_REUSEADDR`, and the kernel
/// delivers each datagram to the socket connected to its sender.
pub(crate) fn udp_spoofed(local: SocketAddr, peer: SocketAddr, mark: u32) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_mark(mark)?;
    match local.ip() {
        IpAddr::V4(_) => s.set_ip_transparent_v4(true)?,
        IpAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_ip_transparent_v6(true)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&local.into())?;
    s.connect(&peer.into())?;
    UdpSocket::from_std(s.into())
}
