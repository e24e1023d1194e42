//! A rough measurement of what the tunnel costs, in one run on the same topology: bulk
//! throughput of one stream and keep-alive request latency from a workload on hostA to one
//! on hostB, first directly (no eastwall), then through two eastwall nodes (capture, QUIC
//! mTLS tunnel, L4 decisions at both ends).
//!
//! Run as root, built with `--release` for meaningful numbers:
//! `cargo run --release -p eastwall-integration --bin tunnel-bench -- [--secs 5] [--requests 5000]`
//! (the full benchmark is `docs/BENCHMARKS.md`'s job).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use eastwall_integration::Cloud;
use eastwall_node::lab::{enter_netns, in_netns};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: bench
      rules:
        - {id: client-to-server, action: allow, from: {app: client}, to: {app: server}, ports: [9000, 9001]}
"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = arg("--secs", 5);
    let requests = arg("--requests", 5000) as usize;
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "client", "client", "bench"),
            ("hostB", "server", "server", "bench"),
        ],
        "",
        POLICY,
    );
    let server = c.lab.workload("server").clone();
    spawn_servers(&server.netns, server.addr.into());
    std::thread::sleep(Duration::from_millis(200));
    let client_ns = c.lab.workload("client").netns.clone();
    let sink = SocketAddr::new(server.addr.into(), 9000);
    let echo = SocketAddr::new(server.addr.into(), 9001);

    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>10}",
        "path", "bulk Gbit/s", "p50 µs", "p99 µs", "req/s"
    );
    let mut rows = Vec::new();
    for path in ["direct", "eastwall"] {
        if path == "eastwall" {
            c.start_nodes("");
        }
        let ns = client_ns.clone();
        let gbps = in_netns(&ns, move || bulk(sink, Duration::from_secs(secs)))??;
        let ns = client_ns.clone();
        let (p50, p99, rps) = in_netns(&ns, move || latency(echo, requests))??;
        println!("{path:<10} {gbps:>12.2} {p50:>10.0} {p99:>10.0} {rps:>10.0}");
        rows.push((gbps, p50, p99, rps));
    }
    let (d, e) = (rows[0], rows[1]);
    println!(
        "eastwall / direct: bulk {:.2}x, p50 +{:.0} µs, p99 +{:.0} µs, req/s {:.2}x",
        e.0 / d.0,
        e.1 - d.1,
        e.2 - d.2,
        e.3 / d.3
    );
    Ok(())
}

/// A discard service on 9000 and a one-byte echo on 9001, each on its own thread in `netns`.
fn spawn_servers(netns: &str, ip: std::net::IpAddr) {
    for port in [9000u16, 9001] {
        let netns = netns.to_owned();
        std::thread::spawn(move || {
            enter_netns(&netns).unwrap();
            let l = TcpListener::bind(SocketAddr::new(ip, port)).unwrap();
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let _ = s.set_nodelay(true);
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) if port == 9001 => {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
    }
}

fn bulk(dst: SocketAddr, dur: Duration) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
    let buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    // Wait for the sink to drain so the bytes counted have arrived.
    let mut rest = [0u8; 1];
    let _ = s.read(&mut rest);
    Ok(sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
}

fn latency(dst: SocketAddr, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
    s.set_nodelay(true)?;
    let mut times = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut b)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed().as_secs_f64();
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[n / 2], times[n * 99 / 100], n as f64 / total))
}
