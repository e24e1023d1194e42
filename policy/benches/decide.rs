//! How long `Policy::decide` takes at 10, 1,000 and 10,000 rules (issue 7: < 1 µs at 10,000).
//!
//! The registry has 200 workloads in 50 apps and 4 zones. Each policy has N allow rules
//! `from {app} to {app}` on ports spread over 1000..1500 (plus every 50th rule a `cidr` rule),
//! in sections of 100 rules. Three flows per size:
//! - `hit-last`: matches only the last rule (the worst case for first-match order);
//! - `default-deny`: matches no rule, on the port that the most rules use;
//! - `same-port-deny`: every rule is on one port and none matches (defeats the port index:
//!   the linear worst case).
#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use eastwall_policy::{Endpoint, Flow, Policy, Registry};

const WORKLOADS: usize = 200;
const APPS: usize = 50;

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 90, (i / 200) as u8, (i % 200 + 2) as u8))
}

fn registry() -> Registry {
    let mut s = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  trustDomain: corp.example\n  nodes:\n    - {name: n1, addresses: [10.89.0.1]}\n  workloads:\n",
    );
    for i in 0..WORKLOADS {
        writeln!(
            s,
            "    - {{name: w{i}, node: n1, addresses: [{}], app: app{}, zone: z{}}}",
            addr(i),
            i % APPS,
            i % 4
        )
        .unwrap();
    }
    Registry::parse("registry.yaml", &s).unwrap()
}

/// `n` rules; rule k allows app(k) -> app(k+1) on `port(k)`. The last rule alone allows
/// app 48 -> app 49 on port 1499 (no earlier rule has that pair on that port).
fn policy(reg: &Registry, n: usize, same_port: bool) -> Policy {
    let mut s = String::from("apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n");
    for k in 0..n {
        if k % 100 == 0 {
            writeln!(s, "    - name: s{}\n      rules:", k / 100).unwrap();
        }
        let last = k == n - 1;
        let port = if same_port {
            443
        } else if last {
            1499
        } else {
            1000 + (k % 499)
        };
        let (from, to) = if last {
            (48, 49)
        } else {
            (k % (APPS - 2), (k + 1) % (APPS - 2))
        };
        if k % 50 == 49 && !last {
            writeln!(
                s,
                "        - {{id: r{k}, action: allow, from: {{cidr: [\"10.91.{}.0/24\"]}}, to: {{app: app{to}}}, ports: [{port}]}}",
                k % 250
            )
            .unwrap();
        } else {
            writeln!(
                s,
                "        - {{id: r{k}, action: allow, from: {{app: app{from}}}, to: {{app: app{to}}}, ports: [{port}]}}"
            )
            .unwrap();
        }
    }
    match Policy::parse("policy.yaml", &s, reg) {
        Ok((p, _)) => p,
        Err(e) => panic!("generated policy does not parse:\n{e}"),
    }
}

fn bench(c: &mut Criterion) {
    let reg = registry();
    // Workload i has app i % 50: w48 is app48, w49 is app49, w0 app0, w1 app1.
    let flow = |src: usize, dst: usize, port: u16| Flow {
        src: Endpoint::lookup(&reg, addr(src)),
        dst: Endpoint::lookup(&reg, addr(dst)),
        dst_port: port,
    };
    let mut g = c.benchmark_group("policy_decide");
    for n in [10usize, 1_000, 10_000] {
        let p = policy(&reg, n, false);
        let hit = flow(48, 49, 1499);
        assert!(p.decide(&hit).is_allowed(), "hit-last must be allowed");
        g.bench_with_input(BenchmarkId::new("hit-last", n), &hit, |b, f| {
            b.iter(|| black_box(p.decide(black_box(f))))
        });
        // Port 1000 carries ~n/499 rules; w1 -> w0 (app1 -> app0) matches none of them.
        let deny = flow(1, 0, 1000);
        assert!(!p.decide(&deny).is_allowed(), "default-deny must be denied");
        g.bench_with_input(BenchmarkId::new("default-deny", n), &deny, |b, f| {
            b.iter(|| black_box(p.decide(black_box(f))))
        });
        let p = policy(&reg, n, true);
        let deny = flow(1, 0, 443);
        assert!(
            !p.decide(&deny).is_allowed(),
            "same-port-deny must be denied"
        );
        g.bench_with_input(BenchmarkId::new("same-port-deny", n), &deny, |b, f| {
            b.iter(|| black_box(p.decide(black_box(f))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
