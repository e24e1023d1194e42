//! Encode and decode of the tunnel's stream header and response (`wire/src/header.rs`),
//! the per-connection framing every tunnelled TCP connection pays once in each direction.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use eastwall_wire::header::{Decoded, Response, Status, StreamHeader};

fn bench(c: &mut Criterion) {
    let v4 = StreamHeader {
        dst: "10.77.2.2:8080".parse::<SocketAddr>().unwrap(),
        src: "10.77.1.2:43122".parse::<SocketAddr>().unwrap(),
        trace: None,
        kind: Default::default(),
    };
    let v6 = StreamHeader {
        dst: "[fd00:77:2::2]:8080".parse::<SocketAddr>().unwrap(),
        src: "[fd00:77:1::2]:43122".parse::<SocketAddr>().unwrap(),
        trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        kind: Default::default(),
    };
    let mut g = c.benchmark_group("tunnel_header");
    for (name, h) in [("v4", &v4), ("v6+trace", &v6)] {
        let bytes = h.encode();
        assert!(
            matches!(StreamHeader::decode(&bytes), Ok(Decoded::Done(ref d, n)) if d == h && n == bytes.len())
        );
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(black_box(h).encode()))
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| black_box(StreamHeader::decode(black_box(&bytes))))
        });
    }
    let resp = Response {
        status: Status::Denied,
        reason: "rule deny-dev-to-prod".into(),
    };
    let bytes = resp.encode();
    g.bench_function("response/encode", |b| {
        b.iter(|| black_box(black_box(&resp).encode()))
    });
    g.bench_function("response/decode", |b| {
        b.iter(|| black_box(Response::decode(black_box(&bytes))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
