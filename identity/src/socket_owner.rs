//! Who owns a local TCP connection: the socket's owner uid (netlink `sock_diag`) and that
//! user's name (NSS).
//!
//! The node captures the host's own connections with TPROXY. For each one it knows the
//! process socket's address (the accepted connection's peer) and the original destination (the
//! accepted connection's local address). [`tcp_socket_owner`] asks the kernel, in one netlink
//! round trip, for the socket `peer -> destination` and returns the uid that created it and its
//! inode; [`user_name`] turns the uid into a name through NSS (`getpwuid_r`), so users from
//! LDAP or SSSD resolve as well as those of `/etc/passwd`.
//!
//! Only sockets of the caller's network namespace are visible: a process in another namespace
//! (a container) has its own socket table, and its connections are attributed by the registry
//! instead. A lookup that finds nothing returns `Ok(None)`; the caller then treats the
//! connection as the host workload without a user (fail closed: `user`/`group` rules do not
//! match it).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    ErrorBuffer, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, TCP_LISTEN, TCP_TIME_WAIT,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::{Uid, User};

/// Longest a lookup waits for the kernel's answer. The kernel answers an exact query in
/// microseconds; this only bounds a lookup if something is badly wrong.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Largest reply read. An answer to an exact query without extensions is about 150 bytes
/// (the message and a few attributes the kernel always adds); anything larger is refused.
const MAX_REPLY: usize = 8192;

/// Idle netlink sockets kept for reuse: enough for the node's blocking threads doing lookups
/// at once, few enough that a burst does not leave many descriptors open.
const MAX_IDLE_SOCKETS: usize = 8;

/// Messages that are not the answer (stale answers to an earlier request) skipped at most.
const MAX_SKIPPED: usize = 16;

/// `TCP_NEW_SYN_RECV`: a request socket (handshake not finished); it has no owner yet.
const TCP_NEW_SYN_RECV: u8 = 12;

/// The owner of a TCP socket, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketOwner {
    /// The uid the socket belongs to: the effective (fs) uid of the process that created it.
    pub uid: u32,
    /// The socket's inode number (as in `/proc/<pid>/fd/* -> socket:[inode]`).
    pub inode: u64,
}

/// Why the owner of a socket or the name of a user could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketOwnerError {
    /// The netlink `sock_diag` socket could not be opened or set up.
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] io::Error),
    /// The request could not be sent to the kernel.
    #[error("cannot send the sock_diag request: {0}")]
    Send(#[source] io::Error),
    /// Reading the kernel's answer failed.
    #[error("cannot receive the sock_diag answer: {0}")]
    Receive(#[source] io::Error),
    /// The kernel did not answer within [`LOOKUP_TIMEOUT`].
    #[error("no sock_diag answer within {LOOKUP_TIMEOUT:?}")]
    Timeout,
    /// The kernel refused the request (an error other than "no such socket").
    #[error("the kernel refused the sock_diag request: {0}")]
    Kernel(#[source] io::Error),
    /// The answer was larger than the bound this lookup reads.
    #[error("sock_diag answer of {0} bytes exceeds the limit of {MAX_REPLY}")]
    ReplyTooLarge(usize),
    /// The answer could not be decoded.
    #[error("malformed sock_diag answer: {0}")]
    Malformed(String),
    /// One end is IPv4 and the other IPv6: no TCP connection has such a tuple.
    #[error("a TCP connection cannot join {local} and {remote}: address families differ")]
    MixedFamilies {
        /// The socket's own address as given.
        local: SocketAddr,
        /// The peer address as given.
        remote: SocketAddr,
    },
    /// NSS (`getpwuid_r`) failed.
    #[error("user lookup for uid {uid} failed: {source}")]
    UserLookup {
        /// The uid asked for.
        uid: u32,
        /// What the C library reported.
        #[source]
        source: Errno,
    },
    /// NSS returned an entry whose name is empty or not UTF-8; it cannot name a user in policy.
    #[error("user entry for uid {0} has an empty or non-UTF-8 name")]
    UnusableUserName(u32),
}

/// The owner of the TCP socket `local -> remote` in the caller's network namespace.
///
/// `local` is the socket's own address and `remote` its peer: for a captured connection, the
/// accepted socket's peer and its local address (the original destination) respectively.
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as dual-stack listeners report IPv4 peers)
/// are looked up as IPv4. Returns `Ok(None)` when no process owns such a socket: none exists,
/// it lives in another network namespace, it is closing (`TIME_WAIT`, or orphaned after its
/// process closed it), or only a listener matches the local address.
///
/// Blocking: one netlink round trip on a pooled socket (see `docs/IDENTITY.md` for the cost),
/// at most [`LOOKUP_TIMEOUT`].
pub fn tcp_socket_owner(
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Option<SocketOwner>, SocketOwnerError> {
    let (local_ip, remote_ip) = (local.ip().to_canonical(), remote.ip().to_canonical());
    let family = match (local_ip, remote_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => return Err(SocketOwnerError::MixedFamilies { local, remote }),
    };
    let id = SocketId {
        source_port: local.port(),
        destination_port: remote.port(),
        source_address: local_ip,
        destination_address: remote_ip,
        // 0: sockets not bound to a device (SO_BINDTODEVICE), which is every ordinary one.
        interface_id: 0,
        // All ones: "no cookie", match by address and port alone.
        cookie: [0xff; 8],
    };

    let socket = DiagSocket::take()?;
    let answer = socket.query(family, &id)?;
    // Only a socket whose round trip completed goes back to the pool: after a timeout the
    // late answer would still be queued on it.
    socket.give_back();
    Ok(answer.and_then(|header| owner_of(&header, &id)))
}

/// The user name of `uid` from NSS (`getpwuid_r`, so LDAP/SSSD-backed hosts work too).
///
/// `Ok(None)`: no such user. Blocking: NSS may ask a directory service over the network; its
/// own cache (nscd, sssd) makes repeated lookups cheap.
pub fn user_name(uid: u32) -> Result<Option<String>, SocketOwnerError> {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => {
            // nix decodes the name lossily; a replacement character means it was not UTF-8,
            // and two such names could collide.
            if user.name.is_empty() || user.name.contains(char::REPLACEMENT_CHARACTER) {
                Err(SocketOwnerError::UnusableUserName(uid))
            } else {
                Ok(Some(user.name))
            }
        }
        Ok(None) => Ok(None),
        // getpwuid_r(3): some NSS modules report "not found" as ENOENT or ESRCH.
        Err(Errno::ENOENT | Errno::ESRCH) => Ok(None),
        Err(source) => Err(SocketOwnerError::UserLookup { uid, source }),
    }
}

/// The owner, if the kernel's answer is the exact socket asked for and a process holds it.
fn owner_of(header: &InetResponseHeader, asked: &SocketId) -> Option<SocketOwner> {
    let found = &header.socket_id;
    // An exact query falls back to a listener on the local address when no connection
    // matches; that listener is not the connection's owner.
    let same_tuple = found.source_address == asked.source_address
        && found.source_port == asked.source_port
        && found.destination_address == asked.destination_address
        && found.destination_port == asked.destination_port;
    // TIME_WAIT and request sockets report uid 0 (they have no owner): never take them for
    // root. Inode 0 means no process holds the socket any more (orphaned while closing).
    let owned =
        !matches!(header.state, TCP_LISTEN | TCP_TIME_WAIT | TCP_NEW_SYN_RECV) && header.inode != 0;
    (same_tuple && owned).then_some(SocketOwner {
        uid: header.uid,
        inode: u64::from(header.inode),
    })
}

/// Sockets kept between lookups; see [`MAX_IDLE_SOCKETS`].
static IDLE: Mutex<Vec<Socket>> = Mutex::new(Vec::new());

/// Sequence numbers tell this request's answer from a stale one.
static SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// A netlink `sock_diag` socket taken from the pool for one lookup.
struct DiagSocket(Socket);

impl DiagSocket {
    /// An idle socket from the pool, or a new one.
    fn take() -> Result<Self, SocketOwnerError> {
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(socket) => Ok(Self(socket)),
            None => Self::open(),
        }
    }

    fn open() -> Result<Self, SocketOwnerError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(SocketOwnerError::Open)?;
        socket.bind_auto().map_err(SocketOwnerError::Open)?;
        // Connected to the kernel: answers from anyone else are not delivered.
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(SocketOwnerError::Open)?;
        let timeout = TimeVal::new(
            LOOKUP_TIMEOUT.as_secs() as _,
            LOOKUP_TIMEOUT.subsec_micros() as _,
        );
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| SocketOwnerError::Open(e.into()))?;
        Ok(Self(socket))
    }

    /// Returns the socket to the pool, unless the pool is full.
    fn give_back(self) {
        let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_SOCKETS {
            idle.push(self.0);
        }
    }

    /// One exact `SOCK_DIAG_BY_FAMILY` request for TCP and its answer; `None` if the kernel
    /// has no such socket.
    fn query(
        &self,
        family: u8,
        id: &SocketId,
    ) -> Result<Option<InetResponseHeader>, SocketOwnerError> {
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let request = request_bytes(family, id, sequence);
        self.0.send(&request, 0).map_err(SocketOwnerError::Send)?;

        let deadline = Instant::now() + LOOKUP_TIMEOUT;
        let mut buf = [0u8; MAX_REPLY];
        for _ in 0..=MAX_SKIPPED {
            let len = self.receive(&mut buf, deadline)?;
            match parse_answer(&buf[..len], sequence)? {
                Answer::Stale => continue,
                Answer::Found(header) => return Ok(Some(header)),
                Answer::NotFound => return Ok(None),
            }
        }
        Err(SocketOwnerError::Malformed(format!(
            "{MAX_SKIPPED} messages without the answer to request {sequence}"
        )))
    }

    /// Reads one datagram; its full length, refused if it exceeds the buffer.
    fn receive(&self, buf: &mut [u8], deadline: Instant) -> Result<usize, SocketOwnerError> {
        loop {
            if Instant::now() >= deadline {
                return Err(SocketOwnerError::Timeout);
            }
            // MSG_TRUNC: the kernel returns the datagram's real length even if it was cut.
            match self.0.recv(&mut &mut buf[..], MsgFlags::MSG_TRUNC.bits()) {
                Ok(len) if len > buf.len() => return Err(SocketOwnerError::ReplyTooLarge(len)),
                Ok(len) => return Ok(len),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(SocketOwnerError::Timeout);
                }
                Err(e) => return Err(SocketOwnerError::Receive(e)),
            }
        }
    }
}

/// The serialized netlink request for the exact socket `id` of `family`.
fn request_bytes(family: u8, id: &SocketId, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    // No NLM_F_DUMP: an exact lookup in the kernel's socket hash, not a walk of all sockets.
    header.flags = NLM_F_REQUEST;
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id.clone(),
        })),
    );
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// What one datagram from the kernel says about request `sequence`.
#[derive(Debug)]
enum Answer {
    /// The socket's description.
    Found(InetResponseHeader),
    /// The kernel has no such socket.
    NotFound,
    /// A message for another request.
    Stale,
}

/// Decodes the first netlink message of a datagram. Pure, so it is tested without a kernel.
fn parse_answer(datagram: &[u8], sequence: u32) -> Result<Answer, SocketOwnerError> {
    let malformed =
        |e: netlink_packet_core::DecodeError| SocketOwnerError::Malformed(e.to_string());
    let message = NetlinkBuffer::new_checked(datagram).map_err(malformed)?;
    if message.sequence_number() != sequence {
        return Ok(Answer::Stale);
    }
    match message.message_type() {
        NLMSG_ERROR => {
            let error = ErrorBuffer::new_checked(message.payload()).map_err(malformed)?;
            match error.code() {
                None => Ok(Answer::NotFound),
                Some(code) => {
                    let errno = code.get().checked_neg().unwrap_or(i32::MAX);
                    // ENOENT: no socket with that tuple (the normal miss).
                    if errno == Errno::ENOENT as i32 {
                        Ok(Answer::NotFound)
                    } else {
                        Err(SocketOwnerError::Kernel(io::Error::from_raw_os_error(
                            errno,
                        )))
                    }
                }
            }
        }
        NLMSG_DONE => Ok(Answer::NotFound),
        SOCK_DIAG_BY_FAMILY => {
            // Only the fixed header: the attributes after it are not needed, and a kernel
            // newer than the crate may add ones it does not know.
            let header = InetResponseHeader::parse(message.payload()).map_err(malformed)?;
            Ok(Answer::Found(header))
        }
        other => Err(SocketOwnerError::Malformed(format!(
            "unexpected netlink message type {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ErrorMessage};
    use netlink_packet_sock_diag::inet::InetResponse;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn id_v4() -> SocketId {
        SocketId {
            source_port: 40000,
            destination_port: 80,
            source_address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            destination_address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            interface_id: 0,
            cookie: [0xff; 8],
        }
    }

    fn response(id: SocketId, state: u8, uid: u32, inode: u32) -> InetResponseHeader {
        InetResponseHeader {
            family: AF_INET,
            state,
            timer: None,
            socket_id: id,
            recv_queue: 0,
            send_queue: 0,
            uid,
            inode,
        }
    }

    fn datagram(sequence: u32, payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn request_is_an_exact_tcp_query() {
        let bytes = request_bytes(AF_INET, &id_v4(), 7);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.message_type(), SOCK_DIAG_BY_FAMILY);
        assert_eq!(message.flags(), NLM_F_REQUEST);
        assert_eq!(message.sequence_number(), 7);
        let request = InetRequest::parse(message.payload()).unwrap();
        assert_eq!(request.family, AF_INET);
        assert_eq!(request.protocol, IPPROTO_TCP);
        assert_eq!(request.socket_id, id_v4());
    }

    #[test]
    fn owner_needs_the_exact_tuple_and_a_live_owned_socket() {
        const ESTABLISHED: u8 = 1;
        let asked = id_v4();
        let ok = response(asked.clone(), ESTABLISHED, 1000, 42);
        assert_eq!(
            owner_of(&ok, &asked),
            Some(SocketOwner {
                uid: 1000,
                inode: 42
            })
        );
        // The kernel's listener fallback reports the listener's own tuple.
        let mut listener_id = asked.clone();
        listener_id.destination_port = 0;
        listener_id.destination_address = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            owner_of(&response(listener_id, TCP_LISTEN, 0, 9), &asked),
            None
        );
        assert_eq!(
            owner_of(&response(asked.clone(), TCP_LISTEN, 0, 9), &asked),
            None
        );
        assert_eq!(
            owner_of(&response(asked.clone(), TCP_TIME_WAIT, 0, 0), &asked),
            None
        );
        assert_eq!(
            owner_of(&response(asked.clone(), TCP_NEW_SYN_RECV, 0, 0), &asked),
            None
        );
        // Orphaned (its process closed it): state FIN_WAIT2, no inode.
        assert_eq!(owner_of(&response(asked.clone(), 5, 1000, 0), &asked), None);
        let mut other = asked.clone();
        other.source_port += 1;
        assert_eq!(
            owner_of(&response(other, ESTABLISHED, 1000, 42), &asked),
            None
        );
    }

    #[test]
    fn answers_are_decoded() {
        let found = response(id_v4(), 1, 65534, 77);
        let bytes = datagram(
            5,
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(Box::new(InetResponse {
                header: found.clone(),
                nlas: Default::default(),
            }))),
        );
        assert!(matches!(parse_answer(&bytes, 5), Ok(Answer::Found(h)) if h == found));
        assert!(matches!(parse_answer(&bytes, 6), Ok(Answer::Stale)));

        let mut enoent = ErrorMessage::default();
        enoent.code = std::num::NonZeroI32::new(-(Errno::ENOENT as i32));
        let bytes = datagram(5, NetlinkPayload::Error(enoent));
        assert!(matches!(parse_answer(&bytes, 5), Ok(Answer::NotFound)));

        let mut eperm = ErrorMessage::default();
        eperm.code = std::num::NonZeroI32::new(-(Errno::EPERM as i32));
        let bytes = datagram(5, NetlinkPayload::Error(eperm));
        assert!(matches!(
            parse_answer(&bytes, 5),
            Err(SocketOwnerError::Kernel(e)) if e.raw_os_error() == Some(Errno::EPERM as i32)
        ));
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let good = datagram(
            3,
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(Box::new(InetResponse {
                header: response(id_v4(), 1, 0, 1),
                nlas: Default::default(),
            }))),
        );
        for cut in 0..good.len() {
            let mut bytes = good[..cut].to_vec();
            if bytes.len() >= 4 {
                // Keep the length field consistent so the payload itself is short.
                let len = bytes.len() as u32;
                bytes[..4].copy_from_slice(&len.to_ne_bytes());
            }
            assert!(parse_answer(&bytes, 3).is_err(), "cut at {cut}");
        }
        let mut unknown = good.clone();
        unknown[4..6].copy_from_slice(&99u16.to_ne_bytes());
        assert!(matches!(
            parse_answer(&unknown, 3),
            Err(SocketOwnerError::Malformed(_))
        ));
        // An IPv6 answer decodes too.
        let mut v6 = response(id_v4(), 1, 0, 1);
        v6.family = AF_INET6;
        v6.socket_id.source_address = IpAddr::V6(Ipv6Addr::LOCALHOST);
        v6.socket_id.destination_address = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let mut payload = vec![0u8; v6.buffer_len()];
        v6.emit(&mut payload);
        let parsed = InetResponseHeader::parse(&payload).unwrap();
        assert_eq!(parsed, v6);
    }

    #[test]
    fn mixed_families_are_refused() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:2".parse().unwrap();
        assert!(matches!(
            tcp_socket_owner(v4, v6),
            Err(SocketOwnerError::MixedFamilies { .. })
        ));
    }
}
