//! How long `Policy::decide` takes at 10, 1,000 and 10,000 rules (issue 7: < 1 µs at 10,000),
//! and per HTTP request with L7 rules.
//!
//! The registry has 200 workloads in 50 apps and 4 zones. Each policy has N allow rules
//! `from {app} to {app}` on ports spread over 1000..1500 (plus every 50th rule a `cidr` rule),
//! in sections of 100 rules. Three flows per size:
//! - `hit-last`: matches only the last rule (the worst case for first-match order);
//! - `default-deny`: matches no rule, on the port that the most rules use;
//! - `same-port-deny`: every rule is on one port and none matches (defeats the port index:
//!   the linear worst case).
//!
//! `policy_decide_registry`: a new connection's whole decision (both ends looked up by
//! address in the registry, then `decide`) against 10,000 rules, with registries of 200 and
//! 100,000 workloads (issue 16: decision time unchanged by the registry's size).
//!
//! `policy_decide_http` (N L7 rules, each app(k) -> app(k+1) on port 8443 with methods,
//! paths and hosts; every 10th rule an L7 deny on `/admin/*`):
//! - `connect`: connection-time decision that finds an L7 rule (`needs_l7`);
//! - `get-last`: a GET the last rule allows (all earlier rules fail on L4 or L7);
//! - `delete-denied`: a DELETE no rule allows (default deny);
//! - `normalize`: `normalize_path` on a typical target with a query and a dot segment.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use eastwall_policy::{Endpoint, Flow, HttpRequestFacts, L7, Policy, Registry, normalize_path};

const WORKLOADS: usize = 200;
const APPS: usize = 50;

fn addr(i: usize) -> IpAddr {
    let j = i + 2;
    IpAddr::V4(Ipv4Addr::new(
        10,
        (100 + (j >> 16)) as u8,
        ((j >> 8) & 255) as u8,
        (j & 255) as u8,
    ))
}

fn registry() -> Registry {
    registry_of(WORKLOADS)
}

/// `n` workloads in 50 apps and 4 zones (workload i: app i % 50).
fn registry_of(n: usize) -> Registry {
    let mut s = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  trustDomain: corp.example\n  nodes:\n    - {name: n1, addresses: [10.89.0.1]}\n  workloads:\n",
    );
    for i in 0..n {
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
    let start = std::time::Instant::now();
    let p = match Policy::parse("policy.yaml", &s, reg) {
        Ok((p, _)) => p,
        Err(e) => panic!("generated policy does not parse:\n{e}"),
    };
    // Loading includes the never-match and shadowing checks: report what it costs.
    eprintln!(
        "load ({n} rules, {}): {:?}",
        if same_port { "one port" } else { "500 ports" },
        start.elapsed()
    );
    p
}

fn bench(c: &mut Criterion) {
    let reg = registry();
    // Workload i has app i % 50: w48 is app48, w49 is app49, w0 app0, w1 app1.
    let flow = |src: usize, dst: usize, port: u16| {
        Flow::new(
            Endpoint::lookup(&reg, addr(src)),
            Endpoint::lookup(&reg, addr(dst)),
            port,
        )
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

/// `n` L7 rules: rule k allows app(k) -> app(k+1) on 8443 for GET/POST on its paths and
/// host; every 10th rule denies `/admin/*` to app(k+1). The last rule is app 48 -> app 49.
fn l7_policy(reg: &Registry, n: usize) -> Policy {
    let mut s = String::from("apiVersion: eastwall.dev/v1\nkind: Policy\nspec:\n  sections:\n");
    for k in 0..n {
        if k % 100 == 0 {
            writeln!(s, "    - name: s{}\n      rules:", k / 100).unwrap();
        }
        let (from, to) = if k == n - 1 {
            (48, 49)
        } else {
            (k % (APPS - 2), (k + 1) % (APPS - 2))
        };
        if k % 10 == 9 && k != n - 1 {
            writeln!(
                s,
                "        - {{id: r{k}, action: deny, to: {{app: app{to}, http: [{{paths: [\"/admin/*\"]}}]}}, ports: [8443]}}"
            )
            .unwrap();
        } else {
            writeln!(
                s,
                "        - {{id: r{k}, action: allow, from: {{app: app{from}}}, to: {{app: app{to}, http: [{{methods: [GET, POST], paths: [\"/api/*\", \"/v1/items/*/detail\"], hosts: [\"svc{to}.corp.example\", \"*.svc{to}.corp.example\"]}}]}}, ports: [8443]}}"
            )
            .unwrap();
        }
    }
    match Policy::parse("policy.yaml", &s, reg) {
        Ok((p, _)) => p,
        Err(e) => panic!("generated policy does not parse:\n{e}"),
    }
}

fn bench_http(c: &mut Criterion) {
    let reg = registry();
    let headers = http::HeaderMap::new();
    let mut g = c.benchmark_group("policy_decide_http");
    for n in [10usize, 1_000] {
        let p = l7_policy(&reg, n);
        let base = Flow::new(
            Endpoint::lookup(&reg, addr(48)),
            Endpoint::lookup(&reg, addr(49)),
            8443,
        );
        let connect = p.decide(&base);
        assert!(connect.needs_l7 && connect.is_allowed(), "{connect:?}");
        g.bench_with_input(BenchmarkId::new("connect", n), &base, |b, f| {
            b.iter(|| black_box(p.decide(black_box(f))))
        });
        let get = HttpRequestFacts {
            method: "GET",
            host: Some("svc49.corp.example"),
            path: "/api/accounts/7",
            headers: &headers,
        };
        let f = base.with_l7(L7::Http(&get));
        assert_eq!(p.decide(&f).rule_id(), format!("r{}", n - 1));
        g.bench_with_input(BenchmarkId::new("get-last", n), &f, |b, f| {
            b.iter(|| black_box(p.decide(black_box(f))))
        });
        let delete = HttpRequestFacts {
            method: "DELETE",
            ..get
        };
        let f = base.with_l7(L7::Http(&delete));
        assert!(!p.decide(&f).is_allowed());
        g.bench_with_input(BenchmarkId::new("delete-denied", n), &f, |b, f| {
            b.iter(|| black_box(p.decide(black_box(f))))
        });
    }
    let target = "/api/v1/accounts/./7/transfers?limit=10&offset=20";
    assert_eq!(
        normalize_path(target).unwrap(),
        "/api/v1/accounts/7/transfers"
    );
    g.bench_function("normalize", |b| {
        b.iter(|| black_box(normalize_path(black_box(target))))
    });
    g.finish();
}

fn bench_registry(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_decide_registry");
    for n in [WORKLOADS, 100_000] {
        let reg = registry_of(n);
        let p = policy(&reg, 10_000, false);
        let decide = |src: usize, dst: usize, port: u16| {
            p.decide(&Flow::new(
                Endpoint::lookup(&reg, addr(src)),
                Endpoint::lookup(&reg, addr(dst)),
                port,
            ))
        };
        assert!(decide(48, 49, 1499).is_allowed());
        assert!(!decide(1, 0, 1000).is_allowed());
        // A workload far into the big registry (same apps: 99,948 % 50 = 48).
        let (far_src, far_dst) = if n > 99_999 {
            (99_948, 99_949)
        } else {
            (48, 49)
        };
        assert!(decide(far_src, far_dst, 1499).is_allowed());
        g.bench_function(BenchmarkId::new("hit-last", n), |b| {
            b.iter(|| black_box(decide(black_box(far_src), black_box(far_dst), 1499)))
        });
        g.bench_function(BenchmarkId::new("default-deny", n), |b| {
            b.iter(|| black_box(decide(black_box(1), black_box(0), 1000)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_registry, bench_http);
criterion_main!(benches);
