//! Cost of attributing a captured local connection: the socket owner lookup (one netlink
//! round trip on a pooled socket) for an existing loopback connection and for a miss, and the
//! NSS name lookup of its uid.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener, TcpStream};

use criterion::{Criterion, criterion_group, criterion_main};
use eastwall_identity::{tcp_socket_owner, user_name};

fn bench(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, peer) = listener.accept().unwrap();
    let local = accepted.local_addr().unwrap();
    assert!(tcp_socket_owner(peer, local).unwrap().is_some());
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert!(tcp_socket_owner(unused, nowhere).unwrap().is_none());

    let mut g = c.benchmark_group("socket_owner");
    g.bench_function("tcp_socket_owner/hit", |b| {
        b.iter(|| black_box(tcp_socket_owner(black_box(peer), black_box(local)).unwrap()))
    });
    g.bench_function("tcp_socket_owner/miss", |b| {
        b.iter(|| black_box(tcp_socket_owner(black_box(unused), black_box(nowhere)).unwrap()))
    });
    g.bench_function("user_name/root", |b| {
        b.iter(|| black_box(user_name(black_box(0)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
