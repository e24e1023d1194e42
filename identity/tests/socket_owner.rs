//! Socket owner lookups against real loopback connections: a child process running as
//! `nobody` and the test's own (root) connections, IPv4, IPv6 and IPv4-mapped IPv6.
//!
//! Needs root (to start a process as another user). Without it the tests are skipped with a
//! message, unless `CI` is set.
#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use eastwall_identity::{SocketOwner, tcp_socket_owner, user_name};

const NOBODY: u32 = 65534;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether the test can run: as root. Outside CI a non-root run is skipped.
fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "socket owner tests need root (they start a process as nobody)"
    );
    eprintln!("SKIPPED: socket owner tests need root; set CI=true to make this a failure");
    false
}

/// Accepts one connection within a few seconds.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no connection accepted: {e}"),
        }
    }
}

/// A child running as `nobody` holding a TCP connection to `target` on its fd 3; killed on
/// drop.
struct NobodyClient(Child);

impl NobodyClient {
    fn connect(target: SocketAddr) -> Self {
        // bash's /dev/tcp wants the bare address, without IPv6 brackets.
        let script = format!(
            "exec 3<>/dev/tcp/{}/{}; exec sleep 30",
            target.ip(),
            target.port()
        );
        let child = Command::new("bash")
            .args(["-c", &script])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .spawn()
            .expect("start bash as nobody");
        Self(child)
    }

    /// The inode of the child's socket on fd 3, from `/proc`.
    fn socket_inode(&self) -> u64 {
        socket_inode(&format!("/proc/{}/fd/3", self.0.id()))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NobodyClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `socket:[N]` → N for a `/proc/*/fd/*` link.
fn socket_inode(link: &str) -> u64 {
    let target = std::fs::read_link(link).unwrap();
    let target = target.to_str().unwrap();
    target
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{link} -> {target} is not a socket"))
        .parse()
        .unwrap()
}

/// Looks up the client's socket as the node would: the accepted connection's peer is the
/// process socket's own address, its local address the original destination.
fn owner_from_listener_view(accepted: &TcpStream) -> Option<SocketOwner> {
    tcp_socket_owner(
        accepted.peer_addr().unwrap(),
        accepted.local_addr().unwrap(),
    )
    .unwrap()
}

/// Polls until the lookup says nobody owns the client's socket any more.
fn wait_until_unowned(local: SocketAddr, remote: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_socket_owner(local, remote).unwrap().is_some() {
        assert!(Instant::now() < deadline, "{local} -> {remote} still owned");
        thread::sleep(Duration::from_millis(10));
    }
}

fn nobody_connection_is_attributed(listen: &str) {
    let listener = TcpListener::bind(listen).unwrap();
    let mut client = NobodyClient::connect(listener.local_addr().unwrap());
    let accepted = accept(&listener);
    let (peer, local) = (
        accepted.peer_addr().unwrap(),
        accepted.local_addr().unwrap(),
    );

    let owner = owner_from_listener_view(&accepted).expect("the client's socket is found");
    assert_eq!(owner.uid, NOBODY);
    assert_eq!(owner.inode, client.socket_inode());
    assert_eq!(user_name(owner.uid).unwrap().as_deref(), Some("nobody"));

    // The accepted socket is the test's own: asked the other way round, it is root's.
    let server_side = tcp_socket_owner(local, peer).unwrap().unwrap();
    assert_eq!(server_side.uid, 0);
    assert_ne!(server_side.inode, owner.inode);

    // The process exits: its socket is orphaned (FIN_WAIT2, no inode) and then, once the
    // server side closes too, in TIME_WAIT, which the kernel reports as uid 0. Neither is
    // attributed to anyone, least of all root.
    client.stop();
    wait_until_unowned(peer, local);
    drop(accepted);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(tcp_socket_owner(peer, local).unwrap(), None);
}

#[test]
fn nobody_connection_over_ipv4() {
    if can_run() {
        nobody_connection_is_attributed("127.0.0.1:0");
    }
}

#[test]
fn nobody_connection_over_ipv6() {
    if can_run() {
        nobody_connection_is_attributed("[::1]:0");
    }
}

fn own_connection_is_roots(listen: &str, connect_to: Option<&str>) {
    let listener = TcpListener::bind(listen).unwrap();
    let target = match connect_to {
        Some(ip) => SocketAddr::new(ip.parse().unwrap(), listener.local_addr().unwrap().port()),
        None => listener.local_addr().unwrap(),
    };
    let client = TcpStream::connect(target).unwrap();
    let accepted = accept(&listener);

    let owner = owner_from_listener_view(&accepted).expect("own socket found");
    assert_eq!(owner.uid, 0);
    let fd = format!("/proc/self/fd/{}", client.as_raw_fd());
    assert_eq!(owner.inode, socket_inode(&fd));
    assert_eq!(user_name(0).unwrap().as_deref(), Some("root"));
}

#[test]
fn own_connection_over_ipv4() {
    if can_run() {
        own_connection_is_roots("127.0.0.1:0", None);
    }
}

#[test]
fn own_connection_over_ipv6() {
    if can_run() {
        own_connection_is_roots("[::1]:0", None);
    }
}

#[test]
fn ipv4_mapped_peer_of_a_dual_stack_listener() {
    if !can_run() {
        return;
    }
    // A dual-stack listener reports an IPv4 client as ::ffff:127.0.0.1; the lookup asks the
    // kernel's IPv4 table for it.
    let listener = TcpListener::bind("[::]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = NobodyClient::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let accepted = accept(&listener);
    let peer = accepted.peer_addr().unwrap();
    assert!(
        matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some()),
        "peer {peer} is not IPv4-mapped"
    );
    let owner = owner_from_listener_view(&accepted).expect("mapped lookup finds the socket");
    assert_eq!(owner.uid, NOBODY);
    assert_eq!(owner.inode, client.socket_inode());
    client.stop();
}

#[test]
fn nonexistent_tuples_have_no_owner() {
    if !can_run() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let listening = listener.local_addr().unwrap();
    // No connection at all.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        tcp_socket_owner("127.0.0.1:1".parse().unwrap(), nowhere).unwrap(),
        None
    );
    assert_eq!(
        tcp_socket_owner("[::1]:1".parse().unwrap(), "[::1]:9".parse().unwrap()).unwrap(),
        None
    );
    // The kernel falls back to a listener on the local address; a listener is not the owner
    // of a connection.
    assert_eq!(tcp_socket_owner(listening, nowhere).unwrap(), None);
}

#[test]
fn unused_uid_has_no_name() {
    // No NSS source on this host or in CI has a user with this uid.
    assert_eq!(user_name(3_999_999_999).unwrap(), None);
}

#[test]
fn lookups_from_many_threads_reuse_the_pool() {
    if !can_run() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let accepted = accept(&listener);
    let (peer, local) = (
        accepted.peer_addr().unwrap(),
        accepted.local_addr().unwrap(),
    );
    let inode = socket_inode(&format!("/proc/self/fd/{}", client.as_raw_fd()));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..200 {
                    let owner = tcp_socket_owner(peer, local).unwrap().unwrap();
                    assert_eq!(owner, SocketOwner { uid: 0, inode });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The pool is bounded: of the 16 sockets the threads needed at once, at most 8 stay open
    // (a few more may be in flight for other tests of this binary running at the same time).
    let held = sock_diag_sockets_held();
    assert!(
        (1..16).contains(&held),
        "{held} sock_diag sockets held after the threads ended"
    );
}

/// How many NETLINK_SOCK_DIAG sockets this process holds: its socket fds whose inode is listed
/// under protocol 4 in /proc/net/netlink.
fn sock_diag_sockets_held() -> usize {
    const NETLINK_SOCK_DIAG: &str = "4";
    let table = std::fs::read_to_string("/proc/self/net/netlink").unwrap();
    let diag_inodes: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&NETLINK_SOCK_DIAG)).then(|| fields.last()?.parse().ok())?
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.ok()?.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            inode.parse::<u64>().ok()
        })
        .filter(|inode| diag_inodes.contains(inode))
        .count()
}
