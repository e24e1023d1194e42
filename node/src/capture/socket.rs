//! Every transparent-socket system call of the node, in one place.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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
